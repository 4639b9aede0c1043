//! The Prometheus metric families of PROTOCOL.md, rendered on `/metrics`.

use std::time::Duration;

use featherstore_core::time::{now_micros, MICROS_PER_SECOND};
use featherstore_store::FeatureStore;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Buckets from 50 µs: online reads are sub-millisecond.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    ingested_rows: IntCounterVec,
    online_entities: IntGaugeVec,
    freshness: GaugeVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
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
        let ingested_rows = IntCounterVec::new(
            Opts::new(
                "featherstore_ingested_rows_total",
                "Rows stored, by feature set",
            ),
            &["feature_set"],
        )
        .expect("valid metric");
        let online_entities = IntGaugeVec::new(
            Opts::new(
                "featherstore_online_entities",
                "Entities held in the online index",
            ),
            &["feature_set"],
        )
        .expect("valid metric");
        let freshness = GaugeVec::new(
            Opts::new(
                "featherstore_feature_freshness_seconds",
                "Seconds since the newest event time ingested into a feature set",
            ),
            &["feature_set"],
        )
        .expect("valid metric");
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(ingested_rows.clone()),
            Box::new(online_entities.clone()),
            Box::new(freshness.clone()),
        ] {
            registry.register(collector).expect("unique metric names");
        }
        Metrics {
            registry,
            requests,
            duration,
            ingested_rows,
            online_entities,
            freshness,
        }
    }

    /// Records one finished request. `code` is `ok` or an error code of PROTOCOL.md.
    pub fn observe(&self, api: &str, method: &str, code: &str, elapsed: Duration) {
        self.requests.with_label_values(&[api, method, code]).inc();
        self.duration
            .with_label_values(&[api, method])
            .observe(elapsed.as_secs_f64());
    }

    pub fn ingested(&self, feature_set: &str, rows: usize) {
        self.ingested_rows
            .with_label_values(&[feature_set])
            .inc_by(rows as u64);
    }

    /// Prometheus text format; per-set gauges are read from the store at scrape time.
    pub fn render(&self, store: &FeatureStore) -> String {
        self.online_entities.reset();
        self.freshness.reset();
        let now = now_micros();
        for set in store.list() {
            let name = set.spec.name.as_str();
            self.online_entities
                .with_label_values(&[name])
                .set(set.index.entities() as i64);
            if let Some(latest) = set.index.latest_event_timestamp() {
                self.freshness
                    .with_label_values(&[name])
                    .set((now - latest) as f64 / MICROS_PER_SECOND as f64);
            }
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into memory");
        String::from_utf8(out).expect("prometheus text is UTF-8")
    }
}
