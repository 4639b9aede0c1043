//! The `{"name": ...}` body of the Flight actions that name a feature set (get, delete,
//! versions), and `get_feature_set`'s optional `"version"`.

use serde::Deserialize;

use crate::{Error, Result};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameBody {
    name: String,
}

/// The feature set name of a `{"name": "..."}` action body.
pub fn parse_name(body: &[u8]) -> Result<String> {
    serde_json::from_slice::<NameBody>(body)
        .map(|b| b.name)
        .map_err(|e| Error::invalid(format!("invalid body: {e}; expected {{\"name\": \"...\"}}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionBody {
    name: String,
    #[serde(default)]
    version: Option<u64>,
}

/// The feature set name and optional version of a `{"name": "...", "version": n}` body.
pub fn parse_name_version(body: &[u8]) -> Result<(String, Option<u64>)> {
    serde_json::from_slice::<VersionBody>(body)
        .map(|b| (b.name, b.version))
        .map_err(|e| {
            Error::invalid(format!(
                "invalid body: {e}; expected {{\"name\": \"...\", \"version\": n}} (version optional)"
            ))
        })
}
