//! Training data (point-in-time join) at scale, against the release server binary as a child
//! process: wall time and the server's peak RSS for 1M entity rows × 1M feature rows, then
//! × 10M (100k int64 entities, 8 float32 + 8 int64 features, 30 days of event times).
//!
//! `cargo bench -p featherstore-cli --bench training_data` (env `BENCH_BACKENDS=duckdb,parquet`)

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Float32Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::{Action, FlightClient, FlightDescriptor};
use futures::{StreamExt, TryStreamExt};

const ENTITIES: u64 = 100_000;
const ENTITY_ROWS: usize = 1_000_000;
const BATCH: usize = 65_536;
const START: i64 = 1_767_225_600_000_000;
const SPAN: u64 = 30 * 86_400 * 1_000_000;

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

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

struct Server {
    child: Child,
    flight: String,
}

impl Server {
    fn start(dir: &std::path::Path, backend: &str) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_featherstore"))
            .args([
                "serve",
                "--backend",
                backend,
                "--http-port",
                "0",
                "--flight-port",
                "0",
                "--metrics-port",
                "0",
            ])
            .arg("--data-dir")
            .arg(dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ready: serde_json::Value = serde_json::from_str(&line).unwrap();
        Server {
            child,
            flight: format!("http://{}", ready["flight"].as_str().unwrap()),
        }
    }

    fn status(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse().ok())
            .unwrap_or(0)
    }

    /// Resets the kernel's peak-RSS watermark (VmHWM) of the server.
    fn reset_peak(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn client(server: &Server) -> FlightClient {
    let channel = tonic::transport::Channel::from_shared(server.flight.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    FlightClient::new(channel)
}

async fn ingest(client: &mut FlightClient, rng: &mut Rng, rows: usize) -> f64 {
    let batches: Vec<_> = (0..rows.div_ceil(BATCH))
        .map(|b| feature_batch(rng, BATCH.min(rows - b * BATCH)))
        .collect();
    let started = Instant::now();
    let data = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_path(vec!["features".into()])))
        .build(futures::stream::iter(batches.into_iter().map(Ok)));
    client
        .do_put(data)
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
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
    println!(
        "load average before: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "{:<8} {:>13} {:>11} {:>12} {:>14}",
        "backend", "feature rows", "join s", "peak RSS MB", "ingest rows/s"
    );
    for backend in backends.split(',') {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Server::start(dir.path(), backend);
        let mut client = client(&server).await;
        let features: Vec<_> = (0..8)
            .flat_map(|f| {
                [
                    serde_json::json!({"name": format!("f{f}"), "type": "float32"}),
                    serde_json::json!({"name": format!("i{f}"), "type": "int64"}),
                ]
            })
            .collect();
        let spec = serde_json::json!({"name": "features", "entity": {"name": "entity_id", "type": "int64"}, "features": features});
        client
            .do_action(Action::new("create_feature_set", spec.to_string()))
            .await
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
            .unwrap();
        let mut rng = Rng(42);
        let mut stored = 0;
        for target in [1_000_000, 10_000_000] {
            let seconds = ingest(&mut client, &mut rng, target - stored).await;
            let ingest_rate = (target - stored) as f64 / seconds;
            stored = target;
            server.reset_peak();
            let (seconds, rows) = train(&mut client, &mut rng).await;
            assert_eq!(rows, ENTITY_ROWS);
            println!(
                "{backend:<8} {target:>13} {seconds:>11.2} {:>12.0} {ingest_rate:>14.0}",
                server.status("VmHWM:") as f64 / 1024.0
            );
        }
        // Startup with 10M stored rows: until the ready line (online index rebuilt).
        drop(server);
        let started = Instant::now();
        server = Server::start(dir.path(), backend);
        println!(
            "{backend:<8} restart with {stored} stored rows: serving after {:.2} s, RSS {:.0} MB",
            started.elapsed().as_secs_f64(),
            server.status("VmRSS:") as f64 / 1024.0
        );
    }
    println!(
        "load average after: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
}
