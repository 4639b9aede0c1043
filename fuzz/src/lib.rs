//! What the fuzz targets share: the feature sets they ingest into, and thin wrappers over the
//! public entry points, so a change of signature is fixed here once.

use arrow::array::RecordBatch;
use featherstore_core::{FeatureSetSpec, Result};

/// A set with every feature type of PROTOCOL.md, string entity (also a seed of `spec`).
pub const ALL_TYPES_SPEC: &str = include_str!("../corpus/spec/all_types.json");

/// A set keyed by int64, with a custom timestamp column (also a seed of `spec`).
pub const INT_KEY_SPEC: &str = include_str!("../corpus/spec/int_key.json");

/// The specs the ingest targets use; `pick` (a fuzz byte) chooses one.
pub fn spec(pick: u8) -> FeatureSetSpec {
    let json = if pick % 2 == 0 {
        ALL_TYPES_SPEC
    } else {
        INT_KEY_SPEC
    };
    FeatureSetSpec::from_json(json.as_bytes()).expect("the fuzz specs are valid")
}

/// An HTTP JSON ingest body (`{"rows": [...]}`) to a batch, as the server decodes it.
pub fn json_rows(spec: &FeatureSetSpec, body: &[u8]) -> Result<RecordBatch> {
    featherstore_core::json::rows_body_to_batch(spec, body)
}
