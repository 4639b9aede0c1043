//! DoPut: ingest. Each decoded batch is stored durably, then acknowledged with one PutResult
//! `{"batch": i, "rows": n}`; the first rejected batch ends the call with its error.

use std::time::Instant;

use arrow_flight::{FlightData, PutResult};
use bytes::Bytes;
use featherstore_core::ipc::Decoded;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};
use tracing::Instrument;

use super::{decoded_messages, stream_error, FlightStream};
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

    let mut messages = decoded_messages(first, input);
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
                    let Decoded::Batch(batch) = message? else {
                        continue; // the schema
                    };
                    let rows = state.store_batch(name.clone(), batch).await?;
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
