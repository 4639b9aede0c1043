//! Flight SQL's catalog requests: GetCatalogs, GetDbSchemas, GetTables, GetTableTypes and
//! GetSqlInfo. Every feature set the caller may read is a table of catalog `featherstore`,
//! schema `main`, holding its stored rows.

use std::sync::OnceLock;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::error::FlightError;
use arrow_flight::sql::metadata::{GetCatalogsBuilder, SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::{Command, SqlInfo, SqlSupportedCaseSensitivity, SqlSupportedTransaction};
use featherstore_store::query::adhoc::{CATALOG, SCHEMA};

use super::super::get::one_batch;
use super::super::FlightStream;
use crate::auth::Access;
use crate::error::ApiResult;
use crate::service::AppState;

/// The one table type: a feature set, read-only.
const TABLE_TYPE: &str = "TABLE";

/// What GetSqlInfo tells about the server; the same for every call.
fn sql_info() -> &'static SqlInfoData {
    static INFO: OnceLock<SqlInfoData> = OnceLock::new();
    INFO.get_or_init(|| {
        let mut info = SqlInfoDataBuilder::new();
        info.append(SqlInfo::FlightSqlServerName, "FeatherStore");
        info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        info.append(SqlInfo::FlightSqlServerArrowVersion, "58");
        info.append(SqlInfo::FlightSqlServerReadOnly, true);
        info.append(SqlInfo::FlightSqlServerSql, true);
        info.append(SqlInfo::FlightSqlServerSubstrait, false);
        info.append(
            SqlInfo::FlightSqlServerTransaction,
            SqlSupportedTransaction::None as i32,
        );
        info.append(SqlInfo::FlightSqlServerCancel, false);
        info.append(SqlInfo::SqlDdlCatalog, false);
        info.append(SqlInfo::SqlDdlSchema, false);
        info.append(SqlInfo::SqlDdlTable, false);
        info.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
        info.append(
            SqlInfo::SqlIdentifierCase,
            SqlSupportedCaseSensitivity::SqlCaseSensitivityCaseInsensitive as i32,
        );
        info.append(SqlInfo::SqlTransactionsSupported, false);
        info.build().expect("a fixed list of SQL infos builds")
    })
}

/// The result schema of a catalog request; `None` for a command that is not one.
pub(super) fn schema(command: &Command) -> Option<SchemaRef> {
    Some(match command {
        Command::CommandGetCatalogs(_) => GetCatalogsBuilder::new().schema(),
        Command::CommandGetDbSchemas(c) => c.clone().into_builder().schema(),
        Command::CommandGetTables(c) => c.clone().into_builder().schema(),
        Command::CommandGetTableTypes(c) => c.into_builder().schema(),
        Command::CommandGetSqlInfo(c) => c.clone().into_builder(sql_info()).schema(),
        _ => return None,
    })
}

/// The answer to a catalog request; `None` for a command that is not one.
pub(super) fn do_get(
    state: &AppState,
    access: &Access,
    command: &Command,
) -> Option<ApiResult<FlightStream<arrow_flight::FlightData>>> {
    let batch = match command {
        Command::CommandGetCatalogs(_) => {
            let mut builder = GetCatalogsBuilder::new();
            builder.append(CATALOG);
            builder.build()
        }
        Command::CommandGetDbSchemas(c) => {
            let mut builder = c.clone().into_builder();
            builder.append(CATALOG, SCHEMA);
            builder.build()
        }
        Command::CommandGetTables(c) => tables(state, access, c.clone()),
        Command::CommandGetTableTypes(c) => {
            let mut builder = c.into_builder();
            builder.append(TABLE_TYPE);
            builder.build()
        }
        Command::CommandGetSqlInfo(c) => c.clone().into_builder(sql_info()).build(),
        _ => return None,
    };
    Some(batch.map(one_batch).map_err(Into::into))
}

/// A table per feature set the caller may read (the builder applies the request's filters).
fn tables(
    state: &AppState,
    access: &Access,
    command: arrow_flight::sql::CommandGetTables,
) -> Result<RecordBatch, FlightError> {
    let mut builder = command.into_builder();
    for set in state.store.list() {
        if access.sees(&set.spec.name) {
            builder.append(
                CATALOG,
                SCHEMA,
                &set.spec.name,
                TABLE_TYPE,
                &set.spec.arrow_schema(),
            )?;
        }
    }
    builder.build()
}
