//! Training data (point-in-time join) at scale, against the release server binary as a child
//! process: wall time and the server's peak RSS for 1M entity rows × 1M feature rows, then
//! × 10M (100k int64 entities, 8 float32 + 8 int64 features, 30 days of event times).
//!
//! `cargo bench -p featherstore-cli --bench training_data` (env `BENCH_BACKENDS=duckdb,parquet`)

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Float32Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::{FlightClient, FlightDescriptor};
use featherstore_testkit::child::{ChildServer, Serve};
use featherstore_testkit::fixtures::{load_average, Rng};
use featherstore_testkit::flight;
use futures::StreamExt;

const ENTITIES: u64 = 100_000;
const ENTITY_ROWS: usize = 1_000_000;
const BATCH: usize = 65_536;
const START: i64 = 1_767_225_600_000_000;
const SPAN: u64 = 30 * 86_400 * 1_000_000;

fn feature_batch(rng: &mut Rng, rows: usize) -> RecordBatch {
    let mut columns: Vec<(String, ArrayRef)> = vec![(
        "entity_id".into(),
        Arc::new(Int64Array::from_iter_values(
            (0..rows).map(|_| rng.below(ENTITIES) as i64),
        )),
    )];
    for f in 0..8 {
        columns.push((
            format!("f{f}"),
            Arc::new(Float32Array::from_iter_values(
                (0..rows).map(|_| rng.below(1000) as f32),
            )),
        ));
        columns.push((
            format!("i{f}"),
            Arc::new(Int64Array::from_iter_values(
                (0..rows).map(|_| rng.below(1000) as i64),
            )),
        ));
    }
    columns.push((
        "event_timestamp".into(),
        Arc::new(TimestampMicrosecondArray::from_iter_values(
            (0..rows).map(|_| START + rng.below(SPAN) as i64),
        )),
    ));
    RecordBatch::try_from_iter(columns).unwrap()
}

fn entity_batch(rng: &mut Rng, first: usize, rows: usize) -> RecordBatch {
    RecordBatch::try_from_iter(vec![
        (
            "entity_id",
            Arc::new(Int64Array::from_iter_values(
                (0..rows).map(|_| rng.below(ENTITIES) as i64),
            )) as ArrayRef,
        ),
        (
            "event_timestamp",
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                (0..rows).map(|_| START + rng.below(SPAN) as i64),
            )) as ArrayRef,
        ),
        (
            "label",
            Arc::new(Int64Array::from_iter_values(
                (first..first + rows).map(|i| i as i64),
            )) as ArrayRef,
        ),
    ])
    .unwrap()
}

/// `featherstore serve` (the release binary) on `dir`.
fn serve(dir: &std::path::Path, backend: &str) -> ChildServer {
    Serve::new(env!("CARGO_BIN_EXE_featherstore"))
        .backend(backend)
        .data_dir(dir)
        .env("RUST_LOG", "warn")
        .start()
}

async fn ingest(client: &mut FlightClient, rng: &mut Rng, rows: usize) -> f64 {
    let batches: Vec<_> = (0..rows.div_ceil(BATCH))
        .map(|b| feature_batch(rng, BATCH.min(rows - b * BATCH)))
        .collect();
    let started = Instant::now();
    flight::put_ok(client, "features", batches).await;
    started.elapsed().as_secs_f64()
}

async fn train(client: &mut FlightClient, rng: &mut Rng) -> (f64, usize) {
    let batches: Vec<_> = (0..ENTITY_ROWS.div_ceil(BATCH))
        .map(|b| entity_batch(rng, b * BATCH, BATCH.min(ENTITY_ROWS - b * BATCH)))
        .collect();
    let command = serde_json::json!({"type": "training_data", "features": ["features:*"]});
    let started = Instant::now();
    let data = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(command.to_string())))
        .build(futures::stream::iter(batches.into_iter().map(Ok)));
    let mut results = client.do_exchange(data).await.unwrap();
    let mut rows = 0;
    while let Some(batch) = results.next().await {
        rows += batch.unwrap().num_rows();
    }
    (started.elapsed().as_secs_f64(), rows)
}

#[tokio::main]
async fn main() {
    let backends = std::env::var("BENCH_BACKENDS").unwrap_or_else(|_| "duckdb,parquet".into());
    println!("training data: {ENTITY_ROWS} entity rows, {ENTITIES} int64 entities, 8 float32 + 8 int64 features, 30 days");
    println!("load average before: {}", load_average());
    println!(
        "{:<8} {:>13} {:>11} {:>12} {:>14}",
        "backend", "feature rows", "join s", "peak RSS MB", "ingest rows/s"
    );
    for backend in backends.split(',') {
        let dir = tempfile::tempdir().unwrap();
        let mut server = serve(dir.path(), backend);
        let mut client = server.flight().await;
        let features: Vec<_> = (0..8)
            .flat_map(|f| {
                [
                    serde_json::json!({"name": format!("f{f}"), "type": "float32"}),
                    serde_json::json!({"name": format!("i{f}"), "type": "int64"}),
                ]
            })
            .collect();
        let spec = serde_json::json!({"name": "features", "entity": {"name": "entity_id", "type": "int64"}, "features": features});
        flight::create_set(&mut client, &spec.to_string()).await;
        let mut rng = Rng(42);
        let mut stored = 0;
        for target in [1_000_000, 10_000_000] {
            let seconds = ingest(&mut client, &mut rng, target - stored).await;
            let ingest_rate = (target - stored) as f64 / seconds;
            stored = target;
            server.reset_peak_rss();
            let (seconds, rows) = train(&mut client, &mut rng).await;
            assert_eq!(rows, ENTITY_ROWS);
            println!(
                "{backend:<8} {target:>13} {seconds:>11.2} {:>12.0} {ingest_rate:>14.0}",
                server.proc_status_kb("VmHWM:") as f64 / 1024.0
            );
        }
        // Startup with 10M stored rows: until the ready line (online index rebuilt).
        drop(server);
        let started = Instant::now();
        server = serve(dir.path(), backend);
        println!(
            "{backend:<8} restart with {stored} stored rows: serving after {:.2} s, RSS {:.0} MB",
            started.elapsed().as_secs_f64(),
            server.proc_status_kb("VmRSS:") as f64 / 1024.0
        );
    }
    println!("load average after: {}", load_average());
}
