//! The online index, the hot path of every online read and every ingest: `lookup` of 1, 100
//! and 1,000 keys (all ten features) and `prepare` + `apply` of a 10,000-row batch, on an
//! index holding 1,000,000 entities of the ten-feature mixed set. Throughput is keys/s for
//! lookups, rows/s for apply.
//!
//! `cargo bench -p featherstore-store --bench online_index`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use featherstore_core::coerce::coerce_batch;
use featherstore_store::online::{OnlineIndex, OnlineSet};
use featherstore_testkit::fixtures::{lookup_keys, mixed_batch, mixed_spec, Rng};

const ENTITIES: i64 = 1_000_000;
const BATCH_ROWS: usize = 10_000;

/// An index of `ENTITIES` entities, filled as ingest fills it: batch by batch.
fn filled_index(rng: &mut Rng) -> OnlineIndex {
    let spec = Arc::new(mixed_spec());
    let index = OnlineIndex::new(spec.clone());
    for first in (0..ENTITIES).step_by(BATCH_ROWS) {
        let batch = coerce_batch(&spec, &mixed_batch(rng, first, BATCH_ROWS)).expect("valid");
        index
            .apply(&index.prepare(&batch).expect("a canonical batch"))
            .expect("applied in memory");
    }
    assert_eq!(index.entities(), ENTITIES as usize);
    index
}

fn online_index(c: &mut Criterion) {
    let mut rng = Rng(42);
    let index = filled_index(&mut rng);
    let features: Vec<usize> = (0..index.spec().features.len()).collect();

    let mut group = c.benchmark_group("online_index_lookup");
    for keys in [1, 100, 1_000] {
        let asked = lookup_keys(&mut rng, keys, ENTITIES);
        group.throughput(Throughput::Elements(keys as u64));
        group.bench_with_input(BenchmarkId::new("1M_entities", keys), &asked, |b, asked| {
            b.iter(|| {
                index
                    .lookup(black_box(asked), &features, i64::MAX)
                    .expect("a lookup")
            })
        });
    }
    group.finish();

    // Newer values of entities already held, as steady-state ingest sends them.
    let spec = index.spec().clone();
    let first = rng.below((ENTITIES - BATCH_ROWS as i64) as u64) as i64;
    let batch = coerce_batch(&spec, &mixed_batch(&mut rng, first, BATCH_ROWS)).expect("valid");
    let mut group = c.benchmark_group("online_index_apply");
    group.throughput(Throughput::Elements(BATCH_ROWS as u64));
    group.bench_function(
        BenchmarkId::new("prepare_apply_1M_entities", BATCH_ROWS),
        |b| {
            b.iter(|| {
                index
                    .apply(&index.prepare(black_box(&batch)).expect("a canonical batch"))
                    .expect("applied in memory")
            })
        },
    );
    group.finish();
}

criterion_group!(benches, online_index);
criterion_main!(benches);
