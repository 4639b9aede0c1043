//! `featherstore_scan(name)`: the table function behind each feature set's view in an ad-hoc
//! query's engine. It streams the set's stored rows from the offline store (over
//! [`OfflineStore::query_relations`](crate::OfflineStore::query_relations), like every other
//! read) into DuckDB, one vector at a time, through a bounded channel: the rows are never held
//! whole, and only the columns the query uses are read (projection pushdown).
//!
//! The function finds its query's [`QueryContext`] in a thread-local set by the engine around
//! the statements it prepares, so SQL cannot name another query's sets or reach a set the
//! caller may not see: there is no handle to forge.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use duckdb::core::{DataChunkHandle, LogicalTypeHandle, LogicalTypeId};
use duckdb::vtab::{
    record_batch_to_duckdb_data_chunk, to_duckdb_logical_type, BindInfo, InitInfo,
    TableFunctionInfo, VTab,
};
use featherstore_core::FeatureSetSpec;
use parking_lot::Mutex;

use super::super::sql::{self, ident};
use crate::query::table_function::{vector_capacity, CallbackResult};
use crate::query::Cancellation;
use crate::{Error, FeatureStore, Result};

/// The table function's SQL name.
pub(super) const SCAN_FUNCTION: &str = "featherstore_scan";

/// Batches buffered between a set's storage scan and DuckDB.
const SCAN_BUFFER: usize = 2;

/// How often a scan waiting for rows looks whether its query was stopped.
const STOP_POLL: Duration = Duration::from_millis(50);

/// What one ad-hoc query may read, and where its scans report a storage failure.
pub(super) struct QueryContext {
    pub(super) store: Arc<FeatureStore>,
    /// The sets the caller may read, by name, each under its current spec.
    pub(super) sets: HashMap<String, Arc<FeatureSetSpec>>,
    /// Scans produce no rows: the query runs only to learn its result schema.
    pub(super) schema_only: bool,
    /// The first storage error a scan met: reported instead of DuckDB's rewording of it.
    pub(super) failure: Mutex<Option<Error>>,
    /// Set when the query is stopped (timeout, client gone): scans stop waiting.
    pub(super) stopped: Cancellation,
}

thread_local! {
    static CONTEXT: RefCell<Option<Arc<QueryContext>>> = const { RefCell::new(None) };
}

/// Runs `work` with `context` as the query context of this thread's scans.
pub(super) fn with_context<T>(context: &Arc<QueryContext>, work: impl FnOnce() -> T) -> T {
    struct Restore(Option<Arc<QueryContext>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CONTEXT.with(|current| *current.borrow_mut() = self.0.take());
        }
    }
    let _restore = Restore(CONTEXT.with(|current| current.borrow_mut().replace(context.clone())));
    work()
}

pub(super) struct FeatureSetScan;

pub(super) struct ScanBind {
    context: Arc<QueryContext>,
    spec: Arc<FeatureSetSpec>,
    schema: SchemaRef,
}

pub(super) struct ScanInit {
    /// Indices into the set's columns that the query reads, in output order.
    projection: Vec<usize>,
    state: Mutex<ScanState>,
    /// Stops the storage scan when the query is done with it (a LIMIT met, an error).
    cancellation: Cancellation,
}

#[derive(Default)]
struct ScanState {
    /// `None` until the first call: the storage scan starts when DuckDB first asks for rows.
    rows: Option<Receiver<Result<RecordBatch>>>,
    current: Option<RecordBatch>,
    offset: usize,
    done: bool,
}

impl Drop for ScanInit {
    fn drop(&mut self) {
        self.cancellation.cancel();
    }
}

impl VTab for FeatureSetScan {
    type BindData = ScanBind;
    type InitData = ScanInit;

    fn bind(bind: &BindInfo) -> CallbackResult<ScanBind> {
        let context = CONTEXT
            .with(|current| current.borrow().clone())
            .ok_or("featherstore_scan reads feature sets only inside a FeatherStore query")?;
        let name = bind.get_parameter(0).to_string();
        let spec = context
            .sets
            .get(&name)
            .cloned()
            .ok_or_else(|| format!("no feature set {name:?} is readable here"))?;
        let schema = spec.arrow_schema();
        for field in schema.fields() {
            bind.add_result_column(field.name(), to_duckdb_logical_type(field.data_type())?);
        }
        Ok(ScanBind {
            context,
            spec,
            schema,
        })
    }

    fn init(init: &InitInfo) -> CallbackResult<ScanInit> {
        let projection = init
            .get_column_indices()
            .into_iter()
            .map(|i| usize::try_from(i).unwrap_or(usize::MAX))
            .collect();
        Ok(ScanInit {
            projection,
            state: Mutex::new(ScanState::default()),
            cancellation: Cancellation::default(),
        })
    }

    fn func(info: &TableFunctionInfo<Self>, output: &mut DataChunkHandle) -> CallbackResult<()> {
        let bind = info.get_bind_data();
        let init = info.get_init_data();
        let mut state = init.state.lock();
        let capacity = vector_capacity(output);
        if state.done || capacity == 0 || bind.context.schema_only {
            output.set_len(0);
            return Ok(());
        }
        if state.rows.is_none() {
            state.rows = Some(start_scan(bind, &init.projection, &init.cancellation)?);
        }
        loop {
            if let Some(batch) = &state.current {
                if state.offset < batch.num_rows() {
                    let take = capacity.min(batch.num_rows() - state.offset);
                    let slice = batch.slice(state.offset, take);
                    state.offset += take;
                    return record_batch_to_duckdb_data_chunk(&slice, output);
                }
            }
            match next_batch(
                &bind.context,
                state.rows.as_ref().ok_or("scan not started")?,
            ) {
                Some(Ok(batch)) => {
                    state.current = Some(batch);
                    state.offset = 0;
                }
                Some(Err(e)) => {
                    state.done = true;
                    let message = e.to_string();
                    bind.context.failure.lock().get_or_insert(e);
                    return Err(message.into());
                }
                None => {
                    state.done = true;
                    output.set_len(0);
                    return Ok(());
                }
            }
        }
    }

    fn supports_pushdown() -> bool {
        true
    }

    fn parameters() -> Option<Vec<LogicalTypeHandle>> {
        Some(vec![LogicalTypeHandle::from(LogicalTypeId::Varchar)])
    }
}

/// The next batch of a scan, `None` at its end; waits, but gives up once the query stopped.
fn next_batch(
    context: &QueryContext,
    rows: &Receiver<Result<RecordBatch>>,
) -> Option<Result<RecordBatch>> {
    loop {
        match rows.recv_timeout(STOP_POLL) {
            Ok(item) => return Some(item),
            Err(RecvTimeoutError::Disconnected) => return None,
            Err(RecvTimeoutError::Timeout) if context.stopped.is_cancelled() => {
                return Some(Err(Error::Cancelled))
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
}

/// Starts the storage scan of the projected columns on a thread of its own: the offline store
/// pushes rows into a callback, DuckDB pulls them.
fn start_scan(
    bind: &ScanBind,
    projection: &[usize],
    cancellation: &Cancellation,
) -> CallbackResult<Receiver<Result<RecordBatch>>> {
    let fields = projection
        .iter()
        .map(|&i| {
            bind.schema
                .fields()
                .get(i)
                .cloned()
                .ok_or_else(|| format!("column {i} is not a column of the feature set"))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    let columns: Vec<String> = schema.fields().iter().map(|f| ident(f.name())).collect();
    let (tx, rx) = sync_channel(SCAN_BUFFER);
    let (store, spec, cancellation) = (
        bind.context.store.clone(),
        bind.spec.clone(),
        cancellation.clone(),
    );
    let span = tracing::Span::current();
    std::thread::Builder::new()
        .name("featherstore-sql-scan".into())
        .spawn(move || {
            let _entered = span.enter();
            let result = cancellation.scope(|| {
                store
                    .offline()
                    .query_relations(&[&spec], &mut |conn, relations| {
                        let query = format!("SELECT {} FROM {}", columns.join(", "), relations[0]);
                        sql::stream_query(conn, &query, &schema, &mut |batch| {
                            tx.send(Ok(batch)).map_err(|_| Error::Cancelled)
                        })
                    })
            });
            match result {
                Ok(()) | Err(Error::Cancelled) => {}
                Err(_) if cancellation.is_cancelled() => {}
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        })?;
    Ok(rx)
}
