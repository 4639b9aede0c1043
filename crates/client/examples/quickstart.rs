//! Quick start: create a feature set, ingest a batch, read online values and history, and
//! build point-in-time training data.
//!
//! Start a server (`featherstore serve`), then:
//!
//! ```text
//! cargo run -p featherstore-client --example quickstart
//! ```
//!
//! The server address comes from `FEATHERSTORE_FLIGHT` (default `http://127.0.0.1:8081`).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimestampMicrosecondType};
use featherstore_client::{Client, FeatureSetSpec, Timestamp, TrainingDataOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let address = std::env::var("FEATHERSTORE_FLIGHT")
        .unwrap_or_else(|_| featherstore_client::DEFAULT_ADDRESS.to_string());
    let client = Client::connect(address).await?;

    // 1. Declare a feature set. The same spec again is a no-op, so this runs more than once.
    let spec = FeatureSetSpec::from_json(
        br#"{
            "name": "quickstart_users",
            "entity": {"name": "user_id", "type": "string"},
            "features": [
                {"name": "age", "type": "int64"},
                {"name": "ctr_7d", "type": "float32", "description": "click-through rate, 7 days"}
            ],
            "description": "Created by the quickstart example"
        }"#,
    )?;
    match client.create_feature_set(&spec).await {
        Ok(stored) => println!("feature set {} (version {:?})", stored.name, stored.version),
        Err(e) if e.is_already_exists() => {
            println!(
                "a different quickstart_users exists already: {}",
                e.message()
            );
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    }

    // 2. Ingest one batch: entity, timestamp, any subset of the features. Durable once
    //    acknowledged.
    let now = Timestamp::now().as_micros();
    let hour = 3_600 * 1_000_000;
    let batch = RecordBatch::try_from_iter([
        (
            "user_id",
            Arc::new(StringArray::from(vec!["u1", "u2", "u1"])) as ArrayRef,
        ),
        (
            "age",
            Arc::new(Int64Array::from(vec![31, 45, 32])) as ArrayRef,
        ),
        (
            "ctr_7d",
            Arc::new(Float32Array::from(vec![0.02, 0.05, 0.03])) as ArrayRef,
        ),
        (
            "event_timestamp",
            Arc::new(
                TimestampMicrosecondArray::from(vec![now - 2 * hour, now - hour, now])
                    .with_timezone("UTC"),
            ) as ArrayRef,
        ),
    ])?;
    let ack = client.ingest_features("quickstart_users", batch).await?;
    println!("stored {} rows", ack.rows);

    // 3. Online values: the latest row per entity, in request order.
    let online = client
        .get_features("quickstart_users", ["u1", "u2", "unknown"])
        .await?;
    println!("online values:");
    show(&online)?;

    // 4. History of u1 over the last day.
    let history = client
        .get_feature_history(
            "quickstart_users",
            "u1",
            Timestamp::from_micros(now - 24 * hour),
            Timestamp::from_micros(now + 1),
        )
        .await?;
    println!("history of u1:");
    show(&history)?;

    // 5. Training data: each entity row gets the values as of its own time.
    let entity_rows = RecordBatch::try_from_iter([
        (
            "user_id",
            Arc::new(StringArray::from(vec!["u1", "u1", "u2"])) as ArrayRef,
        ),
        (
            "event_timestamp",
            Arc::new(
                TimestampMicrosecondArray::from(vec![now - hour, now, now - 3 * hour])
                    .with_timezone("UTC"),
            ) as ArrayRef,
        ),
        (
            "label",
            Arc::new(Int64Array::from(vec![0, 1, 0])) as ArrayRef,
        ),
    ])?;
    let training = client
        .training_data(
            vec![entity_rows],
            ["quickstart_users:*"],
            TrainingDataOptions::default(),
        )
        .await?
        .concat()
        .await?;
    println!("training data:");
    show(&training)?;

    let info = client.get_feature_set("quickstart_users").await?;
    println!(
        "{} rows of {} entities stored",
        info.stats.rows, info.stats.entities
    );
    Ok(())
}

/// Prints a batch as a table. Times arrive as `Timestamp(µs, "UTC")`; arrow's printer names
/// zones only with its `chrono-tz` feature, so they are shown with the equal offset `+00:00`.
fn show(batch: &RecordBatch) -> Result<(), arrow::error::ArrowError> {
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        match field.data_type() {
            DataType::Timestamp(_, Some(_)) => {
                let utc = column
                    .as_primitive::<TimestampMicrosecondType>()
                    .clone()
                    .with_timezone("+00:00");
                fields.push(Field::new(field.name(), utc.data_type().clone(), true));
                columns.push(Arc::new(utc) as ArrayRef);
            }
            _ => {
                fields.push(field.as_ref().clone());
                columns.push(column.clone());
            }
        }
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
    arrow::util::pretty::print_batches(&[batch])
}
