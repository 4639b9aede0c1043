//! What the fuzz targets share: the feature sets they ingest into, and thin wrappers over the
//! public entry points, so a change of signature is fixed here once.

use arrow::array::RecordBatch;
use featherstore_core::{FeatureSetSpec, Result};
use serde_json::{Map, Value};

/// A set with every feature type of PROTOCOL.md, string entity.
pub const ALL_TYPES_SPEC: &str = r#"{
    "name": "all_types",
    "entity": {"name": "user_id", "type": "string"},
    "features": [
        {"name": "b", "type": "bool"},
        {"name": "i32", "type": "int32"},
        {"name": "i64", "type": "int64"},
        {"name": "f32", "type": "float32"},
        {"name": "f64", "type": "float64"},
        {"name": "s", "type": "string"},
        {"name": "bin", "type": "binary"},
        {"name": "d", "type": "date"},
        {"name": "ts", "type": "timestamp"},
        {"name": "v32", "type": "float32[3]"},
        {"name": "v64", "type": "float64[2]"}
    ]
}"#;

/// A set keyed by int64, with a custom timestamp column.
pub const INT_KEY_SPEC: &str = r#"{
    "name": "by_id",
    "entity": {"name": "id", "type": "int64"},
    "timestamp": "at",
    "features": [
        {"name": "score", "type": "float64"},
        {"name": "label", "type": "string"}
    ]
}"#;

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
pub fn json_rows(spec: &FeatureSetSpec, body: &[u8]) -> Option<Result<RecordBatch>> {
    #[derive(serde::Deserialize)]
    struct RowsBody {
        rows: Vec<Map<String, Value>>,
    }
    let body: RowsBody = serde_json::from_slice(body).ok()?;
    Some(featherstore_core::json::rows_to_batch(spec, &body.rows))
}
