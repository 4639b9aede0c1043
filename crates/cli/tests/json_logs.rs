//! `featherstore serve` with JSON logs: stdout carries the ready line and nothing else, every
//! line on stderr is a JSON object (also at debug level, where the dependencies log too, and
//! with trace export failing), there is a line per request, and a rejected request's line
//! carries the caller's trace id.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use featherstore_testkit::child::Serve;

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";

/// A minimal HTTP/1.1 exchange (the test needs no HTTP client dependency): the status code.
fn post(addr: &str, path: &str, body: &str) -> u16 {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         traceparent: 00-{TRACE_ID}-b7ad6b7169203331-01\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("an HTTP response: {response:?}"))
}

#[test]
fn json_logs_are_json_lines_on_stderr_only() {
    let mut server = Serve::new(env!("CARGO_BIN_EXE_featherstore"))
        .env("FEATHERSTORE_LOGGING__FORMAT", "json")
        .env("FEATHERSTORE_LOGGING__LEVEL", "debug")
        .env_remove("RUST_LOG")
        // Export to a port nobody listens on: its failures are logged, as JSON too.
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .stderr_piped()
        .start();
    assert_eq!(server.ready["event"], "ready");
    let http = server.ready["http"].as_str().unwrap().to_string();

    let spec = r#"{"name": "users", "entity": {"name": "user_id", "type": "string"}, "features": [{"name": "age", "type": "int64"}]}"#;
    assert_eq!(post(&http, "/v1/feature-sets", spec), 201);
    assert_eq!(
        post(
            &http,
            "/v1/online",
            r#"{"feature_set": "nope", "entities": ["u1"]}"#
        ),
        404
    );
    std::thread::sleep(Duration::from_millis(300)); // an export attempt or two fail

    let status = server.stop();
    assert!(status.success(), "graceful shutdown: {status:?}");

    let rest = server.rest_of_stdout();
    assert_eq!(rest, "", "stdout has the ready line only");

    let mut stderr = String::new();
    server
        .take_stderr()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
        })
        .collect();
    let message = |line: &serde_json::Value| line["message"].as_str().unwrap_or("").to_string();
    assert!(lines.iter().any(|l| message(l) == "serving"), "{stderr}");
    assert!(
        lines.iter().any(|l| message(l) == "exporting traces"),
        "{stderr}"
    );

    // One line per request, at debug level, with the request's span and the caller's trace id.
    let requests: Vec<_> = lines.iter().filter(|l| message(l) == "request").collect();
    assert_eq!(requests.len(), 2, "{stderr}");
    for line in &requests {
        assert_eq!(line["level"], "DEBUG");
        assert_eq!(line["span"]["trace_id"], TRACE_ID, "{line}");
    }
    // The rejection is logged once, with its context and the trace id.
    let rejected: Vec<_> = lines
        .iter()
        .filter(|l| message(l) == "request rejected")
        .collect();
    assert_eq!(rejected.len(), 1, "{stderr}");
    assert_eq!(rejected[0]["code"], "not_found");
    assert_eq!(rejected[0]["span"]["trace_id"], TRACE_ID);
    assert_eq!(rejected[0]["span"]["method"], "POST /v1/online");
}
