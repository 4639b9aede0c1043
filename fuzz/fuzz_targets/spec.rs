//! Feature set specs (create/update actions, `POST /v1/feature-sets`).
#![no_main]

use arrow::array::RecordBatch;
use featherstore_core::coerce::coerce_batch;
use featherstore_core::FeatureSetSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = FeatureSetSpec::from_json(data) else {
        return;
    };
    // A stored spec is written back as JSON and read again: it must come back the same.
    let json = serde_json::to_vec(&spec).expect("a spec serializes");
    let again = FeatureSetSpec::from_json(&json).expect("a valid spec's JSON parses");
    assert_eq!(again, spec);
    assert!(again.same_definition(&spec));
    let _ = spec.ttl_micros();
    // Its canonical schema is well formed: an empty batch of it passes coercion unchanged.
    let schema = spec.arrow_schema();
    assert_eq!(schema.fields().len(), spec.features.len() + 2);
    let empty = RecordBatch::new_empty(schema.clone());
    let coerced = coerce_batch(&spec, &empty).expect("the canonical schema coerces");
    assert_eq!(coerced.schema(), schema);
    let all: Vec<usize> = (0..spec.features.len()).collect();
    let _ = spec.projected_schema(&all, true);
    let names: Vec<String> = spec.features.iter().map(|f| f.name.clone()).collect();
    assert_eq!(spec.resolve_features(Some(&names)).ok(), Some(all));
});
