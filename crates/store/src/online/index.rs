//! The in-memory online store, the embedded default: the latest value of every entity of a
//! feature set, in memory.
//!
//! Entities are spread over shards by key hash; each shard maps a key to a slot and keeps one
//! columnar value buffer per feature, indexed by slot. A lookup of N entities is N hash probes
//! and a copy per feature into Arrow buffers: no storage I/O and no SQL. Ingest locks one shard
//! at a time for a bounded number of rows, so reads never wait behind a whole large batch.

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use arrow::array::RecordBatch;
use featherstore_core::{EntityKeys, EntityType, FeatureSetSpec};
use hashbrown::HashMap;
use parking_lot::RwLock;

use super::column::{Gather, Source, ValueColumn};
use super::interface::{lookup_batch, BatchKeys, OnlineSet, OnlineStore, PreparedBatch};
use crate::Result;

const SHARDS: usize = 32;
/// Rows applied per shard lock hold: bounds how long a read can wait behind an ingest.
const ROWS_PER_LOCK: usize = 1024;

type Hasher = hashbrown::DefaultHashBuilder;

enum Keys {
    String(HashMap<Box<str>, u32>),
    Int64(HashMap<i64, u32>),
}

struct Shard {
    keys: Keys,
    timestamps: Vec<i64>,
    columns: Vec<ValueColumn>,
}

impl Shard {
    fn new(spec: &FeatureSetSpec) -> Self {
        Shard {
            keys: match spec.entity.entity_type {
                EntityType::String => Keys::String(HashMap::new()),
                EntityType::Int64 => Keys::Int64(HashMap::new()),
            },
            timestamps: Vec::new(),
            columns: spec
                .features
                .iter()
                .map(|f| ValueColumn::new(f.feature_type))
                .collect(),
        }
    }

    fn len(&self) -> usize {
        self.timestamps.len()
    }

    /// Writes row `row` of the batch into `slot` (a new slot when `None`), unless the stored
    /// value is newer. Equal event times go to this, the later, ingest.
    fn upsert(
        &mut self,
        slot: Option<u32>,
        row: usize,
        timestamp: i64,
        sources: &[Source<'_>],
    ) -> Option<u32> {
        match slot {
            Some(slot) => {
                let s = slot as usize;
                if timestamp >= self.timestamps[s] {
                    self.timestamps[s] = timestamp;
                    for (column, source) in self.columns.iter_mut().zip(sources) {
                        column.set(s, source, row);
                    }
                }
                None
            }
            None => {
                let slot = self.len() as u32;
                self.timestamps.push(timestamp);
                for (column, source) in self.columns.iter_mut().zip(sources) {
                    column.push(source, row);
                }
                Some(slot)
            }
        }
    }
}

/// The in-memory backend: each set's values in an [`OnlineIndex`] of its own.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryStore;

impl OnlineStore for MemoryStore {
    fn open_set(&self, spec: Arc<FeatureSetSpec>) -> Result<Box<dyn OnlineSet>> {
        Ok(Box::new(OnlineIndex::new(spec)))
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}

/// The online values of one feature set, in memory.
pub struct OnlineIndex {
    spec: Arc<FeatureSetSpec>,
    shards: Vec<RwLock<Shard>>,
    hasher: Hasher,
    latest_event_timestamp: AtomicI64,
}

impl OnlineIndex {
    pub fn new(spec: Arc<FeatureSetSpec>) -> Self {
        let shards = (0..SHARDS)
            .map(|_| RwLock::new(Shard::new(&spec)))
            .collect();
        OnlineIndex {
            spec,
            shards,
            hasher: Hasher::default(),
            latest_event_timestamp: AtomicI64::new(i64::MIN),
        }
    }

    fn shard_of<K: Hash + ?Sized>(&self, key: &K) -> usize {
        (self.hasher.hash_one(key) >> 32) as usize % SHARDS
    }

    fn read_shard<K: Hash + ?Sized>(&self, key: &K) -> parking_lot::RwLockReadGuard<'_, Shard> {
        self.shards[self.shard_of(key)].read()
    }
}

impl OnlineSet for OnlineIndex {
    fn spec(&self) -> &Arc<FeatureSetSpec> {
        &self.spec
    }

    /// Cannot fail: [`PreparedBatch::check`] checked the batch.
    fn apply(&self, batch: &PreparedBatch<'_>) -> Result<()> {
        let n = batch.rows;
        if n == 0 {
            return Ok(());
        }
        let timestamps = batch.timestamps;
        let sources = &batch.sources;

        let mut rows_by_shard: Vec<Vec<u32>> = vec![Vec::new(); SHARDS];
        match batch.keys {
            BatchKeys::String(keys) => {
                for row in 0..n {
                    rows_by_shard[self.shard_of(keys.value(row))].push(row as u32);
                }
            }
            BatchKeys::Int64(keys) => {
                for (row, key) in keys.iter().enumerate() {
                    rows_by_shard[self.shard_of(key)].push(row as u32);
                }
            }
        }

        for (shard, rows) in self.shards.iter().zip(&rows_by_shard) {
            for chunk in rows.chunks(ROWS_PER_LOCK) {
                let mut shard = shard.write();
                for &row in chunk {
                    let row = row as usize;
                    let ts = timestamps[row];
                    match batch.keys {
                        BatchKeys::String(keys) => {
                            let key = keys.value(row);
                            let slot = match &shard.keys {
                                Keys::String(map) => map.get(key).copied(),
                                Keys::Int64(_) => unreachable!("shard keys follow the spec"),
                            };
                            if let Some(new) = shard.upsert(slot, row, ts, sources) {
                                if let Keys::String(map) = &mut shard.keys {
                                    map.insert(key.into(), new);
                                }
                            }
                        }
                        BatchKeys::Int64(keys) => {
                            let key = keys[row];
                            let slot = match &shard.keys {
                                Keys::Int64(map) => map.get(&key).copied(),
                                Keys::String(_) => unreachable!("shard keys follow the spec"),
                            };
                            if let Some(new) = shard.upsert(slot, row, ts, sources) {
                                if let Keys::Int64(map) = &mut shard.keys {
                                    map.insert(key, new);
                                }
                            }
                        }
                    }
                }
            }
        }
        if let Some(max) = timestamps.iter().max() {
            self.latest_event_timestamp
                .fetch_max(*max, Ordering::Relaxed);
        }
        Ok(())
    }

    fn lookup(&self, keys: &EntityKeys, features: &[usize], now: i64) -> Result<RecordBatch> {
        let cutoff = self.spec.ttl_micros().map(|ttl| now.saturating_sub(ttl));
        let mut gathers: Vec<Gather> = features
            .iter()
            .map(|&f| Gather::new(self.spec.features[f].feature_type, keys.len()))
            .collect();
        let mut timestamps: Vec<Option<i64>> = Vec::with_capacity(keys.len());

        let mut read = |shard: &Shard, slot: Option<u32>| {
            let slot = slot
                .map(|s| s as usize)
                .filter(|&s| cutoff.is_none_or(|c| shard.timestamps[s] >= c));
            timestamps.push(slot.map(|s| shard.timestamps[s]));
            for (gather, &f) in gathers.iter_mut().zip(features) {
                gather.push(slot.map(|s| (&shard.columns[f], s)));
            }
        };
        match keys {
            EntityKeys::String(keys) => {
                for key in keys {
                    let shard = self.read_shard(key.as_str());
                    let slot = match &shard.keys {
                        Keys::String(map) => map.get(key.as_str()).copied(),
                        Keys::Int64(_) => None,
                    };
                    read(&shard, slot);
                }
            }
            EntityKeys::Int64(keys) => {
                for key in keys {
                    let shard = self.read_shard(key);
                    let slot = match &shard.keys {
                        Keys::Int64(map) => map.get(key).copied(),
                        Keys::String(_) => None,
                    };
                    read(&shard, slot);
                }
            }
        }

        lookup_batch(&self.spec, keys, features, gathers, timestamps)
    }

    /// Frees every value now, even while a reader still holds the set.
    fn remove(&self) -> Result<()> {
        for shard in &self.shards {
            *shard.write() = Shard::new(&self.spec);
        }
        self.latest_event_timestamp
            .store(i64::MIN, Ordering::Relaxed);
        Ok(())
    }

    fn entities(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    /// Greatest event time applied so far (UTC microseconds).
    fn latest_event_timestamp(&self) -> Option<i64> {
        Some(self.latest_event_timestamp.load(Ordering::Relaxed)).filter(|&t| t != i64::MIN)
    }

    /// Approximate bytes held: keys, slots, timestamps and value buffers.
    fn memory_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let shard = s.read();
                let keys = match &shard.keys {
                    Keys::String(map) => {
                        map.capacity() * (size_of::<Box<str>>() + 5)
                            + map.keys().map(|k| k.len()).sum::<usize>()
                    }
                    Keys::Int64(map) => map.capacity() * (size_of::<i64>() + 5),
                };
                keys + shard.timestamps.capacity() * size_of::<i64>()
                    + shard
                        .columns
                        .iter()
                        .map(ValueColumn::memory_bytes)
                        .sum::<usize>()
            })
            .sum()
    }
}
