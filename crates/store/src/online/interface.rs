//! The online store's interface: what every backend implements, and the checked batch
//! they apply.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{Int64Type, SchemaRef, TimestampMicrosecondType};
use featherstore_core::{EntityKeys, EntityType, FeatureServiceSpec, FeatureSetSpec};
use parking_lot::RwLock;

use super::column::{self, Source};
use crate::types::BatchSink;
use crate::{Error, Result};

/// An online backend: creates the online values of each feature set.
pub trait OnlineStore: Send + Sync {
    /// The online values of `spec`'s set: empty for a set just created, or what the backend
    /// already holds for it.
    fn open_set(&self, spec: Arc<FeatureSetSpec>) -> Result<Box<dyn OnlineSet>>;

    /// The backend's name, as `/health` and the logs report it.
    fn name(&self) -> &'static str;

    /// Whether the backend can serve now (a remote one answers within its timeout).
    fn check(&self) -> Result<()> {
        Ok(())
    }

    /// The registry shared by every server of this backend, if its values outlive this
    /// process and are shared with other servers: then the values are never rebuilt from
    /// this server's offline store on their own (at start or at an update), since they hold
    /// what every server ingested.
    fn shared_registry(&self) -> Option<&dyn SharedRegistry> {
        None
    }
}

/// The feature set registry of a shared online backend: what sets exist, for every server.
pub trait SharedRegistry: Send + Sync {
    /// Publishes a new set (`update` false) or a new version of one. Returns `None` when
    /// published, or the spec that holds the name (a set created elsewhere, or a version as
    /// new or newer) when refused.
    fn publish(&self, spec: &FeatureSetSpec, update: bool) -> Result<Option<FeatureSetSpec>>;

    /// Removes a deleted set.
    fn unpublish(&self, name: &str) -> Result<()>;

    /// A counter that changes at every publish and unpublish: cheap to poll. `None` when the
    /// registry is gone altogether (the backend lost its data).
    fn version(&self) -> Result<Option<u64>>;

    /// Every published spec.
    fn specs(&self) -> Result<Vec<FeatureSetSpec>>;

    /// Publishes a new feature service. Returns `None` when published, or the service that
    /// holds the name when refused. Services have no versions: a name holds one definition
    /// until it is deleted.
    fn publish_service(&self, service: &FeatureServiceSpec) -> Result<Option<FeatureServiceSpec>>;

    /// Removes a deleted service.
    fn unpublish_service(&self, name: &str) -> Result<()>;

    /// Every published service.
    fn services(&self) -> Result<Vec<FeatureServiceSpec>>;
}

/// The online values of one feature set. Every backend keeps these rules:
///
/// - A row replaces an entity's value only if its event time is not older: the newest event
///   time wins, and a tie goes to the later ingest (a later batch, or a later row of the same
///   batch). The compare-and-set is atomic per entity, so concurrent writers can never roll a
///   value back.
/// - The TTL is applied when reading, at the reader's `now`: storage expiry may reclaim
///   memory but never decides what a read sees.
/// - A lookup answers in request order, duplicates included; unknown entities, and expired
///   values, come back as nulls.
pub trait OnlineSet: Send + Sync {
    fn spec(&self) -> &Arc<FeatureSetSpec>;

    /// Checks a canonical batch for [`apply`](OnlineSet::apply): every check that applying it
    /// needs happens here, so that a batch can be prepared before it is stored offline and
    /// applied after. A backend with limits of its own checks them here too.
    fn prepare<'a>(&self, batch: &'a RecordBatch) -> Result<PreparedBatch<'a>> {
        PreparedBatch::check(self.spec(), batch)
    }

    /// Applies a prepared batch. The caller serialises the applies of one set, in ingest
    /// order. The in-memory backend cannot fail here; a remote one can (its store is
    /// unreachable): the caller then takes the batch back out of the offline store and
    /// reports it as failed. Rows applied before the failure stay (each is a value newer
    /// than the one it replaced), and applying the batch again is harmless, since the same
    /// rows win the same ties.
    fn apply(&self, batch: &PreparedBatch<'_>) -> Result<()>;

    /// Online values of `keys` in request order (duplicates included): entity, the chosen
    /// features (indices into the spec's), timestamp. Unknown entities, and values older
    /// than the TTL at `now` (UTC microseconds), come back as nulls.
    fn lookup(&self, keys: &EntityKeys, features: &[usize], now: i64) -> Result<RecordBatch>;

    /// Removes every value of the set (it is being deleted).
    fn remove(&self) -> Result<()>;

    /// Number of entities held. Read at every metrics scrape: cheap.
    fn entities(&self) -> usize;

    /// Greatest event time applied so far (UTC microseconds).
    fn latest_event_timestamp(&self) -> Option<i64>;

    /// Approximate bytes held in this process.
    fn memory_bytes(&self) -> usize;

    /// Hands every value held to `sink` as canonical batches (entity, features, timestamp),
    /// for a snapshot that a restart applies instead of rebuilding from the offline store. A
    /// value applied while it runs may or may not be in them. `false` (the default) when the
    /// backend keeps no snapshots: its values outlive the process by themselves.
    fn export(&self, _sink: BatchSink<'_>) -> Result<bool> {
        Ok(false)
    }
}

/// The entity keys of a prepared batch.
#[derive(Clone, Copy)]
pub(super) enum BatchKeys<'a> {
    String(&'a StringArray),
    Int64(&'a [i64]),
}

/// A canonical batch checked by [`PreparedBatch::check`]: its columns have the spec's types
/// and in-bounds buffers, so that a backend reads any of its rows without a failure.
pub struct PreparedBatch<'a> {
    pub(super) rows: usize,
    pub(super) keys: BatchKeys<'a>,
    pub(super) timestamps: &'a [i64],
    pub(super) sources: Vec<Source<'a>>,
}

impl<'a> PreparedBatch<'a> {
    /// Checks a canonical batch (entity, features in spec order, timestamp) of `spec`.
    pub fn check(spec: &FeatureSetSpec, batch: &'a RecordBatch) -> Result<Self> {
        let rows = batch.num_rows();
        let columns = batch.columns();
        let corrupt = |what: String| {
            Error::Corrupt(format!(
                "the online index of feature set {:?} was handed {what}",
                spec.name
            ))
        };
        if columns.len() != spec.features.len() + 2 {
            return Err(corrupt(format!(
                "{} columns; expected {}",
                columns.len(),
                spec.features.len() + 2
            )));
        }
        let entity = &columns[0];
        let keys = match spec.entity.entity_type {
            EntityType::String => entity
                .as_string_opt::<i32>()
                .filter(|keys| {
                    column::checked_bytes(keys.value_offsets(), keys.value_data(), rows).is_some()
                })
                .map(BatchKeys::String),
            EntityType::Int64 => entity
                .as_primitive_opt::<Int64Type>()
                .map(|keys| BatchKeys::Int64(keys.values())),
        }
        .ok_or_else(|| corrupt(format!("an entity column of type {}", entity.data_type())))?;
        let timestamps = &columns[columns.len() - 1];
        let timestamps = timestamps
            .as_primitive_opt::<TimestampMicrosecondType>()
            .map(|t| t.values())
            .ok_or_else(|| {
                corrupt(format!(
                    "a timestamp column of type {}",
                    timestamps.data_type()
                ))
            })?;
        let sources = spec
            .features
            .iter()
            .zip(&columns[1..columns.len() - 1])
            .map(|(feature, column)| Source::new(feature, column.as_ref(), rows))
            .collect::<Result<Vec<_>>>()?;
        Ok(PreparedBatch {
            rows,
            keys,
            timestamps,
            sources,
        })
    }
}

/// The schema of a set's online answers, built once for the usual read of every feature (a
/// schema per read was a dozen allocations on the hottest path).
pub(super) struct AnswerSchema {
    every_feature: SchemaRef,
    /// The schemas of reads of fewer features, by feature list: one `Arc` per list, so what
    /// is cached by schema downstream (Flight's encoded schema messages) is found again.
    /// Bounded, as the lists come from requests: when full, it starts over.
    subsets: RwLock<HashMap<Box<[usize]>, SchemaRef>>,
}

/// Feature lists whose answer schema a set keeps.
const SUBSET_SCHEMAS: usize = 64;

impl AnswerSchema {
    pub(super) fn new(spec: &FeatureSetSpec) -> Self {
        let every: Vec<usize> = (0..spec.features.len()).collect();
        AnswerSchema {
            every_feature: spec.projected_schema(&every, true),
            subsets: RwLock::default(),
        }
    }

    /// The answer schema of a read of `features`.
    pub(super) fn of(&self, spec: &FeatureSetSpec, features: &[usize]) -> SchemaRef {
        let every = features.len() == spec.features.len()
            && features.iter().enumerate().all(|(i, &f)| i == f);
        if every {
            return self.every_feature.clone();
        }
        if let Some(schema) = self.subsets.read().get(features) {
            return schema.clone();
        }
        let schema = spec.projected_schema(features, true);
        let mut subsets = self.subsets.write();
        if subsets.len() >= SUBSET_SCHEMAS {
            subsets.clear();
        }
        subsets.insert(features.into(), schema.clone());
        schema
    }
}

/// The answer of a lookup: the entities as asked, each feature's gathered values, and the
/// event times (`None` for nulls), in `schema` (from [`AnswerSchema::of`]).
pub(super) fn lookup_batch(
    spec: &FeatureSetSpec,
    schema: SchemaRef,
    keys: &EntityKeys,
    features: &[usize],
    gathers: Vec<column::Gather>,
    timestamps: Vec<Option<i64>>,
) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(features.len() + 2);
    columns.push(match keys {
        EntityKeys::String(keys) => Arc::new(StringArray::from_iter_values(keys)),
        EntityKeys::Int64(keys) => Arc::new(Int64Array::from(keys.clone())),
    });
    for (gather, &f) in gathers.into_iter().zip(features) {
        columns.push(gather.finish(spec.features[f].feature_type)?);
    }
    columns.push(Arc::new(
        TimestampMicrosecondArray::from(timestamps).with_timezone("UTC"),
    ));
    Ok(RecordBatch::try_new(schema, columns)?)
}
