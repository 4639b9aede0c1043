//! HTTP calls as the suites make them: a JSON answer with its status, the documented error
//! body, Arrow IPC bodies both ways, the metrics text.

use std::io::Cursor;

use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use reqwest::StatusCode;
use serde_json::Value;

use crate::flight::{within, CALL_TIMEOUT};

/// The media type of Arrow IPC stream bodies.
pub const ARROW: &str = "application/vnd.apache.arrow.stream";

pub fn http() -> reqwest::Client {
    reqwest::Client::new()
}

/// Sends `request`: the status, and the body as JSON (`Null` when it is not JSON).
pub async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let call = async {
        let response = request
            .send()
            .await
            .expect("an answer, not a dropped connection");
        let status = response.status();
        let text = response.text().await.expect("a whole body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    };
    within(CALL_TIMEOUT, "an HTTP request", call).await
}

/// `GET url`: status and JSON body.
pub async fn get_json(url: &str) -> (StatusCode, Value) {
    send(http().get(url)).await
}

/// `POST url` with a JSON body: status and JSON body.
pub async fn post_json(url: &str, body: &Value) -> (StatusCode, Value) {
    send(http().post(url).json(body)).await
}

/// Asserts the documented error answer: `status`, `{"error": {"code": code, "message": ...}}`
/// with `needle` in the message.
pub fn assert_error(answer: &(StatusCode, Value), status: StatusCode, code: &str, needle: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["error"]["code"], code, "{}", answer.1);
    let message = answer.1["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("an error message in {}", answer.1));
    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
}

/// `batches` as an Arrow IPC stream body.
pub fn ipc_body(batches: &[RecordBatch]) -> Vec<u8> {
    let mut body = Vec::new();
    let mut writer = StreamWriter::try_new(&mut body, &batches[0].schema()).expect("IPC writer");
    for batch in batches {
        writer.write(batch).expect("IPC write");
    }
    writer.finish().expect("IPC end of stream");
    drop(writer);
    body
}

/// The batches of an Arrow IPC stream body.
pub fn read_ipc(bytes: &[u8]) -> Vec<RecordBatch> {
    StreamReader::try_new(Cursor::new(bytes), None)
        .expect("an Arrow IPC stream")
        .collect::<Result<_, _>>()
        .expect("Arrow IPC batches")
}

/// `GET url`: the body as text; panics unless it answers.
pub async fn text(url: &str) -> String {
    let call = async {
        http()
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .text()
            .await
            .expect("a whole body")
    };
    within(CALL_TIMEOUT, "GET", call).await
}

/// The value of the sample line starting with `sample` (name and labels) in Prometheus
/// `text`; 0 when there is none (a counter not yet moved).
pub fn metric(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0.0)
}
