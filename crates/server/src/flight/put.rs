//! DoPut: ingest. Each decoded batch is stored durably, then acknowledged with one PutResult
//! `{"batch": i, "rows": n}`; the first rejected batch ends the call with its error.

use std::time::Instant;

use arrow::buffer::Buffer;
use arrow_flight::{FlightData, PutResult};
use bytes::Bytes;
use featherstore_core::ipc::{Decoded, MessageDecoder};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};
use tracing::Instrument;

use super::{stream_error, FlightStream};
use crate::auth::Access;
use crate::error::{ApiError, ApiResult};
use crate::service::{report_failure, set_from_path, AppState};
use crate::telemetry::metrics::Api;

/// Acknowledgements buffered for a slow client before ingest pauses.
const ACK_BUFFER: usize = 2;

pub(super) async fn do_put(
    state: AppState,
    access: &Access,
    mut input: Streaming<FlightData>,
) -> ApiResult<FlightStream<PutResult>> {
    let idle = state.guards.stream_idle;
    let first = tokio::time::timeout(idle, input.message())
        .await
        .map_err(|_| state.guards.input_idle("DoPut"))?
        .map_err(stream_error)?
        .ok_or_else(|| ApiError::invalid("DoPut sent no messages"))?;
    let descriptor = first.flight_descriptor.clone().ok_or_else(|| {
        ApiError::invalid(
            "the first DoPut message must carry a descriptor with path [feature_set_name]",
        )
    })?;
    super::sql::refuse_put(&descriptor)?;
    let name = set_from_path(&descriptor.path)?;
    access.require_set(&name)?;
    state.require_set(&name)?;

    let mut messages = futures::stream::iter([Ok(first)]).chain(input);
    let mut decoder = MessageDecoder::new();
    let (tx, rx) = mpsc::channel(ACK_BUFFER);
    let failure_tx = tx.clone();
    // The batches are stored after the handler returns, in the call's span: it lasts until
    // the last one, and its `rows` is the total stored.
    let span = tracing::Span::current();
    span.record("feature_set", name.as_str());
    let task_span = span.clone();
    let ingest = tokio::spawn(
        async move {
            let started = Instant::now();
            let mut index = 0usize;
            let mut total = 0usize;
            let outcome: ApiResult<()> = async {
                loop {
                    // A client that stops sending must not keep the call open forever.
                    let next = tokio::time::timeout(idle, messages.next())
                        .await
                        .map_err(|_| state.guards.input_idle("DoPut"))?;
                    let Some(message) = next else { break };
                    let message = message.map_err(stream_error)?;
                    // pyarrow may open with a message carrying only the descriptor.
                    if message.data_header.is_empty() {
                        continue;
                    }
                    if !decoder.has_schema() {
                        // The schema (anything else is refused here).
                        decode(&mut decoder, message)?;
                        continue;
                    }
                    // Batches are decoded where they are stored, off the async workers.
                    let mut decoder = decoder.clone();
                    let bytes = message.data_body.len();
                    let batch = move || match decode(&mut decoder, message)? {
                        Some(Decoded::Batch(batch)) => Ok(Some(batch)),
                        // A second schema is refused by the decoder: only empty messages.
                        _ => Ok(None),
                    };
                    let Some(rows) = state.store_decoded(name.clone(), bytes, batch).await? else {
                        continue;
                    };
                    total += rows;
                    let ack = serde_json::json!({"batch": index, "rows": rows});
                    let ack = PutResult {
                        app_metadata: Bytes::from(ack.to_string()),
                    };
                    // A client that takes no acknowledgement for the idle timeout is gone or
                    // stalled: stop; what was acknowledged is stored.
                    match tokio::time::timeout(idle, tx.send(Ok(ack))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) | Err(_) => break,
                    }
                    index += 1;
                }
                Ok(())
            }
            .await;
            span.record("rows", total as i64);
            let code = outcome.as_ref().err().map_or("ok", |e| e.code().as_str());
            state
                .metrics
                .observe("flight", "do_put_stream", code, started.elapsed());
            if let Err(e) = outcome {
                if let Some(reason) = e.rejection() {
                    state.metrics.rejected(Api::Flight, reason);
                }
                let _ = tokio::time::timeout(idle, tx.send(Err(Status::from(e)))).await;
            }
        }
        .instrument(task_span),
    );
    report_failure(ingest, failure_tx, |message| {
        Err(Status::from(ApiError::Internal(message)))
    });
    Ok(ReceiverStream::new(rx).boxed())
}

/// Decodes one DoPut message: its header and body.
fn decode(decoder: &mut MessageDecoder, message: FlightData) -> ApiResult<Option<Decoded>> {
    let body = Buffer::from(message.data_body);
    Ok(decoder
        .decode(&message.data_header, &body)
        .map_err(featherstore_core::Error::from)?)
}
