//! What only the inside of the backend can check: failures between the log and the memtable,
//! and the types DuckDB reads back from the files.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use featherstore_core::coerce::coerce_batch;
use featherstore_core::FeatureSetSpec;

use super::*;

fn spec() -> FeatureSetSpec {
    FeatureSetSpec::from_json(
        br#"{"name": "s", "entity": {"name": "id", "type": "string"},
             "features": [{"name": "n", "type": "int64"}, {"name": "v", "type": "float32[2]"},
                          {"name": "at", "type": "timestamp"}, {"name": "day", "type": "date"}]}"#,
    )
    .unwrap()
}

fn batch(ids: &[&str]) -> RecordBatch {
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
    coerce_batch(&spec(), &input).unwrap()
}

fn open(dir: &Path) -> ParquetStore {
    let options = ParquetOptions {
        flush_interval: Duration::from_secs(3600),
        ..ParquetOptions::default()
    };
    let engine = EngineSettings {
        connections: 2,
        ..EngineSettings::default()
    };
    ParquetStore::open(dir, options, &engine).unwrap()
}

fn count(store: &ParquetStore) -> u64 {
    store.stats(&spec()).unwrap().rows
}

#[test]
fn a_batch_the_memtable_refuses_is_taken_back_out_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.create(&spec()).unwrap();
        store.append(&spec(), &batch(&["a"])).unwrap();
        let set = store.inner.set("s").unwrap();
        let table = set.ingest.lock().table.name.clone();
        // The memtable insert now fails, after the batch reached the log.
        store
            .inner
            .engine
            .pool
            .get(Purpose::Write)
            .unwrap()
            .execute_batch(&format!(
                "ALTER TABLE {} ADD COLUMN extra INTEGER",
                sql::ident(&table)
            ))
            .unwrap();
        assert!(store.append(&spec(), &batch(&["b", "c"])).is_err());
        store
            .inner
            .engine
            .pool
            .get(Purpose::Write)
            .unwrap()
            .execute_batch(&format!(
                "ALTER TABLE {} DROP COLUMN extra",
                sql::ident(&table)
            ))
            .unwrap();
        store.append(&spec(), &batch(&["d"])).unwrap();
        assert_eq!(count(&store), 2);
    }
    let store = open(dir.path());
    assert_eq!(count(&store), 2, "the failed batch is not in the log");
}

#[test]
fn duckdb_reads_the_files_with_the_memtable_column_types() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create(&spec()).unwrap();
    store.append(&spec(), &batch(&["a", "b"])).unwrap();
    store.flush().unwrap();
    store.append(&spec(), &batch(&["c"])).unwrap();
    let set = store.inner.set("s").unwrap();
    let snapshot = Arc::clone(&set.snapshot.read());
    let conn = store.inner.engine.pool.get(Purpose::Write).unwrap();
    let types = |sql: &str| -> Vec<(String, String)> {
        let mut statement = conn.prepare(&format!("DESCRIBE {sql}")).unwrap();
        statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let paths: Vec<&str> = snapshot.files.iter().map(|f| f.path.as_str()).collect();
    let files = types(&memtable::select_rows(&spec(), &paths, None, &[]));
    let table = types(&memtable::select_rows(&spec(), &[], None, &snapshot.tables));
    assert_eq!(files, table);
    let typed: Vec<&str> = files.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        typed,
        [
            "VARCHAR",
            "BIGINT",
            "FLOAT[2]",
            "TIMESTAMP",
            "DATE",
            "TIMESTAMP",
            "TIMESTAMP",
            "BIGINT"
        ]
    );
    // Without the cast, Parquet's lists come back as variable-length lists.
    let list = format!("'{}'", paths[0]);
    let raw = types(&format!(
        "SELECT * FROM read_parquet([{list}], hive_partitioning = false)"
    ));
    assert_eq!(raw[2].1, "FLOAT[]");
}
