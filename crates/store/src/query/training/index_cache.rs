//! Indexes of stored rows kept between training data requests.
//!
//! Training data is asked for again and again over the same sets (epochs, hyperparameter
//! searches, a notebook run twice), and reading and indexing a set's stored rows is most of
//! an in-memory join's time. So a request keeps what it indexed, within the training memory
//! budget, and the next request over the set reads only the rows stored since: `_seq`
//! grows with every append and the rows a read sees are a prefix of it, so the rows past the
//! index's greatest `_seq` are exactly the new ones. Stored rows are never changed or
//! removed one by one; a set's index is dropped when the set is updated or deleted (and is
//! not used for another version of the set).
//!
//! An index is dropped when a request needs its budget, and once left unused for
//! [`IDLE_LIMIT`]. Past [`MAX_RUNS`] runs a set is read whole again, into one run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use featherstore_core::FeatureSetSpec;
use hashbrown::HashMap;
use parking_lot::{Condvar, Mutex};

use super::in_memory::{MemoryBudget, Runs};
use crate::metrics::TRAINING_INDEX;

/// Runs past which a set is read whole again: each run is searched for every entity row.
const MAX_RUNS: usize = 8;

/// An index unused this long is dropped (at the next training request or warm-up), giving
/// its budget back.
const IDLE_LIMIT: Duration = Duration::from_secs(600);

struct Kept {
    spec: Arc<FeatureSetSpec>,
    runs: Runs,
    used: Instant,
}

/// The longest a request waits for a warm-up of a set it reads ([`IndexCache::wait_for_warm_ups`]):
/// a warm-up reads at most the budget's worth of rows, seconds at most, so this is reached only
/// if one is stuck; the request then reads the set itself.
const WARM_UP_WAIT: Duration = Duration::from_secs(30);

/// The kept indexes, by set name, and the budget they share with the requests.
pub(crate) struct IndexCache {
    budget: Arc<MemoryBudget>,
    sets: Mutex<HashMap<String, Kept>>,
    /// Names of the sets a warm-up is reading now, and the signal that one ended.
    warming: Mutex<Vec<String>>,
    warm_up_ended: Condvar,
}

/// A warm-up in progress, from [`IndexCache::warming`]; ended when dropped.
pub(super) struct WarmingUp<'a> {
    cache: &'a IndexCache,
    name: String,
}

impl Drop for WarmingUp<'_> {
    fn drop(&mut self) {
        let mut warming = self.cache.warming.lock();
        if let Some(at) = warming.iter().position(|name| *name == self.name) {
            warming.swap_remove(at);
        }
        self.cache.warm_up_ended.notify_all();
    }
}

impl IndexCache {
    pub(crate) fn new(budget_bytes: usize) -> Self {
        IndexCache {
            budget: MemoryBudget::new(budget_bytes),
            sets: Mutex::new(HashMap::new()),
            warming: Mutex::new(Vec::new()),
            warm_up_ended: Condvar::new(),
        }
    }

    /// Marks set `name` as being warmed up until the guard is dropped.
    pub(super) fn warming(&self, name: &str) -> WarmingUp<'_> {
        self.warming.lock().push(name.to_string());
        WarmingUp {
            cache: self,
            name: name.to_string(),
        }
    }

    /// Waits until no warm-up reads any of `specs` (at most [`WARM_UP_WAIT`]): a request that
    /// came while one ran then reads the index it kept, rather than reading the set a second
    /// time beside it.
    pub(super) fn wait_for_warm_ups(&self, specs: &[Arc<FeatureSetSpec>]) {
        let mut warming = self.warming.lock();
        let waited = self.warm_up_ended.wait_while_for(
            &mut warming,
            |warming| specs.iter().any(|spec| warming.contains(&spec.name)),
            WARM_UP_WAIT,
        );
        if waited.timed_out() {
            tracing::warn!(
                "a training index warm-up is still running; the request reads the sets itself"
            );
        }
    }

    pub(super) fn budget(&self) -> &Arc<MemoryBudget> {
        &self.budget
    }

    /// The index kept for this version of the set, if it holds every feature of `used` and
    /// has room for one more run. Indexes left idle too long are dropped first.
    pub(super) fn take(&self, spec: &Arc<FeatureSetSpec>, used: &[usize]) -> Option<Runs> {
        let kept = self
            .kept(spec)
            .filter(|runs| used.iter().all(|f| runs.features().contains(f)));
        TRAINING_INDEX.record_lookup(kept.is_some());
        kept
    }

    /// The index kept for this version of the set, whatever its features, if it has room for
    /// one more run. Indexes left idle too long are dropped first.
    pub(super) fn kept(&self, spec: &Arc<FeatureSetSpec>) -> Option<Runs> {
        let mut sets = self.sets.lock();
        Self::drop_idle(&mut sets);
        sets.get(&spec.name)
            .filter(|kept| kept.spec == *spec && kept.runs.runs() < MAX_RUNS)
            .map(|kept| kept.runs.clone())
    }

    fn drop_idle(sets: &mut HashMap<String, Kept>) {
        let before = sets.len();
        sets.retain(|_, kept| kept.used.elapsed() < IDLE_LIMIT);
        TRAINING_INDEX.record_evictions(before - sets.len());
    }

    /// Whether an index of this version of the set is kept.
    pub(crate) fn holds(&self, spec: &FeatureSetSpec) -> bool {
        self.sets
            .lock()
            .get(&spec.name)
            .is_some_and(|kept| *kept.spec == *spec)
    }

    /// Drops the indexes left unused for [`IDLE_LIMIT`].
    pub(crate) fn drop_idle_indexes(&self) {
        Self::drop_idle(&mut self.sets.lock());
    }

    /// Keeps `runs`, the index of `spec`'s rows a request has just brought up to date.
    pub(super) fn keep(&self, spec: &Arc<FeatureSetSpec>, runs: &Runs) {
        self.keep_used_at(spec, runs, |_| Instant::now());
    }

    /// Keeps `runs`, brought up to date by a warm-up ([`super::warm`]), which is not a use:
    /// an index no request uses is dropped [`IDLE_LIMIT`] after it was first kept, however
    /// often ingest warms it.
    pub(super) fn keep_warmed(&self, spec: &Arc<FeatureSetSpec>, runs: &Runs) {
        self.keep_used_at(spec, runs, |kept| {
            kept.map_or_else(Instant::now, |kept| kept.used)
        });
    }

    fn keep_used_at(
        &self,
        spec: &Arc<FeatureSetSpec>,
        runs: &Runs,
        used: impl FnOnce(Option<&Kept>) -> Instant,
    ) {
        let mut sets = self.sets.lock();
        let kept = sets.get(&spec.name).filter(|kept| kept.spec == *spec);
        // A request that read an older index (or a version since replaced) must not undo a
        // newer one kept meanwhile.
        if kept.is_some_and(|kept| kept.runs.covered() > runs.covered()) {
            return;
        }
        let used = used(kept);
        sets.insert(
            spec.name.clone(),
            Kept {
                spec: spec.clone(),
                runs: runs.clone(),
                used,
            },
        );
    }

    /// Drops the index of set `name` (updated or deleted).
    pub(crate) fn forget(&self, name: &str) {
        if self.sets.lock().remove(name).is_some() {
            TRAINING_INDEX.record_evictions(1);
        }
    }

    /// Drops the index of this version of a set, if it is the one kept: a request that read
    /// a version since replaced or deleted may have kept it after [`forget`](Self::forget).
    pub(crate) fn forget_version(&self, spec: &FeatureSetSpec) {
        let mut sets = self.sets.lock();
        if sets.get(&spec.name).is_some_and(|kept| *kept.spec == *spec) {
            sets.remove(&spec.name);
            TRAINING_INDEX.record_evictions(1);
        }
    }

    /// Drops the least recently used indexes of sets other than `keeping` until `bytes` of
    /// the budget are free; whether they are. An index a request still reads gives its
    /// budget back when that request ends.
    pub(super) fn make_room(&self, bytes: usize, keeping: &[Arc<FeatureSetSpec>]) -> bool {
        let mut sets = self.sets.lock();
        while self.budget.available() < bytes {
            let oldest = sets
                .iter()
                .filter(|(name, _)| !keeping.iter().any(|spec| &spec.name == *name))
                .min_by_key(|(_, kept)| kept.used)
                .map(|(name, _)| name.clone());
            let Some(name) = oldest else {
                return false;
            };
            sets.remove(&name);
            TRAINING_INDEX.record_evictions(1);
        }
        true
    }

    /// Budget bytes the kept indexes hold.
    pub(crate) fn kept_bytes(&self) -> usize {
        self.sets
            .lock()
            .values()
            .map(|kept| kept.runs.bytes())
            .sum()
    }
}
