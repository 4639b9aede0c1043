//! The in-memory DuckDB database of a store: it holds the memtables, runs every read, and
//! turns the results of flush and compaction queries into data files.

use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::RecordBatch;
use featherstore_core::FeatureSetSpec;

use super::memtable::{self, Graveyard, MemTable};
use super::options::ParquetOptions;
use super::set::SetState;
use super::writer::{self, WrittenFile};
use crate::query::sql;
use crate::query::{ConnectionPool, EngineSettings, Purpose};
use crate::Result;

pub(super) struct Engine {
    pub(super) pool: ConnectionPool,
    pub(super) options: ParquetOptions,
    /// Numbers memtable tables, so a name is never reused (not even by a re-created set
    /// whose old tables a reader may still be scanning).
    next_table: AtomicU64,
    graveyard: Graveyard,
}

impl Engine {
    pub(super) fn open(options: ParquetOptions, settings: &EngineSettings) -> Result<Self> {
        Ok(Engine {
            pool: ConnectionPool::open(None, settings)?,
            options,
            next_table: AtomicU64::new(0),
            graveyard: Graveyard::default(),
        })
    }

    pub(super) fn new_memtable(&self, spec: &FeatureSetSpec) -> Result<MemTable> {
        let number = self.next_table.fetch_add(1, Ordering::Relaxed);
        let name = format!("mem_{}_{number}", spec.name);
        let conn = self.pool.get(Purpose::Write)?;
        MemTable::create(&conn, spec, name, &self.graveyard)
    }

    pub(super) fn drop_dead_tables(&self) {
        // Without a connection now, the tables wait in the graveyard for the next call.
        match self.pool.get(Purpose::Write) {
            Ok(conn) => memtable::drop_dead_tables(&conn, &self.graveyard),
            Err(e) => tracing::debug!(error = %e, "dead memtable tables not dropped yet"),
        }
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
