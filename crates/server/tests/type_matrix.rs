//! Every feature type of PROTOCOL.md (with nulls and the limits of each type), under both
//! entity types, through every path on both backends: ingest by Flight DoPut, HTTP JSON and
//! HTTP Arrow IPC; read back online (DoGet, HTTP JSON, HTTP Arrow), history (DoGet, HTTP JSON)
//! and training data (DoExchange, `POST /v1/training-data`). Values must come back exactly.
//!
//! The expected values are written out here by hand, in Arrow and in JSON (dates, times and
//! base64 included), so that a bug shared by the server's encoder and decoder cannot hide.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Date32Array, FixedSizeListBuilder, Float32Array,
    Float32Builder, Float64Array, Float64Builder, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use featherstore_server::config::Backend;
use featherstore_testkit::http::{ipc_body, ARROW};
use featherstore_testkit::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

const FEATURES: &str = r#"[
    {"name": "f_bool", "type": "bool"}, {"name": "f_int32", "type": "int32"},
    {"name": "f_int64", "type": "int64"}, {"name": "f_float32", "type": "float32"},
    {"name": "f_float64", "type": "float64"}, {"name": "f_string", "type": "string"},
    {"name": "f_binary", "type": "binary"}, {"name": "f_date", "type": "date"},
    {"name": "f_timestamp", "type": "timestamp"}, {"name": "f_vec32", "type": "float32[3]"},
    {"name": "f_vec64", "type": "float64[2]"}
]"#;

const FEATURE_NAMES: [&str; 11] = [
    "f_bool",
    "f_int32",
    "f_int64",
    "f_float32",
    "f_float64",
    "f_string",
    "f_binary",
    "f_date",
    "f_timestamp",
    "f_vec32",
    "f_vec64",
];

/// An instant: UTC microseconds and its RFC 3339 form as the server writes it.
#[derive(Clone, Copy)]
struct Time(i64, &'static str);

const MIN: Time = Time(-62_135_596_800_000_000, "0001-01-01T00:00:00Z");
const MAX: Time = Time(253_402_300_799_999_999, "9999-12-31T23:59:59.999999Z");
const Y2026: Time = Time(1_767_225_600_000_000, "2026-01-01T00:00:00Z");

/// One ingested row; `entity` indexes the key lists.
struct Row {
    entity: usize,
    at: Time,
    bool: Option<bool>,
    int32: Option<i32>,
    int64: Option<i64>,
    float32: Option<f32>,
    float64: Option<f64>,
    string: Option<&'static str>,
    /// Bytes and their base64.
    binary: Option<(&'static [u8], &'static str)>,
    /// Days since 1970-01-01 and `YYYY-MM-DD`.
    date: Option<(i32, &'static str)>,
    timestamp: Option<Time>,
    vec32: Option<[f32; 3]>,
    vec64: Option<[f64; 2]>,
}

const NULLS: Row = Row {
    entity: 0,
    at: MIN,
    bool: None,
    int32: None,
    int64: None,
    float32: None,
    float64: None,
    string: None,
    binary: None,
    date: None,
    timestamp: None,
    vec32: None,
    vec64: None,
};

/// Rows in ingest order. Entity 0: all nulls at the earliest time, then the greatest values;
/// entity 1: the least values, and an older row ingested after them; entity 2: mixed, at the
/// latest time.
fn rows() -> Vec<Row> {
    vec![
        NULLS,
        Row {
            entity: 0,
            at: Y2026,
            bool: Some(true),
            int32: Some(i32::MAX),
            int64: Some(i64::MAX),
            float32: Some(f32::MAX),
            float64: Some(f64::MAX),
            string: Some("ünïcödé ✓ \"quoted\"\n"),
            binary: Some((&[0, 255, 1], "AP8B")),
            date: Some((2_932_896, "9999-12-31")),
            timestamp: Some(MAX),
            // Not -0.0 in a vector: DuckDB's ASOF join gives it back as 0.0 (docs/api.md).
            vec32: Some([1.5, -1e-45, f32::MIN_POSITIVE]),
            vec64: Some([1e-300, -2.5]),
        },
        Row {
            entity: 1,
            at: Time(1_767_225_600_000_001, "2026-01-01T00:00:00.000001Z"),
            bool: Some(false),
            int32: Some(i32::MIN),
            int64: Some(i64::MIN),
            float32: Some(-0.1),
            float64: Some(-0.0),
            string: Some(""),
            binary: Some((&[], "")),
            date: Some((-719_162, "0001-01-01")),
            timestamp: Some(MIN),
            vec32: Some([f32::MAX, f32::MIN, 1e-45]),
            vec64: Some([f64::MIN_POSITIVE, f64::MIN]),
        },
        Row {
            entity: 1,
            at: Time(-1, "1969-12-31T23:59:59.999999Z"),
            bool: Some(true),
            int32: Some(7),
            int64: Some(-7),
            float32: Some(0.25),
            float64: Some(1e-300),
            string: Some("old"),
            binary: Some((b"old", "b2xk")),
            date: Some((-1, "1969-12-31")),
            timestamp: Some(Time(-1, "1969-12-31T23:59:59.999999Z")),
            vec32: None,
            vec64: Some([1.0, 2.0]),
        },
        Row {
            entity: 2,
            at: MAX,
            int32: Some(0),
            float64: Some(3.25),
            binary: Some((&[0], "AA==")),
            timestamp: Some(Y2026),
            vec32: Some([1.0, 2.0, 3.0]),
            ..NULLS
        },
    ]
}

#[derive(Clone, Copy, Debug)]
enum Keys {
    String,
    Int64,
}

impl Keys {
    fn name(self) -> &'static str {
        match self {
            Keys::String => "string",
            Keys::Int64 => "int64",
        }
    }

    /// Entity keys in ascending order (bytes for strings), then an unknown one.
    fn json(self, entity: usize) -> Value {
        match self {
            Keys::String => json!(["a", "bé", "c", "zz"][entity]),
            Keys::Int64 => json!([i64::MIN, 0, i64::MAX, 42][entity]),
        }
    }

    fn array(self, entities: &[usize]) -> ArrayRef {
        match self {
            Keys::String => Arc::new(StringArray::from_iter_values(
                entities
                    .iter()
                    .map(|&e| self.json(e).as_str().unwrap().to_owned()),
            )),
            Keys::Int64 => Arc::new(Int64Array::from_iter_values(
                entities.iter().map(|&e| self.json(e).as_i64().unwrap()),
            )),
        }
    }
}

const UNKNOWN: usize = 3;

/// One feature of each row; a missing row gives null.
fn cells<T>(rows: &[Option<&Row>], feature: impl Fn(&Row) -> Option<T>) -> Vec<Option<T>> {
    rows.iter().map(|r| r.and_then(&feature)).collect()
}

/// The feature columns of `rows` (a missing row is all nulls), in spec order.
fn feature_arrays(rows: &[Option<&Row>]) -> Vec<ArrayRef> {
    let mut vec32 = FixedSizeListBuilder::new(Float32Builder::new(), 3);
    let mut vec64 = FixedSizeListBuilder::new(Float64Builder::new(), 2);
    for row in rows {
        match row.and_then(|r| r.vec32) {
            Some(v) => {
                vec32.values().append_slice(&v);
                vec32.append(true);
            }
            None => {
                vec32.values().append_nulls(3);
                vec32.append(false);
            }
        }
        match row.and_then(|r| r.vec64) {
            Some(v) => {
                vec64.values().append_slice(&v);
                vec64.append(true);
            }
            None => {
                vec64.values().append_nulls(2);
                vec64.append(false);
            }
        }
    }
    vec![
        Arc::new(BooleanArray::from(cells(rows, |r| r.bool))),
        Arc::new(Int32Array::from(cells(rows, |r| r.int32))),
        Arc::new(Int64Array::from(cells(rows, |r| r.int64))),
        Arc::new(Float32Array::from(cells(rows, |r| r.float32))),
        Arc::new(Float64Array::from(cells(rows, |r| r.float64))),
        Arc::new(StringArray::from(cells(rows, |r| r.string))),
        Arc::new(BinaryArray::from(cells(rows, |r| r.binary.map(|b| b.0)))),
        Arc::new(Date32Array::from(cells(rows, |r| r.date.map(|d| d.0)))),
        Arc::new(
            TimestampMicrosecondArray::from(cells(rows, |r| r.timestamp.map(|t| t.0)))
                .with_timezone("UTC"),
        ),
        Arc::new(vec32.finish()),
        Arc::new(vec64.finish()),
    ]
}

fn times(times: impl IntoIterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from_iter(times).with_timezone("UTC"))
}

/// A batch of the set's canonical columns: entity, features, event time.
fn canonical(keys: Keys, entities: &[usize], rows: &[Option<&Row>]) -> RecordBatch {
    let mut columns = vec![("id".to_string(), keys.array(entities))];
    columns.extend(
        FEATURE_NAMES
            .iter()
            .map(|n| n.to_string())
            .zip(feature_arrays(rows)),
    );
    columns.push((
        "event_timestamp".into(),
        times(rows.iter().map(|r| r.map(|r| r.at.0))),
    ));
    RecordBatch::try_from_iter(columns).unwrap()
}

fn json_features(row: Option<&Row>) -> serde_json::Map<String, Value> {
    // float32 is written by its shortest round-trip digits (docs/api.md): 0.1, not the
    // digits of its float64 widening.
    let float = |x: f32| json!(x.to_string().parse::<f64>().unwrap());
    let cells = match row {
        None => vec![Value::Null; FEATURE_NAMES.len()],
        Some(r) => vec![
            json!(r.bool),
            json!(r.int32),
            json!(r.int64),
            r.float32.map_or(Value::Null, float),
            json!(r.float64),
            json!(r.string),
            json!(r.binary.map(|b| b.1)),
            json!(r.date.map(|d| d.1)),
            json!(r.timestamp.map(|t| t.1)),
            r.vec32
                .map_or(Value::Null, |v| Value::Array(v.map(float).to_vec())),
            json!(r.vec64),
        ],
    };
    FEATURE_NAMES
        .iter()
        .map(|n| n.to_string())
        .zip(cells)
        .collect()
}

/// A row as the HTTP API writes it (and as the JSON ingest takes it).
fn json_row(keys: Keys, entity: usize, row: Option<&Row>) -> Value {
    let mut object = json_features(row);
    object.insert("id".into(), keys.json(entity));
    object.insert("event_timestamp".into(), json!(row.map(|r| r.at.1)));
    Value::Object(object)
}

fn read_ipc(bytes: &[u8]) -> RecordBatch {
    concat(&http::read_ipc(bytes))
}

/// Column by column: names, types and values (null slots excepted) must be equal.
fn assert_same(got: &RecordBatch, want: &RecordBatch, what: &str) {
    let names = column_names(want);
    assert_eq!(column_names(got), names, "{what}: columns");
    for (i, (g, w)) in got.columns().iter().zip(want.columns()).enumerate() {
        assert_eq!(g.data_type(), w.data_type(), "{what}: type of column {i}");
        assert_eq!(
            g.to_data(),
            w.to_data(),
            "{what}: column {} ({})\n got {g:?}\nwant {w:?}",
            i,
            names[i]
        );
    }
}

/// How a set's rows go in.
#[derive(Clone, Copy, Debug)]
enum Ingest {
    DoPut,
    HttpJson,
    HttpArrow,
}

async fn ingest(server: &TestServer, path: Ingest, set: &str, keys: Keys, rows: &[Row]) {
    let all: Vec<Option<&Row>> = rows.iter().map(Some).collect();
    let entities: Vec<usize> = rows.iter().map(|r| r.entity).collect();
    let batch = canonical(keys, &entities, &all);
    let url = format!("{}/v1/feature-sets/{set}/rows", server.http);
    match path {
        Ingest::DoPut => {
            // Two batches: two acknowledgements.
            let mut client = server.flight().await;
            let (acks, error) =
                put(&mut client, set, vec![batch.slice(0, 2), batch.slice(2, 3)]).await;
            assert!(error.is_none(), "{path:?} {keys:?}: {error:?}");
            assert_eq!(acks.len(), 2);
        }
        Ingest::HttpJson => {
            let body = json!({"rows": rows.iter().map(|r| json_row(keys, r.entity, Some(r))).collect::<Vec<_>>()});
            let response = http().post(url).json(&body).send().await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::OK,
                "{}",
                response.text().await.unwrap()
            );
        }
        Ingest::HttpArrow => {
            // Columns in another order, in two record batches: still one batch.
            let reversed: Vec<usize> = (0..batch.num_columns()).rev().collect();
            let batch = batch.project(&reversed).unwrap();
            let body = ipc_body(&[batch.slice(0, 3), batch.slice(3, 2)]);
            let response = http()
                .post(url)
                .header("content-type", ARROW)
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::OK,
                "{}",
                response.text().await.unwrap()
            );
        }
    }
}

async fn post_json(url: String, body: Value) -> Value {
    let (status, answer) = http::post_json(&url, &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer
}

async fn post_arrow(url: String, body: Vec<u8>, content_type: &str) -> RecordBatch {
    let response = http()
        .post(url)
        .header("content-type", content_type)
        .header("accept", ARROW)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.bytes().await.unwrap();
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    read_ipc(&bytes)
}

/// Reads a set back every way and compares with `rows`.
async fn check_reads(server: &TestServer, set: &str, keys: Keys, rows: &[Row], what: &str) {
    let mut client = server.flight().await;
    let base = &server.http;

    // Online: newest per entity; an unknown key and a duplicate in the request.
    let asked = [2, UNKNOWN, 0, 1, 0];
    let latest = |e: usize| rows.iter().filter(|r| r.entity == e).max_by_key(|r| r.at.0);
    let online_rows: Vec<Option<&Row>> = asked.iter().map(|&e| latest(e)).collect();
    let want = canonical(keys, &asked, &online_rows);
    let ticket =
        json!({"type": "online", "feature_set": set, "entities": asked.map(|e| keys.json(e))});
    let got = concat(&get(&mut client, ticket.clone()).await.unwrap());
    assert_same(&got, &want, &format!("{what}: online over DoGet"));
    let got = post_arrow(
        format!("{base}/v1/online"),
        ticket.to_string().into_bytes(),
        "application/json",
    )
    .await;
    assert_same(&got, &want, &format!("{what}: online over HTTP Arrow"));
    let got = post_json(format!("{base}/v1/online"), ticket).await;
    let want_json: Vec<Value> = asked
        .iter()
        .zip(&online_rows)
        .map(|(&e, r)| json_row(keys, e, *r))
        .collect();
    assert_eq!(
        got["rows"],
        json!(want_json),
        "{what}: online over HTTP JSON"
    );

    // History: by entity, then time; and a range [2026-01-01, 9999-12-31T23:59:59.999999Z).
    let mut ordered: Vec<&Row> = rows.iter().collect();
    ordered.sort_by_key(|r| (r.entity, r.at.0));
    for (range, start, end) in [(false, None, None), (true, Some(Y2026), Some(MAX))] {
        let chosen: Vec<&Row> = ordered
            .iter()
            .copied()
            .filter(|r| start.is_none_or(|s| r.at.0 >= s.0) && end.is_none_or(|e| r.at.0 < e.0))
            .collect();
        let entities: Vec<usize> = chosen.iter().map(|r| r.entity).collect();
        let chosen: Vec<Option<&Row>> = chosen.into_iter().map(Some).collect();
        let want = canonical(keys, &entities, &chosen);
        let mut ticket = json!({"type": "history", "feature_set": set});
        if range {
            ticket["start"] = json!(start.map(|t| t.1));
            ticket["end"] = json!(end.map(|t| t.1));
        }
        let what = format!("{what}: history (range {range})");
        let got = concat(&get(&mut client, ticket.clone()).await.unwrap());
        assert_same(&got, &want, &format!("{what} over DoGet"));
        let got = post_json(format!("{base}/v1/history"), ticket).await;
        let want_json: Vec<Value> = entities
            .iter()
            .zip(&chosen)
            .map(|(&e, r)| json_row(keys, e, *r))
            .collect();
        assert_eq!(got["rows"], json!(want_json), "{what} over HTTP JSON");
    }

    // Training data: point in time, from before the first row to the last instant.
    let asks: [(usize, Time); 8] = [
        (0, MIN),
        (0, Time(Y2026.0 - 1, "")),
        (0, Y2026),
        (1, Time(-2, "")),
        (1, Y2026),
        (1, MAX),
        (2, MAX),
        (UNKNOWN, MAX),
    ];
    let as_of = |e: usize, t: i64| {
        rows.iter()
            .enumerate()
            .filter(|(_, r)| r.entity == e && r.at.0 <= t)
            .max_by_key(|(i, r)| (r.at.0, *i))
            .map(|(_, r)| r)
    };
    let entities: Vec<usize> = asks.iter().map(|a| a.0).collect();
    let input = RecordBatch::try_from_iter(vec![
        ("id", keys.array(&entities)),
        ("event_timestamp", times(asks.iter().map(|a| Some(a.1 .0)))),
        (
            "label",
            Arc::new(Int64Array::from_iter_values(0..asks.len() as i64)) as ArrayRef,
        ),
    ])
    .unwrap();
    let found: Vec<Option<&Row>> = asks.iter().map(|&(e, t)| as_of(e, t.0)).collect();
    let mut columns: Vec<(String, ArrayRef)> = input
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .zip(input.columns().iter().cloned())
        .collect();
    columns.extend(
        FEATURE_NAMES
            .iter()
            .map(|n| n.to_string())
            .zip(feature_arrays(&found)),
    );
    let want = RecordBatch::try_from_iter(columns).unwrap();
    let command = json!({"type": "training_data", "features": [format!("{set}:*")]});
    let got = concat(
        &exchange(
            server,
            command.clone(),
            vec![input.slice(0, 3), input.slice(3, 5)],
        )
        .await
        .unwrap(),
    );
    assert_same(
        &got,
        &want,
        &format!("{what}: training data over DoExchange"),
    );
    let got = post_arrow(
        format!("{base}/v1/training-data?features={set}:*"),
        ipc_body(&[input]),
        ARROW,
    )
    .await;
    assert_same(&got, &want, &format!("{what}: training data over HTTP"));
}

async fn matrix(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.flight().await;
    let rows = rows();
    for keys in [Keys::String, Keys::Int64] {
        for path in [Ingest::DoPut, Ingest::HttpJson, Ingest::HttpArrow] {
            let set = format!("m_{}_{}", keys.name(), format!("{path:?}").to_lowercase());
            let spec = format!(
                r#"{{"name": "{set}", "entity": {{"name": "id", "type": "{}"}}, "features": {FEATURES}}}"#,
                keys.name()
            );
            action(&mut client, "create_feature_set", &spec)
                .await
                .unwrap();
            ingest(&server, path, &set, keys, &rows).await;
            let what = format!("{backend:?}, {keys:?} keys, ingest by {path:?}");
            check_reads(&server, &set, keys, &rows, &what).await;
        }
    }
    // The online index is rebuilt from storage at startup: the same answers after a restart.
    let server = server.restart().await;
    for keys in [Keys::String, Keys::Int64] {
        let set = format!("m_{}_doput", keys.name());
        check_reads(
            &server,
            &set,
            keys,
            &rows,
            &format!("{backend:?}, {keys:?} keys, restarted"),
        )
        .await;
    }
}

#[tokio::test]
async fn every_type_every_path_duckdb() {
    matrix(Backend::Duckdb).await;
}

#[tokio::test]
async fn every_type_every_path_parquet() {
    matrix(Backend::Parquet).await;
}

/// Sends a request that must be refused with 400 / invalid_argument; answers the message.
async fn bad_request(request: reqwest::RequestBuilder) -> String {
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_argument", "{body}");
    body["error"]["message"].as_str().unwrap().to_owned()
}

const RANGE: &str = "0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z";

/// Values the store cannot represent, format and join are refused on every path, with
/// INVALID_ARGUMENT / 400 naming column, row and value, and nothing of the request is stored.
#[tokio::test]
async fn out_of_range_values_are_refused_on_every_path() {
    use arrow::array::{TimestampMillisecondArray, TimestampSecondArray};
    for backend in BACKENDS {
        let server = TestServer::start(backend).await;
        let mut client = server.flight().await;
        let spec = format!(
            r#"{{"name": "r", "entity": {{"name": "id", "type": "string"}}, "features": {FEATURES}}}"#
        );
        action(&mut client, "create_feature_set", &spec)
            .await
            .unwrap();
        let good_time: ArrayRef = Arc::new(TimestampSecondArray::from(vec![0, 1]));
        // Two rows of "id", "event_timestamp" (`time`), and `feature` if given.
        let two_rows = |time: ArrayRef, feature: Option<(&str, ArrayRef)>| {
            let mut columns: Vec<(&str, ArrayRef)> = vec![
                ("id", Arc::new(StringArray::from(vec!["a", "b"]))),
                ("event_timestamp", time),
            ];
            columns.extend(feature);
            RecordBatch::try_from_iter(columns).unwrap()
        };
        let batches: Vec<(RecordBatch, Vec<&str>)> = vec![
            (
                two_rows(
                    Arc::new(TimestampSecondArray::from(vec![0, i64::MIN])),
                    None,
                ),
                vec!["\"event_timestamp\" row 1", "-9223372036854775808", RANGE],
            ),
            (
                two_rows(
                    good_time.clone(),
                    Some((
                        "f_timestamp",
                        Arc::new(TimestampMillisecondArray::from(vec![Some(1 << 62), None])),
                    )),
                ),
                vec!["\"f_timestamp\" row 0", "4611686018427387904", RANGE],
            ),
            (
                two_rows(
                    good_time,
                    Some((
                        "f_date",
                        Arc::new(Date32Array::from(vec![None, Some(i32::MIN)])),
                    )),
                ),
                vec![
                    "\"f_date\" row 1",
                    "-2147483648",
                    "0001-01-01 to 9999-12-31",
                ],
            ),
            (
                two_rows(
                    Arc::new(TimestampSecondArray::from(vec![0, 1]).with_timezone("Nowhere/City")),
                    None,
                ),
                vec!["\"event_timestamp\"", "Nowhere/City"],
            ),
        ];
        for (batch, needles) in &batches {
            let (acks, error) = put(&mut client, "r", vec![batch.clone()]).await;
            let error = error.expect("refused");
            assert!(acks.is_empty());
            assert_eq!(error.code(), tonic::Code::InvalidArgument, "{error}");
            let message = bad_request(
                http()
                    .post(format!("{}/v1/feature-sets/r/rows", server.http))
                    .header("content-type", ARROW)
                    .body(ipc_body(std::slice::from_ref(batch))),
            )
            .await;
            for message in [error.message(), message.as_str()] {
                for needle in needles {
                    assert!(
                        message.contains(needle),
                        "{backend:?}: {message:?} lacks {needle:?}"
                    );
                }
            }
        }
        let json_cases = [
            (
                json!({"id": "a", "event_timestamp": "0000-12-31T23:59:59Z"}),
                "event_timestamp",
            ),
            (
                json!({"id": "a", "event_timestamp": "2026-01-01T00:00:00Z", "f_timestamp": "9999-12-31T23:59:59-01:00"}),
                "f_timestamp",
            ),
            (
                json!({"id": "a", "event_timestamp": "2026-01-01T00:00:00Z", "f_float32": 1e39}),
                "f_float32",
            ),
        ];
        for (row, column) in json_cases {
            let body =
                json!({"rows": [{"id": "ok", "event_timestamp": "2026-01-01T00:00:00Z"}, row]});
            let message = bad_request(
                http()
                    .post(format!("{}/v1/feature-sets/r/rows", server.http))
                    .json(&body),
            )
            .await;
            assert!(
                message.contains("row 1") && message.contains(column),
                "{message}"
            );
        }
        let stats = action(&mut client, "get_feature_set", r#"{"name": "r"}"#)
            .await
            .unwrap();
        assert_eq!(stats["stats"]["rows"], 0, "{backend:?}: nothing stored");

        // Times in requests: history bounds and training entity rows.
        let err = get(
            &mut client,
            json!({"type": "history", "feature_set": "r", "start": "0000-01-01T00:00:00Z"}),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("out of range"), "{err}");
        let entity_rows = RecordBatch::try_from_iter(vec![
            (
                "id",
                Arc::new(StringArray::from(vec!["a", "b", "c"])) as ArrayRef,
            ),
            (
                "event_timestamp",
                Arc::new(TimestampMillisecondArray::from(vec![0, 0, 1 << 62])) as ArrayRef,
            ),
        ])
        .unwrap();
        let command = json!({"type": "training_data", "features": ["r:f_int32"]});
        let err = exchange(
            &server,
            command,
            vec![entity_rows.slice(0, 1), entity_rows.slice(1, 2)],
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
        assert!(
            err.message().contains("row 2") && err.message().contains("4611686018427387904"),
            "{err}"
        );
        let message = bad_request(
            http()
                .post(format!(
                    "{}/v1/training-data?features=r:f_int32",
                    server.http
                ))
                .header("content-type", ARROW)
                .body(ipc_body(&[entity_rows])),
        )
        .await;
        assert!(
            message.contains("row 2") && message.contains(RANGE),
            "{message}"
        );
    }
}
