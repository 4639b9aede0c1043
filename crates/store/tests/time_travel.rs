//! Ingest times (an extension of PROTOCOL.md), on both backends: late-arriving rows are
//! hidden from joins as of ingest time, history as known at an instant, ingest times that
//! never go back (clock or restart), and data directories written before ingest times.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit, TimestampMicrosecondType};
use featherstore_core::time::now_micros;
use featherstore_core::{FeatureSetSpec, HistoryTicket, TrainingDataCommand};
use featherstore_store::delta::{DeltaOptions, DeltaStore};
use featherstore_store::duckdb::DuckDbStore;
use featherstore_store::parquet::{ParquetOptions, ParquetStore};
use featherstore_store::query::EngineSettings;
use featherstore_store::{FeatureStore, Limits, OfflineStore};

const SECOND: i64 = 1_000_000;
const SPEC: &str = r#"{"name": "s", "entity": {"name": "id", "type": "string"},
    "features": [{"name": "n", "type": "int64"}]}"#;

fn spec() -> FeatureSetSpec {
    FeatureSetSpec::from_json(SPEC.as_bytes()).unwrap()
}

const BACKENDS: [&str; 3] = ["duckdb", "parquet", "delta"];

fn offline(backend: &str, dir: &Path) -> Box<dyn OfflineStore> {
    let engine = EngineSettings {
        connections: 2,
        ..EngineSettings::default()
    };
    match backend {
        "duckdb" => Box::new(DuckDbStore::open(&dir.join("features.db"), &engine).unwrap()),
        "delta" => {
            let uri = format!("file://{}", dir.join("delta").display());
            Box::new(DeltaStore::open(DeltaOptions::new(uri, dir.join("cache")), &engine).unwrap())
        }
        _ => Box::new(
            ParquetStore::open(&dir.join("parquet"), ParquetOptions::default(), &engine).unwrap(),
        ),
    }
}

fn open(backend: &str, dir: &Path) -> FeatureStore {
    FeatureStore::open(offline(backend, dir), Limits::default(), dir.join("tmp")).unwrap()
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

/// History of the set with ingest times: (n, ingested_at) in history order.
fn history(store: &FeatureStore, ingested_before: Option<i64>) -> Vec<(i64, i64)> {
    let ticket = serde_json::json!({
        "feature_set": "s",
        "with_ingest_time": true,
        "ingested_before": ingested_before.map(featherstore_core::time::format_timestamp),
    });
    let ticket = HistoryTicket::from_json(ticket.to_string().as_bytes()).unwrap();
    let (set, query, view) = store.plan_history(&ticket).unwrap();
    let mut rows = Vec::new();
    store
        .scan_history(&set, &query, &view, &mut |batch| {
            assert_eq!(batch.schema().field(3).name(), "ingested_at");
            let n = batch.column(1).as_primitive::<Int64Type>();
            let at = batch.column(3).as_primitive::<TimestampMicrosecondType>();
            rows.extend((0..batch.num_rows()).map(|i| (n.value(i), at.value(i))));
            Ok(())
        })
        .unwrap();
    rows
}

/// The value of `n` joined for entity "a" at `t`, as of `as_of`.
fn joined(store: &FeatureStore, t: i64, as_of: &str) -> Option<i64> {
    let command =
        format!(r#"{{"type": "training_data", "features": ["s:n"], "as_of": "{as_of}"}}"#);
    let command = TrainingDataCommand::from_json(command.as_bytes()).unwrap();
    let rows = RecordBatch::try_from_iter(vec![
        ("id", Arc::new(StringArray::from(vec!["a"])) as ArrayRef),
        (
            "event_timestamp",
            Arc::new(TimestampMicrosecondArray::from(vec![t])) as ArrayRef,
        ),
    ])
    .unwrap();
    let plan = store.plan_training(&command, rows.schema()).unwrap();
    let mut out = Vec::new();
    store
        .training_data(&plan, &mut std::iter::once(Ok(rows)), &mut |b| {
            out.push(b);
            Ok(())
        })
        .unwrap();
    let n = out[0].column(2).as_primitive::<Int64Type>();
    n.is_valid(0).then(|| n.value(0))
}

#[test]
fn a_late_row_is_hidden_as_of_ingest_time_and_from_history_known_before_it() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let store = open(backend, dir.path());
        store.create(spec()).unwrap();
        let start = now_micros();
        store
            .ingest("s", &batch(&[("a", 1, start - 60 * SECOND)]))
            .unwrap();
        // The real clock: t is after the first batch's acknowledgement, before the late one.
        std::thread::sleep(Duration::from_millis(5));
        let t = now_micros();
        std::thread::sleep(Duration::from_millis(5));
        // Event time before t (so before the training row), ingested after it.
        store
            .ingest("s", &batch(&[("a", 2, start - 30 * SECOND)]))
            .unwrap();

        assert_eq!(joined(&store, t, "event_time"), Some(2), "{backend}");
        assert_eq!(joined(&store, t, "ingest_time"), Some(1), "{backend}");
        let later = now_micros();
        assert_eq!(joined(&store, later, "ingest_time"), Some(2), "{backend}");
        // Before the first ingest, nothing was known.
        assert_eq!(joined(&store, start - 1, "ingest_time"), None, "{backend}");
        assert_eq!(
            joined(&store, start - 1, "event_time"),
            Some(2),
            "{backend}"
        );

        let all = history(&store, None);
        assert_eq!(all.len(), 2, "{backend}");
        assert!(
            all[0].1 >= start && all[0].1 < t && all[1].1 > t,
            "{backend}: {all:?}"
        );
        assert_eq!(history(&store, Some(t)), vec![all[0]], "{backend}");
        assert_eq!(
            history(&store, Some(all[1].1)),
            vec![all[0]],
            "{backend}: strictly before"
        );
        assert_eq!(history(&store, Some(start)), vec![], "{backend}");
    }
}

#[test]
fn ingest_times_never_go_back_with_the_clock_or_across_a_restart() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let future = now_micros() + 3_600 * SECOND;
        {
            let store = open(backend, dir.path());
            store.create(spec()).unwrap();
            store.set_clock(Arc::new(move || future));
            store.ingest("s", &batch(&[("a", 1, 0)])).unwrap();
            store.set_clock(Arc::new(move || future - 10 * SECOND));
            store.ingest("s", &batch(&[("a", 2, 0)])).unwrap();
            store.close().unwrap();
        }
        // Restarted with a clock an hour behind the stored times (the real one).
        let store = open(backend, dir.path());
        store.ingest("s", &batch(&[("a", 3, 0)])).unwrap();
        let times: Vec<i64> = history(&store, None)
            .into_iter()
            .map(|(_, at)| at)
            .collect();
        assert_eq!(times, [future, future, future], "{backend}");
    }
}

/// A DuckDB database as versions before ingest times wrote it: no `_ingested_at` column.
fn write_old_duckdb(dir: &Path) {
    let conn = duckdb::Connection::open(dir.join("features.db")).unwrap();
    let spec = serde_json::to_string(&spec()).unwrap();
    conn.execute_batch(&format!(
        "CREATE TABLE featherstore_specs (name VARCHAR PRIMARY KEY, spec VARCHAR NOT NULL);
         INSERT INTO featherstore_specs VALUES ('s', '{spec}');
         CREATE TABLE fs_s (id VARCHAR NOT NULL, n BIGINT, event_timestamp TIMESTAMP NOT NULL, _seq BIGINT NOT NULL);
         INSERT INTO fs_s VALUES ('a', 1, make_timestamp(0), 0), ('a', 2, make_timestamp(1000000), 1);"
    ))
    .unwrap();
}

/// A Parquet set as versions before ingest times wrote it: a data file and a log segment
/// without `_ingested_at`, and a format 1 manifest.
fn write_old_parquet(dir: &Path) {
    let set = dir.join("parquet").join("s");
    std::fs::create_dir_all(set.join("_log")).unwrap();
    std::fs::create_dir_all(set.join("date=1970-01-01")).unwrap();
    std::fs::write(set.join("_spec.json"), serde_json::to_vec(&spec()).unwrap()).unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("n", DataType::Int64, true),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        Field::new("_seq", DataType::Int64, false),
    ]));
    let rows = |n: i64, seq: i64| {
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec!["a"])),
                Arc::new(Int64Array::from(vec![n])),
                Arc::new(TimestampMicrosecondArray::from(vec![n * SECOND])),
                Arc::new(Int64Array::from(vec![seq])),
            ],
        )
        .unwrap()
    };
    let file = std::fs::File::create(set.join("date=1970-01-01/part-00000000.parquet")).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None).unwrap();
    writer.write(&rows(1, 0)).unwrap();
    writer.close().unwrap();
    std::fs::write(
        set.join("_manifest.json"),
        r#"{"format": 1, "flushed_seq": 0, "next_file": 1,
            "files": [{"path": "date=1970-01-01/part-00000000.parquet", "rows": 1}]}"#,
    )
    .unwrap();
    let segment = std::fs::File::create(set.join("_log/00000000000000000000.arrows")).unwrap();
    let mut log = arrow::ipc::writer::StreamWriter::try_new(segment, &schema).unwrap();
    log.write(&rows(2, 1)).unwrap();
    log.flush().unwrap();
}

#[test]
fn rows_stored_before_ingest_times_read_as_ingested_at_the_first_open() {
    // Only these two stored rows before ingest times existed; every Delta table has them.
    for backend in ["duckdb", "parquet"] {
        let dir = tempfile::tempdir().unwrap();
        match backend {
            "duckdb" => write_old_duckdb(dir.path()),
            _ => write_old_parquet(dir.path()),
        }
        let before = now_micros();
        let store = open(backend, dir.path());
        let after = now_micros();
        let old = history(&store, None);
        assert_eq!(
            old.iter().map(|r| r.0).collect::<Vec<_>>(),
            [1, 2],
            "{backend}"
        );
        let first_open = old[0].1;
        assert!(
            old.iter().all(|r| r.1 == first_open) && (before..=after).contains(&first_open),
            "{backend}: {old:?}"
        );
        // Known from the first open on, never before: no leak into earlier training rows.
        assert_eq!(
            joined(&store, first_open - 1, "ingest_time"),
            None,
            "{backend}"
        );
        assert_eq!(
            joined(&store, first_open, "ingest_time"),
            Some(2),
            "{backend}"
        );
        assert_eq!(
            joined(&store, first_open - 1, "event_time"),
            Some(2),
            "{backend}"
        );
        store.ingest("s", &batch(&[("a", 3, 10 * SECOND)])).unwrap();
        store.close().unwrap();
        drop(store);

        // Recorded once: a later open reads the same time, the new row keeps its own.
        let store = open(backend, dir.path());
        let again = history(&store, None);
        assert_eq!(&again[..2], &old[..], "{backend}");
        assert!(again[2].1 >= first_open, "{backend}: {again:?}");
    }
}
