//! HTTP JSON ingest bodies (`{"rows": [...]}`): rows to a batch, coercion, JSON back out.
#![no_main]

use featherstore_core::coerce::coerce_batch;
use featherstore_core::json::write_rows;
use featherstore_fuzz::{json_rows, spec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let spec = spec(pick);
    let Ok(batch) = json_rows(&spec, body) else {
        return;
    };
    assert_eq!(batch.schema(), spec.arrow_schema());
    let coerced = coerce_batch(&spec, &batch).expect("a batch built from JSON rows coerces");
    assert_eq!(coerced.num_rows(), batch.num_rows());
    let mut out = Vec::new();
    write_rows(&coerced, &mut out, &mut true).expect("rows encode as JSON");
});
