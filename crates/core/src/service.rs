//! Feature services: a named, ordered list of feature references across feature sets
//! (`set:feature` or `set:*`), and the resolution of references against the stored specs that
//! online reads and training data share.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::spec::{check_name, is_valid_name, FeatureSetSpec, MAX_FEATURES};
use crate::training::OutputFeature;
use crate::{Error, Result};

/// The JSON document of a feature service:
/// `{"name": "fraud_model", "features": ["user_features:age", "merchant_features:*"], "description": "...", "tags": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureServiceSpec {
    pub name: String,
    /// `set:feature` or `set:*`, in output order.
    pub features: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Set by the server when it stores the service (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

impl FeatureServiceSpec {
    /// Parses and validates a service from JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let spec: FeatureServiceSpec = serde_json::from_slice(bytes)
            .map_err(|e| Error::invalid(format!("invalid feature service: {e}")))?;
        spec.validate()?;
        Ok(spec)
    }

    /// The name is a valid name, and every reference is well formed (whether the sets and
    /// features exist is checked against the registry: [`resolve_references`]).
    pub fn validate(&self) -> Result<()> {
        check_name("feature service", &self.name)?;
        check_references(&self.features)
    }

    /// True when both describe the same service, ignoring what the server adds on storing.
    pub fn same_definition(&self, other: &FeatureServiceSpec) -> bool {
        let strip = |s: &FeatureServiceSpec| FeatureServiceSpec {
            created_at: None,
            ..s.clone()
        };
        strip(self) == strip(other)
    }

    /// The distinct feature sets the service reads, in first-mention order.
    pub fn set_names(&self) -> Result<Vec<String>> {
        reference_sets(&self.features)
    }
}

/// One parsed reference: a feature of a set, or all of them (`feature` is `None` for `*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureRef<'a> {
    pub set: &'a str,
    pub feature: Option<&'a str>,
}

/// Parses `set:feature` or `set:*`; anything else is INVALID_ARGUMENT naming the reference.
pub fn parse_reference(reference: &str) -> Result<FeatureRef<'_>> {
    let bad = || {
        Error::invalid(format!(
            "feature reference {reference:?} must be \"set:feature\" or \"set:*\" with valid names"
        ))
    };
    let (set, feature) = reference.split_once(':').ok_or_else(bad)?;
    if !is_valid_name(set) {
        return Err(bad());
    }
    let feature = match feature {
        "*" => None,
        name if is_valid_name(name) => Some(name),
        _ => return Err(bad()),
    };
    Ok(FeatureRef { set, feature })
}

/// A list of references is non-empty, bounded, and each is well formed.
pub fn check_references(references: &[String]) -> Result<()> {
    if references.is_empty() {
        return Err(Error::invalid("at least one feature reference is needed"));
    }
    if references.len() > MAX_FEATURES {
        return Err(Error::invalid(format!(
            "{} feature references; at most {MAX_FEATURES} are allowed",
            references.len()
        )));
    }
    references
        .iter()
        .try_for_each(|r| parse_reference(r).map(drop))
}

/// The distinct set names of `references`, in first-mention order.
pub fn reference_sets(references: &[String]) -> Result<Vec<String>> {
    let mut names: Vec<String> = Vec::new();
    for reference in references {
        let set = parse_reference(reference)?.set;
        if !names.iter().any(|n| n == set) {
            names.push(set.to_string());
        }
    }
    Ok(names)
}

/// Resolves `references` against `specs` (one per name of [`reference_sets`], in that order),
/// expanding `set:*` in spec order: one output per feature, in reference order, named
/// `feature`, or `set__feature` with `full_names`. An unknown feature is NOT_FOUND; an output
/// name met twice, or one of `taken` (columns the answer has already), is INVALID_ARGUMENT.
pub fn resolve_references(
    references: &[String],
    specs: &[&FeatureSetSpec],
    full_names: bool,
    taken: &[String],
) -> Result<Vec<OutputFeature>> {
    let mut outputs: Vec<OutputFeature> = Vec::new();
    for reference in references {
        let parsed = parse_reference(reference)?;
        let set = specs
            .iter()
            .position(|s| s.name == parsed.set)
            .ok_or_else(|| Error::no_such_set(parsed.set))?;
        let spec = specs[set];
        let features: Vec<usize> = match parsed.feature {
            None => (0..spec.features.len()).collect(),
            Some(name) => vec![spec
                .feature(name)
                .map(|(i, _)| i)
                .ok_or_else(|| Error::undeclared_feature(parsed.set, name))?],
        };
        for feature in features {
            let feature_name = &spec.features[feature].name;
            let name = if full_names {
                format!("{}__{feature_name}", parsed.set)
            } else {
                feature_name.clone()
            };
            if outputs.iter().any(|o| o.name == name) || taken.contains(&name) {
                return Err(Error::invalid(format!(
                    "output column {name:?} appears twice (from {reference:?}); set \"full_names\": true to name features set__feature"
                )));
            }
            outputs.push(OutputFeature { set, feature, name });
        }
    }
    Ok(outputs)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ErrorCode;

    /// A set keyed by int64 `id` with float32 `features` (for the tests of references).
    pub(crate) fn spec(name: &str, features: &[&str]) -> FeatureSetSpec {
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
    fn parses_the_issue_example_and_round_trips() {
        let json = br#"{"name": "fraud_model", "features": ["user_features:age", "merchant_features:*"], "description": "d", "tags": {"team": "risk"}}"#;
        let service = FeatureServiceSpec::from_json(json).unwrap();
        assert_eq!(
            service.set_names().unwrap(),
            ["user_features", "merchant_features"]
        );
        let back = serde_json::to_vec(&service).unwrap();
        assert_eq!(FeatureServiceSpec::from_json(&back).unwrap(), service);
    }

    #[test]
    fn bad_services_and_references_are_invalid_arguments() {
        for json in [
            r#"{"name": "1bad", "features": ["a:x"]}"#,
            r#"{"name": "s", "features": []}"#,
            r#"{"name": "s", "features": ["a"]}"#,
            r#"{"name": "s", "features": [":x"]}"#,
            r#"{"name": "s", "features": ["a:"]}"#,
            r#"{"name": "s", "features": ["a:x:y"]}"#,
            r#"{"name": "s", "features": ["a b:x"]}"#,
            r#"{"name": "s", "features": ["a:x"], "extra": 1}"#,
            r#"{"features": ["a:x"]}"#,
        ] {
            let err = FeatureServiceSpec::from_json(json.as_bytes()).unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidArgument, "{json}: {err}");
        }
        let many: Vec<String> = (0..=MAX_FEATURES).map(|i| format!("a:f{i}")).collect();
        assert!(check_references(&many).is_err());
    }

    #[test]
    fn resolution_names_the_unknown_feature_and_refuses_clashes() {
        let (a, b) = (spec("a", &["x", "y"]), spec("b", &["x"]));
        let refs = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let outputs = resolve_references(&refs(&["b:x", "a:y"]), &[&b, &a], false, &[]).unwrap();
        assert_eq!(
            outputs.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(),
            ["x", "y"]
        );
        let err = resolve_references(&refs(&["a:nope"]), &[&a], false, &[]).unwrap_err();
        assert_eq!(err.code(), ErrorCode::NotFound);
        assert!(err.to_string().contains("nope"), "{err}");
        let err = resolve_references(&refs(&["c:x"]), &[&a], false, &[]).unwrap_err();
        assert_eq!(err.code(), ErrorCode::NotFound);
        let clash = refs(&["a:*", "b:x"]);
        let err = resolve_references(&clash, &[&a, &b], false, &[]).unwrap_err();
        assert!(err.to_string().contains("full_names"), "{err}");
        let full = resolve_references(&clash, &[&a, &b], true, &[]).unwrap();
        assert_eq!(
            full.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(),
            ["a__x", "a__y", "b__x"]
        );
        let taken = resolve_references(&refs(&["a:x"]), &[&a], false, &["x".into()]);
        assert!(taken.is_err(), "clash with a column already taken");
    }
}
