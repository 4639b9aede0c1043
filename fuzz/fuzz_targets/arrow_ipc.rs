//! Arrow IPC ingest bodies: the checks and decoding of `featherstore_core::ipc`, as an HTTP
//! stream body (mode byte even) or as one Flight message after a valid schema (mode odd:
//! `[header length: u16 LE][header][body]`), then coercion of what decoded.
#![no_main]

use arrow::array::RecordBatch;
use arrow::buffer::Buffer;
use featherstore_core::coerce::coerce_batch;
use featherstore_core::ipc::{decode_stream, Decoded, MessageDecoder};
use featherstore_core::ipc_testing::split;
use featherstore_core::FeatureSetSpec;
use featherstore_fuzz::spec;
use libfuzzer_sys::fuzz_target;

fn coerce(spec: &FeatureSetSpec, batch: &RecordBatch) {
    if let Ok(coerced) = coerce_batch(spec, batch) {
        assert_eq!(coerced.schema(), spec.arrow_schema());
        assert_eq!(coerced.num_rows(), batch.num_rows());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let spec = spec(mode >> 1);
    if mode % 2 == 0 {
        if let Ok((_, batches)) = decode_stream(&Buffer::from(data.to_vec())) {
            for batch in &batches {
                coerce(&spec, batch);
            }
        }
        return;
    }
    let Some((length, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let length = usize::from(u16::from_le_bytes(*length)).min(rest.len());
    let (header, body) = rest.split_at(length);
    // The canonical schema of the spec first, as a client would send it.
    let schema_stream =
        featherstore_core::ipc_testing::stream(&[RecordBatch::new_empty(spec.arrow_schema())]);
    let schema = &split(&schema_stream)[0];
    let mut decoder = MessageDecoder::new();
    decoder
        .decode(&schema.header, &Buffer::from(schema.body.clone()))
        .expect("the canonical schema decodes");
    if let Ok(Some(Decoded::Batch(batch))) = decoder.decode(header, &Buffer::from(body.to_vec())) {
        coerce(&spec, &batch);
    }
});
