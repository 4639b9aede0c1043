//! DoExchange `training_data`: the client streams entity rows, the server streams them back
//! with the point-in-time value of each requested feature appended.

use arrow_flight::FlightData;
use featherstore_core::ipc::Decoded;
use featherstore_core::TrainingDataCommand;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;
use tonic::Streaming;

use super::get::encode;
use super::{decoded_messages, flight_error, stream_error, FlightStream};
use crate::auth::Access;
use crate::error::{ApiError, ApiResult};
use crate::service::{report_failure, AppState};
use crate::telemetry::metrics::Api;
use crate::telemetry::traces;

/// Entity-row batches buffered between the network and the storage thread.
const INPUT_BUFFER: usize = 2;

pub(super) async fn do_exchange(
    state: &AppState,
    access: &Access,
    mut input: Streaming<FlightData>,
) -> ApiResult<FlightStream<FlightData>> {
    let idle = state.guards.stream_idle;
    let first = tokio::time::timeout(idle, input.message())
        .await
        .map_err(|_| state.guards.input_idle("DoExchange"))?
        .map_err(stream_error)?
        .ok_or_else(|| ApiError::invalid("DoExchange sent no messages"))?;
    let command = first
        .flight_descriptor
        .as_ref()
        .filter(|d| !d.cmd.is_empty())
        .ok_or_else(|| {
            ApiError::invalid("the first DoExchange message must carry a descriptor whose cmd is a training_data command")
        })
        .and_then(|d| Ok(TrainingDataCommand::from_json(&d.cmd)?))?;
    let command = state.training_command(access, command)?;

    let mut messages = decoded_messages(first, input);
    // The decoder refuses a record batch before the schema: the first message is the schema.
    let first_message = tokio::time::timeout(idle, messages.next())
        .await
        .map_err(|_| state.guards.input_idle("DoExchange"))?;
    let schema = match first_message {
        Some(Ok(Decoded::Schema(schema))) => schema,
        Some(Ok(Decoded::Batch(_))) => {
            return Err(ApiError::Internal(
                "the IPC decoder yielded a record batch before the schema".into(),
            ))
        }
        Some(Err(e)) => return Err(e.into()),
        None => {
            return Err(ApiError::invalid(
                "DoExchange ended before sending the entity rows' schema",
            ))
        }
    };
    let plan = state.store.plan_training(&command, schema)?;
    let output_schema = plan.output_schema.clone();

    // Entity rows flow from the network to the storage thread through a bounded channel; the
    // storage thread spools them all before it takes a connection. A client that stops
    // sending ends the call once the idle timeout passes.
    let (rows_tx, mut rows_rx) = mpsc::channel(INPUT_BUFFER);
    let idle_error = state.guards.input_idle("DoExchange entity rows");
    let failure_tx = rows_tx.clone();
    let receive = tokio::spawn(async move {
        loop {
            let message = match tokio::time::timeout(idle, messages.next()).await {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(_elapsed) => {
                    let _ = rows_tx.send(Err(idle_error.into())).await;
                    break;
                }
            };
            // The error keeps its code through the store (a message over the size limit
            // stays RESOURCE_EXHAUSTED).
            let batch = match message {
                Ok(Decoded::Batch(batch)) => Ok(batch),
                Ok(Decoded::Schema(_)) => continue,
                Err(e) => Err(featherstore_store::Error::Domain(e)),
            };
            let failed = batch.is_err();
            if rows_tx.send(batch).await.is_err() || failed {
                break;
            }
        }
    });
    report_failure(receive, failure_tx, |message| {
        Err(featherstore_store::Error::Domain(
            featherstore_core::Error::Internal(message),
        ))
    });
    let rows = std::iter::from_fn(move || rows_rx.blocking_recv());
    let batches = state.training_data((Api::Flight, "do_exchange_stream"), plan, rows);
    // Streamed after the handler returns: in the call's span, which lasts until the end.
    Ok(traces::in_span(
        tracing::Span::current(),
        encode(output_schema, batches.map_err(flight_error).boxed()),
    ))
}
