//! Flush: the memtable's rows become sorted Parquet files, one per UTC date, and the log that
//! held them is dropped.
//!
//! Crash safety comes from the order of the steps (see `commit`): files are written and made
//! durable under names no manifest lists yet; the new manifest (files + watermark) is written
//! atomically; only then are the frozen memtables and the covered log segments dropped.
//! A crash before the manifest leaves garbage files (deleted at open) and a complete log; a
//! crash after it leaves log rows under the watermark, which replay skips.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::commit::{rewrite, Change, FlushedRows};
use super::engine::Engine;
use super::rows;
use super::set::{Maintenance, SetState, Snapshot};
use super::writer::{self, WrittenFile};
use crate::metrics::PARQUET;
use crate::wal::memtable::MemTable;
use crate::wal::StagedSet;
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

/// Writes every acknowledged row of `set` not yet in Parquet to Parquet.
pub(super) fn flush_set(engine: &Engine, set: &SetState) -> Result<()> {
    let started = Instant::now();
    match flush(engine, set) {
        Ok(Some(written)) => {
            let totals = writer::totals(&written);
            PARQUET.record_flush(totals.rows, totals.files, totals.bytes, started.elapsed());
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => {
            PARQUET.record_flush_failure();
            Err(e)
        }
    }
}

/// The files written, or `None` when there was nothing to flush.
fn flush(engine: &Engine, set: &SetState) -> Result<Option<Vec<WrittenFile>>> {
    let mut maintenance = set.maintenance.lock();
    if !set.is_alive() {
        return Ok(None);
    }
    let Some(frozen) = freeze(set)? else {
        return Ok(None);
    };
    let flushed = write_frozen(engine, set, &mut maintenance, &frozen);
    if flushed.is_err() {
        // The rows stay in the (still readable) frozen tables; the next flush takes them
        // again, and the age trigger must still see them as waiting.
        set.ingest.lock().still_pending(frozen.pending_since);
    }
    flushed.map(Some)
}

/// Points appends at a fresh memtable and log segment, so the rows to flush stop
/// changing while they are written, yet stay visible to readers.
fn freeze(set: &SetState) -> Result<Option<Frozen>> {
    if !set.has_unflushed(&set.snapshot.read()) {
        return Ok(None);
    }
    // Created before taking the ingest lock: appends wait for nothing but the swap.
    let table = Arc::new(MemTable::new(&set.spec()));
    let mut ingest = set.ingest.lock();
    let upto = set.committed.load(Ordering::Acquire);
    let mut snapshot = set.snapshot.write();
    let frozen = snapshot.tables.clone();
    let mut tables = frozen.clone();
    tables.push(table.clone());
    *snapshot = Arc::new(Snapshot {
        files: snapshot.files.clone(),
        flushed_seq: snapshot.flushed_seq,
        tables,
    });
    let (next_segment, pending_since) = ingest.freeze(table);
    Ok(Some(Frozen {
        upto,
        tables: frozen,
        next_segment,
        pending_since,
    }))
}

fn write_frozen(
    engine: &Engine,
    set: &SetState,
    maintenance: &mut Maintenance,
    frozen: &Frozen,
) -> Result<Vec<WrittenFile>> {
    let written = rewrite(
        engine,
        set,
        maintenance,
        &rows::select_rows(&set.spec(), &[], None, &frozen.tables),
        Change {
            replaced: &[],
            flushed: Some(FlushedRows {
                upto: frozen.upto,
                tables: &frozen.tables,
                log_segments_below: frozen.next_segment,
            }),
        },
    )?;
    tracing::debug!(
        feature_set = %set.spec().name,
        rows = writer::totals(&written).rows,
        files = written.len(),
        "flushed"
    );
    Ok(written)
}
