//! Request metrics that the alerts read (deploy/prometheus/featherstore-alerts.yml) and that
//! tests/observability.rs (one test per binary, for its process-wide tracing) does not move:
//! `featherstore_requests_in_flight` while a call is being handled. The INTERNAL count of
//! streams that fail after their start is in tests/status_codes.rs.

use std::time::{Duration, Instant};

use featherstore_server::config::Backend;
use featherstore_testkit::TestServer;

/// A Flight call is counted in flight while its handler runs: a DoPut whose first message
/// never comes is, until the idle timeout ends it; then no more.
#[tokio::test]
async fn flight_calls_in_flight_are_counted_until_they_end() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir, Backend::Duckdb, |config| {
        config.limits.stream_idle_timeout_seconds = 1.0;
    })
    .await;
    let mut client = server.flight().await;
    let silent = futures::stream::pending::<Result<arrow_flight::FlightData, _>>();
    let call = tokio::spawn(async move { client.do_put(silent).await.map(drop) });
    let in_flight = |n: u8| format!("featherstore_requests_in_flight{{api=\"flight\"}} {n}\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.metrics_text().await.contains(&in_flight(1)) {
        assert!(Instant::now() < deadline, "never counted in flight");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ended = call
        .await
        .unwrap()
        .expect_err("the idle timeout ends the call");
    assert!(ended.to_string().contains("sent nothing"), "{ended}");
    let metrics = server.metrics_text().await;
    assert!(metrics.contains(&in_flight(0)), "{metrics}");
}
