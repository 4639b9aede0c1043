//! Point-in-time correctness of training data, on both backends, against a brute-force
//! reference written independently of the SQL: randomized out-of-order and duplicate event
//! times, ties across and within batches, nulls, TTL edges, entities without past rows, two
//! sets keyed by different entities.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, TimestampNanosecondArray,
};
use arrow::datatypes::{Float32Type, Int64Type};
use featherstore_core::{FeatureSetSpec, TrainingDataCommand};
use featherstore_store::delta::{DeltaOptions, DeltaStore};
use featherstore_store::duckdb::DuckDbStore;
use featherstore_store::parquet::{ParquetOptions, ParquetStore};
use featherstore_store::query::EngineSettings;
use featherstore_store::{FeatureStore, Limits, OfflineStore};
use featherstore_testkit::fixtures::{column_names, Rng};

const SECOND: i64 = 1_000_000;
const TTL_SECONDS: i64 = 30;

fn stores(dir: &std::path::Path) -> Vec<(&'static str, Box<dyn OfflineStore>)> {
    let engine = EngineSettings {
        connections: 2,
        ..EngineSettings::default()
    };
    let parquet_options = ParquetOptions {
        flush_rows: 700, // flushes mid-test, so reads span Parquet files and the log
        ..ParquetOptions::default()
    };
    vec![
        (
            "duckdb",
            Box::new(DuckDbStore::open(&dir.join("features.db"), &engine).unwrap())
                as Box<dyn OfflineStore>,
        ),
        (
            "parquet",
            Box::new(ParquetStore::open(&dir.join("parquet"), parquet_options, &engine).unwrap()),
        ),
        (
            "delta",
            Box::new(
                DeltaStore::open(
                    DeltaOptions::new(
                        format!("file://{}", dir.join("delta").display()),
                        dir.join("cache"),
                    ),
                    &engine,
                )
                .unwrap(),
            ),
        ),
    ]
}

fn specs() -> (FeatureSetSpec, FeatureSetSpec) {
    let users = FeatureSetSpec::from_json(
        format!(
            r#"{{"name": "users", "entity": {{"name": "user_id", "type": "string"}}, "ttl_seconds": {TTL_SECONDS},
               "features": [{{"name": "clicks", "type": "int64"}}, {{"name": "score", "type": "float32"}}]}}"#
        )
        .as_bytes(),
    )
    .unwrap();
    let merchants = FeatureSetSpec::from_json(
        br#"{"name": "merchants", "entity": {"name": "merchant_id", "type": "int64"},
             "features": [{"name": "risk", "type": "int64"}]}"#,
    )
    .unwrap();
    (users, merchants)
}

/// A stored feature row as the reference sees it.
#[derive(Clone, Debug)]
struct Fact {
    key: String,
    time: i64,
    ingest: usize,
    values: Vec<Option<i64>>, // float features stored as their integer value
}

/// As [`reference`], as of ingest time: only facts also ingested by t (`ingested_at[f.ingest]`
/// <= t) count.
fn reference_as_known<'a>(
    facts: &'a [Fact],
    ingested_at: &[i64],
    key: &str,
    t: i64,
    ttl: Option<i64>,
) -> Option<&'a Fact> {
    facts
        .iter()
        .filter(|f| f.key == key && f.time <= t && ingested_at[f.ingest] <= t)
        .max_by_key(|f| (f.time, f.ingest))
        .filter(|f| ttl.is_none_or(|ttl| f.time >= t - ttl))
}

/// A clock the test moves: ingest times of its choosing, also going back.
fn test_clock(store: &FeatureStore) -> Arc<AtomicI64> {
    let now = Arc::new(AtomicI64::new(0));
    let read = now.clone();
    store.set_clock(Arc::new(move || read.load(Ordering::SeqCst)));
    now
}

/// The greatest event time <= t, ties to the later ingest; none if older than the TTL.
fn reference<'a>(facts: &'a [Fact], key: &str, t: i64, ttl: Option<i64>) -> Option<&'a Fact> {
    facts
        .iter()
        .filter(|f| f.key == key && f.time <= t)
        .max_by_key(|f| (f.time, f.ingest))
        .filter(|f| ttl.is_none_or(|ttl| f.time >= t - ttl))
}

fn user_batch(rows: &[Fact]) -> RecordBatch {
    RecordBatch::try_from_iter(vec![
        (
            "user_id",
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.key.clone()),
            )) as ArrayRef,
        ),
        (
            "clicks",
            Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.values[0]))) as ArrayRef,
        ),
        (
            "score",
            Arc::new(Float32Array::from_iter(
                rows.iter().map(|r| r.values[1].map(|v| v as f32)),
            )) as ArrayRef,
        ),
        (
            "event_timestamp",
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                rows.iter().map(|r| r.time),
            )) as ArrayRef,
        ),
    ])
    .unwrap()
}

fn merchant_batch(rows: &[Fact]) -> RecordBatch {
    RecordBatch::try_from_iter(vec![
        (
            "merchant_id",
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.key.parse::<i64>().unwrap()),
            )) as ArrayRef,
        ),
        (
            "risk",
            Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.values[0]))) as ArrayRef,
        ),
        (
            "event_timestamp",
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                rows.iter().map(|r| r.time),
            )) as ArrayRef,
        ),
    ])
    .unwrap()
}

fn run_training(
    store: &FeatureStore,
    command: &str,
    rows: RecordBatch,
    chunk: usize,
) -> RecordBatch {
    let command = TrainingDataCommand::from_json(command.as_bytes()).unwrap();
    let plan = store.plan_training(&command, rows.schema()).unwrap();
    let mut input = (0..rows.num_rows())
        .step_by(chunk)
        .map(|start| Ok(rows.slice(start, chunk.min(rows.num_rows() - start))))
        .collect::<Vec<_>>()
        .into_iter();
    let mut out = Vec::new();
    store
        .training_data(&plan, &mut input, &mut |batch| {
            out.push(batch);
            Ok(())
        })
        .unwrap();
    arrow::compute::concat_batches(&plan.output_schema, &out).unwrap()
}

#[test]
fn randomized_point_in_time_join_matches_the_reference() {
    for seed in [7u64, 1_000_003] {
        let dir = tempfile::tempdir().unwrap();
        for (backend, offline) in stores(dir.path()) {
            let mut rng = Rng(seed);
            let store =
                FeatureStore::open(offline, Limits::default(), dir.path().join("tmp")).unwrap();
            let (users_spec, merchants_spec) = specs();
            store.create(users_spec).unwrap();
            store.create(merchants_spec).unwrap();

            let (mut users, mut merchants) = (Vec::new(), Vec::new());
            let mut ingest = 0;
            // Ingest times by fact (`Fact::ingest`), as the store must keep them: the test's
            // clock wanders over the event times, sometimes back, and each set's stored times
            // never decrease.
            let clock = test_clock(&store);
            let mut ingested_at = vec![0i64];
            let (mut users_latest, mut merchants_latest) = (i64::MIN, i64::MIN);
            let wander = |rng: &mut Rng, latest: &mut i64| {
                let now = clock.load(Ordering::SeqCst) + rng.below(40) as i64 * SECOND
                    - 12 * SECOND
                    + rng.below(3) as i64;
                clock.store(now, Ordering::SeqCst);
                *latest = now.max(*latest);
                *latest
            };
            for _ in 0..12 {
                let mut batch = Vec::new();
                for _ in 0..rng.below(150) + 1 {
                    ingest += 1;
                    let clicks = (rng.below(5) > 0).then(|| rng.below(1000) as i64);
                    let score = (rng.below(4) > 0).then(|| rng.below(100) as i64);
                    batch.push(Fact {
                        key: format!("u{}", rng.below(40)),
                        // whole seconds, few distinct values: many duplicate times and ties
                        time: rng.below(200) as i64 * SECOND,
                        ingest,
                        values: vec![clicks, score],
                    });
                }
                let at = wander(&mut rng, &mut users_latest);
                ingested_at.resize(ingest + 1, at);
                store.ingest("users", &user_batch(&batch)).unwrap();
                users.extend(batch);
                let mut batch = Vec::new();
                for _ in 0..rng.below(60) + 1 {
                    ingest += 1;
                    batch.push(Fact {
                        key: rng.below(15).to_string(),
                        time: rng.below(200) as i64 * SECOND + rng.below(3) as i64,
                        ingest,
                        values: vec![(rng.below(6) > 0).then(|| rng.below(50) as i64)],
                    });
                }
                let at = wander(&mut rng, &mut merchants_latest);
                ingested_at.resize(ingest + 1, at);
                store.ingest("merchants", &merchant_batch(&batch)).unwrap();
                merchants.extend(batch);
            }

            // Entity rows: keys with and without history (u40.., merchant 99), times on and
            // around fact times and TTL edges, a label column that must pass through.
            let n = 2_000;
            let mut user_keys = Vec::new();
            let mut merchant_keys = Vec::new();
            let mut times = Vec::new();
            for _ in 0..n {
                user_keys.push(format!("u{}", rng.below(45)));
                merchant_keys.push(rng.below(17) as i64);
                let base = rng.below(240) as i64 * SECOND;
                times.push(match rng.below(4) {
                    0 => base - 1,
                    1 => base + 1,
                    _ => base,
                });
            }
            let labels: Vec<i64> = (0..n as i64).collect();
            let rows = RecordBatch::try_from_iter(vec![
                (
                    "label",
                    Arc::new(Int64Array::from(labels.clone())) as ArrayRef,
                ),
                (
                    "user_id",
                    Arc::new(StringArray::from(user_keys.clone())) as ArrayRef,
                ),
                (
                    "merchant_id",
                    Arc::new(Int64Array::from(merchant_keys.clone())) as ArrayRef,
                ),
                // nanoseconds in, like pandas sends: times compare at microsecond precision
                (
                    "event_timestamp",
                    Arc::new(
                        TimestampNanosecondArray::from_iter_values(times.iter().map(|t| t * 1000))
                            .with_timezone("UTC"),
                    ) as ArrayRef,
                ),
            ])
            .unwrap();
            // As of event time (the default), then as of ingest time: the same rows, but a
            // value counts only once it was ingested.
            for as_of in ["event_time", "ingest_time"] {
                let known = |facts: &'_ [Fact], key: &str, t: i64, ttl: Option<i64>| {
                    if as_of == "event_time" {
                        return reference(facts, key, t, ttl).map(|f| (f.ingest, f.values.clone()));
                    }
                    reference_as_known(facts, &ingested_at, key, t, ttl)
                        .map(|f| (f.ingest, f.values.clone()))
                };
                let command = format!(
                    r#"{{"type": "training_data", "features": ["merchants:risk", "users:*"], "as_of": "{as_of}"}}"#
                );
                let out = run_training(&store, &command, rows.clone(), 333);

                assert_eq!(
                    column_names(&out),
                    [
                        "label",
                        "user_id",
                        "merchant_id",
                        "event_timestamp",
                        "risk",
                        "clicks",
                        "score"
                    ]
                );
                assert_eq!(out.num_rows(), n);
                assert_eq!(
                    out.column(0).as_primitive::<Int64Type>().values().to_vec(),
                    labels,
                    "{backend} {as_of}: row order"
                );
                let risk = out.column(4).as_primitive::<Int64Type>();
                let clicks = out.column(5).as_primitive::<Int64Type>();
                let score = out.column(6).as_primitive::<Float32Type>();
                let (mut matched, mut late) = (0, 0);
                for i in 0..n {
                    let expected = known(&merchants, &merchant_keys[i].to_string(), times[i], None);
                    assert_eq!(
                        risk.is_valid(i).then(|| risk.value(i)),
                        expected.and_then(|f| f.1[0]),
                        "{backend} seed {seed} {as_of}: merchants row {i} at {}",
                        times[i]
                    );
                    let ttl = Some(TTL_SECONDS * SECOND);
                    let expected = known(&users, &user_keys[i], times[i], ttl);
                    matched += expected.is_some() as usize;
                    let by_event_time = reference(&users, &user_keys[i], times[i], ttl);
                    late += (expected.as_ref().map(|f| f.0) != by_event_time.map(|f| f.ingest))
                        as usize;
                    assert_eq!(
                        clicks.is_valid(i).then(|| clicks.value(i)),
                        expected.as_ref().and_then(|f| f.1[0]),
                        "{backend} seed {seed} {as_of}: users row {i} ({} at {})",
                        user_keys[i],
                        times[i]
                    );
                    assert_eq!(
                        score.is_valid(i).then(|| score.value(i) as i64),
                        expected.as_ref().and_then(|f| f.1[1]),
                        "{backend} {as_of}: users score row {i}"
                    );
                }
                // Fewer values are known yet as of ingest time.
                let floor = if as_of == "event_time" { n / 4 } else { n / 8 };
                assert!(
                    matched > floor,
                    "{backend} {as_of}: the data exercises matches ({matched})"
                );
                if as_of == "ingest_time" {
                    assert!(
                        late > n / 20,
                        "{backend}: the data exercises late rows ({late})"
                    );
                }
            }
        }
    }
}

#[test]
fn never_a_value_from_after_the_row_and_ttl_edges() {
    let dir = tempfile::tempdir().unwrap();
    for (backend, offline) in stores(dir.path()) {
        let store = FeatureStore::open(offline, Limits::default(), dir.path().join("tmp")).unwrap();
        let (users_spec, _) = specs();
        store.create(users_spec).unwrap();
        let t = 1_000 * SECOND;
        let fact = |time: i64, clicks: i64| Fact {
            key: "u".into(),
            time,
            ingest: 0,
            values: vec![Some(clicks), None],
        };
        // One microsecond in the future must never be seen; equal times are visible.
        store
            .ingest(
                "users",
                &user_batch(&[fact(t - 10 * SECOND, 1), fact(t + 1, 99)]),
            )
            .unwrap();
        store
            .ingest("users", &user_batch(&[fact(t + 5 * SECOND, 100)]))
            .unwrap();
        let probes = [
            t,                                         // 1: latest <= t is t-10s; the t+1µs row is future
            t - 10 * SECOND,                           // 1: an equal time is visible
            t - 10 * SECOND - 1,                       // null: nothing before
            t + 1,                                     // 99
            t + 20 * SECOND + 1,                       // 100, not 99: newer at t+5s
            t + 5 * SECOND + TTL_SECONDS * SECOND,     // 100: exactly ttl old is kept
            t + 5 * SECOND + TTL_SECONDS * SECOND + 1, // null: older than ttl
        ];
        let rows = RecordBatch::try_from_iter(vec![
            (
                "user_id",
                Arc::new(StringArray::from(vec!["u"; probes.len()])) as ArrayRef,
            ),
            (
                "event_timestamp",
                Arc::new(TimestampMicrosecondArray::from(probes.to_vec())) as ArrayRef,
            ),
        ])
        .unwrap();
        let out = run_training(
            &store,
            r#"{"type": "training_data", "features": ["users:clicks"], "full_names": true}"#,
            rows,
            2,
        );
        assert_eq!(out.schema().field(2).name(), "users__clicks");
        let clicks: Vec<_> = out.column(2).as_primitive::<Int64Type>().iter().collect();
        assert_eq!(
            clicks,
            [Some(1), Some(1), None, Some(99), Some(100), Some(100), None],
            "{backend}"
        );
    }
}

#[test]
fn bad_requests_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let offline = stores(dir.path()).into_iter().next().unwrap().1;
    let store = FeatureStore::open(offline, Limits::default(), dir.path().join("tmp")).unwrap();
    let (users_spec, merchants_spec) = specs();
    store.create(users_spec).unwrap();
    store.create(merchants_spec).unwrap();
    let rows = RecordBatch::try_from_iter(vec![
        (
            "user_id",
            Arc::new(StringArray::from(vec!["u"])) as ArrayRef,
        ),
        (
            "ts",
            Arc::new(TimestampMicrosecondArray::from(vec![1])) as ArrayRef,
        ),
    ])
    .unwrap();
    let plan = |command: &str| {
        let command = TrainingDataCommand::from_json(command.as_bytes()).unwrap();
        store
            .plan_training(&command, rows.schema())
            .unwrap_err()
            .to_string()
    };
    assert!(
        plan(r#"{"type": "training_data", "features": ["users:clicks"]}"#)
            .contains("\"event_timestamp\"")
    );
    assert!(plan(
        r#"{"type": "training_data", "features": ["merchants:risk"], "timestamp": "ts"}"#
    )
    .contains("merchant_id"));
    assert!(
        plan(r#"{"type": "training_data", "features": ["nope:x"], "timestamp": "ts"}"#)
            .contains("nope")
    );
    assert!(
        plan(r#"{"type": "training_data", "features": ["users:nope"], "timestamp": "ts"}"#)
            .contains("nope")
    );
    assert!(plan(
        r#"{"type": "training_data", "features": ["users:clicks"], "timestamp": "user_id"}"#
    )
    .contains("timestamp"));
}
