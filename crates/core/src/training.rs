//! The training data command (PROTOCOL.md, "Training data"): which features of which sets to
//! join, point in time, onto a stream of entity rows.

use serde::{Deserialize, Serialize};

use crate::service::{reference_sets, resolve_references};
use crate::spec::{FeatureSetSpec, DEFAULT_TIMESTAMP};
use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingDataCommand {
    /// Always `"training_data"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `set:feature` or `set:*`, in output order; empty when `feature_service` is given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    /// A stored feature service whose references are read in place of `features`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_service: Option<String>,
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
        match (&command.feature_service, command.features.is_empty()) {
            (None, true) => Err(Error::invalid(
                "invalid training_data command: it needs \"features\" (at least one) or \"feature_service\"",
            )),
            (Some(_), false) => Err(Error::invalid(
                "invalid training_data command: it takes \"features\" or \"feature_service\", not both",
            )),
            _ => Ok(command),
        }
    }

    /// The distinct set names referenced, in first-mention order.
    pub fn set_names(&self) -> Result<Vec<String>> {
        reference_sets(&self.features)
    }

    /// Resolves every reference against `specs` (in [`set_names`](Self::set_names) order),
    /// expanding `set:*` in spec order. Output names must not clash with each other or with
    /// `input_columns`.
    pub fn resolve(
        &self,
        specs: &[&FeatureSetSpec],
        input_columns: &[String],
    ) -> Result<Vec<OutputFeature>> {
        resolve_references(&self.features, specs, self.full_names, input_columns)
    }

    /// The command reading `references` (a feature service's) in place of its
    /// `feature_service`.
    pub fn with_service_features(self, references: Vec<String>) -> Self {
        TrainingDataCommand {
            features: references,
            feature_service: None,
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::tests::spec;

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
        let both = br#"{"type": "training_data", "features": ["a:x"], "feature_service": "s"}"#;
        assert!(TrainingDataCommand::from_json(both).is_err());
        let service =
            TrainingDataCommand::from_json(br#"{"type": "training_data", "feature_service": "s"}"#)
                .unwrap();
        assert_eq!(service.feature_service.as_deref(), Some("s"));
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
