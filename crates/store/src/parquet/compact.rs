//! Compaction: the small files of a date partition (flushed by age, or holding the few rows of
//! an old date) are merged into one sorted file. The new file is made durable, the manifest
//! swaps it for the old ones (see `commit`), and the old ones are deleted once no reader uses
//! them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use super::commit::{rewrite, Change};
use super::engine::Engine;
use super::set::{DataFile, Maintenance, SetState, Snapshot};
use super::writer::{self, WrittenFile};
use crate::metrics::PARQUET;
use crate::wal::StagedSet;
use crate::Result;

/// Merges the small files of every date partition of `set` that has enough of them.
pub(super) fn compact_set(engine: &Engine, set: &SetState) -> Result<()> {
    let mut maintenance = set.maintenance.lock();
    if !set.is_alive() {
        return Ok(());
    }
    let snapshot = Arc::clone(&set.snapshot.read());
    for (date, files) in small_files_by_date(engine, &snapshot) {
        if files.len() >= engine.options.compact_min_files {
            let started = Instant::now();
            match merge(engine, set, &mut maintenance, &date, &files) {
                Ok(written) => {
                    let totals = writer::totals(&written);
                    PARQUET.record_compaction(
                        files.len() as u64,
                        totals.files,
                        totals.bytes,
                        started.elapsed(),
                    );
                }
                Err(e) => {
                    PARQUET.record_compaction_failure();
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// Files under `flush_rows` rows are small: a full flush makes bigger ones, and a merge
/// stops taking part once it has grown past that, which bounds how often a row is
/// rewritten.
fn small_files_by_date(
    engine: &Engine,
    snapshot: &Snapshot,
) -> BTreeMap<String, Vec<Arc<DataFile>>> {
    let mut by_date: BTreeMap<String, Vec<Arc<DataFile>>> = BTreeMap::new();
    for file in &snapshot.files {
        if file.rows < engine.options.flush_rows as u64 {
            by_date
                .entry(file.date().to_string())
                .or_default()
                .push(Arc::clone(file));
        }
    }
    by_date
}

fn merge(
    engine: &Engine,
    set: &SetState,
    maintenance: &mut Maintenance,
    date: &str,
    files: &[Arc<DataFile>],
) -> Result<Vec<WrittenFile>> {
    let rows = set.select_rows(&set.spec(), files, &[])?;
    let change = Change {
        replaced: files,
        flushed: None,
    };
    let written = rewrite(engine, set, maintenance, &rows, change)?;
    tracing::debug!(feature_set = %set.spec().name, %date, files = files.len(), "compacted");
    Ok(written)
}
