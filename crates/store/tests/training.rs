//! Point-in-time correctness of training data, on both backends, against a brute-force
//! reference written independently of the SQL: randomized out-of-order and duplicate event
//! times, ties across and within batches, nulls, TTL edges, entities without past rows, two
//! sets keyed by different entities.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    Array, ArrayRef, AsArray, Float32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, TimestampNanosecondArray,
};
use arrow::datatypes::{Float32Type, Int64Type};
use featherstore_core::{FeatureSetSpec, TrainingDataCommand};
use featherstore_store::delta::{DeltaOptions, DeltaStore};
use featherstore_store::duckdb::DuckDbStore;
use featherstore_store::parquet::{ParquetOptions, ParquetStore};
use featherstore_store::query::training::Warmed;
use featherstore_store::query::{Cancellation, EngineSettings};
use featherstore_store::{FeatureStore, Limits, OfflineStore};
use featherstore_testkit::fixtures::{column_names, every_type_spec, Rng};

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

/// Joins in memory as of event time (the default limits); `as_of: ingest_time` joins in
/// DuckDB whatever the limits.
#[test]
fn randomized_point_in_time_join_matches_the_reference() {
    randomized_join_matches_the_reference(Limits::default());
}

/// The DuckDB join as of event time too: no memory for the join in memory.
#[test]
fn randomized_point_in_time_join_in_duckdb_matches_the_reference() {
    randomized_join_matches_the_reference(IN_DUCKDB);
}

/// Joins in DuckDB: no memory for joins in memory.
const IN_DUCKDB: Limits = Limits {
    max_online_entities: 100_000,
    training_memory_bytes: 0,
};

fn randomized_join_matches_the_reference(limits: Limits) {
    for seed in [7u64, 1_000_003] {
        let dir = tempfile::tempdir().unwrap();
        for (backend, offline) in stores(dir.path()) {
            let mut rng = Rng(seed);
            let store = FeatureStore::open(offline, limits, dir.path().join("tmp")).unwrap();
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
    for limits in [Limits::default(), IN_DUCKDB] {
        never_a_value_from_after_the_row(limits);
    }
}

fn never_a_value_from_after_the_row(limits: Limits) {
    let dir = tempfile::tempdir().unwrap();
    for (backend, offline) in stores(dir.path()) {
        let store = FeatureStore::open(offline, limits, dir.path().join("tmp")).unwrap();
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

/// Entity rows that fail after the first batch (a client's bad batch): by then the stored
/// rows load beside the spool, and the failure cancels that load, whose rows nothing would
/// join, but not the request: the API layer takes a cancelled request for a client gone
/// away and would not tell it why. The client's error is the one reported.
#[test]
fn a_spool_that_fails_is_reported_and_the_request_not_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    for (backend, offline) in stores(dir.path()) {
        let store =
            FeatureStore::open(offline, Limits::default(), dir.path().join(backend)).unwrap();
        store.create(specs().0).unwrap();
        let fact = Fact {
            key: "u".into(),
            time: SECOND,
            ingest: 0,
            values: vec![Some(1), Some(2)],
        };
        store.ingest("users", &user_batch(&[fact])).unwrap();
        let rows = RecordBatch::try_from_iter(vec![
            (
                "user_id",
                Arc::new(StringArray::from(vec!["u"])) as ArrayRef,
            ),
            (
                "ts",
                Arc::new(TimestampMicrosecondArray::from(vec![2 * SECOND])) as ArrayRef,
            ),
        ])
        .unwrap();
        let command = TrainingDataCommand::from_json(
            br#"{"type": "training_data", "features": ["users:clicks"], "timestamp": "ts"}"#,
        )
        .unwrap();
        let plan = store.plan_training(&command, rows.schema()).unwrap();
        let mut input = vec![
            Ok(rows),
            Err(featherstore_core::Error::InvalidArgument("the client's bad batch".into()).into()),
        ]
        .into_iter();
        let request = Cancellation::default();
        let failed = request
            .scope(|| store.training_data(&plan, &mut input, &mut |_| Ok(())))
            .unwrap_err();
        assert!(
            failed.to_string().contains("the client's bad batch"),
            "{backend}: {failed}"
        );
        assert!(
            !request.is_cancelled(),
            "{backend}: the request counts as cancelled"
        );
    }
}

/// Every feature type, with nulls, string keys and ties: the join in memory answers exactly
/// what DuckDB's answers, also when the memory runs out part way through the sets (then
/// DuckDB joins). The set has a TTL (DuckDB 1.5 cannot `CASE` a FLOAT[3] as such) and some
/// entity rows have no time (DuckDB's ASOF join matches a null with the key's latest row):
/// both joins answer null for those.
#[test]
fn every_feature_type_joins_in_memory_as_in_duckdb() {
    let mut spec = every_type_spec("all", "string");
    spec.ttl_seconds = Some(40);
    let (_, merchants_spec) = specs();
    let mut rng = Rng(11);
    let batches: Vec<(RecordBatch, Vec<Fact>)> = (0..6)
        .map(|_| {
            let n = rng.below(300) as usize + 1;
            let keys: Vec<String> = (0..n).map(|_| format!("k{}", rng.below(30))).collect();
            let times: Vec<i64> = (0..n).map(|_| rng.below(100) as i64 * SECOND).collect();
            let values: Vec<Option<i64>> = (0..n)
                .map(|_| (rng.below(5) > 0).then(|| rng.below(1_000) as i64))
                .collect();
            let merchants: Vec<Fact> = (0..n)
                .map(|_| Fact {
                    key: rng.below(9).to_string(),
                    time: rng.below(100) as i64 * SECOND,
                    ingest: 0,
                    values: vec![(rng.below(3) > 0).then(|| rng.below(50) as i64)],
                })
                .collect();
            (all_types_batch(&keys, &times, &values), merchants)
        })
        .collect();

    let n = 3_000;
    let keys: Vec<Option<String>> = (0..n)
        .map(|_| (rng.below(50) > 0).then(|| format!("k{}", rng.below(34))))
        .collect();
    let times: Vec<Option<i64>> = (0..n)
        .map(|_| {
            (rng.below(40) > 0).then(|| rng.below(110) as i64 * SECOND - 1 + rng.below(3) as i64)
        })
        .collect();
    let rows = RecordBatch::try_from_iter(vec![
        ("k", Arc::new(StringArray::from(keys)) as ArrayRef),
        (
            "merchant_id",
            Arc::new(Int64Array::from_iter_values(
                (0..n).map(|_| rng.below(11) as i64),
            )) as ArrayRef,
        ),
        (
            "event_timestamp",
            Arc::new(TimestampMicrosecondArray::from(times.clone())) as ArrayRef,
        ),
    ])
    .unwrap();
    let command = r#"{"type": "training_data", "features": ["merchants:risk", "all:s", "all:b", "all:i", "all:l", "all:f", "all:d", "all:bin", "all:day", "all:at", "all:v", "all:w"], "full_names": true}"#;

    for backend in ["duckdb", "parquet", "delta"] {
        let dir = tempfile::tempdir().unwrap();
        let mut answers = Vec::new();
        // In memory; in DuckDB; then budgets that run out part way: in the first set, or
        // after the first set (merchants) and in the second.
        for training_memory_bytes in [Limits::default().training_memory_bytes, 0, 30_000, 150_000] {
            let offline = stores(dir.path())
                .into_iter()
                .find(|(name, _)| *name == backend)
                .unwrap()
                .1;
            let limits = Limits {
                training_memory_bytes,
                ..Limits::default()
            };
            let store = FeatureStore::open(offline, limits, dir.path().join("tmp")).unwrap();
            if answers.is_empty() {
                store.create(spec.clone()).unwrap();
                store.create(merchants_spec.clone()).unwrap();
                for (batch, merchants) in &batches {
                    store.ingest("all", batch).unwrap();
                    store
                        .ingest("merchants", &merchant_batch(merchants))
                        .unwrap();
                }
            }
            answers.push(run_training(&store, command, rows.clone(), 700));
            store.close().unwrap();
        }
        let out = &answers[0];
        assert_eq!(out.num_columns(), 3 + 12, "{backend}");
        let strings = out.column(4);
        let matched = strings.len() - strings.null_count();
        assert!(
            matched > n / 4,
            "{backend}: the data exercises matches ({matched})"
        );
        let timeless: Vec<usize> = (0..n).filter(|&r| times[r].is_none()).collect();
        assert!(!timeless.is_empty());
        for column in &out.columns()[3..] {
            assert!(
                timeless.iter().all(|&r| column.is_null(r)),
                "{backend}: a row without a time joins nothing"
            );
        }
        for (i, answer) in answers.iter().enumerate().skip(1) {
            assert_eq!(out.schema(), answer.schema(), "{backend}: budget {i}");
            for (c, (ours, theirs)) in out.columns().iter().zip(answer.columns()).enumerate() {
                let row = (0..out.num_rows()).find(|&r| ours.slice(r, 1) != theirs.slice(r, 1));
                assert_eq!(
                    row.map(|r| (ours.slice(r, 1), theirs.slice(r, 1))),
                    None,
                    "{backend}: in memory and in DuckDB (budget {i}), column {c}, row {row:?}: {:?}", row.map(|r| rows.slice(r, 1))
                );
            }
        }
    }
}

/// A batch of the all-types set: every value derived from `values` (null where it is).
fn all_types_batch(keys: &[String], times: &[i64], values: &[Option<i64>]) -> RecordBatch {
    use arrow::array::{
        BinaryArray, BooleanArray, Date32Array, FixedSizeListBuilder, Float32Builder, Float64Array,
        Float64Builder, Int32Array,
    };
    let opt = |f: fn(i64) -> i64| values.iter().map(move |v| v.map(f));
    let mut v = FixedSizeListBuilder::new(Float32Builder::new(), 3);
    let mut w = FixedSizeListBuilder::new(Float64Builder::new(), 2);
    for value in values {
        for j in 0..3 {
            v.values().append_option(value.map(|x| (x * j) as f32));
        }
        v.append(value.is_some());
        w.values().append_option(value.map(|x| x as f64));
        w.values().append_null();
        w.append(value.is_some());
    }
    RecordBatch::try_from_iter(vec![
        (
            "k",
            Arc::new(StringArray::from_iter_values(keys)) as ArrayRef,
        ),
        (
            "b",
            Arc::new(BooleanArray::from_iter(
                opt(|x| x % 2).map(|x| x.map(|x| x == 0)),
            )),
        ),
        (
            "i",
            Arc::new(Int32Array::from_iter(
                opt(|x| x).map(|x| x.map(|x| x as i32)),
            )),
        ),
        ("l", Arc::new(Int64Array::from_iter(opt(|x| x * 1_000_003)))),
        (
            "f",
            Arc::new(Float32Array::from_iter(
                opt(|x| x).map(|x| x.map(|x| x as f32 / 3.0)),
            )),
        ),
        (
            "d",
            Arc::new(Float64Array::from_iter(
                opt(|x| x).map(|x| x.map(|x| x as f64 / 7.0)),
            )),
        ),
        (
            "s",
            Arc::new(StringArray::from_iter(
                opt(|x| x).map(|x| x.map(|x| format!("é{x}"))),
            )),
        ),
        (
            "bin",
            Arc::new(BinaryArray::from_iter(
                opt(|x| x).map(|x| x.map(|x| x.to_le_bytes().to_vec())),
            )),
        ),
        (
            "day",
            Arc::new(Date32Array::from_iter(
                opt(|x| x).map(|x| x.map(|x| x as i32 - 3)),
            )),
        ),
        (
            "at",
            Arc::new(
                TimestampMicrosecondArray::from_iter(opt(|x| x * SECOND)).with_timezone("UTC"),
            ),
        ),
        ("v", Arc::new(v.finish())),
        ("w", Arc::new(w.finish())),
        (
            "event_timestamp",
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                times.iter().copied(),
            )),
        ),
    ])
    .unwrap()
}

/// A request of several output slices (the join in memory answers 64k entity rows at a time):
/// the answer is whole, in request order, and the same as DuckDB's join, on a spool of batches
/// both smaller and larger than a slice.
#[test]
fn a_request_of_many_slices_joins_in_memory_in_order() {
    let (users_spec, _) = specs();
    let facts: Vec<Fact> = (0..600usize)
        .map(|i| Fact {
            key: format!("u{}", i % 40),
            time: (i as i64 % 150) * SECOND,
            ingest: i + 1,
            values: vec![Some(i as i64), (i % 5 > 0).then_some((i % 7) as i64)],
        })
        .collect();
    let n = 3 * 65_536 + 5;
    let rows = RecordBatch::try_from_iter(vec![
        (
            "label",
            Arc::new(Int64Array::from_iter_values(0..n as i64)) as ArrayRef,
        ),
        (
            "user_id",
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("u{}", i % 45)),
            )) as ArrayRef,
        ),
        (
            "event_timestamp",
            Arc::new(
                TimestampNanosecondArray::from_iter_values(
                    (0..n as i64).map(|i| (i % 170) * SECOND * 1000),
                )
                .with_timezone("UTC"),
            ) as ArrayRef,
        ),
    ])
    .unwrap();
    let command = r#"{"type": "training_data", "features": ["users:*"]}"#;
    let mut answers = Vec::new();
    for limits in [Limits::default(), IN_DUCKDB] {
        for chunk in [40_000, 100_000] {
            let dir = tempfile::tempdir().unwrap();
            let offline =
                DuckDbStore::open(&dir.path().join("features.db"), &EngineSettings::default())
                    .unwrap();
            let store =
                FeatureStore::open(Box::new(offline), limits, dir.path().join("tmp")).unwrap();
            store.create(users_spec.clone()).unwrap();
            store.ingest("users", &user_batch(&facts)).unwrap();
            answers.push(run_training(&store, command, rows.clone(), chunk));
        }
    }
    let labels = answers[0].column(0).as_primitive::<Int64Type>();
    assert!(
        labels.values().iter().copied().eq(0..n as i64),
        "request order"
    );
    let clicks = answers[0].column(3).as_primitive::<Int64Type>();
    assert!(clicks.null_count() < n, "rows matched");
    for (i, answer) in answers.iter().enumerate().skip(1) {
        assert_eq!(
            answer, &answers[0],
            "answer {i} differs from the in-memory join"
        );
    }
}

/// A request keeps the index of the rows it read, and the next one reads only the rows
/// stored since: after every append (rows older than, tied with and newer than the stored
/// ones), after an update of the set and after it is deleted and made again, the join still
/// answers as the reference, in memory and on every backend.
#[test]
fn kept_indexes_answer_as_a_fresh_read_after_every_change() {
    let dir = tempfile::tempdir().unwrap();
    for (backend, offline) in stores(dir.path()) {
        let store = store_with_users(offline, Limits::default(), dir.path());
        let (users_spec, _) = specs();
        let mut rng = Rng(0xC0FFEE);
        let (mut facts, mut ingest) = (Vec::new(), 0);
        let n = 600;
        let keys: Vec<String> = (0..n).map(|_| format!("u{}", rng.below(25))).collect();
        let times: Vec<i64> = (0..n).map(|_| rng.below(120) as i64 * SECOND).collect();
        let rows = user_entity_rows(&keys, &times);
        let command = r#"{"type": "training_data", "features": ["users:*"]}"#;
        let reused_before = training_index_counter("reused");
        for round in 0..14 {
            if round == 9 {
                // Deleted and made again: nothing of the old rows may come back.
                store.delete("users").unwrap();
                assert_eq!(store.training_index_bytes(), 0, "{backend}: dropped");
                store.create(users_spec.clone()).unwrap();
                facts.clear();
            }
            let mut batch = Vec::new();
            for _ in 0..rng.below(40) + 1 {
                ingest += 1;
                batch.push(Fact {
                    key: format!("u{}", rng.below(25)),
                    // whole seconds over a narrow span: ties with earlier rounds' rows
                    time: rng.below(120) as i64 * SECOND,
                    ingest,
                    values: vec![Some(rng.below(1000) as i64), Some(rng.below(100) as i64)],
                });
            }
            store.ingest("users", &user_batch(&batch)).unwrap();
            facts.extend(batch);
            if round == 5 {
                // A changed TTL: the index kept under the old version must not answer.
                let mut longer = users_spec.clone();
                longer.ttl_seconds = Some(TTL_SECONDS as u64 * 2);
                store.update(longer).unwrap();
                assert_eq!(store.training_index_bytes(), 0, "{backend}: dropped");
            }
            let ttl = match round {
                5..=8 => TTL_SECONDS * 2,
                _ => TTL_SECONDS,
            } * SECOND;
            let out = run_training(&store, command, rows.clone(), 256);
            let clicks = out.column(2).as_primitive::<Int64Type>();
            for i in 0..n {
                let expected = reference(&facts, &keys[i], times[i], Some(ttl));
                assert_eq!(
                    clicks.is_valid(i).then(|| clicks.value(i)),
                    expected.and_then(|f| f.values[0]),
                    "{backend} round {round}: row {i} ({} at {})",
                    keys[i],
                    times[i]
                );
            }
            assert!(store.training_index_bytes() > 0, "{backend}: kept");
        }
        assert!(
            training_index_counter("reused") >= reused_before + 8,
            "{backend}: requests read only the rows stored since"
        );
    }
}

/// A counter of the kept training indexes (process-wide, so only ever compared as growing).
fn training_index_counter(name: &str) -> u64 {
    featherstore_store::metrics::TRAINING_INDEX
        .counters()
        .into_iter()
        .find(|(key, _, _)| *key == name)
        .map(|(_, _, value)| value)
        .unwrap()
}

/// Rows stored since an index was kept that do not fit what is left of the budget are not
/// read into it: the request joins in DuckDB, answering as the reference, and the index
/// stays kept for the sets it still fits.
#[test]
fn rows_stored_since_that_do_not_fit_join_in_duckdb() {
    let dir = tempfile::tempdir().unwrap();
    for (backend, offline) in stores(dir.path()) {
        let limits = Limits {
            training_memory_bytes: 200_000,
            ..Limits::default()
        };
        let store = store_with_users(offline, limits, dir.path());
        let mut users = UserRows::new(0xB0D6E7);
        let (keys, times) = users.entity_rows();
        let rows = user_entity_rows(&keys, &times);
        let command = r#"{"type": "training_data", "features": ["users:clicks"]}"#;
        for (round, rows_added) in [200, 3000].into_iter().enumerate() {
            users.ingest(&store, rows_added);
            let out = run_training(&store, command, rows.clone(), 128);
            users.check_clicks(&out, &keys, &times, &format!("{backend} round {round}"));
            assert!(
                store.training_index_bytes() > 0,
                "{backend} round {round}: the first request's index is kept"
            );
            assert!(store.training_index_bytes() <= 200_000, "{backend}");
        }
    }
}

/// Entity rows of `users`: a key and a time (microseconds) each.
fn user_entity_rows(keys: &[String], times: &[i64]) -> RecordBatch {
    RecordBatch::try_from_iter(vec![
        (
            "user_id",
            Arc::new(StringArray::from(keys.to_vec())) as ArrayRef,
        ),
        (
            "event_timestamp",
            Arc::new(TimestampMicrosecondArray::from(times.to_vec())) as ArrayRef,
        ),
    ])
    .unwrap()
}

/// A store over `offline` with the `users` set made.
fn store_with_users(
    offline: Box<dyn OfflineStore>,
    limits: Limits,
    dir: &std::path::Path,
) -> FeatureStore {
    let store = FeatureStore::open(offline, limits, dir.join("tmp")).unwrap();
    store.create(specs().0).unwrap();
    store
}

/// Random rows of `users` (25 keys, whole seconds over two minutes: ties across batches),
/// ingested batch by batch and kept for the reference.
struct UserRows {
    rng: Rng,
    facts: Vec<Fact>,
}

impl UserRows {
    fn new(seed: u64) -> Self {
        UserRows {
            rng: Rng(seed),
            facts: Vec::new(),
        }
    }

    fn ingest(&mut self, store: &FeatureStore, rows: usize) {
        let batch: Vec<Fact> = (0..rows)
            .map(|i| Fact {
                key: format!("u{}", self.rng.below(25)),
                time: self.rng.below(120) as i64 * SECOND,
                ingest: self.facts.len() + i + 1,
                values: vec![Some(self.rng.below(1000) as i64), None],
            })
            .collect();
        store.ingest("users", &user_batch(&batch)).unwrap();
        self.facts.extend(batch);
    }

    /// 300 entity rows: every key and one never stored, times past the stored ones too.
    fn entity_rows(&self) -> (Vec<String>, Vec<i64>) {
        let keys = (0..300).map(|k| format!("u{}", k % 26)).collect();
        let times = (0..300).map(|t| (t % 130) * SECOND).collect();
        (keys, times)
    }

    /// `out`'s clicks are the reference's for each entity row.
    fn check_clicks(&self, out: &RecordBatch, keys: &[String], times: &[i64], what: &str) {
        let clicks = out.column(2).as_primitive::<Int64Type>();
        for i in 0..keys.len() {
            let expected = reference(&self.facts, &keys[i], times[i], Some(TTL_SECONDS * SECOND));
            assert_eq!(
                clicks.is_valid(i).then(|| clicks.value(i)),
                expected.and_then(|f| f.values[0]),
                "{what}: row {i}"
            );
        }
    }
}

/// A warm-up builds a set's index once ingest has paused, with every feature, and brings it
/// up to date after later ingest; a request then reads it as one an earlier request kept
/// (its index stays the warm-up's, of every feature, where one of its own would hold one),
/// answering as the reference.
#[test]
fn warmed_indexes_answer_as_a_fresh_read() {
    let dir = tempfile::tempdir().unwrap();
    for (backend, offline) in stores(dir.path()) {
        let store = store_with_users(offline, Limits::default(), dir.path());
        let mut users = UserRows::new(0x3A7E);
        let (keys, times) = users.entity_rows();
        let rows = user_entity_rows(&keys, &times);
        let command = r#"{"type": "training_data", "features": ["users:clicks"]}"#;
        users.ingest(&store, 500);
        assert_eq!(
            store.warm_training_indexes(Duration::from_secs(3600)),
            [],
            "{backend}: ingest has not paused for an hour"
        );
        assert_eq!(store.training_index_bytes(), 0, "{backend}");
        assert_eq!(
            store.warm_training_indexes(Duration::ZERO),
            [("users".to_string(), Warmed::Built(500))],
            "{backend}"
        );
        let warmed = store.training_index_bytes();
        assert!(warmed > 0, "{backend}: built");
        assert_eq!(
            store.warm_training_indexes(Duration::ZERO),
            [],
            "{backend}: nothing stored since"
        );
        let out = run_training(&store, command, rows.clone(), 128);
        users.check_clicks(&out, &keys, &times, &format!("{backend} warmed"));
        assert_eq!(
            store.training_index_bytes(),
            warmed,
            "{backend}: the request read the warmed index (of both features), not its own (of clicks)"
        );

        // Rows stored since: read by the next warm-up into a run of their own (`Updated`), or
        // with the rest into one run (`Built`) once the index's whole read is old against the
        // time it took (milliseconds here); until then, by the request itself. 200 rows, a
        // quarter of the index and more, are always read with the rest, as are 40 rows a
        // second after the index's whole read.
        let mut stored = 500;
        for (round, (added, warm, pause)) in [
            (40, true, false),
            (40, false, false),
            (40, true, false),
            (200, true, false),
            (40, true, true),
        ]
        .into_iter()
        .enumerate()
        {
            if pause {
                std::thread::sleep(Duration::from_secs(1));
            }
            users.ingest(&store, added);
            stored += added;
            if warm {
                let outcome = store.warm_training_indexes(Duration::ZERO);
                let whole = [("users".to_string(), Warmed::Built(stored))];
                let since = [("users".to_string(), Warmed::Updated(added))];
                if added == 200 || pause {
                    assert_eq!(outcome, whole, "{backend} round {round}");
                } else {
                    assert!(
                        outcome == whole || outcome == since,
                        "{backend} round {round}: {outcome:?}"
                    );
                }
                assert!(store.training_index_bytes() > warmed, "{backend}: updated");
            }
            let out = run_training(&store, command, rows.clone(), 128);
            users.check_clicks(&out, &keys, &times, &format!("{backend} round {round}"));
        }
    }
}

/// A warm-up takes only the budget that is free, and a request takes it back: a set whose
/// warmed index was dropped for a request's room is not read again by later warm-ups, even
/// with room, as nobody trains on it.
#[test]
fn warm_ups_take_only_free_budget_and_yield_to_requests() {
    let dir = tempfile::tempdir().unwrap();
    for (backend, offline) in stores(dir.path()) {
        let limits = Limits {
            training_memory_bytes: 200_000,
            ..Limits::default()
        };
        let store = store_with_users(offline, limits, dir.path());
        store.create(specs().1).unwrap();
        let mut users = UserRows::new(0xF1EE);
        users.ingest(&store, 1000);
        let merchants: Vec<Fact> = (0..1000)
            .map(|i| Fact {
                key: (i % 40).to_string(),
                time: (i % 100) * SECOND,
                ingest: i as usize + 1,
                values: vec![Some(i)],
            })
            .collect();
        store
            .ingest("merchants", &merchant_batch(&merchants))
            .unwrap();
        assert_eq!(
            store.warm_training_indexes(Duration::ZERO),
            [
                ("merchants".to_string(), Warmed::Built(1000)),
                ("users".to_string(), Warmed::NoRoom)
            ],
            "{backend}: one set's index fits the budget, not both"
        );
        let warmed = store.training_index_bytes();
        assert!(warmed > 0 && warmed <= 200_000, "{backend}: {warmed}");

        // A request over users needs the room the warmed merchants index holds (or is the
        // one warmed): either way it joins in memory and answers as the reference.
        let (keys, times) = users.entity_rows();
        let command = r#"{"type": "training_data", "features": ["users:clicks"]}"#;
        let out = run_training(&store, command, user_entity_rows(&keys, &times), 128);
        users.check_clicks(&out, &keys, &times, backend);
        assert!(store.training_index_bytes() <= 200_000, "{backend}");

        // More rows of both: only users, whose index a request keeps, is warmed again.
        users.ingest(&store, 10);
        store
            .ingest("merchants", &merchant_batch(&merchants[..10]))
            .unwrap();
        assert_eq!(
            store.warm_training_indexes(Duration::ZERO),
            [("users".to_string(), Warmed::Updated(10))],
            "{backend}"
        );
        let out = run_training(&store, command, user_entity_rows(&keys, &times), 128);
        users.check_clicks(&out, &keys, &times, &format!("{backend} after more rows"));

        // With users gone there is room again, and merchants is still not read again.
        store.delete("users").unwrap();
        store
            .ingest("merchants", &merchant_batch(&merchants[..10]))
            .unwrap();
        assert_eq!(store.warm_training_indexes(Duration::ZERO), [], "{backend}");
        assert_eq!(store.training_index_bytes(), 0, "{backend}");
    }
}
