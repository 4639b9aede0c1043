use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arrow::array::{
    Array, AsArray, FixedSizeListBuilder, Float32Builder, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{Float32Type, Int64Type, TimestampMicrosecondType};
use featherstore_core::coerce::coerce_batch;
use featherstore_core::{EntityKeys, FeatureSetSpec};

use featherstore_testkit::redis::Redis;

use super::{MemoryStore, OnlineSet, OnlineStore, RedisConfig, RedisStore};

/// One Redis single node and one 3-node Redis Cluster for the whole test binary (they die
/// with it); every test run uses set names of its own in them.
fn redis_servers() -> &'static (Redis, Redis) {
    static SERVERS: std::sync::OnceLock<(Redis, Redis)> = std::sync::OnceLock::new();
    SERVERS.get_or_init(|| (Redis::single(), Redis::cluster()))
}

fn redis_store(redis: &Redis) -> RedisStore {
    RedisStore::connect(RedisConfig {
        url: redis.url(),
        cluster: redis.is_cluster(),
        key_prefix: "conformance".into(),
        pool_size: 2,
        timeout_ms: 2000,
        ca_file: None,
    })
    .unwrap()
}

/// The online conformance tests: every test runs against each backend here, which must give
/// the same answers. A new backend is one line.
fn backends() -> Vec<(&'static str, Box<dyn OnlineStore>)> {
    let (single, cluster) = redis_servers();
    vec![
        ("memory", Box::new(MemoryStore)),
        ("redis", Box::new(redis_store(single))),
        ("redis cluster", Box::new(redis_store(cluster))),
    ]
}

/// Runs `test` on a fresh, empty set of `spec` in every backend. Each run gets a set name of
/// its own, so that tests running at once never share values in a backend shared by them
/// (a server, for a remote backend), and removes its set afterwards.
fn each_backend(spec: &Arc<FeatureSetSpec>, test: impl Fn(&dyn OnlineSet)) {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    for (name, backend) in backends() {
        let mut own = spec.as_ref().clone();
        own.name = format!("{}_{}", spec.name, RUNS.fetch_add(1, Ordering::Relaxed));
        let set = backend.open_set(Arc::new(own)).unwrap();
        eprintln!("online backend {name}");
        test(set.as_ref());
        set.remove().unwrap();
    }
}

fn spec(ttl: Option<u64>) -> Arc<FeatureSetSpec> {
    let mut spec = FeatureSetSpec::from_json(
        br#"{"name": "s", "entity": {"name": "id", "type": "string"},
             "features": [{"name": "n", "type": "int64"}, {"name": "label", "type": "string"},
                          {"name": "e", "type": "float32[2]"}]}"#,
    )
    .unwrap();
    spec.ttl_seconds = ttl;
    Arc::new(spec)
}

fn batch(spec: &FeatureSetSpec, rows: &[(&str, Option<i64>, Option<&str>, i64)]) -> RecordBatch {
    let mut vectors = FixedSizeListBuilder::new(Float32Builder::new(), 2);
    for (_, n, _, _) in rows {
        let x = n.unwrap_or(0) as f32;
        vectors.values().append_slice(&[x, -x]);
        vectors.append(true);
    }
    let input = RecordBatch::try_from_iter(vec![
        (
            "id",
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))) as _,
        ),
        (
            "n",
            Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.1))) as _,
        ),
        (
            "label",
            Arc::new(StringArray::from_iter(rows.iter().map(|r| r.2))) as _,
        ),
        ("e", Arc::new(vectors.finish()) as _),
        (
            "event_timestamp",
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                rows.iter().map(|r| r.3),
            )) as _,
        ),
    ])
    .unwrap();
    coerce_batch(spec, &input).unwrap()
}

fn apply(index: &dyn OnlineSet, batch: &RecordBatch) {
    index.apply(&index.prepare(batch).unwrap()).unwrap();
}

fn keys(k: &[&str]) -> EntityKeys {
    EntityKeys::String(k.iter().map(|s| s.to_string()).collect())
}

#[test]
fn newest_event_time_wins_and_ties_go_to_later_ingest() {
    let spec = spec(None);
    each_backend(&spec, |index| {
        apply(
            index,
            &batch(
                &spec,
                &[("a", Some(1), Some("x"), 10), ("b", Some(2), None, 10)],
            ),
        );
        // Older event for a: ignored. Tie for b: the later ingest wins, even within one batch.
        apply(
            index,
            &batch(
                &spec,
                &[
                    ("a", Some(9), Some("old"), 5),
                    ("b", Some(3), Some("t1"), 10),
                    ("b", Some(4), Some("t2"), 10),
                ],
            ),
        );
        let out = index
            .lookup(&keys(&["b", "a", "zz", "a"]), &[0, 1, 2], 0)
            .unwrap();
        let n = out.column(1).as_primitive::<Int64Type>();
        assert_eq!(
            n.iter().collect::<Vec<_>>(),
            [Some(4), Some(1), None, Some(1)]
        );
        let label = out.column(2).as_string::<i32>();
        assert_eq!(
            label.iter().collect::<Vec<_>>(),
            [Some("t2"), Some("x"), None, Some("x")]
        );
        let e = out.column(3).as_fixed_size_list();
        assert_eq!(
            e.value(0).as_primitive::<Float32Type>().values(),
            &[4.0, -4.0]
        );
        assert!(e.is_null(2));
        let ts = out.column(4).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(
            ts.iter().collect::<Vec<_>>(),
            [Some(10), Some(10), None, Some(10)]
        );
        assert_eq!(index.entities(), 2);
        assert_eq!(index.latest_event_timestamp(), Some(10));
    });
}

#[test]
fn ttl_hides_values_older_than_now_minus_ttl() {
    let spec = spec(Some(10));
    each_backend(&spec, |index| {
        let second = 1_000_000;
        apply(
            index,
            &batch(
                &spec,
                &[
                    ("kept", Some(1), None, 100 * second),
                    ("gone", Some(2), None, 100 * second - 1),
                ],
            ),
        );
        let out = index
            .lookup(&keys(&["kept", "gone"]), &[0], 110 * second)
            .unwrap();
        let n = out.column(1).as_primitive::<Int64Type>();
        assert_eq!(
            n.iter().collect::<Vec<_>>(),
            [Some(1), None],
            "exactly ttl old is kept"
        );
        assert!(out.column(2).is_null(1), "expired timestamp is null too");
    });
}

#[test]
fn many_entities_across_shards() {
    let spec = spec(None);
    each_backend(&spec, |index| {
        let names: Vec<String> = (0..5000).map(|i| format!("e{i}")).collect();
        let rows: Vec<_> = names
            .iter()
            .enumerate()
            .map(|(i, k)| (k.as_str(), Some(i as i64), None, 1))
            .collect();
        apply(index, &batch(&spec, &rows));
        let asked: Vec<&str> = names.iter().rev().map(String::as_str).collect();
        let out = index.lookup(&keys(&asked), &[0], 0).unwrap();
        let n = out.column(1).as_primitive::<Int64Type>();
        assert!(n.iter().zip((0..5000).rev()).all(|(v, i)| v == Some(i)));
    });
}

/// Reads of more keys than one turn at the shard locks covers, mixing unknown and repeated
/// keys, answer every key in request order while writers add entities and rewrite a string
/// feature (taking shards for themselves) beside them.
#[test]
fn large_reads_beside_exclusive_writers_answer_in_request_order() {
    let spec = spec(None);
    each_backend(&spec, |index| {
        const ENTITIES: usize = 700;
        let names: Vec<String> = (0..2 * ENTITIES).map(|i| format!("e{i}")).collect();
        let rows =
            |from: usize, to: usize, n: i64| -> Vec<(&str, Option<i64>, Option<&str>, i64)> {
                names[from..to]
                    .iter()
                    .map(|k| (k.as_str(), Some(n), Some(k.as_str()), n))
                    .collect()
            };
        apply(index, &batch(&spec, &rows(0, ENTITIES, 1)));
        // Known keys backwards, each followed by one not stored, and the first key again.
        let mut asked: Vec<String> = Vec::new();
        for (i, name) in names[..ENTITIES].iter().enumerate().rev() {
            asked.push(name.clone());
            asked.push(format!("unknown{i}"));
            asked.push(names[0].clone());
        }
        let asked = EntityKeys::String(asked);
        let check = |out: &RecordBatch, rewritten_at_least: i64| {
            let n = out.column(1).as_primitive::<Int64Type>();
            let label = out.column(2).as_string::<i32>();
            for (row, i) in (0..ENTITIES).rev().enumerate() {
                let (known, unknown, first) = (3 * row, 3 * row + 1, 3 * row + 2);
                assert!(n.value(known) >= rewritten_at_least, "row {known}");
                assert_eq!(label.value(known), names[i], "row {known}");
                assert!(
                    n.is_null(unknown) && label.is_null(unknown),
                    "row {unknown}"
                );
                assert_eq!(label.value(first), names[0], "row {first}");
            }
        };
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for round in 0..20 {
                    // Rewrites of the known entities, and entities new to the set.
                    apply(index, &batch(&spec, &rows(0, ENTITIES, 2 + round)));
                    let new = ENTITIES + round as usize * ENTITIES / 20;
                    apply(index, &batch(&spec, &rows(new, new + ENTITIES / 20, 2)));
                }
                done.store(true, Ordering::Relaxed);
            });
            for _ in 0..2 {
                scope.spawn(|| {
                    let mut reads = 0;
                    while !done.load(Ordering::Relaxed) || reads < 5 {
                        reads += 1;
                        check(&index.lookup(&asked, &[0, 1], 0).unwrap(), 1);
                    }
                });
            }
        });
        check(&index.lookup(&asked, &[0, 1], 0).unwrap(), 21);
    });
}

#[test]
fn empty_and_unknown_lookups_give_aligned_typed_nulls() {
    let spec = spec(None);
    each_backend(&spec, |index| {
        let empty = index.lookup(&keys(&[]), &[0, 1, 2], 0).unwrap();
        assert_eq!(empty.num_rows(), 0);
        empty
            .columns()
            .iter()
            .for_each(|c| c.to_data().validate_full().unwrap());
        let unknown = index.lookup(&keys(&["x"]), &[0, 2], 0).unwrap();
        unknown
            .columns()
            .iter()
            .for_each(|c| c.to_data().validate_full().unwrap());
        assert!(unknown.column(1).is_null(0) && unknown.column(2).is_null(0));
    });
}

/// Reads of one feature list answer in one shared schema (what Flight's schema message
/// cache is keyed by), whichever features and in whichever order the list names.
#[test]
fn reads_of_one_feature_list_share_their_schema() {
    let spec = spec(None);
    each_backend(&spec, |index| {
        let schema =
            |features: &[usize]| index.lookup(&keys(&["x"]), features, 0).unwrap().schema();
        for features in [&[0, 1, 2][..], &[2, 0], &[1]] {
            assert!(
                Arc::ptr_eq(&schema(features), &schema(features)),
                "{features:?}"
            );
        }
        assert!(!Arc::ptr_eq(&schema(&[2, 0]), &schema(&[0, 2])));
        assert_eq!(schema(&[2, 0]).field(1).name(), "e");
    });
}

/// Every feature type, with nulls, from a sliced batch (non-zero offsets in every buffer):
/// what is applied comes back from a lookup exactly.
#[test]
fn every_feature_type_round_trips() {
    use arrow::array::{
        ArrayRef, BinaryArray, BooleanArray, Date32Array, FixedSizeListBuilder, Float64Array,
        Float64Builder, Int32Array,
    };
    let spec = Arc::new(
        FeatureSetSpec::from_json(
            br#"{"name": "all", "entity": {"name": "id", "type": "int64"},
                 "features": [{"name": "b", "type": "bool"}, {"name": "i", "type": "int32"},
                              {"name": "l", "type": "int64"}, {"name": "f", "type": "float32"},
                              {"name": "d", "type": "float64"}, {"name": "s", "type": "string"},
                              {"name": "x", "type": "binary"}, {"name": "day", "type": "date"},
                              {"name": "t", "type": "timestamp"},
                              {"name": "v", "type": "float32[2]"},
                              {"name": "w", "type": "float64[3]"}]}"#,
        )
        .unwrap(),
    );
    let mut v = FixedSizeListBuilder::new(Float32Builder::new(), 2);
    let mut w = FixedSizeListBuilder::new(Float64Builder::new(), 3);
    for row in 0..4 {
        let x = row as f32;
        v.values().append_slice(&[x, -x]);
        v.append(row != 2);
        w.values().append_slice(&[f64::from(x), 0.5, -1e300]);
        w.append(row != 1);
    }
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("id", Arc::new(Int64Array::from(vec![1, 2, 3, 4]))),
        (
            "b",
            Arc::new(BooleanArray::from(vec![
                Some(true),
                None,
                Some(false),
                Some(true),
            ])),
        ),
        (
            "i",
            Arc::new(Int32Array::from(vec![
                Some(-7),
                Some(i32::MAX),
                None,
                Some(0),
            ])),
        ),
        (
            "l",
            Arc::new(Int64Array::from(vec![
                None,
                Some(i64::MIN),
                Some(1),
                Some(2),
            ])),
        ),
        (
            "f",
            Arc::new(arrow::array::Float32Array::from(vec![
                Some(0.1),
                Some(f32::MAX),
                None,
                Some(-0.0),
            ])),
        ),
        (
            "d",
            Arc::new(Float64Array::from(vec![
                Some(1e-300),
                None,
                Some(2.5),
                Some(3.0),
            ])),
        ),
        (
            "s",
            Arc::new(StringArray::from(vec![
                Some("zero"),
                Some(""),
                Some("ü"),
                None,
            ])),
        ),
        (
            "x",
            Arc::new(BinaryArray::from(vec![
                Some(&b"\x00"[..]),
                None,
                Some(&b"\xff\x01"[..]),
                Some(&b""[..]),
            ])),
        ),
        (
            "day",
            Arc::new(Date32Array::from(vec![
                Some(-719_162),
                Some(2_932_896),
                None,
                Some(0),
            ])),
        ),
        (
            "t",
            Arc::new(
                TimestampMicrosecondArray::from(vec![
                    Some(1),
                    None,
                    Some(-62_135_596_800_000_000),
                    Some(253_402_300_799_999_999),
                ])
                .with_timezone("UTC"),
            ),
        ),
        ("v", Arc::new(v.finish())),
        ("w", Arc::new(w.finish())),
        (
            "event_timestamp",
            Arc::new(TimestampMicrosecondArray::from(vec![10, 20, 30, 40]).with_timezone("UTC")),
        ),
    ];
    let input = RecordBatch::try_from_iter(columns).unwrap();
    let batch = coerce_batch(&spec, &input).unwrap().slice(1, 3);
    each_backend(&spec, |index| {
        apply(index, &batch);
        let all: Vec<usize> = (0..spec.features.len()).collect();
        let out = index
            .lookup(&EntityKeys::Int64(vec![2, 3, 4]), &all, 0)
            .unwrap();
        assert_eq!(out.num_columns(), batch.num_columns());
        for (i, (got, want)) in out.columns().iter().zip(batch.columns()).enumerate() {
            assert_eq!(got.to_data(), want.to_data(), "column {i}");
        }
    });
}

#[test]
fn prepare_refuses_a_batch_not_in_the_spec_types() {
    let spec = spec(None);
    each_backend(&spec, |index| {
        let good = batch(&spec, &[("a", Some(1), None, 1)]);
        let mut columns = good.columns().to_vec();
        columns[1] = Arc::new(StringArray::from(vec!["not an int64"]));
        let fields: Vec<_> = good
            .schema()
            .fields()
            .iter()
            .zip(&columns)
            .map(|(f, c)| f.as_ref().clone().with_data_type(c.data_type().clone()))
            .collect();
        let bad =
            RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), columns).unwrap();
        let err = index
            .prepare(&bad)
            .err()
            .expect("a mismatched batch is refused");
        assert!(err.to_string().contains("\"n\""), "{err}");
        assert_eq!(index.entities(), 0);
    });
}

#[test]
fn removing_a_set_drops_its_values() {
    let spec = spec(None);
    each_backend(&spec, |index| {
        apply(index, &batch(&spec, &[("a", Some(1), None, 10)]));
        index.remove().unwrap();
        let out = index.lookup(&keys(&["a"]), &[0], 0).unwrap();
        assert!(out.column(1).is_null(0) && out.column(2).is_null(0));
        assert_eq!(index.entities(), 0);
        assert_eq!(index.latest_event_timestamp(), None);
    });
}

/// Writers racing on the same entities (as several servers would on one shared store): each
/// entity ends with its newest event time, never rolled back by a slower, older write.
#[test]
fn concurrent_writers_never_roll_a_value_back() {
    let spec = spec(None);
    each_backend(&spec, |index| {
        let entities: Vec<String> = (0..200).map(|i| format!("e{i}")).collect();
        std::thread::scope(|scope| {
            for writer in 0..4i64 {
                let (spec, entities) = (&spec, &entities);
                scope.spawn(move || {
                    // Writer w writes event times w, w + 4, w + 8, ...: every writer's times
                    // interleave with the others'.
                    for round in 0..25i64 {
                        let t = writer + 4 * round;
                        let rows: Vec<_> = entities
                            .iter()
                            .map(|e| (e.as_str(), Some(t), None, t))
                            .collect();
                        apply(index, &batch(spec, &rows));
                    }
                });
            }
        });
        let asked: Vec<&str> = entities.iter().map(String::as_str).collect();
        let out = index.lookup(&keys(&asked), &[0], 0).unwrap();
        let n = out.column(1).as_primitive::<Int64Type>();
        assert!(n.iter().all(|v| v == Some(99)), "{n:?}");
        assert_eq!(index.latest_event_timestamp(), Some(99));
    });
}

/// Readers racing an ingest see each entity's row as one write made it: its numbers, its
/// embedding and its event time all from the same row, and never older than a row they saw
/// before. (The memory backend rewrites such rows in place beside the readers.)
#[test]
fn readers_never_see_half_a_row() {
    let spec = Arc::new(
        FeatureSetSpec::from_json(
            br#"{"name": "whole", "entity": {"name": "id", "type": "int64"},
                 "features": [{"name": "n", "type": "int64"}, {"name": "e", "type": "float32[2]"},
                              {"name": "x", "type": "float64"}]}"#,
        )
        .unwrap(),
    );
    // Entity k's row written at time t holds n = t, e = [t, -t], x = t + k.
    let rows = |entities: i64, t: i64| {
        let mut vectors = FixedSizeListBuilder::new(Float32Builder::new(), 2);
        for _ in 0..entities {
            vectors.values().append_slice(&[t as f32, -(t as f32)]);
            vectors.append(true);
        }
        let input = RecordBatch::try_from_iter(vec![
            (
                "id",
                Arc::new(Int64Array::from_iter_values(0..entities)) as _,
            ),
            (
                "n",
                Arc::new(Int64Array::from(vec![t; entities as usize])) as _,
            ),
            ("e", Arc::new(vectors.finish()) as _),
            (
                "x",
                Arc::new(arrow::array::Float64Array::from_iter_values(
                    (0..entities).map(|k| (t + k) as f64),
                )) as _,
            ),
            (
                "event_timestamp",
                Arc::new(
                    TimestampMicrosecondArray::from(vec![t; entities as usize])
                        .with_timezone("UTC"),
                ) as _,
            ),
        ])
        .unwrap();
        coerce_batch(&spec, &input).unwrap()
    };
    each_backend(&spec, |index| {
        const ENTITIES: i64 = 64;
        const ROUNDS: i64 = 150;
        apply(index, &rows(ENTITIES, 0));
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            for writer in 0..2i64 {
                let (rows, done) = (&rows, &done);
                scope.spawn(move || {
                    for round in 0..ROUNDS {
                        apply(index, &rows(ENTITIES, 1 + writer + 2 * round));
                    }
                    done.store(true, Ordering::Relaxed);
                });
            }
            for _ in 0..2 {
                let done = &done;
                scope.spawn(move || {
                    let asked = EntityKeys::Int64((0..ENTITIES).collect());
                    let mut seen = vec![0i64; ENTITIES as usize];
                    let mut reads = 0;
                    while !done.load(Ordering::Relaxed) || reads < 10 {
                        reads += 1;
                        let out = index.lookup(&asked, &[0, 1, 2], 0).unwrap();
                        let n = out.column(1).as_primitive::<Int64Type>();
                        let e = out.column(2).as_fixed_size_list();
                        let x = out
                            .column(3)
                            .as_primitive::<arrow::datatypes::Float64Type>();
                        let ts = out.column(4).as_primitive::<TimestampMicrosecondType>();
                        for (k, seen) in seen.iter_mut().enumerate() {
                            let t = n.value(k);
                            let pair = e.value(k);
                            let pair = pair.as_primitive::<Float32Type>();
                            assert_eq!(ts.value(k), t, "entity {k}: time and n of one row");
                            assert_eq!(
                                pair.values(),
                                &[t as f32, -(t as f32)],
                                "entity {k} at {t}"
                            );
                            assert_eq!(x.value(k), (t + k as i64) as f64, "entity {k} at {t}");
                            assert!(t >= *seen, "entity {k} went back from {seen} to {t}");
                            *seen = t;
                        }
                    }
                });
            }
        });
        let out = index
            .lookup(&EntityKeys::Int64((0..ENTITIES).collect()), &[0], 0)
            .unwrap();
        let n = out.column(1).as_primitive::<Int64Type>();
        assert!(n.iter().all(|v| v == Some(2 * ROUNDS)), "{n:?}");
    });
}
