//! Runs of batches stored together (`FeatureStore::ingest_run`, what DoPut does with batches
//! that arrive while earlier ones are stored), on every backend: a run large enough to be
//! stored as one append keeps the batches' order, and a run with a refused batch stores the
//! batches before it, names the refused one's problem and stores nothing after it.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::Int64Type;
use featherstore_core::{FeatureSetSpec, HistoryTicket, OnlineTicket};
use featherstore_store::{FeatureStore, Limits, BULK_APPEND_ROWS};

mod common;
use common::{open_delta, open_duckdb, open_parquet_with, Open};

const BACKENDS: [(&str, Open); 3] = [
    ("duckdb", open_duckdb),
    ("parquet", |dir: &Path| {
        open_parquet_with(dir, featherstore_store::parquet::ParquetOptions::default())
    }),
    ("delta", open_delta),
];

const ENTITIES: i64 = 1_000;
/// Rows of one batch: the batch size clients are told to send. Two make a bulk append.
const BATCH_ROWS: usize = 65_536;

fn open(dir: &Path, backend: Open) -> FeatureStore {
    let store = FeatureStore::open(backend(dir), Limits::default(), dir.join("tmp")).unwrap();
    let spec = FeatureSetSpec::from_json(
        br#"{"name": "s", "entity": {"name": "id", "type": "int64"},
             "features": [{"name": "n", "type": "int64"}]}"#,
    )
    .unwrap();
    store.create(spec).unwrap();
    store
}

/// Batch number `n`: every entity, over and over, with `n` as its value and the same event
/// time in every batch, so that which value is latest depends on ingest order alone.
/// `null_key_at`: a row whose entity key is null, which ingest refuses.
fn batch(n: i64, null_key_at: Option<usize>) -> RecordBatch {
    let ids: Int64Array = (0..BATCH_ROWS)
        .map(|i| (Some(i) != null_key_at).then_some(i as i64 % ENTITIES))
        .collect();
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("id", Arc::new(ids)),
        ("n", Arc::new(Int64Array::from(vec![n; BATCH_ROWS]))),
        (
            "event_timestamp",
            Arc::new(TimestampMicrosecondArray::from(vec![1_000_000; BATCH_ROWS])),
        ),
    ];
    RecordBatch::try_from_iter(columns).unwrap()
}

/// How many stored rows hold each value of `n`, by `n`.
fn stored_values(store: &FeatureStore) -> Vec<(i64, usize)> {
    let ticket: HistoryTicket =
        serde_json::from_value(serde_json::json!({"feature_set": "s"})).unwrap();
    let (set, query, view) = store.plan_history(&ticket).unwrap();
    let mut counts = std::collections::BTreeMap::new();
    store
        .scan_history(&set, &query, &view, &mut |batch| {
            let n = batch
                .column_by_name("n")
                .unwrap()
                .as_primitive::<Int64Type>();
            for value in n.values() {
                *counts.entry(*value).or_default() += 1;
            }
            Ok(())
        })
        .unwrap();
    counts.into_iter().collect()
}

/// The online value of `n` of a few entities.
fn online(store: &FeatureStore) -> Vec<i64> {
    let ticket = OnlineTicket {
        feature_set: "s".into(),
        entities: [0, 7, 999].iter().map(|id| serde_json::json!(id)).collect(),
        features: None,
    };
    let answer = store.online(&ticket).unwrap();
    let n = answer
        .column_by_name("n")
        .unwrap()
        .as_primitive::<Int64Type>();
    assert_eq!(n.null_count(), 0);
    n.values().to_vec()
}

#[test]
fn a_bulk_run_is_stored_whole_in_batch_order() {
    // One batch alone is below a bulk append, two are one.
    const { assert!(2 * BATCH_ROWS >= BULK_APPEND_ROWS && BATCH_ROWS < BULK_APPEND_ROWS) };
    for (name, backend) in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), backend);
        let run: Vec<RecordBatch> = (0..3).map(|n| batch(n, None)).collect();
        let (stored, outcome) = store.ingest_run("s", &run);
        outcome.unwrap();
        assert_eq!(stored, 3, "{name}");
        // A later batch of the run counts as ingested later: its values are the latest.
        assert_eq!(online(&store), vec![2, 2, 2], "{name}");
        assert_eq!(
            stored_values(&store),
            vec![(0, BATCH_ROWS), (1, BATCH_ROWS), (2, BATCH_ROWS)],
            "{name}"
        );
        // And a later run's are later still.
        let (stored, outcome) = store.ingest_run("s", &[batch(3, None), batch(4, None)]);
        outcome.unwrap();
        assert_eq!(stored, 2, "{name}");
        assert_eq!(online(&store), vec![4, 4, 4], "{name}");
        store.close().unwrap();
        // After a restart (the Parquet backend replays its log), the same.
        let reopened = FeatureStore::open(
            backend(dir.path()),
            Limits::default(),
            dir.path().join("tmp"),
        )
        .unwrap();
        assert_eq!(online(&reopened), vec![4, 4, 4], "{name}");
        assert_eq!(stored_values(&reopened).len(), 5, "{name}");
    }
}

#[test]
fn a_run_with_a_refused_batch_keeps_the_batches_before_it() {
    for (name, backend) in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), backend);
        let run = [
            batch(0, None),
            batch(1, None),
            batch(2, Some(7)),
            batch(3, None),
        ];
        let (stored, outcome) = store.ingest_run("s", &run);
        let refused = outcome.unwrap_err().to_string();
        assert!(refused.contains("null entity values"), "{name}: {refused}");
        assert_eq!(stored, 2, "{name}");
        assert_eq!(
            stored_values(&store),
            vec![(0, BATCH_ROWS), (1, BATCH_ROWS)],
            "{name}"
        );
        assert_eq!(online(&store), vec![1, 1, 1], "{name}");
        // A refused first batch stores nothing.
        let (stored, outcome) = store.ingest_run("s", &[batch(4, Some(0)), batch(5, None)]);
        assert!(outcome.is_err(), "{name}");
        assert_eq!(stored, 0, "{name}");
        assert_eq!(stored_values(&store).len(), 2, "{name}");
    }
}
