//! DoGet: online reads from the index, history streamed from the offline store.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::ipc::writer::{
    CompressionContext, DictionaryTracker, IpcDataGenerator, IpcWriteOptions,
};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{FlightData, SchemaAsIpc, Ticket};
use featherstore_core::Ticket as Request;
use futures::{StreamExt, TryStreamExt};
use parking_lot::Mutex;

use super::{flight_error, FlightStream};
use crate::auth::Access;
use crate::error::{ApiError, ApiResult};
use crate::service::AppState;
use crate::telemetry::metrics::Api;
use crate::telemetry::traces;

pub(super) async fn do_get(
    state: &AppState,
    access: &Access,
    ticket: Ticket,
) -> ApiResult<FlightStream<arrow_flight::FlightData>> {
    let request = Request::from_json(&ticket.ticket)?;
    let batches = match request {
        Request::Online(ticket) => {
            access.require_set(&ticket.feature_set)?;
            online_answer(&state.schema_messages, state.online(&ticket).await?)?
        }
        // Checks access to each set it reads.
        Request::MultiOnline(ticket) => online_answer(
            &state.schema_messages,
            state.online_multi(access, &ticket).await?,
        )?,
        Request::History(ticket) => {
            access.require_set(&ticket.feature_set)?;
            let (schema, batches) = state.history((Api::Flight, "do_get_stream"), &ticket)?;
            // Streamed after the handler returns: in the call's span, which lasts until the end.
            traces::in_span(
                tracing::Span::current(),
                encode(schema, batches.map_err(flight_error).boxed()),
            )
        }
    };
    Ok(batches)
}

/// An online answer: its schema message, then the batch. The schema message comes from
/// [`SchemaMessages`] (an answer's schema is one of a few per set or service, built once), so
/// a read encodes only its batch; one that may need splitting into several messages goes
/// through the general encoder.
fn online_answer(
    messages: &SchemaMessages,
    batch: RecordBatch,
) -> ApiResult<FlightStream<FlightData>> {
    if batch.get_array_memory_size() > ONE_MESSAGE_BYTES {
        return Ok(one_batch(batch));
    }
    let options = IpcWriteOptions::default();
    let schema = messages.get(batch.schema_ref(), &options);
    let mut dictionaries = DictionaryTracker::new(false);
    let (_, data) = IpcDataGenerator::default()
        .encode(
            &batch,
            &mut dictionaries,
            &options,
            &mut CompressionContext::default(),
        )
        .map_err(|e| ApiError::Internal(format!("encoding an online answer: {e}")))?;
    let answer = [Ok(schema), Ok(FlightData::from(data))];
    Ok(futures::stream::iter(answer).boxed())
}

pub(super) fn one_batch(batch: RecordBatch) -> FlightStream<FlightData> {
    encode(
        batch.schema(),
        futures::stream::once(async { Ok(batch) }).boxed(),
    )
}

/// Answers up to this size go out as one message (well under the 4 MiB gRPC clients accept
/// by default; the general encoder splits at 2 MiB).
const ONE_MESSAGE_BYTES: usize = 1 << 20;
/// Schemas kept: every set's and service's answer schemas, on any real server.
const SCHEMA_MESSAGES: usize = 1024;

/// Encoded schema messages by schema. An entry holds its schema, so the address it is keyed
/// by cannot be reused by another schema while it is kept; when full, it starts over.
#[derive(Default)]
pub(crate) struct SchemaMessages {
    encoded: Mutex<HashMap<usize, (SchemaRef, FlightData)>>,
}

impl SchemaMessages {
    fn get(&self, schema: &SchemaRef, options: &IpcWriteOptions) -> FlightData {
        let key = Arc::as_ptr(schema) as *const () as usize;
        if let Some((_, message)) = self.encoded.lock().get(&key) {
            return message.clone();
        }
        let message: FlightData = SchemaAsIpc::new(schema, options).into();
        let mut encoded = self.encoded.lock();
        if encoded.len() >= SCHEMA_MESSAGES {
            encoded.clear();
        }
        encoded.insert(key, (schema.clone(), message.clone()));
        message
    }
}

pub(super) fn encode(
    schema: arrow::datatypes::SchemaRef,
    batches: futures::stream::BoxStream<'static, Result<RecordBatch, FlightError>>,
) -> FlightStream<arrow_flight::FlightData> {
    FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(batches)
        .map_err(tonic::Status::from)
        .boxed()
}
