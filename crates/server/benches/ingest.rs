//! Durable ingest throughput per backend: DoPut of 64k-row batches × 16 float32 features over
//! loopback, every batch acknowledged only once stored.
//!
//! `cargo bench -p featherstore-server --bench ingest`

use std::time::Instant;

use featherstore_server::config::Backend;
use featherstore_testkit::fixtures::{float_batch, float_set_spec, load_average, FLOAT_FEATURES};
use featherstore_testkit::{flight, TestServer};

const BATCH_ROWS: usize = 65_536;
const BATCHES: usize = 32;

#[tokio::main]
async fn main() {
    println!(
        "ingest, {BATCHES} batches × {BATCH_ROWS} rows × {} float32 features; load average {}",
        FLOAT_FEATURES,
        load_average()
    );
    println!("{:<10} {:>10} {:>14}", "backend", "seconds", "rows/s");
    for backend in [Backend::Duckdb, Backend::Parquet] {
        let server = TestServer::start(backend).await;
        let mut client = server.flight().await;
        flight::create_set(&mut client, &float_set_spec("bench").to_string()).await;
        let batches: Vec<_> = (0..BATCHES)
            .map(|b| float_batch((b * BATCH_ROWS) as i64, BATCH_ROWS))
            .collect();
        let started = Instant::now();
        flight::put_ok(&mut client, "bench", batches).await;
        let seconds = started.elapsed().as_secs_f64();
        let rows = (BATCHES * BATCH_ROWS) as f64;
        println!(
            "{:<10} {:>10.2} {:>14.0}",
            format!("{backend:?}").to_lowercase(),
            seconds,
            rows / seconds
        );
        server.shutdown().await;
    }
}
