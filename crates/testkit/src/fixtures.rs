//! Feature sets and batches the suites and benchmarks share: the `user_features` set of the
//! server and client tests, a set of float32 features for the load benchmarks, a ten-feature
//! set of mixed types for the micro-benchmarks, and a deterministic random source.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, FixedSizeListBuilder, Float32Array, Float32Builder, Float64Array,
    Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    TimestampNanosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use featherstore_core::{EntityKeys, FeatureSetSpec};

/// The `user_features` set: a string entity, an int64, a float32 and a float32[2] vector.
pub const USER_SPEC: &str = r#"{
  "name": "user_features",
  "entity": {"name": "user_id", "type": "string"},
  "features": [
    {"name": "age", "type": "int64"},
    {"name": "ctr_7d", "type": "float32"},
    {"name": "embedding", "type": "float32[2]"}
  ],
  "tags": {"team": "growth"}
}"#;

/// Rows of `user_features`: (user, age, ctr, event time in seconds); the embedding is
/// `[age, age + 0.5]`.
pub fn user_batch(rows: &[(&str, Option<i64>, Option<f32>, i64)]) -> RecordBatch {
    let mut embedding = FixedSizeListBuilder::new(Float32Builder::new(), 2);
    for (_, age, _, _) in rows {
        let x = age.unwrap_or(0) as f32;
        embedding.values().append_slice(&[x, x + 0.5]);
        embedding.append(true);
    }
    // Nullable fields throughout, as clients usually send them.
    RecordBatch::try_from_iter_with_nullable(vec![
        (
            "user_id",
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
            true,
        ),
        (
            "age",
            Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.1))) as ArrayRef,
            true,
        ),
        (
            "ctr_7d",
            Arc::new(Float32Array::from_iter(rows.iter().map(|r| r.2))) as ArrayRef,
            true,
        ),
        ("embedding", Arc::new(embedding.finish()) as ArrayRef, true),
        (
            "event_timestamp",
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.3 * 1_000_000))
                    .with_timezone("UTC"),
            ) as ArrayRef,
            true,
        ),
    ])
    .expect("user_features columns")
}

/// The column names of `batch`, in order.
pub fn column_names(batch: &RecordBatch) -> Vec<String> {
    batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect()
}

/// 2026-01-01T00:00:00Z in UTC microseconds: the event times of generated batches start here.
pub const JAN_1_2026_MICROS: i64 = 1_767_225_600_000_000;

/// Features of [`float_set_spec`].
pub const FLOAT_FEATURES: usize = 16;

/// A set of [`FLOAT_FEATURES`] float32 features `f0..` keyed by an int64 `id`.
pub fn float_set_spec(name: &str) -> serde_json::Value {
    let features: Vec<_> = (0..FLOAT_FEATURES)
        .map(|i| serde_json::json!({"name": format!("f{i}"), "type": "float32"}))
        .collect();
    serde_json::json!({"name": name, "entity": {"name": "id", "type": "int64"}, "features": features})
}

/// `rows` rows of [`float_set_spec`] for entities `first..first + rows`.
pub fn float_batch(first: i64, rows: usize) -> RecordBatch {
    let mut fields = vec![Field::new("id", DataType::Int64, false)];
    let mut columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_iter_values(
        first..first + rows as i64,
    ))];
    for f in 0..FLOAT_FEATURES {
        fields.push(Field::new(format!("f{f}"), DataType::Float32, true));
        columns.push(Arc::new(Float32Array::from_iter_values(
            (0..rows).map(|r| (r * FLOAT_FEATURES + f) as f32),
        )));
    }
    fields.push(Field::new(
        "event_timestamp",
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        false,
    ));
    columns.push(Arc::new(
        TimestampMicrosecondArray::from_iter_values(
            (0..rows as i64).map(|r| JAN_1_2026_MICROS + r),
        )
        .with_timezone("UTC"),
    ));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("float set columns")
}

/// xorshift64*: deterministic, dependency-free randomness.
pub struct Rng(pub u64);

impl Rng {
    #[allow(clippy::should_implement_trait)] // not an iterator: it never ends
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The micro-benchmarks' set: an int64 entity and ten features of mixed types, as a
/// production set looks (counters, rates, flags, a category, an embedding).
pub const MIXED_SPEC: &str = r#"{
  "name": "mixed",
  "entity": {"name": "id", "type": "int64"},
  "features": [
    {"name": "clicks", "type": "int64"},
    {"name": "views", "type": "int64"},
    {"name": "age", "type": "int32"},
    {"name": "ctr", "type": "float32"},
    {"name": "score", "type": "float32"},
    {"name": "spend", "type": "float64"},
    {"name": "active", "type": "bool"},
    {"name": "country", "type": "string"},
    {"name": "segment", "type": "string"},
    {"name": "embedding", "type": "float32[8]"}
  ]
}"#;

pub fn mixed_spec() -> FeatureSetSpec {
    let mut spec = FeatureSetSpec::from_json(MIXED_SPEC.as_bytes()).expect("a valid spec");
    spec.version = Some(1);
    spec
}

/// The training benchmarks' set `name`: an int64 key `entity_id`, 8 float32 (`f0..f7`) and 8
/// int64 (`i0..i7`) features, interleaved.
pub fn training_spec(name: &str) -> FeatureSetSpec {
    let features: Vec<_> = (0..8)
        .flat_map(|f| {
            [
                serde_json::json!({"name": format!("f{f}"), "type": "float32"}),
                serde_json::json!({"name": format!("i{f}"), "type": "int64"}),
            ]
        })
        .collect();
    let spec = serde_json::json!({
        "name": name,
        "entity": {"name": "entity_id", "type": "int64"},
        "features": features,
    });
    FeatureSetSpec::from_json(spec.to_string().as_bytes()).expect("a valid spec")
}

/// Thirty days in microseconds: the span of the training benchmarks' event times.
pub const THIRTY_DAYS_MICROS: u64 = 30 * 86_400 * 1_000_000;

/// Random keys below `entities`, as int64.
fn random_keys(rng: &mut Rng, rows: usize, entities: u64) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(
        (0..rows).map(|_| rng.below(entities) as i64),
    ))
}

/// Random UTC event times over the thirty days from 2026-01-01.
fn random_times(rng: &mut Rng, rows: usize) -> ArrayRef {
    Arc::new(
        TimestampMicrosecondArray::from_iter_values(
            (0..rows).map(|_| JAN_1_2026_MICROS + rng.below(THIRTY_DAYS_MICROS) as i64),
        )
        .with_timezone("UTC"),
    )
}

/// Rows of the training set ([`training_spec`]): random entities below `entities`, values
/// below 1,000, event times over 30 days.
pub fn training_rows(rng: &mut Rng, rows: usize, entities: u64) -> RecordBatch {
    let mut columns = vec![("entity_id".to_string(), random_keys(rng, rows, entities))];
    for f in 0..8 {
        let floats = Float32Array::from_iter_values((0..rows).map(|_| rng.below(1000) as f32));
        let ints = Int64Array::from_iter_values((0..rows).map(|_| rng.below(1000) as i64));
        columns.push((format!("f{f}"), Arc::new(floats)));
        columns.push((format!("i{f}"), Arc::new(ints)));
    }
    columns.push(("event_timestamp".into(), random_times(rng, rows)));
    RecordBatch::try_from_iter(columns).expect("consistent columns")
}

/// Entity rows of a training data request against [`training_rows`]: key, time, and a
/// pass-through `label` counting from `first`.
pub fn training_entity_rows(
    rng: &mut Rng,
    first: usize,
    rows: usize,
    entities: u64,
) -> RecordBatch {
    RecordBatch::try_from_iter(vec![
        ("entity_id", random_keys(rng, rows, entities)),
        ("event_timestamp", random_times(rng, rows)),
        (
            "label",
            Arc::new(Int64Array::from_iter_values(
                (first..first + rows).map(|i| i as i64),
            )) as ArrayRef,
        ),
    ])
    .expect("consistent columns")
}

/// A set `name` with one feature of every type (`b` bool, `i` int32, `l` int64, `f` float32,
/// `d` float64, `s` string, `bin` binary, `day` date, `at` timestamp, `v` float32[3], `w`
/// float64[2]) and an `entity_type` key `k`: for the tests that take every type through a path.
pub fn every_type_spec(name: &str, entity_type: &str) -> FeatureSetSpec {
    let spec = serde_json::json!({
        "name": name,
        "entity": {"name": "k", "type": entity_type},
        "features": [
            {"name": "b", "type": "bool"}, {"name": "i", "type": "int32"},
            {"name": "l", "type": "int64"}, {"name": "f", "type": "float32"},
            {"name": "d", "type": "float64"}, {"name": "s", "type": "string"},
            {"name": "bin", "type": "binary"}, {"name": "day", "type": "date"},
            {"name": "at", "type": "timestamp"}, {"name": "v", "type": "float32[3]"},
            {"name": "w", "type": "float64[2]"}
        ]
    });
    FeatureSetSpec::from_json(spec.to_string().as_bytes()).expect("a valid spec")
}

const COUNTRIES: [&str; 8] = ["de", "fr", "us", "br", "in", "jp", "ng", "au"];

/// `rows` rows of [`mixed_spec`] for entities `first..first + rows`, as a client sends them
/// (nanosecond event times without a zone, as pandas writes them; a tenth of the numbers
/// null), so that coercion has real work to do. Values are drawn from `rng`.
pub fn mixed_batch(rng: &mut Rng, first: i64, rows: usize) -> RecordBatch {
    let mut draw = |n: u64| rng.below(n);
    let ids: Vec<i64> = (first..first + rows as i64).collect();
    let mut ints = |scale: u64| -> Vec<Option<i64>> {
        (0..rows)
            .map(|_| (draw(10) != 0).then(|| draw(scale) as i64))
            .collect()
    };
    let clicks = ints(10_000);
    let views = ints(1_000_000);
    let ages: Vec<Option<i32>> = ints(100).into_iter().map(|a| a.map(|a| a as i32)).collect();
    let fractions: Vec<Option<i64>> = ints(1_000_000);
    let ctr: Vec<Option<f32>> = fractions
        .iter()
        .map(|f| f.map(|f| f as f32 / 1e6))
        .collect();
    let score: Vec<Option<f32>> = fractions
        .iter()
        .map(|f| f.map(|f| f as f32 / 1e3))
        .collect();
    let spend: Vec<Option<f64>> = views.iter().map(|v| v.map(|v| v as f64 * 0.01)).collect();
    let active: Vec<Option<bool>> = clicks.iter().map(|c| c.map(|c| c % 2 == 0)).collect();
    let country: Vec<&str> = views
        .iter()
        .map(|v| COUNTRIES[v.unwrap_or(0) as usize % COUNTRIES.len()])
        .collect();
    let segment: Vec<String> = ids
        .iter()
        .map(|id| format!("segment-{}", id % 97))
        .collect();
    let mut embedding = FixedSizeListBuilder::new(Float32Builder::new(), 8);
    for (row, click) in clicks.iter().enumerate() {
        let x = click.unwrap_or(row as i64) as f32;
        embedding
            .values()
            .append_slice(&[x, x + 1.0, x * 0.5, -x, 0.25, 0.5, 0.75, 1.0]);
        embedding.append(true);
    }
    let times: Vec<i64> = (0..rows)
        .map(|_| (JAN_1_2026_MICROS + draw(30 * 86_400_000_000) as i64) * 1_000)
        .collect();
    RecordBatch::try_from_iter(vec![
        ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
        ("clicks", Arc::new(Int64Array::from(clicks)) as ArrayRef),
        ("views", Arc::new(Int64Array::from(views)) as ArrayRef),
        ("age", Arc::new(Int32Array::from(ages)) as ArrayRef),
        ("ctr", Arc::new(Float32Array::from(ctr)) as ArrayRef),
        ("score", Arc::new(Float32Array::from(score)) as ArrayRef),
        ("spend", Arc::new(Float64Array::from(spend)) as ArrayRef),
        ("active", Arc::new(BooleanArray::from(active)) as ArrayRef),
        ("country", Arc::new(StringArray::from(country)) as ArrayRef),
        ("segment", Arc::new(StringArray::from(segment)) as ArrayRef),
        ("embedding", Arc::new(embedding.finish()) as ArrayRef),
        (
            "event_timestamp",
            Arc::new(TimestampNanosecondArray::from(times)) as ArrayRef,
        ),
    ])
    .expect("mixed set columns")
}

/// `n` keys spread over entities `0..entities`, as an online read asks for them.
pub fn lookup_keys(rng: &mut Rng, n: usize, entities: i64) -> EntityKeys {
    EntityKeys::Int64((0..n).map(|_| rng.below(entities as u64) as i64).collect())
}

/// The 1-minute, 5-minute and 15-minute load averages, for benchmark reports.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The `p` quantile (0..=1) of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}
