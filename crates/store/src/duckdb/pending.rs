//! The rows of a set that are acknowledged but not yet in its table: logged in
//! `{database}.log/{set}/` (fsynced, see `wal::log`) and held in memtables until `apply` moves
//! them into the table.
//!
//! The table's row in `APPLIED_TABLE` holds the greatest `_seq` in it (the watermark), written
//! in the transaction that moves rows in. Replay after a crash skips logged rows up to it, and
//! reads take memtable rows past it only, checked inside the statement that reads the table:
//! whatever DuckDB snapshot the statement sees, every acknowledged row is in exactly one of the
//! two.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use featherstore_core::FeatureSetSpec;
use parking_lot::{Mutex, RwLock};

use super::{table, APPLIED_TABLE};
use crate::durable::create_dir_durably;
use crate::metrics::DUCKDB;
use crate::query::sql::{self, ident, literal, SEQ_COLUMN};
use crate::wal::log::{self, LogWriter};
use crate::wal::memtable::MemTable;
use crate::wal::{Ingest, StagedSet};
use crate::Result;

/// The memtables of a set, oldest first; the last one takes appends. Replaced whole, so that
/// a reader holding it keeps every table it lists alive until its statement is done.
pub(super) type MemTables = Arc<Vec<Arc<MemTable>>>;

pub(super) struct PendingSet {
    /// The current version; replaced by `update` under the apply and ingest locks.
    spec: RwLock<Arc<FeatureSetSpec>>,
    pub(super) log_dir: PathBuf,
    /// False once the set is deleted: appends and applies stop.
    pub(super) alive: AtomicBool,
    pub(super) ingest: Mutex<Ingest>,
    /// Greatest acknowledged `_seq` (in the memtables or the table); -1 when none.
    pub(super) committed: AtomicI64,
    /// Greatest `_seq` in the table (the watermark in `APPLIED_TABLE`); -1 when none.
    pub(super) applied: AtomicI64,
    /// Only held to clone or swap the `Arc`.
    pub(super) tables: RwLock<MemTables>,
    /// Held by apply, update and delete: one change of the table at a time.
    pub(super) apply: Mutex<()>,
}

impl PendingSet {
    /// The set `spec` whose table holds the rows up to `_seq` `applied`, with its log in
    /// `log_dir`: created if missing, replayed into a memtable otherwise.
    pub(super) fn open(spec: FeatureSetSpec, log_dir: PathBuf, applied: i64) -> Result<Self> {
        create_dir_durably(&log_dir)?;
        let table = Arc::new(MemTable::new(&spec));
        let schema = sql::storage_schema(&spec);
        let replayed = log::replay(&log_dir, &schema, applied, None, |batch| {
            table.push(batch);
            Ok(())
        })?;
        let committed = replayed.max_seq.unwrap_or(-1).max(applied);
        Ok(PendingSet {
            ingest: Mutex::new(Ingest {
                log: LogWriter::new(log_dir.clone(), schema, replayed.next_segment, &DUCKDB.log),
                next_seq: committed + 1,
                table: table.clone(),
                // Set by the store from the stored rows before any append.
                last_ingested_at: i64::MIN,
                pending_since: (committed > applied).then(Instant::now),
            }),
            committed: AtomicI64::new(committed),
            applied: AtomicI64::new(applied),
            tables: RwLock::new(Arc::new(vec![table])),
            apply: Mutex::new(()),
            spec: RwLock::new(Arc::new(spec)),
            log_dir,
            alive: AtomicBool::new(true),
        })
    }

    pub(super) fn spec(&self) -> Arc<FeatureSetSpec> {
        Arc::clone(&self.spec.read())
    }

    pub(super) fn replace_spec(&self, spec: FeatureSetSpec) {
        *self.spec.write() = Arc::new(spec);
    }

    /// Adds `memtable` to the readers' list, last; returns the list as it was.
    pub(super) fn add_memtable(&self, memtable: Arc<MemTable>) -> Vec<Arc<MemTable>> {
        let mut tables = self.tables.write();
        let before: Vec<Arc<MemTable>> = tables.iter().cloned().collect();
        let mut after = before.clone();
        after.push(memtable);
        *tables = Arc::new(after);
        before
    }

    /// Takes `gone` (their rows now in the table) out of the readers' list.
    pub(super) fn drop_memtables(&self, gone: &[Arc<MemTable>]) {
        let mut tables = self.tables.write();
        let left: Vec<Arc<MemTable>> = tables
            .iter()
            .filter(|t| !gone.iter().any(|g| Arc::ptr_eq(g, t)))
            .cloned()
            .collect();
        *tables = Arc::new(left);
    }

    /// Rows acknowledged but not yet in the table.
    pub(super) fn unapplied_rows(&self) -> u64 {
        let applied = self.applied.load(Ordering::Acquire);
        (self.committed.load(Ordering::Acquire) - applied).max(0) as u64
    }

    /// The set's rows as a SQL relation (to use after `FROM`), and the memtables it reads,
    /// to hold until the statements using it are done. Only the table while every row
    /// acknowledged so far is in it.
    pub(super) fn relation(&self) -> (String, Option<MemTables>) {
        let name = self.spec().name.clone();
        let table = ident(&table(&name));
        // Committed first: if the watermark then covers it, so does the table of any
        // statement that starts after this.
        let committed = self.committed.load(Ordering::Acquire);
        if self.applied.load(Ordering::Acquire) >= committed {
            return (table, None);
        }
        // Taken before the statement starts: a memtable leaves the list only once its rows
        // are committed into the table, so a row missing from these is in the table.
        let tables = Arc::clone(&self.tables.read());
        let scans: Vec<String> = tables.iter().filter_map(|t| t.select_now()).collect();
        if scans.is_empty() {
            return (table, None);
        }
        // By name: the table has the columns of every version, an older memtable lacks the
        // features added since (null).
        let relation = format!(
            "(SELECT * FROM {table} UNION ALL BY NAME SELECT * FROM ({scans}) \
             WHERE {seq} > (SELECT seq FROM {APPLIED_TABLE} WHERE name = {name}))",
            scans = scans.join(" UNION ALL BY NAME "),
            seq = ident(SEQ_COLUMN),
            name = literal(&name),
        );
        (relation, Some(tables))
    }
}

impl StagedSet for PendingSet {
    fn ingest(&self) -> &Mutex<Ingest> {
        &self.ingest
    }

    fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    fn committed(&self) -> &AtomicI64 {
        &self.committed
    }
}
