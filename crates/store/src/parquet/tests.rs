//! What only the inside of the backend can check: failures between the log and the memtable,
//! and the types DuckDB reads back from the files.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use featherstore_core::FeatureSetSpec;

use super::*;
use crate::wal::test_rows::id_rows;

fn spec() -> FeatureSetSpec {
    FeatureSetSpec::from_json(
        br#"{"name": "s", "entity": {"name": "id", "type": "string"},
             "features": [{"name": "n", "type": "int64"}, {"name": "v", "type": "float32[2]"},
                          {"name": "at", "type": "timestamp"}, {"name": "day", "type": "date"}]}"#,
    )
    .unwrap()
}

fn batch(ids: &[&str]) -> RecordBatch {
    id_rows(&spec(), ids)
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
fn a_batch_whose_publication_fails_is_taken_back_out_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.create(&spec()).unwrap();
        store.append(&spec(), &batch(&["a"])).unwrap();
        // Two batches reach the log, then their publication (to a remote online store) fails.
        let failed =
            store.append_publishing(&spec(), &[batch(&["b"]), batch(&["c"])], 1, &mut || {
                Err(Error::Corrupt("the online store is unreachable".into()))
            });
        assert!(failed.is_err());
        store.append(&spec(), &batch(&["d"])).unwrap();
        assert_eq!(count(&store), 2);
    }
    let store = open(dir.path());
    assert_eq!(count(&store), 2, "neither failed batch is in the log");
}

/// The ids of the memtable's rows that a relation made now reads, in order.
fn memtable_ids(store: &ParquetStore, relation: &str) -> Vec<String> {
    let conn = store.inner.engine.pool.get(Purpose::Read).unwrap();
    let mut statement = conn
        .prepare(&format!("SELECT id FROM {relation} ORDER BY _seq"))
        .unwrap();
    statement
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn the_memtable_merges_runs_of_small_batches_and_relations_keep_their_rows() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create(&spec()).unwrap();
    let set = store.inner.set("s").unwrap();
    let relation_now = || {
        let snapshot = Arc::clone(&set.snapshot.read());
        snapshot.relation(&spec(), &set, true).unwrap()
    };
    let ids: Vec<String> = (0..200).map(|i| format!("e{i}")).collect();
    let mut early = None;
    for (i, id) in ids.iter().enumerate() {
        store.append(&spec(), &batch(&[id.as_str()])).unwrap();
        if i == 99 {
            early = Some(relation_now());
        }
    }
    // 200 one-row appends, a run of 64 small batches merged into one each time (the merged
    // batch, still small, joins the next run): 1 + 10 batches.
    let table = set.ingest.lock().table.clone();
    assert_eq!(table.batches(), 11);
    assert_eq!(table.rows(), 200);
    assert_eq!(memtable_ids(&store, &relation_now()), ids);
    // A relation made after the 100th append reads those 100 rows, merged or not since.
    assert_eq!(memtable_ids(&store, &early.unwrap()), ids[..100].to_vec());
    // Counting reads no column of the memtable.
    let conn = store.inner.engine.pool.get(Purpose::Read).unwrap();
    let rows: i64 = conn
        .query_row(
            &format!("SELECT count(*) FROM {}", relation_now()),
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, 200);
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
    let files = types(&rows::select_rows(&spec(), &paths, None, &[]));
    let table = types(&rows::select_rows(&spec(), &[], None, &snapshot.tables));
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
