//! What only the inside of the backend can check: rows across the apply boundary, the log
//! after restarts, deletes and updates, and the column types of the memtable side.

use std::time::Duration;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use featherstore_core::coerce::coerce_batch;
use featherstore_testkit::fixtures::every_type_spec;

use super::*;
use crate::wal::test_rows::id_rows;

fn spec() -> FeatureSetSpec {
    FeatureSetSpec::from_json(
        br#"{"name": "s", "entity": {"name": "id", "type": "string"},
             "features": [{"name": "n", "type": "int64"}]}"#,
    )
    .unwrap()
}

fn batch(ids: &[&str]) -> RecordBatch {
    id_rows(&spec(), ids)
}

/// Applies only when told to (`DuckDbStore::apply`).
fn open(path: &Path) -> DuckDbStore {
    let options = DuckDbOptions {
        apply_rows: usize::MAX / 8,
        apply_interval: Duration::from_secs(3600),
    };
    let engine = EngineSettings {
        connections: 2,
        ..EngineSettings::default()
    };
    DuckDbStore::open_with(path, options, &engine).unwrap()
}

/// `(id, _seq)` of every row `relation` reads, by `_seq`.
fn rows_of(store: &DuckDbStore, relation: &str) -> Vec<(String, i64)> {
    let conn = store.inner.pool.get(Purpose::Read).unwrap();
    let mut statement = conn
        .prepare(&format!("SELECT id, _seq FROM {relation} ORDER BY _seq"))
        .unwrap();
    statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<std::result::Result<_, _>>()
        .unwrap()
}

fn ids(store: &DuckDbStore) -> Vec<String> {
    let set = store.inner.set("s").unwrap();
    let (relation, _memtables) = set.relation();
    rows_of(store, &relation).into_iter().map(|r| r.0).collect()
}

/// Rows in the table itself, not counting the memtable.
fn in_table(store: &DuckDbStore) -> usize {
    rows_of(store, "fs_s").len()
}

fn log_segments(path: &Path) -> usize {
    let mut dir = path.as_os_str().to_owned();
    dir.push(".log/s");
    list_dir(Path::new(&dir)).unwrap().len()
}

#[test]
fn rows_are_read_once_whether_a_relation_is_made_before_or_after_an_apply() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("features.db");
    let store = open(&path);
    store.create(&spec()).unwrap();
    store.append(&spec(), &batch(&["a", "b"])).unwrap();
    store.apply().unwrap();
    store.append(&spec(), &batch(&["c"])).unwrap();
    let set = store.inner.set("s").unwrap();
    // Made before the apply, read after it: the memtable's rows are in the table by then.
    let (early, held) = set.relation();
    assert!(held.is_some(), "a row waits in the memtable");
    assert_eq!(in_table(&store), 2);
    store.apply().unwrap();
    assert_eq!(in_table(&store), 3);
    let expected = vec![("a".into(), 0), ("b".into(), 1), ("c".into(), 2)];
    assert_eq!(rows_of(&store, &early), expected);
    let (now, held) = set.relation();
    assert!(held.is_none(), "every row is in the table");
    assert_eq!(rows_of(&store, &now), expected);
    assert_eq!(log_segments(&path), 0, "applied segments are removed");
}

#[test]
fn logged_rows_survive_a_restart_and_applied_ones_are_not_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("features.db");
    {
        let store = open(&path);
        store.create(&spec()).unwrap();
        store.append(&spec(), &batch(&["a"])).unwrap();
        store.apply().unwrap();
        store.append(&spec(), &batch(&["b"])).unwrap();
        // Dropped without applying "b": only the log has it.
    }
    let store = open(&path);
    assert_eq!(in_table(&store), 1);
    assert_eq!(ids(&store), ["a", "b"]);
    store.append(&spec(), &batch(&["c"])).unwrap();
    store.apply().unwrap();
    drop(store);
    let store = open(&path);
    assert_eq!(ids(&store), ["a", "b", "c"]);
    assert_eq!(in_table(&store), 3, "nothing is applied twice");
    let seqs: Vec<i64> = rows_of(&store, "fs_s").iter().map(|r| r.1).collect();
    assert_eq!(seqs, [0, 1, 2]);
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir(to).unwrap();
    for entry in list_dir(from).unwrap() {
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn a_log_without_a_set_is_removed_and_a_new_set_of_its_name_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("features.db");
    let log_dir = {
        let mut dir = path.as_os_str().to_owned();
        dir.push(".log/s");
        PathBuf::from(dir)
    };
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    {
        let store = open(&path);
        store.create(&spec()).unwrap();
        store.append(&spec(), &batch(&["old"])).unwrap();
        copy_dir(&log_dir, &first);
        copy_dir(&log_dir, &second);
        store.delete("s").unwrap();
        assert!(!log_dir.exists());
    }
    // As if the delete had committed and crashed before removing the log.
    fs::rename(&first, &log_dir).unwrap();
    let store = open(&path);
    assert!(!log_dir.exists(), "removed at open: no set has it");
    // And if it is there when a set of that name is created, it is not the new set's.
    fs::rename(&second, &log_dir).unwrap();
    store.create(&spec()).unwrap();
    assert!(
        ids(&store).is_empty(),
        "the new set has no rows of the old one"
    );
    store.append(&spec(), &batch(&["new"])).unwrap();
    drop(store);
    let store = open(&path);
    assert_eq!(ids(&store), ["new"]);
}

#[test]
fn rows_logged_before_an_update_are_applied_under_their_own_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("features.db");
    let v1 = spec();
    let mut v2 = FeatureSetSpec::from_json(
        br#"{"name": "s", "entity": {"name": "id", "type": "string"},
             "features": [{"name": "n", "type": "int64"}, {"name": "m", "type": "int64"}]}"#,
    )
    .unwrap();
    v2.version = Some(2);
    let store = open(&path);
    store.create(&v1).unwrap();
    store.append(&v1, &batch(&["a"])).unwrap();
    store.update(&v1, &v2).unwrap();
    let input = RecordBatch::try_from_iter(vec![
        ("id", Arc::new(StringArray::from(vec!["b"])) as ArrayRef),
        ("n", Arc::new(Int64Array::from(vec![1]))),
        ("m", Arc::new(Int64Array::from(vec![7]))),
        (
            "event_timestamp",
            Arc::new(TimestampMicrosecondArray::from(vec![5])),
        ),
    ])
    .unwrap();
    store
        .append(&v2, &coerce_batch(&v2, &input).unwrap())
        .unwrap();
    let m_values = |store: &DuckDbStore| -> Vec<Option<i64>> {
        let set = store.inner.set("s").unwrap();
        let (relation, _memtables) = set.relation();
        let conn = store.inner.pool.get(Purpose::Read).unwrap();
        let mut statement = conn
            .prepare(&format!("SELECT m FROM {relation} ORDER BY _seq"))
            .unwrap();
        statement
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<std::result::Result<_, _>>()
            .unwrap()
    };
    assert_eq!(m_values(&store), [None, Some(7)]);
    store.apply().unwrap();
    assert_eq!(in_table(&store), 2);
    assert_eq!(m_values(&store), [None, Some(7)]);
    drop(store);
    assert_eq!(m_values(&open(&path)), [None, Some(7)]);
}

#[test]
fn the_memtable_side_reads_with_the_table_column_types() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("features.db"));
    let spec = every_type_spec("s", "int64");
    store.create(&spec).unwrap();
    let conn = store.inner.pool.get(Purpose::Read).unwrap();
    let types = |sql: &str| -> Vec<(String, String)> {
        let mut statement = conn.prepare(&format!("DESCRIBE {sql}")).unwrap();
        statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<std::result::Result<_, _>>()
            .unwrap()
    };
    let table = types("SELECT * FROM fs_s");
    let memtable = MemTable::new(&spec);
    let schema = memtable.schema().clone();
    // One row: zero in the key, the times and `_seq`, null in every feature.
    let row = schema
        .fields()
        .iter()
        .map(|f| match f.is_nullable() {
            true => arrow::array::new_null_array(f.data_type(), 1),
            false => arrow::compute::cast(&Int64Array::from(vec![0]), f.data_type()).unwrap(),
        })
        .collect();
    memtable.push(RecordBatch::try_new(schema, row).unwrap());
    assert_eq!(types(&memtable.select_now().unwrap()), table);
}
