//! TLS on the HTTP and Flight ports, with real clients (reqwest with rustls, arrow-flight over
//! tonic's rustls): server certificates, required client certificates, plaintext refused.

use std::time::Duration;

use arrow_flight::FlightClient;
use featherstore_server::config::{AuthConfig, Backend, Scope, TokenConfig};
use featherstore_testkit::certs::TestCerts;
use featherstore_testkit::*;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

async fn start(certs: &TestCerts, client_certs: bool) -> TestServer {
    let tls = certs.server_tls(client_certs);
    TestServer::start_with(Backend::Duckdb, |c| c.server.tls = Some(tls)).await
}

fn addresses(server: &TestServer) -> (std::net::SocketAddr, std::net::SocketAddr) {
    (server.http_addr(), server.flight_socket())
}

/// An HTTPS client trusting the test CA, with a client certificate if given.
fn https(
    certs: &TestCerts,
    identity: Option<(&std::path::PathBuf, &std::path::PathBuf)>,
) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(&TestCerts::read(&certs.ca)).unwrap());
    if let Some((cert, key)) = identity {
        let mut pem = TestCerts::read(cert);
        pem.extend(TestCerts::read(key));
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

/// A Flight client over TLS; `Err` when the connection (the handshake) fails.
async fn flight_tls(
    certs: &TestCerts,
    address: std::net::SocketAddr,
    identity: Option<(&std::path::PathBuf, &std::path::PathBuf)>,
) -> Result<FlightClient, tonic::transport::Error> {
    let mut tls =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(TestCerts::read(&certs.ca)));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(
            TestCerts::read(cert),
            TestCerts::read(key),
        ));
    }
    let channel = Channel::from_shared(format!("https://localhost:{}", address.port()))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await?;
    Ok(FlightClient::new(channel))
}

/// What a plaintext HTTP request to `address` gets back: never an HTTP answer.
async fn plaintext_answer(address: std::net::SocketAddr) -> Vec<u8> {
    let mut tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), tcp.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server neither answered nor closed");
    answer
}

#[tokio::test]
async fn tls_serves_both_apis_and_refuses_plaintext() {
    let certs = TestCerts::generate();
    let server = start(&certs, false).await;
    let (http_addr, flight_addr) = addresses(&server);

    // HTTPS, by IP address and by name.
    for host in ["127.0.0.1", "localhost"] {
        let base = format!("https://{host}:{}", http_addr.port());
        let client = https(&certs, None);
        let health = client.get(format!("{base}/health")).send().await.unwrap();
        assert_eq!(health.status(), StatusCode::OK);
        let created = client
            .post(format!("{base}/v1/feature-sets"))
            .body(USER_SPEC)
            .send()
            .await
            .unwrap();
        assert!(created.status().is_success(), "{}", created.status());
    }
    // Flight over TLS.
    let mut flight = flight_tls(&certs, flight_addr, None).await.unwrap();
    let listed = action(&mut flight, "list_feature_sets", "{}")
        .await
        .unwrap();
    assert_eq!(listed[0]["name"], "user_features");

    // Plaintext on the TLS ports: no answer. HTTP gets a TLS alert or nothing, never HTTP.
    let answer = plaintext_answer(http_addr).await;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    assert!(http()
        .get(format!("http://{http_addr}/health"))
        .send()
        .await
        .is_err());
    let plain = Channel::from_shared(format!("http://{flight_addr}"))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plain {
        let refused = action(&mut FlightClient::new(channel), "list_feature_sets", "{}")
            .await
            .unwrap_err();
        assert_ne!(refused.code(), tonic::Code::Ok);
    }
    // A client that does not trust the server's CA refuses it.
    let untrusting = reqwest::Client::builder().use_rustls_tls().build().unwrap();
    assert!(untrusting
        .get(format!("https://127.0.0.1:{}/health", http_addr.port()))
        .send()
        .await
        .is_err());
    // The metrics port stays plaintext.
    let metrics = http().get(server.metrics_url()).send().await.unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
}

#[tokio::test]
async fn client_certificates_are_required_when_configured() {
    let certs = TestCerts::generate();
    let server = start(&certs, true).await;
    let (http_addr, flight_addr) = addresses(&server);
    let url = format!("https://localhost:{}/v1/feature-sets", http_addr.port());

    let trusted = https(&certs, Some((&certs.client_cert, &certs.client_key)));
    let listed = trusted.get(&url).send().await.unwrap();
    assert_eq!(listed.status(), StatusCode::OK);
    let mut flight = flight_tls(
        &certs,
        flight_addr,
        Some((&certs.client_cert, &certs.client_key)),
    )
    .await
    .unwrap();
    action(&mut flight, "create_feature_set", USER_SPEC)
        .await
        .unwrap();

    // No certificate, or one from another CA: the handshake fails, nothing is answered.
    for identity in [None, Some((&certs.rogue_cert, &certs.rogue_key))] {
        assert!(https(&certs, identity).get(&url).send().await.is_err());
        match flight_tls(&certs, flight_addr, identity).await {
            Err(_) => {}
            // TLS 1.3: the client finishes its side of the handshake before the server checks
            // its certificate; the server's alert then fails the first call.
            Ok(mut client) => {
                let refused = action(&mut client, "list_feature_sets", "{}")
                    .await
                    .unwrap_err();
                assert!(format!("{refused:?}").contains("alert"), "{refused:?}");
            }
        }
    }
}

#[tokio::test]
async fn tokens_are_still_needed_over_tls() {
    let certs = TestCerts::generate();
    let tls = certs.server_tls(false);
    let token = "tls-reader-0123456789abcdef";
    let server = TestServer::start_with(Backend::Parquet, |c| {
        c.server.tls = Some(tls);
        c.auth = AuthConfig {
            tokens: vec![TokenConfig::inline("reader", token, &[Scope::Read])],
            allow_unauthenticated: false,
        };
    })
    .await;
    let (http_addr, flight_addr) = addresses(&server);
    let url = format!("https://localhost:{}/v1/feature-sets", http_addr.port());
    let client = https(&certs, None);
    assert_eq!(
        client.get(&url).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let ok = client.get(&url).bearer_auth(token).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let mut flight = flight_tls(&certs, flight_addr, None).await.unwrap();
    let refused = action(&mut flight, "list_feature_sets", "{}")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    flight
        .add_header("authorization", &format!("Bearer {token}"))
        .unwrap();
    action(&mut flight, "list_feature_sets", "{}")
        .await
        .unwrap();
}

#[tokio::test]
async fn unusable_tls_files_stop_startup() {
    let certs = TestCerts::generate();
    let dir = tempfile::tempdir().unwrap();
    let mut config = featherstore_server::config::Config::ephemeral(dir.path(), Backend::Duckdb);
    let cases = [
        (
            certs.dir.path().join("missing.pem"),
            certs.server_key.clone(),
            "cert_file",
        ),
        (
            certs.server_cert.clone(),
            certs.server_cert.clone(),
            "key_file",
        ),
        // The client's key does not fit the server's certificate.
        (
            certs.server_cert.clone(),
            certs.client_key.clone(),
            "do not fit",
        ),
    ];
    for (cert_file, key_file, needle) in cases {
        config.server.tls = Some(featherstore_server::config::TlsConfig {
            cert_file,
            key_file,
            client_ca_file: None,
        });
        let error = match featherstore_server::start(&config).await {
            Ok(_) => panic!("started with unusable TLS files"),
            Err(e) => e.to_string(),
        };
        assert!(error.contains(needle), "{error}");
    }
}
