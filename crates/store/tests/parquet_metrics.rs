//! The Parquet backend's activity counters and disk usage move with the work they describe.
//! The counters are process-wide: this binary holds one test, so they count its work alone.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use featherstore_core::coerce::coerce_batch;
use featherstore_core::FeatureSetSpec;
use featherstore_store::metrics::PARQUET;
use featherstore_store::parquet::{ParquetOptions, ParquetStore};
use featherstore_store::query::EngineSettings;
use featherstore_store::{OfflineStore, StorageStats};

/// 2026-03-01T12:00:00Z in microseconds: every row of the test falls on this UTC date.
const MARCH_1_NOON: i64 = 1_772_366_400_000_000;

fn counter(key: &str) -> u64 {
    PARQUET
        .counters()
        .iter()
        .find(|(name, _, _)| *name == key)
        .unwrap_or_else(|| panic!("no counter {key}"))
        .2
}

fn clicks() -> FeatureSetSpec {
    FeatureSetSpec::from_json(
        br#"{"name": "clicks", "entity": {"name": "user", "type": "string"},
             "features": [{"name": "count", "type": "int64"}]}"#,
    )
    .unwrap()
}

/// `users.len()` rows, a minute apart.
fn clicks_batch(users: &[&str]) -> RecordBatch {
    let times = (0..users.len() as i64).map(|i| MARCH_1_NOON + i * 60_000_000);
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("user", Arc::new(StringArray::from(users.to_vec()))),
        (
            "event_timestamp",
            Arc::new(TimestampMicrosecondArray::from_iter_values(times)),
        ),
        (
            "count",
            Arc::new(Int64Array::from_iter_values(0..users.len() as i64)),
        ),
    ];
    coerce_batch(&clicks(), &RecordBatch::try_from_iter(columns).unwrap()).unwrap()
}

/// The files under `dir` (recursively) whose names end with `suffix`, and their total size.
fn on_disk(dir: &Path, suffix: &str) -> (Vec<PathBuf>, u64) {
    let mut found = Vec::new();
    let mut bytes = 0;
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            let (inner, inner_bytes) = on_disk(&path, suffix);
            found.extend(inner);
            bytes += inner_bytes;
        } else if path.to_string_lossy().ends_with(suffix) {
            bytes += fs::metadata(&path).unwrap().len();
            found.push(path);
        }
    }
    found.sort();
    (found, bytes)
}

fn usage(store: &ParquetStore) -> StorageStats {
    let stats = store.storage_stats(&clicks()).unwrap().unwrap();
    assert_eq!(store.storage_total().unwrap(), Some(stats), "one set");
    stats
}

#[test]
fn log_flush_and_compaction_work_moves_the_counters_and_the_disk_usage() {
    let dir = tempfile::tempdir().unwrap();
    let options = ParquetOptions {
        // Flushes only when the test asks; compaction as soon as two small files exist.
        flush_rows: 1_000,
        flush_interval: Duration::from_secs(3600),
        compact_min_files: 2,
        ..ParquetOptions::default()
    };
    let engine = EngineSettings {
        connections: 2,
        ..EngineSettings::default()
    };
    let store = ParquetStore::open(dir.path(), options, &engine).unwrap();
    store.create(&clicks()).unwrap();
    let set_dir = dir.path().join("clicks");
    let log_dir = set_dir.join("_log");
    assert_eq!(usage(&store), StorageStats::default());

    // --- The log: a new segment (header + fsync), then the batch (message + fsync).
    store
        .append(&clicks(), &clicks_batch(&["a", "b", "c"]))
        .unwrap();
    let (segments, log_bytes) = on_disk(&log_dir, ".arrows");
    assert_eq!(segments.len(), 1);
    assert_eq!(counter("log_appends"), 1);
    assert_eq!(counter("log_syncs"), 2);
    assert_eq!(counter("log_bytes"), log_bytes);
    assert_eq!(
        usage(&store),
        StorageStats {
            files: 1,
            bytes: log_bytes
        }
    );

    // --- A flush that cannot commit (its manifest cannot be written) is a failure.
    let blocker = set_dir.join("_manifest.json.tmp");
    fs::create_dir(&blocker).unwrap();
    assert!(store.flush().is_err());
    assert_eq!((counter("flush_failures"), counter("flushes")), (1, 0));
    assert!(on_disk(&set_dir, ".parquet").0.is_empty());
    fs::remove_dir(&blocker).unwrap();

    // --- A flush: one file for the one date; the log is emptied.
    store.flush().unwrap();
    let (files, data_bytes) = on_disk(&set_dir, ".parquet");
    assert_eq!(files.len(), 1);
    assert_eq!(counter("flushes"), 1);
    assert_eq!(counter("flushed_rows"), 3);
    assert_eq!(counter("flushed_files"), 1);
    assert_eq!(counter("flushed_bytes"), data_bytes);
    assert!(counter("flush_micros") > 0);
    assert_eq!(counter("flush_failures"), 1);
    assert!(on_disk(&log_dir, ".arrows").0.is_empty());
    assert_eq!(
        usage(&store),
        StorageStats {
            files: 1,
            bytes: data_bytes
        }
    );

    // --- A compaction that cannot read its input is a failure. The first file is damaged,
    // then a second small file of the same date is flushed: compaction is due (the background
    // thread may try it too, and fail the same way).
    let first = files[0].clone();
    let first_bytes = fs::read(&first).unwrap();
    fs::write(&first, b"not parquet").unwrap();
    store.append(&clicks(), &clicks_batch(&["d", "e"])).unwrap();
    store.flush().unwrap();
    assert_eq!(counter("flushes"), 2);
    assert_eq!(counter("flushed_rows"), 5);
    assert_eq!(counter("log_appends"), 2);
    assert!(store.compact().is_err());
    assert!(counter("compaction_failures") >= 1);
    assert_eq!(counter("compactions"), 0);
    fs::write(&first, &first_bytes).unwrap();

    // --- A compaction: two small files merged into one.
    store.compact().unwrap();
    let (merged, merged_bytes) = on_disk(&set_dir, ".parquet");
    assert_eq!(merged.len(), 1);
    assert!(!merged.contains(&first));
    assert_eq!(counter("compactions"), 1);
    assert_eq!(counter("compacted_input_files"), 2);
    assert_eq!(counter("compacted_output_files"), 1);
    assert_eq!(counter("compacted_bytes"), merged_bytes);
    assert!(counter("compaction_micros") > 0);
    assert_eq!(
        usage(&store),
        StorageStats {
            files: 1,
            bytes: merged_bytes
        }
    );
    assert_eq!(store.stats(&clicks()).unwrap().rows, 5);
}
