//! Online snapshots on every backend: a start loads the snapshot and tops it up with the rows
//! stored after it, so that it always serves the stored latest (after a crash too, and whatever
//! the tail holds); a snapshot that is corrupt, or of another set of the same name, is not used.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::Int64Type;
use featherstore_core::{FeatureSetSpec, OnlineTicket};
use featherstore_store::online::MemoryStore;
use featherstore_store::parquet::ParquetOptions;
use featherstore_store::{FeatureStore, Limits, OfflineStore, SnapshotOptions};

mod common;
use common::{open_delta, open_duckdb, open_parquet_with, Open};

fn open_parquet(dir: &Path) -> Box<dyn OfflineStore> {
    let options = ParquetOptions {
        // Small, so that rows are both in Parquet files and in the log.
        flush_rows: 3,
        ..ParquetOptions::default()
    };
    open_parquet_with(dir, options)
}

const BACKENDS: [(&str, Open); 3] = [
    ("duckdb", open_duckdb),
    ("parquet", open_parquet),
    ("delta", open_delta),
];

fn snapshot_dir(dir: &Path) -> PathBuf {
    dir.join("online")
}

/// A store snapshotting every `rows` applied rows.
fn open(dir: &Path, backend: Open, rows: u64) -> FeatureStore {
    FeatureStore::open_snapshotted(
        backend(dir),
        Box::new(MemoryStore),
        Limits::default(),
        dir.join("tmp"),
        Some(SnapshotOptions {
            dir: snapshot_dir(dir),
            rows,
        }),
    )
    .unwrap()
}

fn spec() -> FeatureSetSpec {
    FeatureSetSpec::from_json(
        br#"{"name": "s", "entity": {"name": "id", "type": "string"},
             "features": [{"name": "n", "type": "int64"}]}"#,
    )
    .unwrap()
}

fn rows(rows: &[(&str, i64, i64)]) -> RecordBatch {
    RecordBatch::try_from_iter(vec![
        (
            "id",
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))) as _,
        ),
        (
            "n",
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))) as _,
        ),
        (
            "event_timestamp",
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.2))
                    .with_timezone("UTC"),
            ) as _,
        ),
    ])
    .unwrap()
}

fn online(store: &FeatureStore, ids: &[&str]) -> Vec<Option<i64>> {
    let ticket = OnlineTicket {
        feature_set: "s".into(),
        entities: ids.iter().map(|id| serde_json::json!(id)).collect(),
        features: None,
    };
    let batch = store.online(&ticket).unwrap();
    let n = batch.column(1).as_primitive::<Int64Type>();
    (0..n.len())
        .map(|i| n.is_valid(i).then(|| n.value(i)))
        .collect()
}

fn snapshot_file(dir: &Path) -> PathBuf {
    snapshot_dir(dir).join("s.snapshot")
}

const IDS: [&str; 4] = ["a", "b", "c", "d"];

/// Stores rows before and after a snapshot (taken after 16 rows: four times the entities),
/// then drops the store without a shutdown, as a crash would: the snapshot is older than the
/// data.
fn ingest_past_a_snapshot(dir: &Path, backend: Open) {
    let store = open(dir, backend, 4);
    store.create(spec()).unwrap();
    // Round by round, so that the first 8 rows already hold all four entities.
    let first: Vec<(&str, i64, i64)> = [(0, 1), (0, 2), (0, 3), (1, 10)]
        .into_iter()
        .flat_map(|(n, t)| IDS.map(|id| (id, n, t)))
        .collect();
    store.ingest("s", &rows(&first[..8])).unwrap();
    assert!(!snapshot_file(dir).exists(), "no snapshot before 16 rows");
    store.ingest("s", &rows(&first[8..])).unwrap();
    assert!(snapshot_file(dir).exists(), "a snapshot after 16 rows");
    let snapshotted = std::fs::read(snapshot_file(dir)).unwrap();
    // After the snapshot: a newer value, a tie (the later ingest wins) and an older one (it
    // loses).
    store
        .ingest("s", &rows(&[("a", 2, 20), ("b", 2, 10), ("c", 2, 5)]))
        .unwrap();
    assert_eq!(std::fs::read(snapshot_file(dir)).unwrap(), snapshotted);
    assert_eq!(online(&store, &IDS), [Some(2), Some(2), Some(1), Some(1)]);
}

#[test]
fn a_start_after_a_crash_tops_up_an_older_snapshot() {
    for (name, backend) in BACKENDS {
        eprintln!("backend {name}");
        let dir = tempfile::tempdir().unwrap();
        ingest_past_a_snapshot(dir.path(), backend);
        let store = open(dir.path(), backend, 1000);
        assert_eq!(online(&store, &IDS), [Some(2), Some(2), Some(1), Some(1)]);
        // A snapshot written at shutdown covers everything, and the next start serves it.
        store.close().unwrap();
        drop(store);
        let store = open(dir.path(), backend, 1000);
        assert_eq!(online(&store, &IDS), [Some(2), Some(2), Some(1), Some(1)]);
    }
}

#[test]
fn a_corrupt_snapshot_is_not_used() {
    for (name, backend) in BACKENDS {
        eprintln!("backend {name}");
        let dir = tempfile::tempdir().unwrap();
        ingest_past_a_snapshot(dir.path(), backend);
        // One flipped bit in the values: only the checksum can tell.
        let mut bytes = std::fs::read(snapshot_file(dir.path())).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 1;
        std::fs::write(snapshot_file(dir.path()), &bytes).unwrap();
        let store = open(dir.path(), backend, 1000);
        assert_eq!(online(&store, &IDS), [Some(2), Some(2), Some(1), Some(1)]);
        // Truncated, too.
        drop(store);
        std::fs::write(snapshot_file(dir.path()), &bytes[..10]).unwrap();
        let store = open(dir.path(), backend, 1000);
        assert_eq!(online(&store, &IDS), [Some(2), Some(2), Some(1), Some(1)]);
    }
}

#[test]
fn a_snapshot_of_a_deleted_set_is_not_used_by_its_successor() {
    for (name, backend) in BACKENDS {
        eprintln!("backend {name}");
        let dir = tempfile::tempdir().unwrap();
        ingest_past_a_snapshot(dir.path(), backend);
        let stale = std::fs::read(snapshot_file(dir.path())).unwrap();
        let store = open(dir.path(), backend, 1000);
        store.delete("s").unwrap();
        assert!(!snapshot_file(dir.path()).exists());
        store.create(spec()).unwrap();
        store.ingest("s", &rows(&[("a", 7, 1)])).unwrap();
        drop(store);
        // As if the delete had crashed before removing the old set's snapshot.
        std::fs::write(snapshot_file(dir.path()), &stale).unwrap();
        let store = open(dir.path(), backend, 1000);
        assert_eq!(online(&store, &IDS), [Some(7), None, None, None]);
    }
}
