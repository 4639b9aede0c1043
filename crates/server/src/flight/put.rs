//! DoPut: ingest. Each decoded batch is stored durably, then acknowledged with one PutResult
//! `{"batch": i, "rows": n}`; the first rejected batch ends the call with its error.
//!
//! Batches are read and decoded ahead (up to [`LOOKAHEAD`]) while earlier ones are stored,
//! and the batches waiting when a store finishes are stored together, with one commit (a
//! group commit: one fsync, and DuckDB writes a large append straight into its file rather
//! than through its log). Acknowledgements stay in order, each sent once its batch is durable.

use std::time::Instant;

use arrow_flight::{FlightData, PutResult};
use bytes::Bytes;
use featherstore_core::ipc::Decoded;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};
use tracing::Instrument;

use super::{decoded_messages, stream_error, FlightStream};
use crate::auth::Access;
use crate::error::{ApiError, ApiResult};
use crate::service::{report_failure, set_from_path, AdmittedBatch, AppState};
use crate::telemetry::metrics::Api;

/// Acknowledgements buffered for a slow client before ingest pauses.
const ACK_BUFFER: usize = 2;
/// Batches decoded and admitted (their bytes reserved in the ingest budget) while earlier ones
/// are stored. Bounds the memory of one call to this many messages (plus the one being
/// decoded and the group being stored, and its copy as one batch).
const LOOKAHEAD: usize = 4;
/// A group stops taking waiting batches at this many bytes.
const GROUP_BYTES: usize = 64 << 20;

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

    let messages = decoded_messages(first, input);
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
            let (admitted_tx, admitted) = mpsc::channel(LOOKAHEAD);
            let reading = read_batches(&state, messages, admitted_tx);
            let storing = store_batches(&state, &name, admitted, &tx);
            tokio::pin!(reading, storing);
            let (total, failure) = tokio::select! {
                // Stopped storing (an error, or a client gone): reading stops with it.
                stored = &mut storing => stored,
                // The input ended (a failure to read it is the last item): store the rest.
                () = &mut reading => storing.await,
            };
            span.record("rows", total as i64);
            let code = failure.as_ref().map_or("ok", |e| e.code().as_str());
            state
                .metrics
                .observe("flight", "do_put_stream", code, started.elapsed());
            if let Some(e) = failure {
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

/// Decodes the call's batches and admits each into the ingest budget, handing them on in
/// order; a failure (a message that does not decode, a client silent for the idle timeout,
/// no room in the budget) is handed on as the last item.
async fn read_batches(
    state: &AppState,
    mut messages: BoxStream<'static, featherstore_core::Result<Decoded>>,
    admitted: mpsc::Sender<ApiResult<AdmittedBatch>>,
) {
    let idle = state.guards.stream_idle;
    loop {
        // A client that stops sending must not keep the call open forever.
        let next = match tokio::time::timeout(idle, messages.next()).await {
            Err(_) => Err(state.guards.input_idle("DoPut").into()),
            Ok(None) => return,
            Ok(Some(Err(e))) => Err(e.into()),
            Ok(Some(Ok(Decoded::Batch(batch)))) => state.admit_batch(batch).await,
            Ok(Some(Ok(_))) => continue, // the schema
        };
        let failed = next.is_err();
        if admitted.send(next).await.is_err() || failed {
            return;
        }
    }
}

/// Stores the admitted batches, each group of those waiting with one commit, and
/// acknowledges each batch once it is durable. Returns the rows stored, and the error that
/// ended the call if one did.
async fn store_batches(
    state: &AppState,
    name: &str,
    mut admitted: mpsc::Receiver<ApiResult<AdmittedBatch>>,
    acks: &mpsc::Sender<Result<PutResult, Status>>,
) -> (usize, Option<ApiError>) {
    let idle = state.guards.stream_idle;
    let mut index = 0usize;
    let mut total = 0usize;
    while let Some(first) = admitted.recv().await {
        let first = match first {
            Ok(first) => first,
            Err(e) => return (total, Some(e)),
        };
        let mut bytes = first.bytes;
        let mut group = vec![first];
        // A failure that followed the group's batches: reported once they are stored.
        let mut after = None;
        while bytes < GROUP_BYTES {
            match admitted.try_recv() {
                Ok(Ok(batch)) => {
                    bytes += batch.bytes;
                    group.push(batch);
                }
                Ok(Err(e)) => {
                    after = Some(e);
                    break;
                }
                Err(_) => break,
            }
        }
        let (stored, refused) = state.store_batches(name.to_string(), group).await;
        for rows in stored {
            total += rows;
            let ack = serde_json::json!({"batch": index, "rows": rows});
            let ack = PutResult {
                app_metadata: Bytes::from(ack.to_string()),
            };
            // A client that takes no acknowledgement for the idle timeout is gone or
            // stalled: stop; what was acknowledged is stored.
            match tokio::time::timeout(idle, acks.send(Ok(ack))).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return (total, None),
            }
            index += 1;
        }
        if let Some(e) = refused.or(after) {
            return (total, Some(e));
        }
    }
    (total, None)
}
