//! Ingest times on the wire (an extension of PROTOCOL.md): history `with_ingest_time` and
//! `ingested_before` on Flight DoGet and HTTP (JSON and Arrow), training data `as_of` on the
//! DoExchange command, the HTTP query parameter and command header, and the errors.

use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type, TimeUnit, TimestampMicrosecondType};
use featherstore_core::time::format_timestamp;
use featherstore_server::config::Backend;
use featherstore_testkit::flight::put_ok;
use featherstore_testkit::http::{assert_error, ipc_body, post_json, read_ipc, send, ARROW};
use featherstore_testkit::*;
use reqwest::StatusCode;
use serde_json::json;
use tonic::Code;

/// `user_features` with u1 at age 30 (event time 1000 s), then, ingested later, age 31 at an
/// earlier event time than the training rows': the server, and the two ingest times.
async fn with_a_late_row(backend: Backend) -> (TestServer, i64, i64) {
    let (server, mut client) = TestServer::with_set(backend, USER_SPEC).await;
    put_ok(
        &mut client,
        "user_features",
        vec![user_batch(&[("u1", Some(30), None, 1_000)])],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    put_ok(
        &mut client,
        "user_features",
        vec![user_batch(&[("u1", Some(31), None, 2_000)])],
    )
    .await;
    let ticket = json!({"type": "history", "feature_set": "user_features", "features": ["age"], "with_ingest_time": true});
    let batch = concat(&get(&mut client, ticket).await.unwrap());
    let field = batch.schema().field(3).clone();
    assert_eq!(field.name(), "ingested_at");
    assert_eq!(
        field.data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
    let times = batch.column(3).as_primitive::<TimestampMicrosecondType>();
    let (first, late) = (times.value(0), times.value(1));
    assert!(first < late, "{first} {late}");
    (server, first, late)
}

/// Entity rows: u1 at `t` (µs).
fn row_at(t: i64) -> RecordBatch {
    let row = user_batch(&[("u1", None, None, 0)])
        .project(&[0, 4])
        .unwrap();
    let time = arrow::array::TimestampMicrosecondArray::from(vec![t]).with_timezone("UTC");
    RecordBatch::try_new(
        row.schema(),
        vec![row.column(0).clone(), std::sync::Arc::new(time)],
    )
    .unwrap()
}

fn age(batches: &[RecordBatch]) -> Option<i64> {
    let batch = concat(batches);
    let age = batch.column(2).as_primitive::<Int64Type>();
    age.is_valid(0).then(|| age.value(0))
}

#[tokio::test]
async fn history_and_training_data_as_known_at_an_instant() {
    for backend in [Backend::Duckdb, Backend::Parquet] {
        let (server, first, late) = with_a_late_row(backend).await;

        // HTTP history, JSON and Arrow.
        let url = format!("{}/v1/history", server.http);
        let body = json!({"feature_set": "user_features", "features": ["age"],
            "ingested_before": format_timestamp(late), "with_ingest_time": true});
        let (status, answer) = post_json(&url, &body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let rows = answer["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "{answer}");
        assert_eq!(rows[0]["age"], 30);
        assert_eq!(rows[0]["ingested_at"], format_timestamp(first));
        let arrow = http()
            .post(&url)
            .header("accept", ARROW)
            .json(&body)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let batches = read_ipc(&arrow);
        assert_eq!(
            column_names(&batches[0]),
            ["user_id", "age", "event_timestamp", "ingested_at"]
        );
        let bad = json!({"feature_set": "user_features", "ingested_before": "yesterday"});
        assert_error(
            &post_json(&url, &bad).await,
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "yesterday",
        );

        // Flight DoExchange: at the first ingest, the late row is not known yet.
        let command = |as_of: &str| json!({"type": "training_data", "features": ["user_features:age"], "as_of": as_of});
        let at_first = || vec![row_at(first)];
        assert_eq!(
            age(&exchange(&server, command("event_time"), at_first())
                .await
                .unwrap()),
            Some(31)
        );
        assert_eq!(
            age(&exchange(&server, command("ingest_time"), at_first())
                .await
                .unwrap()),
            Some(30)
        );
        let status = exchange(&server, command("wall_clock"), at_first())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains("ingest_time") && status.message().contains("event_time"),
            "{status:?}"
        );

        // HTTP: the query parameter and the command header.
        let training = |query: &str| {
            http()
                .post(format!(
                    "{}/v1/training-data?features=user_features:age{query}",
                    server.http
                ))
                .header("accept", ARROW)
                .body(ipc_body(&at_first()))
        };
        for (request, expected) in [
            (training(""), Some(31)),
            (training("&as_of=ingest_time"), Some(30)),
            (
                training("").header("x-featherstore-command", command("ingest_time").to_string()),
                Some(30),
            ),
        ] {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(
                age(&read_ipc(&response.bytes().await.unwrap())),
                expected,
                "{backend:?}"
            );
        }
        let answer = send(training("&as_of=later")).await;
        assert_error(
            &answer,
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "ingest_time",
        );
    }
}
