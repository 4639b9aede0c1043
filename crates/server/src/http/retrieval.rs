//! `/v1/online` and `/v1/history`: rows as JSON `{"rows": [...]}`, or an Arrow IPC stream
//! with `Accept: application/vnd.apache.arrow.stream`. History is streamed as it is read.

use arrow::array::RecordBatch;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use featherstore_core::json::write_rows;
use featherstore_core::{HistoryTicket, OnlineTicket};
use http::HeaderMap;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use super::arrow_ipc::IpcChunks;
use super::{parse_json, read_body, streamed, wants_arrow, ARROW_STREAM};
use crate::error::{ApiError, ApiResult};
use crate::service::AppState;

const JSON: &str = "application/json";
/// Encoded chunks buffered between the storage thread and the client.
const HISTORY_BUFFER: usize = 4;

/// The ticket of a route: its JSON body, where a `"type"` field is optional but must match.
fn ticket_body<T: serde::de::DeserializeOwned>(body: &[u8], kind: &str) -> ApiResult<T> {
    let mut value: Value = parse_json(body, &format!("{kind} request"))?;
    if let Some(object) = value.as_object_mut() {
        match object.remove("type") {
            None => {}
            Some(Value::String(t)) if t == kind => {}
            Some(other) => {
                return Err(ApiError::invalid(format!(
                    "\"type\" is {other} but this route takes {kind:?} requests"
                )))
            }
        }
    }
    serde_json::from_value(value)
        .map_err(|e| ApiError::invalid(format!("invalid {kind} request: {e}")))
}

pub async fn online(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let body = read_body(&state, body).await?;
    let ticket: OnlineTicket = ticket_body(&body, "online")?;
    let batch = state.store.online(&ticket)?;
    Ok(if wants_arrow(&headers) {
        let mut ipc = IpcChunks::new(&batch.schema())?;
        let mut bytes = ipc.batch(&batch)?.to_vec();
        bytes.extend_from_slice(&ipc.finish()?);
        streamed(ARROW_STREAM, Body::from(bytes))
    } else {
        streamed(JSON, Body::from(json_rows(&[batch])?))
    })
}

fn json_rows(batches: &[RecordBatch]) -> ApiResult<Vec<u8>> {
    let mut out = b"{\"rows\":[".to_vec();
    let mut first = true;
    for batch in batches {
        write_rows(batch, &mut out, &mut first)?;
    }
    out.extend_from_slice(b"]}");
    Ok(out)
}

/// How history batches become body chunks.
enum Encoding {
    Json { first: bool },
    Arrow(IpcChunks),
}

impl Encoding {
    fn start(&mut self) -> ApiResult<Bytes> {
        Ok(match self {
            Encoding::Json { .. } => Bytes::from_static(b"{\"rows\":["),
            Encoding::Arrow(_) => Bytes::new(),
        })
    }

    fn batch(&mut self, batch: &RecordBatch) -> ApiResult<Bytes> {
        match self {
            Encoding::Json { first } => {
                let mut out = Vec::new();
                write_rows(batch, &mut out, first)?;
                Ok(Bytes::from(out))
            }
            Encoding::Arrow(ipc) => ipc.batch(batch),
        }
    }

    fn finish(&mut self) -> ApiResult<Bytes> {
        match self {
            Encoding::Json { .. } => Ok(Bytes::from_static(b"]}")),
            Encoding::Arrow(ipc) => ipc.finish(),
        }
    }
}

pub async fn history(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let body = read_body(&state, body).await?;
    let ticket: HistoryTicket = ticket_body(&body, "history")?;
    let (set, query) = state.store.plan_history(&ticket)?;
    let schema = set.spec.projected_schema(&query.features, false);
    let (mut encoding, content_type) = if wants_arrow(&headers) {
        (Encoding::Arrow(IpcChunks::new(&schema)?), ARROW_STREAM)
    } else {
        (Encoding::Json { first: true }, JSON)
    };

    // Errors after the 200 has been sent can only end the body early: they are logged, and
    // the client sees a truncated body (invalid JSON, or an IPC stream without its end).
    let (tx, rx) = mpsc::channel::<Result<Bytes, ApiError>>(HISTORY_BUFFER);
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || {
        let send = |chunk: ApiResult<Bytes>| {
            tx.blocking_send(chunk)
                .map_err(|_| featherstore_store::Error::Cancelled)
        };
        let result = send(encoding.start()).and_then(|()| {
            store.scan_history(&set, &query, &mut |batch| send(encoding.batch(&batch)))
        });
        let _ = match result {
            Ok(()) => send(encoding.finish()),
            Err(featherstore_store::Error::Cancelled) => Ok(()),
            Err(e) => send(Err(e.into())),
        };
    });
    let body = ReceiverStream::new(rx).map(|chunk| {
        chunk.map_err(|e| {
            tracing::error!(error = %e, "history stream failed after the response started");
            std::io::Error::other(e.to_string())
        })
    });
    Ok(streamed(content_type, Body::from_stream(body)))
}
