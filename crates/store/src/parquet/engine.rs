//! The in-memory DuckDB database of a store: it reads the memtables and the data files, runs
//! every read, and turns the results of flush and compaction queries into data files.

use arrow::array::RecordBatch;

use super::options::ParquetOptions;
use super::set::SetState;
use super::writer::{self, WrittenFile};
use crate::query::sql;
use crate::query::{ConnectionPool, EngineSettings, Purpose};
use crate::wal::memtable;
use crate::Result;

pub(super) struct Engine {
    pub(super) pool: ConnectionPool,
    pub(super) options: ParquetOptions,
}

impl Engine {
    pub(super) fn open(options: ParquetOptions, settings: &EngineSettings) -> Result<Self> {
        let pool = ConnectionPool::open(None, settings)?;
        memtable::register(&*pool.get(Purpose::Write)?)?;
        Ok(Engine { pool, options })
    }

    /// Runs a query yielding storage rows sorted by date first, and writes them into new data
    /// files of `set` (not yet live), numbered from `next_file`.
    pub(super) fn write_query(
        &self,
        set: &SetState,
        next_file: &mut u64,
        sql: &str,
    ) -> Result<Vec<WrittenFile>> {
        let schema = sql::storage_schema(&set.spec());
        // Entity, event time, ingest time: each column is one Parquet leaf column, so field
        // indices are leaf indices. Rows are written sorted by entity, event time and `_seq`,
        // and ingest times never decrease with `_seq`, so they are sorted by this too.
        let ts_index = set.spec().features.len() + 1;
        let properties = self
            .options
            .writer_properties(&schema, &[0, ts_index, ts_index + 1])?;
        let conn = self.pool.get(Purpose::Write)?;
        let mut statement = conn.prepare(sql)?;
        drop(statement.stream_arrow([])?);
        writer::write_by_date(
            &set.dir,
            &schema,
            &properties,
            next_file,
            || match statement.step()? {
                Some(chunk) => Ok(Some(sql::conform(&RecordBatch::from(&chunk), &schema)?)),
                None => Ok(None),
            },
        )
    }
}
