//! The Prometheus metric families (PROTOCOL.md's and the operational ones of
//! docs/observability.md), rendered on `/metrics`.
//!
//! Request metrics are recorded as requests finish. Everything the store knows (per-set
//! gauges, storage sizes, storage operation durations, Parquet activity) is read from it at
//! scrape time, so the store needs no metrics library and pays nothing between scrapes.

use std::time::Duration;

use arrow::array::{Array, RecordBatch};
use featherstore_core::time::{now_micros, MICROS_PER_SECOND};
use featherstore_store::metrics::{
    HistogramSnapshot, Operation, DUCKDB, DURATION_BUCKETS, PARQUET, REDIS, TRAINING_INDEX,
};
use featherstore_store::FeatureStore;
use prometheus::core::{Collector, Desc};

use crate::limits::Rejection;
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

mod summary;

/// Request latency buckets from 25 µs: online reads are sub-millisecond.
const LATENCY_BUCKETS: &[f64] = &[
    0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Which API a request came in on (the `api` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Flight,
    Http,
}

impl Api {
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Flight => "flight",
            Api::Http => "http",
        }
    }
}

pub struct Metrics {
    /// The `backend` label of the storage totals.
    backend: &'static str,
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    in_flight_flight: IntGauge,
    in_flight_http: IntGauge,
    rejected: IntCounterVec,
    ingested_rows: IntCounterVec,
    ingested_bytes: IntCounterVec,
    online_entities: IntGaugeVec,
    freshness: GaugeVec,
    index_memory: IntGaugeVec,
    training_index_bytes: IntGauge,
    stored_bytes: IntGaugeVec,
    stored_files: IntGaugeVec,
    storage_bytes: IntGaugeVec,
    storage_files: IntGaugeVec,
    auth_failures: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn per_set_gauge(name: &str, help: &str) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), &["feature_set"]).expect("valid metric")
}

impl Metrics {
    pub fn new() -> Self {
        Self::for_backend("unknown")
    }

    /// Metrics of a server on `backend` (`duckdb`, `parquet`).
    pub fn for_backend(backend: &'static str) -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "featherstore_requests_total",
                "Requests served, by API, method and result code",
            ),
            &["api", "method", "code"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "featherstore_request_duration_seconds",
                "Time to answer a request (until its response starts streaming)",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["api", "method"],
        )
        .expect("valid metric");
        let in_flight = IntGaugeVec::new(
            Opts::new(
                "featherstore_requests_in_flight",
                "Requests being handled (until their response starts streaming), by API",
            ),
            &["api"],
        )
        .expect("valid metric");
        let rejected = IntCounterVec::new(
            Opts::new(
                "featherstore_rejected_requests_total",
                "Requests refused or ended early by a limit, by API and reason (too_large, \
                 timeout, stream_idle, concurrency, client_streams, ingest_backpressure, \
                 storage_busy)",
            ),
            &["api", "reason"],
        )
        .expect("valid metric");
        let ingested_rows = IntCounterVec::new(
            Opts::new(
                "featherstore_ingested_rows_total",
                "Rows stored, by feature set",
            ),
            &["feature_set"],
        )
        .expect("valid metric");
        let ingested_bytes = IntCounterVec::new(
            Opts::new(
                "featherstore_ingested_bytes_total",
                "Arrow bytes of the batches stored, as received, by feature set",
            ),
            &["feature_set"],
        )
        .expect("valid metric");
        let online_entities = per_set_gauge(
            "featherstore_online_entities",
            "Entities held in the online index",
        );
        let freshness = GaugeVec::new(
            Opts::new(
                "featherstore_feature_freshness_seconds",
                "Seconds since the newest event time ingested into a feature set",
            ),
            &["feature_set"],
        )
        .expect("valid metric");
        let index_memory = per_set_gauge(
            "featherstore_online_index_memory_bytes",
            "Approximate memory held by a set's online index (keys, slots, values)",
        );
        let training_index_bytes = IntGauge::new(
            "featherstore_training_index_bytes",
            "Memory held by indexes of stored rows that training joins keep for the next request",
        )
        .expect("valid metric");
        let stored_bytes = per_set_gauge(
            "featherstore_stored_bytes",
            "Bytes a set's offline data takes on disk (backends that store sets apart)",
        );
        let stored_files = per_set_gauge(
            "featherstore_stored_files",
            "Files holding a set's offline data (backends that store sets apart)",
        );
        let storage_bytes = IntGaugeVec::new(
            Opts::new(
                "featherstore_storage_bytes",
                "Bytes the whole offline store takes on disk",
            ),
            &["backend"],
        )
        .expect("valid metric");
        let storage_files = IntGaugeVec::new(
            Opts::new(
                "featherstore_storage_files",
                "Files of the whole offline store",
            ),
            &["backend"],
        )
        .expect("valid metric");
        let auth_failures = IntCounterVec::new(
            Opts::new(
                "featherstore_auth_failures_total",
                "Requests refused by authentication or authorization, by API and reason",
            ),
            &["api", "reason"],
        )
        .expect("valid metric");
        for collector in [
            Box::new(requests.clone()) as Box<dyn Collector>,
            Box::new(auth_failures.clone()),
            Box::new(duration.clone()),
            Box::new(in_flight.clone()),
            Box::new(rejected.clone()),
            Box::new(ingested_rows.clone()),
            Box::new(ingested_bytes.clone()),
            Box::new(online_entities.clone()),
            Box::new(freshness.clone()),
            Box::new(index_memory.clone()),
            Box::new(stored_bytes.clone()),
            Box::new(stored_files.clone()),
            Box::new(storage_bytes.clone()),
            Box::new(storage_files.clone()),
            Box::new(ActivityCollector::new("parquet", || PARQUET.counters())),
            Box::new(ActivityCollector::new("duckdb", || DUCKDB.counters())),
            Box::new(ActivityCollector::new("training_index", || {
                TRAINING_INDEX.counters()
            })),
            Box::new(training_index_bytes.clone()),
        ] {
            registry.register(collector).expect("unique metric names");
        }
        Metrics {
            backend,
            registry,
            requests,
            duration,
            in_flight_flight: in_flight.with_label_values(&[Api::Flight.as_str()]),
            in_flight_http: in_flight.with_label_values(&[Api::Http.as_str()]),
            rejected,
            ingested_rows,
            ingested_bytes,
            online_entities,
            freshness,
            index_memory,
            training_index_bytes,
            stored_bytes,
            stored_files,
            storage_bytes,
            storage_files,
            auth_failures,
        }
    }

    /// The storage backend's name (`duckdb`, `parquet`).
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// Counts a request refused by auth; `reason` is an `auth::Refusal` label.
    pub fn auth_failure(&self, api: &str, reason: &str) {
        self.auth_failures.with_label_values(&[api, reason]).inc();
    }

    /// Counts a request as in flight until the guard is dropped.
    pub fn in_flight(&self, api: Api) -> InFlight {
        let gauge = match api {
            Api::Flight => self.in_flight_flight.clone(),
            Api::Http => self.in_flight_http.clone(),
        };
        gauge.inc();
        InFlight(gauge)
    }

    /// Records one finished request. `code` is `ok` or an error code of PROTOCOL.md.
    pub fn observe(&self, api: &str, method: &str, code: &str, elapsed: Duration) {
        self.requests.with_label_values(&[api, method, code]).inc();
        self.duration
            .with_label_values(&[api, method])
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a request refused, or a stream ended, by a limit.
    pub fn rejected(&self, api: Api, reason: Rejection) {
        self.rejected
            .with_label_values(&[api.as_str(), reason.as_str()])
            .inc();
    }

    /// Records a stored batch: its rows, and its Arrow bytes as received.
    pub fn ingested(&self, feature_set: &str, rows: usize, bytes: usize) {
        self.ingested_rows
            .with_label_values(&[feature_set])
            .inc_by(rows as u64);
        self.ingested_bytes
            .with_label_values(&[feature_set])
            .inc_by(bytes as u64);
    }

    /// Prometheus text format. Reads the store (index sizes, file sizes): may block briefly,
    /// so async callers run it on the blocking pool.
    pub fn render(&self, store: &FeatureStore) -> String {
        let backend = self.backend;
        for gauge in [
            &self.online_entities,
            &self.index_memory,
            &self.stored_bytes,
            &self.stored_files,
            &self.storage_bytes,
            &self.storage_files,
        ] {
            gauge.reset();
        }
        self.freshness.reset();
        self.training_index_bytes
            .set(i64::try_from(store.training_index_bytes()).unwrap_or(i64::MAX));
        let now = now_micros();
        for set in store.list() {
            let name = set.spec.name.as_str();
            self.online_entities
                .with_label_values(&[name])
                .set(set.index.entities() as i64);
            self.index_memory
                .with_label_values(&[name])
                .set(set.index.memory_bytes() as i64);
            if let Some(latest) = set.index.latest_event_timestamp() {
                self.freshness
                    .with_label_values(&[name])
                    .set((now - latest) as f64 / MICROS_PER_SECOND as f64);
            }
            match store.storage_stats(&set) {
                Ok(Some(stats)) => {
                    self.stored_bytes
                        .with_label_values(&[name])
                        .set(stats.bytes as i64);
                    self.stored_files
                        .with_label_values(&[name])
                        .set(stats.files as i64);
                }
                Ok(None) => {}
                // A set deleted during the scrape, or a file gone under a compaction.
                Err(e) => tracing::debug!(feature_set = name, error = %e, "no storage stats"),
            }
        }
        match store.storage_total() {
            Ok(Some(total)) => {
                self.storage_bytes
                    .with_label_values(&[backend])
                    .set(total.bytes as i64);
                self.storage_files
                    .with_label_values(&[backend])
                    .set(total.files as i64);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "reading the storage size failed"),
        }
        let mut families = self.registry.gather();
        families.push(operation_family(store));
        if store.online_is_remote() {
            families.extend(redis_families());
        }
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&families, &mut out)
            .expect("text encoding into memory");
        String::from_utf8(out).expect("prometheus text is UTF-8")
    }
}

/// Keeps a request counted in `featherstore_requests_in_flight` while alive.
pub struct InFlight(IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The Arrow bytes a batch holds (the sliced data of its columns, not spare capacity).
pub fn batch_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|column| {
            column
                .to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| column.get_array_memory_size())
        })
        .sum()
}

fn label(name: &str, value: &str) -> proto::LabelPair {
    let mut pair = proto::LabelPair::default();
    pair.set_name(name.to_string());
    pair.set_value(value.to_string());
    pair
}

fn histogram_metric(labels: Vec<proto::LabelPair>, snapshot: &HistogramSnapshot) -> proto::Metric {
    let buckets = DURATION_BUCKETS
        .iter()
        .zip(&snapshot.cumulative)
        .map(|(&bound, &count)| {
            let mut bucket = proto::Bucket::default();
            bucket.set_upper_bound(bound);
            bucket.set_cumulative_count(count);
            bucket
        })
        .collect();
    let mut histogram = proto::Histogram::default();
    histogram.set_sample_count(snapshot.count);
    histogram.set_sample_sum(snapshot.sum_seconds);
    histogram.set_bucket(buckets);
    let mut metric = proto::Metric::default();
    metric.set_label(labels);
    metric.set_histogram(histogram);
    metric
}

/// `featherstore_storage_operation_duration_seconds{operation}` from the store's timings.
fn operation_family(store: &FeatureStore) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name("featherstore_storage_operation_duration_seconds".into());
    family.set_help(
        "Duration of storage and index work, by operation (scans and training data joins \
         exclude time spent waiting for the client)"
            .into(),
    );
    family.set_field_type(MetricType::HISTOGRAM);
    let metrics = Operation::ALL
        .iter()
        .map(|&op| {
            histogram_metric(
                vec![label("operation", op.as_str())],
                &store.operations().snapshot(op),
            )
        })
        .collect();
    family.set_metric(metrics);
    family
}

/// The Redis online backend's round trips (`featherstore_redis_round_trips_total`), those that
/// failed or timed out (`featherstore_redis_errors_total`) and their latency
/// (`featherstore_redis_round_trip_duration_seconds`); only with the Redis backend.
fn redis_families() -> Vec<MetricFamily> {
    let counter = |name: &str, help: &str, value: u64| {
        let mut counter = proto::Counter::default();
        counter.set_value(value as f64);
        let mut metric = proto::Metric::default();
        metric.set_counter(counter);
        let mut family = MetricFamily::default();
        family.set_name(name.into());
        family.set_help(help.into());
        family.set_field_type(MetricType::COUNTER);
        family.set_metric(vec![metric]);
        family
    };
    let mut latency = MetricFamily::default();
    latency.set_name("featherstore_redis_round_trip_duration_seconds".into());
    latency.set_help(
        "Latency of the online store's Redis round trips (a pipeline, or a group of commands \
         sent at once, is one)"
            .into(),
    );
    latency.set_field_type(MetricType::HISTOGRAM);
    latency.set_metric(vec![histogram_metric(vec![], &REDIS.latency())]);
    vec![
        counter(
            "featherstore_redis_round_trips_total",
            "Round trips of the online store to Redis",
            REDIS.round_trips(),
        ),
        counter(
            "featherstore_redis_errors_total",
            "Round trips of the online store to Redis that failed or timed out",
            REDIS.errors(),
        ),
        latency,
    ]
}

/// A storage component's activity counters (a backend's, the training indexes') as
/// `featherstore_{component}_*_total`; microsecond counters become `_seconds_total`.
struct ActivityCollector {
    component: &'static str,
    counters: fn() -> Vec<(&'static str, &'static str, u64)>,
    descs: Vec<Desc>,
}

impl ActivityCollector {
    fn new(
        component: &'static str,
        counters: fn() -> Vec<(&'static str, &'static str, u64)>,
    ) -> Self {
        let descs = counters()
            .iter()
            .map(|(key, help, _)| {
                Desc::new(
                    activity_metric_name(component, key),
                    help.to_string(),
                    vec![],
                    Default::default(),
                )
                .expect("valid metric")
            })
            .collect();
        ActivityCollector {
            component,
            counters,
            descs,
        }
    }
}

fn activity_metric_name(component: &str, key: &str) -> String {
    match key.strip_suffix("_micros") {
        Some(stem) => format!("featherstore_{component}_{stem}_seconds_total"),
        None => format!("featherstore_{component}_{key}_total"),
    }
}

impl Collector for ActivityCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        (self.counters)()
            .iter()
            .map(|&(key, help, value)| {
                let mut counter = proto::Counter::default();
                counter.set_value(if key.ends_with("_micros") {
                    value as f64 / 1e6
                } else {
                    value as f64
                });
                let mut metric = proto::Metric::default();
                metric.set_counter(counter);
                let mut family = MetricFamily::default();
                family.set_name(activity_metric_name(self.component, key));
                family.set_help(help.into());
                family.set_field_type(MetricType::COUNTER);
                family.set_metric(vec![metric]);
                family
            })
            .collect()
    }
}
