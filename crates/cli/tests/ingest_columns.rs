//! Issue 12 on the command line, against a real `featherstore serve` child: `ingest` conforms
//! file columns to the declared types, takes `--columns`, `--rename` and `--timestamp-column`,
//! names undeclared columns with the flags that skip them; `apply` takes files as arguments;
//! JSON output renders float32 by its shortest digits.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampSecondArray,
};
use parquet::arrow::ArrowWriter;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_featherstore");

/// A `featherstore serve` child on free ports with a set `s` applied; killed when dropped.
struct Server {
    child: Child,
    flight: String,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SPEC: &str = r#"{"name": "s", "entity": {"name": "user_id", "type": "string"},
  "features": [{"name": "age", "type": "int32"}, {"name": "score", "type": "float32"}]}"#;

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--host",
                "127.0.0.1",
                "--http-port",
                "0",
                "--flight-port",
                "0",
            ])
            .args(["--metrics-port", "0", "--data-dir"])
            .arg(dir.path().join("data"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ready: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        let flight = format!("http://{}", ready["flight"].as_str().unwrap_or("?"));
        let server = Server { child, flight, dir };
        let spec = server.file("sets.json", SPEC);
        // Files as arguments (issue 12), no -f.
        server.ok(&["apply", &spec]);
        server
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("FEATHERSTORE_FLIGHT", &self.flight)
            .env_remove("FEATHERSTORE_TOKEN")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?} failed: {stderr}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Asserts failure; answers the error line.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).trim_end().to_string()
    }

    fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    }

    fn parquet(&self, name: &str, batch: &RecordBatch) -> String {
        let path = self.dir.path().join(name);
        let mut writer =
            ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), batch.schema(), None)
                .unwrap();
        writer.write(batch).unwrap();
        writer.close().unwrap();
        path.to_str().unwrap().to_string()
    }

    /// Online rows of `keys` as JSON objects.
    fn get(&self, keys: &[&str]) -> Vec<Value> {
        let mut args = vec!["get", "s"];
        args.extend(keys);
        args.push("--json");
        let text = self.ok(&args);
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect()
    }
}

fn columns(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    RecordBatch::try_from_iter(columns).unwrap()
}

#[test]
fn parquet_float64_and_int64_columns_are_conformed_or_refused_naming_the_value() {
    let server = Server::start();
    let wide = columns(vec![
        (
            "user_id",
            Arc::new(StringArray::from(vec!["u1", "u2"])) as ArrayRef,
        ),
        (
            "event_timestamp",
            Arc::new(TimestampSecondArray::from(vec![1_767_225_600; 2])),
        ),
        ("age", Arc::new(Int64Array::from(vec![31, 45]))),
        ("score", Arc::new(Float64Array::from(vec![0.12, 0.7]))),
    ]);
    let file = server.parquet("wide.parquet", &wide);
    server.ok(&["ingest", "s", &file]);
    let rows = server.get(&["u1", "u2"]);
    assert_eq!(rows[0]["age"], 31);
    // float32 0.12 prints as 0.12, not 0.11999999731779099.
    let text = server.ok(&["get", "s", "u1", "--json"]);
    assert!(
        text.contains("\"score\":0.12,") || text.contains("\"score\": 0.12"),
        "{text}"
    );

    let too_big = columns(vec![
        (
            "user_id",
            Arc::new(StringArray::from(vec!["u3", "u4"])) as ArrayRef,
        ),
        (
            "event_timestamp",
            Arc::new(TimestampSecondArray::from(vec![1_767_225_600; 2])),
        ),
        ("age", Arc::new(Int64Array::from(vec![1, 3_000_000_000]))),
    ]);
    let file = server.parquet("big.parquet", &too_big);
    let error = server.fails(&["ingest", "s", &file]);
    assert!(
        error.contains("column \"age\" row 1 holds 3000000000, which does not fit int32"),
        "{error}"
    );
    assert_eq!(server.get(&["u3"])[0]["age"], Value::Null, "nothing stored");
}

#[test]
fn columns_rename_and_timestamp_column_map_a_file_onto_the_set() {
    let server = Server::start();
    let csv = server.file(
        "users.csv",
        "user,ts,age,notes,score\nu1,2026-01-01T00:00:00Z,30,hello,0.25\n",
    );
    // Undeclared columns: listed, with the flags that fix it.
    let error = server.fails(&["ingest", "s", &csv]);
    assert!(
        error.contains(
            "columns \"user\", \"ts\", \"notes\" of the file are not declared by feature set \"s\""
        ),
        "{error}"
    );
    assert!(
        error.contains("--columns age,score") && error.contains("--rename SRC=DST"),
        "{error}"
    );

    let error = server.fails(&[
        "ingest",
        "s",
        &csv,
        "--rename",
        "user=user_id",
        "--columns",
        "user,age",
    ]);
    assert!(error.contains("--timestamp-column NAME"), "{error}");

    let error = server.fails(&["ingest", "s", &csv, "--columns", "user,tss"]);
    assert!(
        error.contains("\"tss\" given to --columns is not in the file"),
        "{error}"
    );

    server.ok(&[
        "ingest",
        "s",
        &csv,
        "--columns",
        "user,ts,age",
        "--rename",
        "user=user_id",
        "--timestamp-column",
        "ts",
    ]);
    let row = &server.get(&["u1"])[0];
    assert_eq!(
        (row["age"].clone(), row["score"].clone()),
        (Value::from(30), Value::Null)
    );

    // The same mapping for JSON lines and Parquet.
    let jsonl = server.file(
        "users.jsonl",
        "{\"user\": \"u2\", \"ts\": \"2026-01-01T00:00:00Z\", \"score\": 0.5, \"x\": 1}\n",
    );
    let error = server.fails(&["ingest", "s", &jsonl]);
    assert!(
        error.contains("line 1: columns \"ts\", \"user\", \"x\" of the file are not declared")
            && error.contains("--columns score"),
        "{error}"
    );
    let missing_time = server.file("no_time.jsonl", "{\"user_id\": \"u9\"}\n");
    let error = server.fails(&["ingest", "s", &missing_time]);
    assert!(
        error.contains("line 1:") && error.contains("event_timestamp"),
        "{error}"
    );
    let error = server.fails(&[
        "ingest",
        "s",
        &jsonl,
        "--rename",
        "user=user_id",
        "--timestamp-column",
        "ts",
    ]);
    assert!(
        error.contains("column \"x\" of the file is not declared"),
        "{error}"
    );
    server.ok(&[
        "ingest",
        "s",
        &jsonl,
        "--columns",
        "user,ts,score",
        "--rename",
        "user=user_id",
        "--timestamp-column",
        "ts",
    ]);
    assert_eq!(server.get(&["u2"])[0]["score"], 0.5);

    let parquet = server.parquet(
        "users.parquet",
        &columns(vec![
            ("uid", Arc::new(StringArray::from(vec!["u5"])) as ArrayRef),
            (
                "when",
                Arc::new(TimestampSecondArray::from(vec![1_767_225_600])),
            ),
            ("age", Arc::new(Int64Array::from(vec![55]))),
            ("junk", Arc::new(Int64Array::from(vec![0]))),
        ]),
    );
    server.ok(&[
        "ingest",
        "s",
        &parquet,
        "--columns=uid,when,age",
        "--rename=uid=user_id",
        "--timestamp-column=when",
    ]);
    assert_eq!(server.get(&["u5"])[0]["age"], 55);
}

#[test]
fn apply_takes_files_as_arguments_or_with_f() {
    let server = Server::start();
    let first = server.file("a.json", &SPEC.replace("\"s\"", "\"a\""));
    let second = server.file("b.json", &SPEC.replace("\"s\"", "\"b\""));
    server.ok(&["apply", &first, "-f", &second]);
    let listed = server.ok(&["list", "--json"]);
    assert!(
        listed.contains("\"a\"") && listed.contains("\"b\""),
        "{listed}"
    );
    let error = server.fails(&["apply"]);
    assert!(error.contains("FILE"), "{error}");
}
