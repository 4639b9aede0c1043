//! Writes the seed corpus of every target into `corpus/<target>/` (run from `fuzz/`:
//! `scripts/fuzz.sh seeds`). Seeds are valid inputs of each format plus a few hostile
//! variants, so the fuzzer starts from the interesting structure rather than from nothing.

use std::fs;
use std::path::Path;

use arrow::array::RecordBatch;
use featherstore_core::ipc_testing::{join, set_body_length, set_buffer, set_node, split, stream};
use featherstore_fuzz::{json_rows, spec};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("corpus").join(target);
    fs::create_dir_all(&dir).expect("corpus directory");
    fs::write(dir.join(name), bytes).expect("seed file");
}

fn with_mode(mode: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![mode];
    out.extend_from_slice(bytes);
    out
}

const ALL_TYPES_ROWS: &str = r#"{"rows": [
    {"user_id": "u1", "event_timestamp": "2026-01-01T00:00:00Z", "b": true, "i32": 7,
     "i64": -9007199254740993, "f32": 1.5, "f64": 2.25, "s": "héllo", "bin": "AAEC",
     "d": "2026-02-28", "ts": "2026-01-01T12:30:00.123456Z", "v32": [1, 2, 3], "v64": [0.5, null]},
    {"user_id": "u2", "event_timestamp": "1970-01-01T00:00:00+02:00", "b": null, "v32": null}
]}"#;

const INT_KEY_ROWS: &str = r#"{"rows": [
    {"id": 42, "at": "2025-12-31T23:59:59.999999Z", "score": 0.75, "label": "a"},
    {"id": -1, "at": "2026-06-01T00:00:00Z"}
]}"#;

fn main() {
    for (name, ticket) in [
        ("online", r#"{"type": "online", "feature_set": "all_types", "entities": ["u1", "u2"], "features": ["i32", "s"]}"#),
        ("online_int", r#"{"type": "online", "feature_set": "by_id", "entities": [42, -1, 9007199254740993]}"#),
        ("history", r#"{"type": "history", "feature_set": "all_types", "entities": ["u1"], "start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00+01:00", "features": ["ts"]}"#),
        ("history_open", r#"{"type": "history", "feature_set": "by_id"}"#),
        ("unknown_type", r#"{"type": "sql", "query": "select 1"}"#),
    ] {
        write("ticket", name, ticket.as_bytes());
    }
    write("spec", "all_types", featherstore_fuzz::ALL_TYPES_SPEC.as_bytes());
    write("spec", "int_key", featherstore_fuzz::INT_KEY_SPEC.as_bytes());
    write(
        "spec",
        "full",
        br#"{"name": "s", "entity": {"name": "e", "type": "string"}, "timestamp": "t", "ttl_seconds": 3600, "description": "d", "tags": {"team": "ml"}, "features": [{"name": "x", "type": "float64[4]", "description": "v"}]}"#,
    );
    write("action_body", "name", br#"{"name": "user_features"}"#);
    write(
        "action_body",
        "training",
        br#"{"type": "training_data", "features": ["all_types:i32", "by_id:*"], "timestamp": "event_timestamp", "full_names": true}"#,
    );
    write("json_rows", "all_types", &with_mode(0, ALL_TYPES_ROWS.as_bytes()));
    write("json_rows", "int_key", &with_mode(1, INT_KEY_ROWS.as_bytes()));

    // Arrow IPC: the canonical batches of both specs, then hostile variants of them.
    for (pick, rows, name) in [(0u8, ALL_TYPES_ROWS, "all_types"), (1, INT_KEY_ROWS, "int_key")] {
        let spec = spec(pick);
        let batch = json_rows(&spec, rows.as_bytes())
            .expect("a rows body")
            .expect("seed rows decode");
        let mode = pick << 1;
        let bytes = stream(&[batch.clone(), batch.clone()]);
        write("arrow_ipc", &format!("{name}_stream"), &with_mode(mode, &bytes));
        let frames = split(&bytes);
        // Flight mode: one record batch message after the canonical schema.
        let mut flight = Vec::new();
        flight.extend_from_slice(&(frames[1].header.len() as u16).to_le_bytes());
        flight.extend_from_slice(&frames[1].header);
        flight.extend_from_slice(&frames[1].body);
        write("arrow_ipc", &format!("{name}_flight"), &with_mode(mode | 1, &flight));

        let mut hostile = frames.clone();
        set_buffer(&mut hostile[1].header, 1, 0, 1 << 60);
        write("arrow_ipc", &format!("{name}_huge_buffer"), &with_mode(mode, &join(&hostile)));
        let mut hostile = frames.clone();
        set_node(&mut hostile[1].header, 0, 1 << 62, 0);
        write("arrow_ipc", &format!("{name}_huge_rows"), &with_mode(mode, &join(&hostile)));
        let mut hostile = frames.clone();
        let declared = hostile[1].body.len() as i64 + 8;
        set_body_length(&mut hostile[1].header, declared);
        write("arrow_ipc", &format!("{name}_short_body"), &with_mode(mode, &join(&hostile)));
    }
    // Columns of the narrower and alternative types coercion accepts.
    let spec = spec(0);
    let narrow = RecordBatch::try_from_iter([
        ("user_id", std::sync::Arc::new(arrow::array::LargeStringArray::from(vec!["u"])) as _),
        ("i64", std::sync::Arc::new(arrow::array::UInt32Array::from(vec![7])) as _),
        ("f64", std::sync::Arc::new(arrow::array::Float32Array::from(vec![0.5])) as _),
        (
            "event_timestamp",
            std::sync::Arc::new(
                arrow::array::TimestampSecondArray::from(vec![1_700_000_000])
                    .with_timezone("+05:30"),
            ) as _,
        ),
    ])
    .expect("narrow batch");
    assert!(featherstore_core::coerce::coerce_batch(&spec, &narrow).is_ok());
    write("arrow_ipc", "narrow_types", &with_mode(0, &stream(&[narrow])));
    write("coerce", "zeros", &[0u8; 64]);
    write("coerce", "ones", &[1u8; 256]);
    write("coerce", "ramp", &(0..=255u8).collect::<Vec<_>>());
}
