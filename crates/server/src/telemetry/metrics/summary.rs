//! The request metrics as JSON for `GET /v1/server/stats` (the web console's server page):
//! counts and latency percentiles since start, read from the same counters and histograms
//! `/metrics` renders.

use std::collections::BTreeMap;

use prometheus::core::Collector;
use prometheus::proto::{Metric, MetricFamily};
use serde_json::{json, Value};

use super::{Metrics, LATENCY_BUCKETS};

/// Percentiles the summary gives per method and per API.
const QUANTILES: [(&str, f64); 3] = [("p50_ms", 0.5), ("p90_ms", 0.9), ("p99_ms", 0.99)];

fn label<'a>(metric: &'a Metric, name: &str) -> &'a str {
    metric
        .get_label()
        .iter()
        .find(|pair| pair.name() == name)
        .map_or("", |pair| pair.value())
}

fn metrics_of(families: &[MetricFamily]) -> impl Iterator<Item = &Metric> {
    families
        .iter()
        .flat_map(|family| family.get_metric().iter())
}

/// Cumulative counts per bucket of [`LATENCY_BUCKETS`], then the total (the `+Inf` bucket).
type Cumulative = Vec<u64>;

impl Metrics {
    /// `{"requests": [...], "latency": {...}, "in_flight": {...}}`: per API and method the
    /// requests answered (`count`), how many failed (`errors`, any code but `ok`) and latency
    /// percentiles; per API the latency histogram (`bounds_ms`, `cumulative`) a client can
    /// difference between two reads for percentiles of the time between them.
    pub fn request_summary(&self) -> Value {
        let mut counts: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
        for metric in metrics_of(&self.requests.collect()) {
            let key = (
                label(metric, "api").to_owned(),
                label(metric, "method").to_owned(),
            );
            // Counters hold whole numbers.
            let n = metric.get_counter().get_value() as u64;
            let entry = counts.entry(key).or_default();
            entry.0 += n;
            if label(metric, "code") != "ok" {
                entry.1 += n;
            }
        }
        let mut per_method: BTreeMap<(String, String), Cumulative> = BTreeMap::new();
        let mut per_api: BTreeMap<String, Cumulative> = BTreeMap::new();
        for metric in metrics_of(&self.duration.collect()) {
            let histogram = metric.get_histogram();
            let mut cumulative: Cumulative = histogram
                .get_bucket()
                .iter()
                .map(|bucket| bucket.cumulative_count())
                .collect();
            cumulative.push(histogram.get_sample_count());
            let api = label(metric, "api").to_owned();
            let sum = per_api
                .entry(api.clone())
                .or_insert_with(|| vec![0; cumulative.len()]);
            for (total, n) in sum.iter_mut().zip(&cumulative) {
                *total += n;
            }
            per_method.insert((api, label(metric, "method").to_owned()), cumulative);
        }
        let mut requests: Vec<Value> = counts
            .iter()
            .map(|((api, method), &(count, errors))| {
                let mut row =
                    json!({"api": api, "method": method, "count": count, "errors": errors});
                if let Some(cumulative) = per_method.get(&(api.clone(), method.clone())) {
                    add_quantiles(&mut row, cumulative);
                }
                row
            })
            .collect();
        requests.sort_by_key(|row| std::cmp::Reverse(row["count"].as_u64().unwrap_or(0)));
        let bounds_ms: Vec<f64> = LATENCY_BUCKETS.iter().map(|s| s * 1_000.0).collect();
        let latency: serde_json::Map<String, Value> = per_api
            .iter()
            .map(|(api, cumulative)| {
                let mut entry = json!({
                    "count": cumulative.last().copied().unwrap_or(0),
                    "bounds_ms": bounds_ms,
                    "cumulative": cumulative,
                });
                add_quantiles(&mut entry, cumulative);
                (api.clone(), entry)
            })
            .collect();
        json!({
            "requests": requests,
            "latency": latency,
            "in_flight": {
                "http": self.in_flight_http.get(),
                "flight": self.in_flight_flight.get(),
            },
        })
    }
}

fn add_quantiles(row: &mut Value, cumulative: &[u64]) {
    for (name, q) in QUANTILES {
        row[name] = json!(quantile_ms(cumulative, q));
    }
}

/// The `q` quantile of a histogram, in milliseconds, interpolated linearly inside its bucket
/// as Prometheus' `histogram_quantile` does; the largest bound for ranks in the `+Inf`
/// bucket; `None` without observations.
pub(crate) fn quantile_ms(cumulative: &[u64], q: f64) -> Option<f64> {
    let total = *cumulative.last()?;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = (0.0, 0u64);
    for (&bound, &count) in LATENCY_BUCKETS.iter().zip(cumulative) {
        if count as f64 >= rank {
            let (lower, before) = below;
            let inside = (count - before) as f64;
            let fraction = if inside > 0.0 {
                (rank - before as f64) / inside
            } else {
                1.0
            };
            return Some(to_ms(lower + (bound - lower) * fraction));
        }
        below = (bound, count);
    }
    LATENCY_BUCKETS.last().copied().map(to_ms)
}

/// Seconds as milliseconds to the microsecond: the buckets are no finer.
fn to_ms(seconds: f64) -> f64 {
    (seconds * 1_000_000.0).round() / 1_000.0
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn quantiles_interpolate_inside_buckets() {
        // 25 µs, 50 µs, 100 µs, ...: 10 observations in (50, 100] µs.
        let mut cumulative = vec![0, 0];
        cumulative.extend(std::iter::repeat_n(10, LATENCY_BUCKETS.len() - 2));
        cumulative.push(10);
        let p50 = quantile_ms(&cumulative, 0.5).unwrap();
        assert!((p50 - 0.075).abs() < 1e-9, "{p50}");
        assert_eq!(quantile_ms(&vec![0; LATENCY_BUCKETS.len() + 1], 0.5), None);
        // Everything beyond the last bound: the last bound.
        let mut beyond = vec![0; LATENCY_BUCKETS.len()];
        beyond.push(3);
        assert_eq!(quantile_ms(&beyond, 0.99), Some(30_000.0));
    }

    #[test]
    fn summarises_recorded_requests() {
        let metrics = Metrics::for_backend("duckdb");
        for _ in 0..3 {
            metrics.observe("http", "GET /x", "ok", Duration::from_micros(70));
        }
        metrics.observe("http", "GET /x", "not_found", Duration::from_micros(70));
        metrics.observe("flight", "do_get", "ok", Duration::from_millis(2));
        let summary = metrics.request_summary();
        let first = &summary["requests"][0];
        assert_eq!(first["method"], "GET /x");
        assert_eq!(
            (first["count"].as_u64(), first["errors"].as_u64()),
            (Some(4), Some(1))
        );
        let p50 = first["p50_ms"].as_f64().unwrap();
        assert!(p50 > 0.05 && p50 <= 0.1, "{p50}");
        assert_eq!(summary["latency"]["http"]["count"], 4);
        assert_eq!(summary["latency"]["flight"]["count"], 1);
        assert_eq!(summary["in_flight"]["http"], 0);
    }
}
