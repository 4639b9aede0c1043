//! Apply: a set's acknowledged rows move from its memtables into its table, and the log
//! segments that held them are dropped.
//!
//! Crash safety comes from the order of the steps: appends are pointed at a fresh memtable
//! and log segment; the frozen rows and the new watermark are committed in one transaction;
//! only then do the frozen memtables leave the readers' list and the covered segments go.
//! A crash before the commit leaves the log complete (replayed at open); one after it leaves
//! logged rows under the watermark, which replay skips.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::pending::PendingSet;
use super::{set_watermark, table, transaction, watermark};
use crate::metrics::DUCKDB;
use crate::query::{ConnectionPool, Purpose};
use crate::wal::log;
use crate::wal::memtable::MemTable;
use crate::wal::StagedSet;
use crate::Result;

/// Moves every acknowledged row of `set` not yet in its table into it, in one transaction.
pub(super) fn apply_set(pool: &ConnectionPool, set: &PendingSet) -> Result<()> {
    let started = Instant::now();
    match apply(pool, set) {
        Ok(Some(rows)) => {
            DUCKDB.record_apply(rows, started.elapsed());
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => {
            DUCKDB.record_apply_failure();
            Err(e)
        }
    }
}

/// The rows moved, or `None` when there was nothing to move.
fn apply(pool: &ConnectionPool, set: &PendingSet) -> Result<Option<u64>> {
    let _apply = set.apply.lock();
    if !set.is_alive() || set.unapplied_rows() == 0 {
        return Ok(None);
    }
    // Created before taking the ingest lock: appends wait for nothing but the swap.
    let fresh = Arc::new(MemTable::new(&set.spec()));
    let (upto, frozen, next_segment, pending_since) = {
        let mut ingest = set.ingest.lock();
        let upto = set.committed.load(Ordering::Acquire);
        let frozen = set.add_memtable(fresh.clone());
        let (next_segment, pending_since) = ingest.freeze(fresh);
        (upto, frozen, next_segment, pending_since)
    };
    let name = set.spec().name.clone();
    let moved = match write_frozen(pool, &name, &frozen, upto) {
        Ok(rows) => rows,
        // A commit that reported failure yet stored the watermark did move the rows.
        Err(e) if stored_watermark(pool, &name) == Some(upto) => {
            tracing::warn!(feature_set = %name, error = %e, "apply reported a failure after committing");
            frozen.iter().map(|t| t.rows() as u64).sum()
        }
        Err(e) => {
            // The rows stay in the (still readable) frozen memtables; the next apply takes
            // them again, and the age trigger must still see them as waiting.
            set.ingest.lock().still_pending(pending_since);
            return Err(e);
        }
    };
    set.applied.store(upto, Ordering::Release);
    set.drop_memtables(&frozen);
    if let Err(e) = log::remove_segments_below(&set.log_dir, next_segment) {
        tracing::warn!(feature_set = %name, error = %e, "could not remove applied log segments");
    }
    tracing::debug!(feature_set = %name, rows = moved, "applied");
    Ok(Some(moved))
}

/// Appends the rows of `frozen` to the set's table and sets its watermark to `upto`, in one
/// transaction; returns the rows appended.
fn write_frozen(
    pool: &ConnectionPool,
    name: &str,
    frozen: &[Arc<MemTable>],
    upto: i64,
) -> Result<u64> {
    transaction(pool, |conn| {
        let mut rows = 0;
        for memtable in frozen {
            let batches = memtable.batches_now();
            if batches.is_empty() {
                continue;
            }
            // By name: a memtable of an earlier version lacks the features added since, and
            // columns added by `update` come last in the table.
            let columns: Vec<&str> = memtable
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            // One appender for all its batches: DuckDB writes rows that fill row groups
            // straight into the table.
            let mut appender = conn.appender_with_columns(&table(name), &columns)?;
            for batch in batches {
                rows += batch.num_rows() as u64;
                appender.append_record_batch(batch)?;
            }
            appender.flush()?;
        }
        set_watermark(conn, name, upto)?;
        Ok(rows)
    })
}

/// The stored watermark of set `name`, if it can be read.
fn stored_watermark(pool: &ConnectionPool, name: &str) -> Option<i64> {
    let conn = pool.get(Purpose::Read).ok()?;
    watermark(&conn, name).ok().flatten()
}
