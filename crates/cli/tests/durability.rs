//! Durability: every batch whose acknowledgement the client received survives a SIGKILL of
//! the server process, on both backends, and no batch is ever partly visible. A SIGTERM shuts
//! down gracefully: exit code 0, acknowledged batches kept, the Parquet log flushed.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::Int64Type;
use arrow_flight::FlightClient;
use featherstore_testkit::child::{ChildServer, Serve};
use featherstore_testkit::{flight, get};
use futures::StreamExt;

const BATCHES: i64 = 400;
const ROWS: i64 = 500;
const KILL_AFTER_ACKS: usize = 40;
const BIN: &str = env!("CARGO_BIN_EXE_featherstore");

/// `featherstore serve --backend BACKEND` on `dir`, with `FEATHERSTORE_SECTION__KEY`
/// configuration variables.
fn serve(dir: &Path, backend: &str, env: &[(&str, &str)]) -> ChildServer {
    env.iter()
        .fold(
            Serve::new(BIN).backend(backend).data_dir(dir),
            |serve, (k, v)| serve.env(k, v),
        )
        .start()
}

/// Creates the `events` set; a client for the server.
async fn create_events(server: &ChildServer) -> FlightClient {
    let mut client = server.flight().await;
    let spec = r#"{"name": "events", "entity": {"name": "id", "type": "string"}, "features": [{"name": "batch", "type": "int64"}]}"#;
    flight::create_set(&mut client, spec).await;
    client
}

/// Starts a DoPut of `input` into `events`; its acknowledgements.
async fn put_events(
    client: &mut FlightClient,
    input: impl futures::Stream<Item = Result<RecordBatch, arrow_flight::error::FlightError>>
        + Send
        + 'static,
) -> futures::stream::BoxStream<
    'static,
    Result<arrow_flight::PutResult, arrow_flight::error::FlightError>,
> {
    client
        .do_put(flight::put_data("events", input))
        .await
        .unwrap()
}

/// Batch `b`: entities `b{b}-r{i}`, feature `batch` = b.
fn batch(b: i64) -> RecordBatch {
    RecordBatch::try_from_iter(vec![
        (
            "id",
            Arc::new(StringArray::from_iter_values(
                (0..ROWS).map(|i| format!("b{b}-r{i}")),
            )) as _,
        ),
        (
            "batch",
            Arc::new(Int64Array::from(vec![b; ROWS as usize])) as _,
        ),
        (
            "event_timestamp",
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                (0..ROWS).map(|i| (b * ROWS + i) * 1_000_000),
            )) as _,
        ),
    ])
    .unwrap()
}

async fn kill_during_ingest(backend: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve(dir.path(), backend, &[]);
    let mut client = create_events(&server).await;

    let input = futures::stream::iter((0..BATCHES).map(|b| Ok(batch(b))));
    let mut acks = put_events(&mut client, input).await;
    let mut acknowledged = 0usize;
    while let Some(Ok(_)) = acks.next().await {
        acknowledged += 1;
        if acknowledged == KILL_AFTER_ACKS {
            server.kill();
        }
    }
    assert!(
        acknowledged >= KILL_AFTER_ACKS,
        "{backend}: only {acknowledged} acks before the kill"
    );
    assert!(
        (acknowledged as i64) < BATCHES,
        "{backend}: the kill came too late to test anything"
    );

    let server = serve(dir.path(), backend, &[]);
    assert_acknowledged_are_whole(&server, backend, acknowledged).await;
}

/// Every acknowledged batch (0..acknowledged) is there whole, no batch is partly visible, and
/// the online index holds the last acknowledged one.
async fn assert_acknowledged_are_whole(server: &ChildServer, backend: &str, acknowledged: usize) {
    let mut client = server.flight().await;
    let ticket = serde_json::json!({"type": "history", "feature_set": "events"});
    let batches = get(&mut client, ticket).await.unwrap();
    let mut rows_per_batch: BTreeMap<i64, i64> = BTreeMap::new();
    for b in &batches {
        for value in b.column(1).as_primitive::<Int64Type>().values() {
            *rows_per_batch.entry(*value).or_default() += 1;
        }
    }
    for b in 0..acknowledged as i64 {
        assert_eq!(
            rows_per_batch.get(&b),
            Some(&ROWS),
            "{backend}: acknowledged batch {b} lost rows"
        );
    }
    for (b, rows) in &rows_per_batch {
        assert_eq!(*rows, ROWS, "{backend}: batch {b} is partly visible");
    }

    // The online index was rebuilt from what survived.
    let last = acknowledged as i64 - 1;
    let ticket = serde_json::json!({"type": "online", "feature_set": "events", "entities": [format!("b{last}-r7")]});
    let online = get(&mut client, ticket).await.unwrap();
    assert_eq!(
        online[0].column(1).as_primitive::<Int64Type>().value(0),
        last,
        "{backend}"
    );
}

#[tokio::test]
async fn acknowledged_batches_survive_sigkill_duckdb() {
    kill_during_ingest("duckdb").await;
}

#[tokio::test]
async fn acknowledged_batches_survive_sigkill_parquet() {
    kill_during_ingest("parquet").await;
}

/// SIGTERM while a DoPut stream is sending: the server stops taking new work, lets the
/// stream run for the grace period, refuses what comes after, flushes and exits 0; every
/// acknowledged batch is there after a restart, and the log is empty.
async fn terminate_during_ingest(backend: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve(
        dir.path(),
        backend,
        &[("FEATHERSTORE_SERVER__SHUTDOWN_GRACE_SECONDS", "1")],
    );
    let mut client = create_events(&server).await;

    // A client that keeps sending, a batch every 50 ms, for longer than the grace period.
    let input = futures::stream::iter((0..BATCHES).map(|b| Ok(batch(b)))).then(|b| async {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        b
    });
    let mut acks = put_events(&mut client, input).await;
    let mut acknowledged = 0usize;
    while let Some(Ok(_)) = acks.next().await {
        acknowledged += 1;
        if acknowledged == 5 {
            server.terminate();
        }
    }
    let exit = server.wait();
    assert_eq!(exit.code(), Some(0), "{backend}: graceful shutdown exits 0");
    assert!(
        (acknowledged as i64) < BATCHES,
        "{backend}: the stream was not cut after the grace period"
    );
    // Flushed into Parquet, or applied to the DuckDB table: nothing left to replay.
    let log = match backend {
        "parquet" => dir.path().join("parquet/events/_log"),
        _ => dir.path().join("features.db.log/events"),
    };
    let left: Vec<_> = std::fs::read_dir(&log).unwrap().collect();
    assert!(
        left.is_empty(),
        "{backend}: the log was not flushed: {left:?}"
    );
    let server = serve(dir.path(), backend, &[]);
    assert_acknowledged_are_whole(&server, backend, acknowledged).await;
}

#[tokio::test]
async fn sigterm_shuts_down_gracefully_duckdb() {
    terminate_during_ingest("duckdb").await;
}

#[tokio::test]
async fn sigterm_shuts_down_gracefully_parquet() {
    terminate_during_ingest("parquet").await;
}
