//! The client against servers with auth and TLS (docs/security.md): tokens from the builder
//! and from `FEATHERSTORE_TOKEN`, every call carrying them, `grpc+tls://` with a CA file (or
//! `FEATHERSTORE_CA_FILE`) and client certificates.
//!
//! The environment variables are process-wide: each test here sets only the one it tests,
//! and no other test reads it.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampSecondArray};
use featherstore_client::{Client, ErrorCode, FeatureSetSpec, TrainingDataOptions};
use featherstore_server::config::{AuthConfig, Backend, Scope, TokenConfig};
use featherstore_testkit::certs::TestCerts;
use featherstore_testkit::TestServer;
use futures::TryStreamExt;

const READER: &str = "client-reader-0123456789";
const ADMIN: &str = "client-admin-0123456789a";

const SPEC: &str = r#"{
  "name": "accounts",
  "entity": {"name": "account_id", "type": "string"},
  "features": [{"name": "balance", "type": "int64"}]
}"#;

fn rows() -> RecordBatch {
    RecordBatch::try_from_iter(vec![
        (
            "account_id",
            Arc::new(StringArray::from(vec!["a1"])) as ArrayRef,
        ),
        (
            "event_timestamp",
            Arc::new(TimestampSecondArray::from(vec![1_767_225_600]).with_timezone("UTC")),
        ),
        ("balance", Arc::new(Int64Array::from(vec![10]))),
    ])
    .unwrap()
}

/// A failure of the connection itself, not an answer of the server.
fn no_answer(e: &featherstore_client::Error) -> bool {
    use featherstore_client::Code;
    e.is_unavailable() || e.code() == Some(Code::Unknown)
}

#[tokio::test]
async fn tokens_are_sent_with_every_call() {
    let server = TestServer::start_with(Backend::Duckdb, |c| {
        c.auth = AuthConfig {
            tokens: vec![
                TokenConfig::inline("reader", READER, &[Scope::Read]),
                TokenConfig::inline("admin", ADMIN, &[Scope::Read, Scope::Write, Scope::Admin]),
            ],
            allow_unauthenticated: false,
        }
    })
    .await;
    let address = format!("grpc://{}", server.flight_socket());
    let spec = FeatureSetSpec::from_json(SPEC.as_bytes()).unwrap();

    let anonymous = Client::connect(address.as_str()).await.unwrap();
    let refused = anonymous.list_feature_sets().await.unwrap_err();
    assert!(refused.is_unauthenticated(), "{refused}");
    assert_eq!(refused.error_code(), Some(ErrorCode::Unauthenticated));

    let admin = Client::builder(address.as_str())
        .token(ADMIN)
        .connect()
        .await
        .unwrap();
    admin.create_feature_set(&spec).await.unwrap();
    let summary = admin.ingest_batches("accounts", [rows()]).await.unwrap();
    assert_eq!(summary.rows, 1);

    let reader = Client::builder(address.as_str())
        .token(READER)
        .connect()
        .await
        .unwrap();
    // Every kind of call carries the token: actions, DoGet, DoExchange, GetSchema, and the
    // plain Flight client.
    assert_eq!(reader.list_feature_sets().await.unwrap().len(), 1);
    assert_eq!(
        reader.get_feature_set("accounts").await.unwrap().stats.rows,
        1
    );
    let online = reader.get_features("accounts", ["a1"]).await.unwrap();
    assert_eq!(online.num_rows(), 1);
    let history: Vec<RecordBatch> = reader
        .history(featherstore_client::HistoryRequest::new("accounts"))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(history.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
    let entities = rows().project(&[0, 1]).unwrap();
    let training = reader
        .training_data(
            [entities],
            ["accounts:balance"],
            TrainingDataOptions::default(),
        )
        .await
        .unwrap()
        .concat()
        .await
        .unwrap();
    assert_eq!(training.num_rows(), 1);
    reader.get_schema("accounts").await.unwrap();
    let flights = featherstore_testkit::flight::list_flights(&mut reader.flight_client()).await;
    assert_eq!(flights.len(), 1);
    // The read scope is not enough to write or delete.
    let denied = reader
        .ingest_batches("accounts", [rows()])
        .await
        .unwrap_err();
    assert!(denied.is_permission_denied(), "{denied}");
    assert_eq!(denied.error_code(), Some(ErrorCode::Forbidden));
    let denied = reader.delete_feature_set("accounts").await.unwrap_err();
    assert!(denied.is_permission_denied(), "{denied}");
    assert_eq!(denied.error_code(), Some(ErrorCode::Forbidden));

    // A wrong token: refused; one that is no header value: refused here, not sent.
    let wrong = Client::builder(address.as_str())
        .token("not-a-token-at-all")
        .connect()
        .await
        .unwrap();
    assert!(wrong
        .list_feature_sets()
        .await
        .unwrap_err()
        .is_unauthenticated());
    let invalid = Client::builder(address.as_str())
        .token("two words")
        .connect()
        .await
        .unwrap_err();
    assert!(!invalid.to_string().contains("two words"), "{invalid}");

    // FEATHERSTORE_TOKEN when the builder has none.
    std::env::set_var(featherstore_client::TOKEN_ENV, ADMIN);
    let from_env = Client::connect(address.as_str()).await.unwrap();
    std::env::remove_var(featherstore_client::TOKEN_ENV);
    from_env.delete_feature_set("accounts").await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn tls_with_a_ca_file_and_client_certificates() {
    let certs = TestCerts::generate();
    let tls = certs.server_tls(false);
    let server = TestServer::start_with(Backend::Duckdb, |c| c.server.tls = Some(tls)).await;
    let port = server.flight_socket().port();

    for address in [
        format!("grpc+tls://localhost:{port}"),
        format!("https://127.0.0.1:{port}"),
    ] {
        let client = Client::builder(address.as_str())
            .ca_file(&certs.ca)
            .connect()
            .await
            .unwrap();
        assert!(client.address().starts_with("https://"));
        client.list_feature_sets().await.unwrap();
    }
    // Without the CA (the public roots only), the server's certificate is not trusted.
    let untrusted = Client::builder(format!("grpc+tls://localhost:{port}"))
        .connect()
        .await
        .unwrap_err();
    assert!(untrusted.is_unavailable(), "{untrusted}");
    // A plaintext client on the TLS port gets no answer.
    if let Ok(plain) = Client::connect(format!("grpc://localhost:{port}")).await {
        let refused = plain.list_feature_sets().await.unwrap_err();
        assert!(no_answer(&refused), "{refused}");
    }
    // A CA file on a plaintext address is a mistake, said before connecting.
    let mixed = Client::builder(format!("grpc://localhost:{port}"))
        .ca_file(&certs.ca)
        .connect()
        .await
        .unwrap_err();
    assert!(mixed.to_string().contains("TLS address"), "{mixed}");
    // FEATHERSTORE_CA_FILE when the builder has none.
    std::env::set_var(featherstore_client::CA_FILE_ENV, &certs.ca);
    let from_env = Client::connect(format!("grpc+tls://localhost:{port}")).await;
    std::env::remove_var(featherstore_client::CA_FILE_ENV);
    from_env.unwrap().list_feature_sets().await.unwrap();
    server.shutdown().await;

    // A server that requires client certificates.
    let tls = certs.server_tls(true);
    let server = TestServer::start_with(Backend::Duckdb, |c| c.server.tls = Some(tls)).await;
    let address = format!("grpc+tls://localhost:{}", server.flight_socket().port());
    let with_cert = Client::builder(address.as_str())
        .ca_file(&certs.ca)
        .client_identity(&certs.client_cert, &certs.client_key)
        .connect()
        .await
        .unwrap();
    with_cert.list_feature_sets().await.unwrap();
    for identity in [None, Some((&certs.rogue_cert, &certs.rogue_key))] {
        let mut builder = Client::builder(address.as_str()).ca_file(&certs.ca);
        if let Some((cert, key)) = identity {
            builder = builder.client_identity(cert, key);
        }
        // The refusal comes at the handshake, or at the first call (TLS 1.3 verifies the
        // client's certificate after the client considers the handshake done).
        match builder.connect().await {
            Err(e) => assert!(e.is_unavailable(), "{e}"),
            Ok(client) => {
                let refused = client.list_feature_sets().await.unwrap_err();
                assert!(no_answer(&refused), "{refused}");
            }
        }
    }
    server.shutdown().await;
}
