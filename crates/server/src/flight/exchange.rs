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
use crate::error::{ApiError, ApiResult};
use crate::service::{report_failure, stream_blocking, AppState};
use crate::telemetry::traces;

/// Entity-row batches buffered between the network and the storage thread.
const INPUT_BUFFER: usize = 2;

pub async fn do_exchange(
    state: &AppState,
    mut input: Streaming<FlightData>,
) -> ApiResult<FlightStream<FlightData>> {
    let first = input
        .message()
        .await
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

    let mut messages = decoded_messages(first, input);
    // The decoder refuses a record batch before the schema: the first message is the schema.
    let schema = match messages.next().await {
        Some(Ok(Decoded::Schema(schema))) => schema,
        Some(Ok(Decoded::Batch(_))) => {
            return Err(ApiError::Internal(
                "the IPC decoder yielded a record batch before the schema".into(),
            ))
        }
        Some(Err(e)) => return Err(e),
        None => {
            return Err(ApiError::invalid(
                "DoExchange ended before sending the entity rows' schema",
            ))
        }
    };
    let plan = state.store.plan_training(&command, schema)?;
    let output_schema = plan.output_schema.clone();

    // Entity rows flow from the network to the storage thread through a bounded channel.
    let (rows_tx, mut rows_rx) = mpsc::channel(INPUT_BUFFER);
    let failure_tx = rows_tx.clone();
    let receive = tokio::spawn(async move {
        while let Some(message) = messages.next().await {
            let batch = match message {
                Ok(Decoded::Batch(batch)) => Ok(batch),
                Ok(Decoded::Schema(_)) => continue,
                Err(ApiError::Domain(e)) => Err(featherstore_store::Error::Domain(e)),
                Err(ApiError::Store(e)) => Err(e),
                Err(ApiError::Internal(message)) => Err(featherstore_store::Error::Domain(
                    featherstore_core::Error::Internal(message),
                )),
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
    let store = state.store.clone();
    let batches = stream_blocking(move |sink| {
        let mut rows = std::iter::from_fn(|| rows_rx.blocking_recv());
        store.training_data(&plan, &mut rows, sink)
    });
    // Streamed after the handler returns: in the call's span, which lasts until the end.
    Ok(traces::in_span(
        tracing::Span::current(),
        encode(output_schema, batches.map_err(flight_error).boxed()),
    ))
}
