//! The Delta Lake backend: each feature set is a Delta table in an object store (S3 or any
//! S3-compatible server, or a local directory through `file://`), so that several servers can
//! share the offline data and any Delta reader (Spark, Polars, DuckDB, `deltalake`) sees it.
//!
//! ```text
//! {uri}/{set}/_delta_log/…                          the table's transaction log
//! {uri}/{set}/_event_date=YYYY-MM-DD/part-….parquet  its data files, by event date
//! {uri}/_featherstore/specs/{set}/vNNNNNNNNNN.json  every version of its spec (`registry`)
//! ```
//!
//! - **Appends**: one Delta commit per batch; acknowledged only once the commit is in the log.
//!   `_seq` is `(commit version << 32) + row`: the commit version orders batches across every
//!   writer on the bucket, so the ingest order is unique and increasing. Since `_seq` depends on
//!   the version, a commit is only ever attempted at the version after the snapshot the rows
//!   were numbered from; when another writer took it, the batch is numbered and written again
//!   on the newer snapshot (Delta's optimistic concurrency, with our own retry).
//! - **Reads**: the latest snapshot's data files, copied into a bounded local cache
//!   (`cache::FileCache`), read by DuckDB with the shared SQL of `query`.
//! - **Maintenance** (`maintenance`): small files of a partition compacted into one (a
//!   `dataChange: false` commit, like Delta's OPTIMIZE), and checkpoints of the log.

mod cache;
mod maintenance;
mod registry;
mod schema;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use deltalake::kernel::engine::arrow_conversion::TryFromArrow;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TransactionError};
use deltalake::kernel::{Action, LogicalFileView, StructType};
use deltalake::logstore::object_store::ObjectStoreExt;
use deltalake::logstore::{store_for, LogStore};
use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableError, ObjectStore, Path};
use featherstore_core::spec::is_valid_name;
use featherstore_core::{ErrorCode, FeatureServiceSpec, FeatureSetSpec};
use futures::{StreamExt, TryStreamExt};
use parking_lot::Mutex;
use url::Url;

use self::cache::{FileCache, Pinned};
use crate::background::{Background, BackgroundThread};
use crate::offline::{OfflineStore, RelationWork};
use crate::query::{sql, ConnectionPool, EngineSettings, Purpose};
use crate::{column_encoding, Error, Result, StorageStats};

/// Bits of `_seq` that number the rows of one commit: a batch holds fewer than 2^32 rows.
const ROW_BITS: u32 = 32;
/// Commit attempts of one batch before it is refused as unavailable (other writers kept
/// taking the next version).
const COMMIT_ATTEMPTS: usize = 50;
/// Commits looked back through for the latest ingest time (past compactions and column
/// additions, which record none).
const INGEST_TIME_LOOKBACK: usize = 1000;
/// Data files fetched into the cache at once by one query.
const PARALLEL_FETCHES: usize = 4;
/// Commit metadata: the batch's unique id (to recognise our own commit when its outcome was
/// lost) and its ingest time (for the next writer's, which must not be earlier).
const BATCH_KEY: &str = "featherstore.batch";
const INGESTED_AT_KEY: &str = "featherstore.ingested_at";

/// The backend's settings (`storage.delta` in the server's configuration).
#[derive(Debug, Clone)]
pub struct DeltaOptions {
    /// Where the tables live: `s3://bucket/prefix`, `file:///dir`, ...
    pub uri: String,
    /// Passed to the object store (`endpoint`, `region`, `allow_http`, ...); `AWS_*`
    /// environment variables apply too.
    pub storage_options: HashMap<String, String>,
    /// Local copies of data files for queries.
    pub cache_dir: PathBuf,
    /// Bytes the cache keeps once no query reads them.
    pub cache_max_bytes: u64,
    /// A partition with at least this many files smaller than `compact_target_bytes` is
    /// compacted into one file.
    pub compact_min_files: usize,
    pub compact_target_bytes: u64,
    /// A checkpoint of a table's log is written once this many commits followed the last one.
    pub checkpoint_interval: u64,
    /// How often the background thread looks for compaction and checkpoint work.
    pub maintenance_interval: Duration,
}

impl DeltaOptions {
    /// The defaults, for tables at `uri` with copies cached in `cache_dir`.
    pub fn new(uri: impl Into<String>, cache_dir: impl Into<PathBuf>) -> Self {
        DeltaOptions {
            uri: uri.into(),
            storage_options: HashMap::new(),
            cache_dir: cache_dir.into(),
            cache_max_bytes: 10 << 30,
            compact_min_files: 16,
            compact_target_bytes: 128 << 20,
            checkpoint_interval: 100,
            maintenance_interval: Duration::from_secs(30),
        }
    }
}

/// Object store retries when the configuration names none: an unreachable store fails a call
/// within seconds (UNAVAILABLE) instead of the client's default of minutes.
const DEFAULT_STORAGE_OPTIONS: [(&str, &str); 4] = [
    ("max_retries", "2"),
    ("retry_timeout", "10s"),
    ("connect_timeout", "5s"),
    ("timeout", "60s"),
];

pub struct DeltaStore {
    inner: Arc<Inner>,
    /// The background compaction and checkpoint thread; stopped and joined on drop.
    _maintenance: BackgroundThread<Inner>,
}

struct Inner {
    root: Url,
    storage_options: HashMap<String, String>,
    options: DeltaOptions,
    /// Always `Some` until dropped (see `Drop for Inner`).
    runtime: Option<tokio::runtime::Runtime>,
    /// The object store at `root`: the registry, and the data files the cache fetches.
    store: Arc<dyn ObjectStore>,
    cache: Arc<FileCache>,
    pool: ConnectionPool,
    sets: Mutex<HashMap<String, Arc<SetTable>>>,
    /// Unique per open store: with `next_batch`, names each batch's commit.
    writer_id: String,
    next_batch: AtomicU64,
    /// Stops the maintenance thread.
    background: Background,
}

/// One set's table as this server knows it.
struct SetTable {
    /// Held for a whole append: serialises this server's appends to the set.
    append: Mutex<AppendState>,
    /// The latest state loaded; only held to clone or replace it.
    latest: Mutex<DeltaTable>,
    /// Held by compaction and checkpoints, and by delete: no maintenance commit lands in a
    /// table being deleted.
    maintenance: Mutex<()>,
}

struct AppendState {
    /// The latest ingest time this server knows of in the set (UTC µs).
    last_ingested_at: i64,
    /// The version of this server's last commit: when the table is still there, no other
    /// writer committed since, and `last_ingested_at` is the set's latest.
    own_version: Option<u64>,
}

/// The Delta error code: failures to reach or use the object store are UNAVAILABLE (retrying
/// later may work); anything else is a fault of the server.
pub(crate) fn error_code(error: &DeltaTableError) -> ErrorCode {
    match error {
        DeltaTableError::ObjectStore { .. }
        | DeltaTableError::Io { .. }
        | DeltaTableError::Transaction { .. }
        | DeltaTableError::VersionAlreadyExists(_)
        | DeltaTableError::KernelError(_)
        | DeltaTableError::Kernel { .. }
        | DeltaTableError::GenericError { .. }
        | DeltaTableError::Generic(_) => ErrorCode::Unavailable,
        _ => ErrorCode::Internal,
    }
}

impl DeltaStore {
    /// Opens the store at `options.uri` (nothing is written there until a set is created),
    /// loads every set's table and starts the background maintenance thread.
    pub fn open(options: DeltaOptions, engine: &EngineSettings) -> Result<Self> {
        let mut root = Url::parse(&options.uri).map_err(|e| {
            featherstore_core::Error::invalid(format!(
                "storage.delta.uri {:?} is not a URL: {e}",
                options.uri
            ))
        })?;
        if !root.path().ends_with('/') {
            root.set_path(&format!("{}/", root.path()));
        }
        if root.scheme() == "file" {
            // The local file system store needs the directory to exist.
            let dir = root.to_file_path().map_err(|()| {
                featherstore_core::Error::invalid(format!(
                    "storage.delta.uri {:?} is not a local path",
                    options.uri
                ))
            })?;
            std::fs::create_dir_all(&dir)
                .map_err(Error::io(format!("creating {}", dir.display())))?;
        }
        let mut storage_options = options.storage_options.clone();
        for (key, value) in DEFAULT_STORAGE_OPTIONS {
            storage_options
                .entry(key.to_string())
                .or_insert_with(|| value.to_string());
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("delta-io")
            .enable_all()
            .build()
            .map_err(Error::io("starting the delta runtime"))?;
        let store: Arc<dyn ObjectStore> = store_for(&root, storage_options.clone())?;
        let writer_id = format!(
            "{:x}-{:x}",
            std::process::id(),
            featherstore_core::time::now_micros()
        );
        let inner = Arc::new(Inner {
            cache: FileCache::open(&options.cache_dir, options.cache_max_bytes)?,
            pool: ConnectionPool::open(None, engine)?,
            root,
            storage_options,
            options,
            runtime: Some(runtime),
            store,
            sets: Mutex::new(HashMap::new()),
            writer_id,
            next_batch: AtomicU64::new(0),
            background: Background::default(),
        });
        for spec in inner.load_specs()? {
            inner.open_set(&spec.name)?;
        }
        let maintenance = BackgroundThread::spawn(
            "delta-maintenance",
            &inner,
            |inner| &inner.background,
            Inner::run_maintenance,
        )?;
        Ok(DeltaStore {
            inner,
            _maintenance: maintenance,
        })
    }

    /// Compacts every set's small files and checkpoints its log where due, now.
    pub fn maintain(&self) -> Result<()> {
        self.inner
            .all_sets()
            .into_iter()
            .try_for_each(|(name, set)| self.inner.maintain_set(&name, &set))
    }

    /// Data files in the latest snapshot of a set's table, as this server last loaded it.
    pub fn data_files(&self, set: &str) -> Result<usize> {
        let table = self.inner.set(set)?.latest.lock().clone();
        Ok(table.snapshot()?.log_data().num_files())
    }

    /// Bytes and files in the local cache now.
    pub fn cache_usage(&self) -> (u64, u64) {
        self.inner.cache.usage()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside another runtime (a server shutting
        // down): its tasks, all awaited by now, are left to end in the background.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// What became of one commit attempt.
enum Attempt {
    Committed(u64),
    /// Another writer took the version first: number the batch again on a newer snapshot.
    Lost,
}

impl Inner {
    /// Runs `future` on the store's runtime and waits for it: storage calls block, from any
    /// thread (also one of another runtime, where `block_on` would panic).
    fn run<T: Send + 'static>(
        &self,
        future: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let Some(runtime) = &self.runtime else {
            return Err(Error::Domain(featherstore_core::Error::Unavailable(
                "the delta store is closing".into(),
            )));
        };
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        runtime.spawn(async move {
            // The receiver waits for it; it is gone only if the caller panicked.
            let _ = sender.send(future.await);
        });
        receiver.recv().map_err(|_| {
            Error::Domain(featherstore_core::Error::Internal(
                "a delta lake task failed".into(),
            ))
        })?
    }

    fn table_url(&self, set: &str) -> Result<Url> {
        self.root.join(&format!("{set}/")).map_err(|e| {
            featherstore_core::Error::invalid(format!("no table location for {set:?}: {e}")).into()
        })
    }

    /// A set's table as stored now; one not created yet (no log) loads with no version.
    fn load_table(&self, set: &str) -> Result<DeltaTable> {
        let url = self.table_url(set)?;
        if url.scheme() == "file" {
            // On the local file system a missing table directory is not "no table yet" but
            // an invalid location to `deltalake`: a directory of its own is what an object
            // store's empty prefix is.
            let dir = url.to_file_path().map_err(|()| {
                featherstore_core::Error::invalid(format!("{url} is not a local path"))
            })?;
            std::fs::create_dir_all(&dir)
                .map_err(Error::io(format!("creating {}", dir.display())))?;
        }
        let options = self.storage_options.clone();
        self.run(
            async move { Ok(DeltaTable::try_from_url_with_storage_options(url, options).await?) },
        )
    }

    fn load_specs(&self) -> Result<Vec<FeatureSetSpec>> {
        let store = Arc::clone(&self.store);
        self.run(async move { registry::load_specs(store.as_ref()).await })
    }

    /// Whether the bucket holds `spec`'s version with `spec`'s definition: stored by another
    /// server, whose change this server now takes in (servers that share a bucket share a
    /// registry, e.g. in Redis, which hands each the same specs).
    fn stored_by_another_server(&self, spec: &FeatureSetSpec) -> Result<bool> {
        let store = Arc::clone(&self.store);
        let (name, version) = (spec.name.clone(), spec.version.unwrap_or(1));
        let stored =
            self.run(async move { registry::read_version(store.as_ref(), &name, version).await })?;
        Ok(stored.same_definition(spec))
    }

    /// Loads a set's table (that has a spec) and registers it.
    fn open_set(&self, name: &str) -> Result<Arc<SetTable>> {
        let table = self.load_table(name)?;
        let set = Arc::new(SetTable {
            append: Mutex::new(AppendState {
                last_ingested_at: 0,
                own_version: None,
            }),
            latest: Mutex::new(table),
            maintenance: Mutex::new(()),
        });
        self.sets.lock().insert(name.to_string(), Arc::clone(&set));
        Ok(set)
    }

    fn set(&self, name: &str) -> Result<Arc<SetTable>> {
        self.sets
            .lock()
            .get(name)
            .cloned()
            .ok_or_else(|| featherstore_core::Error::no_such_set(name).into())
    }

    fn all_sets(&self) -> Vec<(String, Arc<SetTable>)> {
        self.sets
            .lock()
            .iter()
            .map(|(name, set)| (name.clone(), Arc::clone(set)))
            .collect()
    }

    /// The set's table at its latest version (a listing of its log), remembered for the
    /// metrics and the next caller.
    fn refresh(&self, set: &SetTable) -> Result<DeltaTable> {
        let mut table = set.latest.lock().clone();
        table = self.run(async move {
            match table.update_incremental(None).await {
                // A set whose creation was cut short has a spec and no table yet: no rows.
                Ok(()) | Err(DeltaTableError::NotATable(_)) => Ok(table),
                Err(e) => Err(e.into()),
            }
        })?;
        let mut latest = set.latest.lock();
        if table.version() >= latest.version() {
            *latest = table.clone();
        }
        Ok(table)
    }

    fn create(&self, spec: &FeatureSetSpec) -> Result<()> {
        registry::check_set_name(&spec.name)?;
        let store = Arc::clone(&self.store);
        let claimed = {
            let spec = spec.clone();
            self.run(async move { registry::put_new(store.as_ref(), &spec).await })?
        };
        if !claimed {
            if self.stored_by_another_server(spec)? {
                // Created through another server on this bucket (which this server learnt
                // from the shared registry): the table is there; take it in.
                if !self.sets.lock().contains_key(&spec.name) {
                    self.open_set(&spec.name)?;
                }
                return Ok(());
            }
            return Err(featherstore_core::Error::AlreadyExists(format!(
                "feature set {:?} already exists",
                spec.name
            ))
            .into());
        }
        // The name is ours: what a deletion interrupted before its end may have left of an
        // older table goes first.
        let created = self.remove_table(&spec.name).and_then(|()| {
            let columns = StructType::try_from_arrow(schema::table_schema(spec).as_ref())?;
            let table = self.load_table(&spec.name)?;
            let name = spec.name.clone();
            self.run(async move {
                Ok(table
                    .create()
                    .with_table_name(name)
                    .with_columns(columns.fields().cloned())
                    .with_partition_columns([schema::DATE_COLUMN])
                    .with_save_mode(SaveMode::ErrorIfExists)
                    .await?)
            })
        });
        match created {
            Ok(_) => {
                self.open_set(&spec.name)?;
                Ok(())
            }
            Err(e) => {
                // Not created: give the name back (if this fails too, the set exists without a
                // table, and deleting it clears that).
                let store = Arc::clone(&self.store);
                let name = spec.name.clone();
                if let Err(undo) =
                    self.run(async move { registry::remove(store.as_ref(), &name).await })
                {
                    tracing::error!(feature_set = %spec.name, error = %undo, "could not undo a failed create");
                }
                Err(e)
            }
        }
    }

    /// Deletes every object of a set's table.
    fn remove_table(&self, name: &str) -> Result<()> {
        let store = Arc::clone(&self.store);
        let prefix = Path::from(name);
        self.run(async move {
            let objects: Vec<_> = store.list(Some(&prefix)).try_collect().await?;
            for object in objects {
                match store.delete(&object.location).await {
                    Ok(()) | Err(deltalake::ObjectStoreError::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(())
        })
    }

    fn delete(&self, name: &str) -> Result<()> {
        if !is_valid_name(name) {
            return Err(featherstore_core::Error::no_such_set(name).into());
        }
        let set = self.sets.lock().get(name).cloned();
        // Waits for this server's append to the set, and its maintenance, to end.
        let _maintenance = set.as_ref().map(|set| set.maintenance.lock());
        let _append = set.as_ref().map(|set| set.append.lock());
        let store = Arc::clone(&self.store);
        let owned = name.to_string();
        // The commit point: without a spec the set does not exist.
        self.run(async move { registry::remove(store.as_ref(), &owned).await })?;
        self.sets.lock().remove(name);
        self.remove_table(name)
    }

    fn update(&self, old: &FeatureSetSpec, new: &FeatureSetSpec) -> Result<()> {
        let set = self.set(&new.name)?;
        let _append = set.append.lock();
        let old_columns = schema::table_schema(old);
        let added: Vec<_> = schema::table_schema(new)
            .fields()
            .iter()
            .filter(|f| old_columns.field_with_name(f.name()).is_err())
            .cloned()
            .collect();
        let mut table = self.refresh(&set)?;
        if !added.is_empty() {
            let added = StructType::try_from_arrow(&arrow::datatypes::Schema::new(added))?;
            let current = table.snapshot()?.schema();
            // Another server's update may have added them already.
            let missing: Vec<_> = added
                .fields()
                .filter(|f| current.field(f.name()).is_none())
                .cloned()
                .collect();
            if !missing.is_empty() {
                table =
                    self.run(async move { Ok(table.add_columns().with_fields(missing).await?) })?;
                *set.latest.lock() = table;
            }
        }
        let store = Arc::clone(&self.store);
        let spec = new.clone();
        if !self.run(async move { registry::put_new(store.as_ref(), &spec).await })?
            && !self.stored_by_another_server(new)?
        {
            return Err(featherstore_core::Error::AlreadyExists(format!(
                "version {} of feature set {:?} was stored meanwhile by another server; reload and retry",
                new.version.unwrap_or(1),
                new.name
            ))
            .into());
        }
        Ok(())
    }

    fn append(&self, spec: &FeatureSetSpec, batch: &RecordBatch, now: i64) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if batch.num_rows() as u64 >= 1 << ROW_BITS {
            return Err(featherstore_core::Error::TooLarge(format!(
                "a batch holds {} rows; the delta backend stores at most {} per batch",
                batch.num_rows(),
                (1u64 << ROW_BITS) - 1
            ))
            .into());
        }
        let set = self.set(&spec.name)?;
        let mut state = set.append.lock();
        let batch_id = format!(
            "{}-{}",
            self.writer_id,
            self.next_batch.fetch_add(1, Ordering::Relaxed)
        );
        for _ in 0..COMMIT_ATTEMPTS {
            let table = self.refresh(&set)?;
            let version = table.version().ok_or_else(|| {
                featherstore_core::Error::Unavailable(format!(
                    "the table of feature set {:?} is not readable yet",
                    spec.name
                ))
            })?;
            if state.own_version != Some(version) {
                // Another writer (or this one before a restart) committed last: the set's
                // latest ingest time bounds ours from below.
                if let Some(ingested_at) = self.latest_ingest_time(&table, version)? {
                    state.last_ingested_at = state.last_ingested_at.max(ingested_at);
                }
            }
            let ingested_at = now.max(state.last_ingested_at);
            let first_seq = first_seq(version + 1)?;
            let stored = sql::to_storage_batch(spec, batch, first_seq, ingested_at)?;
            match self.commit(table, spec, &stored, &batch_id, ingested_at)? {
                Attempt::Committed(committed) => {
                    state.own_version = Some(committed);
                    state.last_ingested_at = ingested_at;
                    return Ok(());
                }
                Attempt::Lost => continue,
            }
        }
        Err(featherstore_core::Error::Unavailable(format!(
            "feature set {:?}: other writers took every one of {COMMIT_ATTEMPTS} commit attempts; retry later",
            spec.name
        ))
        .into())
    }

    /// Writes `stored` as new data files and commits them at the version after `table`'s.
    fn commit(
        &self,
        table: DeltaTable,
        spec: &FeatureSetSpec,
        stored: &RecordBatch,
        batch_id: &str,
        ingested_at: i64,
    ) -> Result<Attempt> {
        let Some(read_version) = table.version() else {
            return Err(featherstore_core::Error::no_such_set(&spec.name).into());
        };
        let writer = RecordBatchWriter::for_table(&table)?;
        let compressed =
            WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default()));
        let writer_properties = column_encoding::dictionaries_only_where_values_repeat(
            compressed,
            &writer.arrow_schema(),
        )?;
        let mut writer = writer.with_writer_properties(writer_properties.build());
        let rows = schema::to_table_batch(spec, stored, &writer.arrow_schema())?;
        let metadata = [
            (BATCH_KEY.to_string(), serde_json::Value::from(batch_id)),
            (
                INGESTED_AT_KEY.to_string(),
                serde_json::Value::from(ingested_at),
            ),
        ];
        let log_store = table.log_store();
        let outcome = self.run(async move {
            writer.write(rows).await?;
            let actions: Vec<Action> = writer.flush().await?.into_iter().map(Action::Add).collect();
            let properties = CommitProperties::default()
                .with_max_retries(0)
                // Checkpoints are the maintenance thread's: a failed one must not fail the
                // acknowledgement of a committed batch.
                .with_create_checkpoint(false)
                .with_cleanup_expired_logs(Some(false))
                .with_metadata(metadata);
            let operation = DeltaOperation::Write {
                mode: SaveMode::Append,
                partition_by: Some(vec![schema::DATE_COLUMN.to_string()]),
                predicate: None,
            };
            let committed = CommitBuilder::from(properties)
                .with_actions(actions)
                .build(Some(table.snapshot()?), log_store, operation)
                .await;
            Ok(committed.map(|done| done.version()))
        })?;
        match outcome {
            Ok(version) => Ok(Attempt::Committed(version)),
            Err(error) => {
                // Whether the version went to another writer, or the answer of our own put was
                // lost (the store may have written it): the log tells.
                let target = read_version + 1;
                let table = self.set(&spec.name)?.latest.lock().clone();
                match self.commit_metadata(&table, target) {
                    Ok(found) if found.batch.as_deref() == Some(batch_id) => {
                        Ok(Attempt::Committed(target))
                    }
                    Ok(found) if found.exists && is_lost_race(&error) => Ok(Attempt::Lost),
                    _ => Err(error.into()),
                }
            }
        }
    }

    /// The ingest time recorded by the latest append commit at or before `version`; `None`
    /// when none is found within `INGEST_TIME_LOOKBACK` commits (compactions and column
    /// additions record none).
    fn latest_ingest_time(&self, table: &DeltaTable, version: u64) -> Result<Option<i64>> {
        for back in (0..=version).rev().take(INGEST_TIME_LOOKBACK) {
            let found = self.commit_metadata(table, back)?;
            if !found.exists {
                // Removed by log cleanup: older ones are gone too.
                return Ok(None);
            }
            if found.ingested_at.is_some() {
                return Ok(found.ingested_at);
            }
        }
        Ok(None)
    }

    /// The FeatherStore metadata of the commit at `version` of a table.
    fn commit_metadata(&self, table: &DeltaTable, version: u64) -> Result<CommitMetadata> {
        let log_store = table.log_store();
        let bytes = self.run(async move { Ok(log_store.read_commit_entry(version).await?) })?;
        let Some(bytes) = bytes else {
            return Ok(CommitMetadata::default());
        };
        let mut found = CommitMetadata {
            exists: true,
            ..CommitMetadata::default()
        };
        for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let Ok(action) = serde_json::from_slice::<serde_json::Value>(line) else {
                continue;
            };
            if let Some(info) = action.get("commitInfo") {
                found.batch = info
                    .get(BATCH_KEY)
                    .and_then(|v| v.as_str())
                    .map(str::to_string);
                found.ingested_at = info.get(INGESTED_AT_KEY).and_then(|v| v.as_i64());
            }
        }
        Ok(found)
    }

    fn query_relations(&self, specs: &[&FeatureSetSpec], work: RelationWork<'_>) -> Result<()> {
        let sets = specs
            .iter()
            .map(|spec| self.set(&spec.name))
            .collect::<Result<Vec<_>>>()?;
        let mut pins = Vec::with_capacity(sets.len());
        let mut relations = Vec::with_capacity(sets.len());
        for (spec, set) in specs.iter().zip(&sets) {
            let table = self.refresh(set)?;
            let (pinned, files) = self.fetch(&spec.name, &table)?;
            pins.push(pinned);
            relations.push(format!("({})", schema::select_files(spec, &files)));
        }
        // Taken once the files are here: no connection waits on the object store.
        let conn = self.pool.get(Purpose::Read)?;
        // `pins` keeps every copy the relations read until `work` returns.
        let result = work(&conn, &relations);
        drop(pins);
        result
    }

    /// Local copies of every data file of `table`'s snapshot, fetched where missing, pinned.
    fn fetch(&self, set: &str, table: &DeltaTable) -> Result<(Pinned, Vec<String>)> {
        if table.version().is_none() {
            return self.fetch_paths(set, &[]);
        }
        let remote: Vec<Path> = table
            .snapshot()?
            .log_data()
            .iter()
            .map(|file| data_file_path(&file))
            .collect();
        self.fetch_paths(set, &remote)
    }

    /// Local copies of some of a set's data files (paths in its table), fetched where
    /// missing, pinned.
    fn fetch_paths(&self, set: &str, remote: &[Path]) -> Result<(Pinned, Vec<String>)> {
        let local: Vec<PathBuf> = remote
            .iter()
            .map(|path| self.cache.local_path(set, path.as_ref()))
            .collect();
        let (pinned, missing) = self.cache.pin_present(&local);
        let missing: HashSet<PathBuf> = missing.into_iter().collect();
        let files = local
            .iter()
            .map(|path| path.to_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::Corrupt(format!("a data file name of {set:?} is not UTF-8")))?;
        if missing.is_empty() {
            return Ok((pinned, files));
        }
        let wanted: Vec<(Path, PathBuf)> = remote
            .iter()
            .zip(local)
            .filter(|(_, local)| missing.contains(local))
            .map(|(remote, local)| {
                let in_root = remote
                    .parts()
                    .fold(Path::from(set), |path, part| path.join(part));
                (in_root, local)
            })
            .collect();
        let store = Arc::clone(&self.store);
        let cache = Arc::clone(&self.cache);
        let pinned = self.run(async move {
            let mut pinned = pinned;
            let mut fetches = futures::stream::iter(wanted)
                .map(|(remote, local)| {
                    let store = Arc::clone(&store);
                    async move {
                        let bytes = store.get(&remote).await?.bytes().await?;
                        Ok::<_, Error>((local, bytes))
                    }
                })
                .buffer_unordered(PARALLEL_FETCHES);
            while let Some(fetched) = fetches.next().await {
                let (local, bytes) = fetched?;
                cache.insert(&local, &bytes, &mut pinned)?;
            }
            Ok(pinned)
        })?;
        Ok((pinned, files))
    }

    fn storage_stats(&self, name: &str) -> Result<StorageStats> {
        let table = self.set(name)?.latest.lock().clone();
        let Ok(snapshot) = table.snapshot() else {
            return Ok(StorageStats::default());
        };
        let log_data = snapshot.log_data();
        Ok(StorageStats {
            bytes: log_data.iter().map(|f| f.size().max(0) as u64).sum(),
            files: log_data.num_files() as u64,
        })
    }
}

/// Where a data file of the snapshot is, relative to its table (percent-encoding kept where
/// the log has it, as `deltalake` does).
fn data_file_path(file: &LogicalFileView) -> Path {
    let path = file.path();
    Path::parse(path.as_ref()).unwrap_or_else(|_| Path::from(path.as_ref()))
}

/// The `_seq` of the first row committed at `version`.
fn first_seq(version: u64) -> Result<i64> {
    i64::try_from(version)
        .ok()
        .and_then(|v| v.checked_mul(1 << ROW_BITS))
        .ok_or_else(|| {
            featherstore_core::Error::Internal(format!(
                "table version {version} leaves no room for ingest sequence numbers"
            ))
            .into()
        })
}

/// What FeatherStore wrote into a commit's `commitInfo`.
#[derive(Default)]
struct CommitMetadata {
    /// The commit is in the log.
    exists: bool,
    batch: Option<String>,
    ingested_at: Option<i64>,
}

/// Whether a failed commit lost the race for its version (and nothing else went wrong).
fn is_lost_race(error: &DeltaTableError) -> bool {
    matches!(
        error,
        DeltaTableError::VersionAlreadyExists(_)
            | DeltaTableError::Transaction {
                source: TransactionError::MaxCommitAttempts(_)
                    | TransactionError::VersionAlreadyExists(_)
            }
    )
}

impl OfflineStore for DeltaStore {
    fn load_specs(&self) -> Result<Vec<FeatureSetSpec>> {
        self.inner.load_specs()
    }

    fn create(&self, spec: &FeatureSetSpec) -> Result<()> {
        self.inner.create(spec)
    }

    fn update(&self, old: &FeatureSetSpec, new: &FeatureSetSpec) -> Result<()> {
        self.inner.update(old, new)
    }

    fn spec_versions(&self, current: &FeatureSetSpec) -> Result<Vec<FeatureSetSpec>> {
        let store = Arc::clone(&self.inner.store);
        let name = current.name.clone();
        let mut versions = self
            .inner
            .run(async move { registry::versions(store.as_ref(), &name).await })?;
        versions.retain(|v| v.version <= current.version);
        if versions.is_empty() {
            versions.push(current.clone());
        }
        Ok(versions)
    }

    fn delete(&self, name: &str) -> Result<()> {
        self.inner.delete(name)
    }

    fn load_services(&self) -> Result<Vec<FeatureServiceSpec>> {
        let store = Arc::clone(&self.inner.store);
        self.inner
            .run(async move { registry::load_services(store.as_ref()).await })
    }

    fn save_service(&self, service: &FeatureServiceSpec) -> Result<()> {
        let store = Arc::clone(&self.inner.store);
        let service = service.clone();
        self.inner
            .run(async move { registry::put_service(store.as_ref(), &service).await })
    }

    fn delete_service(&self, name: &str) -> Result<()> {
        let store = Arc::clone(&self.inner.store);
        let name = name.to_string();
        self.inner
            .run(async move { registry::remove_service(store.as_ref(), &name).await })
    }

    fn append_at(&self, spec: &FeatureSetSpec, batches: &[RecordBatch], now: i64) -> Result<()> {
        match batches {
            [] => Ok(()),
            [batch] => self.inner.append(spec, batch, now),
            // One commit per append: its version numbers the rows (`first_seq`).
            [first, ..] => {
                let whole = arrow::compute::concat_batches(&first.schema(), batches)?;
                self.inner.append(spec, &whole, now)
            }
        }
    }

    fn query_relations(&self, specs: &[&FeatureSetSpec], work: RelationWork<'_>) -> Result<()> {
        self.inner.query_relations(specs, work)
    }

    fn pool(&self) -> &ConnectionPool {
        &self.inner.pool
    }

    /// The data files of the set's latest snapshot known here (no request to the store).
    fn storage_stats(&self, spec: &FeatureSetSpec) -> Result<Option<StorageStats>> {
        self.inner.storage_stats(&spec.name).map(Some)
    }

    fn storage_total(&self) -> Result<Option<StorageStats>> {
        let mut total = StorageStats::default();
        for (name, _) in self.inner.all_sets() {
            let usage = self.inner.storage_stats(&name)?;
            total.bytes += usage.bytes;
            total.files += usage.files;
        }
        Ok(Some(total))
    }
}
