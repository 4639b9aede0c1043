//! Feature set specs: the JSON document of PROTOCOL.md, its validation and its Arrow schema.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::types::{timestamp_type, EntityType, FeatureType};
use crate::{Error, Result};

pub const DEFAULT_TIMESTAMP: &str = "event_timestamp";
const MAX_NAME_LEN: usize = 128;
/// Bounds the width of a set so a spec cannot ask for unbounded per-row work.
pub(crate) const MAX_FEATURES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntitySpec {
    pub name: String,
    #[serde(rename = "type")]
    pub entity_type: EntityType,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub feature_type: FeatureType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSetSpec {
    pub name: String,
    pub entity: EntitySpec,
    #[serde(default = "default_timestamp")]
    pub timestamp: String,
    pub features: Vec<FeatureSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Set by the server when it stores the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Set by the server when it stores the spec (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

fn default_timestamp() -> String {
    DEFAULT_TIMESTAMP.to_string()
}

/// `[A-Za-z_][A-Za-z0-9_]{0,127}`
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= MAX_NAME_LEN
}

pub(crate) fn check_name(what: &str, name: &str) -> Result<()> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid {what} name {name:?}: expected [A-Za-z_][A-Za-z0-9_]{{0,127}}"
        )))
    }
}

impl FeatureSetSpec {
    /// Parses and validates a spec from JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let spec: FeatureSetSpec = serde_json::from_slice(bytes)
            .map_err(|e| Error::invalid(format!("invalid feature set spec: {e}")))?;
        spec.validate()?;
        Ok(spec)
    }

    pub fn validate(&self) -> Result<()> {
        check_name("feature set", &self.name)?;
        check_name("entity", &self.entity.name)?;
        check_name("timestamp", &self.timestamp)?;
        if self.entity.name == self.timestamp {
            return Err(Error::invalid(format!(
                "entity and timestamp columns must differ, both are {:?}",
                self.timestamp
            )));
        }
        if self.features.len() > MAX_FEATURES {
            return Err(Error::invalid(format!(
                "feature set {:?} declares {} features; at most {MAX_FEATURES} are allowed",
                self.name,
                self.features.len()
            )));
        }
        let mut seen = HashSet::new();
        for feature in &self.features {
            check_name("feature", &feature.name)?;
            if feature.name == self.entity.name || feature.name == self.timestamp {
                return Err(Error::invalid(format!(
                    "feature {:?} clashes with the entity or timestamp column name",
                    feature.name
                )));
            }
            if !seen.insert(feature.name.as_str()) {
                return Err(Error::invalid(format!(
                    "feature {:?} is declared twice",
                    feature.name
                )));
            }
        }
        if let Some(ttl) = self.ttl_seconds {
            if ttl == 0 || ttl > i64::MAX as u64 / 1_000_000 {
                return Err(Error::invalid(format!(
                    "ttl_seconds {ttl} is out of range: expected a positive number of seconds"
                )));
            }
        }
        Ok(())
    }

    /// True when both describe the same set, ignoring what the server adds on storing.
    pub fn same_definition(&self, other: &FeatureSetSpec) -> bool {
        let strip = |s: &FeatureSetSpec| FeatureSetSpec {
            version: None,
            created_at: None,
            ..s.clone()
        };
        strip(self) == strip(other)
    }

    pub fn feature(&self, name: &str) -> Option<(usize, &FeatureSpec)> {
        self.features
            .iter()
            .enumerate()
            .find(|(_, f)| f.name == name)
    }

    /// Indices of the named features, in the order asked; all features when `None`.
    pub fn resolve_features(&self, names: Option<&[String]>) -> Result<Vec<usize>> {
        match names {
            None => Ok((0..self.features.len()).collect()),
            Some(names) => names
                .iter()
                .map(|name| {
                    self.feature(name)
                        .map(|(i, _)| i)
                        .ok_or_else(|| Error::undeclared_feature(&self.name, name))
                })
                .collect(),
        }
    }

    /// TTL in microseconds, if any.
    pub fn ttl_micros(&self) -> Option<i64> {
        self.ttl_seconds.map(|s| s as i64 * 1_000_000)
    }

    pub(crate) fn entity_field(&self) -> Field {
        Field::new(
            &self.entity.name,
            self.entity.entity_type.arrow_type(),
            false,
        )
    }

    pub(crate) fn timestamp_field(&self, nullable: bool) -> Field {
        Field::new(&self.timestamp, timestamp_type(), nullable)
    }

    pub(crate) fn feature_field(&self, index: usize) -> Field {
        let f = &self.features[index];
        Field::new(&f.name, f.feature_type.arrow_type(), true)
    }

    /// The canonical schema of stored rows: entity, every feature in spec order, timestamp.
    pub fn arrow_schema(&self) -> SchemaRef {
        self.projected_schema(&(0..self.features.len()).collect::<Vec<_>>(), false)
    }

    /// The schema of a retrieval result: entity, the chosen features, then the timestamp
    /// (nullable for online reads, where an unknown entity has none).
    pub fn projected_schema(&self, features: &[usize], nullable_timestamp: bool) -> SchemaRef {
        let mut fields = Vec::with_capacity(features.len() + 2);
        fields.push(self.entity_field());
        fields.extend(features.iter().map(|&i| self.feature_field(i)));
        fields.push(self.timestamp_field(nullable_timestamp));
        Arc::new(Schema::new(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{
      "name": "user_features",
      "entity": {"name": "user_id", "type": "string"},
      "timestamp": "event_timestamp",
      "features": [
        {"name": "age", "type": "int64"},
        {"name": "ctr_7d", "type": "float32", "description": "click-through rate, 7 days"},
        {"name": "embedding", "type": "float32[64]"}
      ],
      "ttl_seconds": 86400,
      "description": "Profile features of a user",
      "tags": {"team": "growth"}
    }"#;

    #[test]
    fn parses_protocol_example() {
        let spec = FeatureSetSpec::from_json(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(spec.features.len(), 3);
        assert_eq!(spec.ttl_micros(), Some(86_400_000_000));
        let schema = spec.arrow_schema();
        let names: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            ["user_id", "age", "ctr_7d", "embedding", "event_timestamp"]
        );
        let back: FeatureSetSpec =
            serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        assert!(back.same_definition(&spec));
    }

    #[test]
    fn rejects_bad_specs_with_reasons() {
        let cases = [
            (r#""name": "1bad""#, "feature set name"),
            (r#""name": "x", "color": 1"#, "unknown field"),
            (r#""name": "x", "ttl_seconds": 0"#, "ttl_seconds"),
        ];
        for (head, expected) in cases {
            let json = format!(
                r#"{{{head}, "entity": {{"name": "id", "type": "int64"}}, "features": []}}"#
            );
            let err = FeatureSetSpec::from_json(json.as_bytes()).unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
        }
        let dup = r#"{"name": "x", "entity": {"name": "id", "type": "int64"},
            "features": [{"name": "a", "type": "int64"}, {"name": "a", "type": "bool"}]}"#;
        assert!(FeatureSetSpec::from_json(dup.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("twice"));
        let clash = r#"{"name": "x", "entity": {"name": "id", "type": "int64"},
            "features": [{"name": "id", "type": "int64"}]}"#;
        assert!(FeatureSetSpec::from_json(clash.as_bytes()).is_err());
        let bad_entity =
            r#"{"name": "x", "entity": {"name": "id", "type": "float32"}, "features": []}"#;
        assert!(FeatureSetSpec::from_json(bad_entity.as_bytes()).is_err());
    }
}
