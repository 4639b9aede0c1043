//! The `{"name": ...}` body of the Flight actions that name a feature set (get, delete).

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
