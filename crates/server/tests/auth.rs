//! Bearer-token auth end to end, with real clients: arrow-flight on the Flight port, reqwest
//! on the HTTP port. Every operation against every scope, feature-set globs, tokens from a
//! file and from the environment, the Handshake, the safe default bind, the failure metrics,
//! and the logs, which never show a token.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use arrow::array::RecordBatch;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{Action, FlightClient, FlightDescriptor, HandshakeRequest};
use featherstore_server::config::{AuthConfig, Backend, Config, Scope, TokenConfig};
use featherstore_testkit::*;
use futures::TryStreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tonic::Code;

const READER: &str = "reader-5f2a7c1e9b3d4a60";
const WRITER: &str = "writer-8c1d2e3f4a5b6c7d";
const ADMIN: &str = "admin-0a9b8c7d6e5f4a3b2c";
/// Write only: ingest without reading.
const INGESTER: &str = "ingester-71e2d3c4b5a69788";
/// Every scope, on `user_*` sets only.
const USERS_ONLY: &str = "users-only-4d3c2b1a0f9e8d7c";
const FROM_FILE: &str = "from-file-9a8b7c6d5e4f3a2b";
const FROM_ENV: &str = "from-env-1b2c3d4e5f6a7b8c";
const UNKNOWN: &str = "unknown-token-ffffffffffff";
const ENV_VAR: &str = "FEATHERSTORE_TEST_AUTH_TOKEN";
const ALL_TOKENS: [&str; 8] = [
    READER, WRITER, ADMIN, INGESTER, USERS_ONLY, FROM_FILE, FROM_ENV, UNKNOWN,
];

const ITEM_SPEC: &str = r#"{
  "name": "item_features",
  "entity": {"name": "item_id", "type": "string"},
  "features": [{"name": "price", "type": "float64"}]
}"#;

/// Everything the server (and its dependencies) logs in this test binary, at trace level.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl Write for Sink {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        tracing_subscriber::fmt()
            .with_env_filter("trace")
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .init();
        logs
    })
    .clone()
}

fn auth_config(dir: &std::path::Path) -> AuthConfig {
    use Scope::*;
    let token_file = dir.join("token.txt");
    std::fs::write(&token_file, format!("{FROM_FILE}\n")).unwrap();
    std::env::set_var(ENV_VAR, FROM_ENV);
    let mut users_only = TokenConfig::inline("users-only", USERS_ONLY, &[Read, Write, Admin]);
    users_only.feature_sets = Some(vec!["user_*".into()]);
    let mut from_file = TokenConfig::inline("from-file", "", &[Read]);
    (from_file.token, from_file.token_file) = (None, Some(token_file));
    let mut from_env = TokenConfig::inline("from-env", "", &[Read]);
    (from_env.token, from_env.token_env) = (None, Some(ENV_VAR.into()));
    AuthConfig {
        tokens: vec![
            TokenConfig::inline("reader", READER, &[Read]),
            TokenConfig::inline("writer", WRITER, &[Read, Write]),
            TokenConfig::inline("admin", ADMIN, &[Read, Write, Admin]),
            TokenConfig::inline("ingester", INGESTER, &[Write]),
            users_only,
            from_file,
            from_env,
        ],
        allow_unauthenticated: false,
    }
}

/// A server with the tokens above, holding `user_features` (two rows) and `item_features`.
async fn start() -> TestServer {
    captured_logs();
    let dir = tempfile::tempdir().unwrap();
    let auth = auth_config(dir.path());
    let server = TestServer::start_in(dir, Backend::Duckdb, |c| c.auth = auth).await;
    let mut admin = flight_as(&server, Some(ADMIN)).await;
    for spec in [USER_SPEC, ITEM_SPEC] {
        action(&mut admin, "create_feature_set", spec)
            .await
            .unwrap();
    }
    FlightOp::Put
        .run(&mut admin, "user_features")
        .await
        .unwrap();
    server
}

async fn flight_as(server: &TestServer, token: Option<&str>) -> FlightClient {
    let mut client = server.flight().await;
    if let Some(token) = token {
        client
            .add_header("authorization", &format!("Bearer {token}"))
            .unwrap();
    }
    client
}

/// Each kind of Flight call.
#[derive(Debug, Clone, Copy, PartialEq)]
enum FlightOp {
    Create,
    Get,
    List,
    ListFlights,
    FlightInfo,
    Schema,
    Put,
    Online,
    History,
    Exchange,
    ListActions,
    RebuildOnline,
    Delete,
}

const FLIGHT_OPS: [FlightOp; 13] = [
    FlightOp::Create,
    FlightOp::Get,
    FlightOp::List,
    FlightOp::ListFlights,
    FlightOp::FlightInfo,
    FlightOp::Schema,
    FlightOp::Put,
    FlightOp::Online,
    FlightOp::History,
    FlightOp::Exchange,
    FlightOp::ListActions,
    FlightOp::RebuildOnline,
    FlightOp::Delete,
];

fn user_rows() -> RecordBatch {
    user_batch(&[("u1", Some(31), Some(0.5), 1_767_225_600)])
}

fn entity_rows() -> RecordBatch {
    let batch = user_rows();
    batch.project(&[0, 4]).unwrap()
}

/// The specs of `user_features` and `item_features` under another name (for Create and
/// Delete, which must not disturb the sets the other calls use).
fn spec_named(set: &str) -> String {
    let base = if set.starts_with("user") {
        USER_SPEC
    } else {
        ITEM_SPEC
    };
    let mut spec: Value = serde_json::from_str(base).unwrap();
    spec["name"] = json!(set);
    spec.to_string()
}

impl FlightOp {
    /// The scope the call needs.
    fn scope(self) -> Option<Scope> {
        match self {
            FlightOp::Create | FlightOp::Delete | FlightOp::RebuildOnline => Some(Scope::Admin),
            FlightOp::Put => Some(Scope::Write),
            FlightOp::ListActions => None,
            _ => Some(Scope::Read),
        }
    }

    /// Runs the call on `set` (Create and Delete on `<set>_spare`), to the end of its stream.
    async fn run(self, client: &mut FlightClient, set: &str) -> Result<(), Code> {
        let status = |e| to_status(e).code();
        let descriptor = FlightDescriptor::new_path(vec![set.to_string()]);
        let name = json!({"name": set}).to_string();
        match self {
            FlightOp::Create => action(
                client,
                "create_feature_set",
                &spec_named(&format!("{set}_spare")),
            )
            .await
            .map(drop)
            .map_err(|s| s.code()),
            FlightOp::Delete => action(
                client,
                "delete_feature_set",
                &json!({"name": format!("{set}_spare")}).to_string(),
            )
            .await
            .map(drop)
            .map_err(|s| s.code()),
            FlightOp::Get => action(client, "get_feature_set", &name)
                .await
                .map(drop)
                .map_err(|s| s.code()),
            // Progress results, then the last: all of them.
            FlightOp::RebuildOnline => {
                let results = client
                    .do_action(Action::new("rebuild_online", name))
                    .await
                    .map_err(status)?;
                results
                    .try_collect::<Vec<_>>()
                    .await
                    .map(drop)
                    .map_err(status)
            }
            FlightOp::List => action(client, "list_feature_sets", "{}")
                .await
                .map(drop)
                .map_err(|s| s.code()),
            FlightOp::ListFlights => {
                let flights = client.list_flights("").await.map_err(status)?;
                flights
                    .try_collect::<Vec<_>>()
                    .await
                    .map(drop)
                    .map_err(status)
            }
            FlightOp::FlightInfo => client
                .get_flight_info(descriptor)
                .await
                .map(drop)
                .map_err(status),
            FlightOp::Schema => client
                .get_schema(descriptor)
                .await
                .map(drop)
                .map_err(status),
            FlightOp::Put => {
                let data = flight::put_data(set, futures::stream::iter([Ok(user_rows())]));
                let (_, ended) = flight::put_messages(client, data).await;
                ended.map_err(|s| s.code())
            }
            FlightOp::Online | FlightOp::History => {
                let kind = if self == FlightOp::Online {
                    "online"
                } else {
                    "history"
                };
                let ticket = json!({"type": kind, "feature_set": set, "entities": ["u1"]});
                get(client, ticket).await.map(drop).map_err(|s| s.code())
            }
            FlightOp::Exchange => {
                let command = json!({"type": "training_data", "features": [format!("{set}:*")]});
                flight::exchange_on(client, &command, vec![entity_rows()])
                    .await
                    .map(drop)
                    .map_err(|s| s.code())
            }
            FlightOp::ListActions => {
                let actions = client.list_actions().await.map_err(status)?;
                actions
                    .try_collect::<Vec<_>>()
                    .await
                    .map(drop)
                    .map_err(status)
            }
        }
    }
}

/// The names in a listing of specs.
fn set_names(listed: &Value) -> Vec<&str> {
    listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect()
}

async fn recreate_spare(server: &TestServer, set: &str) {
    let mut admin = flight_as(server, Some(ADMIN)).await;
    action(
        &mut admin,
        "create_feature_set",
        &spec_named(&format!("{set}_spare")),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn flight_refuses_missing_and_unknown_tokens() {
    let server = start().await;
    for credentials in [None, Some(UNKNOWN)] {
        let mut client = flight_as(&server, credentials).await;
        for op in FLIGHT_OPS {
            assert_eq!(
                op.run(&mut client, "user_features").await,
                Err(Code::Unauthenticated),
                "{op:?} with {credentials:?}"
            );
        }
    }
    // Not a bearer token: refused the same way.
    let mut client = server.flight().await;
    client
        .add_header("authorization", &format!("Basic {READER}"))
        .unwrap();
    assert_eq!(
        FlightOp::Get.run(&mut client, "user_features").await,
        Err(Code::Unauthenticated)
    );
    let status = action(&mut server.flight().await, "list_feature_sets", "{}")
        .await
        .unwrap_err();
    assert!(status.message().contains("Bearer"), "{status:?}");
}

#[tokio::test]
async fn flight_scopes_allow_and_refuse_each_call() {
    let server = start().await;
    let tokens = [
        (READER, vec![Scope::Read]),
        (WRITER, vec![Scope::Read, Scope::Write]),
        (ADMIN, vec![Scope::Read, Scope::Write, Scope::Admin]),
        (INGESTER, vec![Scope::Write]),
        (FROM_FILE, vec![Scope::Read]),
        (FROM_ENV, vec![Scope::Read]),
    ];
    for (token, scopes) in tokens {
        let mut client = flight_as(&server, Some(token)).await;
        for op in FLIGHT_OPS {
            if op == FlightOp::Delete {
                recreate_spare(&server, "user_features").await;
            }
            let allowed = op.scope().is_none_or(|s| scopes.contains(&s));
            let expected = if allowed {
                Ok(())
            } else {
                Err(Code::PermissionDenied)
            };
            assert_eq!(
                op.run(&mut client, "user_features").await,
                expected,
                "{op:?} with {token}"
            );
        }
    }
    // A refused delete deleted nothing; a refused put stored nothing.
    let mut reader = flight_as(&server, Some(READER)).await;
    let info = action(
        &mut reader,
        "get_feature_set",
        r#"{"name": "user_features"}"#,
    )
    .await
    .unwrap();
    // The rows of start(), and one per token with the write scope (writer, admin, ingester).
    assert_eq!(info["stats"]["rows"], 4, "{info}");
}

#[tokio::test]
async fn flight_feature_set_globs_limit_every_call_and_listing() {
    let server = start().await;
    let mut client = flight_as(&server, Some(USERS_ONLY)).await;
    for op in FLIGHT_OPS {
        if op == FlightOp::Delete {
            recreate_spare(&server, "user_features").await;
            recreate_spare(&server, "item_features").await;
        }
        assert_eq!(op.run(&mut client, "user_features").await, Ok(()), "{op:?}");
        let expected = match op {
            // Calls that name no set.
            FlightOp::List | FlightOp::ListFlights | FlightOp::ListActions => Ok(()),
            _ => Err(Code::PermissionDenied),
        };
        assert_eq!(
            op.run(&mut client, "item_features").await,
            expected,
            "{op:?}"
        );
    }
    let listed = action(&mut client, "list_feature_sets", "{}")
        .await
        .unwrap();
    let names = set_names(&listed);
    assert!(names.iter().all(|n| n.starts_with("user_")), "{names:?}");
    assert!(names.contains(&"user_features"), "{names:?}");
    let flights = flight::list_flights(&mut client).await;
    assert!(flights
        .iter()
        .all(|f| f.flight_descriptor.as_ref().unwrap().path[0].starts_with("user_")));
    // Training data over a permitted and a refused set together is refused.
    let command =
        json!({"type": "training_data", "features": ["user_features:age", "item_features:price"]});
    let refused = flight::exchange_on(&mut client, &command, vec![entity_rows()]).await;
    assert_eq!(
        refused.map(drop).map_err(|s| s.code()),
        Err(Code::PermissionDenied)
    );
}

#[tokio::test]
async fn handshake_issues_the_bearer_token() {
    let server = start().await;
    let channel = tonic::transport::Channel::from_shared(server.flight_addr.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let raw = FlightServiceClient::new(channel.clone());
    let handshake = |credentials: Option<String>, payload: &'static str| {
        let mut raw = raw.clone();
        async move {
            let message = HandshakeRequest {
                protocol_version: 0,
                payload: payload.into(),
            };
            let mut request = tonic::Request::new(futures::stream::iter([message]));
            if let Some(credentials) = credentials {
                request
                    .metadata_mut()
                    .insert("authorization", credentials.parse().unwrap());
            }
            let response = raw.handshake(request).await?;
            let header = response
                .metadata()
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_string());
            let answers: Vec<_> = response.into_inner().try_collect().await?;
            Ok::<_, tonic::Status>((header, answers[0].payload.clone()))
        }
    };
    use base64::Engine;
    let basic = |user: &str, token: &str| {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"));
        Some(format!("Basic {encoded}"))
    };
    // pyarrow's authenticate_basic_token: name:token in, the bearer header out.
    let (header, _) = handshake(basic("writer", WRITER), "").await.unwrap();
    assert_eq!(header.as_deref(), Some(format!("Bearer {WRITER}").as_str()));
    // The token as payload: it comes back as the payload too.
    let (header, payload) = handshake(None, READER).await.unwrap();
    assert_eq!(header.as_deref(), Some(format!("Bearer {READER}").as_str()));
    assert_eq!(payload, READER.as_bytes());
    // A bearer header is checked and echoed.
    let (header, _) = handshake(Some(format!("Bearer {ADMIN}")), "")
        .await
        .unwrap();
    assert_eq!(header.as_deref(), Some(format!("Bearer {ADMIN}").as_str()));
    for (credentials, payload) in [
        (basic("writer", READER), ""),
        (basic("writer", UNKNOWN), ""),
        (Some("Basic not-base64!".to_string()), ""),
        (None, UNKNOWN),
        (None, ""),
    ] {
        let refused = handshake(credentials.clone(), payload).await.unwrap_err();
        assert_eq!(
            refused.code(),
            Code::Unauthenticated,
            "{credentials:?} {payload}"
        );
    }
    // The issued header works on the other calls.
    let mut client = FlightClient::new(channel);
    client
        .add_header("authorization", &header.unwrap())
        .unwrap();
    assert_eq!(
        FlightOp::Delete.run(&mut client, "item_features").await,
        Err(Code::NotFound)
    );
    // Arrow's own client: handshake() sends the payload, returns the answer's.
    let mut client = server.flight().await;
    let answer = client.handshake(READER.as_bytes().to_vec()).await.unwrap();
    assert_eq!(answer, READER.as_bytes());
}

/// Each kind of HTTP request.
#[derive(Debug, Clone, Copy, PartialEq)]
enum HttpOp {
    Create,
    Describe,
    List,
    Ingest,
    Online,
    History,
    TrainingData,
    Delete,
}

const HTTP_OPS: [HttpOp; 8] = [
    HttpOp::Create,
    HttpOp::Describe,
    HttpOp::List,
    HttpOp::Ingest,
    HttpOp::Online,
    HttpOp::History,
    HttpOp::TrainingData,
    HttpOp::Delete,
];

impl HttpOp {
    fn scope(self) -> Scope {
        match self {
            HttpOp::Create | HttpOp::Delete => Scope::Admin,
            HttpOp::Ingest => Scope::Write,
            _ => Scope::Read,
        }
    }

    fn request(self, base: &str, set: &str) -> reqwest::RequestBuilder {
        let client = http();
        let sets = format!("{base}/v1/feature-sets");
        let read = json!({"feature_set": set, "entities": ["u1"]}).to_string();
        match self {
            HttpOp::Create => client.post(sets).body(spec_named(&format!("{set}_spare"))),
            HttpOp::Delete => client.delete(format!("{sets}/{set}_spare")),
            HttpOp::Describe => client.get(format!("{sets}/{set}")),
            HttpOp::List => client.get(sets),
            HttpOp::Ingest => client
                .post(format!("{sets}/{set}/rows"))
                .header("content-type", http::ARROW)
                .body(http::ipc_body(&[user_rows()])),
            HttpOp::Online => client.post(format!("{base}/v1/online")).body(read),
            HttpOp::History => client.post(format!("{base}/v1/history")).body(read),
            HttpOp::TrainingData => client
                .post(format!("{base}/v1/training-data?features={set}:*"))
                .body(http::ipc_body(&[entity_rows()])),
        }
    }

    /// The status, and the error code of an error body.
    async fn run(self, base: &str, set: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut request = self.request(base, set);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let body: Value =
            serde_json::from_slice(&response.bytes().await.unwrap()).unwrap_or_default();
        (status, body["error"]["code"].clone())
    }
}

#[tokio::test]
async fn http_scopes_allow_and_refuse_each_route() {
    let server = start().await;
    let base = &server.http;
    for credentials in [None, Some(UNKNOWN)] {
        for op in HTTP_OPS {
            let (status, code) = op.run(base, "user_features", credentials).await;
            assert_eq!(
                (status, code),
                (StatusCode::UNAUTHORIZED, json!("unauthenticated")),
                "{op:?} with {credentials:?}"
            );
        }
    }
    let refused = http()
        .get(format!("{base}/v1/feature-sets"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.headers()["www-authenticate"], "Bearer");
    for (token, scopes) in [
        (READER, vec![Scope::Read]),
        (WRITER, vec![Scope::Read, Scope::Write]),
        (ADMIN, vec![Scope::Read, Scope::Write, Scope::Admin]),
        (INGESTER, vec![Scope::Write]),
    ] {
        for op in HTTP_OPS {
            if op == HttpOp::Delete {
                recreate_spare(&server, "user_features").await;
            }
            let (status, code) = op.run(base, "user_features", Some(token)).await;
            if scopes.contains(&op.scope()) {
                assert!(status.is_success(), "{op:?} with {token}: {status} {code}");
            } else {
                assert_eq!(
                    (status, code),
                    (StatusCode::FORBIDDEN, json!("forbidden")),
                    "{op:?} with {token}"
                );
            }
        }
    }
    // The globs: every route on a permitted set, none on another.
    for op in HTTP_OPS {
        if op == HttpOp::Delete {
            recreate_spare(&server, "user_features").await;
            recreate_spare(&server, "item_features").await;
        }
        let (status, code) = op.run(base, "user_features", Some(USERS_ONLY)).await;
        assert!(status.is_success(), "{op:?}: {status} {code}");
        let (status, code) = op.run(base, "item_features", Some(USERS_ONLY)).await;
        if op == HttpOp::List {
            assert!(status.is_success());
        } else {
            assert_eq!(
                (status, code),
                (StatusCode::FORBIDDEN, json!("forbidden")),
                "{op:?}"
            );
        }
    }
    let listed: Value = http()
        .get(format!("{base}/v1/feature-sets"))
        .bearer_auth(USERS_ONLY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names = set_names(&listed);
    assert!(
        !names.is_empty() && names.iter().all(|n| n.starts_with("user_")),
        "{names:?}"
    );
}

#[tokio::test]
async fn health_and_metrics_port_stay_open_and_failures_are_counted() {
    let server = start().await;
    let health = http()
        .get(format!("{}/health", server.http))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    // `/metrics` on the API port names every set: admin only there.
    let metrics_on_api = |token: Option<&'static str>| {
        let mut request = http().get(format!("{}/metrics", server.http));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(metrics_on_api(None).await, StatusCode::UNAUTHORIZED);
    assert_eq!(metrics_on_api(Some(READER)).await, StatusCode::FORBIDDEN);
    assert_eq!(metrics_on_api(Some(ADMIN)).await, StatusCode::OK);

    let mut client = flight_as(&server, Some(UNKNOWN)).await;
    FlightOp::List
        .run(&mut client, "user_features")
        .await
        .unwrap_err();
    let mut client = flight_as(&server, Some(READER)).await;
    FlightOp::Put
        .run(&mut client, "user_features")
        .await
        .unwrap_err();
    let mut client = flight_as(&server, Some(USERS_ONLY)).await;
    FlightOp::Get
        .run(&mut client, "item_features")
        .await
        .unwrap_err();
    HttpOp::List.run(&server.http, "", None).await;

    let text = server.metrics_text().await;
    for series in [
        r#"featherstore_auth_failures_total{api="flight",reason="unknown_token"} 1"#,
        r#"featherstore_auth_failures_total{api="flight",reason="missing_scope"} 1"#,
        r#"featherstore_auth_failures_total{api="flight",reason="feature_set"} 1"#,
        r#"featherstore_auth_failures_total{api="http",reason="missing_credentials"} 2"#,
        r#"featherstore_auth_failures_total{api="http",reason="missing_scope"} 1"#,
    ] {
        assert!(text.contains(series), "{series} not in\n{text}");
    }
    assert!(text.contains(r#"featherstore_requests_total{api="http",code="unauthenticated""#));
}

#[tokio::test]
async fn tokens_never_appear_in_the_logs() {
    let server = start().await;
    // Good and bad tokens, on every API and the Handshake, with the server logging at trace.
    for token in ALL_TOKENS {
        let mut client = flight_as(&server, Some(token)).await;
        for op in FLIGHT_OPS {
            let _ = op.run(&mut client, "user_features").await;
        }
        let _ = server
            .flight()
            .await
            .handshake(token.as_bytes().to_vec())
            .await;
        for op in HTTP_OPS {
            op.run(&server.http, "user_features", Some(token)).await;
        }
    }
    let logs = String::from_utf8_lossy(&captured_logs().lock().unwrap()).into_owned();
    assert!(
        logs.contains("request rejected"),
        "the refusals were not logged"
    );
    for token in ALL_TOKENS {
        assert!(!logs.contains(token), "{token} appears in the logs");
    }
}

#[tokio::test]
async fn a_non_loopback_address_needs_auth_or_an_explicit_override() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::ephemeral(dir.path(), Backend::Duckdb);
    config.server.host = "0.0.0.0".into();
    let refused = match featherstore_server::start(&config).await {
        Ok(_) => panic!("started on 0.0.0.0 without auth"),
        Err(e) => e.to_string(),
    };
    for hint in ["0.0.0.0", "auth.tokens", "allow_unauthenticated"] {
        assert!(refused.contains(hint), "{refused}");
    }
    config.auth.allow_unauthenticated = true;
    featherstore_server::start(&config)
        .await
        .unwrap()
        .shutdown()
        .await;
    config.auth = auth_config(dir.path());
    config.auth.allow_unauthenticated = false;
    let server = featherstore_server::start(&config).await.unwrap();
    assert!(server.http_addr.ip().is_unspecified());
    server.shutdown().await;
    // Loopback needs nothing (the default).
    config.server.host = "127.0.0.1".into();
    config.auth = AuthConfig::default();
    featherstore_server::start(&config)
        .await
        .unwrap()
        .shutdown()
        .await;
}

#[tokio::test]
async fn bad_token_configuration_stops_startup_without_printing_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::ephemeral(dir.path(), Backend::Duckdb);
    let mut missing_file = TokenConfig::inline("file", "", &[Scope::Read]);
    (missing_file.token, missing_file.token_file) = (None, Some(dir.path().join("nope")));
    let mut missing_env = TokenConfig::inline("env", "", &[Scope::Read]);
    (missing_env.token, missing_env.token_env) =
        (None, Some("FEATHERSTORE_TEST_NO_SUCH_VAR".into()));
    for (tokens, needle) in [
        (vec![missing_file], "token_file"),
        (vec![missing_env], "FEATHERSTORE_TEST_NO_SUCH_VAR"),
        (
            vec![TokenConfig::inline("a", "too-short", &[Scope::Read])],
            "shorter",
        ),
        (
            vec![
                TokenConfig::inline("a", READER, &[Scope::Read]),
                TokenConfig::inline("b", READER, &[Scope::Read]),
            ],
            "same value",
        ),
    ] {
        config.auth.tokens = tokens;
        let error = match featherstore_server::start(&config).await {
            Ok(_) => panic!("started with a bad auth section"),
            Err(e) => e.to_string(),
        };
        assert!(error.contains(needle), "{error}");
        assert!(
            !error.contains(READER) && !error.contains("too-short"),
            "{error}"
        );
    }
}

#[test]
fn token_values_stay_out_of_debug_output() {
    let printed = format!(
        "{:?}",
        TokenConfig::inline("reader", READER, &[Scope::Read])
    );
    assert!(!printed.contains(READER), "{printed}");
    assert!(printed.contains("reader"), "{printed}");
}
