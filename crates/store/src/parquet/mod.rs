//! The Parquet backend: a directory of Parquet files per feature set, fed through a
//! write-ahead log.
//!
//! ```text
//! {dir}/{set}/_spec.json                         the spec (written atomically)
//! {dir}/{set}/_manifest.json                     live data files + flushed watermark
//! {dir}/{set}/_log/NNN….arrows                   Arrow IPC segments: acknowledged appends
//! {dir}/{set}/date=YYYY-MM-DD/part-NNN.parquet   rows sorted by entity, event time, `_seq`
//! {dir}/.services/{name}.json                    a feature service (written atomically)
//! ```
//!
//! An append is durable once its batch is in the log (fsynced); it is then added to the
//! in-memory Arrow batches that DuckDB reads (the memtable) so reads see it at once. Reads run
//! the shared SQL over the union of the live Parquet files and the memtable. A background
//! thread flushes the memtable into Parquet by size or age and compacts small files; the
//! manifest is the single source of truth, which makes both crash-safe (see `flush` and
//! `compact`).

mod commit;
mod compact;
mod engine;
mod flush;
mod manifest;
mod options;
mod rows;
mod services;
mod set;
mod writer;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use featherstore_core::spec::is_valid_name;
use featherstore_core::{FeatureServiceSpec, FeatureSetSpec};
use parking_lot::RwLock;

pub use options::{Compression, ParquetOptions, UnknownCompression};

use self::engine::Engine;
use self::set::{read_spec, SetState, Snapshot};
use crate::background::{Background, BackgroundThread};
use crate::durable::{self, list_dir, sync_dir};
use crate::offline::{OfflineStore, Publish, RelationWork};
use crate::query::sql;
use crate::query::{ConnectionPool, EngineSettings, Purpose};
use crate::wal::memtable::MemTable;
use crate::wal::{self, StagedSet};
use crate::{Error, Result, StorageStats};

/// A deleted set's directory is renamed to this prefix + its name (the durable step), then
/// removed; a leftover is finished off at open. Set names cannot start with a dot.
const TRASH_PREFIX: &str = ".deleted-";

pub struct ParquetStore {
    inner: Arc<Inner>,
    /// The background flush and compaction thread.
    _maintenance: BackgroundThread<Inner>,
}

struct Inner {
    dir: PathBuf,
    engine: Engine,
    sets: RwLock<HashMap<String, Arc<SetState>>>,
    /// Woken when an append crosses `flush_rows`.
    background: Background,
}

impl ParquetStore {
    /// Opens (creating it if needed) the store in `directory`: loads every set's spec and
    /// manifest, deletes what a crash left behind, replays the logs, and starts the
    /// background flush and compaction thread.
    pub fn open(
        directory: &Path,
        options: ParquetOptions,
        engine: &EngineSettings,
    ) -> Result<Self> {
        options.validate()?;
        let created = !directory.exists();
        fs::create_dir_all(directory)
            .map_err(Error::io(format!("creating {}", directory.display())))?;
        // Absolute, since DuckDB resolves file names against the process's working directory;
        // UTF-8, since file names are handed to DuckDB inside SQL text.
        let dir = directory
            .canonicalize()
            .map_err(Error::io(format!("resolving {}", directory.display())))?;
        if created {
            // Or a crash could take the new directory, and every set created in it, away.
            sync_dir(durable::parent(&dir))?;
        }
        if dir.to_str().is_none() {
            return Err(Error::Domain(featherstore_core::Error::invalid(format!(
                "the parquet data directory {} is not valid UTF-8",
                dir.display()
            ))));
        }
        let inner = Arc::new(Inner {
            engine: Engine::open(options, engine)?,
            dir,
            sets: RwLock::new(HashMap::new()),
            background: Background::default(),
        });
        inner.load_sets()?;
        let maintenance = BackgroundThread::spawn(
            "parquet-maintenance",
            &inner,
            |inner| &inner.background,
            Inner::run_maintenance,
        )?;
        Ok(ParquetStore {
            inner,
            _maintenance: maintenance,
        })
    }

    /// Writes every set's unflushed rows to Parquet now (e.g. before a backup or a planned
    /// shutdown, to make the next start-up replay nothing).
    pub fn flush(&self) -> Result<()> {
        self.inner
            .all_sets()
            .iter()
            .try_for_each(|set| flush::flush_set(&self.inner.engine, set))
    }

    /// Compacts now every date partition with at least `compact_min_files` small files.
    pub fn compact(&self) -> Result<()> {
        self.inner
            .all_sets()
            .iter()
            .try_for_each(|set| compact::compact_set(&self.inner.engine, set))
    }
}

impl Inner {
    fn load_sets(&self) -> Result<()> {
        let mut sets = self.sets.write();
        for entry in list_dir(&self.dir)? {
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !path.is_dir() {
                continue;
            }
            if name.starts_with(TRASH_PREFIX) {
                remove_trash(&path);
            } else if is_valid_name(&name) {
                if let Some(spec) = read_spec(&path)? {
                    let table = Arc::new(MemTable::new(&spec));
                    let set = SetState::open(path, spec, &self.engine.pool, table)?;
                    sets.insert(name, Arc::new(set));
                }
            }
        }
        Ok(())
    }

    fn set(&self, name: &str) -> Result<Arc<SetState>> {
        self.sets
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| featherstore_core::Error::no_such_set(name).into())
    }

    fn all_sets(&self) -> Vec<Arc<SetState>> {
        self.sets.read().values().cloned().collect()
    }

    /// What the data files and logs of every set take on disk.
    fn disk_usage(&self) -> Result<StorageStats> {
        self.all_sets()
            .iter()
            .try_fold(StorageStats::default(), |total, set| {
                let usage = set.disk_usage()?;
                Ok(StorageStats {
                    bytes: total.bytes + usage.bytes,
                    files: total.files + usage.files,
                })
            })
    }

    fn run_maintenance(&self) {
        // Fine enough to honour `flush_interval`, coarse enough to cost nothing when idle.
        let tick = (self.engine.options.flush_interval / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        self.background.run(tick, || {
            for set in self.all_sets() {
                if self.flush_due(&set) {
                    if let Err(e) = flush::flush_set(&self.engine, &set) {
                        tracing::error!(feature_set = %set.spec().name, error = %e, "flush failed; will retry");
                    }
                }
                if let Err(e) = compact::compact_set(&self.engine, &set) {
                    tracing::error!(feature_set = %set.spec().name, error = %e, "compaction failed; will retry");
                }
            }
        });
    }

    fn flush_due(&self, set: &SetState) -> bool {
        wal::is_due(
            set.unflushed_rows(),
            set.ingest.lock().pending_since,
            self.engine.options.flush_rows as u64,
            self.engine.options.flush_interval,
        )
    }

    fn create(&self, spec: &FeatureSetSpec) -> Result<()> {
        let mut sets = self.sets.write();
        if sets.contains_key(&spec.name) {
            return Err(Error::Domain(featherstore_core::Error::AlreadyExists(
                format!("feature set {:?} already exists", spec.name),
            )));
        }
        let table = Arc::new(MemTable::new(spec));
        let set = SetState::create(self.dir.join(&spec.name), spec, table)?;
        sets.insert(spec.name.clone(), Arc::new(set));
        Ok(())
    }

    fn delete(&self, name: &str) -> Result<()> {
        if !is_valid_name(name) {
            return Err(featherstore_core::Error::no_such_set(name).into());
        }
        let Some(set) = self.sets.read().get(name).cloned() else {
            return self.remove_set_dir(name);
        };
        {
            // Waits for a running flush or compaction, and for an append, then shuts both out.
            let _maintenance = set.maintenance.lock();
            let mut ingest = set.ingest.lock();
            self.remove_set_dir(name)?;
            set.alive.store(false, Ordering::Release);
            ingest.log.roll();
            self.sets.write().remove(name);
        }
        // Its memtables go now, or once the last reader still holding them is done.
        drop(set);
        Ok(())
    }

    /// Removes a set's directory; durable once the rename to the trash name is.
    fn remove_set_dir(&self, name: &str) -> Result<()> {
        let dir = self.dir.join(name);
        if !dir.exists() {
            return Ok(());
        }
        let trash = self.dir.join(format!("{TRASH_PREFIX}{name}"));
        if trash.exists() {
            fs::remove_dir_all(&trash)
                .map_err(Error::io(format!("removing {}", trash.display())))?;
        }
        fs::rename(&dir, &trash).map_err(Error::io(format!("removing {}", dir.display())))?;
        sync_dir(&self.dir)?;
        remove_trash(&trash);
        Ok(())
    }

    /// Makes `new` the set's spec: a fresh memtable table and log segment take the appends
    /// from now on in its schema, while the older tables, segments and data files keep theirs
    /// (reads match columns by name). The spec file is the commit point.
    fn update(&self, old: &FeatureSetSpec, new: &FeatureSetSpec) -> Result<()> {
        let set = self.set(&new.name)?;
        // No flush or compaction runs meanwhile: they write files in the current spec's schema.
        let _maintenance = set.maintenance.lock();
        let table = Arc::new(MemTable::new(new));
        let mut ingest = set.ingest.lock();
        if !set.is_alive() {
            return Err(featherstore_core::Error::no_such_set(&new.name).into());
        }
        set::store_versions(&set.dir, old, new)?;
        ingest.log.reschema(sql::storage_schema(new));
        {
            let mut snapshot = set.snapshot.write();
            let mut tables = snapshot.tables.clone();
            tables.push(table.clone());
            *snapshot = Arc::new(Snapshot {
                files: snapshot.files.clone(),
                flushed_seq: snapshot.flushed_seq,
                tables,
            });
        }
        ingest.table = table;
        set.replace_spec(new.clone());
        Ok(())
    }

    fn append(
        &self,
        spec: &FeatureSetSpec,
        batches: &[RecordBatch],
        now: i64,
        publish: Publish<'_>,
    ) -> Result<()> {
        let set = self.set(&spec.name)?;
        set.append(spec, batches, now, publish)?;
        wal::relieve(
            set.unflushed_rows(),
            self.engine.options.flush_rows as u64,
            &self.background,
            &spec.name,
            || flush::flush_set(&self.engine, &set),
        );
        Ok(())
    }
}

/// Finishes removing a deleted set's directory; what fails is retried at the next open.
fn remove_trash(path: &Path) {
    if let Err(e) = fs::remove_dir_all(path) {
        tracing::warn!(dir = %path.display(), error = %e, "could not remove a deleted feature set's files");
    }
}

impl OfflineStore for ParquetStore {
    fn update(&self, old: &FeatureSetSpec, new: &FeatureSetSpec) -> Result<()> {
        self.inner.update(old, new)
    }

    fn spec_versions(&self, current: &FeatureSetSpec) -> Result<Vec<FeatureSetSpec>> {
        let set = self.inner.set(&current.name)?;
        set::load_versions(&set.dir, current)
    }

    fn load_specs(&self) -> Result<Vec<FeatureSetSpec>> {
        let mut specs: Vec<FeatureSetSpec> = self
            .inner
            .all_sets()
            .iter()
            .map(|set| set.spec().as_ref().clone())
            .collect();
        specs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(specs)
    }

    fn create(&self, spec: &FeatureSetSpec) -> Result<()> {
        self.inner.create(spec)
    }

    fn delete(&self, name: &str) -> Result<()> {
        self.inner.delete(name)
    }

    fn append_at(&self, spec: &FeatureSetSpec, batches: &[RecordBatch], now: i64) -> Result<()> {
        self.inner.append(spec, batches, now, &mut || Ok(()))
    }

    /// Publishes after the rows are written, before they are committed: see the trait.
    fn append_publishing(
        &self,
        spec: &FeatureSetSpec,
        batches: &[RecordBatch],
        now: i64,
        publish: Publish<'_>,
    ) -> Result<()> {
        self.inner.append(spec, batches, now, publish)
    }

    fn load_services(&self) -> Result<Vec<FeatureServiceSpec>> {
        services::load(&self.inner.dir)
    }

    fn save_service(&self, service: &FeatureServiceSpec) -> Result<()> {
        services::save(&self.inner.dir, service)
    }

    fn delete_service(&self, name: &str) -> Result<()> {
        services::delete(&self.inner.dir, name)
    }

    fn pool(&self) -> &ConnectionPool {
        &self.inner.engine.pool
    }

    /// Writes the logs into Parquet: after a planned shutdown the logs are empty.
    fn flush(&self) -> Result<()> {
        ParquetStore::flush(self)
    }

    fn storage_stats(&self, spec: &FeatureSetSpec) -> Result<Option<StorageStats>> {
        self.inner.set(&spec.name)?.disk_usage().map(Some)
    }

    fn storage_total(&self) -> Result<Option<StorageStats>> {
        self.inner.disk_usage().map(Some)
    }

    fn query_relations(&self, specs: &[&FeatureSetSpec], work: RelationWork<'_>) -> Result<()> {
        let sets = specs
            .iter()
            .map(|spec| self.inner.set(&spec.name))
            .collect::<Result<Vec<_>>>()?;
        let conn = self.inner.engine.pool.get(Purpose::Read)?;
        // Held until `work` returns: they keep every file and memtable table they list.
        let snapshots: Vec<Arc<Snapshot>> = sets
            .iter()
            .map(|set| Arc::clone(&set.snapshot.read()))
            .collect();
        // Under the caller's spec, which may be older than the set's current one.
        let relations: Vec<String> = specs
            .iter()
            .zip(&sets)
            .zip(&snapshots)
            .map(|((spec, set), snapshot)| {
                snapshot.relation(spec, set, set.has_unflushed(snapshot))
            })
            .collect::<Result<_>>()?;
        work(&conn, &relations)
    }
}

#[cfg(test)]
mod tests;
