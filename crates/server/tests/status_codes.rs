//! Every status of PROTOCOL.md's error table (and docs/api.md's additions), provoked for real
//! on each Flight call it applies to and on HTTP: the gRPC code with the typed code in the
//! status metadata, and the HTTP status with its JSON error body. Both name the same
//! `ErrorCode`, which is what a client reads back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, TimestampSecondArray};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::{FlightDataEncoder, FlightDataEncoderBuilder};
use arrow_flight::error::FlightError;
use arrow_flight::{FlightDescriptor, PutResult};
use featherstore_core::{ErrorCode, ERROR_CODE_METADATA};
use featherstore_server::config::{AuthConfig, Backend, Config, Scope, TokenConfig};
use featherstore_testkit::*;
use futures::stream::BoxStream;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tonic::{Code, Status};

/// Asserts a Flight error: its gRPC code, the typed code in its metadata, its message.
#[track_caller]
fn assert_status(status: &Status, grpc: Code, code: ErrorCode, needle: &str) {
    assert_eq!(status.code(), grpc, "{status:?}");
    let sent = status
        .metadata()
        .get(ERROR_CODE_METADATA)
        .map(|value| value.to_str().unwrap().parse::<ErrorCode>());
    assert_eq!(sent, Some(Ok(code)), "{status:?}");
    assert!(
        status.message().contains(needle),
        "{needle:?} not in {status:?}"
    );
}

/// Asserts an HTTP error: its status, and a body that is exactly
/// `{"error": {"code": ..., "message": ...}}` with the typed code and the message.
async fn assert_http(response: reqwest::Response, status: u16, code: ErrorCode, needle: &str) {
    assert_eq!(response.status().as_u16(), status, "{response:?}");
    let body: Value = response.json().await.unwrap();
    let error = body["error"].as_object().expect("an error object");
    assert_eq!(
        (body.as_object().unwrap().len(), error.len()),
        (1, 2),
        "{body}"
    );
    assert_eq!(error["code"].as_str().unwrap().parse(), Ok(code), "{body}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains(needle), "{needle:?} not in {body}");
}

fn url(server: &TestServer, path: &str) -> String {
    format!("{}{path}", server.http)
}

async fn send(request: reqwest::RequestBuilder) -> reqwest::Response {
    request.send().await.unwrap()
}

fn err<T: std::fmt::Debug>(result: Result<T, Status>) -> Status {
    result.expect_err("the call fails")
}

/// The entity rows of a training data call for `user_features`: `rows` users.
fn entity_rows(rows: usize) -> RecordBatch {
    let users: Vec<_> = (0..rows)
        .map(|i| ("an-entity-row-of-a-training-call", None, None, i as i64))
        .collect();
    user_batch(&users).project(&[0, 4]).unwrap()
}

const TRAINING: &str = r#"{"type": "training_data", "features": ["user_features:age"]}"#;

fn training(command: &str) -> Value {
    serde_json::from_str(command).unwrap()
}

/// A DuckDB server with `user_features` holding one row.
async fn with_user_set(adjust: impl FnOnce(&mut Config)) -> TestServer {
    let server = TestServer::start_in(tempfile::tempdir().unwrap(), Backend::Duckdb, adjust).await;
    add_user_set(server).await
}

async fn with_backend(backend: Backend) -> TestServer {
    add_user_set(TestServer::start(backend).await).await
}

async fn add_user_set(server: TestServer) -> TestServer {
    let mut client = server.flight().await;
    flight::create_set(&mut client, USER_SPEC).await;
    put_ok(
        &mut client,
        "user_features",
        vec![user_batch(&[("u1", Some(31), Some(0.5), 1_000)])],
    )
    .await;
    server
}

/// The Flight messages of `batch` under `descriptor`, then nothing, without an end: the call
/// stays open, holding its admission (a request, and a stream of its client), until the
/// server ends it.
fn held_input(descriptor: FlightDescriptor, batch: RecordBatch) -> FlightDataEncoder {
    FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(descriptor))
        .build(futures::stream::once(async { Ok(batch) }).chain(futures::stream::pending()))
}

/// A DoPut of one row that then sends nothing: its answers.
async fn held_put(server: &TestServer) -> BoxStream<'static, Result<PutResult, FlightError>> {
    let descriptor = FlightDescriptor::new_path(vec!["user_features".into()]);
    let row = user_batch(&[("u9", Some(9), None, 2_000)]);
    let mut client = server.flight().await;
    client
        .do_put(held_input(descriptor, row))
        .await
        .expect("the call starts")
}

/// A training data DoExchange of one entity row that then sends nothing: its answers.
async fn held_exchange(server: &TestServer) -> FlightRecordBatchStream {
    let descriptor = FlightDescriptor::new_cmd(TRAINING);
    let mut client = server.flight().await;
    client
        .do_exchange(held_input(descriptor, entity_rows(1)))
        .await
        .expect("the call starts")
}

/// An HTTP ingest whose body never comes: it holds its admission meanwhile. Returns once the
/// server counts it in flight.
async fn held_http_request(server: &TestServer) -> TcpStream {
    let address = server.server.as_ref().unwrap().http_addr;
    let mut held = TcpStream::connect(address).await.unwrap();
    held.write_all(
        b"POST /v1/feature-sets/user_features/rows HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
    )
    .await
    .unwrap();
    let in_flight = "featherstore_requests_in_flight{api=\"http\"} 1";
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.metrics_text().await.contains(in_flight) {
        assert!(Instant::now() < deadline, "the held request never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    held
}

/// Every Flight call that starts a stream (DoGet, DoPut, DoExchange) refused at admission
/// with `grpc` / `code`; DoAction too when `unary` is set.
async fn assert_calls_refused(
    server: &TestServer,
    grpc: Code,
    code: ErrorCode,
    needle: &str,
    unary: bool,
) {
    let mut client = server.flight().await;
    let history = json!({"type": "history", "feature_set": "user_features"});
    assert_status(&err(get(&mut client, history).await), grpc, code, needle);
    let (acks, status) = put(
        &mut client,
        "user_features",
        vec![user_batch(&[("u1", None, None, 5)])],
    )
    .await;
    assert!(acks.is_empty());
    assert_status(&status.unwrap(), grpc, code, needle);
    let status = err(exchange(server, training(TRAINING), vec![entity_rows(1)]).await);
    assert_status(&status, grpc, code, needle);
    if unary {
        let status = err(action(&mut client, "list_feature_sets", "{}").await);
        assert_status(&status, grpc, code, needle);
    }
}

#[tokio::test]
async fn invalid_argument() {
    let server = with_user_set(|_| {}).await;
    let mut client = server.flight().await;
    let status = err(get(&mut client, json!("not an object")).await);
    assert_status(
        &status,
        Code::InvalidArgument,
        ErrorCode::InvalidArgument,
        "invalid ticket",
    );

    let wrong_type = RecordBatch::try_from_iter(vec![
        (
            "user_id",
            Arc::new(StringArray::from(vec!["u2"])) as ArrayRef,
        ),
        ("age", Arc::new(Float64Array::from(vec![1.5]))),
        (
            "event_timestamp",
            Arc::new(TimestampSecondArray::from(vec![1_000]).with_timezone("UTC")),
        ),
    ])
    .unwrap();
    let (acks, status) = put(&mut client, "user_features", vec![wrong_type]).await;
    assert!(acks.is_empty());
    assert_status(
        &status.unwrap(),
        Code::InvalidArgument,
        ErrorCode::InvalidArgument,
        "\"age\" has type Float64; expected int64",
    );

    let status = err(exchange(
        &server,
        training(r#"{"type": "training_data"}"#),
        vec![entity_rows(1)],
    )
    .await);
    assert_status(
        &status,
        Code::InvalidArgument,
        ErrorCode::InvalidArgument,
        "invalid training_data command",
    );

    let status = err(action(&mut client, "create_feature_set", "{").await);
    assert_status(
        &status,
        Code::InvalidArgument,
        ErrorCode::InvalidArgument,
        "invalid feature set spec",
    );

    let response = send(http().post(url(&server, "/v1/feature-sets")).body("{")).await;
    assert_http(
        response,
        400,
        ErrorCode::InvalidArgument,
        "invalid feature set spec",
    )
    .await;
    // Path and query parameters that do not parse get the same body (not the framework's
    // plain text).
    let response = send(http().get(url(&server, "/v1/feature-sets/%FF"))).await;
    assert_http(response, 400, ErrorCode::InvalidArgument, "").await;
    let response = send(http().post(url(&server, "/v1/training-data?color=blue"))).await;
    assert_http(response, 400, ErrorCode::InvalidArgument, "color").await;
}

#[tokio::test]
async fn not_found() {
    let server = with_user_set(|_| {}).await;
    let mut client = server.flight().await;
    let ticket = json!({"type": "online", "feature_set": "nope", "entities": ["u1"]});
    let status = err(get(&mut client, ticket).await);
    assert_status(&status, Code::NotFound, ErrorCode::NotFound, "nope");

    let (_, status) = put(
        &mut client,
        "nope",
        vec![user_batch(&[("u1", None, None, 1)])],
    )
    .await;
    assert_status(
        &status.unwrap(),
        Code::NotFound,
        ErrorCode::NotFound,
        "nope",
    );

    let command = training(r#"{"type": "training_data", "features": ["user_features:nope"]}"#);
    let status = err(exchange(&server, command, vec![entity_rows(1)]).await);
    assert_status(&status, Code::NotFound, ErrorCode::NotFound, "nope");

    let status = err(action(&mut client, "get_feature_set", r#"{"name": "nope"}"#).await);
    assert_status(&status, Code::NotFound, ErrorCode::NotFound, "nope");

    let response = send(http().get(url(&server, "/v1/feature-sets/nope"))).await;
    assert_http(response, 404, ErrorCode::NotFound, "nope").await;
}

#[tokio::test]
async fn already_exists() {
    let server = with_user_set(|_| {}).await;
    let mut client = server.flight().await;
    let different = USER_SPEC.replace("float32[2]", "float32[3]");
    let status = err(action(&mut client, "create_feature_set", &different).await);
    assert_status(
        &status,
        Code::AlreadyExists,
        ErrorCode::AlreadyExists,
        "user_features",
    );
    let response = send(
        http()
            .post(url(&server, "/v1/feature-sets"))
            .body(different),
    )
    .await;
    assert_http(response, 409, ErrorCode::AlreadyExists, "user_features").await;
}

#[tokio::test]
async fn too_large() {
    let server = with_user_set(|c| {
        c.limits.max_online_entities = 3;
        c.limits.max_message_bytes = 64 * 1024;
    })
    .await;
    let mut client = server.flight().await;
    let ticket =
        json!({"type": "online", "feature_set": "user_features", "entities": ["a", "b", "c", "d"]});
    let status = err(get(&mut client, ticket).await);
    assert_status(
        &status,
        Code::ResourceExhausted,
        ErrorCode::TooLarge,
        "at most 3",
    );

    let rows: Vec<_> = (0..20_000)
        .map(|i| ("some-long-user-id", Some(i), Some(0.5), i))
        .collect();
    let (acks, status) = put(&mut client, "user_features", vec![user_batch(&rows)]).await;
    assert!(acks.is_empty());
    assert_status(
        &status.unwrap(),
        Code::ResourceExhausted,
        ErrorCode::TooLarge,
        "size limit",
    );

    // Entity rows over the message size limit, behind the schema: decoded on the way to the
    // store, and still RESOURCE_EXHAUSTED when they come out of it.
    let status = err(exchange(&server, training(TRAINING), vec![entity_rows(5_000)]).await);
    assert_status(
        &status,
        Code::ResourceExhausted,
        ErrorCode::TooLarge,
        "size limit",
    );

    let response = send(
        http()
            .post(url(&server, "/v1/feature-sets/user_features/rows"))
            .body(vec![b' '; 100_000]),
    )
    .await;
    assert_http(response, 413, ErrorCode::TooLarge, "65536").await;
    let response = send(
        http()
            .post(url(&server, "/v1/online"))
            .json(&json!({"feature_set": "user_features", "entities": ["a", "b", "c", "d"]})),
    )
    .await;
    assert_http(response, 413, ErrorCode::TooLarge, "at most 3").await;
}

#[tokio::test]
async fn too_many_requests_of_one_client() {
    let server = with_user_set(|c| c.limits.max_streams_per_client = 1).await;
    let held = held_put(&server).await;
    assert_calls_refused(
        &server,
        Code::ResourceExhausted,
        ErrorCode::TooManyRequests,
        "streams open",
        false,
    )
    .await;
    let response = send(
        http()
            .post(url(&server, "/v1/history"))
            .json(&json!({"feature_set": "user_features"})),
    )
    .await;
    assert_http(response, 429, ErrorCode::TooManyRequests, "streams open").await;
    drop(held);
}

#[tokio::test]
async fn unavailable_at_the_concurrency_limit() {
    let server = with_user_set(|c| {
        c.limits.max_concurrent_flight_requests = 1;
        c.limits.max_concurrent_http_requests = 1;
        c.limits.stream_idle_timeout_seconds = 60.0;
    })
    .await;
    let held = held_exchange(&server).await;
    assert_calls_refused(
        &server,
        Code::Unavailable,
        ErrorCode::Unavailable,
        "busy",
        true,
    )
    .await;
    drop(held);

    let held = held_http_request(&server).await;
    let response = send(http().get(url(&server, "/v1/feature-sets"))).await;
    assert_http(response, 503, ErrorCode::Unavailable, "busy").await;
    drop(held);
    // The request metrics take the code from the error, not from the HTTP status.
    let metrics = server.metrics_text().await;
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("featherstore_requests_total")
                && line.contains(r#"api="http""#)
                && line.contains(r#"code="unavailable""#)),
        "{metrics}"
    );
}

/// DoGet's DEADLINE_EXCEEDED (a reader that stops taking results) is provoked in
/// hostile_clients.rs (`stalled_flight_history_readers_release_their_connections`): it needs
/// a result larger than the transport's buffers.
#[track_caller]
/// The next answer of a call that sent nothing for the idle timeout: its end.
fn assert_ended_idle<T: std::fmt::Debug>(next: Option<Result<T, FlightError>>) {
    let status = to_status(next.unwrap().expect_err("the call is ended"));
    let code = ErrorCode::DeadlineExceeded;
    assert_status(&status, Code::DeadlineExceeded, code, "sent nothing");
}

#[tokio::test]
async fn deadline_exceeded_for_a_client_that_stops_sending() {
    let server = with_user_set(|c| c.limits.stream_idle_timeout_seconds = 0.5).await;
    let mut answers = held_put(&server).await;
    answers
        .next()
        .await
        .unwrap()
        .expect("the first batch is stored");
    assert_ended_idle(answers.next().await);
    assert_ended_idle(held_exchange(&server).await.next().await);

    let mut held = held_http_request(&server).await;
    let mut answer = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut held, &mut answer)
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap();
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["error"]["code"], "deadline_exceeded", "{body}");
}

const READER: &str = "status-reader-0123456789";
const INGESTER: &str = "status-ingester-0123456789";
const ADMIN: &str = "status-admin-0123456789";

#[tokio::test]
async fn unauthenticated_and_forbidden() {
    use Scope::*;
    let server = TestServer::start_in(tempfile::tempdir().unwrap(), Backend::Duckdb, |c| {
        c.auth = AuthConfig {
            tokens: vec![
                TokenConfig::inline("reader", READER, &[Read]),
                TokenConfig::inline("ingester", INGESTER, &[Write]),
                TokenConfig::inline("admin", ADMIN, &[Read, Write, Admin]),
            ],
            allow_unauthenticated: false,
        }
    })
    .await;
    let as_token = |token: &'static str| {
        let server = &server;
        async move {
            let mut client = server.flight().await;
            if !token.is_empty() {
                client
                    .add_header("authorization", &format!("Bearer {token}"))
                    .unwrap();
            }
            client
        }
    };
    let mut admin = as_token(ADMIN).await;
    action(&mut admin, "create_feature_set", USER_SPEC)
        .await
        .unwrap();
    let ticket = json!({"type": "online", "feature_set": "user_features", "entities": ["u1"]});
    let row = || vec![user_batch(&[("u1", Some(1), None, 1)])];

    for token in ["", "not-a-token"] {
        let mut client = as_token(token).await;
        let expect = |status: Status| {
            assert_status(
                &status,
                Code::Unauthenticated,
                ErrorCode::Unauthenticated,
                "token",
            )
        };
        expect(err(get(&mut client, ticket.clone()).await));
        expect(put(&mut client, "user_features", row()).await.1.unwrap());
        let data = FlightDataEncoderBuilder::new()
            .with_flight_descriptor(Some(FlightDescriptor::new_cmd(TRAINING)))
            .build(futures::stream::iter([Ok(entity_rows(1))]));
        expect(to_status(
            client.do_exchange(data).await.map(drop).unwrap_err(),
        ));
        expect(err(action(&mut client, "list_feature_sets", "{}").await));
    }
    let response = send(http().get(url(&server, "/v1/feature-sets"))).await;
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_http(response, 401, ErrorCode::Unauthenticated, "token").await;

    let denied = |status: Status| {
        assert_status(
            &status,
            Code::PermissionDenied,
            ErrorCode::Forbidden,
            "scope",
        )
    };
    let mut reader = as_token(READER).await;
    denied(put(&mut reader, "user_features", row()).await.1.unwrap());
    denied(err(
        action(&mut reader, "create_feature_set", USER_SPEC).await
    ));
    let mut ingester = as_token(INGESTER).await;
    denied(err(get(&mut ingester, ticket).await));
    let data = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(TRAINING)))
        .build(futures::stream::iter([Ok(entity_rows(1))]));
    denied(to_status(
        ingester.do_exchange(data).await.map(drop).unwrap_err(),
    ));
    let response = send(
        http()
            .post(url(&server, "/v1/feature-sets"))
            .bearer_auth(READER)
            .body(USER_SPEC),
    )
    .await;
    assert_http(response, 403, ErrorCode::Forbidden, "scope").await;
}

/// The Parquet files under `dir`, at any depth.
fn parquet_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(parquet_files(&path));
        } else if path.extension().is_some_and(|e| e == "parquet") {
            found.push(path);
        }
    }
    found
}

/// A real fault of the server: its Parquet files damaged on disk under it. The reads that
/// answer before streaming report INTERNAL / 500; ingest (into the log) is unaffected.
#[tokio::test]
async fn internal_for_damaged_storage() {
    let server = with_backend(Backend::Parquet).await;
    // Shutting down flushes the log into Parquet files.
    let server = server.restart().await;
    let files = parquet_files(server.dir.path());
    assert!(!files.is_empty(), "the flush wrote Parquet files");
    for file in files {
        std::fs::write(file, b"no longer a Parquet file").unwrap();
    }
    let mut client = server.flight().await;
    let history = json!({"type": "history", "feature_set": "user_features"});
    let status = err(get(&mut client, history).await);
    assert_status(&status, Code::Internal, ErrorCode::Internal, "");
    let status = err(exchange(&server, training(TRAINING), vec![entity_rows(1)]).await);
    assert_status(&status, Code::Internal, ErrorCode::Internal, "");

    let response = send(
        http()
            .post(url(&server, "/v1/training-data?features=user_features:age"))
            .header("content-type", "application/vnd.apache.arrow.stream")
            .body(ipc_stream(&entity_rows(1))),
    )
    .await;
    assert_http(response, 500, ErrorCode::Internal, "").await;

    // The faults met after the streams started are counted too: the alert on
    // `featherstore_requests_total{code="internal"}` sees them.
    let metrics = server.metrics_text().await;
    for (api, method) in [
        ("flight", "do_get_stream"),
        ("flight", "do_exchange_stream"),
        ("http", "POST /v1/training-data (stream)"),
    ] {
        let sample = format!(
            r#"featherstore_requests_total{{api="{api}",code="internal",method="{method}"}} 1"#
        );
        assert!(metrics.contains(&sample), "{sample} in {metrics}");
    }
}

fn ipc_stream(batch: &RecordBatch) -> Vec<u8> {
    let mut writer =
        arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &batch.schema()).unwrap();
    writer.write(batch).unwrap();
    writer.into_inner().unwrap()
}
