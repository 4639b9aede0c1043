//! DoGet: online reads from the index, history streamed from the offline store.

use arrow::array::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::Ticket;
use featherstore_core::Ticket as Request;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::FlightStream;
use crate::error::{ApiError, ApiResult};
use crate::service::AppState;

/// Result batches in flight between the storage thread and the client: bounds memory.
const HISTORY_BUFFER: usize = 4;

pub async fn do_get(
    state: &AppState,
    ticket: Ticket,
) -> ApiResult<FlightStream<arrow_flight::FlightData>> {
    let batches = match Request::from_json(&ticket.ticket)? {
        Request::Online(ticket) => {
            let batch = state.store.online(&ticket)?;
            encode(
                batch.schema(),
                futures::stream::once(async { Ok(batch) }).boxed(),
            )
        }
        Request::History(ticket) => {
            let (set, query) = state.store.plan_history(&ticket)?;
            let schema = set.spec.projected_schema(&query.features, false);
            let (tx, rx) = mpsc::channel::<Result<RecordBatch, FlightError>>(HISTORY_BUFFER);
            let store = state.store.clone();
            tokio::task::spawn_blocking(move || {
                let result = store.scan_history(&set, &query, &mut |batch| {
                    tx.blocking_send(Ok(batch))
                        .map_err(|_| featherstore_store::Error::Cancelled)
                });
                match result {
                    Ok(()) | Err(featherstore_store::Error::Cancelled) => {}
                    Err(e) => {
                        let status = tonic::Status::from(ApiError::from(e));
                        let _ = tx.blocking_send(Err(FlightError::Tonic(Box::new(status))));
                    }
                }
            });
            encode(schema, ReceiverStream::new(rx).boxed())
        }
    };
    Ok(batches)
}

fn encode(
    schema: arrow::datatypes::SchemaRef,
    batches: futures::stream::BoxStream<'static, Result<RecordBatch, FlightError>>,
) -> FlightStream<arrow_flight::FlightData> {
    FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(batches)
        .map_err(tonic::Status::from)
        .boxed()
}
