//! The domain service behind every API: feature set registry, validated ingest, online reads
//! from the index and history from the offline store. Calls that touch storage block; the
//! server runs them off its async runtime.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;

use arrow::array::RecordBatch;
use featherstore_core::coerce::coerce_batch;
use featherstore_core::evolution::{self, Change};
use featherstore_core::time::{format_timestamp, now_micros};
use featherstore_core::{
    EntityKeys, FeatureServiceSpec, FeatureSetSpec, HistoryTicket, MultiOnlineTicket, OnlineTicket,
    TrainingDataCommand,
};
use parking_lot::{Mutex, RwLock};
use tracing::{debug, debug_span, field, info, warn};

use crate::metrics::{Operation, OperationMetrics, TRAINING_INDEX};
use crate::multi_online::OnlinePlan;
use crate::offline::{OfflineStore, BULK_APPEND_ROWS};
use crate::online::{MemoryStore, OnlineSet, OnlineStore};
use crate::query::sql::INGESTED_AT_OUTPUT;
use crate::query::training::{self, EntityRows, IndexCache, TrainingPlan};
use crate::query::{Purpose, Waiting};
use crate::snapshot::{Loaded, Snapshots, Unusable};
use crate::types::{BatchSink, HistoryQuery, IngestView, SetStats, StorageStats};
use crate::Result;

use featherstore_core::Error as DomainError;

mod profile;

/// Request limits enforced by the domain service (PROTOCOL.md, "Limits").
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_online_entities: usize,
    /// Bytes of stored rows (and their index) that training data requests may hold in memory
    /// at once, over all requests, to join as of event time without DuckDB; a request that
    /// would take more joins in DuckDB instead. 0 always joins in DuckDB.
    pub training_memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_online_entities: 100_000,
            training_memory_bytes: 1 << 30,
        }
    }
}

/// A stored feature set: its spec and online values.
pub struct FeatureSet {
    pub spec: Arc<FeatureSetSpec>,
    pub index: Box<dyn OnlineSet>,
    /// Serialises appends so the offline store and the index see batches in one order;
    /// `true` once this version of the set takes no more batches: it was deleted, or updated
    /// (then the registry holds its successor, and an ingest waiting here retries there).
    ingest: Mutex<bool>,
    /// Rows applied since the last snapshot of the online values (or since start, when the
    /// snapshot on disk is not this index's); from [`STALE`] up until a snapshot matches.
    unsnapshotted: AtomicU64,
    /// Held while a snapshot of the set is written: one at a time.
    snapshotting: Mutex<()>,
    /// When ingest last stored rows that its kept training index lacks, if it has since the
    /// last warm-up ([`FeatureStore::warm_training_indexes`]).
    stored_since_warm: Mutex<Option<Instant>>,
    /// Whether a warm-up has built this version's training index once.
    warmed: AtomicBool,
}

/// Rows since the last snapshot of a set whose snapshot on disk is not of its current index:
/// due at once, and far from overflowing as rows are added.
const STALE: u64 = u64::MAX / 2;

impl FeatureSet {
    fn new(spec: Arc<FeatureSetSpec>, index: Box<dyn OnlineSet>, unsnapshotted: u64) -> Self {
        FeatureSet {
            spec,
            index,
            ingest: Mutex::new(false),
            unsnapshotted: AtomicU64::new(unsnapshotted),
            snapshotting: Mutex::new(()),
            stored_since_warm: Mutex::new(None),
            warmed: AtomicBool::new(false),
        }
    }
}

/// Where and how often the online values are snapshotted (see [`crate::snapshot`]).
#[derive(Debug, Clone)]
pub struct SnapshotOptions {
    pub dir: PathBuf,
    /// A set's values are snapshotted once this many rows (or four times its entities, if
    /// more) were applied since its last snapshot: a start after a crash recomputes at most
    /// that many rows.
    pub rows: u64,
}

pub struct FeatureStore {
    offline: Box<dyn OfflineStore>,
    online: Box<dyn OnlineStore>,
    /// Where large requests spool to disk (training data entity rows).
    spool_dir: PathBuf,
    sets: RwLock<BTreeMap<String, Arc<FeatureSet>>>,
    /// Serialises create and delete (of sets and services).
    registry: Mutex<()>,
    services: RwLock<BTreeMap<String, Arc<FeatureServiceSpec>>>,
    /// Bumped after every change of the registry that can change what a resolved online plan
    /// reads (a set updated or deleted, a service created or deleted): a cached plan of an
    /// older generation is resolved again.
    generation: AtomicU64,
    /// Resolved plans of feature services, by service name, then `full_names` (0 or 1):
    /// looked up by `&str`, so that a read allocates no key.
    plans: RwLock<HashMap<String, [Option<Arc<OnlinePlan>>; 2]>>,
    limits: Limits,
    /// Shared by the training data requests that join in memory and the indexes they keep
    /// for the next request: `limits.training_memory_bytes`.
    training_indexes: IndexCache,
    operations: OperationMetrics,
    /// Set by [`close`](FeatureStore::close): ingest is refused from then on.
    closed: AtomicBool,
    snapshots: Option<(Snapshots, u64)>,
    /// The server time batches are stored as ingested at (UTC µs); see [`Clock`].
    clock: RwLock<Clock>,
    /// The shared registry's version this server last took in (a shared online backend).
    registry_seen: Mutex<Option<u64>>,
}

/// Where ingest times come from: the system clock, or another for tests (to ingest "late"
/// rows without sleeping). The offline store never lets them decrease within a set.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Tracing: the request's span and its fields belong to the API layer, which records them from
/// what these calls take and return. Every call wraps its own storage and index work in child
/// spans at debug level, which cost nothing unless traces are exported or debug logs are on.
/// Counts are recorded as i64, which OpenTelemetry exports as integers.
fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl FeatureStore {
    /// [`open_with`](Self::open_with) the in-memory online store, the embedded default.
    pub fn open(
        offline: Box<dyn OfflineStore>,
        limits: Limits,
        spool_dir: PathBuf,
    ) -> Result<Self> {
        Self::open_with(offline, Box::new(MemoryStore), limits, spool_dir)
    }

    /// Loads every stored spec and rebuilds each set's online values from the offline store;
    /// with a shared online backend (Redis), which holds every server's values already, opens
    /// them instead, and joins the shared registry (see [`sync_registry`](Self::sync_registry)).
    pub fn open_with(
        offline: Box<dyn OfflineStore>,
        online: Box<dyn OnlineStore>,
        limits: Limits,
        spool_dir: PathBuf,
    ) -> Result<Self> {
        Self::open_snapshotted(offline, online, limits, spool_dir, None)
    }

    /// [`open_with`](Self::open_with), loading each set's online values from its snapshot in
    /// `snapshots.dir` topped up with the rows stored after it, where one is usable, and
    /// keeping the snapshots up to date from then on.
    pub fn open_snapshotted(
        offline: Box<dyn OfflineStore>,
        online: Box<dyn OnlineStore>,
        limits: Limits,
        spool_dir: PathBuf,
        snapshots: Option<SnapshotOptions>,
    ) -> Result<Self> {
        let operations = OperationMetrics::default();
        let snapshots = snapshots.map(|options| (Snapshots::new(options.dir), options.rows));
        let mut sets = BTreeMap::new();
        for spec in offline.load_specs()? {
            let started = std::time::Instant::now();
            let _span = tracing::info_span!("index.rebuild", feature_set = %spec.name).entered();
            let _timer = operations.start(Operation::IndexRebuild);
            let spec = Arc::new(spec);
            // A shared backend (Redis) holds every server's values already: nothing to load,
            // and no local snapshot to keep (it would go stale through the other servers).
            let shared = online.shared_registry().is_some();
            let loaded = match &snapshots {
                Some((snapshots, _)) if !shared => snapshots.load(&spec, online.as_ref()),
                _ => Err(Unusable::Missing),
            };
            let (index, after, unsnapshotted) = match loaded {
                Ok(Loaded { index, covered_seq }) => (index, covered_seq, None),
                Err(unusable) => {
                    if !matches!(unusable, Unusable::Missing) {
                        warn!(feature_set = %spec.name, reason = %unusable, "online snapshot not used; rebuilding from the offline store");
                    }
                    (online.open_set(spec.clone())?, None, Some(STALE))
                }
            };
            let from_snapshot = index.entities();
            let mut topped_up = 0u64;
            if !shared {
                offline.latest_after(&spec, after, &mut |batch| {
                    topped_up += batch.num_rows() as u64;
                    index.apply(&index.prepare(&batch)?)
                })?;
            }
            info!(
                feature_set = %spec.name,
                entities = index.entities(),
                from_snapshot,
                topped_up,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "online index loaded"
            );
            let set = FeatureSet::new(spec, index, unsnapshotted.unwrap_or(topped_up));
            // Its stored rows are due a warm-up of their training index, as if just ingested.
            *set.stored_since_warm.lock() = Some(Instant::now());
            sets.insert(set.spec.name.clone(), Arc::new(set));
        }
        if let Some((snapshots, _)) = &snapshots {
            snapshots.remove_others(&sets)?;
        }
        let services = offline
            .load_services()?
            .into_iter()
            .map(|service| (service.name.clone(), Arc::new(service)))
            .collect();
        let store = FeatureStore {
            offline,
            online,
            spool_dir,
            sets: RwLock::new(sets),
            registry: Mutex::new(()),
            services: RwLock::new(services),
            generation: AtomicU64::new(0),
            plans: RwLock::new(HashMap::new()),
            training_indexes: IndexCache::new(limits.training_memory_bytes),
            limits,
            operations,
            closed: AtomicBool::new(false),
            snapshots,
            clock: RwLock::new(Arc::new(now_micros)),
            registry_seen: Mutex::new(None),
        };
        if let Some(shared) = store.online.shared_registry() {
            // Sets this server has that the shared registry lacks (it stored them before it
            // shared a backend) are published; then the shared ones are taken.
            for set in store.list() {
                if let Some(other) = shared.publish(&set.spec, false)? {
                    if !other.same_definition(&set.spec) {
                        tracing::warn!(
                            feature_set = %set.spec.name,
                            "this server's definition differs from the shared registry's; \
                             the shared one is used"
                        );
                    }
                }
            }
            for service in store.list_services() {
                if let Some(other) = shared.publish_service(&service)? {
                    if !other.same_definition(&service) {
                        tracing::warn!(
                            feature_service = %service.name,
                            "this server's definition differs from the shared registry's; \
                             the shared one is used"
                        );
                    }
                }
            }
            store.sync_registry()?;
        }
        Ok(store)
    }

    /// The online backend's name (`memory`, `redis`).
    pub fn online_backend_name(&self) -> &'static str {
        self.online.name()
    }

    /// Whether the online backend can serve now (`/health`). Blocks up to its timeout.
    pub fn check_online(&self) -> Result<()> {
        self.online.check()
    }

    /// Whether online reads wait on a network (a remote backend): the server then runs them
    /// on its blocking pool.
    pub fn online_is_remote(&self) -> bool {
        self.online.shared_registry().is_some()
    }

    /// Takes the changes of the shared registry (a remote online backend's) into this server:
    /// sets created, updated or deleted through another server are created, updated or
    /// deleted here (in this server's offline store and registry). Cheap when nothing changed
    /// (one counter read); the server calls it every quarter second. Blocks.
    pub fn sync_registry(&self) -> Result<()> {
        let Some(shared) = self.online.shared_registry() else {
            return Ok(());
        };
        let mut version = shared.version()?;
        if version.is_some() && *self.registry_seen.lock() == version {
            return Ok(());
        }
        let _registry = self.registry.lock();
        if version.is_none() {
            // No registry: the backend lost it (Redis restarted without its data), or it was
            // never written (a new Redis, and no server has a set yet). A missing set is not a
            // deleted one: this server's sets are published again; their values come back
            // with `featherstore online rebuild`.
            if self.registry_seen.lock().is_some() {
                tracing::warn!(
                    "the shared registry is gone; publishing this server's sets and services again"
                );
            }
            for set in self.list() {
                shared.publish(&set.spec, false)?;
            }
            for service in self.list_services() {
                shared.publish_service(&service)?;
            }
            version = shared.version()?;
        }
        let specs = shared.specs()?;
        for spec in &specs {
            match self.get(&spec.name) {
                Err(_) => self.adopt(spec.clone())?,
                Ok(set) if set.spec.version < spec.version => {
                    self.take_version(&set, Arc::new(spec.clone()))?
                }
                Ok(_) => {}
            }
        }
        for set in self.list() {
            if !specs.iter().any(|spec| spec.name == set.spec.name) {
                info!(feature_set = %set.spec.name, "deleted through another server");
                let mut deleted = set.ingest.lock();
                self.offline.delete(&set.spec.name)?;
                *deleted = true;
                self.sets.write().remove(&set.spec.name);
                self.training_indexes.forget(&set.spec.name);
            }
        }
        self.sync_services(shared.services()?)?;
        // Resolved service plans name the sets and features seen before.
        self.registry_changed();
        *self.registry_seen.lock() = version;
        Ok(())
    }

    /// Makes this server's feature services those of the shared registry: created, replaced
    /// (a name deleted and created again elsewhere) or deleted through another server. The
    /// caller holds the registry lock.
    fn sync_services(&self, shared: Vec<FeatureServiceSpec>) -> Result<()> {
        for service in &shared {
            let known = self.services.read().get(&service.name).cloned();
            if known.is_some_and(|known| known.same_definition(service)) {
                continue;
            }
            info!(feature_service = %service.name, "created through another server");
            self.offline.save_service(service)?;
            self.services
                .write()
                .insert(service.name.clone(), Arc::new(service.clone()));
        }
        for service in self.list_services() {
            if !shared.iter().any(|other| other.name == service.name) {
                info!(feature_service = %service.name, "deleted through another server");
                self.offline.delete_service(&service.name)?;
                self.services.write().remove(&service.name);
            }
        }
        Ok(())
    }

    /// Writes a set's latest values from this server's offline store into its online values
    /// again (after Redis lost its data, say), calling `progress` with the rows applied so
    /// far. The set's ingest waits meanwhile; values newer than the offline store's (ingested
    /// through another server) are kept, as every apply keeps the newest. Returns the rows
    /// applied. Blocks.
    pub fn rebuild_online(&self, name: &str, progress: &mut dyn FnMut(usize)) -> Result<usize> {
        let set = self.get(name)?;
        let _ingest = set.ingest.lock();
        let _span = tracing::info_span!("index.rebuild", feature_set = %set.spec.name).entered();
        let _timer = self.operations.start(Operation::IndexRebuild);
        let mut rows = 0;
        self.offline.latest(&set.spec, &mut |batch| {
            set.index.apply(&set.index.prepare(&batch)?)?;
            rows += batch.num_rows();
            progress(rows);
            Ok(())
        })?;
        Ok(rows)
    }

    /// Makes `spec` with its online values the set served under its name.
    fn register(&self, spec: Arc<FeatureSetSpec>, index: Box<dyn OnlineSet>) {
        self.sets.write().insert(
            spec.name.clone(),
            // Due a snapshot at once: one on disk under this name is of another spec.
            Arc::new(FeatureSet::new(spec, index, STALE)),
        );
    }

    /// Stores a set created through another server (its spec from the shared registry).
    fn adopt(&self, spec: FeatureSetSpec) -> Result<()> {
        info!(feature_set = %spec.name, "created through another server");
        let spec = Arc::new(spec);
        let index = self.online.open_set(spec.clone())?;
        self.offline.create(&spec)?;
        self.register(spec, index);
        Ok(())
    }

    /// Stores a version of `set` made through another server; its online values are shared.
    fn take_version(&self, set: &FeatureSet, spec: Arc<FeatureSetSpec>) -> Result<()> {
        info!(feature_set = %spec.name, version = spec.version.unwrap_or(1), "updated through another server");
        let mut retired = set.ingest.lock();
        let index = self.online.open_set(spec.clone())?;
        self.offline.update(&set.spec, &spec)?;
        *retired = true;
        self.training_indexes.forget(&spec.name);
        self.register(spec, index);
        Ok(())
    }

    /// Replaces the clock ingest times are read from (tests: simulated late arrivals, clocks
    /// that go back). Stored ingest times still never decrease within a set.
    pub fn set_clock(&self, clock: Clock) {
        *self.clock.write() = clock;
    }

    /// Durations of the storage and index work done so far, per operation.
    pub fn operations(&self) -> &OperationMetrics {
        &self.operations
    }

    /// What a set takes on disk, when the backend can tell (see [`OfflineStore::storage_stats`]).
    pub fn storage_stats(&self, set: &FeatureSet) -> Result<Option<StorageStats>> {
        self.offline.storage_stats(&set.spec)
    }

    /// What the whole offline store takes on disk, when the backend can tell.
    pub fn storage_total(&self) -> Result<Option<StorageStats>> {
        self.offline.storage_total()
    }

    pub fn get(&self, name: &str) -> Result<Arc<FeatureSet>> {
        self.sets
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| DomainError::no_such_set(name).into())
    }

    pub fn list(&self) -> Vec<Arc<FeatureSet>> {
        self.sets.read().values().cloned().collect()
    }

    /// Stores a new set. Returns the stored spec and whether it was created: the same
    /// definition again is a no-op, a different one under an existing name is refused.
    pub fn create(&self, mut spec: FeatureSetSpec) -> Result<(Arc<FeatureSetSpec>, bool)> {
        spec.validate()?;
        let _registry = self.registry.lock();
        if let Ok(existing) = self.get(&spec.name) {
            if existing.spec.same_definition(&spec) {
                return Ok((existing.spec.clone(), false));
            }
            return Err(DomainError::AlreadyExists(format!(
                "feature set {:?} already exists with a different definition (version {})",
                spec.name,
                existing.spec.version.unwrap_or(1)
            ))
            .into());
        }
        spec.version = Some(1);
        spec.created_at = Some(format_timestamp(now_micros()));
        if let Some(shared) = self.online.shared_registry() {
            // Created through another server since the last sync: the same definition is
            // that set, a different one is refused as it would be here.
            if let Some(other) = shared.publish(&spec, false)? {
                if !other.same_definition(&spec) {
                    return Err(DomainError::AlreadyExists(format!(
                        "feature set {:?} already exists with a different definition (version {})",
                        spec.name,
                        other.version.unwrap_or(1)
                    ))
                    .into());
                }
                spec = other;
            }
        }
        let spec = Arc::new(spec);
        let index = self.online.open_set(spec.clone())?;
        {
            let _span = debug_span!("storage.create_set").entered();
            let _timer = self.operations.start(Operation::CreateSet);
            self.offline.create(&spec)?;
        }
        let set = Arc::new(FeatureSet::new(spec.clone(), index, 0));
        self.sets.write().insert(spec.name.clone(), set);
        Ok((spec, true))
    }

    /// Changes a stored set in place as the evolution rules allow
    /// ([`evolution::changes`]): returns the stored spec and what changed. The same
    /// definition again changes nothing and stores no version; a refused change is
    /// INVALID_ARGUMENT. Blocks on storage.
    ///
    /// The new version's online index is built (from the stored latest values, with the added
    /// features null) while the set's ingest waits, then the offline store commits the
    /// version, then the registry publishes it: readers see the old version or the new one
    /// whole, and a batch that waited is stored under the new one.
    pub fn update(&self, wanted: FeatureSetSpec) -> Result<(Arc<FeatureSetSpec>, Vec<Change>)> {
        let _registry = self.registry.lock();
        let set = self.get(&wanted.name)?;
        let changes = evolution::changes(&set.spec, &wanted)?;
        if changes.is_empty() {
            return Ok((set.spec.clone(), changes));
        }
        let mut spec = wanted;
        spec.version = Some(set.spec.version.unwrap_or(1) + 1);
        spec.created_at = Some(format_timestamp(now_micros()));
        let spec = Arc::new(spec);
        let mut retired = set.ingest.lock();
        let _span = debug_span!("storage.update_set").entered();
        let _timer = self.operations.start(Operation::UpdateSet);
        let index = self.online.open_set(spec.clone())?;
        match self.online.shared_registry() {
            // The shared values are read under the new version as they are (added features
            // null): nothing to rebuild.
            Some(shared) => {
                if let Some(other) = shared.publish(&spec, true)? {
                    return Err(DomainError::AlreadyExists(format!(
                        "feature set {:?} was changed through another server meanwhile (its version {} is as new); try again",
                        spec.name,
                        other.version.unwrap_or(1)
                    ))
                    .into());
                }
            }
            None => self.offline.latest(&set.spec, &mut |batch| {
                index.apply(&index.prepare(&coerce_batch(&spec, &batch)?)?)
            })?,
        }
        self.offline.update(&set.spec, &spec)?;
        *retired = true;
        self.training_indexes.forget(&spec.name);
        // Its snapshot on disk is of the old version: replaced at the next snapshot.
        self.register(spec.clone(), index);
        self.registry_changed();
        // The old index is not emptied: a reader may still hold the old version, and its
        // values go with the last reference to it.
        Ok((spec, changes))
    }

    /// One stored version of a set's spec.
    pub fn get_version(&self, name: &str, version: u64) -> Result<Arc<FeatureSetSpec>> {
        let current = self.get(name)?;
        if current.spec.version == Some(version) {
            return Ok(current.spec.clone());
        }
        self.versions(name)?
            .into_iter()
            .find(|spec| spec.version == Some(version))
            .map(Arc::new)
            .ok_or_else(|| {
                DomainError::NotFound(format!(
                    "feature set {name:?} has no version {version} (its latest is {})",
                    current.spec.version.unwrap_or(1)
                ))
                .into()
            })
    }

    /// Every stored version of a set's spec, oldest first. Blocks on storage.
    pub fn versions(&self, name: &str) -> Result<Vec<FeatureSetSpec>> {
        let set = self.get(name)?;
        let _span = debug_span!("storage.versions").entered();
        self.offline.spec_versions(&set.spec)
    }

    /// Deletes a set and all its data; refused (FAILED_PRECONDITION) while a feature service
    /// reads it.
    pub fn delete(&self, name: &str) -> Result<()> {
        let _registry = self.registry.lock();
        let set = self.get(name)?;
        let users: Vec<String> = self
            .services
            .read()
            .values()
            .filter(|service| {
                service
                    .set_names()
                    .is_ok_and(|sets| sets.iter().any(|s| s == name))
            })
            .map(|service| format!("{:?}", service.name))
            .collect();
        if !users.is_empty() {
            return Err(DomainError::FailedPrecondition(format!(
                "feature set {name:?} is used by feature service {}; delete or change {} first",
                users.join(", "),
                if users.len() == 1 { "it" } else { "them" }
            ))
            .into());
        }
        let mut deleted = set.ingest.lock();
        {
            let _span = debug_span!("storage.delete_set").entered();
            let _timer = self.operations.start(Operation::DeleteSet);
            self.offline.delete(name)?;
        }
        *deleted = true;
        self.sets.write().remove(name);
        self.training_indexes.forget(name);
        self.registry_changed();
        if let Some(shared) = self.online.shared_registry() {
            shared.unpublish(name)?;
        }
        // Before taking `snapshotting`, which a snapshot holds while it takes `ingest`.
        drop(deleted);
        if let Some((snapshots, _)) = &self.snapshots {
            // A set created later under this name starts from no snapshot (one left by a
            // crash here is of another spec, and not used).
            let _writing = set.snapshotting.lock();
            snapshots.remove(name);
        }
        // After the offline store: a set whose history is gone must not be served online, and
        // a set being deleted stays readable until its deletion is durable.
        set.index.remove()
    }

    /// Validates and coerces one batch, stores it durably, then publishes it to the online
    /// index. Returns the rows stored. Blocks on storage.
    ///
    /// All or nothing: every check (the batch's, and the online store's own in
    /// [`OnlineSet::prepare`]) runs before the durable append, and the index applies the
    /// batch before the offline store commits it ([`OfflineStore::append_publishing`]): an
    /// apply that fails (a remote online store, unreachable) takes the batch back, so a batch
    /// reported as failed was not stored and one stored is in the index.
    pub fn ingest(&self, name: &str, batch: &RecordBatch) -> Result<usize> {
        self.ingest_together(name, std::slice::from_ref(batch))
    }

    /// [`ingest`](Self::ingest) of several batches as one: all of them or none.
    fn ingest_together(&self, name: &str, batches: &[RecordBatch]) -> Result<usize> {
        loop {
            let set = self.get(name)?;
            if let Some(rows) = self.ingest_into(&set, batches)? {
                return Ok(rows);
            }
            // `set` was updated while the batches waited for it: checked again under the new
            // version (a batch without the added features gets them as nulls).
        }
    }

    /// Stores consecutive batches of one set as [`ingest`](Self::ingest) would, one after the
    /// other: returns how many were stored, and the error that stopped the run at the next
    /// one (those after it were not tried).
    ///
    /// A run of at least [`BULK_APPEND_ROWS`] rows is stored in one append: DuckDB then takes
    /// the transaction's row groups into the table as they are, where a smaller append is
    /// copied into the table a second time at commit, and the Parquet backend fsyncs its log
    /// once. If that fails (a batch refused, or storage), nothing of it was stored and the
    /// batches are stored one by one, so that the caller learns which one fails and why, and
    /// the batches before it are kept.
    pub fn ingest_run(&self, name: &str, batches: &[RecordBatch]) -> (usize, Result<()>) {
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        if batches.len() > 1 && rows >= BULK_APPEND_ROWS {
            match self.ingest_together(name, batches) {
                Ok(_) => return (batches.len(), Ok(())),
                Err(e) => {
                    debug!(feature_set = name, error = %e, "a run of batches was refused whole; storing them one by one")
                }
            }
        }
        for (stored, batch) in batches.iter().enumerate() {
            if let Err(e) = self.ingest(name, batch) {
                return (stored, Err(e));
            }
        }
        (batches.len(), Ok(()))
    }

    /// [`ingest_together`](Self::ingest_together) into one version of a set; `None` when
    /// that version was retired (updated or deleted) before the batches got their turn.
    fn ingest_into(&self, set: &FeatureSet, batches: &[RecordBatch]) -> Result<Option<usize>> {
        let batches = batches
            .iter()
            .map(|batch| coerce_batch(&set.spec, batch))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let indexed = batches
            .iter()
            .map(|batch| set.index.prepare(batch))
            .collect::<Result<Vec<_>>>()?;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let retired = set.ingest.lock();
        if *retired {
            return Ok(None);
        }
        // Checked under the set's ingest lock, which `close` takes after setting it: no batch
        // is stored once `close` returns.
        if self.closed.load(Ordering::Acquire) {
            return Err(DomainError::Unavailable(
                "the server is shutting down; the batch was not stored".into(),
            )
            .into());
        }
        let apply = || {
            let _span = debug_span!("index.apply", rows = count(rows)).entered();
            let _timer = self.operations.start(Operation::IndexApply);
            indexed.iter().try_for_each(|batch| set.index.apply(batch))
        };
        let now = (self.clock.read())();
        let span = debug_span!("storage.append", rows = count(rows));
        let mut timer = self.operations.start(Operation::Append);
        if self.online_is_remote() {
            // A remote index can fail (unreachable): it gets the batch inside the append,
            // before the offline store commits it, and its failure takes the batch back, so
            // a batch reported as failed is in neither (docs/architecture.md, "Ingest with
            // Redis").
            span.in_scope(|| {
                self.offline
                    .append_publishing(&set.spec, &batches, now, &mut || {
                        let applying = std::time::Instant::now();
                        let applied = apply();
                        timer.exclude(applying.elapsed());
                        applied
                    })
            })?;
            drop(timer);
        } else {
            // The in-memory index cannot fail: it gets the batch once it is committed, so
            // it never shows a value that a failed commit left out of the offline store.
            span.in_scope(|| self.offline.append_at(&set.spec, &batches, now))?;
            drop(timer);
            apply()?;
        }
        drop(retired);
        *set.stored_since_warm.lock() = Some(Instant::now());
        let unsnapshotted = set.unsnapshotted.fetch_add(rows as u64, Ordering::Relaxed);
        if let Some((_, every)) = &self.snapshots {
            let due = (*every).max(4 * set.index.entities() as u64);
            if unsnapshotted.saturating_add(rows as u64) >= due {
                // The batch is stored and applied: a snapshot that fails is only logged, and
                // the next start recomputes more rows.
                if let Err(e) = self.snapshot(set) {
                    warn!(feature_set = %set.spec.name, error = %e, "online snapshot failed");
                }
            }
        }
        Ok(Some(rows))
    }

    /// Writes a snapshot of a set's online values, unless one is being written. Blocks.
    fn snapshot(&self, set: &FeatureSet) -> Result<()> {
        let Some((snapshots, _)) = &self.snapshots else {
            return Ok(());
        };
        let Some(_writing) = set.snapshotting.try_lock() else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        let _span = debug_span!("index.snapshot").entered();
        // Every row up to `covered` is applied once the appends that stored them let go of
        // the set (each holds it from before its rows are visible until they are applied):
        // the export, after that, holds them all.
        let covered = self.offline.max_seq(&set.spec)?;
        let before = set.unsnapshotted.load(Ordering::Relaxed);
        if *set.ingest.lock() {
            return Ok(());
        }
        if snapshots.write(set.index.as_ref(), covered)? {
            set.unsnapshotted.fetch_sub(before, Ordering::Relaxed);
            debug!(
                feature_set = %set.spec.name,
                entities = set.index.entities(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "online snapshot written"
            );
        }
        Ok(())
    }

    /// Online values for an online ticket, from memory only.
    pub fn online(&self, ticket: &OnlineTicket) -> Result<RecordBatch> {
        self.check_entities(ticket.entities.len(), "online")?;
        let set = self.get(&ticket.feature_set)?;
        let features = set.spec.resolve_features(ticket.features.as_deref())?;
        let keys = EntityKeys::from_json(set.spec.entity.entity_type, &ticket.entities)?;
        // No child span: the request's span is this lookup (plus decoding and encoding), and a
        // second exported span per read would double the cost of tracing the hottest path.
        // Its duration is in the `index_lookup` histogram.
        let _timer = self.operations.start(Operation::IndexLookup);
        set.index.lookup(&keys, &features, now_micros())
    }

    /// Resolves the features of an online read across sets: a feature service's (its plan is
    /// cached until the registry changes) or the request's own references.
    pub fn online_plan(&self, ticket: &MultiOnlineTicket) -> Result<Arc<OnlinePlan>> {
        let generation = self.generation.load(Ordering::Acquire);
        let Some(name) = &ticket.feature_service else {
            let references = ticket.features.as_deref().unwrap_or_default();
            let plan = OnlinePlan::resolve(references, ticket.full_names, generation, |set| {
                self.get(set)
            })?;
            return Ok(Arc::new(plan));
        };
        let variant = usize::from(ticket.full_names);
        if let Some(Some(plan)) = self.plans.read().get(name.as_str()).map(|p| &p[variant]) {
            if plan.generation == generation {
                return Ok(plan.clone());
            }
        }
        let service = self.get_service(name)?;
        let plan = Arc::new(OnlinePlan::resolve(
            &service.features,
            ticket.full_names,
            generation,
            |set| self.get(set),
        )?);
        // A plan resolved while the registry changed carries the older generation: the next
        // read resolves it again.
        self.plans.write().entry(name.clone()).or_default()[variant] = Some(plan.clone());
        Ok(plan)
    }

    /// Online values of a read across sets, planned by [`online_plan`](Self::online_plan):
    /// one row per entity row, in request order.
    pub fn online_multi(
        &self,
        plan: &OnlinePlan,
        ticket: &MultiOnlineTicket,
    ) -> Result<RecordBatch> {
        self.check_entities(ticket.rows()?, "online")?;
        let keys = plan.keys(&ticket.entities)?;
        let _timer = self.operations.start(Operation::IndexLookup);
        plan.read(&keys, ticket.with_timestamps, now_micros())
    }

    /// Something a resolved online plan depends on changed.
    fn registry_changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.plans.write().clear();
    }

    /// Stores a feature service after checking that every set and feature it references
    /// exists. Returns the stored service and whether it was created: the same definition
    /// again is a no-op, a different one under an existing name is ALREADY_EXISTS.
    pub fn create_service(
        &self,
        mut service: FeatureServiceSpec,
    ) -> Result<(Arc<FeatureServiceSpec>, bool)> {
        service.validate()?;
        let _registry = self.registry.lock();
        if let Some(existing) = self.services.read().get(&service.name) {
            if existing.same_definition(&service) {
                return Ok((existing.clone(), false));
            }
            return Err(DomainError::AlreadyExists(format!(
                "feature service {:?} already exists with a different definition",
                service.name
            ))
            .into());
        }
        // Full names: a service whose short names clash is still readable with them.
        OnlinePlan::resolve(&service.features, true, 0, |set| self.get(set))?;
        service.created_at = Some(format_timestamp(now_micros()));
        if let Some(shared) = self.online.shared_registry() {
            // Created through another server since the last sync: the same definition is
            // that service, a different one is refused as it would be here.
            if let Some(other) = shared.publish_service(&service)? {
                if !other.same_definition(&service) {
                    return Err(DomainError::AlreadyExists(format!(
                        "feature service {:?} already exists with a different definition",
                        service.name
                    ))
                    .into());
                }
                service = other;
            }
        }
        let service = Arc::new(service);
        {
            let _span = debug_span!("storage.save_service").entered();
            self.offline.save_service(&service)?;
        }
        self.services
            .write()
            .insert(service.name.clone(), service.clone());
        self.registry_changed();
        Ok((service, true))
    }

    pub fn get_service(&self, name: &str) -> Result<Arc<FeatureServiceSpec>> {
        self.services
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| DomainError::no_such_service(name).into())
    }

    pub fn list_services(&self) -> Vec<Arc<FeatureServiceSpec>> {
        self.services.read().values().cloned().collect()
    }

    pub fn delete_service(&self, name: &str) -> Result<()> {
        let _registry = self.registry.lock();
        self.get_service(name)?;
        {
            let _span = debug_span!("storage.delete_service").entered();
            self.offline.delete_service(name)?;
        }
        self.services.write().remove(name);
        self.registry_changed();
        if let Some(shared) = self.online.shared_registry() {
            shared.unpublish_service(name)?;
        }
        Ok(())
    }

    /// A training data command with its `feature_service` replaced by the service's
    /// references (a command naming features is returned as it is).
    pub fn expand_training(&self, command: TrainingDataCommand) -> Result<TrainingDataCommand> {
        match &command.feature_service {
            None => Ok(command),
            Some(name) => {
                let service = self.get_service(name)?;
                Ok(command.with_service_features(service.features.clone()))
            }
        }
    }

    /// Refuses a request naming more entities than `max_online_entities` (a history ticket's
    /// list becomes SQL text: it must be bounded too).
    fn check_entities(&self, requested: usize, kind: &str) -> Result<()> {
        if requested > self.limits.max_online_entities {
            return Err(DomainError::TooLarge(format!(
                "{requested} entities requested; at most {} are allowed in one {kind} request",
                self.limits.max_online_entities
            ))
            .into());
        }
        Ok(())
    }

    /// Resolves a history ticket (set, entities, time range, features, ingest times) without
    /// running it, so that bad requests fail before a stream starts.
    pub fn plan_history(
        &self,
        ticket: &HistoryTicket,
    ) -> Result<(Arc<FeatureSet>, HistoryQuery, IngestView)> {
        if let Some(entities) = &ticket.entities {
            self.check_entities(entities.len(), "history")?;
        }
        let set = self.get(&ticket.feature_set)?;
        let (start, end) = ticket.time_range()?;
        let entities = ticket
            .entities
            .as_deref()
            .map(|e| EntityKeys::from_json(set.spec.entity.entity_type, e))
            .transpose()?;
        let features = set.spec.resolve_features(ticket.features.as_deref())?;
        let view = IngestView {
            with_ingest_time: ticket.with_ingest_time,
            ingested_before: ticket.ingested_before()?,
        };
        if view.with_ingest_time {
            let clash = std::iter::once(&set.spec.entity.name)
                .chain(features.iter().map(|&i| &set.spec.features[i].name))
                .chain(std::iter::once(&set.spec.timestamp))
                .any(|name| name == INGESTED_AT_OUTPUT);
            if clash {
                return Err(DomainError::invalid(format!(
                    "feature set {:?} has a column named {INGESTED_AT_OUTPUT:?}, which \"with_ingest_time\" would repeat; leave that column out of \"features\"",
                    set.spec.name
                ))
                .into());
            }
        }
        let query = HistoryQuery {
            entities,
            start,
            end,
            features,
        };
        Ok((set, query, view))
    }

    /// Streams the rows of a planned history query into `sink`. Blocks on storage.
    pub fn scan_history(
        &self,
        set: &FeatureSet,
        query: &HistoryQuery,
        view: &IngestView,
        sink: BatchSink<'_>,
    ) -> Result<()> {
        let span = debug_span!("storage.scan", feature_set = %set.spec.name, rows = field::Empty);
        let _entered = span.enter();
        let mut timer = self.operations.start(Operation::Scan);
        let mut rows = 0usize;
        let result = self
            .offline
            .scan_with(&set.spec, query, view, &mut |batch| {
                rows += batch.num_rows();
                let handing = std::time::Instant::now();
                let sent = sink(batch);
                timer.exclude(handing.elapsed());
                sent
            });
        span.record("rows", count(rows));
        result
    }

    /// Checks a training data command against the stored sets and the entity rows' schema.
    /// A command naming a feature service reads the service's features.
    pub fn plan_training(
        &self,
        command: &TrainingDataCommand,
        input_schema: SchemaRef,
    ) -> Result<TrainingPlan> {
        let expanded;
        let command = if command.feature_service.is_some() {
            expanded = self.expand_training(command.clone())?;
            &expanded
        } else {
            command
        };
        let sets = command
            .set_names()?
            .iter()
            .map(|name| self.get(name).map(|set| set.spec.clone()))
            .collect::<Result<Vec<_>>>()?;
        TrainingPlan::new(command, sets, input_schema)
    }

    /// Streams the point-in-time join of `entity_rows` into `sink`, in input order. Blocks.
    pub fn training_data(
        &self,
        plan: &TrainingPlan,
        entity_rows: EntityRows<'_>,
        sink: BatchSink<'_>,
    ) -> Result<()> {
        let span = debug_span!(
            "storage.training",
            entities = field::Empty,
            rows = field::Empty
        );
        let _entered = span.enter();
        // Time waiting for entity rows (the network) or for the client is not the join's.
        let timer = std::cell::RefCell::new(self.operations.start(Operation::Training));
        let (mut entities, mut rows) = (0usize, 0usize);
        let mut counted_rows = std::iter::from_fn(|| {
            let waiting = std::time::Instant::now();
            let next = entity_rows.next();
            timer.borrow_mut().exclude(waiting.elapsed());
            if let Some(Ok(batch)) = &next {
                entities += batch.num_rows();
            }
            next
        });
        let mut counted_sink = |batch: RecordBatch| {
            rows += batch.num_rows();
            let handing = std::time::Instant::now();
            let sent = sink(batch);
            timer.borrow_mut().exclude(handing.elapsed());
            sent
        };
        // No connection is held while waiting for the client: the stored rows load beside the
        // spool at their own pace, and the join starts once every entity row is in.
        let result = training::spool_and_join(
            self.offline.as_ref(),
            plan,
            &mut counted_rows,
            &self.spool_dir,
            &self.training_indexes,
            &mut counted_sink,
        );
        for spec in &plan.sets {
            self.forget_retired_index(spec);
        }
        span.record("entities", count(entities));
        span.record("rows", count(rows));
        result
    }

    /// A set updated or deleted while a request or warm-up read it may have been forgotten
    /// before the index of it was kept: that index, of a version no request can ask for
    /// again, goes now.
    fn forget_retired_index(&self, spec: &Arc<FeatureSetSpec>) {
        if self.get(&spec.name).map_or(true, |set| set.spec != *spec) {
            self.training_indexes.forget_version(spec);
        }
    }

    /// Builds, or brings up to date, ahead of the next training data request, the kept
    /// training index of each set that ingest stored rows into and then left alone for
    /// `quiet` (so that a burst of batches is read once, after it), as a request would have
    /// kept it; returns what it did for each set it looked at. A set's first warm-up (after its
    /// first ingest, or its stored rows at start) builds its index; later ones only keep
    /// up to date an index that is still kept, so a set nobody trains on costs one build,
    /// whose memory is given back once left unused for the kept indexes' idle limit.
    /// Warm-ups take only budget that is free and drop no kept index for room; a warmed
    /// index gives its room to a request like any other. A request over a set being warmed
    /// waits for the warm-up rather than read the set a second time beside it.
    pub fn warm_training_indexes(&self, quiet: Duration) -> Vec<(String, training::Warmed)> {
        self.training_indexes.drop_idle_indexes();
        let mut warmed = Vec::new();
        for set in self.list() {
            {
                let mut stored = set.stored_since_warm.lock();
                match *stored {
                    Some(at) if at.elapsed() >= quiet => *stored = None,
                    _ => continue,
                }
            }
            if set.warmed.swap(true, Ordering::AcqRel) && !self.training_indexes.holds(&set.spec) {
                continue;
            }
            let spec = &set.spec;
            let span = tracing::info_span!(
                "training_index.warm",
                feature_set = %spec.name,
                rows = field::Empty
            );
            let _entered = span.enter();
            let timer = self.operations.start(Operation::TrainingIndexWarm);
            let mut outcome = training::Warmed::Current;
            let result = self
                .offline
                .query_relations(&[spec.as_ref()], &mut |conn, relations| {
                    let relation = relations.first().ok_or_else(|| {
                        crate::Error::Corrupt("a warmed set has no relation".into())
                    })?;
                    outcome = training::warm(conn, relation, spec, &self.training_indexes)?;
                    Ok(())
                });
            drop(timer);
            self.forget_retired_index(spec);
            match result {
                Ok(()) => {
                    match outcome {
                        training::Warmed::Built(rows) | training::Warmed::Updated(rows) => {
                            span.record("rows", count(rows));
                            TRAINING_INDEX.record_warmed();
                        }
                        training::Warmed::NoRoom => debug!(
                            feature_set = %spec.name,
                            "training index not warmed: its rows do not fit the free training memory"
                        ),
                        training::Warmed::Current => {}
                    }
                    warmed.push((spec.name.clone(), outcome));
                }
                // No client hears of a warm-up's failure: it is logged here, once, and the next
                // request reads what it needs itself.
                Err(e) => {
                    warn!(feature_set = %spec.name, error = %e, "warming a training index failed")
                }
            }
        }
        warmed
    }

    /// Memory held by the indexes of stored rows kept for the next training request.
    pub fn training_index_bytes(&self) -> usize {
        self.training_indexes.kept_bytes()
    }

    /// The offline store, for the engine of ad-hoc queries (`query::adhoc`), which reads it
    /// as every other read does.
    pub(crate) fn offline(&self) -> &dyn OfflineStore {
        self.offline.as_ref()
    }

    /// The storage call that has waited longest for a connection, if any waits now.
    pub fn storage_waiting(&self) -> Option<Waiting> {
        self.offline.pool().longest_wait()
    }

    /// Whether a connection for `purpose` can be had within `timeout`. Blocks.
    pub fn probe_storage(&self, purpose: Purpose, timeout: Duration) -> bool {
        self.offline.pool().probe(purpose, timeout)
    }

    /// For a planned shutdown: refuses further ingest, waits for the batches being stored,
    /// then makes every stored row durable in its final form (Parquet: the logs are written
    /// into Parquet files, so the next start replays nothing), and snapshots the online values
    /// of every set changed since its last snapshot (so the next start recomputes nothing).
    /// Blocks.
    pub fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        for set in self.list() {
            drop(set.ingest.lock());
        }
        {
            let _span = tracing::info_span!("storage.flush").entered();
            self.offline.flush()?;
        }
        for set in self.list() {
            if set.unsnapshotted.load(Ordering::Relaxed) > 0 {
                // Everything is stored: without the snapshot the next start is only slower.
                if let Err(e) = self.snapshot(&set) {
                    warn!(feature_set = %set.spec.name, error = %e, "online snapshot failed");
                }
            }
        }
        Ok(())
    }

    pub fn stats(&self, name: &str) -> Result<SetStats> {
        let set = self.get(name)?;
        let _span = debug_span!("storage.stats").entered();
        let _timer = self.operations.start(Operation::Stats);
        self.offline.stats(&set.spec)
    }
}
