//! Training data over the wire: Flight DoExchange and `POST /v1/training-data`, both backends.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{Float32Type, Int64Type};
use featherstore_testkit::*;
use serde_json::{json, Value};
use tonic::Code;

/// Entity rows: user, time in seconds, label.
fn entity_rows(rows: &[(&str, i64, i64)]) -> RecordBatch {
    RecordBatch::try_from_iter(vec![
        (
            "user_id",
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
        ),
        (
            "event_timestamp",
            Arc::new(TimestampMillisecondArray::from_iter_values(
                rows.iter().map(|r| r.1 * 1000),
            )) as ArrayRef,
        ),
        (
            "label",
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))) as ArrayRef,
        ),
    ])
    .unwrap()
}

#[tokio::test]
async fn training_data_over_flight_and_http() {
    for backend in BACKENDS {
        let (server, mut client) = TestServer::with_set(backend, USER_SPEC).await;
        let batches = vec![
            user_batch(&[
                ("u1", Some(10), Some(0.5), 100),
                ("u2", Some(20), None, 100),
            ]),
            user_batch(&[("u1", Some(11), Some(0.7), 200)]),
        ];
        flight::put_ok(&mut client, "user_features", batches).await;

        let rows = vec![
            entity_rows(&[("u1", 150, 1), ("u1", 99, 2)]),
            entity_rows(&[("u1", 200, 3), ("u2", 1000, 4), ("u3", 1000, 5)]),
        ];
        let command = json!({"type": "training_data", "features": ["user_features:age", "user_features:ctr_7d"]});
        let out = exchange(&server, command.clone(), rows.clone())
            .await
            .unwrap();
        let out = concat(&out);
        assert_eq!(
            column_names(&out),
            ["user_id", "event_timestamp", "label", "age", "ctr_7d"]
        );
        assert_eq!(
            out.column(2).as_primitive::<Int64Type>().values(),
            &[1, 2, 3, 4, 5]
        );
        assert_eq!(
            out.column(3)
                .as_primitive::<Int64Type>()
                .iter()
                .collect::<Vec<_>>(),
            [Some(10), None, Some(11), Some(20), None],
            "{backend:?}"
        );
        assert_eq!(out.column(4).as_primitive::<Float32Type>().value(2), 0.7);

        // Errors: unknown feature, missing key column, bad command.
        let err = exchange(
            &server,
            json!({"type": "training_data", "features": ["user_features:nope"]}),
            rows.clone(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{err}");
        let no_key = RecordBatch::try_from_iter(vec![(
            "event_timestamp",
            Arc::new(TimestampMillisecondArray::from(vec![1])) as ArrayRef,
        )])
        .unwrap();
        let err = exchange(&server, command.clone(), vec![no_key])
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("user_id"), "{err}");
        let err = exchange(
            &server,
            json!({"type": "training_data", "features": "age"}),
            rows.clone(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let err = exchange(
            &server,
            json!({"type": "training_data", "features": ["user_features:age"], "timestamp": "label"}),
            rows.clone(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");

        // HTTP: the same request as an Arrow IPC body, the command as query parameters.
        let body = http::ipc_body(&rows);
        let response = http()
            .post(format!(
                "{}/v1/training-data?features=user_features:*&full_names=true",
                server.http
            ))
            .header("content-type", http::ARROW)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let out = concat(&http::read_ipc(&response.bytes().await.unwrap()));
        assert_eq!(
            column_names(&out),
            [
                "user_id",
                "event_timestamp",
                "label",
                "user_features__age",
                "user_features__ctr_7d",
                "user_features__embedding"
            ]
        );
        assert_eq!(
            out.column(3)
                .as_primitive::<Int64Type>()
                .iter()
                .collect::<Vec<_>>(),
            [Some(10), None, Some(11), Some(20), None]
        );
        let response = http()
            .post(format!("{}/v1/training-data", server.http))
            .header("x-featherstore-command", r#"{"type": "training_data", "features": ["user_features:age", "user_features:age"]}"#)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        let error: Value = response.json().await.unwrap();
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("full_names"),
            "{error}"
        );
    }
}
