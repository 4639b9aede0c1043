//! The evolution rules of a feature set: which changes a stored spec accepts in place (each
//! one a new version) and which need a new feature set. The one definition, used by the
//! server and by the CLI.
//!
//! Accepted: adding features (always nullable: rows stored before read them as null),
//! `ttl_seconds`, `description`, `tags`, and a feature's `description`. Refused: removing or
//! renaming a feature, changing its type, reordering the stored features, changing the entity
//! or the timestamp column.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::spec::{FeatureSetSpec, FeatureSpec};
use crate::types::FeatureType;
use crate::{Error, Result};

/// One accepted difference between a stored spec and the wanted one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    AddFeature {
        name: String,
        #[serde(rename = "type")]
        feature_type: FeatureType,
    },
    TtlSeconds {
        from: Option<u64>,
        to: Option<u64>,
    },
    Description {
        from: Option<String>,
        to: Option<String>,
    },
    Tags {
        from: BTreeMap<String, String>,
        to: BTreeMap<String, String>,
    },
    FeatureDescription {
        feature: String,
        from: Option<String>,
        to: Option<String>,
    },
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn show<T: std::fmt::Debug>(value: &Option<T>) -> String {
            value
                .as_ref()
                .map_or_else(|| "none".to_string(), |v| format!("{v:?}"))
        }
        match self {
            Change::AddFeature { name, feature_type } => {
                write!(f, "added feature {name:?} ({feature_type})")
            }
            Change::TtlSeconds { from, to } => {
                write!(f, "ttl_seconds: {} -> {}", show(from), show(to))
            }
            Change::Description { from, to } => {
                write!(f, "description: {} -> {}", show(from), show(to))
            }
            Change::Tags { from, to } => write!(f, "tags: {from:?} -> {to:?}"),
            Change::FeatureDescription { feature, from, to } => write!(
                f,
                "description of feature {feature:?}: {} -> {}",
                show(from),
                show(to)
            ),
        }
    }
}

fn refuse(what: String) -> Error {
    Error::invalid(format!(
        "{what}: a stored feature set cannot change that; create a new feature set (under \
         another name) instead. In place, a set accepts added features, ttl_seconds, \
         description, tags and feature descriptions"
    ))
}

/// The changes that turn `stored` into `wanted`, in a fixed order (features first); empty when
/// both define the same set. INVALID_ARGUMENT naming the first refused difference otherwise.
pub fn changes(stored: &FeatureSetSpec, wanted: &FeatureSetSpec) -> Result<Vec<Change>> {
    wanted.validate()?;
    let name = &stored.name;
    if wanted.name != stored.name {
        return Err(refuse(format!(
            "the spec is of feature set {:?}, not {name:?}",
            wanted.name
        )));
    }
    if wanted.entity != stored.entity {
        return Err(refuse(format!(
            "feature set {name:?}: the entity would change from {:?} ({}) to {:?} ({})",
            stored.entity.name,
            stored.entity.entity_type,
            wanted.entity.name,
            wanted.entity.entity_type
        )));
    }
    if wanted.timestamp != stored.timestamp {
        return Err(refuse(format!(
            "feature set {name:?}: the timestamp column would change from {:?} to {:?}",
            stored.timestamp, wanted.timestamp
        )));
    }
    let mut changes = feature_changes(name, &stored.features, &wanted.features)?;
    if wanted.ttl_seconds != stored.ttl_seconds {
        changes.push(Change::TtlSeconds {
            from: stored.ttl_seconds,
            to: wanted.ttl_seconds,
        });
    }
    if wanted.description != stored.description {
        changes.push(Change::Description {
            from: stored.description.clone(),
            to: wanted.description.clone(),
        });
    }
    if wanted.tags != stored.tags {
        changes.push(Change::Tags {
            from: stored.tags.clone(),
            to: wanted.tags.clone(),
        });
    }
    Ok(changes)
}

fn feature_changes(
    set: &str,
    stored: &[FeatureSpec],
    wanted: &[FeatureSpec],
) -> Result<Vec<Change>> {
    let mut changes = Vec::new();
    let mut kept = Vec::with_capacity(stored.len());
    for old in stored {
        let Some((position, new)) = wanted.iter().enumerate().find(|(_, f)| f.name == old.name)
        else {
            return Err(refuse(format!(
                "feature set {set:?}: feature {:?} would be removed or renamed",
                old.name
            )));
        };
        if new.feature_type != old.feature_type {
            return Err(refuse(format!(
                "feature set {set:?}: the type of feature {:?} would change from {} to {}",
                old.name, old.feature_type, new.feature_type
            )));
        }
        if new.description != old.description {
            changes.push(Change::FeatureDescription {
                feature: old.name.clone(),
                from: old.description.clone(),
                to: new.description.clone(),
            });
        }
        kept.push(position);
    }
    if let Some(pair) = kept.windows(2).find(|pair| pair[0] > pair[1]) {
        return Err(refuse(format!(
            "feature set {set:?}: features {:?} and {:?} would be reordered",
            wanted[pair[1]].name, wanted[pair[0]].name
        )));
    }
    let added = wanted
        .iter()
        .filter(|f| !stored.iter().any(|old| old.name == f.name))
        .map(|f| Change::AddFeature {
            name: f.name.clone(),
            feature_type: f.feature_type,
        });
    let mut all: Vec<Change> = added.collect();
    all.append(&mut changes);
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> FeatureSetSpec {
        FeatureSetSpec::from_json(json.as_bytes()).unwrap()
    }

    const STORED: &str = r#"{"name": "s", "entity": {"name": "id", "type": "int64"},
        "features": [{"name": "a", "type": "int64"}, {"name": "b", "type": "string"}],
        "ttl_seconds": 60, "description": "d", "tags": {"team": "x"}}"#;

    #[test]
    fn same_spec_is_no_change() {
        let mut stored = spec(STORED);
        stored.version = Some(3);
        stored.created_at = Some("2026-01-01T00:00:00Z".into());
        assert_eq!(changes(&stored, &spec(STORED)).unwrap(), vec![]);
    }

    #[test]
    fn lists_accepted_changes() {
        let wanted = spec(
            r#"{"name": "s", "entity": {"name": "id", "type": "int64"},
            "features": [{"name": "a", "type": "int64", "description": "the a"},
                         {"name": "c", "type": "float32[4]"},
                         {"name": "b", "type": "string"}],
            "ttl_seconds": 120, "tags": {"team": "y"}}"#,
        );
        let found = changes(&spec(STORED), &wanted).unwrap();
        let shown: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "added feature \"c\" (float32[4])",
                "description of feature \"a\": none -> \"the a\"",
                "ttl_seconds: 60 -> 120",
                "description: \"d\" -> none",
                "tags: {\"team\": \"x\"} -> {\"team\": \"y\"}",
            ]
        );
        let json = serde_json::to_value(&found[0]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"change": "add_feature", "name": "c", "type": "float32[4]"})
        );
    }

    #[test]
    fn refuses_what_cannot_change_and_says_what_to_do() {
        let cases = [
            (
                r#""entity": {"name": "id", "type": "string"}, "features": [{"name": "a", "type": "int64"}, {"name": "b", "type": "string"}]"#,
                "the entity would change",
            ),
            (
                r#""entity": {"name": "id", "type": "int64"}, "timestamp": "ts", "features": [{"name": "a", "type": "int64"}, {"name": "b", "type": "string"}]"#,
                "the timestamp column would change",
            ),
            (
                r#""entity": {"name": "id", "type": "int64"}, "features": [{"name": "a", "type": "int64"}]"#,
                "feature \"b\" would be removed or renamed",
            ),
            (
                r#""entity": {"name": "id", "type": "int64"}, "features": [{"name": "a", "type": "int64"}, {"name": "b2", "type": "string"}]"#,
                "feature \"b\" would be removed or renamed",
            ),
            (
                r#""entity": {"name": "id", "type": "int64"}, "features": [{"name": "a", "type": "int32"}, {"name": "b", "type": "string"}]"#,
                "the type of feature \"a\" would change from int64 to int32",
            ),
            (
                r#""entity": {"name": "id", "type": "int64"}, "features": [{"name": "b", "type": "string"}, {"name": "a", "type": "int64"}]"#,
                "would be reordered",
            ),
        ];
        for (body, expected) in cases {
            let wanted = spec(&format!(r#"{{"name": "s", {body}}}"#));
            let err = changes(&spec(STORED), &wanted).unwrap_err();
            let message = err.to_string();
            assert_eq!(err.code(), crate::ErrorCode::InvalidArgument);
            assert!(message.contains(expected), "{message}");
            assert!(message.contains("create a new feature set"), "{message}");
        }
        let other =
            spec(r#"{"name": "t", "entity": {"name": "id", "type": "int64"}, "features": []}"#);
        assert!(changes(&spec(STORED), &other).is_err());
    }
}
