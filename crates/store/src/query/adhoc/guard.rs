//! The first line of defence of ad-hoc SQL: DuckDB's own parser decides what the text is
//! (`json_serialize_sql`, which serializes only `SELECT` statements), before anything of it is
//! prepared. Exactly one query is accepted, and no table function but a few that read no
//! outside state. The engine it runs in is locked down as well (see the module's docs): this is
//! not the only barrier, but it turns every refusal into a clear INVALID_ARGUMENT.

use duckdb::Connection;
use serde_json::Value;

use crate::{Error, Result};

/// Table functions a query may call: they generate values and read nothing outside the query.
/// Every other one (`read_csv`, `read_parquet`, `glob`, `query`, `duckdb_settings`, the
/// engine's own `featherstore_scan`, ...) is refused; feature sets are read by name.
const ALLOWED_TABLE_FUNCTIONS: [&str; 3] = ["range", "generate_series", "unnest"];

fn refuse(message: impl Into<String>) -> Error {
    featherstore_core::Error::invalid(message).into()
}

/// Accepts `sql` if it is exactly one read-only query; otherwise INVALID_ARGUMENT saying why.
pub(super) fn check(conn: &Connection, sql: &str) -> Result<()> {
    let parsed: String = conn.query_row("SELECT json_serialize_sql(?::VARCHAR)", [sql], |row| {
        row.get(0)
    })?;
    // serde_json's recursion limit (128) bounds the walk below: a deeper query is refused.
    let tree: Value = serde_json::from_str(&parsed)
        .map_err(|e| refuse(format!("the query is nested too deeply to be checked: {e}")))?;
    if tree.get("error").and_then(Value::as_bool) == Some(true) {
        let message = tree
            .get("error_message")
            .and_then(Value::as_str)
            .unwrap_or("unreadable statement");
        return Err(
            if tree.get("error_type").and_then(Value::as_str) == Some("not implemented") {
                refuse(
                    "only read-only queries (SELECT, WITH ... SELECT, VALUES, DESCRIBE) are accepted; \
                     statements that change data or settings, or read files, are refused",
                )
            } else {
                refuse(format!("the query does not parse: {message}"))
            },
        );
    }
    let statements = tree
        .get("statements")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if statements != 1 {
        return Err(refuse(format!(
            "exactly one query is accepted per request; the text holds {statements} statements"
        )));
    }
    check_table_functions(&tree)
}

/// Refuses any table function outside [`ALLOWED_TABLE_FUNCTIONS`], wherever it appears (joins,
/// subqueries, CTEs, expressions).
fn check_table_functions(node: &Value) -> Result<()> {
    match node {
        Value::Object(fields) => {
            if fields.get("type").and_then(Value::as_str) == Some("TABLE_FUNCTION") {
                let name = fields
                    .get("function")
                    .and_then(|f| f.get("function_name"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if !ALLOWED_TABLE_FUNCTIONS.contains(&name.to_ascii_lowercase().as_str()) {
                    return Err(refuse(format!(
                        "table function {name:?} is not allowed: queries read feature sets by \
                         their names, and no files; allowed table functions are {}",
                        ALLOWED_TABLE_FUNCTIONS.join(", ")
                    )));
                }
            }
            fields.values().try_for_each(check_table_functions)
        }
        Value::Array(items) => items.iter().try_for_each(check_table_functions),
        _ => Ok(()),
    }
}
