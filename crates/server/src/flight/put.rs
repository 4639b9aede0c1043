//! DoPut: ingest. Each decoded batch is stored durably, then acknowledged with one PutResult
//! `{"batch": i, "rows": n}`; the first rejected batch ends the call with its error. Batches
//! that arrive while earlier ones are being stored are stored together, as one run.

use std::pin::Pin;
use std::time::Instant;

use arrow::buffer::Buffer;
use arrow_flight::{FlightData, PutResult};
use bytes::Bytes;
use featherstore_core::ipc::{Decoded, MessageDecoder};
use futures::stream::Peekable;
use futures::{FutureExt, Stream, StreamExt};
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

/// The most message bytes stored as one run: enough for a few 64k-row batches of many
/// features to reach `featherstore_store::BULK_APPEND_ROWS` together, little enough that a
/// run's acknowledgements are not held back long.
const RUN_BYTES: usize = 32 * 1024 * 1024;

/// Messages smaller than this are stored alone, each acknowledged as soon as it is stored: a
/// run's acknowledgements all wait for the whole run, and only large batches gain from one
/// append (a run pays when it reaches `BULK_APPEND_ROWS`, which small batches would take
/// hundreds of to reach).
const RUN_MESSAGE_BYTES: usize = 1024 * 1024;

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

    let mut messages = futures::stream::iter([Ok(first)]).chain(input).peekable();
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
                    let run = arrived_run(message, &mut messages);
                    let bytes = run.iter().map(|m| m.data_body.len()).sum();
                    // Batches are decoded where they are stored, off the async workers.
                    let mut decoder = decoder.clone();
                    let stored = state
                        .store_run(name.clone(), bytes, move || {
                            let mut batches = Vec::with_capacity(run.len());
                            for message in run {
                                match decode(&mut decoder, message) {
                                    Ok(Some(Decoded::Batch(batch))) => batches.push(batch),
                                    // A second schema is refused by the decoder: only empty
                                    // messages.
                                    Ok(_) => {}
                                    Err(e) => return (batches, Some(e)),
                                }
                            }
                            (batches, None)
                        })
                        .await;
                    for rows in stored.rows {
                        total += rows;
                        let ack = serde_json::json!({"batch": index, "rows": rows});
                        let ack = PutResult {
                            app_metadata: Bytes::from(ack.to_string()),
                        };
                        // A client that takes no acknowledgement for the idle timeout is gone
                        // or stalled: stop; what was acknowledged is stored.
                        match tokio::time::timeout(idle, tx.send(Ok(ack))).await {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) | Err(_) => return Ok(()),
                        }
                        index += 1;
                    }
                    if let Some(failure) = stored.failure {
                        return Err(failure);
                    }
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

/// Batch messages that are stored as one run: `first`, then those of `messages` that have
/// already arrived, up to [`RUN_BYTES`], if all are of at least [`RUN_MESSAGE_BYTES`]. A
/// client that sends large batches faster than they are stored gets them stored together
/// (see `FeatureStore::ingest_run`); one that waits for each acknowledgement, or sends small
/// batches, gets each stored alone. What is not a large batch message (the end, an error, a
/// message without data, a small one) is left for the caller's loop.
fn arrived_run<S>(first: FlightData, messages: &mut Peekable<S>) -> Vec<FlightData>
where
    S: Stream<Item = Result<FlightData, Status>> + Unpin,
{
    let large = |message: &FlightData| message.data_body.len() >= RUN_MESSAGE_BYTES;
    if !large(&first) {
        return vec![first];
    }
    let mut bytes = first.data_body.len();
    let mut run = vec![first];
    while bytes < RUN_BYTES {
        let arrived = Pin::new(&mut *messages).peek().now_or_never();
        let Some(Some(Ok(next))) = arrived else { break };
        if next.data_header.is_empty() || !large(next) {
            break;
        }
        let Some(Some(Ok(next))) = messages.next().now_or_never() else {
            break;
        };
        bytes += next.data_body.len();
        run.push(next);
    }
    run
}

/// Decodes one DoPut message: its header and body.
fn decode(decoder: &mut MessageDecoder, message: FlightData) -> ApiResult<Option<Decoded>> {
    let body = Buffer::from(message.data_body);
    Ok(decoder
        .decode(&message.data_header, &body)
        .map_err(featherstore_core::Error::from)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch message of `bytes` body bytes (the header only has to be non-empty here).
    fn message(bytes: usize) -> FlightData {
        FlightData {
            data_header: Bytes::from_static(b"header"),
            data_body: Bytes::from(vec![0u8; bytes]),
            ..FlightData::default()
        }
    }

    fn sizes(run: &[FlightData]) -> Vec<usize> {
        run.iter().map(|m| m.data_body.len()).collect()
    }

    const MB: usize = 1024 * 1024;

    #[test]
    fn a_run_takes_the_arrived_batch_messages_up_to_a_message_without_data() {
        let arrived = vec![
            Ok(message(2 * MB)),
            Ok(message(3 * MB)),
            Ok(FlightData::default()),
            Ok(message(4 * MB)),
        ];
        let mut messages = futures::stream::iter(arrived).peekable();
        assert_eq!(
            sizes(&arrived_run(message(MB), &mut messages)),
            [MB, 2 * MB, 3 * MB]
        );
        let left = futures::executor::block_on(messages.next())
            .unwrap()
            .unwrap();
        assert!(left.data_header.is_empty(), "the caller's loop gets it");
    }

    #[test]
    fn a_run_stops_at_its_byte_limit_an_error_and_what_has_not_arrived() {
        let big = (0..4).map(|_| Ok(message(20 * MB)));
        let mut messages = futures::stream::iter(big).peekable();
        assert_eq!(
            sizes(&arrived_run(message(20 * MB), &mut messages)),
            [20 * MB, 20 * MB]
        );

        let failed = vec![
            Ok(message(2 * MB)),
            Err(Status::internal("reset")),
            Ok(message(3 * MB)),
        ];
        let mut messages = futures::stream::iter(failed).peekable();
        assert_eq!(
            sizes(&arrived_run(message(MB), &mut messages)),
            [MB, 2 * MB]
        );
        let left = futures::executor::block_on(messages.next()).unwrap();
        assert!(left.is_err(), "the error is left for the caller's loop");

        let mut waiting = futures::stream::pending::<Result<FlightData, Status>>().peekable();
        assert_eq!(sizes(&arrived_run(message(MB), &mut waiting)), [MB]);
    }

    #[test]
    fn small_batch_messages_are_stored_alone() {
        let arrived = || (0..3).map(|_| Ok(message(MB))).collect::<Vec<_>>();
        let mut messages = futures::stream::iter(arrived()).peekable();
        assert_eq!(sizes(&arrived_run(message(10), &mut messages)), [10]);
        let mut messages = futures::stream::iter(vec![Ok(message(10))]).peekable();
        assert_eq!(sizes(&arrived_run(message(MB), &mut messages)), [MB]);
    }
}
