//! Flush: the memtable's rows become sorted Parquet files, one per UTC date, and the log that
//! held them is dropped.
//!
//! Crash safety comes from the order of the steps: files are written and made durable under
//! names no manifest lists yet; the new manifest (files + watermark) is written atomically;
//! only then are the frozen memtable tables and the covered log segments dropped. A crash
//! before the manifest leaves garbage files (deleted at open) and a complete log; a crash
//! after it leaves log rows under the watermark, which replay skips.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::durable::remove_quietly;
use super::log;
use super::memtable::{self, MemTable};
use super::set::{lock, read, write, DataFile, Maintenance, SetState, Snapshot};
use super::Inner;
use crate::query::sql::{ident, SEQ_COLUMN};
use crate::Result;

/// What a flush took out of the ingest path.
struct Frozen {
    /// Every row up to this `_seq` is in `tables`.
    upto: i64,
    tables: Vec<Arc<MemTable>>,
    /// Log segments numbered below this hold only rows up to `upto`.
    next_segment: u64,
    pending_since: Option<Instant>,
}

impl Inner {
    /// Writes every acknowledged row of `set` not yet in Parquet to Parquet.
    pub(super) fn flush_set(&self, set: &SetState) -> Result<()> {
        let mut maintenance = lock(&set.maintenance);
        if !set.is_alive() {
            return Ok(());
        }
        let Some(frozen) = self.freeze(set)? else {
            return Ok(());
        };
        let flushed = self.write_frozen(set, &mut maintenance, &frozen);
        if flushed.is_ok() {
            drop(frozen);
            self.drop_dead_tables();
        } else {
            // The rows stay in the (still readable) frozen tables; the next flush takes them
            // again, and the age trigger must still see them as waiting.
            let mut ingest = lock(&set.ingest);
            ingest.pending_since = match (ingest.pending_since, frozen.pending_since) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        flushed
    }

    /// Points appends at a fresh memtable table and log segment, so the rows to flush stop
    /// changing while they are written, yet stay visible to readers.
    fn freeze(&self, set: &SetState) -> Result<Option<Frozen>> {
        if !set.has_unflushed(&read(&set.snapshot)) {
            return Ok(None);
        }
        // Created before taking the ingest lock: appends wait for nothing but the swap.
        let table = Arc::new(self.new_memtable(&set.spec)?);
        let mut ingest = lock(&set.ingest);
        let upto = set.committed.load(Ordering::Acquire);
        let mut snapshot = write(&set.snapshot);
        let frozen = snapshot.tables.clone();
        let mut tables = frozen.clone();
        tables.push(table.clone());
        *snapshot = Arc::new(Snapshot {
            files: snapshot.files.clone(),
            flushed_seq: snapshot.flushed_seq,
            tables,
        });
        ingest.table = table;
        Ok(Some(Frozen {
            upto,
            tables: frozen,
            next_segment: ingest.log.roll(),
            pending_since: ingest.pending_since.take(),
        }))
    }

    fn write_frozen(
        &self,
        set: &SetState,
        maintenance: &mut Maintenance,
        frozen: &Frozen,
    ) -> Result<()> {
        let spec = &set.spec;
        let ts = ident(&spec.timestamp);
        let sql = format!(
            "SELECT * FROM ({}) ORDER BY CAST({ts} AS DATE), {}, {ts}, {}",
            memtable::select_tables(&frozen.tables),
            ident(&spec.entity.name),
            ident(SEQ_COLUMN)
        );
        let entries = self.write_query(set, &mut maintenance.next_file, &sql)?;

        // Only flushes and compactions (both under `maintenance`) replace the snapshot, and
        // the table list only changed in `freeze`: `current` is what the swap replaces.
        let current = Arc::clone(&read(&set.snapshot));
        let mut files = current.files.clone();
        files.extend(
            entries
                .iter()
                .map(|e| Arc::new(DataFile::new(&set.dir, e.path.clone(), e.rows, &set.alive))),
        );
        let next = Snapshot {
            files,
            flushed_seq: frozen.upto,
            tables: current
                .tables
                .iter()
                .filter(|t| !frozen.tables.iter().any(|f| Arc::ptr_eq(f, t)))
                .cloned()
                .collect(),
        };
        if let Err(e) = next.manifest(maintenance.next_file).store(&set.dir) {
            for entry in &entries {
                remove_quietly(&set.dir.join(&entry.path));
            }
            return Err(e);
        }
        *write(&set.snapshot) = Arc::new(next);

        // Committed. What follows only frees space; failures leave garbage, not wrong data.
        // The frozen tables go once the last reader of an older snapshot lets go of them.
        if let Err(e) = log::remove_segments_below(&set.log_dir(), frozen.next_segment) {
            tracing::warn!(feature_set = %spec.name, error = %e, "could not remove flushed log segments");
        }
        tracing::debug!(
            feature_set = %spec.name,
            rows = entries.iter().map(|e| e.rows).sum::<u64>(),
            files = entries.len(),
            "flushed"
        );
        Ok(())
    }
}
