//! `GET /v1/feature-sets/{name}/distribution` and `.../freshness`: profiles of a set's stored
//! rows computed by the query engine (the web console draws them; any client may read them).

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use featherstore_core::time::{format_timestamp, parse_timestamp, MICROS_PER_SECOND};
use featherstore_store::query::profile::{Bin, FreshnessQuery};
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::Span;

use crate::error::{ApiError, ApiResult};
use crate::service::{interruptible, AppState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DistributionParams {
    feature: String,
    sample: Option<usize>,
    bins: Option<usize>,
}

/// A numeric feature's histogram over a sample of the stored rows.
pub(super) async fn distribution(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    params: Result<Query<DistributionParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Path(name) = name?;
    let Query(params) = params?;
    let feature_type = state
        .store
        .get(&name)?
        .spec
        .features
        .iter()
        .find(|f| f.name == params.feature)
        .map(|f| f.feature_type.to_string());
    let store = state.store.clone();
    let (set, feature) = (name.clone(), params.feature.clone());
    let found = interruptible(move || {
        Ok(store.distribution(&set, &feature, params.sample, params.bins)?)
    })
    .await?;
    Span::current().record("rows", i64::try_from(found.sampled).unwrap_or(i64::MAX));
    let bins: Vec<Value> = found.bins.iter().map(bin_json).collect();
    Ok(Json(json!({
        "feature_set": name,
        "feature": params.feature,
        "type": feature_type,
        "sampled": found.sampled,
        "nulls": found.nulls,
        "non_finite": found.non_finite,
        "min": found.min,
        "max": found.max,
        "mean": found.mean,
        "bins": bins,
    })))
}

fn bin_json(bin: &Bin) -> Value {
    json!({"lower": bin.lower, "upper": bin.upper, "count": bin.count})
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FreshnessParams {
    bucket: Option<String>,
    start: Option<String>,
    end: Option<String>,
}

/// The set's freshness over server time, bucket by bucket.
pub(super) async fn freshness(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    params: Result<Query<FreshnessParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Path(name) = name?;
    let Query(params) = params?;
    let query = FreshnessQuery {
        bucket_micros: params.bucket.as_deref().map(parse_bucket).transpose()?,
        start: params.start.as_deref().map(parse_timestamp).transpose()?,
        end: params.end.as_deref().map(parse_timestamp).transpose()?,
    };
    let store = state.store.clone();
    let set = name.clone();
    let found = interruptible(move || Ok(store.freshness(&set, &query)?)).await?;
    let seconds = |micros: i64| micros as f64 / MICROS_PER_SECOND as f64;
    let buckets: Vec<Value> = found
        .buckets
        .iter()
        .map(|b| {
            json!({
                "start": format_timestamp(b.start),
                "end": format_timestamp(b.end),
                "rows": b.rows,
                "latest_event_timestamp": b.latest_event_timestamp.map(format_timestamp),
                "freshness_seconds": b.freshness_micros.map(seconds),
                "max_lag_seconds": b.max_lag_micros.map(seconds),
            })
        })
        .collect();
    Ok(Json(json!({
        "feature_set": name,
        "bucket_seconds": found.bucket_micros / MICROS_PER_SECOND,
        "buckets": buckets,
    })))
}

/// The longest bucket accepted: a year, so that a width in microseconds never overflows.
const MAX_BUCKET_SECONDS: u64 = 366 * 86_400;

/// A bucket width: whole seconds, bare or with a unit (`90`, `90s`, `15m`, `1h`, `1d`).
fn parse_bucket(text: &str) -> ApiResult<i64> {
    let invalid = || {
        ApiError::invalid(format!(
            "invalid bucket {text:?}: expected a whole number of seconds, or one with a unit s, m, h or d (\"15m\"), at most {MAX_BUCKET_SECONDS} s"
        ))
    };
    let (digits, unit) = match text.char_indices().last() {
        Some((at, 's')) => (&text[..at], 1),
        Some((at, 'm')) => (&text[..at], 60),
        Some((at, 'h')) => (&text[..at], 3_600),
        Some((at, 'd')) => (&text[..at], 86_400),
        _ => (text, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let seconds = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .filter(|&s| (1..=MAX_BUCKET_SECONDS).contains(&s))
        .ok_or_else(invalid)?;
    i64::try_from(seconds)
        .ok()
        .and_then(|s| s.checked_mul(MICROS_PER_SECOND))
        .ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bucket_widths() {
        assert_eq!(parse_bucket("90").unwrap(), 90 * MICROS_PER_SECOND);
        assert_eq!(parse_bucket("90s").unwrap(), 90 * MICROS_PER_SECOND);
        assert_eq!(parse_bucket("15m").unwrap(), 900 * MICROS_PER_SECOND);
        assert_eq!(parse_bucket("2h").unwrap(), 7_200 * MICROS_PER_SECOND);
        assert_eq!(parse_bucket("1d").unwrap(), 86_400 * MICROS_PER_SECOND);
        for bad in [
            "",
            "s",
            "0",
            "0h",
            "-5",
            "+5",
            "1.5h",
            "1w",
            "367d",
            "1 h",
            "é",
            "99999999999999999999",
            "18446744073709551615s",
        ] {
            assert!(parse_bucket(bad).is_err(), "{bad:?}");
        }
    }
}
