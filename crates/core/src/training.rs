//! The training data command (PROTOCOL.md, "Training data"): which features of which sets to
//! join, point in time, onto a stream of entity rows.

use serde::{Deserialize, Serialize};

use crate::spec::{FeatureSetSpec, DEFAULT_TIMESTAMP};
use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingDataCommand {
    /// Always `"training_data"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `set:feature` or `set:*`, in output order.
    pub features: Vec<String>,
    /// The entity rows' time column.
    #[serde(default = "default_timestamp")]
    pub timestamp: String,
    /// Name outputs `set__feature` instead of `feature`.
    #[serde(default)]
    pub full_names: bool,
    /// Which rows a feature value may come from for an entity row at time t.
    #[serde(default)]
    pub as_of: AsOf,
}

/// The point-in-time rule of a training data join (an extension of PROTOCOL.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AsOf {
    /// A value counts at t if its event time is <= t (PROTOCOL.md's rule).
    #[default]
    EventTime,
    /// A value counts at t if its event time is <= t and it was ingested by t: the data as
    /// the store knew it at t, so late-arriving rows do not leak into earlier rows.
    IngestTime,
}

impl AsOf {
    pub fn as_str(self) -> &'static str {
        match self {
            AsOf::EventTime => "event_time",
            AsOf::IngestTime => "ingest_time",
        }
    }
}

impl std::str::FromStr for AsOf {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "event_time" => Ok(AsOf::EventTime),
            "ingest_time" => Ok(AsOf::IngestTime),
            other => Err(Error::invalid(format!(
                "as_of {other:?} is not one of \"event_time\", \"ingest_time\""
            ))),
        }
    }
}

fn default_timestamp() -> String {
    DEFAULT_TIMESTAMP.to_string()
}

/// One output column: feature `feature` (index into the spec) of set `set` (index into the
/// plan's sets), named `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFeature {
    pub set: usize,
    pub feature: usize,
    pub name: String,
}

impl TrainingDataCommand {
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let command: TrainingDataCommand = serde_json::from_slice(bytes)
            .map_err(|e| Error::invalid(format!("invalid training_data command: {e}")))?;
        if command.kind != "training_data" {
            return Err(Error::invalid(format!(
                "unknown command type {:?}; expected \"training_data\"",
                command.kind
            )));
        }
        if command.features.is_empty() {
            return Err(Error::invalid("training_data needs at least one feature"));
        }
        Ok(command)
    }

    /// The distinct set names referenced, in first-mention order.
    pub fn set_names(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = Vec::new();
        for reference in &self.features {
            let (set, _) = split_reference(reference)?;
            if !names.iter().any(|n| n == set) {
                names.push(set.to_string());
            }
        }
        Ok(names)
    }

    /// Resolves every reference against `specs` (in [`set_names`](Self::set_names) order),
    /// expanding `set:*` in spec order. Output names must not clash with each other or with
    /// `input_columns`.
    pub fn resolve(
        &self,
        specs: &[&FeatureSetSpec],
        input_columns: &[String],
    ) -> Result<Vec<OutputFeature>> {
        let mut outputs: Vec<OutputFeature> = Vec::new();
        for reference in &self.features {
            let (set_name, feature_name) = split_reference(reference)?;
            let set = specs
                .iter()
                .position(|s| s.name == set_name)
                .expect("specs follow set_names");
            let spec = specs[set];
            let features: Vec<usize> = if feature_name == "*" {
                (0..spec.features.len()).collect()
            } else {
                vec![spec
                    .feature(feature_name)
                    .map(|(i, _)| i)
                    .ok_or_else(|| Error::undeclared_feature(set_name, feature_name))?]
            };
            for feature in features {
                let feature_name = &spec.features[feature].name;
                let name = if self.full_names {
                    format!("{set_name}__{feature_name}")
                } else {
                    feature_name.clone()
                };
                if outputs.iter().any(|o| o.name == name) || input_columns.contains(&name) {
                    return Err(Error::invalid(format!(
                        "output column {name:?} appears twice (from {reference:?}); set \"full_names\": true to name features set__feature"
                    )));
                }
                outputs.push(OutputFeature { set, feature, name });
            }
        }
        Ok(outputs)
    }
}

fn split_reference(reference: &str) -> Result<(&str, &str)> {
    reference
        .split_once(':')
        .filter(|(s, f)| !s.is_empty() && !f.is_empty())
        .ok_or_else(|| {
            Error::invalid(format!(
                "feature reference {reference:?} must be \"set:feature\" or \"set:*\""
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, features: &[&str]) -> FeatureSetSpec {
        let features: Vec<_> = features
            .iter()
            .map(|f| serde_json::json!({"name": f, "type": "float32"}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "name": name, "entity": {"name": "id", "type": "int64"}, "features": features
        }))
        .unwrap()
    }

    #[test]
    fn resolves_in_order_asked_and_expands_stars() {
        let command = TrainingDataCommand::from_json(
            br#"{"type": "training_data", "features": ["b:y", "a:*"]}"#,
        )
        .unwrap();
        assert_eq!(command.timestamp, "event_timestamp");
        assert_eq!(command.set_names().unwrap(), ["b", "a"]);
        let (a, b) = (spec("a", &["x", "z"]), spec("b", &["y"]));
        let outputs = command.resolve(&[&b, &a], &[]).unwrap();
        let names: Vec<_> = outputs.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["y", "x", "z"]);
        assert_eq!(
            outputs[1],
            OutputFeature {
                set: 1,
                feature: 0,
                name: "x".into()
            }
        );
    }

    #[test]
    fn clashes_and_bad_references_are_errors() {
        let (a, b) = (spec("a", &["x"]), spec("b", &["x"]));
        let clash = TrainingDataCommand::from_json(
            br#"{"type": "training_data", "features": ["a:x", "b:x"]}"#,
        )
        .unwrap();
        assert!(clash
            .resolve(&[&a, &b], &[])
            .unwrap_err()
            .to_string()
            .contains("full_names"));
        let full = TrainingDataCommand {
            full_names: true,
            ..clash
        };
        let names: Vec<_> = full
            .resolve(&[&a, &b], &[])
            .unwrap()
            .into_iter()
            .map(|o| o.name)
            .collect();
        assert_eq!(names, ["a__x", "b__x"]);
        let label =
            TrainingDataCommand::from_json(br#"{"type": "training_data", "features": ["a:x"]}"#)
                .unwrap();
        assert!(
            label.resolve(&[&a], &["x".into()]).is_err(),
            "clash with a passthrough column"
        );
        assert!(
            TrainingDataCommand::from_json(br#"{"type": "training_data", "features": ["x"]}"#)
                .unwrap()
                .set_names()
                .is_err()
        );
        assert!(
            TrainingDataCommand::from_json(br#"{"type": "sql", "features": ["a:x"]}"#).is_err()
        );
        let missing =
            TrainingDataCommand::from_json(br#"{"type": "training_data", "features": ["a:nope"]}"#)
                .unwrap();
        assert_eq!(
            missing.resolve(&[&a], &[]).unwrap_err().code(),
            crate::ErrorCode::NotFound
        );
    }
}
