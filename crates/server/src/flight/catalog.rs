//! ListFlights, GetFlightInfo, GetSchema: one flight per feature set, descriptor path `[name]`.

use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, SchemaAsIpc, SchemaResult, Ticket,
};
use featherstore_core::ticket::HistoryTicket;

use super::FlightStream;
use crate::auth::Access;
use crate::error::{ApiError, ApiResult};
use crate::service::{blocking, set_from_path, AppState};

/// A set's flight: its schema, row count, and an endpoint whose ticket reads its whole history.
async fn describe(state: &AppState, name: String) -> ApiResult<FlightInfo> {
    let store = state.store.clone();
    let (set, stats) = blocking(move || {
        let set = store.get(&name)?;
        let stats = store.stats(&name)?;
        Ok((set, stats))
    })
    .await?;
    let ticket = featherstore_core::Ticket::History(HistoryTicket {
        feature_set: set.spec.name.clone(),
        entities: None,
        start: None,
        end: None,
        features: None,
        with_ingest_time: false,
        ingested_before: None,
    });
    let ticket = serde_json::to_vec(&ticket).expect("tickets serialize");
    Ok(FlightInfo::new()
        .try_with_schema(&set.spec.arrow_schema())?
        .with_descriptor(FlightDescriptor::new_path(vec![set.spec.name.clone()]))
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
        .with_total_records(stats.rows as i64)
        .with_ordered(true))
}

pub(super) async fn list_flights(
    state: &AppState,
    access: &Access,
) -> ApiResult<FlightStream<FlightInfo>> {
    let mut infos = Vec::new();
    for set in state.store.list() {
        if !access.sees(&set.spec.name) {
            continue;
        }
        infos.push(describe(state, set.spec.name.clone()).await);
    }
    Ok(Box::pin(futures::stream::iter(
        infos.into_iter().map(|info| info.map_err(Into::into)),
    )))
}

fn descriptor_set(descriptor: &FlightDescriptor) -> ApiResult<String> {
    if !descriptor.cmd.is_empty() {
        return Err(ApiError::invalid(
            "command descriptors are not supported here; use path [feature_set_name]",
        ));
    }
    set_from_path(&descriptor.path)
}

pub(super) async fn flight_info(
    state: &AppState,
    descriptor: FlightDescriptor,
) -> ApiResult<FlightInfo> {
    describe(state, descriptor_set(&descriptor)?).await
}

pub(super) async fn schema(
    state: &AppState,
    descriptor: FlightDescriptor,
) -> ApiResult<SchemaResult> {
    let set = state.store.get(&descriptor_set(&descriptor)?)?;
    let schema = set.spec.arrow_schema();
    Ok(SchemaAsIpc::new(&schema, &IpcWriteOptions::default()).try_into()?)
}
