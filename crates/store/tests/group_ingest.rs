//! Group commit on every backend: `FeatureStore::ingest_all` stores consecutive batches with
//! one append, as if one after the other (the later batch wins a tie), stops at the first
//! batch it refuses (storing those before it, none after it), and what it stored survives a
//! restart.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::Int64Type;
use featherstore_core::{FeatureSetSpec, HistoryTicket, OnlineTicket};
use featherstore_store::parquet::ParquetOptions;
use featherstore_store::{FeatureStore, Limits, OfflineStore};

mod common;
use common::{open_delta, open_duckdb, open_parquet_with, Open};

const SECOND: i64 = 1_000_000;
const T: i64 = 1_700_000_000 * SECOND;
const SPEC: &str = r#"{"name": "s", "entity": {"name": "id", "type": "string"},
    "features": [{"name": "n", "type": "int64"}], "ttl_seconds": 315360000000}"#;

fn open_parquet(dir: &Path) -> Box<dyn OfflineStore> {
    let options = ParquetOptions {
        // Small: part of a group is flushed into a Parquet file, the rest stays in the log.
        flush_rows: 2,
        ..ParquetOptions::default()
    };
    open_parquet_with(dir, options)
}

const BACKENDS: [(&str, Open); 3] = [
    ("duckdb", open_duckdb),
    ("parquet", open_parquet),
    ("delta", open_delta),
];

fn open(dir: &Path, backend: Open) -> FeatureStore {
    FeatureStore::open(backend(dir), Limits::default(), dir.join("tmp")).unwrap()
}

/// Rows (id, n, event time µs).
fn batch(rows: &[(&str, i64, i64)]) -> RecordBatch {
    RecordBatch::try_from_iter(vec![
        (
            "id",
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
        ),
        (
            "n",
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))) as ArrayRef,
        ),
        (
            "event_timestamp",
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                rows.iter().map(|r| r.2),
            )) as ArrayRef,
        ),
    ])
    .unwrap()
}

/// A batch the set refuses: it has no event times.
fn without_event_times() -> RecordBatch {
    RecordBatch::try_from_iter(vec![
        ("id", Arc::new(StringArray::from(vec!["c"])) as ArrayRef),
        ("n", Arc::new(Int64Array::from(vec![99])) as ArrayRef),
    ])
    .unwrap()
}

/// Every stored `n`, in history order (entity, event time, ingest order).
fn history(store: &FeatureStore) -> Vec<i64> {
    let ticket = HistoryTicket::from_json(br#"{"feature_set": "s"}"#).unwrap();
    let (set, query, view) = store.plan_history(&ticket).unwrap();
    let mut stored = Vec::new();
    store
        .scan_history(&set, &query, &view, &mut |batch| {
            let n = batch.column(1).as_primitive::<Int64Type>();
            stored.extend(n.values().iter().copied());
            Ok(())
        })
        .unwrap();
    stored
}

/// The online `n` of each entity, null when it has none.
fn online(store: &FeatureStore, entities: &[&str]) -> Vec<Option<i64>> {
    let ticket: OnlineTicket =
        serde_json::from_value(serde_json::json!({"feature_set": "s", "entities": entities}))
            .unwrap();
    let values = store.online(&ticket).unwrap();
    let n = values.column(1).as_primitive::<Int64Type>();
    (0..n.len())
        .map(|i| n.is_valid(i).then(|| n.value(i)))
        .collect()
}

#[test]
fn a_group_stores_the_batches_before_the_first_refused_one_in_order_and_durably() {
    for (backend, offline) in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), offline);
        store
            .create(FeatureSetSpec::from_json(SPEC.as_bytes()).unwrap())
            .unwrap();
        let group = [
            batch(&[("a", 1, T), ("b", 10, T)]),
            // The same event time as "a" above: the later batch wins the tie.
            batch(&[("a", 2, T)]),
            without_event_times(),
            batch(&[("b", 20, T + SECOND)]),
        ];
        let ingested = store.ingest_all("s", &group);
        assert_eq!(ingested.rows, vec![2, 1], "{backend}");
        let refused = ingested.refused.expect("the third batch is refused");
        assert!(
            refused.to_string().contains("event_timestamp"),
            "{backend}: {refused}"
        );
        assert_eq!(
            online(&store, &["a", "b", "c"]),
            [Some(2), Some(10), None],
            "{backend}"
        );
        assert_eq!(history(&store), [1, 2, 10], "{backend}");

        drop(store);
        let store = open(dir.path(), offline);
        assert_eq!(history(&store), [1, 2, 10], "{backend} after a restart");
        assert_eq!(
            online(&store, &["a", "b"]),
            [Some(2), Some(10)],
            "{backend}"
        );
    }
}

#[test]
fn a_group_whose_first_batch_is_refused_stores_nothing() {
    for (backend, offline) in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), offline);
        store
            .create(FeatureSetSpec::from_json(SPEC.as_bytes()).unwrap())
            .unwrap();
        let ingested = store.ingest_all("s", &[without_event_times(), batch(&[("a", 1, T)])]);
        assert!(ingested.rows.is_empty(), "{backend}");
        assert!(ingested.refused.is_some(), "{backend}");
        assert!(history(&store).is_empty(), "{backend}");
        let unknown = store.ingest_all("nope", &[batch(&[("a", 1, T)])]);
        assert!(
            unknown.rows.is_empty() && unknown.refused.is_some(),
            "{backend}"
        );
    }
}
