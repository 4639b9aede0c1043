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
    let outline = Outline::of(&parsed)?;
    if outline.error {
        // A refusal is a small, flat object: its message is read whole.
        let tree: Value = serde_json::from_str(&parsed).unwrap_or(Value::Null);
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
    if outline.statements != 1 {
        return Err(refuse(format!(
            "exactly one query is accepted per request; the text holds {} statements",
            outline.statements
        )));
    }
    match outline
        .table_functions
        .iter()
        .find(|name| !ALLOWED_TABLE_FUNCTIONS.contains(&name.to_ascii_lowercase().as_str()))
    {
        Some(name) => Err(refuse(format!(
            "table function {name:?} is not allowed: queries read feature sets by their names, \
             and no files; allowed table functions are {}",
            ALLOWED_TABLE_FUNCTIONS.join(", ")
        ))),
        None => Ok(()),
    }
}

/// What the guard needs from DuckDB's serialized parse tree, read in one pass without
/// recursion (a long expression nests the tree hundreds of levels deep): whether it is a
/// refusal, how many statements it holds, and the name of every table function, wherever it
/// appears (joins, subqueries, CTEs, expressions).
#[derive(Debug, Default)]
struct Outline {
    error: bool,
    statements: usize,
    table_functions: Vec<String>,
}

/// An open object or array of the tree.
#[derive(Default)]
struct Frame {
    object: bool,
    /// The key whose value comes next (objects).
    key: Option<String>,
    /// `"type": "TABLE_FUNCTION"`: a table function reference.
    table_function: bool,
    /// The `function_name` of this object (a function), or of its `function` child.
    function_name: Option<String>,
}

impl Outline {
    fn of(json: &str) -> Result<Outline> {
        let malformed = || Error::Corrupt("DuckDB's parse tree is not well-formed JSON".into());
        let bytes = json.as_bytes();
        let mut outline = Outline::default();
        let mut stack: Vec<Frame> = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                open @ (b'{' | b'[') => {
                    // A statement: an object straight inside the root's `statements` array.
                    if open == b'{'
                        && stack.len() == 2
                        && stack[0].key.as_deref() == Some("statements")
                    {
                        outline.statements += 1;
                    }
                    stack.push(Frame {
                        object: open == b'{',
                        ..Frame::default()
                    });
                    i += 1;
                }
                b'}' | b']' => {
                    let frame = stack.pop().ok_or_else(malformed)?;
                    if frame.table_function {
                        // A table function without a plain name is refused too.
                        outline
                            .table_functions
                            .push(frame.function_name.clone().unwrap_or_default());
                    }
                    // A `function` object hands its name to the object holding it.
                    if let Some(parent) = stack.last_mut() {
                        if parent.key.as_deref() == Some("function") && frame.object {
                            parent.function_name = frame.function_name;
                        }
                        parent.key = None;
                    }
                    i += 1;
                }
                b'"' => {
                    let (text, end) = read_string(bytes, i).ok_or_else(malformed)?;
                    i = end;
                    while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
                        i += 1;
                    }
                    let frame = stack.last_mut().ok_or_else(malformed)?;
                    if frame.object && frame.key.is_none() && bytes.get(i) == Some(&b':') {
                        frame.key = Some(text.unwrap_or_default());
                        i += 1;
                        continue;
                    }
                    match (frame.key.as_deref(), text) {
                        (Some("type"), Some(value)) if value == "TABLE_FUNCTION" => {
                            frame.table_function = true
                        }
                        (Some("function_name"), name) => frame.function_name = name,
                        _ => {}
                    }
                    frame.key = None;
                }
                b't' if stack.len() == 1 && stack[0].key.as_deref() == Some("error") => {
                    outline.error = json[i..].starts_with("true");
                    stack[0].key = None;
                    i += 1;
                }
                b',' | b':' | b' ' | b'\n' | b'\r' | b'\t' => i += 1,
                _ => {
                    // A number, `true`, `false` or `null`: a value, which ends its key.
                    if let Some(frame) = stack.last_mut() {
                        frame.key = None;
                    }
                    while i < bytes.len() && !matches!(bytes[i], b',' | b'}' | b']') {
                        i += 1;
                    }
                }
            }
        }
        if !stack.is_empty() {
            return Err(malformed());
        }
        Ok(outline)
    }
}

/// The string starting at the quote at `start`, and the index after its closing quote. Its
/// text is `None` when it holds an escape: the names compared here never need one.
fn read_string(bytes: &[u8], start: usize) -> Option<(Option<String>, usize)> {
    let mut i = start + 1;
    let mut escaped = false;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => {
                escaped = true;
                i += 2;
            }
            b'"' => {
                let text =
                    (!escaped).then(|| String::from_utf8_lossy(&bytes[start + 1..i]).into_owned());
                return Some((text, i + 1));
            }
            _ => i += 1,
        }
    }
    None
}
