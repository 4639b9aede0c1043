//! Arrow Flight SQL on the Flight port (docs/flight-sql.md): read-only SQL over the feature
//! sets, each a table named after it, executed by the store's ad-hoc query engine
//! (`featherstore_store::query::adhoc`).
//!
//! Flight SQL requests are the ones whose command, ticket or action is a Flight SQL message
//! (a protobuf `Any` of type `arrow.flight.protocol.sql.*`, or the prepared statement
//! actions); `FlightApi` routes them here and everything else, the FeatherStore protocol of
//! PROTOCOL.md, to its own handlers as before. One Flight service serves both.

mod catalog;
mod statements;

use std::sync::Arc;

use arrow_flight::sql::{Any, Command, ProstMessageExt, TicketStatementQuery};
use arrow_flight::{Action, ActionType, FlightDescriptor, FlightInfo, SchemaResult, Ticket};
use prost::Message;

use super::FlightStream;
use crate::auth::{Access, Operation};
use crate::error::{ApiError, ApiResult};
use crate::service::{AppState, FlightSql};

/// Flight SQL's prepared statement actions (arrow-flight keeps its names crate-private).
const CREATE_PREPARED_STATEMENT: &str = "CreatePreparedStatement";
const CLOSE_PREPARED_STATEMENT: &str = "ClosePreparedStatement";

/// The type URL prefix of Flight SQL's messages.
const TYPE_URL_PREFIX: &str = "type.googleapis.com/arrow.flight.protocol.sql.";

/// The Flight SQL command `bytes` hold, if they hold one (a FeatherStore JSON ticket or an
/// empty command does not).
pub(super) fn command(bytes: &[u8]) -> Option<ApiResult<Command>> {
    let any = Any::decode(bytes).ok()?;
    if !any.type_url.starts_with(TYPE_URL_PREFIX) {
        return None;
    }
    Some(
        Command::try_from(any)
            .map_err(|e| ApiError::invalid(format!("the Flight SQL command does not decode: {e}"))),
    )
}

/// Whether an action is one of Flight SQL's that this server answers.
pub(super) fn is_sql_action(action: &str) -> bool {
    action == CREATE_PREPARED_STATEMENT || action == CLOSE_PREPARED_STATEMENT
}

/// The Flight SQL actions, for ListActions.
pub(super) fn actions() -> Vec<ActionType> {
    super::actions::action_types(&[
        (
            CREATE_PREPARED_STATEMENT,
            "Flight SQL: prepare a read-only query (ActionCreatePreparedStatementRequest)",
        ),
        (
            CLOSE_PREPARED_STATEMENT,
            "Flight SQL: close a prepared statement (ActionClosePreparedStatementRequest)",
        ),
    ])
}

/// The span and metrics name of a Flight SQL call.
pub(super) fn method_name(command: &Command) -> &'static str {
    match command {
        Command::CommandStatementQuery(_) => "sql_statement",
        Command::CommandPreparedStatementQuery(_) => "sql_prepared_statement",
        Command::TicketStatementQuery(_) => "sql_do_get",
        Command::CommandGetCatalogs(_) => "sql_get_catalogs",
        Command::CommandGetDbSchemas(_) => "sql_get_db_schemas",
        Command::CommandGetTables(_) => "sql_get_tables",
        Command::CommandGetTableTypes(_) => "sql_get_table_types",
        Command::CommandGetSqlInfo(_) => "sql_get_sql_info",
        _ => "sql_unsupported",
    }
}

/// The action's span and metrics name.
pub(super) fn action_name(action: &str) -> &'static str {
    if action == CREATE_PREPARED_STATEMENT {
        "sql_create_prepared_statement"
    } else {
        "sql_close_prepared_statement"
    }
}

/// Flight SQL reads feature data: read scope, and Flight SQL enabled.
fn admit(state: &AppState, access: &Access) -> ApiResult<Arc<FlightSql>> {
    access.require(Operation::ReadData)?;
    state.flight_sql.clone().ok_or_else(|| {
        featherstore_core::Error::FailedPrecondition(
            "Flight SQL is disabled on this server (flight_sql.enabled = false)".into(),
        )
        .into()
    })
}

fn unsupported(command: &Command) -> ApiError {
    ApiError::invalid(format!(
        "{} is not supported: this Flight SQL server is read-only and answers queries \
         (statements, prepared statements) and catalog requests (GetCatalogs, GetDbSchemas, \
         GetTables, GetTableTypes, GetSqlInfo)",
        command.type_url()
    ))
}

/// A FlightInfo whose one endpoint's ticket is `ticket`.
fn info_for(
    descriptor: FlightDescriptor,
    schema: &arrow::datatypes::Schema,
    ticket: Any,
) -> ApiResult<FlightInfo> {
    Ok(FlightInfo::new()
        .try_with_schema(schema)?
        .with_descriptor(descriptor)
        .with_endpoint(
            arrow_flight::FlightEndpoint::new().with_ticket(Ticket::new(ticket.encode_to_vec())),
        ))
}

/// The query a command runs, if it runs one: a statement's text, or the text a prepared
/// statement's (or a statement ticket's) handle holds.
fn query_of(command: &Command) -> Option<ApiResult<&str>> {
    Some(match command {
        Command::CommandStatementQuery(query) => Ok(query.query.as_str()),
        Command::CommandPreparedStatementQuery(prepared) => {
            statements::handle_sql(&prepared.prepared_statement_handle)
        }
        Command::TicketStatementQuery(ticket) => statements::handle_sql(&ticket.statement_handle),
        _ => return None,
    })
}

pub(super) async fn flight_info(
    state: &AppState,
    access: &Access,
    command: Command,
    descriptor: FlightDescriptor,
) -> ApiResult<FlightInfo> {
    let limits = admit(state, access)?;
    match query_of(&command) {
        Some(sql) => {
            let sql = sql?;
            let schema = statements::schema(state, access, &limits, sql).await?;
            let ticket = TicketStatementQuery {
                statement_handle: sql.to_string().into(),
            };
            info_for(descriptor, &schema, ticket.as_any())
        }
        // Catalog requests: the ticket is the command itself.
        None => {
            let schema = catalog::schema(&command).ok_or_else(|| unsupported(&command))?;
            info_for(descriptor, &schema, command.into_any())
        }
    }
}

pub(super) async fn schema(
    state: &AppState,
    access: &Access,
    command: Command,
) -> ApiResult<SchemaResult> {
    let limits = admit(state, access)?;
    let schema = match query_of(&command) {
        Some(sql) => statements::schema(state, access, &limits, sql?).await?,
        None => catalog::schema(&command).ok_or_else(|| unsupported(&command))?,
    };
    Ok(
        arrow_flight::SchemaAsIpc::new(&schema, &arrow::ipc::writer::IpcWriteOptions::default())
            .try_into()?,
    )
}

pub(super) async fn do_get(
    state: &AppState,
    access: &Access,
    command: Command,
) -> ApiResult<FlightStream<arrow_flight::FlightData>> {
    let limits = admit(state, access)?;
    match query_of(&command) {
        Some(sql) => statements::stream(state, access, limits, sql?.to_string()).await,
        None => catalog::do_get(state, access, &command).ok_or_else(|| unsupported(&command))?,
    }
}

pub(super) async fn do_action(
    state: &AppState,
    access: &Access,
    action: Action,
) -> ApiResult<FlightStream<arrow_flight::Result>> {
    let limits = admit(state, access)?;
    let any = Any::decode(action.body.as_ref()).map_err(|e| {
        ApiError::invalid(format!("the {} body does not decode: {e}", action.r#type))
    })?;
    let body = if action.r#type == CREATE_PREPARED_STATEMENT {
        statements::create_prepared(state, access, &limits, &any).await?
    } else {
        statements::close_prepared(&any)?;
        return Ok(Box::pin(futures::stream::empty()));
    };
    Ok(Box::pin(futures::stream::once(async move {
        Ok(arrow_flight::Result { body })
    })))
}

/// DoPut of a Flight SQL command: updates, bulk ingest and parameter binding are refused.
pub(super) fn refuse_put(descriptor: &FlightDescriptor) -> ApiResult<()> {
    match command(&descriptor.cmd) {
        None => Ok(()),
        Some(command) => Err(ApiError::invalid(format!(
            "{} is not supported: Flight SQL on this server is read-only (no updates, no \
             ingest, no parameter binding); ingest with DoPut on descriptor path [feature_set_name]",
            command?.type_url()
        ))),
    }
}
