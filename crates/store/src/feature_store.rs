//! The domain service behind every API: feature set registry, validated ingest, online reads
//! from the index and history from the offline store. Calls that touch storage block; the
//! server runs them off its async runtime.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use arrow::datatypes::SchemaRef;

use arrow::array::RecordBatch;
use featherstore_core::coerce::coerce_batch;
use featherstore_core::time::{format_timestamp, now_micros};
use featherstore_core::{EntityKeys, FeatureSetSpec, HistoryTicket, OnlineTicket, TrainingDataCommand};
use tracing::info;

use crate::offline::{BatchSink, HistoryQuery, OfflineStore, SetStats};
use crate::online::OnlineIndex;
use crate::query::training::{self, EntityRows, TrainingPlan};
use crate::Result;

use featherstore_core::Error as DomainError;

/// Request limits enforced by the domain service (PROTOCOL.md, "Limits").
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_online_entities: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_online_entities: 100_000,
        }
    }
}

/// A stored feature set: its spec and online index.
pub struct FeatureSet {
    pub spec: Arc<FeatureSetSpec>,
    pub index: OnlineIndex,
    /// Serialises appends so the offline store and the index see batches in one order;
    /// `true` once the set is deleted.
    ingest: Mutex<bool>,
}

pub struct FeatureStore {
    offline: Box<dyn OfflineStore>,
    /// Where large requests spool to disk (training data entity rows).
    spool_dir: PathBuf,
    sets: RwLock<BTreeMap<String, Arc<FeatureSet>>>,
    /// Serialises create and delete.
    registry: Mutex<()>,
    limits: Limits,
}

fn not_found(name: &str) -> DomainError {
    DomainError::not_found(format!("feature set {name:?} does not exist"))
}

impl FeatureStore {
    /// Loads every stored spec and rebuilds each set's online index from storage.
    pub fn open(offline: Box<dyn OfflineStore>, limits: Limits, spool_dir: PathBuf) -> Result<Self> {
        let mut sets = BTreeMap::new();
        for spec in offline.load_specs()? {
            let started = std::time::Instant::now();
            let spec = Arc::new(spec);
            let index = OnlineIndex::new(spec.clone());
            offline.latest(&spec, &mut |batch| {
                index.apply(&batch);
                Ok(())
            })?;
            info!(
                feature_set = %spec.name,
                entities = index.entities(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "online index rebuilt"
            );
            sets.insert(
                spec.name.clone(),
                Arc::new(FeatureSet {
                    spec,
                    index,
                    ingest: Mutex::new(false),
                }),
            );
        }
        Ok(FeatureStore {
            offline,
            spool_dir,
            sets: RwLock::new(sets),
            registry: Mutex::new(()),
            limits,
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn get(&self, name: &str) -> Result<Arc<FeatureSet>> {
        self.sets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| not_found(name).into())
    }

    pub fn list(&self) -> Vec<Arc<FeatureSet>> {
        self.sets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Stores a new set. Returns the stored spec and whether it was created: the same
    /// definition again is a no-op, a different one under an existing name is refused.
    pub fn create(&self, mut spec: FeatureSetSpec) -> Result<(Arc<FeatureSetSpec>, bool)> {
        spec.validate()?;
        let _registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
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
        self.offline.create(&spec)?;
        let spec = Arc::new(spec);
        let set = Arc::new(FeatureSet {
            spec: spec.clone(),
            index: OnlineIndex::new(spec.clone()),
            ingest: Mutex::new(false),
        });
        self.sets
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(spec.name.clone(), set);
        Ok((spec, true))
    }

    pub fn delete(&self, name: &str) -> Result<()> {
        let _registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let set = self.get(name)?;
        let mut deleted = set.ingest.lock().unwrap_or_else(|e| e.into_inner());
        self.offline.delete(name)?;
        *deleted = true;
        self.sets
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        Ok(())
    }

    /// Validates and coerces one batch, stores it durably, then publishes it to the online
    /// index. Returns the rows stored. Blocks on storage.
    pub fn ingest(&self, name: &str, batch: &RecordBatch) -> Result<usize> {
        let set = self.get(name)?;
        let batch = coerce_batch(&set.spec, batch)?;
        let deleted = set.ingest.lock().unwrap_or_else(|e| e.into_inner());
        if *deleted {
            return Err(not_found(name).into());
        }
        self.offline.append(&set.spec, &batch)?;
        set.index.apply(&batch);
        Ok(batch.num_rows())
    }

    /// Online values for an online ticket, from memory only.
    pub fn online(&self, ticket: &OnlineTicket) -> Result<RecordBatch> {
        if ticket.entities.len() > self.limits.max_online_entities {
            return Err(DomainError::TooLarge(format!(
                "{} entities requested; at most {} are allowed in one online request",
                ticket.entities.len(),
                self.limits.max_online_entities
            ))
            .into());
        }
        let set = self.get(&ticket.feature_set)?;
        let features = set.spec.resolve_features(ticket.features.as_deref())?;
        let keys = EntityKeys::from_json(set.spec.entity.entity_type, &ticket.entities)?;
        set.index.lookup(&keys, &features, now_micros())
    }

    /// Resolves a history ticket (set, entities, time range, features) without running it,
    /// so that bad requests fail before a stream starts.
    pub fn plan_history(&self, ticket: &HistoryTicket) -> Result<(Arc<FeatureSet>, HistoryQuery)> {
        let set = self.get(&ticket.feature_set)?;
        let (start, end) = ticket.time_range()?;
        let entities = ticket
            .entities
            .as_deref()
            .map(|e| EntityKeys::from_json(set.spec.entity.entity_type, e))
            .transpose()?;
        let features = set.spec.resolve_features(ticket.features.as_deref())?;
        let query = HistoryQuery {
            entities,
            start,
            end,
            features,
        };
        Ok((set, query))
    }

    /// Streams the rows of a planned history query into `sink`. Blocks on storage.
    pub fn scan_history(
        &self,
        set: &FeatureSet,
        query: &HistoryQuery,
        sink: BatchSink,
    ) -> Result<()> {
        self.offline.scan(&set.spec, query, sink)
    }

    /// Checks a training data command against the stored sets and the entity rows' schema.
    pub fn plan_training(&self, command: &TrainingDataCommand, input_schema: SchemaRef) -> Result<TrainingPlan> {
        let sets = command
            .set_names()?
            .iter()
            .map(|name| self.get(name).map(|set| set.spec.clone()))
            .collect::<Result<Vec<_>>>()?;
        TrainingPlan::new(command, sets, input_schema)
    }

    /// Streams the point-in-time join of `entity_rows` into `sink`, in input order. Blocks.
    pub fn training_data(&self, plan: &TrainingPlan, entity_rows: EntityRows, sink: BatchSink) -> Result<()> {
        let specs: Vec<&FeatureSetSpec> = plan.sets.iter().map(Arc::as_ref).collect();
        self.offline.query_relations(&specs, &mut |conn, relations| {
            training::run(conn, relations, plan, &mut *entity_rows, &self.spool_dir, &mut *sink)
        })
    }

    pub fn stats(&self, name: &str) -> Result<SetStats> {
        let set = self.get(name)?;
        self.offline.stats(&set.spec)
    }
}
