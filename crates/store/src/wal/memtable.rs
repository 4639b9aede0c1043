//! Rows not yet in a backend's final storage live in memory as the Arrow batches that the log
//! made durable (the "memtable"): an append adds a batch, copying nothing. DuckDB reads them
//! through the table function `featherstore_memtable(id, rows)`, so reads run the same SQL
//! over them as over the stored rows: a relation that is the union of both.
//!
//! The Parquet backend's memtable used to be an in-memory DuckDB table, which copied every
//! row into DuckDB twice per append (its transaction's storage, then the table) and updated
//! its statistics each time: most of that backend's ingest CPU.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use duckdb::core::{DataChunkHandle, LogicalTypeHandle, LogicalTypeId};
use duckdb::vtab::{
    record_batch_to_duckdb_data_chunk, to_duckdb_logical_type, BindInfo, InitInfo,
    TableFunctionInfo, VTab,
};
use duckdb::Connection;
use featherstore_core::FeatureSetSpec;
use parking_lot::{Mutex, RwLock};

use crate::query::sql;
use crate::query::table_function::{vector_capacity, CallbackResult};
use crate::Result;

/// The table function's SQL name. Registered in the backends' own DuckDB databases only, which
/// run no SQL a client wrote (ad-hoc queries run in an engine of their own).
const SCAN_FUNCTION: &str = "featherstore_memtable";

/// A batch of fewer rows is small: a run of [`SMALL_RUN`] of them at the end of a memtable is
/// merged into one batch, so that a stream of tiny appends (one row per HTTP request) does not
/// hold a batch, with its arrays' overhead, per row.
const SMALL_ROWS: usize = 8_192;
const SMALL_RUN: usize = 64;

/// Every live memtable, by id: the table function finds its rows here (a DuckDB parameter
/// cannot carry a reference). Ids are never reused.
static MEMTABLES: LazyLock<RwLock<HashMap<u64, Arc<Rows>>>> = LazyLock::new(Default::default);
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A memtable's batches, in append order, and their total rows.
struct Rows {
    schema: SchemaRef,
    batches: RwLock<(Vec<RecordBatch>, usize)>,
}

impl Rows {
    /// The first `rows` rows, as batches (the last one sliced).
    fn first(&self, rows: usize) -> Vec<RecordBatch> {
        let batches = self.batches.read();
        let mut left = rows;
        let mut first = Vec::new();
        for batch in &batches.0 {
            if left == 0 {
                break;
            }
            let take = left.min(batch.num_rows());
            first.push(batch.slice(0, take));
            left -= take;
        }
        first
    }
}

/// A memtable of one set under one spec. It leaves the registry when dropped: once no
/// snapshot lists it, no reader can be scanning it.
pub(crate) struct MemTable {
    id: u64,
    rows: Arc<Rows>,
}

impl MemTable {
    pub(crate) fn new(spec: &FeatureSetSpec) -> MemTable {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let rows = Arc::new(Rows {
            schema: sql::storage_schema(spec),
            batches: RwLock::default(),
        });
        MEMTABLES.write().insert(id, rows.clone());
        MemTable { id, rows }
    }

    /// Adds a storage batch; its rows are visible to reads whose relation is made after.
    pub(crate) fn push(&self, batch: RecordBatch) {
        let mut batches = self.rows.batches.write();
        let (list, rows) = &mut *batches;
        *rows += batch.num_rows();
        list.push(batch);
        let small = list
            .iter()
            .rev()
            .take_while(|b| b.num_rows() < SMALL_ROWS)
            .count();
        if small >= SMALL_RUN {
            // Same rows, same order: a relation made earlier reads the same first rows. The
            // batches have the memtable's schema, so this cannot fail; if it did, they would
            // only stay apart.
            if let Ok(merged) = concat_batches(&self.rows.schema, &list[list.len() - small..]) {
                list.truncate(list.len() - small);
                list.push(merged);
            }
        }
    }

    /// Rows in the memtable now.
    pub(crate) fn rows(&self) -> usize {
        self.rows.batches.read().1
    }

    /// Its batches as they are now, in append order.
    pub(crate) fn batches_now(&self) -> Vec<RecordBatch> {
        self.rows.batches.read().0.clone()
    }

    /// The storage schema of its batches.
    pub(crate) fn schema(&self) -> &SchemaRef {
        &self.rows.schema
    }

    /// Batches holding them (runs of small ones merged).
    #[cfg(test)]
    pub(crate) fn batches(&self) -> usize {
        self.rows.batches.read().0.len()
    }

    /// `SELECT` of the memtable's rows as they are now (rows appended later are not in it);
    /// `None` while it has none.
    pub(crate) fn select_now(&self) -> Option<String> {
        let rows = self.rows();
        (rows > 0).then(|| {
            format!(
                "SELECT * FROM {SCAN_FUNCTION}({}::UBIGINT, {rows}::UBIGINT)",
                self.id
            )
        })
    }
}

impl Drop for MemTable {
    fn drop(&mut self) {
        MEMTABLES.write().remove(&self.id);
    }
}

/// Makes the table function known to a DuckDB database (once, on any of its connections).
pub(crate) fn register(conn: &Connection) -> Result<()> {
    conn.register_table_function::<MemTableScan>(SCAN_FUNCTION)?;
    Ok(())
}

struct MemTableScan;

struct ScanBind {
    /// The rows the call names, and the columns of the query's projection.
    batches: Vec<RecordBatch>,
}

struct ScanInit {
    projection: Vec<usize>,
    /// The batch being read and the next row in it.
    cursor: Mutex<(usize, usize)>,
}

impl VTab for MemTableScan {
    type BindData = ScanBind;
    type InitData = ScanInit;

    fn bind(bind: &BindInfo) -> CallbackResult<ScanBind> {
        let id = bind.get_parameter(0).to_uint64();
        let rows = usize::try_from(bind.get_parameter(1).to_uint64())?;
        let table = MEMTABLES
            .read()
            .get(&id)
            .cloned()
            .ok_or_else(|| format!("memtable {id} is gone"))?;
        for field in table.schema.fields() {
            bind.add_result_column(field.name(), to_duckdb_logical_type(field.data_type())?);
        }
        Ok(ScanBind {
            batches: table.first(rows),
        })
    }

    fn init(init: &InitInfo) -> CallbackResult<ScanInit> {
        let projection = init
            .get_column_indices()
            .into_iter()
            .map(usize::try_from)
            .collect::<std::result::Result<_, _>>()?;
        Ok(ScanInit {
            projection,
            cursor: Mutex::new((0, 0)),
        })
    }

    fn func(info: &TableFunctionInfo<Self>, output: &mut DataChunkHandle) -> CallbackResult<()> {
        let batches = &info.get_bind_data().batches;
        let init = info.get_init_data();
        let capacity = vector_capacity(output);
        let mut cursor = init.cursor.lock();
        while let Some(batch) = batches.get(cursor.0) {
            if cursor.1 < batch.num_rows() && capacity > 0 {
                let take = capacity.min(batch.num_rows() - cursor.1);
                let slice = batch.slice(cursor.1, take).project(&init.projection)?;
                cursor.1 += take;
                return record_batch_to_duckdb_data_chunk(&slice, output);
            }
            *cursor = (cursor.0 + 1, 0);
        }
        output.set_len(0);
        Ok(())
    }

    fn supports_pushdown() -> bool {
        true
    }

    fn parameters() -> Option<Vec<LogicalTypeHandle>> {
        Some(vec![
            LogicalTypeHandle::from(LogicalTypeId::UBigint),
            LogicalTypeHandle::from(LogicalTypeId::UBigint),
        ])
    }
}
