//! JSON rows on the HTTP API: encoding result rows (`write_rows`, the body of `POST
//! /v1/online` and `/v1/history` answers) and decoding an ingest body (`rows_body_to_batch`,
//! `POST /v1/feature-sets/{name}/rows`), 10,000 rows of the ten-feature mixed set; and encoding
//! 10,000 rows of an online answer of the serving budget's shape (an int64 key, 16 float32
//! features, the event time). Throughput is rows/s.
//!
//! `cargo bench -p featherstore-core --bench json_rows`

use std::hint::black_box;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Array, Int64Array, RecordBatch, TimestampMicrosecondArray};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use featherstore_core::coerce::coerce_batch;
use featherstore_core::json::{rows_body_to_batch, write_rows};
use featherstore_testkit::fixtures::{mixed_batch, mixed_spec, Rng};

const ROWS: usize = 10_000;

/// A `{"rows": [...]}` body of `batch`, as the server writes it.
fn rows_body(batch: &arrow::array::RecordBatch) -> Vec<u8> {
    let mut body = b"{\"rows\": [".to_vec();
    write_rows(batch, &mut body, &mut true).expect("encodable rows");
    body.extend_from_slice(b"]}");
    body
}

/// `rows` rows as an online read answers them: the key, 16 float32 features in [0, 1), and
/// event times with microseconds.
fn online_answer(rows: usize) -> RecordBatch {
    let mut rng = Rng(5);
    let mut columns: Vec<(String, ArrayRef)> = vec![(
        "id".into(),
        Arc::new(Int64Array::from_iter_values(0..rows as i64)),
    )];
    for f in 0..16 {
        let values = (0..rows).map(|_| rng.below(1 << 24) as f32 / (1 << 24) as f32);
        columns.push((
            format!("f{f}"),
            Arc::new(Float32Array::from_iter_values(values)),
        ));
    }
    let times = (0..rows).map(|_| 1_780_000_000_000_000 + rng.below(1 << 40) as i64);
    columns.push((
        "event_timestamp".into(),
        Arc::new(TimestampMicrosecondArray::from_iter_values(times).with_timezone("UTC")),
    ));
    RecordBatch::try_from_iter(columns).expect("a valid batch")
}

fn json_rows(c: &mut Criterion) {
    let spec = mixed_spec();
    let canonical = coerce_batch(&spec, &mixed_batch(&mut Rng(11), 0, ROWS)).expect("valid");
    let body = rows_body(&canonical);
    let mut group = c.benchmark_group("json_rows");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("encode_mixed_10", |b| {
        let mut out = Vec::with_capacity(body.len());
        b.iter(|| {
            out.clear();
            write_rows(black_box(&canonical), &mut out, &mut true).expect("encodable rows");
            out.len()
        })
    });
    let online = online_answer(ROWS);
    group.bench_function("encode_online_16_float32", |b| {
        let mut out = Vec::new();
        b.iter(|| {
            out.clear();
            write_rows(black_box(&online), &mut out, &mut true).expect("encodable rows");
            out.len()
        })
    });
    group.bench_function("decode_mixed_10", |b| {
        b.iter(|| rows_body_to_batch(&spec, black_box(&body)).expect("a valid body"))
    });
    group.finish();
}

criterion_group!(benches, json_rows);
criterion_main!(benches);
