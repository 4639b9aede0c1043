//! Statement queries and prepared statements. A handle (statement or prepared) is the query's
//! text itself: the server keeps no state between calls, so a handle never expires, any
//! server behind a load balancer can execute it, and closing one has nothing to free.
//! Parameter binding is not supported.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, ProstMessageExt,
};
use arrow_flight::{IpcMessage, SchemaAsIpc};
use bytes::Bytes;
use featherstore_core::FeatureSetSpec;
use featherstore_store::query::adhoc;
use futures::{StreamExt, TryStreamExt};
use prost::Message;

use super::super::get::encode;
use super::super::{flight_error, FlightStream};
use crate::auth::Access;
use crate::error::{ApiError, ApiResult};
use crate::service::{blocking, AppState, FlightSql};
use crate::telemetry::metrics::Api;
use crate::telemetry::traces;

/// The query a statement or prepared statement handle holds.
pub(super) fn handle_sql(handle: &[u8]) -> ApiResult<&str> {
    std::str::from_utf8(handle)
        .map_err(|_| ApiError::invalid("the statement handle is not a UTF-8 query text"))
}

/// The current spec of every set the caller may read: the tables of its queries.
fn readable_sets(state: &AppState, access: &Access) -> Vec<Arc<FeatureSetSpec>> {
    state
        .store
        .list()
        .into_iter()
        .filter(|set| access.sees(&set.spec.name))
        .map(|set| set.spec.clone())
        .collect()
}

/// The result schema of `sql`, which is checked as if it ran (no stored row is read).
pub(super) async fn schema(
    state: &AppState,
    access: &Access,
    sql_limits: &FlightSql,
    sql: &str,
) -> ApiResult<SchemaRef> {
    let permit = sql_limits.permit()?;
    let (store, sets, settings, sql) = (
        state.store.clone(),
        readable_sets(state, access),
        sql_limits.settings.clone(),
        sql.to_string(),
    );
    blocking(move || {
        let _running = permit;
        Ok(adhoc::schema(&store, sets, &settings, &sql)?)
    })
    .await
}

/// Runs `sql` and streams its result as DuckDB produces it.
pub(super) async fn stream(
    state: &AppState,
    access: &Access,
    sql_limits: Arc<FlightSql>,
    sql: String,
) -> ApiResult<FlightStream<arrow_flight::FlightData>> {
    // Learnt on empty tables, before the query runs: an empty result still has its schema,
    // and the call answers at once, however long the query takes to its first row.
    let schema = schema(state, access, &sql_limits, &sql).await?;
    let permit = sql_limits.permit()?;
    let (store, sets, settings) = (
        state.store.clone(),
        readable_sets(state, access),
        sql_limits.settings.clone(),
    );
    let batches = state.stream_blocking((Api::Flight, "sql_do_get_stream"), move |sink| {
        // Held until the query's work ends, however slowly its stream is read.
        let _running = permit;
        adhoc::run(&store, sets, &settings, &sql, sink)
    });
    // Streamed after the handler returns: in the call's span, which lasts until the end.
    Ok(traces::in_span(
        tracing::Span::current(),
        encode(schema, batches.map_err(flight_error).boxed()),
    ))
}

pub(super) async fn create_prepared(
    state: &AppState,
    access: &Access,
    sql_limits: &FlightSql,
    body: &Any,
) -> ApiResult<Bytes> {
    let request: ActionCreatePreparedStatementRequest = unpack(body)?;
    if request.transaction_id.is_some() {
        return Err(ApiError::invalid(
            "transactions are not supported: this Flight SQL server is read-only",
        ));
    }
    let schema = schema(state, access, sql_limits, &request.query).await?;
    let IpcMessage(dataset_schema) =
        SchemaAsIpc::new(&schema, &IpcWriteOptions::default()).try_into()?;
    let result = ActionCreatePreparedStatementResult {
        prepared_statement_handle: request.query.into(),
        dataset_schema,
        parameter_schema: Bytes::new(),
    };
    Ok(result.as_any().encode_to_vec().into())
}

/// Closing a prepared statement frees nothing (its handle is its text); the request is still
/// checked.
pub(super) fn close_prepared(body: &Any) -> ApiResult<()> {
    let request: ActionClosePreparedStatementRequest = unpack(body)?;
    handle_sql(&request.prepared_statement_handle).map(|_| ())
}

fn unpack<M: ProstMessageExt>(body: &Any) -> ApiResult<M> {
    body.unpack()
        .ok()
        .flatten()
        .ok_or_else(|| ApiError::invalid(format!("the action body is not a {}", M::type_url())))
}
