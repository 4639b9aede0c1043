//! DoGet: online reads from the index, history streamed from the offline store.

use arrow::array::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::Ticket;
use featherstore_core::Ticket as Request;
use futures::{StreamExt, TryStreamExt};

use super::{flight_error, FlightStream};
use crate::auth::Access;
use crate::error::ApiResult;
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
            one_batch(state.online(&ticket).await?)
        }
        // Checks access to each set it reads.
        Request::MultiOnline(ticket) => one_batch(state.online_multi(access, &ticket).await?),
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

pub(super) fn one_batch(batch: RecordBatch) -> FlightStream<arrow_flight::FlightData> {
    encode(
        batch.schema(),
        futures::stream::once(async { Ok(batch) }).boxed(),
    )
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
