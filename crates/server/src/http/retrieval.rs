//! `/v1/online` and `/v1/history`: rows as JSON `{"rows": [...]}`, or an Arrow IPC stream
//! with `Accept: application/vnd.apache.arrow.stream`. History is streamed as it is read.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::response::Response;
use bytes::Bytes;
use featherstore_core::json::write_rows;
use featherstore_core::{AsOf, HistoryTicket, OnlineRequest, TrainingDataCommand};
use http::HeaderMap;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tracing::Instrument;

use super::arrow_ipc::{self, IpcChunks};
use super::{read_body, streamed, wants_arrow, ARROW_STREAM};
use crate::auth::Access;
use crate::error::{ApiError, ApiResult};
use crate::service::AppState;
use crate::telemetry::metrics::Api;

const JSON: &str = "application/json";
/// A guess of a JSON cell's size (key and value) to size an answer's buffer once.
const JSON_BYTES_PER_CELL: usize = 16;

pub(super) async fn online(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let body = read_body(&state, body).await?;
    let batch = match OnlineRequest::from_json(&body)? {
        OnlineRequest::Set(ticket) => {
            access.require_set(&ticket.feature_set)?;
            state.online(&ticket).await?
        }
        OnlineRequest::Multi(ticket) => state.online_multi(&access, &ticket).await?,
    };
    let (encoding, content_type) = Encoding::negotiate(&headers, &batch.schema())?;
    Ok(streamed(content_type, Body::from(encoding.whole(&batch)?)))
}

/// How history batches become body chunks.
enum Encoding {
    Json { first: bool },
    Arrow(IpcChunks),
}

impl Encoding {
    /// The encoding the client asked for (`Accept`), and its content type.
    fn negotiate(headers: &HeaderMap, schema: &SchemaRef) -> ApiResult<(Self, &'static str)> {
        Ok(if wants_arrow(headers) {
            (Encoding::Arrow(IpcChunks::new(schema)?), ARROW_STREAM)
        } else {
            (Encoding::Json { first: true }, JSON)
        })
    }

    /// One batch as a whole body.
    fn whole(mut self, batch: &RecordBatch) -> ApiResult<Vec<u8>> {
        if let Encoding::Json { first } = &mut self {
            // Rows written straight into the body: no chunk per part to copy together.
            let mut body = Vec::with_capacity(
                JSON_BYTES_PER_CELL * batch.num_rows() * batch.num_columns() + 16,
            );
            body.extend_from_slice(b"{\"rows\":[");
            write_rows(batch, &mut body, first)?;
            body.extend_from_slice(b"]}");
            return Ok(body);
        }
        let mut body = self.start()?.to_vec();
        body.extend_from_slice(&self.batch(batch)?);
        body.extend_from_slice(&self.finish()?);
        Ok(body)
    }

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

pub(super) async fn history(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let body = read_body(&state, body).await?;
    let ticket = HistoryTicket::from_json(&body)?;
    access.require_set(&ticket.feature_set)?;
    let (schema, batches) = state.history((Api::Http, "POST /v1/history (stream)"), &ticket)?;
    let (encoding, content_type) = Encoding::negotiate(&headers, &schema)?;
    // A store that cannot be read (an unreachable object store) fails before the first
    // batch: that is a 503, not a 200 whose body breaks off.
    let batches = after_first(batches).await?;
    Ok(streamed(content_type, encoded_body(encoding, batches)))
}

/// Waits for the first item of `batches`: its error, or the whole stream again. Failures
/// before any result (a bad input, an unreachable store) then get their own status instead
/// of a 200 whose stream breaks off.
async fn after_first<S>(mut batches: S) -> ApiResult<impl Stream<Item = S::Item> + Unpin>
where
    S: Stream<Item = ApiResult<RecordBatch>> + Unpin,
{
    let first = match batches.next().await {
        Some(Err(e)) => return Err(e),
        first => first,
    };
    Ok(tokio_stream::iter(first).chain(batches))
}

/// `POST /v1/training-data`: an Arrow IPC stream of entity rows in, the rows with their
/// point-in-time features out (Arrow IPC). The command comes as query parameters
/// (`features=a:x,b:*&timestamp=..&full_names=true`) or whole, as JSON, in the
/// `X-FeatherStore-Command` header.
pub(super) async fn training_data(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    params: Result<Query<TrainingParams>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let Query(params) = params?;
    let command = state.training_command(&access, training_command(params, &headers)?)?;
    let body = read_body(&state, body).await?;
    let (schema, entity_batches) = arrow_ipc::decode_batches(body)?;
    let plan = state.store.plan_training(&command, schema)?;
    let encoding = Encoding::Arrow(IpcChunks::new(&plan.output_schema)?);
    let counted_as = (Api::Http, "POST /v1/training-data (stream)");
    let batches = state.training_data(counted_as, plan, entity_batches.into_iter().map(Ok));
    // The entity rows are all read and checked before the join's first result: waiting for
    // it lets a bad entity row (a time out of range, say) be a 400.
    let batches = after_first(batches).await?;
    Ok(streamed(ARROW_STREAM, encoded_body(encoding, batches)))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TrainingParams {
    features: Option<String>,
    /// A feature service, in place of `features`.
    feature_service: Option<String>,
    timestamp: Option<String>,
    full_names: Option<bool>,
    /// `event_time` (the default) or `ingest_time`; checked by the command.
    as_of: Option<String>,
}

const COMMAND_HEADER: &str = "x-featherstore-command";

fn training_command(params: TrainingParams, headers: &HeaderMap) -> ApiResult<TrainingDataCommand> {
    if let Some(header) = headers.get(COMMAND_HEADER) {
        return Ok(TrainingDataCommand::from_json(header.as_bytes())?);
    }
    if params.features.is_none() && params.feature_service.is_none() {
        return Err(ApiError::invalid(
            "training data needs ?features=set:feature,set:*, ?feature_service=name or an X-FeatherStore-Command header",
        ));
    }
    let features = params.features.unwrap_or_default();
    let command = serde_json::json!({
        "type": "training_data",
        "features": features.split(',').map(str::trim).filter(|f| !f.is_empty()).collect::<Vec<_>>(),
        "feature_service": params.feature_service,
        "timestamp": params.timestamp.unwrap_or_else(|| featherstore_core::spec::DEFAULT_TIMESTAMP.into()),
        "full_names": params.full_names.unwrap_or(false),
        "as_of": params.as_of.unwrap_or_else(|| AsOf::default().as_str().into()),
    });
    Ok(TrainingDataCommand::from_json(
        command.to_string().as_bytes(),
    )?)
}

/// Encodes a stream of result batches as body chunks on a task of its own. A failure after
/// the 200 was sent can only end the body early: it is logged, and the client sees a
/// truncated body (invalid JSON, or an IPC stream without its end marker).
fn encoded_body(
    mut encoding: Encoding,
    mut batches: impl Stream<Item = ApiResult<RecordBatch>> + Send + Unpin + 'static,
) -> Body {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    tokio::spawn(
        async move {
            let chunks = async {
                tx.send(Ok(encoding.start()?)).await.ok();
                loop {
                    // The client may go away while the query has no batch yet (a sort runs
                    // whole before its first): then stop waiting, which cancels the query.
                    let batch = tokio::select! {
                        batch = batches.next() => batch,
                        () = tx.closed() => return Ok(()),
                    };
                    let Some(batch) = batch else { break };
                    if tx.send(Ok(encoding.batch(&batch?)?)).await.is_err() {
                        return Ok(()); // the client went away
                    }
                }
                tx.send(Ok(encoding.finish()?)).await.ok();
                Ok::<(), ApiError>(())
            };
            if let Err(e) = chunks.await {
                tracing::error!(error = %e, "response stream failed after it started");
                let _ = tx.send(Err(std::io::Error::other(e))).await;
            }
        }
        .instrument(tracing::Span::current()),
    );
    Body::from_stream(ReceiverStream::new(rx))
}
