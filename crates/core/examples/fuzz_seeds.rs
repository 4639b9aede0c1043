//! Writes the generated seed files of the fuzz corpus (`fuzz/corpus/<target>/`): tickets,
//! action bodies, JSON rows, and Arrow IPC streams written by arrow, valid and patched into
//! hostile variants. The specs are hand-written seeds (`fuzz/corpus/spec/`), read from there.
//! Run by `scripts/fuzz.sh seeds`:
//! `cargo run -p featherstore-core --features test-support --example fuzz_seeds -- fuzz/corpus`

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Float32Array, LargeStringArray, RecordBatch, TimestampSecondArray, UInt32Array,
};
use featherstore_core::coerce::coerce_batch;
use featherstore_core::ipc_testing::{join, set_body_length, set_buffer, set_node, split, stream};
use featherstore_core::json::rows_body_to_batch;
use featherstore_core::FeatureSetSpec;

const ALL_TYPES_ROWS: &str = r#"{"rows": [
    {"user_id": "u1", "event_timestamp": "2026-01-01T00:00:00Z", "b": true, "i32": 7,
     "i64": -9007199254740993, "f32": 1.5, "f64": 2.25, "s": "héllo", "bin": "AAEC",
     "d": "2026-02-28", "ts": "2026-01-01T12:30:00.123456Z", "v32": [1, 2, 3], "v64": [0.5, -1e300]},
    {"user_id": "u2", "event_timestamp": "1970-01-01T00:00:00+02:00", "b": null, "v32": null}
]}"#;

const INT_KEY_ROWS: &str = r#"{"rows": [
    {"id": 42, "at": "2025-12-31T23:59:59.999999Z", "score": 0.75, "label": "a"},
    {"id": -1, "at": "2026-06-01T00:00:00Z"}
]}"#;

struct Corpus(PathBuf);

impl Corpus {
    fn write(&self, target: &str, name: &str, bytes: &[u8]) {
        let dir = self.0.join(target);
        fs::create_dir_all(&dir).expect("corpus directory");
        fs::write(dir.join(name), bytes).expect("seed file");
    }

    fn spec(&self, name: &str) -> FeatureSetSpec {
        let json = fs::read(self.0.join("spec").join(name)).expect("a spec seed");
        FeatureSetSpec::from_json(&json).expect("the spec seeds are valid")
    }
}

/// A target's input: the mode byte the target reads first, then `bytes`.
fn with_mode(mode: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![mode];
    out.extend_from_slice(bytes);
    out
}

fn rows(spec: &FeatureSetSpec, body: &str) -> RecordBatch {
    rows_body_to_batch(spec, body.as_bytes()).expect("seed rows decode")
}

fn main() {
    let corpus = Corpus(
        std::env::args()
            .nth(1)
            .map_or_else(|| Path::new("fuzz/corpus").to_path_buf(), PathBuf::from),
    );
    for (name, ticket) in [
        (
            "online",
            r#"{"type": "online", "feature_set": "all_types", "entities": ["u1", "u2"], "features": ["i32", "s"]}"#,
        ),
        (
            "online_int",
            r#"{"type": "online", "feature_set": "by_id", "entities": [42, -1, 9007199254740993]}"#,
        ),
        (
            "history",
            r#"{"type": "history", "feature_set": "all_types", "entities": ["u1"], "start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00+01:00", "features": ["ts"]}"#,
        ),
        (
            "history_open",
            r#"{"type": "history", "feature_set": "by_id"}"#,
        ),
        ("unknown_type", r#"{"type": "sql", "query": "select 1"}"#),
        (
            "online_service",
            r#"{"type": "online", "feature_service": "fraud_model", "entities": {"user_id": ["u1", "u2"], "merchant_id": [7, 9]}}"#,
        ),
        (
            "online_references",
            r#"{"type": "online", "features": ["a:x", "b:*"], "entities": {"id": [1], "k": ["x"]}, "full_names": true, "with_timestamps": true}"#,
        ),
    ] {
        corpus.write("ticket", name, ticket.as_bytes());
    }
    corpus.write("action_body", "name", br#"{"name": "user_features"}"#);
    corpus.write(
        "action_body",
        "training",
        br#"{"type": "training_data", "features": ["all_types:i32", "by_id:*"], "timestamp": "event_timestamp", "full_names": true}"#,
    );
    // The targets' mode byte picks the spec: even = all_types, odd = int_key (json_rows);
    // for arrow_ipc, bit 0 is the framing (stream or one Flight message), bit 1 the spec.
    corpus.write(
        "json_rows",
        "all_types",
        &with_mode(0, ALL_TYPES_ROWS.as_bytes()),
    );
    corpus.write(
        "json_rows",
        "int_key",
        &with_mode(1, INT_KEY_ROWS.as_bytes()),
    );

    for (spec_bit, spec_name, body, name) in [
        (0u8, "all_types.json", ALL_TYPES_ROWS, "all_types"),
        (1, "int_key.json", INT_KEY_ROWS, "int_key"),
    ] {
        let batch = rows(&corpus.spec(spec_name), body);
        let mode = spec_bit << 1;
        let bytes = stream(&[batch.clone(), batch]);
        corpus.write(
            "arrow_ipc",
            &format!("{name}_stream"),
            &with_mode(mode, &bytes),
        );
        let frames = split(&bytes);
        let mut flight = Vec::new();
        flight.extend_from_slice(&(frames[1].header.len() as u16).to_le_bytes());
        flight.extend_from_slice(&frames[1].header);
        flight.extend_from_slice(&frames[1].body);
        corpus.write(
            "arrow_ipc",
            &format!("{name}_flight"),
            &with_mode(mode | 1, &flight),
        );

        let mut hostile = frames.clone();
        set_buffer(&mut hostile[1].header, 1, 0, 1 << 60);
        let bytes = join(&hostile);
        corpus.write(
            "arrow_ipc",
            &format!("{name}_huge_buffer"),
            &with_mode(mode, &bytes),
        );
        let mut hostile = frames.clone();
        set_node(&mut hostile[1].header, 0, 1 << 62, 0);
        let bytes = join(&hostile);
        corpus.write(
            "arrow_ipc",
            &format!("{name}_huge_rows"),
            &with_mode(mode, &bytes),
        );
        let mut hostile = frames.clone();
        let declared = hostile[1].body.len() as i64 + 8;
        set_body_length(&mut hostile[1].header, declared);
        let bytes = join(&hostile);
        corpus.write(
            "arrow_ipc",
            &format!("{name}_short_body"),
            &with_mode(mode, &bytes),
        );
    }
    // Columns of the narrower and alternative types coercion accepts.
    let narrow = RecordBatch::try_from_iter([
        ("user_id", Arc::new(LargeStringArray::from(vec!["u"])) as _),
        ("i64", Arc::new(UInt32Array::from(vec![7])) as _),
        ("f64", Arc::new(Float32Array::from(vec![0.5])) as _),
        (
            "event_timestamp",
            Arc::new(TimestampSecondArray::from(vec![1_700_000_000]).with_timezone("+05:30")) as _,
        ),
    ])
    .expect("narrow batch");
    assert!(coerce_batch(&corpus.spec("all_types.json"), &narrow).is_ok());
    corpus.write(
        "arrow_ipc",
        "narrow_types",
        &with_mode(0, &stream(&[narrow])),
    );
    corpus.write("coerce", "zeros", &[0u8; 64]);
    corpus.write("coerce", "ones", &[1u8; 256]);
    corpus.write("coerce", "ramp", &(0..=255u8).collect::<Vec<_>>());
}
