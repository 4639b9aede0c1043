//! The one way flushes and compactions change a set's data files. Under the set's
//! maintenance lock, the rows they rewrite are sorted and written into new files, durable
//! under names no manifest lists yet; then:
//!
//! 1. the new manifest is written atomically: the commit point. If that fails, the new files
//!    are removed and nothing changed;
//! 2. the snapshot built from it is published to readers;
//! 3. what the change made redundant is let go: replaced files are retired (deleted once no
//!    reader holds them) and flushed log segments removed. A failure here leaves garbage,
//!    never wrong data.

use std::collections::HashSet;
use std::sync::Arc;

use super::engine::Engine;
use super::set::{DataFile, Maintenance, SetState, Snapshot};
use super::writer::WrittenFile;
use crate::durable::remove_quietly;
use crate::query::sql::{ident, SEQ_COLUMN};
use crate::wal::log;
use crate::wal::memtable::MemTable;
use crate::Result;

/// What the rewritten rows replace.
pub(super) struct Change<'a> {
    /// Live files whose rows are all in `written` (compaction).
    pub(super) replaced: &'a [Arc<DataFile>],
    /// Memtable rows now in `written` (flush).
    pub(super) flushed: Option<FlushedRows<'a>>,
}

/// What a flush moved out of the memtable and the log.
pub(super) struct FlushedRows<'a> {
    /// Every row up to this `_seq` is in the written files.
    pub(super) upto: i64,
    /// The frozen memtable tables that held them.
    pub(super) tables: &'a [Arc<MemTable>],
    /// Log segments numbered below this hold only rows up to `upto`.
    pub(super) log_segments_below: u64,
}

/// Writes `rows` (a `SELECT` of storage rows), sorted by date, entity, event time and ingest
/// order, into new data files of `set`, and makes them live in place of what `change` says
/// they replace. `maintenance` is the set's, locked: only this replaces the snapshot's files,
/// so the current snapshot is what it replaces.
pub(super) fn rewrite(
    engine: &Engine,
    set: &SetState,
    maintenance: &mut Maintenance,
    rows: &str,
    change: Change<'_>,
) -> Result<Vec<WrittenFile>> {
    let spec = &set.spec();
    let ts = ident(&spec.timestamp);
    let sorted = format!(
        "SELECT * FROM ({rows}) ORDER BY CAST({ts} AS DATE), {}, {ts}, {}",
        ident(&spec.entity.name),
        ident(SEQ_COLUMN)
    );
    let written = engine.write_query(set, &mut maintenance.next_file, &sorted)?;
    commit(set, maintenance, &written, &change)?;
    Ok(written)
}

fn commit(
    set: &SetState,
    maintenance: &Maintenance,
    written: &[WrittenFile],
    change: &Change<'_>,
) -> Result<()> {
    let current = Arc::clone(&set.snapshot.read());
    let next = next_snapshot(set, &current, written, change);
    if let Err(e) = next
        .manifest(maintenance.next_file, set.legacy_ingested_at)
        .store(&set.dir)
    {
        for file in written {
            remove_quietly(&set.dir.join(&file.entry.path));
        }
        return Err(e);
    }
    for file in change.replaced {
        file.retire();
    }
    *set.snapshot.write() = Arc::new(next);
    if let Some(flushed) = &change.flushed {
        // The frozen tables go once the last reader of an older snapshot lets go of them.
        if let Err(e) = log::remove_segments_below(&set.log_dir(), flushed.log_segments_below) {
            tracing::warn!(feature_set = %set.spec().name, error = %e, "could not remove flushed log segments");
        }
    }
    Ok(())
}

fn next_snapshot(
    set: &SetState,
    current: &Snapshot,
    written: &[WrittenFile],
    change: &Change<'_>,
) -> Snapshot {
    let replaced: HashSet<&str> = change
        .replaced
        .iter()
        .map(|f| f.relative.as_str())
        .collect();
    let mut files: Vec<Arc<DataFile>> = current
        .files
        .iter()
        .filter(|f| !replaced.contains(f.relative.as_str()))
        .cloned()
        .collect();
    files.extend(written.iter().map(|file| {
        Arc::new(DataFile::new(
            &set.dir,
            file.entry.path.clone(),
            file.entry.rows,
            file.bytes,
            &set.alive,
        ))
    }));
    let (flushed_seq, tables) = match &change.flushed {
        Some(flushed) => (
            flushed.upto,
            current
                .tables
                .iter()
                .filter(|t| !flushed.tables.iter().any(|f| Arc::ptr_eq(f, t)))
                .cloned()
                .collect(),
        ),
        None => (current.flushed_seq, current.tables.clone()),
    };
    Snapshot {
        files,
        flushed_seq,
        tables,
    }
}
