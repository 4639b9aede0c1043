//! The client commands of the `featherstore` binary against a real `featherstore serve` child
//! process: apply, ingest (every input format), get, history, training-data, list, describe,
//! delete, and their errors.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, FixedSizeListBuilder, Float32Builder, Int64Array, RecordBatch, StringArray,
    TimestampNanosecondArray,
};
use arrow::datatypes::Int64Type;
use featherstore_testkit::child::{ChildServer, Run, Serve};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_featherstore");

/// Runs `featherstore ARGS` against a server (address from the environment).
trait Commands {
    fn run(&self, args: &[&str]) -> Run;
    fn run_with(&self, args: &[&str], stdin: Option<&[u8]>) -> Run;
}

impl Commands for ChildServer {
    fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, None)
    }

    fn run_with(&self, args: &[&str], stdin: Option<&[u8]>) -> Run {
        run(args, Some(&self.flight), stdin)
    }
}

/// `featherstore ARGS`, with `FEATHERSTORE_FLIGHT` set to `flight` or removed.
fn run(args: &[&str], flight: Option<&str>, stdin: Option<&[u8]>) -> Run {
    Run::new(BIN, args, &[("FEATHERSTORE_FLIGHT", flight)], stdin)
}

const SETS: &str = "\
feature_sets:
  - name: user_features
    entity: {name: user_id, type: string}
    features:
      - {name: age, type: int64}
      - {name: ctr_7d, type: float32, description: click-through rate}
      - {name: embedding, type: 'float32[2]'}
    tags: {team: growth}
  - name: merchant_features
    entity: {name: merchant_id, type: int64}
    features:
      - {name: risk, type: float32}
    ttl_seconds: 86400
";

const T0: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

/// user_features rows: (user, age, event time in seconds after T0).
fn users(rows: &[(&str, i64, i64)]) -> RecordBatch {
    let mut embedding = FixedSizeListBuilder::new(Float32Builder::new(), 2);
    for (_, age, _) in rows {
        embedding.values().append_slice(&[*age as f32, 0.5]);
        embedding.append(true);
    }
    RecordBatch::try_from_iter(vec![
        (
            "user_id",
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
        ),
        (
            "age",
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))) as ArrayRef,
        ),
        ("embedding", Arc::new(embedding.finish()) as ArrayRef),
        (
            "event_timestamp",
            // Nanoseconds without a zone: UTC, truncated to microseconds by the server.
            Arc::new(TimestampNanosecondArray::from_iter_values(
                rows.iter().map(|r| (T0 + r.2) * 1_000_000_000),
            )) as ArrayRef,
        ),
    ])
    .unwrap()
}

fn write_parquet(path: &Path, batches: &[RecordBatch]) {
    let mut writer =
        ArrowWriter::try_new(File::create(path).unwrap(), batches[0].schema(), None).unwrap();
    for batch in batches {
        writer.write(batch).unwrap();
    }
    writer.close().unwrap();
}

fn read_parquet(path: &Path) -> Vec<RecordBatch> {
    ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// A server holding the feature sets of `SETS`, applied through the CLI.
fn with_sets() -> ChildServer {
    let server = Serve::new(BIN).start();
    server
        .run(&["apply", "-f", &server.file("sets.yaml", SETS)])
        .ok();
    server
}

fn stats_rows(server: &ChildServer, set: &str) -> u64 {
    let describe: Value =
        serde_json::from_str(&server.run(&["describe", set, "--json"]).ok()).unwrap();
    describe["stats"]["rows"].as_u64().unwrap()
}

#[test]
fn apply_creates_checks_and_reports_conflicts() {
    let server = Serve::new(BIN).start();
    let sets = server.file("sets.yaml", SETS);

    let out = server.run(&["apply", "-f", &sets]).ok();
    assert!(out.contains("created       user_features"), "{out}");
    assert!(out.contains("created       merchant_features"), "{out}");
    let out = server.run(&["apply", "-f", &sets]).ok();
    assert_eq!(out.matches("unchanged").count(), 2, "{out}");

    // An allowed change updates the set in place and says what changed; a refused one
    // conflicts with the server's reason; the rest is still applied; the exit status says so.
    let changed = server.file(
        "changed.yaml",
        &format!(
            "{}  - name: item_features\n    entity: {{name: item_id, type: string}}\n    features: []\n",
            SETS.replace("{name: risk, type: float32}", "{name: risk, type: float64}")
                .replace(
                    "      - {name: embedding, type: 'float32[2]'}\n",
                    "      - {name: embedding, type: 'float32[2]'}\n      - {name: score, type: float64}\n",
                )
        ),
    );
    let dry = server.run(&["apply", "-f", &changed, "--dry-run"]);
    let out = dry.stdout();
    assert!(out.contains("would create  item_features"), "{out}");
    assert!(out.contains("would update  user_features"), "{out}");
    assert!(out.contains("added feature \"score\" (float64)"), "{out}");
    let run = server.run(&["apply", "-f", &changed]);
    let error = run.fails();
    assert!(
        error.contains("1 of 3 feature sets have changes"),
        "{error}"
    );
    let out = run.stdout();
    assert!(
        out.contains("conflict      merchant_features: feature set \"merchant_features\": the type of feature \"risk\" would change from float32 to float64"),
        "{out}"
    );
    assert!(out.contains("create a new feature set"), "{out}");
    assert!(out.contains("updated       user_features"), "{out}");
    assert!(out.contains("created       item_features"), "{out}");
    let versions = server
        .run(&["describe", "user_features", "--versions"])
        .ok();
    assert!(versions.contains("version 1 "), "{versions}");
    assert!(versions.contains("version 2 "), "{versions}");
    assert!(versions.contains("added feature \"score\""), "{versions}");
    let listed: Value = serde_json::from_str(
        &server
            .run(&["describe", "user_features", "--versions", "--json"])
            .ok(),
    )
    .unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");

    // JSON: a list of specs, with a report as JSON.
    let json = server.file(
        "sets.json",
        r#"[{"name": "item_features", "entity": {"name": "item_id", "type": "string"}, "features": []}]"#,
    );
    let report: Value =
        serde_json::from_str(&server.run(&["apply", "-f", &json, "--json"]).ok()).unwrap();
    assert_eq!(report[0]["status"], "unchanged");

    // Standard input, and a bad spec named before anything is applied.
    let bad = "- name: broken\n  entity: {name: id, type: float}\n  features: []\n";
    let error = server
        .run_with(&["apply", "-f", "-"], Some(bad.as_bytes()))
        .fails();
    assert!(error.contains("\"broken\""), "{error}");
    let error = server.run(&["apply", "-f", "/no/such/file.yaml"]).fails();
    assert!(error.contains("/no/such/file.yaml"), "{error}");

    // list, describe, delete.
    let list = server.run(&["list"]).ok();
    for name in ["user_features", "merchant_features", "item_features"] {
        assert!(list.contains(name), "{list}");
    }
    let specs: Value = serde_json::from_str(&server.run(&["list", "--json"]).ok()).unwrap();
    assert_eq!(specs.as_array().unwrap().len(), 3);
    let describe = server.run(&["describe", "user_features"]).ok();
    for text in [
        "user_id (string)",
        "float32[2]",
        "click-through rate",
        "team=growth",
    ] {
        assert!(describe.contains(text), "{describe}");
    }
    let out = server.run(&["delete", "item_features"]).ok();
    assert!(out.contains("deleted"), "{out}");
    let error = server.run(&["delete", "item_features"]).fails();
    assert!(error.contains("item_features"), "{error}");
    let error = server.run(&["describe", "item_features"]).fails();
    assert!(error.contains("item_features"), "{error}");
}

#[test]
fn ingest_every_format() {
    let server = with_sets();

    // Parquet, 2,500 rows in batches of 1,000: 3 batches.
    let rows: Vec<(String, i64, i64)> = (0..2_500)
        .map(|i| (format!("p{}", i % 100), i, i))
        .collect();
    let rows: Vec<(&str, i64, i64)> = rows.iter().map(|r| (r.0.as_str(), r.1, r.2)).collect();
    let parquet = server.path("users.parquet");
    write_parquet(&parquet, &[users(&rows[..1_200]), users(&rows[1_200..])]);
    let out = server
        .run(&[
            "ingest",
            "user_features",
            parquet.to_str().unwrap(),
            "--batch-size",
            "1000",
        ])
        .ok();
    assert!(
        out.starts_with("ingested 2,500 rows into user_features from 1 file (3 batches)"),
        "{out}"
    );
    assert_eq!(stats_rows(&server, "user_features"), 2_500);

    // Arrow IPC file and stream, by content.
    let batch = users(&[("a1", 1, 0), ("a2", 2, 0)]);
    let ipc_file = server.path("users.arrow");
    let mut writer =
        arrow::ipc::writer::FileWriter::try_new(File::create(&ipc_file).unwrap(), &batch.schema())
            .unwrap();
    writer.write(&batch).unwrap();
    writer.finish().unwrap();
    let ipc_stream = server.path("users.arrows");
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(
        File::create(&ipc_stream).unwrap(),
        &batch.schema(),
    )
    .unwrap();
    writer.write(&batch).unwrap();
    writer.write(&batch).unwrap();
    writer.finish().unwrap();
    let out = server
        .run(&[
            "ingest",
            "user_features",
            ipc_file.to_str().unwrap(),
            ipc_stream.to_str().unwrap(),
        ])
        .ok();
    assert!(
        out.starts_with("ingested 6 rows into user_features from 2 files"),
        "{out}"
    );

    // CSV (a feature subset, empty cells are null) and JSON lines (with an embedding).
    let csv = server.file(
        "users.csv",
        "user_id,event_timestamp,age,ctr_7d\nc1,2026-01-02T00:00:00Z,7,0.5\nc2,2026-01-02 00:00:00,,\n",
    );
    server.run(&["ingest", "user_features", &csv]).ok();
    let jsonl = server.file(
        "users.jsonl",
        "{\"user_id\": \"j1\", \"event_timestamp\": \"2026-01-03T00:00:00Z\", \"embedding\": [1, 2]}\n\n\
         {\"user_id\": \"j2\", \"event_timestamp\": \"2026-01-03T00:00:00Z\", \"age\": 9}\n",
    );
    server.run(&["ingest", "user_features", &jsonl]).ok();
    // TSV from standard input, with --format.
    let tsv = "merchant_id\trisk\tevent_timestamp\n7\t0.25\t2026-01-01T00:00:00Z\n";
    let out = server
        .run_with(
            &["ingest", "merchant_features", "-", "--format", "tsv"],
            Some(tsv.as_bytes()),
        )
        .ok();
    assert!(
        out.starts_with("ingested 1 row into merchant_features"),
        "{out}"
    );
    assert_eq!(stats_rows(&server, "user_features"), 2_510);

    let got = json_lines(
        &server
            .run(&["get", "user_features", "c1", "c2", "j1", "j2", "--json"])
            .ok(),
    );
    assert_eq!(got[0]["age"], 7);
    assert_eq!(got[0]["ctr_7d"], 0.5);
    assert_eq!(got[1]["age"], Value::Null);
    assert_eq!(got[1]["event_timestamp"], "2026-01-02T00:00:00Z");
    assert_eq!(got[2]["embedding"], serde_json::json!([1.0, 2.0]));
    assert_eq!(got[3]["age"], 9);

    // Errors name the file and the problem; nothing of a rejected batch is stored.
    let bad_csv = server.file(
        "bad.csv",
        "user_id,event_timestamp,age\nx1,2026-01-01T00:00:00Z,seven\n",
    );
    let error = server.run(&["ingest", "user_features", &bad_csv]).fails();
    assert!(
        error.contains("bad.csv") && error.contains("seven") && error.contains("at line 2"),
        "{error}"
    );
    // A failure after some batches says what was stored.
    let late = server.file(
        "late.csv",
        "user_id,event_timestamp,age
l1,2026-01-01T00:00:00Z,1
l2,2026-01-01T00:00:00Z,x
",
    );
    let error = server
        .run(&["ingest", "user_features", &late, "--batch-size", "1"])
        .fails();
    assert!(
        error.contains("at line 3")
            && error.contains("1 row of")
            && error.contains("stored before the error"),
        "{error}"
    );
    let undeclared = server.file(
        "undeclared.csv",
        "user_id,event_timestamp,height\nx1,2026-01-01T00:00:00Z,180\n",
    );
    let error = server
        .run(&["ingest", "user_features", &undeclared])
        .fails();
    assert!(error.contains("height"), "{error}");
    let bad_json = server.file(
        "bad.jsonl",
        "{\"user_id\": \"x\", \"event_timestamp\": \"2026-01-01T00:00:00Z\"}\n{\"user_id\": \"y\", \"event_timestamp\": \"2026-01-01T00:00:00Z\", \"age\": \"old\"}\n",
    );
    let error = server.run(&["ingest", "user_features", &bad_json]).fails();
    assert!(error.contains("line 2") && error.contains("age"), "{error}");
    let embedded = server.file(
        "embedding.csv",
        "user_id,event_timestamp,embedding\nx,2026-01-01T00:00:00Z,\"[1,2]\"\n",
    );
    let error = server.run(&["ingest", "user_features", &embedded]).fails();
    assert!(error.contains("embedding"), "{error}");
    let error = server
        .run(&["ingest", "user_features", &server.file("x.txt", "")])
        .fails();
    assert!(error.contains("--format"), "{error}");
    let error = server.run(&["ingest", "no_such_set", &csv]).fails();
    assert!(error.contains("no_such_set"), "{error}");
    let error = server
        .run(&["ingest", "user_features", "/no/such/file.csv"])
        .fails();
    assert!(error.contains("/no/such/file.csv"), "{error}");
    assert_eq!(stats_rows(&server, "user_features"), 2_511);
}

#[test]
fn get_history_and_training_data() {
    let server = with_sets();
    let parquet = server.path("users.parquet");
    write_parquet(
        &parquet,
        &[users(&[("u1", 30, 0), ("u2", 40, 0), ("u1", 31, 3_600)])],
    );
    server
        .run(&["ingest", "user_features", parquet.to_str().unwrap()])
        .ok();
    let merchants = server.file(
        "merchants.csv",
        "merchant_id,risk,event_timestamp\n7,0.25,2026-01-01T00:00:00Z\n8,0.75,2026-01-01T00:00:00Z\n",
    );
    server
        .run(&["ingest", "merchant_features", &merchants])
        .ok();

    // A table by default; unknown entities get nulls.
    let table = server.run(&["get", "user_features", "u1", "nobody"]).ok();
    assert!(table.contains("| user_id"), "{table}");
    assert!(table.contains("31") && table.contains("nobody"), "{table}");
    assert!(table.contains("(2 rows)"), "{table}");
    // Feature subset and integer entities; --server beats the environment.
    let rows = json_lines(
        &run(
            &[
                "get",
                "merchant_features",
                "8",
                "7",
                "--json",
                "--server",
                &server.flight,
            ],
            Some("http://127.0.0.1:1"),
            None,
        )
        .ok(),
    );
    assert_eq!(rows[0]["merchant_id"], 8);
    assert_eq!(rows[1]["merchant_id"], 7);
    // merchant_features has a one-day ttl and rows of 2026-01-01: expired online.
    assert_eq!(rows[1]["risk"], Value::Null);
    let rows = json_lines(
        &server
            .run(&["get", "user_features", "u2", "--features", "age", "--json"])
            .ok(),
    );
    assert_eq!(
        rows[0].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["user_id", "age", "event_timestamp"]
    );
    let error = server.run(&["get", "merchant_features", "seven"]).fails();
    assert!(error.contains("not an integer"), "{error}");
    let error = server
        .run(&["get", "user_features", "u1", "--features", "height"])
        .fails();
    assert!(error.contains("height"), "{error}");

    // --output by extension.
    let out = server.path("online.parquet");
    server
        .run(&[
            "get",
            "user_features",
            "u1",
            "u2",
            "-o",
            out.to_str().unwrap(),
        ])
        .ok();
    let batches = read_parquet(&out);
    assert_eq!(
        batches[0].column(1).as_primitive::<Int64Type>().values(),
        &[31, 40]
    );

    // History: bounds, entity filter, features, JSON and CSV output.
    let rows = json_lines(
        &server
            .run(&[
                "history",
                "user_features",
                "--entity",
                "u1",
                "--start",
                "2026-01-01",
                "--end",
                "2026-01-01T01:00:00Z",
                "--features",
                "age",
                "--json",
            ])
            .ok(),
    );
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["age"], 30);
    let csv = server.path("history.csv");
    server
        .run(&[
            "history",
            "user_features",
            "--output",
            csv.to_str().unwrap(),
        ])
        .ok();
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(
        text.starts_with("user_id,age,ctr_7d,embedding,event_timestamp\n"),
        "{text}"
    );
    assert!(text.contains("\"[30.0,0.5]\""), "{text}");
    let table = server
        .run(&["history", "user_features", "--limit", "2"])
        .ok();
    assert!(table.contains("first 2 rows shown"), "{table}");
    let error = server
        .run(&["history", "user_features", "--start", "yesterday"])
        .fails();
    assert!(error.contains("--start"), "{error}");

    // Training data from a CSV of entity rows with a label.
    let entities = server.file(
        "entities.csv",
        "user_id,merchant_id,event_timestamp,label\n\
         u1,7,2026-01-01T00:30:00Z,1\n\
         u1,8,2026-01-01T02:00:00Z,0\n\
         u2,7,2025-12-31T00:00:00Z,1\n",
    );
    let rows = json_lines(
        &server
            .run(&[
                "training-data",
                &entities,
                "--features",
                "user_features:age,merchant_features:risk",
                "--json",
            ])
            .ok(),
    );
    assert_eq!(rows.len(), 3);
    assert_eq!(
        (rows[0]["age"].clone(), rows[0]["risk"].clone()),
        (30.into(), 0.25.into())
    );
    assert_eq!(
        (rows[1]["age"].clone(), rows[1]["label"].clone()),
        (31.into(), 0.into())
    );
    assert_eq!(
        rows[2]["age"],
        Value::Null,
        "no value before the row's time"
    );
    let out = server.path("training.parquet");
    server
        .run(&[
            "training-data",
            &entities,
            "--features",
            "user_features:*",
            "--full-names",
            "-o",
            out.to_str().unwrap(),
        ])
        .ok();
    let batches = read_parquet(&out);
    let schema = batches[0].schema();
    assert!(
        schema.field_with_name("user_features__embedding").is_ok(),
        "{schema:?}"
    );
    let error = server
        .run(&["training-data", &entities, "--features", "nope:x"])
        .fails();
    assert!(error.contains("nope"), "{error}");
}

#[test]
fn unreachable_server_is_one_clear_line() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("http://127.0.0.1:{port}");
    let error = run(&["list"], Some(&address), None).fails();
    assert!(
        error.contains("cannot reach a FeatherStore server") && error.contains(&port.to_string()),
        "{error}"
    );
    let error = run(&["list", "--server", "ftp://127.0.0.1:1"], None, None).fails();
    assert!(error.contains("unknown scheme"), "{error}");
}

/// Every feature type of PROTOCOL.md, with nulls and each type's limits, from a Parquet file
/// through `featherstore ingest`, back through `get` and `history` (Parquet output, compared
/// exactly, and JSON lines), on both backends.
#[test]
fn every_feature_type_through_ingest_get_and_history() {
    use arrow::array::{
        Array, BinaryArray, BooleanArray, Date32Array, Float32Array, Float64Array, Float64Builder,
        Int32Array, TimestampMicrosecondArray,
    };
    const MIN: i64 = -62_135_596_800_000_000; // 0001-01-01T00:00:00Z
    const MAX: i64 = 253_402_300_799_999_999; // 9999-12-31T23:59:59.999999Z
    let spec = r#"{"name": "every", "entity": {"name": "id", "type": "int64"}, "features": [
        {"name": "b", "type": "bool"}, {"name": "i", "type": "int32"}, {"name": "l", "type": "int64"},
        {"name": "f", "type": "float32"}, {"name": "d", "type": "float64"},
        {"name": "s", "type": "string"}, {"name": "x", "type": "binary"},
        {"name": "day", "type": "date"}, {"name": "t", "type": "timestamp"},
        {"name": "v", "type": "float32[2]"}, {"name": "w", "type": "float64[2]"}]}"#;
    let mut v = FixedSizeListBuilder::new(Float32Builder::new(), 2);
    let mut w = FixedSizeListBuilder::new(Float64Builder::new(), 2);
    for row in 0..3 {
        v.values()
            .append_slice(&[[f32::MAX, -0.0, 1e-45][row], 0.5]);
        v.append(row != 1);
        w.values()
            .append_slice(&[[f64::MIN, 1e-300, 2.5][row], -1.0]);
        w.append(row != 2);
    }
    // Entities in ascending order, each with one row: history order is row order.
    let batch = RecordBatch::try_from_iter(vec![
        (
            "id",
            Arc::new(Int64Array::from(vec![i64::MIN, 0, i64::MAX])) as ArrayRef,
        ),
        (
            "b",
            Arc::new(BooleanArray::from(vec![Some(true), None, Some(false)])) as ArrayRef,
        ),
        (
            "i",
            Arc::new(Int32Array::from(vec![Some(i32::MIN), Some(i32::MAX), None])) as ArrayRef,
        ),
        (
            "l",
            Arc::new(Int64Array::from(vec![None, Some(i64::MIN), Some(i64::MAX)])) as ArrayRef,
        ),
        (
            "f",
            Arc::new(Float32Array::from(vec![Some(-0.1), None, Some(f32::MIN)])) as ArrayRef,
        ),
        (
            "d",
            Arc::new(Float64Array::from(vec![Some(f64::MAX), Some(-0.0), None])) as ArrayRef,
        ),
        (
            "s",
            Arc::new(StringArray::from(vec![Some("ünï ✓"), Some(""), None])) as ArrayRef,
        ),
        (
            "x",
            Arc::new(BinaryArray::from(vec![
                None,
                Some(&b""[..]),
                Some(&b"\x00\xff"[..]),
            ])) as ArrayRef,
        ),
        (
            "day",
            Arc::new(Date32Array::from(vec![
                Some(-719_162),
                None,
                Some(2_932_896),
            ])) as ArrayRef,
        ),
        (
            "t",
            Arc::new(
                TimestampMicrosecondArray::from(vec![Some(MAX), Some(MIN), None])
                    .with_timezone("UTC"),
            ) as ArrayRef,
        ),
        ("v", Arc::new(v.finish()) as ArrayRef),
        ("w", Arc::new(w.finish()) as ArrayRef),
        (
            "event_timestamp",
            Arc::new(TimestampMicrosecondArray::from(vec![MIN, -1, MAX]).with_timezone("UTC"))
                as ArrayRef,
        ),
    ])
    .unwrap();
    for backend in ["duckdb", "parquet"] {
        let server = Serve::new(BIN).backend(backend).start();
        server
            .run(&["apply", "-f", &server.file("every.json", spec)])
            .ok();
        let input = server.path("every.parquet");
        write_parquet(&input, std::slice::from_ref(&batch));
        let out = server
            .run(&["ingest", "every", input.to_str().unwrap()])
            .ok();
        assert!(
            out.starts_with("ingested 3 rows into every"),
            "{backend}: {out}"
        );

        let online = server.path("online.parquet");
        let ids = [i64::MIN.to_string(), "0".into(), i64::MAX.to_string()];
        // `--`: a negative key is not a flag.
        let mut get = vec!["get", "every", "-o", online.to_str().unwrap(), "--"];
        get.extend(ids.iter().map(String::as_str));
        server.run(&get).ok();
        let history = server.path("history.parquet");
        server
            .run(&["history", "every", "-o", history.to_str().unwrap()])
            .ok();
        for (what, path) in [("get", &online), ("history", &history)] {
            let got = read_parquet(path);
            let got = arrow::compute::concat_batches(&got[0].schema(), &got).unwrap();
            assert_eq!(got.num_columns(), batch.num_columns(), "{backend} {what}");
            for (i, field) in batch.schema().fields().iter().enumerate() {
                let column = got.column_by_name(field.name()).unwrap();
                assert_eq!(
                    column.data_type(),
                    field.data_type(),
                    "{backend} {what} {}",
                    field.name()
                );
                assert_eq!(
                    column.to_data(),
                    batch.column(i).to_data(),
                    "{backend} {what} {}",
                    field.name()
                );
            }
        }

        // JSON lines: dates, times, base64 and vectors as PROTOCOL.md writes them.
        let rows = json_lines(&server.run(&["history", "every", "--json"]).ok());
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0]["day"], "0001-01-01");
        assert_eq!(rows[2]["day"], "9999-12-31");
        assert_eq!(rows[0]["t"], "9999-12-31T23:59:59.999999Z");
        assert_eq!(rows[1]["t"], "0001-01-01T00:00:00Z");
        assert_eq!(rows[1]["event_timestamp"], "1969-12-31T23:59:59.999999Z");
        assert_eq!(rows[0]["id"], i64::MIN);
        assert_eq!(rows[2]["x"], "AP8=");
        assert_eq!(rows[1]["x"], "");
        assert_eq!(rows[1]["v"], Value::Null);
        assert_eq!(rows[0]["w"], serde_json::json!([f64::MIN, -1.0]));
        let online = json_lines(&server.run(&["get", "every", "0", "--json"]).ok());
        assert_eq!(online[0]["l"], i64::MIN);
        assert_eq!(online[0]["s"], "");
    }
}

#[test]
fn history_with_ingest_times_and_training_data_as_of_ingest_time() {
    let server = with_sets();
    let ingest = |name: &str, csv: &str| {
        server
            .run(&["ingest", "user_features", &server.file(name, csv)])
            .ok();
    };
    ingest(
        "a.csv",
        "user_id,age,event_timestamp\nu1,30,2026-01-01T00:00:00Z\n",
    );
    // Arrives later, with an event time before the training row's.
    ingest(
        "b.csv",
        "user_id,age,event_timestamp\nu1,31,2026-01-01T00:10:00Z\n",
    );
    let rows = json_lines(
        &server
            .run(&["history", "user_features", "--with-ingest-time", "--json"])
            .ok(),
    );
    let ingested: Vec<&str> = rows
        .iter()
        .map(|r| r["ingested_at"].as_str().unwrap())
        .collect();
    assert_eq!(ingested.len(), 2, "{rows:?}");
    assert!(ingested[0] < ingested[1], "{ingested:?}");
    let known = json_lines(
        &server
            .run(&[
                "history",
                "user_features",
                "--ingested-before",
                ingested[1],
                "--json",
            ])
            .ok(),
    );
    assert_eq!(known.len(), 1);
    assert_eq!(known[0]["age"], 30);
    assert!(known[0].get("ingested_at").is_none(), "{known:?}");

    // A training row at the first ingest: as of ingest time the late row is not known yet.
    let entities = server.file(
        "entities.csv",
        &format!("user_id,event_timestamp\nu1,{}\n", ingested[0]),
    );
    let age = |as_of: &str| {
        let rows = json_lines(
            &server
                .run(&[
                    "training-data",
                    &entities,
                    "--features",
                    "user_features:age",
                    "--as-of",
                    as_of,
                    "--json",
                ])
                .ok(),
        );
        rows[0]["age"].clone()
    };
    assert_eq!(age("event_time"), 31);
    assert_eq!(age("ingest_time"), 30);
    let error = server
        .run(&[
            "training-data",
            &entities,
            "--features",
            "user_features:age",
            "--as-of",
            "now",
        ])
        .failed();
    assert!(
        error.contains("event_time") && error.contains("ingest_time"),
        "{error}"
    );
}
