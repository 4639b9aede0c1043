//! `coerce_batch`, the check and conversion of every ingested batch (Flight DoPut, HTTP Arrow
//! bodies, the CLI): client batches of the ten-feature mixed set (nanosecond event times
//! without a zone, a tenth of the numbers null) to the canonical form. Throughput is rows/s.
//!
//! `cargo bench -p featherstore-core --bench coerce`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use featherstore_core::coerce::coerce_batch;
use featherstore_testkit::fixtures::{mixed_batch, mixed_spec, Rng};

fn coerce(c: &mut Criterion) {
    let spec = mixed_spec();
    let mut group = c.benchmark_group("coerce_batch");
    for rows in [1_000, 10_000] {
        let batch = mixed_batch(&mut Rng(7), 0, rows);
        group.throughput(Throughput::Elements(rows as u64));
        group.bench_with_input(BenchmarkId::new("mixed_10", rows), &batch, |b, batch| {
            b.iter(|| coerce_batch(&spec, black_box(batch)).expect("a valid batch"))
        });
    }
    group.finish();
}

criterion_group!(benches, coerce);
criterion_main!(benches);
