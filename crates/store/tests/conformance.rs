//! The offline store contract, run against every backend: the same cases, the same answers.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use featherstore_core::coerce::coerce_batch;
use featherstore_core::{EntityKeys, FeatureSetSpec};
use featherstore_store::duckdb::DuckDbOptions;
use featherstore_store::parquet::ParquetOptions;
use featherstore_store::{HistoryQuery, OfflineStore, SetStats};

mod common;
use common::{open_delta, open_duckdb_with, open_parquet_with, Open};

fn open_duckdb(dir: &Path) -> Box<dyn OfflineStore> {
    let options = DuckDbOptions {
        apply_rows: 3, // small, so cases cover the tables and the log together
        ..DuckDbOptions::default()
    };
    open_duckdb_with(dir, options)
}

fn open_parquet(dir: &Path) -> Box<dyn OfflineStore> {
    let options = ParquetOptions {
        flush_rows: 3, // small, so cases cover flushed files and the log together
        ..ParquetOptions::default()
    };
    open_parquet_with(dir, options)
}

const BACKENDS: [(&str, Open); 3] = [
    ("duckdb", open_duckdb),
    ("parquet", open_parquet),
    ("delta", open_delta),
];

fn spec() -> FeatureSetSpec {
    let mut spec = FeatureSetSpec::from_json(
        br#"{"name": "s", "entity": {"name": "id", "type": "string"},
             "features": [{"name": "n", "type": "int64"}, {"name": "e", "type": "float64[2]"}]}"#,
    )
    .unwrap();
    spec.version = Some(1);
    spec
}

/// Canonical rows (id, n, seconds).
fn batch(rows: &[(&str, Option<i64>, i64)]) -> RecordBatch {
    let input = RecordBatch::try_from_iter(vec![
        (
            "id",
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
        ),
        (
            "n",
            Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.1))) as ArrayRef,
        ),
        (
            "event_timestamp",
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                rows.iter().map(|r| r.2 * 1_000_000),
            )) as ArrayRef,
        ),
    ])
    .unwrap();
    coerce_batch(&spec(), &input).unwrap()
}

fn collect(
    run: impl FnOnce(&mut dyn FnMut(RecordBatch) -> featherstore_store::Result<()>),
) -> Vec<(String, Option<i64>, i64)> {
    let mut rows = Vec::new();
    run(&mut |b: RecordBatch| {
        let ts_column = b.num_columns() - 1;
        let ids = b.column(0).as_string::<i32>();
        let times = b
            .column(ts_column)
            .as_primitive::<TimestampMicrosecondType>();
        for i in 0..b.num_rows() {
            let n = if b.num_columns() > 2 {
                let n = b.column(1).as_primitive::<Int64Type>();
                n.is_valid(i).then(|| n.value(i))
            } else {
                None
            };
            rows.push((ids.value(i).to_string(), n, times.value(i) / 1_000_000));
        }
        Ok(())
    });
    rows
}

fn scan(store: &dyn OfflineStore, query: HistoryQuery) -> Vec<(String, Option<i64>, i64)> {
    collect(|sink| store.scan(&spec(), &query, sink).unwrap())
}

fn latest(store: &dyn OfflineStore) -> Vec<(String, Option<i64>, i64)> {
    let mut rows = collect(|sink| store.latest(&spec(), sink).unwrap());
    rows.sort();
    rows
}

fn all() -> HistoryQuery {
    HistoryQuery {
        features: vec![0],
        ..HistoryQuery::default()
    }
}

fn row(id: &str, n: Option<i64>, t: i64) -> (String, Option<i64>, i64) {
    (id.to_string(), n, t)
}

#[test]
fn append_scan_latest_stats_and_reopen() {
    for (name, open) in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path());
            store.create(&spec()).unwrap();
            assert_eq!(store.stats(&spec()).unwrap(), SetStats::default(), "{name}");
            store
                .append(
                    &spec(),
                    &batch(&[("b", Some(1), 10), ("a", Some(2), 20), ("a", None, 5)]),
                )
                .unwrap();
            store
                .append(&spec(), &batch(&[("a", Some(3), 20), ("b", Some(4), 9)]))
                .unwrap();
            store.append(&spec(), &batch(&[])).unwrap();
        }
        let store = open(dir.path());
        assert_eq!(
            store.load_specs().unwrap(),
            vec![spec()],
            "{name}: spec persisted"
        );
        let expected_history = vec![
            row("a", None, 5),
            row("a", Some(2), 20),
            row("a", Some(3), 20), // tie on event time: ingest order
            row("b", Some(4), 9),
            row("b", Some(1), 10),
        ];
        assert_eq!(scan(store.as_ref(), all()), expected_history, "{name}");
        assert_eq!(
            latest(store.as_ref()),
            vec![row("a", Some(3), 20), row("b", Some(1), 10)],
            "{name}"
        );
        assert_eq!(
            store.stats(&spec()).unwrap(),
            SetStats {
                rows: 5,
                entities: 2,
                latest_event_timestamp: Some(20_000_000)
            },
            "{name}"
        );
        // After reopening, appends continue the ingest order.
        store
            .append(&spec(), &batch(&[("a", Some(7), 20)]))
            .unwrap();
        assert_eq!(latest(store.as_ref())[0], row("a", Some(7), 20), "{name}");
    }
}

#[test]
fn history_filters_by_entity_and_half_open_range() {
    for (name, open) in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.create(&spec()).unwrap();
        store
            .append(
                &spec(),
                &batch(&[
                    ("a", Some(1), 10),
                    ("a", Some(2), 20),
                    ("b", Some(3), 10),
                    ("c'x", Some(4), 15),
                ]),
            )
            .unwrap();
        let query = HistoryQuery {
            entities: Some(EntityKeys::String(vec![
                "a".into(),
                "c'x".into(),
                "zz".into(),
            ])),
            start: Some(10_000_000),
            end: Some(20_000_000),
            features: vec![],
        };
        assert_eq!(
            scan(store.as_ref(), query),
            vec![row("a", None, 10), row("c'x", None, 15)],
            "{name}"
        );
        let none = HistoryQuery {
            entities: Some(EntityKeys::String(vec![])),
            ..all()
        };
        assert!(scan(store.as_ref(), none).is_empty(), "{name}");
    }
}

#[test]
fn a_failed_append_stores_nothing_and_delete_removes_everything() {
    for (name, open) in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.create(&spec()).unwrap();
        store
            .append(&spec(), &batch(&[("a", Some(1), 10)]))
            .unwrap();
        // A batch that does not have the canonical schema fails inside the backend.
        let wrong = RecordBatch::try_from_iter(vec![(
            "id",
            Arc::new(StringArray::from(vec!["x", "y"])) as ArrayRef,
        )])
        .unwrap();
        assert!(store.append(&spec(), &wrong).is_err(), "{name}");
        assert_eq!(
            scan(store.as_ref(), all()),
            vec![row("a", Some(1), 10)],
            "{name}"
        );

        store.delete("s").unwrap();
        assert!(store.load_specs().unwrap().is_empty(), "{name}");
        drop(store);
        let store = open(dir.path());
        assert!(
            store.load_specs().unwrap().is_empty(),
            "{name}: deletion is durable"
        );
        store.create(&spec()).unwrap();
        assert!(
            scan(store.as_ref(), all()).is_empty(),
            "{name}: a new set of the same name starts empty"
        );
    }
}
