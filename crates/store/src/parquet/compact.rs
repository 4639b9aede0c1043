//! Compaction: the small files of a date partition (flushed by age, or holding the few rows of
//! an old date) are merged into one sorted file. The new file is made durable, the manifest
//! swaps it for the old ones, and the old ones are deleted once no reader uses them.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use super::durable::remove_quietly;
use super::memtable;
use super::set::{lock, read, write, DataFile, Maintenance, SetState, Snapshot};
use super::Inner;
use crate::query::sql::{ident, SEQ_COLUMN};
use crate::Result;

impl Inner {
    /// Merges the small files of every date partition of `set` that has enough of them.
    pub(super) fn compact_set(&self, set: &SetState) -> Result<()> {
        let mut maintenance = lock(&set.maintenance);
        if !set.is_alive() {
            return Ok(());
        }
        let snapshot = Arc::clone(&read(&set.snapshot));
        for (date, files) in self.small_files_by_date(&snapshot) {
            if files.len() >= self.options.compact_min_files {
                self.merge(set, &mut maintenance, &date, &files)?;
            }
        }
        Ok(())
    }

    /// Files under `flush_rows` rows are small: a full flush makes bigger ones, and a merge
    /// stops taking part once it has grown past that, which bounds how often a row is
    /// rewritten.
    fn small_files_by_date(&self, snapshot: &Snapshot) -> BTreeMap<String, Vec<Arc<DataFile>>> {
        let mut by_date: BTreeMap<String, Vec<Arc<DataFile>>> = BTreeMap::new();
        for file in &snapshot.files {
            if file.rows < self.options.flush_rows as u64 {
                by_date
                    .entry(file.date().to_string())
                    .or_default()
                    .push(Arc::clone(file));
            }
        }
        by_date
    }

    fn merge(
        &self,
        set: &SetState,
        maintenance: &mut Maintenance,
        date: &str,
        files: &[Arc<DataFile>],
    ) -> Result<()> {
        let spec = &set.spec;
        let sql = format!(
            "SELECT * FROM ({}) ORDER BY {}, {}, {}",
            memtable::select_files(spec, files.iter().map(|f| f.path.as_str())),
            ident(&spec.entity.name),
            ident(&spec.timestamp),
            ident(SEQ_COLUMN)
        );
        let entries = self.write_query(set, &mut maintenance.next_file, &sql)?;

        let merged: HashSet<&str> = files.iter().map(|f| f.relative.as_str()).collect();
        // Snapshots change only under `maintenance`, which this holds.
        let current = Arc::clone(&read(&set.snapshot));
        let mut kept: Vec<Arc<DataFile>> = current
            .files
            .iter()
            .filter(|f| !merged.contains(f.relative.as_str()))
            .cloned()
            .collect();
        kept.extend(
            entries
                .iter()
                .map(|e| Arc::new(DataFile::new(&set.dir, e.path.clone(), e.rows, &set.alive))),
        );
        let next = Snapshot {
            files: kept,
            flushed_seq: current.flushed_seq,
            tables: current.tables.clone(),
        };
        if let Err(e) = next.manifest(maintenance.next_file).store(&set.dir) {
            for entry in &entries {
                remove_quietly(&set.dir.join(&entry.path));
            }
            return Err(e);
        }
        for file in files {
            file.retire();
        }
        *write(&set.snapshot) = Arc::new(next);
        tracing::debug!(feature_set = %spec.name, %date, files = files.len(), "compacted");
        Ok(())
    }
}
