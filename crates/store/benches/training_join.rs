//! The point-in-time join of training data at the store level, without the network: 1M entity
//! rows (random keys of 100k entities, random times over 30 days) against 1M stored rows of
//! 8 float32 + 8 int64 features, on each backend, joined in memory. Prints each request's
//! seconds, the first one apart (it reads and indexes the stored rows, which the later ones
//! find kept, and pays for the memory it is the first to touch), and
//! as the floor of the same run the same request against a set of one stored row (spooling
//! the entity rows and building the output, what any join pays).
//!
//! `cargo bench -p featherstore-store --bench training_join` (`-- <requests>`, default 5)

use std::time::Instant;

use arrow::array::RecordBatch;
use featherstore_core::TrainingDataCommand;
use featherstore_store::duckdb::DuckDbStore;
use featherstore_store::parquet::{ParquetOptions, ParquetStore};
use featherstore_store::query::EngineSettings;
use featherstore_store::{FeatureStore, Limits, OfflineStore};
use featherstore_testkit::fixtures::{
    load_average, training_entity_rows, training_rows, training_spec, Rng,
};

const ENTITIES: u64 = 100_000;
const ROWS: usize = 1_000_000;
const BATCH_ROWS: usize = 65_536;

fn batches(rows: usize, mut make: impl FnMut(usize, usize) -> RecordBatch) -> Vec<RecordBatch> {
    (0..rows)
        .step_by(BATCH_ROWS)
        .map(|first| make(first, BATCH_ROWS.min(rows - first)))
        .collect()
}

fn main() {
    let requests: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let mut rng = Rng(42);
    let stored = batches(ROWS, |_, rows| training_rows(&mut rng, rows, ENTITIES));
    let entities = batches(ROWS, |first, rows| {
        training_entity_rows(&mut rng, first, rows, ENTITIES)
    });
    let command = |set: &str| {
        TrainingDataCommand::from_json(
            format!(r#"{{"type": "training_data", "features": ["{set}:*"]}}"#).as_bytes(),
        )
        .expect("a valid command")
    };
    println!(
        "training join, {ROWS} entity rows x {ROWS} stored rows, 8 float32 + 8 int64 (load {})",
        load_average()
    );
    for backend in ["duckdb", "parquet"] {
        let dir = tempfile::tempdir().expect("a temp dir");
        // The server's defaults: a flush's connection leaves reads theirs.
        let engine = EngineSettings {
            connections: 4,
            write_connections: 1,
            ..EngineSettings::default()
        };
        let offline: Box<dyn OfflineStore> = match backend {
            "duckdb" => Box::new(
                DuckDbStore::open(&dir.path().join("features.db"), &engine).expect("DuckDB"),
            ),
            _ => Box::new(
                ParquetStore::open(
                    &dir.path().join("parquet"),
                    ParquetOptions::default(),
                    &engine,
                )
                .expect("Parquet"),
            ),
        };
        let store = FeatureStore::open(offline, Limits::default(), dir.path().join("spool"))
            .expect("a store");
        for (set, rows) in [
            ("train", &stored[..]),
            ("one", &[stored[0].slice(0, 1)][..]),
        ] {
            store.create(training_spec(set)).expect("the set");
            let (ingested, result) = store.ingest_run(set, rows);
            result.expect("ingested");
            assert_eq!(ingested, rows.len(), "batches stored");
        }
        let time = |set: &str| {
            let plan = store
                .plan_training(&command(set), entities[0].schema())
                .expect("a plan");
            let mut seconds = Vec::with_capacity(requests);
            for _ in 0..requests {
                let mut input = entities.iter().cloned().map(Ok);
                let mut rows = 0usize;
                let started = Instant::now();
                store
                    .training_data(&plan, &mut input, &mut |batch| {
                        rows += batch.num_rows();
                        Ok(())
                    })
                    .expect("a join");
                seconds.push(started.elapsed().as_secs_f64());
                assert_eq!(rows, ROWS);
            }
            seconds
        };
        let joined = time("train");
        let floor = time("one");
        let median = |seconds: &[f64]| {
            let mut rest = seconds[1..].to_vec();
            rest.sort_by(f64::total_cmp);
            rest.get(rest.len() / 2).copied().unwrap_or(seconds[0])
        };
        println!(
            "{backend:8} first {:.3} s, then median {:.3} s; floor (one stored row) median {:.3} s; join / floor {:.2} (all: {})",
            joined[0],
            median(&joined),
            median(&floor),
            median(&joined) / median(&floor),
            joined
                .iter()
                .map(|s| format!("{s:.3}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}
