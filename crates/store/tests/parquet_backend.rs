//! Behaviour specific to the Parquet backend: the log, flushes, compaction, the file layout
//! and crash recovery. (The contract shared with the DuckDB backend is in conformance.rs.)

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    ArrayRef, AsArray, BinaryArray, BooleanArray, Date32Array, FixedSizeListArray, Float32Array,
    Float64Array, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::compute::concat_batches;
use arrow::datatypes::{Float32Type, Float64Type, Int64Type, TimestampMicrosecondType};
use featherstore_core::coerce::coerce_batch;
use featherstore_core::{ErrorCode, FeatureSetSpec};
use featherstore_store::parquet::{Compression, ParquetOptions, ParquetStore};
use featherstore_store::query::EngineSettings;
use featherstore_store::{Error, HistoryQuery, OfflineStore, SetStats};
use featherstore_testkit::fixtures::every_type_spec;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::reader::{FileReader, SerializedFileReader};

const DAY: i64 = 86_400_000_000;
/// 2026-01-01T00:00:00Z in microseconds.
const JAN_1: i64 = 1_767_225_600_000_000;

fn engine() -> EngineSettings {
    EngineSettings {
        connections: 2,
        ..EngineSettings::default()
    }
}

/// No background flush during a test unless it asks for one.
fn manual() -> ParquetOptions {
    ParquetOptions {
        flush_rows: 1_000_000,
        flush_interval: Duration::from_secs(3600),
        compact_min_files: 1_000,
        ..ParquetOptions::default()
    }
}

fn open(dir: &Path, options: ParquetOptions) -> ParquetStore {
    ParquetStore::open(dir, options, &engine()).unwrap()
}

/// A store in `dir` holding the set of [`spec`], empty.
fn open_with_set(dir: &Path, options: ParquetOptions) -> ParquetStore {
    let store = open(dir, options);
    store.create(&spec()).unwrap();
    store
}

fn spec() -> FeatureSetSpec {
    FeatureSetSpec::from_json(
        br#"{"name": "s", "entity": {"name": "id", "type": "string"},
             "features": [{"name": "n", "type": "int64"}]}"#,
    )
    .unwrap()
}

/// A canonical batch of (entity, event time µs, n).
fn batch<S: AsRef<str>>(rows: &[(S, i64, i64)]) -> RecordBatch {
    let input = RecordBatch::try_from_iter(vec![
        (
            "id",
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.0.as_ref()),
            )) as ArrayRef,
        ),
        (
            "event_timestamp",
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                rows.iter().map(|r| r.1),
            )),
        ),
        (
            "n",
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
        ),
    ])
    .unwrap();
    coerce_batch(&spec(), &input).unwrap()
}

type Row = (String, i64, i64);

fn rows_of(batch: &RecordBatch) -> Vec<Row> {
    let ids = batch.column(0).as_string::<i32>();
    let n = batch.column(1).as_primitive::<Int64Type>();
    let times = batch.column(2).as_primitive::<TimestampMicrosecondType>();
    (0..batch.num_rows())
        .map(|i| (ids.value(i).to_string(), times.value(i), n.value(i)))
        .collect()
}

fn history(store: &dyn OfflineStore) -> Vec<Row> {
    let mut rows = Vec::new();
    let query = HistoryQuery {
        features: vec![0],
        ..HistoryQuery::default()
    };
    store
        .scan(&spec(), &query, &mut |b| {
            rows.extend(rows_of(&b));
            Ok(())
        })
        .unwrap();
    rows
}

fn latest(store: &dyn OfflineStore) -> Vec<Row> {
    let mut rows = Vec::new();
    store
        .latest(&spec(), &mut |b| {
            rows.extend(rows_of(&b));
            Ok(())
        })
        .unwrap();
    rows.sort();
    rows
}

fn row(id: &str, t: i64, n: i64) -> Row {
    (id.to_string(), t, n)
}

/// Every file under `dir` whose name ends with `suffix`, sorted.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.to_string_lossy().ends_with(suffix) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Rows of one Parquet file as any reader sees them: entity, event time, `_seq`.
fn parquet_keys(path: &Path) -> Vec<(String, i64, i64)> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(fs::File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let mut keys = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let seq = batch
            .column(batch.num_columns() - 1)
            .as_primitive::<Int64Type>();
        for (i, (id, t, _)) in rows_of(&batch).into_iter().enumerate() {
            keys.push((id, t, seq.value(i)));
        }
    }
    keys
}

fn duckdb_count(files: &[PathBuf]) -> i64 {
    let list: Vec<String> = files.iter().map(|f| format!("'{}'", f.display())).collect();
    duckdb::Connection::open_in_memory()
        .unwrap()
        .query_row(
            &format!("SELECT count(*) FROM read_parquet([{}])", list.join(", ")),
            [],
            |r| r.get(0),
        )
        .unwrap()
}

#[test]
fn ties_go_to_the_later_append_across_log_memtable_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with_set(dir.path(), manual());
    store
        .append(&spec(), &batch(&[("a", 20, 1), ("b", 10, 2)]))
        .unwrap();
    store.flush().unwrap();
    // Same entity and event time as flushed rows: only ingest order tells them apart.
    store
        .append(&spec(), &batch(&[("a", 20, 3), ("b", 10, 4), ("a", 5, 5)]))
        .unwrap();
    let expected_history = vec![
        row("a", 5, 5),
        row("a", 20, 1),
        row("a", 20, 3),
        row("b", 10, 2),
        row("b", 10, 4),
    ];
    let expected_latest = vec![row("a", 20, 3), row("b", 10, 4)];
    assert_eq!(history(&store), expected_history);
    assert_eq!(latest(&store), expected_latest);
    assert_eq!(
        store.stats(&spec()).unwrap(),
        SetStats {
            rows: 5,
            entities: 2,
            latest_event_timestamp: Some(20)
        }
    );
    store.flush().unwrap();
    assert_eq!(history(&store), expected_history);
    assert_eq!(latest(&store), expected_latest);
}

#[test]
fn reopen_replays_the_log_then_reads_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open_with_set(dir.path(), manual());
        store
            .append(&spec(), &batch(&[("a", 1, 1), ("b", 1, 2)]))
            .unwrap();
        store.append(&spec(), &batch(&[("a", 1, 3)])).unwrap();
    }
    assert!(
        files(dir.path(), ".parquet").is_empty(),
        "nothing flushed on drop"
    );
    {
        let store = open(dir.path(), manual());
        assert_eq!(store.load_specs().unwrap(), vec![spec()]);
        assert_eq!(
            history(&store),
            vec![row("a", 1, 1), row("a", 1, 3), row("b", 1, 2)]
        );
        // Ingest order continues after the replayed rows.
        store.append(&spec(), &batch(&[("a", 1, 4)])).unwrap();
        assert_eq!(latest(&store), vec![row("a", 1, 4), row("b", 1, 2)]);
        store.flush().unwrap();
        assert!(
            files(&dir.path().join("s/_log"), ".arrows").is_empty(),
            "flushed log removed"
        );
    }
    let store = open(dir.path(), manual());
    assert_eq!(
        history(&store),
        vec![
            row("a", 1, 1),
            row("a", 1, 3),
            row("a", 1, 4),
            row("b", 1, 2)
        ]
    );
    store.append(&spec(), &batch(&[("b", 1, 5)])).unwrap();
    assert_eq!(latest(&store), vec![row("a", 1, 4), row("b", 1, 5)]);
}

/// Every value type, with nulls, for `n` rows spread over three days.
fn all_types_batch(n: i64) -> RecordBatch {
    let valid = |i: i64| i % 4 != 0;
    let opt = |i: i64| valid(i).then_some(i);
    let vectors32 =
        (0..n).map(|i| valid(i).then(|| (0..3).map(|j| Some((i * j) as f32)).collect::<Vec<_>>()));
    let vectors64 = (0..n).map(|i| valid(i).then(|| vec![Some(i as f64), None]));
    let input = RecordBatch::try_from_iter(vec![
        (
            "k",
            Arc::new(Int64Array::from_iter_values((0..n).map(|i| i % 7))) as ArrayRef,
        ),
        (
            "b",
            Arc::new(BooleanArray::from_iter(
                (0..n).map(|i| opt(i).map(|i| i % 2 == 0)),
            )),
        ),
        (
            "i",
            Arc::new(Int32Array::from_iter(
                (0..n).map(|i| opt(i).map(|i| i as i32)),
            )),
        ),
        ("l", Arc::new(Int64Array::from_iter((0..n).map(opt)))),
        (
            "f",
            Arc::new(Float32Array::from_iter(
                (0..n).map(|i| opt(i).map(|i| i as f32 / 3.0)),
            )),
        ),
        (
            "d",
            Arc::new(Float64Array::from_iter(
                (0..n).map(|i| opt(i).map(|i| i as f64 / 7.0)),
            )),
        ),
        (
            "s",
            Arc::new(StringArray::from_iter(
                (0..n).map(|i| opt(i).map(|i| format!("é{i}"))),
            )),
        ),
        (
            "bin",
            Arc::new(BinaryArray::from_iter(
                (0..n).map(|i| opt(i).map(|i| i.to_le_bytes().to_vec())),
            )),
        ),
        (
            "day",
            Arc::new(Date32Array::from_iter(
                (0..n).map(|i| opt(i).map(|i| i as i32 - 3)),
            )),
        ),
        (
            "at",
            Arc::new(
                TimestampMicrosecondArray::from_iter((0..n).map(|i| opt(i).map(|i| -i)))
                    .with_timezone("UTC"),
            ),
        ),
        (
            "v",
            Arc::new(FixedSizeListArray::from_iter_primitive::<Float32Type, _, _>(vectors32, 3)),
        ),
        (
            "w",
            Arc::new(FixedSizeListArray::from_iter_primitive::<Float64Type, _, _>(vectors64, 2)),
        ),
        (
            "event_timestamp",
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                (0..n).map(|i| JAN_1 + (i % 3) * DAY + i),
            )),
        ),
    ])
    .unwrap();
    coerce_batch(&every_type_spec("t", "int64"), &input).unwrap()
}

fn scan_all_types(store: &dyn OfflineStore) -> RecordBatch {
    let spec = every_type_spec("t", "int64");
    let query = HistoryQuery {
        features: (0..spec.features.len()).collect(),
        ..HistoryQuery::default()
    };
    let mut batches = Vec::new();
    store
        .scan(&spec, &query, &mut |b| {
            batches.push(b);
            Ok(())
        })
        .unwrap();
    concat_batches(&spec.arrow_schema(), &batches).unwrap()
}

#[test]
fn every_type_reads_back_the_same_from_log_memtable_and_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let spec = every_type_spec("t", "int64");
    let store = open(dir.path(), manual());
    store.create(&spec).unwrap();
    store.append(&spec, &all_types_batch(50)).unwrap();
    let from_memtable = scan_all_types(&store);
    assert_eq!(from_memtable.num_rows(), 50);
    store.flush().unwrap();
    assert_eq!(files(dir.path(), ".parquet").len(), 3, "one file per date");
    assert_eq!(scan_all_types(&store), from_memtable);
    // Half in Parquet, half in the memtable: both sides of the union agree on every type.
    store.append(&spec, &all_types_batch(50)).unwrap();
    let mixed = scan_all_types(&store);
    assert_eq!(mixed.num_rows(), 100);
    drop(store);
    let store = open(dir.path(), manual());
    assert_eq!(scan_all_types(&store), mixed, "after replay");
    store.flush().unwrap();
    assert_eq!(scan_all_types(&store), mixed, "all in Parquet");
}

#[test]
fn flush_writes_one_sorted_readable_file_per_utc_date() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with_set(dir.path(), manual());
    // Out of order, three UTC dates (one before the epoch), ties on event time.
    let mut appended = Vec::new();
    for round in 0..3 {
        let rows: Vec<(String, i64, i64)> = (0..200)
            .map(|i| {
                let day = [JAN_1, JAN_1 + DAY, -DAY][(i % 3) as usize];
                (
                    format!("e{}", (i * 7919) % 13),
                    day + (i * 104_729) % DAY / 2 % 50,
                    round * 1000 + i,
                )
            })
            .collect();
        store.append(&spec(), &batch(&rows)).unwrap();
        appended.extend(rows);
    }
    let before = history(&store);
    store.flush().unwrap();
    assert_eq!(history(&store), before);

    let data = files(dir.path(), ".parquet");
    let dates: Vec<String> = data
        .iter()
        .map(|p| {
            p.parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        dates,
        ["date=1969-12-31", "date=2026-01-01", "date=2026-01-02"]
    );
    let mut total = 0;
    for path in &data {
        let keys = parquet_keys(path);
        assert!(
            keys.windows(2).all(|w| w[0] < w[1]),
            "{} is sorted",
            path.display()
        );
        total += keys.len();
        let footer = SerializedFileReader::new(fs::File::open(path).unwrap()).unwrap();
        let sorting = footer.metadata().row_group(0).sorting_columns().unwrap();
        let sorted_by: Vec<i32> = sorting.iter().map(|c| c.column_idx).collect();
        assert_eq!(sorted_by, [0, 2, 3], "entity, event time, _seq");
    }
    assert_eq!(total, appended.len());
    assert_eq!(
        duckdb_count(&data),
        appended.len() as i64,
        "any reader reads them"
    );
}

#[test]
fn compaction_merges_small_files_keeping_every_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let options = ParquetOptions {
        compact_min_files: 3,
        ..manual()
    };
    let store = open_with_set(dir.path(), options);
    for round in 0..4 {
        let rows: Vec<(String, i64, i64)> = (0..10)
            .map(|i| {
                (
                    format!("e{}", i % 4),
                    JAN_1 + (i % 2) * DAY + 9 - i,
                    round * 10 + i,
                )
            })
            .collect();
        store.append(&spec(), &batch(&rows)).unwrap();
        store.flush().unwrap();
    }
    assert_eq!(
        files(dir.path(), ".parquet").len(),
        8,
        "4 flushes × 2 dates"
    );
    let before = history(&store);
    store.compact().unwrap();
    let data = files(dir.path(), ".parquet");
    assert_eq!(data.len(), 2, "one per date: {data:?}");
    for path in &data {
        let keys = parquet_keys(path);
        assert_eq!(keys.len(), 20);
        assert!(
            keys.windows(2).all(|w| w[0] < w[1]),
            "{} is sorted",
            path.display()
        );
    }
    assert_eq!(history(&store), before);
    assert_eq!(duckdb_count(&data), 40);
    let manifest = fs::read_to_string(dir.path().join("s/_manifest.json")).unwrap();
    for path in &data {
        let name = path.file_name().unwrap().to_string_lossy();
        assert!(manifest.contains(name.as_ref()), "{manifest}");
    }
    // Two files do not reach compact_min_files.
    store.compact().unwrap();
    assert_eq!(files(dir.path(), ".parquet"), data);
    drop(store);
    assert_eq!(history(&open(dir.path(), manual())), before);
}

#[test]
fn a_reader_keeps_its_files_and_tables_while_flush_and_compaction_replace_them() {
    let dir = tempfile::tempdir().unwrap();
    let options = ParquetOptions {
        compact_min_files: 2,
        ..manual()
    };
    let store = open_with_set(dir.path(), options);
    for round in 0..2 {
        let rows: Vec<(String, i64, i64)> = (0..3000)
            .map(|i| (format!("e{}", i % 50), JAN_1 + i, round * 3000 + i))
            .collect();
        store.append(&spec(), &batch(&rows)).unwrap();
        if round == 0 {
            store.flush().unwrap();
        }
    }
    let old_files = files(dir.path(), ".parquet");
    let spec = spec();
    store
        .query_relations(&[&spec], &mut |conn, relations| {
            // Everything this relation lists is flushed, compacted and replaced meanwhile.
            store.flush()?;
            store.compact()?;
            assert_eq!(
                files(dir.path(), ".parquet").len(),
                2,
                "old and merged file"
            );
            let count: i64 =
                conn.query_row(&format!("SELECT count(*) FROM {}", relations[0]), [], |r| {
                    r.get(0)
                })?;
            assert_eq!(count, 6000);
            Ok(())
        })
        .unwrap();
    let now = files(dir.path(), ".parquet");
    assert_eq!(now.len(), 1, "the retired file goes with the last reader");
    assert!(!old_files.contains(&now[0]));

    // A scan streaming across a compaction reads every row once.
    store.append(&spec, &batch(&[("e0", JAN_1, 9999)])).unwrap();
    store.flush().unwrap();
    let mut seen = 0;
    let query = HistoryQuery::default();
    store
        .scan(&spec, &query, &mut |b| {
            if seen == 0 {
                store.compact()?;
            }
            seen += b.num_rows();
            Ok(())
        })
        .unwrap();
    assert_eq!(seen, 6001);
    assert_eq!(files(dir.path(), ".parquet").len(), 1);
}

#[test]
fn a_torn_log_tail_is_ignored_and_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open_with_set(dir.path(), manual());
        store.append(&spec(), &batch(&[("a", 1, 1)])).unwrap();
        store.append(&spec(), &batch(&[("b", 2, 2)])).unwrap();
    }
    let segment = files(dir.path(), ".arrows").pop().unwrap();
    let full = fs::metadata(&segment).unwrap().len();
    // A crash in the middle of the second append.
    fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(full - 20)
        .unwrap();
    {
        let store = open(dir.path(), manual());
        assert_eq!(history(&store), vec![row("a", 1, 1)]);
        store.append(&spec(), &batch(&[("c", 3, 3)])).unwrap();
    }
    // A crash after the file grew but before its data landed: zeros.
    let newest = files(dir.path(), ".arrows").pop().unwrap();
    let mut bytes = fs::read(&newest).unwrap();
    bytes.extend([0u8; 300]);
    fs::write(&newest, &bytes).unwrap();
    let store = open(dir.path(), manual());
    assert_eq!(history(&store), vec![row("a", 1, 1), row("c", 3, 3)]);
    assert!(
        fs::metadata(&segment).unwrap().len() < full - 20,
        "torn message cut off"
    );
    assert_eq!(
        fs::metadata(&newest).unwrap().len(),
        bytes.len() as u64 - 300
    );
}

#[test]
fn a_damaged_log_fails_the_open_naming_the_segment() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open_with_set(dir.path(), manual());
        store.append(&spec(), &batch(&[("a", 1, 1)])).unwrap();
        store.append(&spec(), &batch(&[("b", 2, 2)])).unwrap();
    }
    let segment = files(dir.path(), ".arrows").pop().unwrap();
    let mut bytes = fs::read(&segment).unwrap();
    // Garbage over the body of the last message, which stays complete (not a torn tail):
    // its buffers' offsets and values no longer make sense.
    let len = bytes.len();
    for b in &mut bytes[len - 300..] {
        *b = 0xAB;
    }
    fs::write(&segment, &bytes).unwrap();
    let Err(err) = ParquetStore::open(dir.path(), manual(), &engine()) else {
        panic!("opened a damaged log");
    };
    assert!(matches!(err, Error::Corrupt(_)), "{err}");
    assert!(
        err.to_string().contains(&segment.display().to_string()),
        "{err}"
    );
}

#[test]
fn a_crash_between_data_files_and_manifest_keeps_every_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    let crashed = dir.path().join("crashed");
    {
        let store = open(&live, manual());
        store.create(&spec()).unwrap();
        store
            .append(&spec(), &batch(&[("a", 1, 1), ("b", JAN_1, 2)]))
            .unwrap();
        store.flush().unwrap();
        store
            .append(&spec(), &batch(&[("a", 2, 3), ("c", JAN_1 + DAY, 4)]))
            .unwrap();
    }
    // The state before the second flush: rows 3 and 4 only in the log.
    let pristine = dir.path().join("pristine");
    copy_dir(&live, &pristine);
    copy_dir(&live, &crashed);
    {
        let store = open(&live, manual());
        store.flush().unwrap();
    }
    // The second flush's data files made it to disk, its manifest did not; one more file was
    // still being written.
    for path in files(&live, ".parquet") {
        let relative = path.strip_prefix(&live).unwrap();
        if !crashed.join(relative).exists() {
            fs::create_dir_all(crashed.join(relative).parent().unwrap()).unwrap();
            fs::copy(&path, crashed.join(relative)).unwrap();
        }
    }
    fs::write(
        crashed.join("s/date=2026-01-01/part-00000099.parquet.tmp"),
        b"half",
    )
    .unwrap();
    assert_eq!(files(&crashed, ".parquet").len(), 4);
    let expected = vec![
        row("a", 1, 1),
        row("a", 2, 3),
        row("b", JAN_1, 2),
        row("c", JAN_1 + DAY, 4),
    ];
    {
        let store = open(&crashed, manual());
        assert_eq!(history(&store), expected);
        assert_eq!(
            files(&crashed, ".parquet").len(),
            2,
            "unlisted files deleted"
        );
        assert!(files(&crashed, ".tmp").is_empty());
        store.flush().unwrap();
        assert_eq!(history(&store), expected);
    }

    // The other crash point: the new manifest is written, the flushed log not yet removed.
    let after = dir.path().join("after");
    copy_dir(&live, &after);
    copy_dir(&pristine.join("s/_log"), &after.join("s/_log"));
    assert!(!files(&after.join("s/_log"), ".arrows").is_empty());
    let store = open(&after, manual());
    assert_eq!(history(&store), expected);
    assert!(
        files(&after.join("s/_log"), ".arrows").is_empty(),
        "segments holding only flushed rows are removed at open"
    );
}

#[test]
fn the_compression_option_is_the_files_codec() {
    let cases = [
        (Compression::Snappy, "SNAPPY"),
        (Compression::Gzip, "GZIP"),
        (Compression::Zstd, "ZSTD"),
        (Compression::Brotli, "BROTLI"),
        (Compression::Lz4, "LZ4_RAW"),
        (Compression::None, "UNCOMPRESSED"),
    ];
    for (compression, codec) in cases {
        let dir = tempfile::tempdir().unwrap();
        let store = open(
            dir.path(),
            ParquetOptions {
                compression,
                row_group_size: 4,
                ..manual()
            },
        );
        store.create(&spec()).unwrap();
        let rows: Vec<(String, i64, i64)> = (0..10).map(|i| (format!("e{i}"), JAN_1, i)).collect();
        store.append(&spec(), &batch(&rows)).unwrap();
        store.flush().unwrap();
        let data = files(dir.path(), ".parquet");
        let footer = SerializedFileReader::new(fs::File::open(&data[0]).unwrap()).unwrap();
        let metadata = footer.metadata();
        assert_eq!(metadata.num_row_groups(), 3, "row_group_size 4");
        let written = metadata.row_group(0).column(0).compression();
        assert!(
            written.to_string().starts_with(codec),
            "{compression}: {written}"
        );
        assert_eq!(duckdb_count(&data), 10, "{compression}");
        assert_eq!(history(&store).len(), 10, "{compression}");
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_background_thread_flushes_by_rows_and_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let by_rows = ParquetOptions {
        flush_rows: 5,
        ..manual()
    };
    {
        let store = open_with_set(dir.path(), by_rows);
        store
            .append(&spec(), &batch(&[("a", 1, 1), ("b", 1, 2)]))
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(files(dir.path(), ".parquet").is_empty(), "under flush_rows");
        store
            .append(&spec(), &batch(&[("c", 1, 3), ("d", 1, 4), ("e", 1, 5)]))
            .unwrap();
        wait_for("a flush by rows", || {
            files(dir.path(), ".parquet").len() == 1
        });
        assert_eq!(history(&store).len(), 5);
    }
    let by_age = ParquetOptions {
        flush_interval: Duration::from_millis(100),
        ..manual()
    };
    let store = open(dir.path(), by_age);
    store.append(&spec(), &batch(&[("f", 1, 6)])).unwrap();
    wait_for("a flush by age", || {
        files(dir.path(), ".parquet").len() == 2
    });
    assert_eq!(history(&store).len(), 6);
}

#[test]
fn delete_removes_the_set_durably_and_frees_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with_set(dir.path(), manual());
    store.append(&spec(), &batch(&[("a", 1, 1)])).unwrap();
    store.flush().unwrap();
    store.append(&spec(), &batch(&[("a", 2, 2)])).unwrap();
    let err = store.create(&spec()).unwrap_err();
    assert_eq!(err.code(), ErrorCode::AlreadyExists, "{err}");

    store.delete("s").unwrap();
    assert!(!dir.path().join("s").exists());
    assert!(store.load_specs().unwrap().is_empty());
    let err = store.append(&spec(), &batch(&[("a", 3, 3)])).unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound, "{err}");
    store.create(&spec()).unwrap();
    assert!(history(&store).is_empty());
    store.append(&spec(), &batch(&[("b", 1, 4)])).unwrap();
    drop(store);

    let store = open(dir.path(), manual());
    assert_eq!(history(&store), vec![row("b", 1, 4)]);
    // An interrupted delete (renamed, not yet removed) is finished at open.
    fs::create_dir_all(dir.path().join(".deleted-x/date=2026-01-01")).unwrap();
    drop(store);
    let store = open(dir.path(), manual());
    assert!(!dir.path().join(".deleted-x").exists());
    assert_eq!(store.load_specs().unwrap(), vec![spec()]);
}

#[test]
fn invalid_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let options = ParquetOptions {
        flush_rows: 0,
        ..ParquetOptions::default()
    };
    let Err(err) = ParquetStore::open(dir.path(), options, &engine()) else {
        panic!("accepted flush_rows 0");
    };
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert!(err.to_string().contains("flush_rows"), "{err}");
}

#[test]
fn concurrent_appends_reads_flushes_and_compactions_keep_every_row_once() {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let dir = tempfile::tempdir().unwrap();
    let options = ParquetOptions {
        flush_rows: 40,
        flush_interval: Duration::from_millis(15),
        compact_min_files: 2,
        row_group_size: 16,
        ..ParquetOptions::default()
    };
    let store = open_with_set(dir.path(), options);
    let acknowledged = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    let (batches, per_batch) = (150, 10);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for b in 0..batches {
                let rows: Vec<(String, i64, i64)> = (0..per_batch)
                    .map(|i| {
                        let n = b * per_batch + i;
                        (format!("e{}", n % 17), JAN_1 + (n % 3) * DAY + n % 5, n)
                    })
                    .collect();
                store.append(&spec(), &batch(&rows)).unwrap();
                acknowledged.fetch_add(rows.len(), Ordering::SeqCst);
            }
            done.store(true, Ordering::SeqCst);
        });
        for _ in 0..2 {
            scope.spawn(|| {
                while !done.load(Ordering::SeqCst) {
                    let before = acknowledged.load(Ordering::SeqCst);
                    let rows = history(&store);
                    let distinct: HashSet<i64> = rows.iter().map(|r| r.2).collect();
                    assert_eq!(distinct.len(), rows.len(), "a row seen twice");
                    assert!(rows.len() >= before, "an acknowledged row is missing");
                    let stats = store.stats(&spec()).unwrap();
                    assert!(stats.rows as usize >= rows.len());
                }
            });
        }
    });
    assert!(
        !files(dir.path(), ".parquet").is_empty(),
        "flushed meanwhile"
    );
    let expected: Vec<i64> = (0..batches * per_batch).collect();
    let mut seen: Vec<i64> = history(&store).iter().map(|r| r.2).collect();
    seen.sort();
    assert_eq!(seen, expected);
    drop(store);
    let store = open(dir.path(), manual());
    let mut seen: Vec<i64> = history(&store).iter().map(|r| r.2).collect();
    seen.sort();
    assert_eq!(seen, expected, "after reopen");
}
