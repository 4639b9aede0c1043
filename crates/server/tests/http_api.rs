//! The HTTP API end to end over loopback: routes, JSON and Arrow bodies, errors, metrics.

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use featherstore_testkit::http::{assert_error, ipc_body, read_ipc, send, ARROW};
use featherstore_testkit::*;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn registry_ingest_and_reads_over_http() {
    for backend in BACKENDS {
        let server = TestServer::start(backend).await;
        let base = &server.http;
        let client = http();
        assert_eq!(
            send(client.get(format!("{base}/health"))).await,
            (
                StatusCode::OK,
                json!({"status": "ok", "online": {"backend": "memory", "state": "ok"}})
            )
        );

        let created = send(
            client
                .post(format!("{base}/v1/feature-sets"))
                .body(USER_SPEC),
        )
        .await;
        assert_eq!(created.0, StatusCode::CREATED);
        let again = send(
            client
                .post(format!("{base}/v1/feature-sets"))
                .body(USER_SPEC),
        )
        .await;
        assert_eq!(again, (StatusCode::OK, created.1.clone()));
        let conflict = send(
            client
                .post(format!("{base}/v1/feature-sets"))
                .body(USER_SPEC.replace("growth", "ads")),
        )
        .await;
        assert_error(
            &conflict,
            StatusCode::CONFLICT,
            "already_exists",
            "user_features",
        );

        let rows = json!({"rows": [
            {"user_id": "u1", "event_timestamp": "2026-01-01T00:00:00Z", "age": 30, "embedding": [1.0, 2.0]},
            {"user_id": "u1", "event_timestamp": "2026-01-02T00:00:00+02:00", "age": 31, "ctr_7d": 0.25},
            {"user_id": "u2", "event_timestamp": "2026-01-01T00:00:00Z"}
        ]});
        let ingested = send(
            client
                .post(format!("{base}/v1/feature-sets/user_features/rows"))
                .json(&rows),
        )
        .await;
        assert_eq!(ingested, (StatusCode::OK, json!({"rows": 3})));

        // An Arrow IPC body with two record batches is one ingest batch.
        let body = ipc_body(&[
            user_batch(&[("u3", Some(50), None, 1_767_225_600)]),
            user_batch(&[("u4", Some(60), None, 1_767_225_600)]),
        ]);
        let ingested = send(
            client
                .post(format!("{base}/v1/feature-sets/user_features/rows"))
                .header("content-type", ARROW)
                .body(body),
        )
        .await;
        assert_eq!(ingested, (StatusCode::OK, json!({"rows": 2})));

        let online = send(client.post(format!("{base}/v1/online")).json(&json!({
            "feature_set": "user_features", "entities": ["u1", "zz", "u3"], "features": ["age", "ctr_7d"]
        })))
        .await;
        assert_eq!(online.0, StatusCode::OK);
        assert_eq!(
            online.1["rows"],
            json!([
                {"user_id": "u1", "age": 31, "ctr_7d": 0.25, "event_timestamp": "2026-01-01T22:00:00Z"},
                {"user_id": "zz", "age": null, "ctr_7d": null, "event_timestamp": null},
                {"user_id": "u3", "age": 50, "ctr_7d": null, "event_timestamp": "2026-01-01T00:00:00Z"}
            ])
        );
        let keys: Vec<_> = online.1["rows"][0]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            keys,
            ["user_id", "age", "ctr_7d", "event_timestamp"],
            "columns in order"
        );

        let arrow_online = client
            .post(format!("{base}/v1/online"))
            .header("accept", ARROW)
            .json(&json!({"type": "online", "feature_set": "user_features", "entities": ["u4"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(arrow_online.headers()["content-type"], ARROW);
        let batches = read_ipc(&arrow_online.bytes().await.unwrap());
        assert_eq!(
            batches[0].column(1).as_primitive::<Int64Type>().value(0),
            60
        );

        let history = send(client.post(format!("{base}/v1/history")).json(&json!({
            "feature_set": "user_features", "entities": ["u1"], "features": ["age"]
        })))
        .await;
        assert_eq!(
            history.1["rows"],
            json!([
                {"user_id": "u1", "age": 30, "event_timestamp": "2026-01-01T00:00:00Z"},
                {"user_id": "u1", "age": 31, "event_timestamp": "2026-01-01T22:00:00Z"}
            ])
        );
        let arrow_history = client
            .post(format!("{base}/v1/history"))
            .header("accept", ARROW)
            .json(&json!({"feature_set": "user_features", "start": "2026-01-01T12:00:00Z"}))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let rows = flight::rows(&read_ipc(&arrow_history));
        assert_eq!(rows, 1);

        let described = send(client.get(format!("{base}/v1/feature-sets/user_features"))).await;
        assert_eq!(described.1["stats"]["rows"], 5);
        assert_eq!(described.1["stats"]["entities"], 4);
        let listed = send(client.get(format!("{base}/v1/feature-sets"))).await;
        assert_eq!(listed.1.as_array().unwrap().len(), 1);

        let metrics = server.metrics_text().await;
        assert!(
            metrics.contains(r#"featherstore_ingested_rows_total{feature_set="user_features"} 5"#),
            "{metrics}"
        );
        assert!(metrics.contains(r#"featherstore_online_entities{feature_set="user_features"} 4"#));
        assert!(
            metrics.contains(
                r#"featherstore_requests_total{api="http",code="ok",method="POST /v1/online"} 2"#
            ),
            "{metrics}"
        );
        assert!(metrics.contains("featherstore_request_duration_seconds_bucket"));

        let deleted = client
            .delete(format!("{base}/v1/feature-sets/user_features"))
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
        let gone = send(client.get(format!("{base}/v1/feature-sets/user_features"))).await;
        assert_error(&gone, StatusCode::NOT_FOUND, "not_found", "user_features");
    }
}

#[tokio::test]
async fn bad_requests_get_documented_errors_and_lose_nothing() {
    let server = TestServer::start_with(BACKENDS[0], |c| {
        c.limits.max_message_bytes = 4096;
        c.limits.max_online_entities = 2;
    })
    .await;
    let base = &server.http;
    let client = http();
    send(
        client
            .post(format!("{base}/v1/feature-sets"))
            .body(USER_SPEC),
    )
    .await;
    let good =
        json!({"rows": [{"user_id": "u1", "event_timestamp": "2026-01-01T00:00:00Z", "age": 1}]});
    send(
        client
            .post(format!("{base}/v1/feature-sets/user_features/rows"))
            .json(&good),
    )
    .await;

    let rows_url = format!("{base}/v1/feature-sets/user_features/rows");
    let cases = vec![
        (client.post(format!("{base}/v1/feature-sets")).body("{"), StatusCode::BAD_REQUEST, "invalid_argument", "invalid feature set spec"),
        (client.post(format!("{base}/v1/feature-sets")).body(r#"{"name": "x", "entity": {"name": "id", "type": "uuid"}, "features": []}"#),
            StatusCode::BAD_REQUEST, "invalid_argument", "uuid"),
        (client.post(rows_url.clone()).json(&json!({"rows": [{"user_id": "u2", "event_timestamp": "2026-01-01T00:00:00Z", "age": "old"}]})),
            StatusCode::BAD_REQUEST, "invalid_argument", "column \"age\""),
        (client.post(rows_url.clone()).json(&json!({"rows": [{"user_id": "u2", "event_timestamp": "2026-01-01T00:00:00Z", "color": 1}]})),
            StatusCode::BAD_REQUEST, "invalid_argument", "\"color\" is not declared"),
        (client.post(rows_url.clone()).json(&json!({"rows": [{"user_id": null, "event_timestamp": "2026-01-01T00:00:00Z"}]})),
            StatusCode::BAD_REQUEST, "invalid_argument", "user_id"),
        (client.post(rows_url.clone()).json(&json!({"rows": [{"user_id": "u2", "event_timestamp": "soon"}]})),
            StatusCode::BAD_REQUEST, "invalid_argument", "event_timestamp"),
        (client.post(rows_url.clone()).header("content-type", ARROW).body("not arrow"),
            StatusCode::BAD_REQUEST, "invalid_argument", "Arrow IPC"),
        (client.post(rows_url.clone()).body(vec![b' '; 10_000]), StatusCode::PAYLOAD_TOO_LARGE, "too_large", "4096"),
        (client.post(format!("{base}/v1/feature-sets/nope/rows")).json(&good), StatusCode::NOT_FOUND, "not_found", "nope"),
        (client.post(format!("{base}/v1/online")).json(&json!({"feature_set": "user_features", "entities": ["a", "b", "c"]})),
            StatusCode::PAYLOAD_TOO_LARGE, "too_large", "at most 2"),
        (client.post(format!("{base}/v1/online")).json(&json!({"feature_set": "user_features", "entities": ["a"], "features": ["nope"]})),
            StatusCode::NOT_FOUND, "not_found", "nope"),
        (client.post(format!("{base}/v1/online")).json(&json!({"type": "history", "feature_set": "user_features", "entities": []})),
            StatusCode::BAD_REQUEST, "invalid_argument", "online"),
        (client.post(format!("{base}/v1/history")).json(&json!({"feature_set": "user_features", "start": "2026-02-01", "end": "2026-01-01"})),
            StatusCode::BAD_REQUEST, "invalid_argument", "after end"),
        (client.get(format!("{base}/v2/nothing")), StatusCode::NOT_FOUND, "not_found", "/v2/nothing"),
    ];
    for (request, status, code, needle) in cases {
        let result = send(request).await;
        assert_error(&result, status, code, needle);
    }
    let history = send(
        client
            .post(format!("{base}/v1/history"))
            .json(&json!({"feature_set": "user_features"})),
    )
    .await;
    assert_eq!(
        history.1["rows"].as_array().unwrap().len(),
        1,
        "only the good row is stored"
    );
    let metrics = http::text(&format!("{base}/metrics")).await;
    assert!(metrics.contains(r#"code="too_large""#), "{metrics}");
}
