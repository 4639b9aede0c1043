//! The Parquet backend: a directory of Parquet files per feature set, fed through a
//! write-ahead log.
//!
//! ```text
//! {dir}/{set}/_spec.json                         the spec (written atomically)
//! {dir}/{set}/_manifest.json                     live data files + flushed watermark
//! {dir}/{set}/_log/NNN….arrows                   Arrow IPC segments: acknowledged appends
//! {dir}/{set}/date=YYYY-MM-DD/part-NNN.parquet   rows sorted by entity, event time, `_seq`
//! ```
//!
//! An append is durable once its batch is in the log (fsynced); it is then added to an
//! in-memory DuckDB table (the memtable) so reads see it at once. Reads run the shared SQL over
//! the union of the live Parquet files and the memtable. A background thread flushes the
//! memtable into Parquet by size or age and compacts small files; the manifest is the single
//! source of truth, which makes both crash-safe (see `flush` and `compact`).

mod compact;
mod durable;
mod flush;
mod log;
mod manifest;
mod memtable;
mod options;
mod set;
mod writer;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use featherstore_core::spec::is_valid_name;
use featherstore_core::FeatureSetSpec;

pub use options::{Compression, ParquetOptions, UnknownCompression};

use self::durable::{list_dir, sync_dir};
use self::manifest::FileEntry;
use self::memtable::{Graveyard, MemTable};
use self::set::{lock, read, read_spec, write, SetState, Snapshot};
use crate::offline::{OfflineStore, RelationWork};
use crate::query::sql;
use crate::query::{ConnectionPool, EngineSettings, Purpose};
use crate::{Error, Result};

/// A deleted set's directory is renamed to this prefix + its name (the durable step), then
/// removed; a leftover is finished off at open. Set names cannot start with a dot.
const TRASH_PREFIX: &str = ".deleted-";
/// An append flushes by itself once this many times `flush_rows` wait: the background thread
/// is not keeping up, and the memtable must not grow without bound.
const BACKPRESSURE_FACTOR: u64 = 4;

pub struct ParquetStore {
    inner: Arc<Inner>,
    /// The background flush and compaction thread; stopped and joined on drop.
    maintenance: Option<JoinHandle<()>>,
}

struct Inner {
    dir: PathBuf,
    options: ParquetOptions,
    /// The in-memory database of memtables, and the engine of every read.
    pool: ConnectionPool,
    sets: RwLock<HashMap<String, Arc<SetState>>>,
    /// Numbers memtable tables, so a name is never reused (not even by a re-created set
    /// whose old tables a reader may still be scanning).
    next_table: AtomicU64,
    graveyard: Graveyard,
    signal: Mutex<Signal>,
    wake: Condvar,
}

#[derive(Default)]
struct Signal {
    stop: bool,
    /// An append crossed `flush_rows`.
    work: bool,
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
            pool: ConnectionPool::open(None, engine)?,
            dir,
            options,
            sets: RwLock::new(HashMap::new()),
            next_table: AtomicU64::new(0),
            graveyard: Graveyard::default(),
            signal: Mutex::new(Signal::default()),
            wake: Condvar::new(),
        });
        inner.load_sets()?;
        let background = Arc::clone(&inner);
        let maintenance = std::thread::Builder::new()
            .name("parquet-maintenance".into())
            .spawn(move || background.run_maintenance())
            .map_err(Error::io("starting the parquet maintenance thread"))?;
        Ok(ParquetStore {
            inner,
            maintenance: Some(maintenance),
        })
    }

    /// Writes every set's unflushed rows to Parquet now (e.g. before a backup or a planned
    /// shutdown, to make the next start-up replay nothing).
    pub fn flush(&self) -> Result<()> {
        self.inner
            .all_sets()
            .iter()
            .try_for_each(|set| self.inner.flush_set(set))
    }

    /// Compacts now every date partition with at least `compact_min_files` small files.
    pub fn compact(&self) -> Result<()> {
        self.inner
            .all_sets()
            .iter()
            .try_for_each(|set| self.inner.compact_set(set))
    }
}

impl Drop for ParquetStore {
    fn drop(&mut self) {
        lock(&self.inner.signal).stop = true;
        self.inner.wake.notify_all();
        if let Some(thread) = self.maintenance.take() {
            if thread.join().is_err() {
                tracing::error!("the parquet maintenance thread panicked");
            }
        }
    }
}

impl Inner {
    fn load_sets(&self) -> Result<()> {
        let mut sets = write(&self.sets);
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
                    let table = Arc::new(self.new_memtable(&spec)?);
                    let set = SetState::open(path, spec, &self.pool, table)?;
                    sets.insert(name, Arc::new(set));
                }
            }
        }
        Ok(())
    }

    fn new_memtable(&self, spec: &FeatureSetSpec) -> Result<MemTable> {
        let number = self.next_table.fetch_add(1, Ordering::Relaxed);
        let name = format!("mem_{}_{number}", spec.name);
        let conn = self.pool.get(Purpose::Write)?;
        MemTable::create(&conn, spec, name, &self.graveyard)
    }

    fn drop_dead_tables(&self) {
        // Without a connection now, the tables wait in the graveyard for the next call.
        match self.pool.get(Purpose::Write) {
            Ok(conn) => memtable::drop_dead_tables(&conn, &self.graveyard),
            Err(e) => tracing::debug!(error = %e, "dead memtable tables not dropped yet"),
        }
    }

    fn set(&self, name: &str) -> Result<Arc<SetState>> {
        read(&self.sets)
            .get(name)
            .cloned()
            .ok_or_else(|| featherstore_core::Error::no_such_set(name).into())
    }

    fn all_sets(&self) -> Vec<Arc<SetState>> {
        read(&self.sets).values().cloned().collect()
    }

    fn run_maintenance(&self) {
        // Fine enough to honour `flush_interval`, coarse enough to cost nothing when idle.
        let tick = (self.options.flush_interval / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        loop {
            {
                let mut signal = lock(&self.signal);
                if !signal.stop && !signal.work {
                    signal = self
                        .wake
                        .wait_timeout(signal, tick)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                if signal.stop {
                    return;
                }
                signal.work = false;
            }
            for set in self.all_sets() {
                if self.flush_due(&set) {
                    if let Err(e) = self.flush_set(&set) {
                        tracing::error!(feature_set = %set.spec.name, error = %e, "flush failed; will retry");
                    }
                }
                if let Err(e) = self.compact_set(&set) {
                    tracing::error!(feature_set = %set.spec.name, error = %e, "compaction failed; will retry");
                }
            }
            self.drop_dead_tables();
        }
    }

    fn flush_due(&self, set: &SetState) -> bool {
        let rows = set.unflushed_rows();
        rows >= self.options.flush_rows as u64
            || (rows > 0
                && lock(&set.ingest)
                    .pending_since
                    .is_some_and(|since| since.elapsed() >= self.options.flush_interval))
    }

    fn wake_maintenance(&self) {
        lock(&self.signal).work = true;
        self.wake.notify_one();
    }

    /// Runs a query yielding storage rows sorted by date first, and writes them into new data
    /// files (not yet live).
    fn write_query(
        &self,
        set: &SetState,
        next_file: &mut u64,
        sql: &str,
    ) -> Result<Vec<FileEntry>> {
        let schema = sql::storage_schema(&set.spec);
        // Entity, event time, `_seq`: each column is one Parquet leaf column, so field
        // indices are leaf indices.
        let ts_index = set.spec.features.len() + 1;
        let properties = self.options.writer_properties(&[0, ts_index, ts_index + 1]);
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

    fn create(&self, spec: &FeatureSetSpec) -> Result<()> {
        let mut sets = write(&self.sets);
        if sets.contains_key(&spec.name) {
            return Err(Error::Domain(featherstore_core::Error::AlreadyExists(
                format!("feature set {:?} already exists", spec.name),
            )));
        }
        let table = Arc::new(self.new_memtable(spec)?);
        let set = SetState::create(self.dir.join(&spec.name), spec, table)?;
        sets.insert(spec.name.clone(), Arc::new(set));
        Ok(())
    }

    fn delete(&self, name: &str) -> Result<()> {
        if !is_valid_name(name) {
            return Err(featherstore_core::Error::no_such_set(name).into());
        }
        let Some(set) = read(&self.sets).get(name).cloned() else {
            return self.remove_set_dir(name);
        };
        {
            // Waits for a running flush or compaction, and for an append, then shuts both out.
            let _maintenance = lock(&set.maintenance);
            let mut ingest = lock(&set.ingest);
            self.remove_set_dir(name)?;
            set.alive.store(false, Ordering::Release);
            ingest.log.roll();
            write(&self.sets).remove(name);
        }
        // Its memtable tables go now, or once the last reader still holding them is done.
        drop(set);
        self.drop_dead_tables();
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

    fn append(&self, spec: &FeatureSetSpec, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let set = self.set(&spec.name)?;
        {
            let mut ingest = lock(&set.ingest);
            if !set.is_alive() {
                return Err(featherstore_core::Error::no_such_set(&spec.name).into());
            }
            // Taken before the log append: a batch in the log must reach the memtable.
            let conn = self.pool.get(Purpose::Write)?;
            let first = ingest.next_seq;
            let rows = batch.num_rows() as i64;
            let stored = sql::to_storage_batch(spec, batch, first)?;
            // Consumed even if the append fails: a log record that could not be taken back
            // must not share numbers with a later batch.
            ingest.next_seq = first + rows;
            let mark = ingest.log.append(&stored)?;
            let inserted = memtable::insert(&conn, &ingest.table.name, stored);
            if let Err(e) = inserted {
                ingest.log.undo(mark);
                return Err(e);
            }
            set.committed.store(first + rows - 1, Ordering::Release);
            ingest.pending_since.get_or_insert_with(Instant::now);
        }
        let unflushed = set.unflushed_rows();
        let flush_rows = self.options.flush_rows as u64;
        if unflushed >= flush_rows.saturating_mul(BACKPRESSURE_FACTOR) {
            // The batch is durable and must be acknowledged: a failed flush is only logged.
            if let Err(e) = self.flush_set(&set) {
                tracing::error!(feature_set = %spec.name, error = %e, "flush failed; will retry");
            }
        } else if unflushed >= flush_rows {
            self.wake_maintenance();
        }
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
    fn load_specs(&self) -> Result<Vec<FeatureSetSpec>> {
        let mut specs: Vec<FeatureSetSpec> = self
            .inner
            .all_sets()
            .iter()
            .map(|set| set.spec.clone())
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

    fn append(&self, spec: &FeatureSetSpec, batch: &RecordBatch) -> Result<()> {
        self.inner.append(spec, batch)
    }

    fn pool(&self) -> &ConnectionPool {
        &self.inner.pool
    }

    /// Writes the logs into Parquet: after a planned shutdown the logs are empty.
    fn flush(&self) -> Result<()> {
        ParquetStore::flush(self)
    }

    fn query_relations(&self, specs: &[&FeatureSetSpec], work: RelationWork) -> Result<()> {
        let sets = specs
            .iter()
            .map(|spec| self.inner.set(&spec.name))
            .collect::<Result<Vec<_>>>()?;
        let conn = self.inner.pool.get(Purpose::Read)?;
        // Held until `work` returns: they keep every file and memtable table they list.
        let snapshots: Vec<Arc<Snapshot>> = sets
            .iter()
            .map(|set| Arc::clone(&read(&set.snapshot)))
            .collect();
        let relations: Vec<String> = sets
            .iter()
            .zip(&snapshots)
            .map(|(set, snapshot)| snapshot.relation(&set.spec, set.has_unflushed(snapshot)))
            .collect();
        work(&conn, &relations)
    }
}

#[cfg(test)]
mod tests;
