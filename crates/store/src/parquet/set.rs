//! The state of one feature set: its live Parquet files, its memtable tables, its log, and the
//! locks that keep readers, appends, flushes and compactions out of each other's way.

use std::collections::HashSet;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use featherstore_core::time::now_micros;
use featherstore_core::FeatureSetSpec;
use parking_lot::{Mutex, RwLock};

use super::manifest::{
    FileEntry, Manifest, DATE_DIR_PREFIX, FORMAT, FORMAT_BEFORE_INGEST_TIMES, MANIFEST_FILE,
    PART_PREFIX,
};
use super::rows;
use crate::durable::{create_dir_durably, list_dir, remove_quietly, write_atomic, TMP_SUFFIX};
use crate::metrics::PARQUET;
use crate::query::{reads, sql};
use crate::query::{ConnectionPool, Purpose};
use crate::wal::log::{self, LogWriter};
use crate::wal::memtable::MemTable;
use crate::wal::{Ingest, StagedSet};
use crate::{Error, Result, StorageStats};

const SPEC_FILE: &str = "_spec.json";
/// The set's write-ahead log directory.
const LOG_DIR: &str = "_log";
const VERSION_PREFIX: &str = "_spec.v";

/// A live Parquet file. Compaction retires files; one is deleted when the last snapshot that
/// lists it is dropped, so a reader never loses a file in the middle of a scan.
pub(super) struct DataFile {
    /// Relative to the set's directory, as in the manifest.
    pub(super) relative: String,
    /// Absolute and UTF-8 (checked at open), as DuckDB is given it.
    pub(super) path: String,
    pub(super) rows: u64,
    /// Its size on disk (files are never changed once written).
    pub(super) bytes: u64,
    /// Written before ingest times: no `_ingested_at` column (see `FileEntry`).
    pub(super) without_ingest_times: bool,
    retired: AtomicBool,
    /// False once the set is deleted: its directory is gone, and a set created later under
    /// the same name may have a file of the same name.
    set_alive: Arc<AtomicBool>,
}

impl DataFile {
    pub(super) fn new(
        set_dir: &Path,
        relative: String,
        rows: u64,
        bytes: u64,
        set_alive: &Arc<AtomicBool>,
    ) -> Self {
        let path = set_dir.join(&relative).to_string_lossy().into_owned();
        DataFile {
            relative,
            path,
            rows,
            bytes,
            without_ingest_times: false,
            retired: AtomicBool::new(false),
            set_alive: set_alive.clone(),
        }
    }

    /// The UTC date partition, from the validated path.
    pub(super) fn date(&self) -> &str {
        self.relative
            .strip_prefix(DATE_DIR_PREFIX)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or("")
    }

    /// Marks the file for deletion once no snapshot lists it; call after the manifest that
    /// drops it is durable.
    pub(super) fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }
}

impl Drop for DataFile {
    fn drop(&mut self) {
        if self.retired.load(Ordering::Acquire) && self.set_alive.load(Ordering::Acquire) {
            remove_quietly(Path::new(&self.path));
        }
    }
}

/// What a reader sees of a set: immutable, replaced whole by flushes and compactions. The
/// files and tables it lists outlive it, so a reader holding it can take all the time it
/// needs, without blocking flushes.
pub(super) struct Snapshot {
    pub(super) files: Vec<Arc<DataFile>>,
    /// Rows up to this `_seq` are in `files`; later ones in `tables`.
    pub(super) flushed_seq: i64,
    /// Memtable tables, oldest first; the last one takes appends. A flush freezes them all and
    /// adds a new one, so rows stay readable while they are written to Parquet.
    pub(super) tables: Vec<Arc<MemTable>>,
}

impl Snapshot {
    pub(super) fn manifest(&self, next_file: u64, legacy_ingested_at: Option<i64>) -> Manifest {
        Manifest {
            flushed_seq: self.flushed_seq,
            next_file,
            files: self
                .files
                .iter()
                .map(|f| FileEntry {
                    path: f.relative.clone(),
                    rows: f.rows,
                    without_ingest_times: f.without_ingest_times,
                })
                .collect(),
            legacy_ingested_at,
            ..Manifest::default()
        }
    }

    /// The stored rows as a SQL relation (a parenthesised query, to use after `FROM`):
    /// Parquet files and unflushed rows, each side only when it has rows (`has_unflushed`).
    /// The rows of this snapshot under `spec`, which may be older than the set's current one.
    pub(super) fn relation(
        &self,
        spec: &FeatureSetSpec,
        set: &SetState,
        has_unflushed: bool,
    ) -> Result<String> {
        let tables: &[Arc<MemTable>] = if has_unflushed || self.files.is_empty() {
            &self.tables
        } else {
            &[]
        };
        Ok(format!("({})", set.select_rows(spec, &self.files, tables)?))
    }
}

/// Held by flush, compaction and delete: they rewrite the manifest.
pub(super) struct Maintenance {
    pub(super) next_file: u64,
}

pub(super) struct SetState {
    /// The current version; replaced by `update` under the maintenance and ingest locks.
    spec: RwLock<Arc<FeatureSetSpec>>,
    pub(super) dir: PathBuf,
    /// When rows stored before ingest times read as ingested (see `Manifest`).
    pub(super) legacy_ingested_at: Option<i64>,
    pub(super) alive: Arc<AtomicBool>,
    pub(super) ingest: Mutex<Ingest>,
    /// Greatest `_seq` whose row is in the memtable (acknowledged); -1 when none.
    pub(super) committed: AtomicI64,
    /// Only held to clone or swap the `Arc`.
    pub(super) snapshot: RwLock<Arc<Snapshot>>,
    pub(super) maintenance: Mutex<Maintenance>,
}

impl SetState {
    pub(super) fn spec(&self) -> Arc<FeatureSetSpec> {
        Arc::clone(&self.spec.read())
    }

    pub(super) fn replace_spec(&self, spec: FeatureSetSpec) {
        *self.spec.write() = Arc::new(spec);
    }

    pub(super) fn log_dir(&self) -> PathBuf {
        self.dir.join(LOG_DIR)
    }

    /// `SELECT` of the rows of some of the set's data files and memtable tables under `spec`,
    /// with ingest times (files written before them read as ingested at the upgrade).
    pub(super) fn select_rows(
        &self,
        spec: &FeatureSetSpec,
        files: &[Arc<DataFile>],
        tables: &[Arc<MemTable>],
    ) -> Result<String> {
        let paths = |old: bool| -> Vec<&str> {
            files
                .iter()
                .filter(|f| f.without_ingest_times == old)
                .map(|f| f.path.as_str())
                .collect()
        };
        let (current, old) = (paths(false), paths(true));
        let without_ingest_times = match (old.is_empty(), self.legacy_ingested_at) {
            (true, _) => None,
            (false, Some(at)) => Some((old.as_slice(), at)),
            (false, None) => {
                return Err(Error::Corrupt(format!(
                    "feature set {:?} has files without ingest times but no time for them",
                    spec.name
                )))
            }
        };
        Ok(rows::select_rows(
            spec,
            &current,
            without_ingest_times,
            tables,
        ))
    }

    /// Whether rows past `snapshot`'s files are in the memtable.
    pub(super) fn has_unflushed(&self, snapshot: &Snapshot) -> bool {
        self.committed.load(Ordering::Acquire) > snapshot.flushed_seq
    }

    /// What the set's data files and log segments take on disk.
    pub(super) fn disk_usage(&self) -> Result<StorageStats> {
        let snapshot = Arc::clone(&self.snapshot.read());
        let log = log::disk_usage(&self.log_dir())?;
        Ok(StorageStats {
            files: snapshot.files.len() as u64 + log.files,
            bytes: snapshot.files.iter().map(|f| f.bytes).sum::<u64>() + log.bytes,
        })
    }

    /// Rows acknowledged but not yet in Parquet (approximately, when appends failed).
    pub(super) fn unflushed_rows(&self) -> u64 {
        let flushed = self.snapshot.read().flushed_seq;
        (self.committed.load(Ordering::Acquire) - flushed).max(0) as u64
    }

    /// Creates a new, empty set: directory and durable spec; `table` is its memtable.
    pub(super) fn create(
        dir: PathBuf,
        spec: &FeatureSetSpec,
        table: Arc<MemTable>,
    ) -> Result<SetState> {
        clear_interrupted_create(&dir)?;
        let json = serde_json::to_vec_pretty(spec).expect("specs serialize");
        // Writing the spec is the commit point: a directory without one is not a set. The
        // manifest before it says the set's rows all carry ingest times.
        let created = create_dir_durably(&dir)
            .and_then(|()| create_dir_durably(&dir.join(LOG_DIR)))
            .and_then(|()| Manifest::default().store(&dir))
            .and_then(|()| write_atomic(&dir.join(SPEC_FILE), &json));
        if let Err(e) = created {
            if let Err(cleanup) = fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %cleanup, "could not remove a half-created set");
            }
            return Err(e);
        }
        Ok(SetState::assemble(
            spec.clone(),
            dir,
            Manifest::default(),
            Vec::new(),
            table,
            Recovered {
                last_seq: -1,
                next_segment: 0,
                last_ingested_at: i64::MIN,
            },
        ))
    }

    /// Opens a stored set: its manifest, garbage removed, its log replayed into `table`.
    pub(super) fn open(
        dir: PathBuf,
        spec: FeatureSetSpec,
        pool: &ConnectionPool,
        table: Arc<MemTable>,
    ) -> Result<SetState> {
        let mut manifest = Manifest::load(&dir)?;
        collect_garbage(&dir, &manifest)?;
        let sizes = live_file_sizes(&dir, &manifest)?;
        create_dir_durably(&dir.join(LOG_DIR))?;
        upgrade_to_ingest_times(&dir, &mut manifest, now_micros())?;
        let replayed = log::replay(
            &dir.join(LOG_DIR),
            &sql::storage_schema(&spec),
            manifest.flushed_seq,
            manifest.legacy_ingested_at,
            |batch| {
                table.push(batch);
                Ok(())
            },
        )?;
        let last_seq = replayed.max_seq.unwrap_or(-1).max(manifest.flushed_seq);
        let set = SetState::assemble(
            spec,
            dir,
            manifest,
            sizes,
            table,
            Recovered {
                last_seq,
                next_segment: replayed.next_segment,
                last_ingested_at: i64::MIN,
            },
        );
        // Recovered from the stored rows, so that ingest times never go back, even when the
        // clock has since the last run.
        let latest = {
            let snapshot = Arc::clone(&set.snapshot.read());
            let conn = pool.get(Purpose::Read)?;
            reads::max_ingested_at(&conn, &snapshot.relation(&set.spec(), &set, true)?)?
        };
        set.ingest.lock().last_ingested_at = latest.unwrap_or(i64::MIN);
        Ok(set)
    }

    fn assemble(
        spec: FeatureSetSpec,
        dir: PathBuf,
        manifest: Manifest,
        sizes: Vec<u64>,
        table: Arc<MemTable>,
        recovered: Recovered,
    ) -> SetState {
        let Recovered {
            last_seq,
            next_segment,
            last_ingested_at,
        } = recovered;
        let alive = Arc::new(AtomicBool::new(true));
        let files = manifest
            .files
            .into_iter()
            .zip(sizes)
            .map(|(entry, bytes)| {
                let mut file = DataFile::new(&dir, entry.path, entry.rows, bytes, &alive);
                file.without_ingest_times = entry.without_ingest_times;
                Arc::new(file)
            })
            .collect();
        let pending = last_seq > manifest.flushed_seq;
        SetState {
            legacy_ingested_at: manifest.legacy_ingested_at,
            ingest: Mutex::new(Ingest {
                log: LogWriter::new(
                    dir.join(LOG_DIR),
                    sql::storage_schema(&spec),
                    next_segment,
                    &PARQUET.log,
                ),
                next_seq: last_seq + 1,
                table: table.clone(),
                last_ingested_at,
                pending_since: pending.then(Instant::now),
            }),
            committed: AtomicI64::new(last_seq),
            snapshot: RwLock::new(Arc::new(Snapshot {
                files,
                flushed_seq: manifest.flushed_seq,
                tables: vec![table],
            })),
            maintenance: Mutex::new(Maintenance {
                next_file: manifest.next_file,
            }),
            spec: RwLock::new(Arc::new(spec)),
            dir,
            alive,
        }
    }
}

impl StagedSet for SetState {
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

/// `{dir}/_spec.v{version}.json`: one stored version of the spec (the current one included).
fn version_path(dir: &Path, version: u64) -> PathBuf {
    dir.join(format!("{VERSION_PREFIX}{version}.json"))
}

/// Durably stores `new`, the next version of `old`: both version files, then the spec file,
/// the commit point (a version file past the spec file's version is from an update that did
/// not commit; it is ignored, and overwritten by the next update).
pub(super) fn store_versions(dir: &Path, old: &FeatureSetSpec, new: &FeatureSetSpec) -> Result<()> {
    for spec in [old, new] {
        let path = version_path(dir, spec.version.unwrap_or(1));
        // A set created before versions were kept has no file for its first version yet.
        if spec.version != old.version || !path.exists() {
            write_atomic(
                &path,
                &serde_json::to_vec_pretty(spec).expect("specs serialize"),
            )?;
        }
    }
    write_atomic(
        &dir.join(SPEC_FILE),
        &serde_json::to_vec_pretty(new).expect("specs serialize"),
    )
}

/// Every stored version of the set in `dir` up to `current`'s, oldest first.
pub(super) fn load_versions(dir: &Path, current: &FeatureSetSpec) -> Result<Vec<FeatureSetSpec>> {
    let latest = current.version.unwrap_or(1);
    let mut versions = Vec::new();
    for version in 1..latest {
        let path = version_path(dir, version);
        match fs::read(&path) {
            Ok(bytes) => versions.push(
                FeatureSetSpec::from_json(&bytes)
                    .map_err(|e| Error::Corrupt(format!("{}: {e}", path.display())))?,
            ),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("reading {}", path.display()))(e)),
        }
    }
    versions.push(current.clone());
    Ok(versions)
}

/// Where a set's log and appends stand after opening it.
struct Recovered {
    last_seq: i64,
    next_segment: u64,
    last_ingested_at: i64,
}

/// A set written before ingest times (manifest of format 1, or none: such versions wrote one
/// at the first flush only) has Parquet files and log segments without an `_ingested_at`
/// column. Its rows read as ingested at `first_open`, now: each was stored by then, and no
/// earlier time is provable, so nothing "as known at" an earlier time sees them too early.
/// Recorded once, durably, in the manifest, before anything is served.
fn upgrade_to_ingest_times(dir: &Path, manifest: &mut Manifest, first_open: i64) -> Result<()> {
    let written_before =
        !dir.join(MANIFEST_FILE).exists() || manifest.format == FORMAT_BEFORE_INGEST_TIMES;
    if !written_before {
        return Ok(());
    }
    manifest.format = FORMAT;
    manifest.legacy_ingested_at = Some(first_open);
    for file in &mut manifest.files {
        file.without_ingest_times = true;
    }
    manifest.store(dir)?;
    tracing::info!(dir = %dir.display(), "rows stored without ingest times read as ingested now");
    Ok(())
}

/// Reads `{dir}/_spec.json`; `None` when the directory holds no set.
pub(super) fn read_spec(dir: &Path) -> Result<Option<FeatureSetSpec>> {
    let path = dir.join(SPEC_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()))(e)),
    };
    let spec = FeatureSetSpec::from_json(&bytes)
        .map_err(|e| Error::Corrupt(format!("{}: {e}", path.display())))?;
    let dir_name = dir.file_name().and_then(|n| n.to_str());
    if dir_name != Some(spec.name.as_str()) {
        return Err(Error::Corrupt(format!(
            "{}: the spec is of feature set {:?}",
            path.display(),
            spec.name
        )));
    }
    Ok(Some(spec))
}

/// A crash during `create` leaves the set's directory without a spec, holding at most an
/// empty log directory, an empty manifest and the spec's temporary file. Anything else there is not ours to
/// delete.
fn clear_interrupted_create(dir: &Path) -> Result<()> {
    remove_quietly(&dir.join(format!("{SPEC_FILE}{TMP_SUFFIX}")));
    remove_quietly(&dir.join(format!("{MANIFEST_FILE}{TMP_SUFFIX}")));
    remove_quietly(&dir.join(MANIFEST_FILE));
    let _ = fs::remove_dir(dir.join(LOG_DIR));
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!(
            "{} exists and is not an empty directory",
            dir.display()
        ))(e)),
    }
}

/// Deletes what a crash left behind: temporary files, and data files that the manifest does
/// not list (written by a flush or compaction that never committed).
fn collect_garbage(dir: &Path, manifest: &Manifest) -> Result<()> {
    let live: HashSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    for entry in list_dir(dir)? {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let path = entry.path();
        if name.ends_with(TMP_SUFFIX) && path.is_file() {
            remove_quietly(&path);
        } else if name.starts_with(DATE_DIR_PREFIX) && path.is_dir() {
            for file in list_dir(&path)? {
                let Ok(file_name) = file.file_name().into_string() else {
                    continue;
                };
                let ours = file_name.starts_with(PART_PREFIX);
                if ours && !live.contains(format!("{name}/{file_name}").as_str()) {
                    remove_quietly(&file.path());
                }
            }
            // Only succeeds when empty: a partition whose files were all garbage.
            let _ = fs::remove_dir(&path);
        }
    }
    Ok(())
}

/// The size of every file the manifest lists, in its order. Fails if one is missing: serving
/// without it would silently lose rows.
fn live_file_sizes(dir: &Path, manifest: &Manifest) -> Result<Vec<u64>> {
    manifest
        .files
        .iter()
        .map(|file| {
            let path = dir.join(&file.path);
            match path.metadata() {
                Ok(metadata) if metadata.is_file() => Ok(metadata.len()),
                _ => Err(Error::Corrupt(format!(
                    "{}: listed in {} but missing",
                    path.display(),
                    dir.join(MANIFEST_FILE).display()
                ))),
            }
        })
        .collect()
}
