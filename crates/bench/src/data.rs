//! The suite's data: float32 feature sets keyed by int64 entities, and the training set of
//! the earlier training-data bench (8 float32 + 8 int64 features over 30 days).

use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use featherstore_client::{Client, FeatureSetSpec};
use featherstore_testkit::fixtures::{training_spec, JAN_1_2026_MICROS, THIRTY_DAYS_MICROS};

use crate::BenchError;

// The training data and the deterministic random source every case draws from (so every run
// reads and writes the same keys) are the store benchmarks' too.
pub use featherstore_testkit::fixtures::{training_entity_rows, training_rows, Rng};

/// Rows per ingest batch (the 64k-row batches).
pub const BATCH_ROWS: usize = 65_536;

/// Creates `name`: int64 `entity_id`, float32 `f0..f{features}`.
pub async fn create_float_set(
    client: &Client,
    name: &str,
    features: usize,
) -> Result<(), BenchError> {
    let features: Vec<_> = (0..features)
        .map(|f| serde_json::json!({"name": format!("f{f}"), "type": "float32"}))
        .collect();
    let spec = serde_json::json!({
        "name": name,
        "entity": {"name": "entity_id", "type": "int64"},
        "features": features,
    });
    create(client, &spec).await
}

/// Creates `name` with 8 float32 (`f0..f7`) and 8 int64 (`i0..i7`) features.
pub async fn create_training_set(client: &Client, name: &str) -> Result<(), BenchError> {
    client.create_feature_set(&training_spec(name)).await?;
    Ok(())
}

async fn create(client: &Client, spec: &serde_json::Value) -> Result<(), BenchError> {
    let spec = FeatureSetSpec::from_json(spec.to_string().as_bytes())
        .map_err(|e| BenchError::Setup(format!("bench spec: {e}")))?;
    client.create_feature_set(&spec).await?;
    Ok(())
}

fn timestamps(values: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from_iter_values(values).with_timezone("UTC"))
}

/// Rows of a float set: the given keys, `features` float32 values each, event times
/// `event_time`.
pub fn float_batch(
    rng: &mut Rng,
    keys: impl Iterator<Item = i64>,
    features: usize,
    event_time: i64,
) -> RecordBatch {
    let keys = Int64Array::from_iter_values(keys);
    let rows = keys.len();
    let mut fields = vec![Field::new("entity_id", DataType::Int64, false)];
    let mut columns: Vec<ArrayRef> = vec![Arc::new(keys)];
    for f in 0..features {
        fields.push(Field::new(format!("f{f}"), DataType::Float32, true));
        columns.push(Arc::new(Float32Array::from_iter_values(
            (0..rows).map(|_| rng.below(1_000_000) as f32 / 1000.0),
        )));
    }
    fields.push(Field::new(
        "event_timestamp",
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        false,
    ));
    columns.push(timestamps(std::iter::repeat_n(event_time, rows)));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("consistent columns")
}

/// One row per entity `0..entities` in 64k-row batches, event time 2026-01-01.
pub fn latest_rows(rng: &mut Rng, entities: u64, features: usize) -> Vec<RecordBatch> {
    (0..entities)
        .step_by(BATCH_ROWS)
        .map(|first| {
            let last = (first + BATCH_ROWS as u64).min(entities);
            float_batch(
                rng,
                (first as i64)..(last as i64),
                features,
                JAN_1_2026_MICROS,
            )
        })
        .collect()
}

/// `rows` rows over random entities below `entities`, in 64k-row batches, event times
/// spread over 30 days.
pub fn random_rows(rng: &mut Rng, rows: usize, entities: u64, features: usize) -> Vec<RecordBatch> {
    (0..rows)
        .step_by(BATCH_ROWS)
        .map(|first| {
            let n = BATCH_ROWS.min(rows - first);
            let keys: Vec<i64> = (0..n).map(|_| rng.below(entities) as i64).collect();
            let event_time = JAN_1_2026_MICROS + rng.below(THIRTY_DAYS_MICROS) as i64;
            float_batch(rng, keys.into_iter(), features, event_time)
        })
        .collect()
}

/// Arrow bytes of the batches (buffers as held in memory), for MB/s.
pub fn arrow_bytes(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::get_array_memory_size).sum()
}
