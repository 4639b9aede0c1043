//! Online reads across feature sets: a list of feature references (a feature service's, or a
//! request's) resolved once into an [`OnlinePlan`], then answered for any entity rows with one
//! [`OnlineSet::lookup`](crate::online::OnlineSet::lookup) per set, so that any online
//! backend serves them.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow::datatypes::{Field, FieldRef, Schema, SchemaRef};
use featherstore_core::service::{reference_sets, resolve_references};
use featherstore_core::{EntityKeys, EntityType, Error as DomainError, FeatureSetSpec};
use serde_json::Value;

use crate::feature_store::FeatureSet;
use crate::Result;

/// The suffix of the per-set event time columns `with_timestamps` adds: `set__event_timestamp`.
pub const TIMESTAMP_SUFFIX: &str = "__event_timestamp";

/// A resolved read across sets: which features of which set, in which output column.
pub struct OnlinePlan {
    /// The registry generation the plan was resolved at (see `FeatureStore::online_plan`).
    pub(crate) generation: u64,
    /// The distinct sets read, in first-mention order.
    sets: Vec<SetRead>,
    /// The key columns, in the order their sets are first referenced: name and type.
    keys: Vec<(String, EntityType)>,
    /// Per output feature: the set (index into `sets`) and its column in that set's lookup.
    outputs: Vec<(usize, usize)>,
    schema: SchemaRef,
    /// `schema` followed by each set's `set__event_timestamp`.
    schema_with_timestamps: SchemaRef,
}

struct SetRead {
    set: Arc<FeatureSet>,
    /// Indices into the set's features, in the order the lookup returns them.
    features: Vec<usize>,
    /// Index into `OnlinePlan::keys` of the set's entity.
    key: usize,
}

impl OnlinePlan {
    /// Resolves `references` against `lookup` (the registry): an unknown set or feature is
    /// NOT_FOUND; two sets keyed by one entity name of different types, or output names that
    /// clash (without `full_names`), are INVALID_ARGUMENT.
    pub(crate) fn resolve(
        references: &[String],
        full_names: bool,
        generation: u64,
        lookup: impl Fn(&str) -> Result<Arc<FeatureSet>>,
    ) -> Result<Self> {
        let sets: Vec<Arc<FeatureSet>> = reference_sets(references)?
            .iter()
            .map(|name| lookup(name))
            .collect::<Result<_>>()?;
        let mut keys: Vec<(String, EntityType)> = Vec::new();
        let mut key_of_set = Vec::with_capacity(sets.len());
        for set in &sets {
            let entity = &set.spec.entity;
            let key = match keys.iter().position(|(name, _)| *name == entity.name) {
                Some(key) if keys[key].1 != entity.entity_type => {
                    return Err(DomainError::invalid(format!(
                        "feature sets read together key entity {:?} by different types ({} and {}): a request has one key column per entity name",
                        entity.name, keys[key].1, entity.entity_type
                    ))
                    .into())
                }
                Some(key) => key,
                None => {
                    keys.push((entity.name.clone(), entity.entity_type));
                    keys.len() - 1
                }
            };
            key_of_set.push(key);
        }
        let specs: Vec<&FeatureSetSpec> = sets.iter().map(|s| s.spec.as_ref()).collect();
        let key_names: Vec<String> = keys.iter().map(|(name, _)| name.clone()).collect();
        let resolved = resolve_references(references, &specs, full_names, &key_names)?;

        let mut features: Vec<Vec<usize>> = vec![Vec::new(); sets.len()];
        let mut outputs = Vec::with_capacity(resolved.len());
        let mut fields: Vec<FieldRef> = keys
            .iter()
            .map(|(name, entity_type)| {
                Arc::new(Field::new(name, entity_type.arrow_type(), false)) as FieldRef
            })
            .collect();
        for output in &resolved {
            let set_features = &mut features[output.set];
            set_features.push(output.feature);
            // Column 0 of a lookup is the entity; features follow in the order asked.
            outputs.push((output.set, set_features.len()));
            let field = specs[output.set].projected_schema(&[output.feature], true);
            fields.push(Arc::new(
                field.field(1).clone().with_name(output.name.as_str()),
            ));
        }
        let schema = Arc::new(Schema::new(fields.clone()));
        for spec in &specs {
            let name = format!("{}{TIMESTAMP_SUFFIX}", spec.name);
            if fields.iter().any(|f| *f.name() == name) {
                return Err(DomainError::invalid(format!(
                    "output column {name:?} appears twice: a feature and \"with_timestamps\" both name it"
                ))
                .into());
            }
            let timestamp = spec.projected_schema(&[], true);
            fields.push(Arc::new(timestamp.field(1).clone().with_name(name)));
        }
        let sets = sets
            .into_iter()
            .zip(features)
            .zip(key_of_set)
            .map(|((set, features), key)| SetRead { set, features, key })
            .collect();
        Ok(OnlinePlan {
            generation,
            sets,
            keys,
            outputs,
            schema,
            schema_with_timestamps: Arc::new(Schema::new(fields)),
        })
    }

    /// The names of the sets read, in first-mention order (for access checks and spans).
    pub fn set_names(&self) -> impl Iterator<Item = &str> {
        self.sets.iter().map(|s| s.set.spec.name.as_str())
    }

    /// The typed key columns of a request's entity rows, in plan order: every key column the
    /// sets need, none other, all of one length.
    pub(crate) fn keys(&self, entities: &BTreeMap<String, Vec<Value>>) -> Result<Vec<EntityKeys>> {
        if let Some(extra) = entities
            .keys()
            .find(|name| !self.keys.iter().any(|(key, _)| key == *name))
        {
            return Err(DomainError::invalid(format!(
                "entities has a key column {extra:?} that no referenced feature set is keyed by; expected {}",
                self.key_list()
            ))
            .into());
        }
        self.keys
            .iter()
            .map(|(name, entity_type)| {
                let values = entities.get(name).ok_or_else(|| {
                    DomainError::invalid(format!(
                        "entities lacks the key column {name:?}; expected {}",
                        self.key_list()
                    ))
                })?;
                Ok(EntityKeys::from_json_column(*entity_type, name, values)?)
            })
            .collect()
    }

    fn key_list(&self) -> String {
        let names: Vec<String> = self.keys.iter().map(|(n, _)| format!("{n:?}")).collect();
        format!("one key column per entity: {}", names.join(", "))
    }

    /// The answer for `keys` (from [`keys`](Self::keys)), one row per entity row: key columns,
    /// features in reference order, then with `with_timestamps` each set's event time.
    pub(crate) fn read(
        &self,
        keys: &[EntityKeys],
        with_timestamps: bool,
        now: i64,
    ) -> Result<RecordBatch> {
        let lookups = self
            .sets
            .iter()
            .map(|read| read.set.index.lookup(&keys[read.key], &read.features, now))
            .collect::<Result<Vec<_>>>()?;
        let mut columns: Vec<ArrayRef> =
            Vec::with_capacity(self.schema_with_timestamps.fields().len());
        for key in 0..self.keys.len() {
            // Every key is some set's entity: its lookup's first column holds the keys.
            let set = self.sets.iter().position(|read| read.key == key);
            let lookup = set.and_then(|set| lookups.get(set));
            let column = lookup.map(|batch| batch.column(0).clone()).ok_or_else(|| {
                crate::Error::Corrupt(format!("key column {key} of an online plan has no set"))
            })?;
            columns.push(column);
        }
        for &(set, column) in &self.outputs {
            columns.push(lookups[set].column(column).clone());
        }
        let schema = if with_timestamps {
            for lookup in &lookups {
                columns.push(lookup.column(lookup.num_columns() - 1).clone());
            }
            &self.schema_with_timestamps
        } else {
            &self.schema
        };
        let rows = keys.first().map_or(0, EntityKeys::len);
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(
            schema.clone(),
            columns,
            &options,
        )?)
    }
}
