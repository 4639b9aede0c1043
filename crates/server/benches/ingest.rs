//! Durable ingest throughput per backend: DoPut of 64k-row batches × 16 float32 features over
//! loopback, every batch acknowledged only once stored.
//!
//! `cargo bench -p featherstore-server --bench ingest`

mod support;

use std::time::Instant;

use featherstore_server::config::Backend;

const BATCH_ROWS: usize = 65_536;
const BATCHES: usize = 32;

#[tokio::main]
async fn main() {
    println!(
        "ingest, {BATCHES} batches × {BATCH_ROWS} rows × {} float32 features; load average {}",
        support::FEATURES,
        support::load_average()
    );
    println!("{:<10} {:>10} {:>14}", "backend", "seconds", "rows/s");
    for backend in [Backend::Duckdb, Backend::Parquet] {
        let dir = tempfile::tempdir().unwrap();
        let server = support::start(dir.path(), backend).await;
        let mut client = support::client(&server).await;
        support::create_set(&mut client, "bench").await;
        let batches: Vec<_> = (0..BATCHES)
            .map(|b| support::batch((b * BATCH_ROWS) as i64, BATCH_ROWS))
            .collect();
        let started = Instant::now();
        support::put(&mut client, "bench", batches).await;
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
