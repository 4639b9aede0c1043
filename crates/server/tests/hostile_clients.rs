//! Hostile clients: callers that stall, crawl or pile up must not stop the server from serving
//! everyone else, on both backends. Each test holds misbehaving clients open, then checks that
//! a well-behaved client's ingest and reads complete within a few seconds.

use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::{FlightClient, FlightDescriptor, Ticket};
use featherstore_server::config::{Backend, Config};
use featherstore_testkit::*;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// What a well-behaved client may wait for while others misbehave.
const PROMPT: Duration = Duration::from_secs(5);

async fn start(backend: Backend, adjust: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::start_with(backend, adjust).await
}

/// A DoPut of `batch` on a connection of its own, within `PROMPT`.
async fn put_promptly(server: &TestServer, batch: RecordBatch) -> Result<(), String> {
    let mut client = server.flight().await;
    let put = put(&mut client, "user_features", vec![batch]);
    match tokio::time::timeout(PROMPT, put).await {
        Ok((acks, None)) if acks.len() == 1 => Ok(()),
        Ok((acks, None)) => Err(format!("{} acknowledgements for one batch", acks.len())),
        Ok((_, Some(e))) => Err(format!("DoPut failed: {e}")),
        Err(_) => Err(format!("DoPut did not complete within {PROMPT:?}")),
    }
}

fn two_rows() -> RecordBatch {
    user_batch(&[
        ("fresh-1", Some(1), Some(0.5), 1_000),
        ("fresh-2", Some(2), None, 1_000),
    ])
}

fn history_ticket(entities: Option<&[&str]>) -> Ticket {
    let mut ticket = json!({"type": "history", "feature_set": "user_features"});
    if let Some(entities) = entities {
        ticket["entities"] = json!(entities);
    }
    Ticket::new(ticket.to_string())
}

/// A history read of two entities on a connection of its own, within `PROMPT`; its rows.
async fn history_promptly(server: &TestServer) -> Result<usize, String> {
    let mut client = server.flight().await;
    let read = async {
        let ticket = history_ticket(Some(&["u1", "u2"]));
        flight::collect(client.do_get(ticket).await.map_err(to_status)?).await
    };
    match tokio::time::timeout(PROMPT, read).await {
        Ok(Ok(batches)) => Ok(flight::rows(&batches)),
        Ok(Err(e)) => Err(format!("history failed: {e}")),
        Err(_) => Err(format!("history did not complete within {PROMPT:?}")),
    }
}

/// A DoPut of two rows, then a history read, each within `PROMPT` on a connection of its
/// own: the well-behaved client beside the misbehaving ones. Panics naming `case`; returns
/// the history's rows.
async fn ingest_and_history_promptly(server: &TestServer, case: &str) -> usize {
    put_promptly(server, two_rows())
        .await
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    history_promptly(server)
        .await
        .unwrap_or_else(|e| panic!("{case}: {e}"))
}

/// Creates user_features and stores `rows` rows (entities `u0..`), in batches of 50,000.
async fn fill(server: &TestServer, rows: usize) {
    let mut client = server.flight().await;
    action(&mut client, "create_feature_set", USER_SPEC)
        .await
        .unwrap();
    let names: Vec<String> = (0..rows).map(|i| format!("u{}", i % 5_000)).collect();
    let batches: Vec<_> = names
        .chunks(50_000)
        .enumerate()
        .map(|(b, chunk)| {
            let rows: Vec<_> = chunk
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let at = (b * 50_000 + i) as i64;
                    (name.as_str(), Some(at), Some(0.25), at)
                })
                .collect();
            user_batch(&rows)
        })
        .collect();
    let (_, error) = put(&mut client, "user_features", batches).await;
    assert!(error.is_none(), "loading the test data failed: {error:?}");
}

/// Opens a DoExchange training data call that sends its command and the entity rows'
/// schema, then nothing, and keeps it open.
async fn stalled_exchange(server: &TestServer) -> FlightRecordBatchStream {
    stalled_exchange_after(server, None).await
}

/// [`stalled_exchange`], sending `rows` (entity rows: `user_id`, `event_timestamp`) before it
/// stalls.
async fn stalled_exchange_after(
    server: &TestServer,
    rows: Option<RecordBatch>,
) -> FlightRecordBatchStream {
    let mut client = server.flight().await;
    let command = json!({"type": "training_data", "features": ["user_features:age"]});
    let schema = user_batch(&[]).schema();
    let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(vec![
        schema.field_with_name("user_id").unwrap().clone(),
        schema.field_with_name("event_timestamp").unwrap().clone(),
    ]));
    let rows = rows.map(|rows| Ok(rows.with_schema(schema.clone()).unwrap()));
    let input = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(command.to_string())))
        .build(futures::stream::iter(rows).chain(futures::stream::pending()));
    client.do_exchange(input).await.expect("the call starts")
}

/// `GET /health`: its status and JSON body.
async fn health(server: &TestServer) -> (u16, Value) {
    let (status, body) = http::get_json(&format!("{}/health", server.http)).await;
    (status.as_u16(), body)
}

async fn metric(server: &TestServer, sample: &str) -> f64 {
    http::metric(&server.metrics_text().await, sample)
}

/// Stalled before any entity row, and after the first ones: the stored rows load beside the
/// spool once entity rows arrive, and the load must not keep its connection while the client
/// stalls.
#[tokio::test]
async fn stalled_training_exchanges_hold_no_storage_connection() {
    let first_rows = user_batch(&[("u1", None, None, 5_000), ("u2", None, None, 5_000)]);
    let first_rows = first_rows
        .project(&[
            first_rows.schema().index_of("user_id").unwrap(),
            first_rows.schema().index_of("event_timestamp").unwrap(),
        ])
        .unwrap();
    for backend in BACKENDS {
        for sent in [None, Some(first_rows.clone())] {
            // A server per case: one client may hold only so many streams.
            let server = start(backend, |_| {}).await;
            fill(&server, 10_000).await;
            let case = format!("{backend:?}, entity rows sent: {}", sent.is_some());
            // Twice the pool: before entity rows were spooled first, each of these held a
            // connection while it waited for rows, and ingest waited behind them forever.
            let mut held = Vec::new();
            for _ in 0..8 {
                held.push(stalled_exchange_after(&server, sent.clone()).await);
            }
            ingest_and_history_promptly(&server, &case).await;
            assert_eq!(health(&server).await.0, 200, "{case}");
            drop(held);
        }
    }
}

#[tokio::test]
async fn a_training_exchange_that_stops_sending_ends_with_deadline_exceeded() {
    let server = start(Backend::Duckdb, |c| {
        c.limits.stream_idle_timeout_seconds = 0.5
    })
    .await;
    fill(&server, 10).await;
    let mut stalled = stalled_exchange(&server).await;
    let ended = tokio::time::timeout(PROMPT, stalled.next())
        .await
        .expect("the server ends the call");
    let status = to_status(ended.expect("an item").expect_err("an error"));
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status}");
    let counted = metric(
        &server,
        "featherstore_rejected_requests_total{api=\"flight\",reason=\"stream_idle\"}",
    )
    .await;
    assert_eq!(counted, 1.0);
}

/// Opens a Flight history read of every row on a connection of its own (with small HTTP/2
/// windows, so that little of the answer fits in flight), takes its first batch, then stops
/// reading.
async fn stalled_flight_reader(server: &TestServer) -> FlightRecordBatchStream {
    let channel = tonic::transport::Channel::from_shared(server.flight_addr.clone())
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut client = FlightClient::new(channel);
    let mut stream = client.do_get(history_ticket(None)).await.unwrap();
    stream.next().await.expect("a first batch").unwrap();
    stream
}

#[tokio::test]
async fn stalled_flight_history_readers_release_their_connections() {
    for backend in BACKENDS {
        let server = start(backend, |c| c.limits.stream_idle_timeout_seconds = 1.0).await;
        fill(&server, 200_000).await;
        let before = metric(
            &server,
            "featherstore_rejected_requests_total{api=\"flight\",reason=\"stream_idle\"}",
        )
        .await;
        // More readers than connections: they took every read connection and stopped.
        let mut held = Vec::new();
        for _ in 0..6 {
            held.push(stalled_flight_reader(&server).await);
        }
        let started = Instant::now();
        let rows = ingest_and_history_promptly(&server, &format!("{backend:?}")).await;
        assert!(rows > 0);
        eprintln!(
            "{backend:?}: ingest and history behind 6 stalled readers took {:?}",
            started.elapsed()
        );
        // Once the idle timeout has passed for every one of them, the stalled readers find
        // their streams ended with DEADLINE_EXCEEDED after the batches buffered for them.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut reader = held.pop().unwrap();
        let mut rows = 0;
        let outcome = tokio::time::timeout(PROMPT, async {
            while let Some(item) = reader.next().await {
                match item {
                    Ok(batch) => rows += batch.num_rows(),
                    Err(e) => return Some(to_status(e)),
                }
            }
            None
        })
        .await
        .expect("the stream ends");
        let status = outcome.unwrap_or_else(|| {
            panic!("{backend:?}: the stream ended as if complete, after {rows} more rows")
        });
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status}");
        // The typed code travels with the status (tests/status_codes.rs, for the others).
        assert_eq!(
            status
                .metadata()
                .get(featherstore_core::ERROR_CODE_METADATA)
                .unwrap(),
            "deadline_exceeded"
        );
        let after = metric(
            &server,
            "featherstore_rejected_requests_total{api=\"flight\",reason=\"stream_idle\"}",
        )
        .await;
        assert!(after >= before + 6.0, "{before} -> {after}");
    }
}

/// Sends an HTTP history request of every row and reads nothing of the answer, on a socket
/// with a small receive buffer: the stream, once its 200 line is there, or `None` when the
/// request was refused as it should be once every storage connection is held (the answer
/// waits for its first rows, and gives up after `request_timeout_seconds`: a 504).
async fn stalled_http_reader(server: &TestServer) -> Option<TcpStream> {
    let address = server.http_addr();
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tcp = socket.connect(address).await.unwrap();
    let body = json!({"feature_set": "user_features"}).to_string();
    let request = format!(
        "POST /v1/history HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    tcp.read_exact(&mut head).await.unwrap();
    match &head {
        // The answer has started.
        b"HTTP/1.1 200" => Some(tcp),
        b"HTTP/1.1 504" => None,
        other => panic!(
            "a history request answered {:?}",
            String::from_utf8_lossy(other)
        ),
    }
}

#[tokio::test]
async fn stalled_http_history_readers_neither_block_storage_nor_outlive_their_clients() {
    for backend in BACKENDS {
        // A long idle timeout: here the connections must come back because the readers
        // go away, and ingest must never wait behind them.
        let server = start(backend, |c| {
            c.limits.stream_idle_timeout_seconds = 120.0;
            c.limits.max_streams_per_client = 64;
            // A reader queued behind the held connections is refused after this.
            c.limits.request_timeout_seconds = 2.0;
        })
        .await;
        fill(&server, 200_000).await;
        // Readers until one finds every storage connection held (at most 16).
        let mut held = Vec::new();
        while held.len() < 16 {
            match stalled_http_reader(&server).await {
                Some(reader) => held.push(reader),
                None => break,
            }
        }
        assert!(!held.is_empty(), "{backend:?}: no history answer started");
        put_promptly(&server, two_rows())
            .await
            .unwrap_or_else(|e| panic!("{backend:?}, 16 stalled HTTP readers: {e}"));
        // Every read connection is held: storage is stalled for reads, and says so.
        let (status, body) = health(&server).await;
        assert_eq!(status, 503, "{backend:?}");
        assert_eq!(body["status"], "degraded", "{body}");
        assert_eq!(body["stalled"][0]["purpose"], "reads", "{body}");

        // The readers go away: their connections, and the connections of the readers still
        // queued behind them, must come back at once (once it took minutes).
        drop(held);
        let started = Instant::now();
        ingest_and_history_promptly(&server, &format!("{backend:?}, after the readers left")).await;
        eprintln!(
            "{backend:?}: ingest and history after 16 stalled HTTP readers left took {:?}",
            started.elapsed()
        );
        let deadline = Instant::now() + PROMPT;
        loop {
            if health(&server).await.0 == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "{backend:?}: still degraded");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn slow_loris_is_cut_and_others_are_served() {
    let server = start(Backend::Duckdb, |c| {
        c.server.header_read_timeout_seconds = 1.0
    })
    .await;
    let address = server.http_addr();
    let mut loris = TcpStream::connect(address).await.unwrap();
    let request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    let started = Instant::now();
    let crawl = async {
        for byte in request {
            if loris.write_all(&[*byte]).await.is_err() {
                return;
            }
            // Meanwhile another client is served as usual.
            assert_eq!(health(&server).await.0, 200);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    crawl.await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(PROMPT, loris.read_to_end(&mut rest)).await;
    let cut_after = started.elapsed();
    assert!(
        cut_after < Duration::from_secs(5),
        "the slow client was cut after {cut_after:?}"
    );
    assert!(
        !String::from_utf8_lossy(&rest).contains("200 OK"),
        "the slow request was not served"
    );
}

#[tokio::test]
async fn thousands_of_idle_connections_do_not_stop_service() {
    let server = start(Backend::Duckdb, |_| {}).await;
    let mut idle = Vec::new();
    for i in 0..2_000 {
        let address = if i % 2 == 0 {
            server.http_addr()
        } else {
            server.flight_socket()
        };
        idle.push(TcpStream::connect(address).await.unwrap());
    }
    let mut client = server.flight().await;
    action(&mut client, "create_feature_set", USER_SPEC)
        .await
        .unwrap();
    for _ in 0..5 {
        put_promptly(&server, two_rows()).await.unwrap();
        let started = Instant::now();
        assert_eq!(health(&server).await.0, 200);
        assert!(started.elapsed() < PROMPT);
    }
    let rows = history_promptly(&server).await.unwrap();
    assert_eq!(rows, 0, "u1 and u2 were never stored");
    drop(idle);
}

#[tokio::test]
async fn over_the_concurrency_limits_requests_are_refused_with_their_status() {
    let server = start(Backend::Duckdb, |c| {
        c.limits.max_streams_per_client = 2;
        c.limits.max_concurrent_http_requests = 2;
        c.limits.stream_idle_timeout_seconds = 30.0;
    })
    .await;
    fill(&server, 200_000).await;
    // Two HTTP requests in progress (stalled readers): the third gets 503 with a JSON body.
    let readers = [
        stalled_http_reader(&server).await,
        stalled_http_reader(&server).await,
    ];
    let response = http()
        .post(format!("{}/v1/online", server.http))
        .json(&json!({"feature_set": "user_features", "entities": ["u1"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    // They are also this client's two streams, on either API: a third is refused.
    let mut client = server.flight().await;
    let refused = client
        .do_get(history_ticket(Some(&["u1"])))
        .await
        .map(|_| ())
        .map_err(to_status)
        .expect_err("a third stream is refused");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused}");
    let concurrency = metric(
        &server,
        "featherstore_rejected_requests_total{api=\"http\",reason=\"concurrency\"}",
    )
    .await;
    let streams = metric(
        &server,
        "featherstore_rejected_requests_total{api=\"flight\",reason=\"client_streams\"}",
    )
    .await;
    assert_eq!((concurrency, streams), (1.0, 1.0));
    drop(readers);
}

#[tokio::test]
async fn a_request_that_takes_too_long_gets_504() {
    let server = start(Backend::Duckdb, |c| c.limits.request_timeout_seconds = 0.5).await;
    let address = server.http_addr();
    let mut slow = TcpStream::connect(address).await.unwrap();
    // Headers, then a body that never comes: the read waits for it past the timeout.
    slow.write_all(
        b"POST /v1/online HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
    )
    .await
    .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(PROMPT, slow.read(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    assert!(answer.contains("deadline_exceeded"), "{answer}");
    let counted = metric(
        &server,
        "featherstore_rejected_requests_total{api=\"http\",reason=\"timeout\"}",
    )
    .await;
    assert_eq!(counted, 1.0);
}

#[tokio::test]
async fn history_tickets_obey_the_entity_limit() {
    let server = start(Backend::Duckdb, |c| c.limits.max_online_entities = 3).await;
    fill(&server, 10).await;
    let mut client: FlightClient = server.flight().await;
    let refused = client
        .do_get(history_ticket(Some(&["a", "b", "c", "d"])))
        .await
        .map(|_| ())
        .map_err(to_status)
        .expect_err("four entities are over the limit");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused}");
    let response = http()
        .post(format!("{}/v1/history", server.http))
        .json(&json!({"feature_set": "user_features", "entities": ["a", "b", "c", "d"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
}
