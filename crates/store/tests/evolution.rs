//! Feature set evolution on every backend: a set updated in place reads its old rows under the
//! new schema on every path (online, history, training data), before and after a restart,
//! with rows in the log and in Parquet files of both shapes; versions are kept; refused
//! changes change nothing; ingest and reads run through an update.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{Float64Type, Int64Type};
use featherstore_core::{FeatureSetSpec, HistoryTicket, OnlineTicket, TrainingDataCommand};
use featherstore_store::parquet::{ParquetOptions, ParquetStore};
use featherstore_store::{FeatureStore, Limits, OfflineStore};

mod common;
use common::{engine, open_delta, open_duckdb, open_parquet_with, Open};

const SECOND: i64 = 1_000_000;

fn open_parquet(dir: &Path) -> Box<dyn OfflineStore> {
    let options = ParquetOptions {
        // Small, so rows of both versions end up in Parquet files and in the log.
        flush_rows: 4,
        compact_min_files: 2,
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

const V1: &str = r#"{"name": "s", "entity": {"name": "id", "type": "string"},
    "features": [{"name": "n", "type": "int64"}, {"name": "e", "type": "float64[2]"}]}"#;
const V2: &str = r#"{"name": "s", "entity": {"name": "id", "type": "string"},
    "features": [{"name": "n", "type": "int64"}, {"name": "e", "type": "float64[2]"},
                 {"name": "x", "type": "float64", "description": "added"},
                 {"name": "v", "type": "float64[2]"}],
    "ttl_seconds": 315360000000}"#;

fn spec(json: &str) -> FeatureSetSpec {
    FeatureSetSpec::from_json(json.as_bytes()).unwrap()
}

/// An input batch: (id, n, seconds), and `x` when `with_x` (x = n / 2).
fn rows(rows: &[(&str, i64, i64)], with_x: bool) -> RecordBatch {
    let mut columns = vec![
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
                rows.iter().map(|r| r.2 * SECOND),
            )) as ArrayRef,
        ),
    ];
    if with_x {
        columns.push((
            "x",
            Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|r| r.1 as f64 / 2.0),
            )) as ArrayRef,
        ));
    }
    RecordBatch::try_from_iter(columns).unwrap()
}

/// (id, n, x) of every history row, in the store's order.
fn history(store: &FeatureStore) -> Vec<(String, Option<i64>, Option<f64>)> {
    let ticket: HistoryTicket =
        serde_json::from_value(serde_json::json!({"feature_set": "s"})).unwrap();
    let (set, query, view) = store.plan_history(&ticket).unwrap();
    let mut out = Vec::new();
    store
        .scan_history(&set, &query, &view, &mut |batch| {
            out.extend(triples(&batch));
            Ok(())
        })
        .unwrap();
    out
}

fn triples(batch: &RecordBatch) -> Vec<(String, Option<i64>, Option<f64>)> {
    let column = |name: &str| batch.column_by_name(name).unwrap().clone();
    let ids = column("id");
    let n = column("n");
    let x = column("x");
    (0..batch.num_rows())
        .map(|i| {
            let n = n.as_primitive::<Int64Type>();
            let x = x.as_primitive::<Float64Type>();
            (
                ids.as_string::<i32>().value(i).to_string(),
                n.is_valid(i).then(|| n.value(i)),
                x.is_valid(i).then(|| x.value(i)),
            )
        })
        .collect()
}

fn online(store: &FeatureStore, ids: &[&str]) -> Vec<(String, Option<i64>, Option<f64>)> {
    let ticket = OnlineTicket {
        feature_set: "s".into(),
        entities: ids.iter().map(|id| serde_json::json!(id)).collect(),
        features: None,
    };
    triples(&store.online(&ticket).unwrap())
}

fn training_x(store: &FeatureStore, ids: &[&str], at_seconds: i64) -> Vec<Option<f64>> {
    let command =
        TrainingDataCommand::from_json(br#"{"type": "training_data", "features": ["s:x", "s:n"]}"#)
            .unwrap();
    let entity_rows = RecordBatch::try_from_iter(vec![
        (
            "id",
            Arc::new(StringArray::from_iter_values(ids.iter().copied())) as ArrayRef,
        ),
        (
            "event_timestamp",
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                ids.iter().map(|_| at_seconds * SECOND),
            )) as ArrayRef,
        ),
    ])
    .unwrap();
    let plan = store.plan_training(&command, entity_rows.schema()).unwrap();
    let mut input = std::iter::once(Ok(entity_rows));
    let mut out = Vec::new();
    store
        .training_data(&plan, &mut input, &mut |batch| {
            let x = batch
                .column_by_name("x")
                .unwrap()
                .as_primitive::<Float64Type>();
            out.extend(x.iter());
            Ok(())
        })
        .unwrap();
    out
}

fn sorted<T: Ord + Clone>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

fn key(rows: Vec<(String, Option<i64>, Option<f64>)>) -> Vec<(String, Option<i64>, Option<i64>)> {
    // f64 is not Ord: compare x as thousandths.
    sorted(
        rows.into_iter()
            .map(|(id, n, x)| (id, n, x.map(|x| (x * 1000.0) as i64)))
            .collect(),
    )
}

#[test]
fn added_features_are_null_for_old_rows_on_every_path_and_after_restart() {
    for (backend, open_backend) in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path(), open_backend);
            store.create(spec(V1)).unwrap();
            // 6 old rows: on Parquet, some flushed to files of the old schema, some in the log.
            store
                .ingest(
                    "s",
                    &rows(
                        &[("a", 1, 10), ("b", 2, 10), ("c", 3, 10), ("d", 4, 10)],
                        false,
                    ),
                )
                .unwrap();
            store.close().unwrap();
            store
                .ingest("s", &rows(&[("a", 5, 20), ("e", 6, 20)], false))
                .unwrap_err();
        }
        let store = open(dir.path(), open_backend);
        store
            .ingest("s", &rows(&[("a", 5, 20), ("e", 6, 20)], false))
            .unwrap();
        let (stored, changes) = store.update(spec(V2)).unwrap();
        assert_eq!(stored.version, Some(2), "{backend}");
        assert_eq!(changes.len(), 3, "{backend}: {changes:?}");
        // After the update: a batch with the new feature, one without.
        store.ingest("s", &rows(&[("b", 8, 30)], true)).unwrap();
        store.ingest("s", &rows(&[("f", 9, 30)], false)).unwrap();
        let expected_history = key(vec![
            ("a".into(), Some(1), None),
            ("a".into(), Some(5), None),
            ("b".into(), Some(2), None),
            ("b".into(), Some(8), Some(4.0)),
            ("c".into(), Some(3), None),
            ("d".into(), Some(4), None),
            ("e".into(), Some(6), None),
            ("f".into(), Some(9), None),
        ]);
        let expected_online = vec![
            ("a".to_string(), Some(5), None),
            ("b".to_string(), Some(8), Some(4.0)),
            ("c".to_string(), Some(3), None),
            ("f".to_string(), Some(9), None),
            ("zz".to_string(), None, None),
        ];
        let ids = ["a", "b", "c", "f", "zz"];
        let check = |store: &FeatureStore, when: &str| {
            assert_eq!(key(history(store)), expected_history, "{backend} {when}");
            assert_eq!(online(store, &ids), expected_online, "{backend} {when}");
            assert_eq!(
                training_x(store, &ids, 100),
                [None, Some(4.0), None, None, None],
                "{backend} {when}"
            );
            let schema = store.get("s").unwrap().spec.arrow_schema();
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            assert_eq!(
                names,
                ["id", "n", "e", "x", "v", "event_timestamp"],
                "{backend}"
            );
        };
        check(&store, "after the update");
        drop(store);
        // Restart with rows of both versions still in the log (Parquet), then flushed and
        // compacted together.
        let store = open(dir.path(), open_backend);
        check(&store, "after a restart");
        assert_eq!(store.versions("s").unwrap().len(), 2, "{backend}");
        store
            .ingest("s", &rows(&[("g", 10, 40), ("g", 11, 41)], true))
            .unwrap();
        store.close().unwrap();
        drop(store);
        let store = open(dir.path(), open_backend);
        let mut with_g = expected_history.clone();
        with_g.extend([
            ("g".to_string(), Some(10), Some(5000)),
            ("g".to_string(), Some(11), Some(5500)),
        ]);
        assert_eq!(
            key(history(&store)),
            sorted(with_g),
            "{backend} after flush"
        );
    }
}

#[test]
fn parquet_compaction_merges_files_of_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let open_store = |dir: &Path| {
        let options = ParquetOptions {
            flush_rows: 1_000_000,
            compact_min_files: 2,
            ..ParquetOptions::default()
        };
        ParquetStore::open(&dir.join("parquet"), options, &engine()).unwrap()
    };
    let parquet = open_store(dir.path());
    let v1 = {
        let mut v1 = spec(V1);
        v1.version = Some(1);
        v1
    };
    let mut v2 = spec(V2);
    v2.version = Some(2);
    parquet.create(&v1).unwrap();
    let canonical = |spec: &FeatureSetSpec, batch: RecordBatch| {
        featherstore_core::coerce::coerce_batch(spec, &batch).unwrap()
    };
    parquet
        .append(&v1, &canonical(&v1, rows(&[("a", 1, 10)], false)))
        .unwrap();
    // A data file of the old schema, and an old-schema log segment.
    parquet.flush().unwrap();
    parquet
        .append(&v1, &canonical(&v1, rows(&[("b", 2, 10)], false)))
        .unwrap();
    parquet.update(&v1, &v2).unwrap();
    parquet
        .append(&v2, &canonical(&v2, rows(&[("a", 3, 10)], true)))
        .unwrap();
    let expected = key(vec![
        ("a".into(), Some(1), None),
        ("a".into(), Some(3), Some(1.5)),
        ("b".into(), Some(2), None),
    ]);
    let scan = |parquet: &ParquetStore| {
        let mut got = Vec::new();
        let query = featherstore_store::HistoryQuery {
            entities: None,
            start: None,
            end: None,
            features: vec![0, 2],
        };
        parquet
            .scan(&v2, &query, &mut |batch| {
                got.extend(triples(&batch));
                Ok(())
            })
            .unwrap();
        key(got)
    };
    // Restart with both log segments (old and new schema) to replay.
    drop(parquet);
    let parquet = open_store(dir.path());
    assert_eq!(scan(&parquet), expected, "replayed from the log");
    // A new-schema file beside the old one, then both compacted together.
    parquet
        .append(&v2, &canonical(&v2, rows(&[("c", 4, 10)], false)))
        .unwrap();
    parquet.flush().unwrap();
    assert_eq!(walk(&dir.path().join("parquet/s")).len(), 2);
    parquet.compact().unwrap();
    let files: Vec<_> = walk(&dir.path().join("parquet/s"));
    assert_eq!(files.len(), 1, "compacted into one file: {files:?}");
    let mut expected = expected;
    expected.push(("c".into(), Some(4), None));
    assert_eq!(scan(&parquet), expected);
    drop(parquet);
    assert_eq!(scan(&open_store(dir.path())), expected, "after a restart");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "parquet") {
            files.push(path);
        }
    }
    files
}

#[test]
fn versions_are_kept_and_the_same_spec_is_a_no_op() {
    for (backend, open_backend) in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), open_backend);
        store.create(spec(V1)).unwrap();
        let (same, changes) = store.update(spec(V1)).unwrap();
        assert!(changes.is_empty(), "{backend}");
        assert_eq!(same.version, Some(1), "{backend}");
        store.update(spec(V2)).unwrap();
        let mut v3 = spec(V2);
        v3.description = Some("third".into());
        let (third, changes) = store.update(v3).unwrap();
        assert_eq!(third.version, Some(3), "{backend}");
        assert_eq!(changes.len(), 1, "{backend}");
        drop(store);
        let store = open(dir.path(), open_backend);
        let versions: Vec<_> = store
            .versions("s")
            .unwrap()
            .iter()
            .map(|v| (v.version, v.features.len()))
            .collect();
        assert_eq!(
            versions,
            [(Some(1), 2), (Some(2), 4), (Some(3), 4)],
            "{backend}"
        );
        assert_eq!(store.get_version("s", 1).unwrap().features.len(), 2);
        assert_eq!(
            store.get_version("s", 3).unwrap().description.as_deref(),
            Some("third")
        );
        let missing = store.get_version("s", 4).unwrap_err();
        assert_eq!(
            missing.code(),
            featherstore_core::ErrorCode::NotFound,
            "{backend}"
        );
        // Deleting the set forgets its versions: a new set of the name starts at 1.
        store.delete("s").unwrap();
        store.create(spec(V1)).unwrap();
        assert_eq!(store.versions("s").unwrap().len(), 1, "{backend}");
    }
}

#[test]
fn refused_changes_leave_the_set_as_it_was() {
    for (backend, open_backend) in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), open_backend);
        store.create(spec(V1)).unwrap();
        let refused = [
            (
                V1.replace(r#"{"name": "n", "type": "int64"}, "#, ""),
                "\"n\" would be removed or renamed",
            ),
            (
                V1.replace("\"n\"", "\"m\""),
                "\"n\" would be removed or renamed",
            ),
            (V1.replace("int64", "int32"), "the type of feature \"n\""),
            (
                V1.replace("\"string\"", "\"int64\""),
                "the entity would change",
            ),
            (
                V1.replace("\"features\"", "\"timestamp\": \"ts\", \"features\""),
                "the timestamp column would change",
            ),
        ];
        for (wanted, message) in refused {
            let err = store.update(spec(&wanted)).unwrap_err();
            assert_eq!(err.code(), featherstore_core::ErrorCode::InvalidArgument);
            assert!(err.to_string().contains(message), "{backend}: {err}");
            assert!(
                err.to_string().contains("create a new feature set"),
                "{err}"
            );
        }
        assert_eq!(store.get("s").unwrap().spec.version, Some(1), "{backend}");
        assert_eq!(store.versions("s").unwrap().len(), 1, "{backend}");
        let missing = store
            .update(spec(&V1.replace("\"s\"", "\"t\"")))
            .unwrap_err();
        assert_eq!(missing.code(), featherstore_core::ErrorCode::NotFound);
    }
}

/// Writers ingest old- and new-shaped batches and readers read every path while the set is
/// updated twice: no error, no batch lost, every read in one version's schema.
#[test]
fn ingest_and_reads_run_through_an_update() {
    for (backend, open_backend) in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(open(dir.path(), open_backend));
        store.create(spec(V1)).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..2)
            .map(|w| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let mut stored = 0;
                    for i in 0..60 {
                        let id = format!("w{w}_{i}");
                        // Once version 2 is in, some batches carry `x`.
                        let with_x =
                            i % 2 == 1 && store.get("s").unwrap().spec.feature("x").is_some();
                        store
                            .ingest("s", &rows(&[(id.as_str(), i, i)], with_x))
                            .unwrap_or_else(|e| panic!("{backend}: ingest: {e}"));
                        stored += 1;
                    }
                    stored
                })
            })
            .collect();
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let store = store.clone();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut reads = 0;
                    while !stop.load(Ordering::Acquire) {
                        let set = store.get("s").unwrap();
                        let ticket: HistoryTicket =
                            serde_json::from_value(serde_json::json!({"feature_set": "s"}))
                                .unwrap();
                        let (planned, query, view) = store.plan_history(&ticket).unwrap();
                        store
                            .scan_history(&planned, &query, &view, &mut |batch| {
                                assert_eq!(
                                    batch.schema(),
                                    planned.spec.projected_schema(&query.features, false)
                                );
                                Ok(())
                            })
                            .unwrap_or_else(|e| panic!("{backend}: history: {e}"));
                        let ticket = OnlineTicket {
                            feature_set: "s".into(),
                            entities: vec![serde_json::json!("w0_1")],
                            features: None,
                        };
                        let batch = store.online(&ticket).unwrap();
                        assert!(batch.num_columns() == 4 || batch.num_columns() == 6);
                        drop(set);
                        reads += 1;
                    }
                    reads
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(50));
        store.update(spec(V2)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut v3 = spec(V2);
        v3.tags.insert("k".into(), "v".into());
        store.update(v3).unwrap();
        let stored: usize = writers.into_iter().map(|w| w.join().unwrap()).sum();
        stop.store(true, Ordering::Release);
        let reads: usize = readers.into_iter().map(|r| r.join().unwrap()).sum();
        assert!(reads > 0, "{backend}");
        assert_eq!(stored, 120, "{backend}");
        assert_eq!(history(&store).len(), 120, "{backend}: a batch was lost");
        let odd_with_x = history(&store)
            .iter()
            .filter(|(_, _, x)| x.is_some())
            .count();
        assert!(odd_with_x <= 60, "{backend}");
        let ids: Vec<String> = (0..60).map(|i| format!("w1_{i}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let values = online(&store, &ids);
        assert!(
            values.iter().all(|(_, n, _)| n.is_some()),
            "{backend}: online lost a value"
        );
    }
}
