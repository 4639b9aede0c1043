//! Rows for the backends' unit tests of their logs and memtables.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use featherstore_core::coerce::coerce_batch;
use featherstore_core::FeatureSetSpec;

/// One row per id of `spec` (a string key `id` and an int64 feature `n`, its other features
/// null): `n` and the event time (µs) count up from 0.
pub(crate) fn id_rows(spec: &FeatureSetSpec, ids: &[&str]) -> RecordBatch {
    let input = RecordBatch::try_from_iter(vec![
        ("id", Arc::new(StringArray::from(ids.to_vec())) as ArrayRef),
        (
            "n",
            Arc::new(Int64Array::from_iter_values(0..ids.len() as i64)),
        ),
        (
            "event_timestamp",
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                0..ids.len() as i64,
            )),
        ),
    ])
    .unwrap();
    coerce_batch(spec, &input).unwrap()
}
