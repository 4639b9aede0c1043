//! Streaming ingest with per-batch acknowledgements, then a streamed history read.
//!
//! ```text
//! featherstore serve &
//! cargo run -p featherstore-client --example bulk_ingest
//! ```
//!
//! The server address comes from `FEATHERSTORE_FLIGHT` (default `http://127.0.0.1:8081`).

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Float32Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use featherstore_client::{Client, FeatureSetSpec, HistoryRequest, Timestamp};
use futures::TryStreamExt;

const BATCHES: i64 = 20;
const ROWS: i64 = 50_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let address = std::env::var("FEATHERSTORE_FLIGHT")
        .unwrap_or_else(|_| featherstore_client::DEFAULT_ADDRESS.to_string());
    let client = Client::connect(address).await?;
    let spec = FeatureSetSpec::from_json(
        br#"{
            "name": "bulk_example",
            "entity": {"name": "device_id", "type": "int64"},
            "features": [{"name": "temperature", "type": "float32"}]
        }"#,
    )?;
    client.create_feature_set(&spec).await?;

    // Batches are produced lazily; the client sends them as the server keeps up.
    let start = Timestamp::now().as_micros();
    let batches = futures::stream::iter((0..BATCHES).map(move |b| {
        let ids = (0..ROWS).map(|i| i % 1_000);
        let times = (0..ROWS).map(move |i| start + (b * ROWS + i));
        Ok(RecordBatch::try_from_iter([
            (
                "device_id",
                Arc::new(Int64Array::from_iter_values(ids)) as ArrayRef,
            ),
            (
                "temperature",
                Arc::new(Float32Array::from_iter_values(
                    (0..ROWS).map(|i| 20.0 + (i % 10) as f32),
                )) as ArrayRef,
            ),
            (
                "event_timestamp",
                Arc::new(TimestampMicrosecondArray::from_iter_values(times).with_timezone("UTC"))
                    as ArrayRef,
            ),
        ])?)
    }));
    let started = Instant::now();
    let mut acks = client.ingest_stream("bulk_example", batches).await?;
    let mut rows = 0;
    while let Some(ack) = acks.try_next().await? {
        rows += ack.rows;
        println!("batch {} durable ({} rows in all)", ack.batch, rows);
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{rows} rows in {seconds:.2}s ({:.0} rows/s)",
        rows as f64 / seconds
    );

    // The history of one device, streamed batch by batch.
    let mut history = client
        .history(HistoryRequest::new("bulk_example").entities([7_i64]))
        .await?;
    let mut seen = 0;
    while let Some(batch) = history.try_next().await? {
        seen += batch.num_rows();
    }
    println!("device 7 has {seen} rows");
    Ok(())
}
