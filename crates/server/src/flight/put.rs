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
use crate::error::{ApiError, ApiResult};
use crate::service::{report_failure, set_from_path, AppState};

/// Acknowledgements buffered for a slow client before ingest pauses.
const ACK_BUFFER: usize = 2;

pub async fn do_put(
    state: AppState,
    mut input: Streaming<FlightData>,
) -> ApiResult<FlightStream<PutResult>> {
    let first = input
        .message()
        .await
        .map_err(stream_error)?
        .ok_or_else(|| ApiError::invalid("DoPut sent no messages"))?;
    let descriptor = first.flight_descriptor.clone().ok_or_else(|| {
        ApiError::invalid(
            "the first DoPut message must carry a descriptor with path [feature_set_name]",
        )
    })?;
    let name = set_from_path(&descriptor.path)?;
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
                while let Some(message) = messages.next().await {
                    let Decoded::Batch(batch) = message? else {
                        continue; // the schema
                    };
                    let rows = state.store_batch(name.clone(), batch).await?;
                    total += rows;
                    let ack = serde_json::json!({"batch": index, "rows": rows});
                    let ack = PutResult {
                        app_metadata: Bytes::from(ack.to_string()),
                    };
                    if tx.send(Ok(ack)).await.is_err() {
                        break; // the client went away; what was acknowledged is stored
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
                let _ = tx.send(Err(Status::from(e))).await;
            }
        }
        .instrument(task_span),
    );
    report_failure(ingest, failure_tx, |message| {
        Err(Status::from(ApiError::Internal(message)))
    });
    Ok(ReceiverStream::new(rx).boxed())
}
