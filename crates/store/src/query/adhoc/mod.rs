//! Ad-hoc, read-only SQL over the feature sets (the Flight SQL API): every set the caller may
//! read is a view named after it, holding its stored rows (entity, features, event time),
//! executed by DuckDB.
//!
//! Each query runs in a DuckDB database of its own, in memory, opened for it and dropped after
//! it, which holds nothing but the views: the store's databases, files and connections are
//! out of its reach. That database is locked down before the query's text is even parsed:
//!
//! - no file or network access (`enable_external_access = false`), no extension installed or
//!   loaded, nothing spilled to disk, its memory capped (`memory_limit`), and its
//!   configuration locked (`lock_configuration`), so no statement can undo any of this;
//! - the text must be exactly one query, and table functions other than value generators are
//!   refused ([`guard`]);
//! - the views read rows through `featherstore_scan`, which only knows the sets of its own
//!   query ([`scan`]);
//! - the query is interrupted when it runs past its timeout.

mod guard;
mod scan;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use duckdb::{Config, Connection, Statement};
use featherstore_core::FeatureSetSpec;
use parking_lot::{Condvar, Mutex};

use self::scan::{with_context, FeatureSetScan, QueryContext, SCAN_FUNCTION};
use super::cancel::{self, Cancellation};
use super::sql::{ident, literal};
use crate::types::BatchSink;
use crate::{Error, FeatureStore, Result};

/// The catalog and schema the feature sets' views live in.
pub const CATALOG: &str = "featherstore";
pub const SCHEMA: &str = "main";

/// Limits of one ad-hoc query.
#[derive(Debug, Clone)]
pub struct AdhocSettings {
    /// Wall time from the start of the query to its last result batch.
    pub timeout: Duration,
    /// DuckDB's `memory_limit` for the query's database, e.g. `"1GB"`.
    pub memory_limit: String,
    /// DuckDB worker threads of the query.
    pub threads: usize,
}

/// The sets a caller may read: each is a view of that name.
pub type ReadableSets = Vec<Arc<FeatureSetSpec>>;

/// The result schema of `sql`, without reading any stored row (the scans come back empty).
pub fn schema(
    store: &Arc<FeatureStore>,
    sets: ReadableSets,
    settings: &AdhocSettings,
    sql: &str,
) -> Result<SchemaRef> {
    Query::open(store, sets, settings, true)?.execute(sql, |statement| {
        Ok(statement.stream_arrow([])?.get_schema())
    })
}

/// Runs `sql`, handing each result batch to `sink` as DuckDB produces it: the result is never
/// collected whole.
pub fn run(
    store: &Arc<FeatureStore>,
    sets: ReadableSets,
    settings: &AdhocSettings,
    sql: &str,
    sink: BatchSink<'_>,
) -> Result<()> {
    Query::open(store, sets, settings, false)?.execute(sql, |statement| {
        drop(statement.stream_arrow([])?);
        // `step` reports fetch errors; the iterator of `stream_arrow` would panic.
        while let Some(chunk) = statement.step()? {
            let batch = RecordBatch::from(&chunk);
            if batch.num_rows() > 0 {
                sink(batch)?;
            }
        }
        Ok(())
    })
}

struct Query {
    conn: Connection,
    context: Arc<QueryContext>,
    timeout: Duration,
    memory_limit: String,
}

/// Checks the settings by opening (and dropping) a query database with them: a bad
/// `memory_limit` is found when the server starts, not at the first query.
pub fn check_settings(settings: &AdhocSettings) -> Result<()> {
    lock(&sandbox(settings)?)
}

/// A query's own database, in memory, before its views: no file or network access, no
/// extension installed or loaded, no spilling, its memory capped, the views' catalog as the
/// default one. [`lock`] it once the views are made.
fn sandbox(settings: &AdhocSettings) -> Result<Connection> {
    let invalid = |e: duckdb::Error| -> Error {
        featherstore_core::Error::invalid(format!(
            "flight_sql.memory_limit {:?} is not a DuckDB memory size: {e}",
            settings.memory_limit
        ))
        .into()
    };
    let config = Config::default()
        .enable_external_access(false)?
        .enable_autoload_extension(false)?
        .with("autoinstall_known_extensions", "false")?
        .max_memory(&settings.memory_limit)
        .map_err(invalid)?
        // Spilling would write files: a query over its memory limit fails instead.
        .with("max_temp_directory_size", "0B")?
        .threads(i64::try_from(settings.threads.max(1)).unwrap_or(1))?;
    let conn = Connection::open_in_memory_with_flags(config).map_err(invalid)?;
    conn.register_table_function::<FeatureSetScan>(SCAN_FUNCTION)?;
    // The views live in an attached in-memory database named like the catalog clients see;
    // it is the default one, so that plain names find them. Times with a zone come back
    // labelled UTC, as everywhere in the API.
    conn.execute_batch(&format!(
        "ATTACH ':memory:' AS {CATALOG}; USE {CATALOG}; SET TimeZone = 'UTC';"
    ))?;
    Ok(conn)
}

/// From here on no statement can change a setting of the database.
fn lock(conn: &Connection) -> Result<()> {
    Ok(conn.execute_batch("SET lock_configuration = true;")?)
}

/// The query's own database: locked down, with a view per readable set.
impl Query {
    fn open(
        store: &Arc<FeatureStore>,
        sets: ReadableSets,
        settings: &AdhocSettings,
        schema_only: bool,
    ) -> Result<Query> {
        let conn = sandbox(settings)?;
        let context = Arc::new(QueryContext {
            store: store.clone(),
            sets: sets
                .into_iter()
                .map(|spec| (spec.name.clone(), spec))
                .collect::<HashMap<_, _>>(),
            schema_only,
            failure: Mutex::new(None),
            stopped: Cancellation::default(),
        });
        let views: String = context
            .sets
            .keys()
            .map(|name| {
                format!(
                    "CREATE VIEW {SCHEMA}.{} AS SELECT * FROM {SCAN_FUNCTION}({});",
                    ident(name),
                    literal(name)
                )
            })
            .collect();
        // Views bind their scan when made: inside the query's context.
        with_context(&context, || conn.execute_batch(&views))?;
        lock(&conn)?;
        Ok(Query {
            conn,
            context,
            timeout: settings.timeout,
            memory_limit: settings.memory_limit.clone(),
        })
    }

    /// Checks `sql`, prepares it and hands the statement to `work`, within the query's
    /// timeout and cancellation.
    fn execute<T>(
        self,
        sql: &str,
        work: impl FnOnce(&mut Statement<'_>) -> Result<T>,
    ) -> Result<T> {
        guard::check(&self.conn, sql)?;
        // The request's cancellation (client gone) interrupts the query, as it does storage.
        let request = cancel::current();
        let _registered = request.as_ref().map(|c| c.running(&self.conn));
        let watchdog = Watchdog::start(&self.conn, self.timeout, self.context.stopped.clone());
        let result = with_context(&self.context, || {
            let mut statement = self.conn.prepare(sql)?;
            work(&mut statement)
        });
        let timed_out = watchdog.finish();
        self.context.stopped.cancel();
        let failure = self.context.failure.lock().take();
        result.map_err(|e| {
            if timed_out {
                featherstore_core::Error::DeadlineExceeded(format!(
                    "the query ran longer than its {} ms limit (flight_sql.query_timeout_ms) and was stopped",
                    self.timeout.as_millis()
                ))
                .into()
            } else if request.as_ref().is_some_and(Cancellation::is_cancelled) {
                Error::Cancelled
            } else if let Some(failure) = failure {
                failure
            } else {
                classify(e, &self.memory_limit)
            }
        })
    }
}

/// DuckDB's errors about a query are the query's: INVALID_ARGUMENT with DuckDB's message, but
/// a query over its memory limit is RESOURCE_EXHAUSTED and a fault of the engine INTERNAL.
fn classify(error: Error, memory_limit: &str) -> Error {
    let Error::DuckDb(duckdb) = &error else {
        return error;
    };
    let message = duckdb.to_string();
    if message.starts_with("Out of Memory Error") {
        featherstore_core::Error::TooLarge(format!(
            "the query needs more memory than its limit of {memory_limit} (flight_sql.memory_limit): {message}"
        ))
        .into()
    } else if [
        "INTERNAL Error",
        "FATAL Error",
        "IO Error",
        "INTERRUPT Error",
    ]
    .iter()
    .any(|fault| message.starts_with(fault))
    {
        error
    } else {
        featherstore_core::Error::invalid(message).into()
    }
}

/// Interrupts a query's connection once its time is up, from a thread of its own.
struct Watchdog {
    state: Arc<(Mutex<WatchState>, Condvar)>,
}

#[derive(Default)]
struct WatchState {
    finished: bool,
    fired: bool,
}

impl Watchdog {
    fn start(conn: &Connection, timeout: Duration, stopped: Cancellation) -> Watchdog {
        let state: Arc<(Mutex<WatchState>, Condvar)> = Arc::default();
        let interrupt = conn.interrupt_handle();
        let watched = state.clone();
        let spawned = std::thread::Builder::new()
            .name("featherstore-sql-timeout".into())
            .spawn(move || {
                let (lock, finished) = &*watched;
                let mut state = lock.lock();
                let deadline = std::time::Instant::now() + timeout;
                while !state.finished {
                    if finished.wait_until(&mut state, deadline).timed_out() {
                        if !state.finished {
                            state.fired = true;
                            stopped.cancel();
                            interrupt.interrupt();
                        }
                        return;
                    }
                }
            });
        if let Err(e) = spawned {
            // Without its watchdog the query would run unbounded: stop it at once instead.
            tracing::error!(error = %e, "could not start a query's timeout thread");
            state.0.lock().fired = true;
            conn.interrupt_handle().interrupt();
        }
        Watchdog { state }
    }

    /// Ends the watch; whether the time ran out first.
    fn finish(self) -> bool {
        let (lock, finished) = &*self.state;
        let mut state = lock.lock();
        state.finished = true;
        finished.notify_all();
        state.fired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> AdhocSettings {
        AdhocSettings {
            timeout: Duration::from_secs(5),
            memory_limit: "100MB".into(),
            threads: 1,
        }
    }

    /// The database a query runs in refuses every way out by itself, without the guard in
    /// front of it: each statement here is sent to DuckDB directly.
    #[test]
    fn the_query_database_refuses_files_network_extensions_and_settings() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret.csv");
        std::fs::write(&secret, "a\n1\n").unwrap();
        let secret = secret.display().to_string();
        let conn = sandbox(&settings()).unwrap();
        lock(&conn).unwrap();
        for attack in [
            format!("SELECT * FROM read_csv('{secret}')"),
            format!("SELECT * FROM '{secret}'"),
            format!("SELECT * FROM read_text('{secret}')"),
            format!("SELECT * FROM glob('{}/*')", dir.path().display()),
            format!("COPY (SELECT 1) TO '{secret}.out'"),
            format!("ATTACH '{secret}.db' AS other"),
            "SELECT * FROM read_csv('http://127.0.0.1:9/x.csv')".into(),
            "INSTALL httpfs".into(),
            "LOAD httpfs".into(),
            "SET enable_external_access = true".into(),
            "SET memory_limit = '100GB'".into(),
            "SET lock_configuration = false".into(),
            "RESET lock_configuration".into(),
            "SET allowed_directories = ['/']".into(),
            "SELECT * FROM featherstore_scan('anything')".into(),
        ] {
            let outcome = conn.execute_batch(&attack);
            assert!(outcome.is_err(), "{attack} was allowed");
        }
        assert!(!std::path::Path::new(&format!("{secret}.out")).exists());
        assert!(!std::path::Path::new(&format!("{secret}.db")).exists());
        let limit: String = conn
            .query_row("SELECT current_setting('memory_limit')", [], |row| {
                row.get(0)
            })
            .unwrap();
        assert!(limit.starts_with("95") || limit.contains("MiB"), "{limit}");
    }

    #[test]
    fn the_guard_accepts_one_query_and_refuses_the_rest() {
        let conn = sandbox(&settings()).unwrap();
        for query in [
            "SELECT 1",
            "WITH a AS (SELECT 1 AS x) SELECT x FROM a",
            "SELECT * FROM range(3)",
            "FROM generate_series(1, 3)",
            "VALUES (1), (2)",
            "SELECT 1;",
            r#"SELECT '{"type":"TABLE_FUNCTION","function":{"function_name":"read_csv"}}' AS v"#,
            r#"SELECT 1 AS "a""type"":""TABLE_FUNCTION""""#,
        ] {
            guard::check(&conn, query).unwrap_or_else(|e| panic!("{query}: {e}"));
        }
        // A long expression nests the parse tree hundreds of levels deep.
        let terms: Vec<String> = (0..300).map(|i| i.to_string()).collect();
        guard::check(&conn, &format!("SELECT {}", terms.join(" + "))).unwrap();
        let nested = format!(
            "SELECT * FROM {}read_csv('x.csv'){}",
            "(SELECT * FROM ".repeat(40),
            ")".repeat(40)
        );
        let error = guard::check(&conn, &nested).expect_err("a file read deep inside");
        assert!(error.to_string().contains("read_csv"), "{error}");
        for refused in [
            "SELECT 1; SELECT 2",
            "CREATE TABLE t (a INT)",
            "SELECT * FROM read_csv('x.csv')",
            "SELECT * FROM (SELECT * FROM READ_PARQUET('x'))",
            "SELECT (SELECT count(*) FROM glob('*'))",
            "PRAGMA version",
            "SELEC 1",
        ] {
            let error = guard::check(&conn, refused).expect_err(refused);
            assert_eq!(
                error.code(),
                featherstore_core::ErrorCode::InvalidArgument,
                "{refused}: {error}"
            );
        }
    }

    #[test]
    fn a_bad_memory_limit_is_found_by_the_settings_check() {
        let mut bad = settings();
        bad.memory_limit = "lots".into();
        let error = check_settings(&bad).expect_err("refused");
        assert!(
            error.to_string().contains("flight_sql.memory_limit"),
            "{error}"
        );
        check_settings(&settings()).unwrap();
    }
}
