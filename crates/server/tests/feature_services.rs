//! Feature services end to end: the registry on Flight and HTTP, reads across sets (DoGet and
//! `POST /v1/online`), training data by service, hostile entity rows, persistence across a
//! restart, and Arrow IPC answers of every read route.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type};
use featherstore_core::time::{format_timestamp, now_micros};
use featherstore_server::config::Backend;
use featherstore_testkit::http::{assert_error, ipc_body, metric, read_ipc, send, ARROW};
use featherstore_testkit::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tonic::Code;

const MERCHANT_SPEC: &str = r#"{
  "name": "merchant_features",
  "entity": {"name": "merchant_id", "type": "int64"},
  "features": [
    {"name": "risk", "type": "float64"},
    {"name": "age", "type": "int64"}
  ],
  "ttl_seconds": 86400
}"#;

const FRAUD: &str = r#"{"name": "fraud_model", "features": ["user_features:age", "merchant_features:risk", "user_features:ctr_7d"], "description": "fraud", "tags": {"team": "risk"}}"#;

/// A server on `backend` with both sets, rows in each (merchant 9's value is older than the
/// TTL), and the `fraud_model` service.
async fn with_fraud_model(backend: Backend) -> TestServer {
    let server = TestServer::start(backend).await;
    let mut client = server.flight().await;
    action(&mut client, "create_feature_set", USER_SPEC)
        .await
        .unwrap();
    action(&mut client, "create_feature_set", MERCHANT_SPEC)
        .await
        .unwrap();
    put_ok(
        &mut client,
        "user_features",
        vec![user_batch(&[
            ("u1", Some(31), Some(0.5), 1_767_225_600),
            ("u2", Some(42), None, 1_767_225_600),
        ])],
    )
    .await;
    let recent = format_timestamp(now_micros() - 60_000_000);
    let rows = json!({"rows": [
        {"merchant_id": 7, "event_timestamp": recent, "risk": 0.75, "age": 3},
        {"merchant_id": 9, "event_timestamp": "2026-01-01T00:00:00Z", "risk": 0.5, "age": 4},
    ]});
    let ingested = send(
        http()
            .post(format!(
                "{}/v1/feature-sets/merchant_features/rows",
                server.http
            ))
            .json(&rows),
    )
    .await;
    assert_eq!(ingested.0, StatusCode::OK, "{}", ingested.1);
    action(&mut client, "create_feature_service", FRAUD)
        .await
        .unwrap();
    server
}

fn fraud_ticket() -> Value {
    json!({"type": "online", "feature_service": "fraud_model",
           "entities": {"user_id": ["u2", "nobody", "u1"], "merchant_id": [7, 7, 9]}})
}

fn assert_status(status: &tonic::Status, code: Code, needle: &str) {
    assert_eq!(status.code(), code, "{status}");
    assert!(
        status.message().contains(needle),
        "{status} lacks {needle:?}"
    );
}

/// Checks the answer to [`fraud_ticket`]: request order, TTL, unknown entities.
fn assert_fraud_rows(batch: &RecordBatch) {
    assert_eq!(
        column_names(batch),
        ["user_id", "merchant_id", "age", "risk", "ctr_7d"]
    );
    let users: Vec<_> = batch
        .column(0)
        .as_string::<i32>()
        .iter()
        .flatten()
        .collect();
    assert_eq!(users, ["u2", "nobody", "u1"]);
    let merchants = batch.column(1).as_primitive::<Int64Type>().values();
    assert_eq!(merchants.as_ref(), [7, 7, 9]);
    let ages = batch.column(2).as_primitive::<Int64Type>();
    assert_eq!(
        (ages.value(0), ages.is_null(1), ages.value(2)),
        (42, true, 31)
    );
    // Merchant 9's value is older than the set's TTL: null.
    let risk = batch.column(3).as_primitive::<Float64Type>();
    assert_eq!(
        (risk.value(0), risk.value(1), risk.is_null(2)),
        (0.75, 0.75, true)
    );
    assert_eq!(batch.column(4).null_count(), 2);
}

#[tokio::test]
async fn services_are_stored_read_across_sets_and_survive_a_restart() {
    for backend in BACKENDS {
        let server = with_fraud_model(backend).await;
        let mut client = server.flight().await;
        let stored = action(
            &mut client,
            "get_feature_service",
            r#"{"name": "fraud_model"}"#,
        )
        .await
        .unwrap();
        assert_eq!(stored["features"][1], "merchant_features:risk");
        assert!(stored["created_at"].is_string(), "{stored}");
        let again = action(&mut client, "create_feature_service", FRAUD)
            .await
            .unwrap();
        assert_eq!(again, stored, "the same service again is a no-op");
        let different = FRAUD.replace("\"fraud\"", "\"other\"");
        let status = action(&mut client, "create_feature_service", &different)
            .await
            .unwrap_err();
        assert_status(&status, Code::AlreadyExists, "fraud_model");
        let unknown = r#"{"name": "s2", "features": ["user_features:nope"]}"#;
        let status = action(&mut client, "create_feature_service", unknown)
            .await
            .unwrap_err();
        assert_status(&status, Code::NotFound, "nope");
        let unknown = r#"{"name": "s2", "features": ["ghosts:*"]}"#;
        let status = action(&mut client, "create_feature_service", unknown)
            .await
            .unwrap_err();
        assert_status(&status, Code::NotFound, "ghosts");
        let bad = r#"{"name": "s2", "features": ["user_features"]}"#;
        let status = action(&mut client, "create_feature_service", bad)
            .await
            .unwrap_err();
        assert_status(&status, Code::InvalidArgument, "set:feature");

        assert_fraud_rows(&concat(&get(&mut client, fraud_ticket()).await.unwrap()));

        // The set a service reads cannot be deleted.
        let status = action(
            &mut client,
            "delete_feature_set",
            r#"{"name": "merchant_features"}"#,
        )
        .await
        .unwrap_err();
        assert_status(&status, Code::FailedPrecondition, "\"fraud_model\"");

        let dir = server.shutdown().await;
        let server = TestServer::start_in(dir, backend, |_| {}).await;
        let mut client = server.flight().await;
        let listed = action(&mut client, "list_feature_services", "{}")
            .await
            .unwrap();
        assert_eq!(listed, json!([stored]), "{backend:?}");
        assert_fraud_rows(&concat(&get(&mut client, fraud_ticket()).await.unwrap()));

        action(
            &mut client,
            "delete_feature_service",
            r#"{"name": "fraud_model"}"#,
        )
        .await
        .unwrap();
        let status = get(&mut client, fraud_ticket()).await.unwrap_err();
        assert_status(&status, Code::NotFound, "fraud_model");
        action(
            &mut client,
            "delete_feature_set",
            r#"{"name": "merchant_features"}"#,
        )
        .await
        .unwrap();
        let dir = server.shutdown().await;
        let server = TestServer::start_in(dir, backend, |_| {}).await;
        let mut client = server.flight().await;
        let listed = action(&mut client, "list_feature_services", "{}")
            .await
            .unwrap();
        assert_eq!(listed, json!([]), "a deleted service stays deleted");
    }
}

#[tokio::test]
async fn references_full_names_timestamps_and_clashes() {
    let server = with_fraud_model(Backend::Duckdb).await;
    let mut client = server.flight().await;
    let clash = json!({"type": "online", "features": ["user_features:age", "merchant_features:age"],
                       "entities": {"user_id": ["u1"], "merchant_id": [7]}});
    let status = get(&mut client, clash.clone()).await.unwrap_err();
    assert_status(&status, Code::InvalidArgument, "full_names");

    let mut full = clash;
    full["full_names"] = json!(true);
    full["with_timestamps"] = json!(true);
    let batch = concat(&get(&mut client, full).await.unwrap());
    assert_eq!(
        column_names(&batch),
        [
            "user_id",
            "merchant_id",
            "user_features__age",
            "merchant_features__age",
            "user_features__event_timestamp",
            "merchant_features__event_timestamp"
        ]
    );
    assert_eq!(batch.column(2).as_primitive::<Int64Type>().value(0), 31);
    assert_eq!(batch.column(3).as_primitive::<Int64Type>().value(0), 3);
    assert!(batch.column(4).is_valid(0) && batch.column(5).is_valid(0));

    // A service's plan is cached: it follows a change of the sets it reads.
    let star = r#"{"name": "everything", "features": ["merchant_features:*"]}"#;
    action(&mut client, "create_feature_service", star)
        .await
        .unwrap();
    let ticket = json!({"type": "online", "feature_service": "everything", "entities": {"merchant_id": [7]}});
    let before = concat(&get(&mut client, ticket.clone()).await.unwrap());
    assert_eq!(column_names(&before), ["merchant_id", "risk", "age"]);
    let evolved = MERCHANT_SPEC.replace(
        r#"{"name": "age", "type": "int64"}"#,
        r#"{"name": "age", "type": "int64"}, {"name": "country", "type": "string"}"#,
    );
    action(&mut client, "update_feature_set", &evolved)
        .await
        .unwrap();
    let after = concat(&get(&mut client, ticket).await.unwrap());
    assert_eq!(
        column_names(&after),
        ["merchant_id", "risk", "age", "country"]
    );
}

#[tokio::test]
async fn hostile_entity_rows_get_documented_errors() {
    let server =
        TestServer::start_with(Backend::Duckdb, |c| c.limits.max_online_entities = 2).await;
    let mut client = server.flight().await;
    action(&mut client, "create_feature_set", USER_SPEC)
        .await
        .unwrap();
    action(&mut client, "create_feature_set", MERCHANT_SPEC)
        .await
        .unwrap();
    action(&mut client, "create_feature_service", FRAUD)
        .await
        .unwrap();
    let url = format!("{}/v1/online", server.http);
    let cases = [
        (
            json!({"feature_service": "fraud_model", "entities": {"user_id": ["u1"]}}),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "lacks the key column \"merchant_id\"",
        ),
        (
            json!({"feature_service": "fraud_model", "entities": {"user_id": ["u1", "u2"], "merchant_id": [7]}}),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "differ in length",
        ),
        (
            json!({"feature_service": "fraud_model", "entities": {"user_id": ["u1"], "merchant_id": ["7"]}}),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "key column \"merchant_id\" row 0",
        ),
        (
            json!({"feature_service": "fraud_model", "entities": {"user_id": [1], "merchant_id": [7]}}),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "key column \"user_id\" row 0",
        ),
        (
            json!({"feature_service": "fraud_model", "entities": {"user_id": ["a", "b", "c"], "merchant_id": [1, 2, 3]}}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "3 entities",
        ),
        (
            json!({"feature_service": "fraud_model", "entities": {"user_id": ["u1"], "merchant_id": [7], "device_id": [1]}}),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "\"device_id\"",
        ),
        (
            json!({"feature_service": "nope", "entities": {}}),
            StatusCode::NOT_FOUND,
            "not_found",
            "feature service \"nope\"",
        ),
        (
            json!({"features": ["user_features:nope"], "entities": {"user_id": ["u1"]}}),
            StatusCode::NOT_FOUND,
            "not_found",
            "nope",
        ),
        (
            json!({"features": ["user_features:age"], "feature_service": "fraud_model", "entities": {}}),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "not both",
        ),
        (
            json!({"feature_service": "fraud_model", "entities": [["u1", 7]]}),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "entities",
        ),
        (
            json!({"feature_service": "fraud_model", "entities": {"user_id": "u1", "merchant_id": 7}}),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "entities",
        ),
    ];
    for (body, status, code, needle) in cases {
        let answer = send(http().post(&url).json(&body)).await;
        assert_error(&answer, status, code, needle);
    }
    // No entity rows: an empty answer with the columns.
    let empty = send(http().post(&url).json(
        &json!({"feature_service": "fraud_model", "entities": {"user_id": [], "merchant_id": []}}),
    ))
    .await;
    assert_eq!(empty, (StatusCode::OK, json!({"rows": []})));
    // The server still serves.
    let (status, _) = send(http().get(format!("{}/health", server.http))).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn http_service_routes_training_by_service_and_arrow_answers() {
    let server = with_fraud_model(Backend::Parquet).await;
    let base = &server.http;
    let client = http();
    let listed = send(client.get(format!("{base}/v1/feature-services"))).await;
    assert_eq!(listed.0, StatusCode::OK);
    assert_eq!(listed.1[0]["name"], "fraud_model");
    let created = send(
        client
            .post(format!("{base}/v1/feature-services"))
            .body(r#"{"name": "users_only", "features": ["user_features:*"]}"#),
    )
    .await;
    assert_eq!(created.0, StatusCode::CREATED, "{}", created.1);
    let again = send(
        client
            .post(format!("{base}/v1/feature-services"))
            .body(r#"{"name": "users_only", "features": ["user_features:*"]}"#),
    )
    .await;
    assert_eq!(again, (StatusCode::OK, created.1.clone()));
    let got = send(client.get(format!("{base}/v1/feature-services/users_only"))).await;
    assert_eq!(got, (StatusCode::OK, created.1));
    let refused = send(client.delete(format!("{base}/v1/feature-sets/user_features"))).await;
    assert_error(
        &refused,
        StatusCode::CONFLICT,
        "failed_precondition",
        "\"users_only\"",
    );
    let deleted = client
        .delete(format!("{base}/v1/feature-services/users_only"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let gone = send(client.get(format!("{base}/v1/feature-services/users_only"))).await;
    assert_error(&gone, StatusCode::NOT_FOUND, "not_found", "users_only");

    // Online across sets: JSON and Arrow IPC.
    let online = send(
        client
            .post(format!("{base}/v1/online"))
            .json(&fraud_ticket()),
    )
    .await;
    assert_eq!(online.0, StatusCode::OK);
    assert_eq!(online.1["rows"][0]["user_id"], "u2");
    assert_eq!(online.1["rows"][0]["risk"], 0.75);
    let arrow = arrow_post(
        &client,
        format!("{base}/v1/online"),
        fraud_ticket().to_string(),
    )
    .await;
    assert_fraud_rows(&concat(&arrow));

    // Every other read route answers Arrow IPC when asked.
    let single = json!({"feature_set": "user_features", "entities": ["u1"]});
    let batches = arrow_post(&client, format!("{base}/v1/online"), single.to_string()).await;
    assert_eq!(rows(&batches), 1);
    let history = json!({"feature_set": "user_features"});
    let batches = arrow_post(&client, format!("{base}/v1/history"), history.to_string()).await;
    assert_eq!(rows(&batches), 2);

    // Training data by service, over HTTP and Flight.
    let entity_rows = training_rows();
    let response = client
        .post(format!(
            "{base}/v1/training-data?feature_service=fraud_model"
        ))
        .header("content-type", ARROW)
        .header("accept", ARROW)
        .body(ipc_body(std::slice::from_ref(&entity_rows)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let joined = concat(&read_ipc(&response.bytes().await.unwrap()));
    assert_eq!(
        column_names(&joined),
        [
            "user_id",
            "merchant_id",
            "event_timestamp",
            "age",
            "risk",
            "ctr_7d"
        ]
    );
    assert_eq!(joined.column(3).as_primitive::<Int64Type>().value(0), 31);
    let command = json!({"type": "training_data", "feature_service": "fraud_model"});
    let flight = concat(
        &exchange(&server, command, vec![entity_rows.clone()])
            .await
            .unwrap(),
    );
    assert_eq!(flight, joined);
    let unknown = json!({"type": "training_data", "feature_service": "nope"});
    let status = exchange(&server, unknown, vec![entity_rows])
        .await
        .unwrap_err();
    assert_status(&status, Code::NotFound, "nope");

    // Every new route and action is counted under its own name.
    let metrics = server.metrics_text().await;
    for (labels, count) in [
        (
            r#"{api="flight",code="ok",method="create_feature_service"}"#,
            1.0,
        ),
        (
            r#"{api="http",code="ok",method="POST /v1/feature-services"}"#,
            2.0,
        ),
        (
            r#"{api="http",code="ok",method="GET /v1/feature-services/{name}"}"#,
            1.0,
        ),
        (
            r#"{api="http",code="not_found",method="GET /v1/feature-services/{name}"}"#,
            1.0,
        ),
        (
            r#"{api="http",code="ok",method="DELETE /v1/feature-services/{name}"}"#,
            1.0,
        ),
        (
            r#"{api="http",code="ok",method="GET /v1/feature-services"}"#,
            1.0,
        ),
        (
            r#"{api="http",code="failed_precondition",method="DELETE /v1/feature-sets/{name}"}"#,
            1.0,
        ),
    ] {
        let sample = format!("featherstore_requests_total{labels}");
        assert_eq!(metric(&metrics, &sample), count, "{sample}");
    }
}

/// One entity row for `fraud_model`: u1 and merchant 7, now.
fn training_rows() -> RecordBatch {
    use arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray};
    use std::sync::Arc;
    RecordBatch::try_from_iter(vec![
        (
            "user_id",
            Arc::new(StringArray::from(vec!["u1"])) as ArrayRef,
        ),
        ("merchant_id", Arc::new(Int64Array::from(vec![7]))),
        (
            "event_timestamp",
            Arc::new(TimestampMicrosecondArray::from(vec![now_micros()]).with_timezone("UTC")),
        ),
    ])
    .unwrap()
}

async fn arrow_post(client: &reqwest::Client, url: String, body: String) -> Vec<RecordBatch> {
    let response = client
        .post(url)
        .header("accept", ARROW)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], ARROW);
    read_ipc(&response.bytes().await.unwrap())
}

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

#[tokio::test]
async fn tokens_need_every_set_a_service_reads_and_admin_to_manage() {
    use featherstore_server::config::{AuthConfig, Scope, TokenConfig};
    const ADMIN: &str = "admin-0a9b8c7d6e5f4a3b2c";
    const READER: &str = "reader-5f2a7c1e9b3d4a60";
    const USERS_ONLY: &str = "users-only-6b5a4c3d2e1f0a9b";
    let mut users_only = TokenConfig::inline("users-only", USERS_ONLY, &[Scope::Read]);
    users_only.feature_sets = Some(vec!["user_*".into()]);
    let server = TestServer::start_with(Backend::Duckdb, |c| {
        c.auth = AuthConfig {
            tokens: vec![
                TokenConfig::inline("admin", ADMIN, &[Scope::Read, Scope::Write, Scope::Admin]),
                TokenConfig::inline("reader", READER, &[Scope::Read]),
                users_only,
            ],
            allow_unauthenticated: false,
        }
    })
    .await;
    let base = &server.http;
    let client = http();
    let as_token = |request: reqwest::RequestBuilder, token: &str| request.bearer_auth(token);
    for spec in [USER_SPEC, MERCHANT_SPEC] {
        let created =
            send(as_token(client.post(format!("{base}/v1/feature-sets")), ADMIN).body(spec)).await;
        assert_eq!(created.0, StatusCode::CREATED, "{}", created.1);
    }
    let by_reader =
        send(as_token(client.post(format!("{base}/v1/feature-services")), READER).body(FRAUD))
            .await;
    assert_error(&by_reader, StatusCode::FORBIDDEN, "forbidden", "admin");
    let by_admin =
        send(as_token(client.post(format!("{base}/v1/feature-services")), ADMIN).body(FRAUD)).await;
    assert_eq!(by_admin.0, StatusCode::CREATED, "{}", by_admin.1);

    let listed = send(as_token(
        client.get(format!("{base}/v1/feature-services")),
        USERS_ONLY,
    ))
    .await;
    assert_eq!(
        listed,
        (StatusCode::OK, json!([])),
        "a service reading merchants is hidden"
    );
    let read =
        send(as_token(client.post(format!("{base}/v1/online")), USERS_ONLY).json(&fraud_ticket()))
            .await;
    assert_error(
        &read,
        StatusCode::FORBIDDEN,
        "forbidden",
        "merchant_features",
    );
    let read =
        send(as_token(client.post(format!("{base}/v1/online")), READER).json(&fraud_ticket()))
            .await;
    assert_eq!(read.0, StatusCode::OK, "{}", read.1);
    let delete = send(as_token(
        client.delete(format!("{base}/v1/feature-services/fraud_model")),
        READER,
    ))
    .await;
    assert_error(&delete, StatusCode::FORBIDDEN, "forbidden", "admin");
}
