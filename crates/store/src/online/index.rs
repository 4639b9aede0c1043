//! The in-memory online store, the embedded default: the latest value of every entity of a
//! feature set, in memory.
//!
//! Entities are spread over shards by key hash; each shard maps a key to a slot and keeps a
//! record of fixed-width values per slot, and a column per bool, string or binary feature. A
//! lookup of N entities is N hash probes and a copy per feature into Arrow buffers: no storage
//! I/O and no SQL.
//!
//! Ingest rewrites the records of known entities in place, beside the readers ([`Records`]),
//! and takes a shard for itself only to add entities or, in a set with bool, string or binary
//! features, to write their columns; then for a bounded number of rows, so that reads never
//! wait behind a whole large batch.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::buffer::{OffsetBuffer, ScalarBuffer};
use featherstore_core::{EntityKeys, EntityType, FeatureSetSpec};
use hashbrown::HashTable;
use parking_lot::{Mutex, RwLock};

use super::column::{self, grow, Gather, Layout, Place, Records, Source, ValueColumn};
use super::interface::{
    lookup_batch, AnswerSchema, BatchKeys, OnlineSet, OnlineStore, PreparedBatch,
};
use crate::types::BatchSink;
use crate::Result;

const SHARDS: usize = 32;
// A lookup keeps the shards it touches in a `u64` bit set.
const _: () = assert!(SHARDS <= 64);
/// Rows applied per turn at a shard: bounds how long a read can wait behind an ingest that
/// holds the shard for itself.
const ROWS_PER_LOCK: usize = 1024;
/// Keys of a lookup read under one taking of their shards' locks ([`OnlineSet::lookup`]):
/// bounds how long an ingest waiting for a shard waits behind a large read.
const KEYS_PER_LOCK: usize = 256;
/// Entities per batch of [`OnlineSet::export`].
const EXPORT_ROWS: usize = 65_536;

type Hasher = hashbrown::DefaultHashBuilder;

/// The entity keys of a shard, by slot: the hash table holds only slot numbers and finds a
/// key's slot by comparing against these, so a key is stored once and no entity has a heap
/// allocation of its own.
enum KeyColumn {
    Int64(Vec<i64>),
    /// Key `slot` is `bytes[ends[slot - 1]..ends[slot]]` (from 0 for slot 0): UTF-8, as checked
    /// when its batch was prepared.
    String {
        ends: Vec<usize>,
        bytes: Vec<u8>,
    },
}

/// A key as hashed and compared: the hash of a string key is that of its bytes.
#[derive(Clone, Copy)]
enum Key<'a> {
    Int64(i64),
    String(&'a [u8]),
}

impl KeyColumn {
    fn get(&self, slot: usize) -> Key<'_> {
        match self {
            KeyColumn::Int64(keys) => Key::Int64(keys[slot]),
            KeyColumn::String { ends, bytes } => {
                let start = slot.checked_sub(1).map_or(0, |before| ends[before]);
                Key::String(&bytes[start..ends[slot]])
            }
        }
    }

    fn push(&mut self, key: Key<'_>) {
        match (self, key) {
            (KeyColumn::Int64(keys), Key::Int64(key)) => {
                grow(keys, 1);
                keys.push(key);
            }
            (KeyColumn::String { ends, bytes }, Key::String(key)) => {
                grow(bytes, key.len());
                bytes.extend_from_slice(key);
                grow(ends, 1);
                ends.push(bytes.len());
            }
            _ => unreachable!("shard keys follow the spec"),
        }
    }

    fn len(&self) -> usize {
        match self {
            KeyColumn::Int64(keys) => keys.len(),
            KeyColumn::String { ends, .. } => ends.len(),
        }
    }

    fn memory_bytes(&self) -> usize {
        match self {
            KeyColumn::Int64(keys) => keys.capacity() * size_of::<i64>(),
            KeyColumn::String { ends, bytes } => {
                ends.capacity() * size_of::<usize>() + bytes.capacity()
            }
        }
    }
}

fn same(a: Key<'_>, b: Key<'_>) -> bool {
    match (a, b) {
        (Key::Int64(a), Key::Int64(b)) => a == b,
        (Key::String(a), Key::String(b)) => a == b,
        _ => false,
    }
}

/// A shard of a set: its values, and the turn of its writers.
struct ShardLock {
    /// Held by each ingest while it applies rows to this shard: the records rewritten in
    /// place beside the readers have one writer at a time.
    writer: Mutex<()>,
    values: RwLock<Shard>,
}

struct Shard {
    /// Slot numbers, hashed by their key.
    slots: HashTable<u32>,
    keys: KeyColumn,
    /// The event times and fixed-width values, a record per slot.
    records: Records,
    /// The other values, a column per feature ([`Layout::column_types`]).
    columns: Vec<ValueColumn>,
}

impl Shard {
    fn new(spec: &FeatureSetSpec, layout: &Layout) -> Self {
        Shard {
            slots: HashTable::new(),
            keys: match spec.entity.entity_type {
                EntityType::String => KeyColumn::String {
                    ends: Vec::new(),
                    bytes: Vec::new(),
                },
                EntityType::Int64 => KeyColumn::Int64(Vec::new()),
            },
            records: Records::default(),
            columns: layout
                .column_types
                .iter()
                .map(|&t| ValueColumn::new(t))
                .collect(),
        }
    }

    /// Whether a row at event time `timestamp` replaces the value of `slot`: unless the stored
    /// value is newer. Equal event times go to the row, the later ingest.
    fn is_replaced_by(&self, layout: &Layout, slot: usize, timestamp: i64) -> bool {
        timestamp >= self.records.timestamp(layout, slot)
    }

    /// Writes row `row` of a batch (event time `timestamp`) into `slot`; `staged` is scratch
    /// space.
    fn write(
        &mut self,
        layout: &Layout,
        slot: usize,
        timestamp: i64,
        sources: &[Source<'_>],
        row: usize,
        staged: &mut Vec<u8>,
    ) {
        for (&place, source) in layout.places.iter().zip(sources) {
            if let Place::Column(i) = place {
                self.columns[i].set(slot, source, row);
            }
        }
        self.write_record(layout, slot, timestamp, sources, row, staged);
    }

    /// Writes the event time and fixed-width values of row `row` into `slot`'s record, in
    /// place beside the readers: all of [`write`](Self::write) for a set without value
    /// columns.
    fn write_record(
        &self,
        layout: &Layout,
        slot: usize,
        timestamp: i64,
        sources: &[Source<'_>],
        row: usize,
        staged: &mut Vec<u8>,
    ) {
        column::stage(layout, sources, row, timestamp, staged);
        self.records.write(layout, slot, staged);
    }

    /// Appends the values of `features` at `slot`, whose fixed-width values are `record`
    /// ([`Records::read`]), to their gathers.
    fn gather(
        &self,
        layout: &Layout,
        slot: usize,
        record: &[u8],
        features: &[usize],
        gathers: &mut [Gather],
    ) {
        for (gather, &f) in gathers.iter_mut().zip(features) {
            gather.push_stored(layout, record, &self.columns, layout.places[f], slot);
        }
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    fn find(&self, hash: u64, key: Key<'_>) -> Option<usize> {
        self.slots
            .find(hash, |&slot| same(self.keys.get(slot as usize), key))
            .map(|&slot| slot as usize)
    }

    /// Writes row `row` of the batch as the value of `key`, if it replaces the stored one
    /// ([`is_replaced_by`](Self::is_replaced_by)).
    #[allow(clippy::too_many_arguments)]
    fn upsert(
        &mut self,
        layout: &Layout,
        hasher: &Hasher,
        hash: u64,
        key: Key<'_>,
        row: usize,
        timestamp: i64,
        sources: &[Source<'_>],
        staged: &mut Vec<u8>,
    ) {
        match self.find(hash, key) {
            Some(slot) => {
                if self.is_replaced_by(layout, slot, timestamp) {
                    self.write(layout, slot, timestamp, sources, row, staged);
                }
            }
            None => {
                let slot = self.len() as u32;
                self.keys.push(key);
                self.records.push(layout);
                self.columns.iter_mut().for_each(ValueColumn::push_empty);
                self.write(layout, slot as usize, timestamp, sources, row, staged);
                let keys = &self.keys;
                self.slots.insert_unique(hash, slot, |&slot| {
                    hash_key(hasher, keys.get(slot as usize))
                });
            }
        }
    }

    /// The canonical batch of the values of `slots` (entity, features, timestamp).
    fn export(
        &self,
        spec: &FeatureSetSpec,
        layout: &Layout,
        slots: std::ops::Range<usize>,
    ) -> Result<RecordBatch> {
        let rows = slots.len();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(spec.features.len() + 2);
        columns.push(match &self.keys {
            KeyColumn::Int64(keys) => Arc::new(Int64Array::from(keys[slots.clone()].to_vec())),
            KeyColumn::String { ends, bytes } => {
                let first = slots.start.checked_sub(1).map_or(0, |before| ends[before]);
                let offsets: Vec<i32> = std::iter::once(first)
                    .chain(ends[slots.clone()].iter().copied())
                    .map(|end| i32::try_from(end - first))
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|_| {
                        crate::Error::Corrupt("an export batch holds over 2 GiB of keys".into())
                    })?;
                let last = ends[slots.end - 1];
                let binary = BinaryArray::new(
                    OffsetBuffer::new(ScalarBuffer::from(offsets)),
                    bytes[first..last].to_vec().into(),
                    None,
                );
                Arc::new(StringArray::try_from_binary(binary)?)
            }
        });
        let every: Vec<usize> = (0..spec.features.len()).collect();
        let mut gathers: Vec<Gather> = spec
            .features
            .iter()
            .map(|feature| Gather::new(feature.feature_type, rows))
            .collect();
        let mut timestamps = Vec::with_capacity(rows);
        let mut image = Vec::new();
        for slot in slots {
            let (timestamp, record) = self.records.read(layout, slot, &mut image);
            timestamps.push(timestamp);
            self.gather(layout, slot, record, &every, &mut gathers);
        }
        for (gather, feature) in gathers.into_iter().zip(&spec.features) {
            columns.push(gather.finish(feature.feature_type)?);
        }
        columns.push(Arc::new(
            TimestampMicrosecondArray::from(timestamps).with_timezone("UTC"),
        ));
        Ok(RecordBatch::try_new(spec.arrow_schema(), columns)?)
    }
}

fn hash_key(hasher: &Hasher, key: Key<'_>) -> u64 {
    match key {
        Key::Int64(key) => hasher.hash_one(key),
        Key::String(key) => hasher.hash_one(key),
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
    layout: Layout,
    answer_schema: AnswerSchema,
    shards: Vec<ShardLock>,
    hasher: Hasher,
    latest_event_timestamp: AtomicI64,
}

impl OnlineIndex {
    pub fn new(spec: Arc<FeatureSetSpec>) -> Self {
        let layout = Layout::new(&spec.features);
        let shards = (0..SHARDS)
            .map(|_| ShardLock {
                writer: Mutex::new(()),
                values: RwLock::new(Shard::new(&spec, &layout)),
            })
            .collect();
        OnlineIndex {
            layout,
            answer_schema: AnswerSchema::new(&spec),
            spec,
            shards,
            hasher: Hasher::default(),
            latest_event_timestamp: AtomicI64::new(i64::MIN),
        }
    }

    fn shard_of(hash: u64) -> usize {
        (hash >> 32) as usize % SHARDS
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

        let key_of = |row: usize| match batch.keys {
            BatchKeys::String(keys) => Key::String(keys.value(row).as_bytes()),
            BatchKeys::Int64(keys) => Key::Int64(keys[row]),
        };
        let mut rows_by_shard: Vec<Vec<(u64, u32)>> = vec![Vec::new(); SHARDS];
        for row in 0..n {
            let hash = hash_key(&self.hasher, key_of(row));
            rows_by_shard[Self::shard_of(hash)].push((hash, row as u32));
        }

        // Without bool, string or binary features, a known entity's row is one record,
        // rewritten in place beside the readers; the rest needs the shard to itself.
        let in_place = self.layout.column_types.is_empty();
        let mut staged = Vec::new();
        let mut new_entities = Vec::new();
        for (shard, rows) in self.shards.iter().zip(&rows_by_shard) {
            for chunk in rows.chunks(ROWS_PER_LOCK) {
                let _turn = shard.writer.lock();
                new_entities.clear();
                if in_place {
                    let values = shard.values.read();
                    for &(hash, row) in chunk {
                        let row = row as usize;
                        let Some(slot) = values.find(hash, key_of(row)) else {
                            new_entities.push((hash, row as u32));
                            continue;
                        };
                        let timestamp = timestamps[row];
                        if values.is_replaced_by(&self.layout, slot, timestamp) {
                            values.write_record(
                                &self.layout,
                                slot,
                                timestamp,
                                sources,
                                row,
                                &mut staged,
                            );
                        }
                    }
                }
                let exclusive = if in_place { &new_entities[..] } else { chunk };
                if exclusive.is_empty() {
                    continue;
                }
                let mut values = shard.values.write();
                for &(hash, row) in exclusive {
                    let row = row as usize;
                    values.upsert(
                        &self.layout,
                        &self.hasher,
                        hash,
                        key_of(row),
                        row,
                        timestamps[row],
                        sources,
                        &mut staged,
                    );
                }
            }
        }
        if let Some(max) = timestamps.iter().max() {
            self.latest_event_timestamp
                .fetch_max(*max, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Looks keys up a chunk at a time, in three passes over the chunk: find every key's
    /// slot, touch every found record, then read and gather in request order. Probing key by
    /// key, each key waited for its cache misses (hash group, slot, key, record) one after
    /// another, and the shard lock taken and released around every key is a locked
    /// instruction that kept the CPU from starting the next key's loads early: a third of a
    /// 100-entity read's server time. Within a pass nothing orders one key's loads after the
    /// last's, so their misses overlap.
    fn lookup(&self, keys: &EntityKeys, features: &[usize], now: i64) -> Result<RecordBatch> {
        let cutoff = self.spec.ttl_micros().map(|ttl| now.saturating_sub(ttl));
        let mut gathers: Vec<Gather> = features
            .iter()
            .map(|&f| Gather::new(self.spec.features[f].feature_type, keys.len()))
            .collect();
        let mut timestamps: Vec<Option<i64>> = Vec::with_capacity(keys.len());
        let mut image = Vec::with_capacity(self.layout.image_bytes());
        let key_at = |i: usize| match keys {
            EntityKeys::String(keys) => Key::String(keys[i].as_bytes()),
            EntityKeys::Int64(keys) => Key::Int64(keys[i]),
        };

        let mut hashes = Vec::with_capacity(keys.len().min(KEYS_PER_LOCK));
        let mut located: Vec<(usize, Option<usize>)> = Vec::with_capacity(hashes.capacity());
        for start in (0..keys.len()).step_by(KEYS_PER_LOCK) {
            let chunk = start..keys.len().min(start + KEYS_PER_LOCK);
            hashes.clear();
            hashes.extend(chunk.clone().map(|i| hash_key(&self.hasher, key_at(i))));
            let touched = hashes
                .iter()
                .fold(0u64, |touched, &hash| touched | 1 << Self::shard_of(hash));
            // Each shard of the chunk read-locked once, in shard order: writers hold one
            // shard at a time, so readers taking several in one order cannot deadlock.
            let mut guard_of = [0usize; SHARDS];
            let mut guards = Vec::with_capacity(touched.count_ones() as usize);
            for (s, shard) in self.shards.iter().enumerate() {
                if touched & 1 << s != 0 {
                    guard_of[s] = guards.len();
                    guards.push(shard.values.read());
                }
            }

            located.clear();
            located.extend(chunk.zip(&hashes).map(|(i, &hash)| {
                let guard = guard_of[Self::shard_of(hash)];
                (guard, guards[guard].find(hash, key_at(i)))
            }));
            let touch = located
                .iter()
                .filter_map(|&(guard, slot)| Some(guards[guard].records.touch(&self.layout, slot?)))
                .fold(0, u64::wrapping_add);
            // Kept, so that the loads of the touch pass are not optimised away.
            std::hint::black_box(touch);

            for &(guard, slot) in &located {
                let shard = &guards[guard];
                let found = slot.and_then(|slot| {
                    let (timestamp, record) = shard.records.read(&self.layout, slot, &mut image);
                    cutoff
                        .is_none_or(|c| timestamp >= c)
                        .then_some((slot, timestamp, record))
                });
                timestamps.push(found.map(|(_, timestamp, _)| timestamp));
                match found {
                    Some((slot, _, record)) => {
                        shard.gather(&self.layout, slot, record, features, &mut gathers)
                    }
                    None => gathers.iter_mut().for_each(Gather::push_null),
                }
            }
        }

        let schema = self.answer_schema.of(&self.spec, features);
        lookup_batch(&self.spec, schema, keys, features, gathers, timestamps)
    }

    /// Frees every value now, even while a reader still holds the set.
    fn remove(&self) -> Result<()> {
        for shard in &self.shards {
            *shard.values.write() = Shard::new(&self.spec, &self.layout);
        }
        self.latest_event_timestamp
            .store(i64::MIN, Ordering::Relaxed);
        Ok(())
    }

    fn entities(&self) -> usize {
        self.shards.iter().map(|s| s.values.read().len()).sum()
    }

    /// Greatest event time applied so far (UTC microseconds).
    fn latest_event_timestamp(&self) -> Option<i64> {
        Some(self.latest_event_timestamp.load(Ordering::Relaxed)).filter(|&t| t != i64::MIN)
    }

    /// Approximate bytes held: keys, slots, records (event times included) and value columns.
    fn memory_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let shard = s.values.read();
                // A bucket of the table: its slot number and a control byte; the table holds
                // at most 7 entries per 8 buckets.
                shard.slots.capacity() * 8 / 7 * (size_of::<u32>() + 1)
                    + shard.keys.memory_bytes()
                    + shard.records.memory_bytes()
                    + shard
                        .columns
                        .iter()
                        .map(ValueColumn::memory_bytes)
                        .sum::<usize>()
            })
            .sum()
    }

    /// Every value held, shard by shard: a value applied meanwhile may or may not be in it.
    fn export(&self, sink: BatchSink<'_>) -> Result<bool> {
        for shard in &self.shards {
            let mut first = 0;
            loop {
                let batch = {
                    let shard = shard.values.read();
                    if first >= shard.len() {
                        break;
                    }
                    let end = shard.len().min(first + EXPORT_ROWS);
                    let batch = shard.export(&self.spec, &self.layout, first..end)?;
                    first = end;
                    batch
                };
                sink(batch)?;
            }
        }
        Ok(true)
    }
}
