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
use featherstore_store::query::adhoc::{self, AdhocSettings};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use tokio::sync::oneshot;

use super::super::get::encode;
use super::super::{flight_error, FlightStream};
use crate::auth::Access;
use crate::error::{ApiError, ApiResult};
use crate::service::{blocking, AppState};
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
    settings: &AdhocSettings,
    sql: &str,
) -> ApiResult<SchemaRef> {
    let (store, sets, settings, sql) = (
        state.store.clone(),
        readable_sets(state, access),
        settings.clone(),
        sql.to_string(),
    );
    blocking(move || Ok(adhoc::schema(&store, sets, &settings, &sql)?)).await
}

/// Runs `sql` and streams its result as DuckDB produces it. The call answers once the query
/// has started and its schema is known: a query refused or failing before that fails the
/// call itself, and an empty result still has its schema.
pub(super) async fn stream(
    state: &AppState,
    access: &Access,
    settings: AdhocSettings,
    sql: String,
) -> ApiResult<FlightStream<arrow_flight::FlightData>> {
    let (store, sets) = (state.store.clone(), readable_sets(state, access));
    let (schema_tx, schema_rx) = oneshot::channel();
    let mut batches = state.stream_blocking((Api::Flight, "sql_do_get_stream"), move |sink| {
        let mut schema_tx = Some(schema_tx);
        let mut announce = |schema| {
            if let Some(tx) = schema_tx.take() {
                let _ = tx.send(schema);
            }
        };
        adhoc::run(&store, sets, &settings, &sql, &mut announce, sink)
    });
    let schema = match schema_rx.await {
        Ok(schema) => schema,
        // The query ended before its schema: its error is the stream's only item.
        Err(_) => {
            return Err(match batches.next().await {
                Some(Err(e)) => e,
                _ => ApiError::Internal("the query ended without a schema or an error".into()),
            })
        }
    };
    // Streamed after the handler returns: in the call's span, which lasts until the end.
    Ok(traces::in_span(
        tracing::Span::current(),
        encode(schema, batches.map_err(flight_error).boxed()),
    ))
}

pub(super) async fn create_prepared(
    state: &AppState,
    access: &Access,
    settings: &AdhocSettings,
    body: &Any,
) -> ApiResult<Bytes> {
    let request: ActionCreatePreparedStatementRequest = unpack(body)?;
    if request.transaction_id.is_some() {
        return Err(ApiError::invalid(
            "transactions are not supported: this Flight SQL server is read-only",
        ));
    }
    let schema = schema(state, access, settings, &request.query).await?;
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
