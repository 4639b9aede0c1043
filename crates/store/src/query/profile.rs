//! Profiles of a set's stored rows for people looking at them (the web console): the
//! distribution of a numeric feature over a sample of the rows, and the set's freshness over
//! time. SQL run by DuckDB over a relation of stored rows, like every other read.

use duckdb::Connection;
use featherstore_core::{Error as DomainError, FeatureSetSpec, FeatureType};

use super::sql::{ident, INGESTED_AT_COLUMN};
use crate::Result;

/// The most rows one distribution samples: bounds the memory and the time of the reservoir.
pub const MAX_SAMPLE_ROWS: usize = 100_000;
/// The sample size when none is asked for.
pub const DEFAULT_SAMPLE_ROWS: usize = 10_000;
/// The most histogram bins of one distribution.
pub const MAX_BINS: usize = 200;
/// The bin count when none is asked for.
pub const DEFAULT_BINS: usize = 20;
/// The most buckets one freshness series holds.
pub const MAX_FRESHNESS_BUCKETS: usize = 1_000;
/// Buckets a freshness series aims at when its width is left to the server.
const AUTO_BUCKETS: i64 = 120;
/// The widths (seconds) the server picks from: a minute to a week.
const AUTO_WIDTHS: [i64; 9] = [
    60,
    300,
    900,
    3_600,
    6 * 3_600,
    12 * 3_600,
    86_400,
    7 * 86_400,
    30 * 86_400,
];
const MICROS: i64 = 1_000_000;

/// What a distribution samples and how finely it bins.
#[derive(Debug, Clone, Copy)]
pub struct DistributionQuery {
    /// Index into the spec's features; a numeric one.
    pub feature: usize,
    pub sample_rows: usize,
    pub bins: usize,
}

impl DistributionQuery {
    /// Checks the request against the spec and the limits: a numeric feature of the set, a
    /// sample of 1 to [`MAX_SAMPLE_ROWS`] rows, 1 to [`MAX_BINS`] bins.
    pub fn new(
        spec: &FeatureSetSpec,
        feature: &str,
        sample_rows: Option<usize>,
        bins: Option<usize>,
    ) -> Result<Self> {
        let index = spec
            .features
            .iter()
            .position(|f| f.name == feature)
            .ok_or_else(|| {
                DomainError::invalid(format!(
                    "feature set {:?} has no feature {feature:?}",
                    spec.name
                ))
            })?;
        let feature_type = spec.features[index].feature_type;
        if !is_numeric(feature_type) {
            return Err(DomainError::invalid(format!(
                "feature {feature:?} is of type {}; distributions are computed for numeric features (int32, int64, float32, float64)",
                feature_type
            ))
            .into());
        }
        let sample_rows = sample_rows.unwrap_or(DEFAULT_SAMPLE_ROWS);
        if !(1..=MAX_SAMPLE_ROWS).contains(&sample_rows) {
            return Err(DomainError::invalid(format!(
                "sample must be between 1 and {MAX_SAMPLE_ROWS} rows, not {sample_rows}"
            ))
            .into());
        }
        let bins = bins.unwrap_or(DEFAULT_BINS);
        if !(1..=MAX_BINS).contains(&bins) {
            return Err(DomainError::invalid(format!(
                "bins must be between 1 and {MAX_BINS}, not {bins}"
            ))
            .into());
        }
        Ok(DistributionQuery {
            feature: index,
            sample_rows,
            bins,
        })
    }
}

fn is_numeric(t: FeatureType) -> bool {
    matches!(
        t,
        FeatureType::Int32 | FeatureType::Int64 | FeatureType::Float32 | FeatureType::Float64
    )
}

/// A feature's values in a uniform sample of the stored rows (every stored version of every
/// entity, not only the latest values).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Distribution {
    /// Rows in the sample: the requested size, or every row when the set holds fewer.
    pub sampled: u64,
    pub nulls: u64,
    /// NaN and infinite values, which no bin holds.
    pub non_finite: u64,
    /// Of the finite values.
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
    /// Equal-width bins from `min` to `max`, the last one closed; a single bin when every
    /// finite value is the same, none when there is no finite value.
    pub bins: Vec<Bin>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bin {
    pub lower: f64,
    pub upper: f64,
    pub count: u64,
}

/// Samples `relation` (reservoir sampling: a uniform sample of the requested size, in bounded
/// memory) and bins the sampled values, in one statement so both see the same sample.
pub(crate) fn distribution(
    conn: &Connection,
    relation: &str,
    spec: &FeatureSetSpec,
    query: &DistributionQuery,
) -> Result<Distribution> {
    let column = ident(&spec.features[query.feature].name);
    let (rows, bins) = (query.sample_rows, query.bins);
    // Halves keep `hi - lo` finite for values near the limits of DOUBLE.
    let sql = format!(
        "WITH sample AS MATERIALIZED (
             SELECT CAST({column} AS DOUBLE) AS v FROM {relation}
             USING SAMPLE reservoir({rows} ROWS) REPEATABLE (7)),
         summary AS (
             SELECT count(*) AS sampled, count(v) AS present,
                    count(*) FILTER (WHERE isfinite(v)) AS finite,
                    min(v) FILTER (WHERE isfinite(v)) AS lo,
                    max(v) FILTER (WHERE isfinite(v)) AS hi,
                    avg(v) FILTER (WHERE isfinite(v)) AS mean
             FROM sample),
         binned AS (
             SELECT least(CAST(floor(CASE WHEN hi > lo
                        THEN (v * 0.5 - lo * 0.5) / (hi * 0.5 - lo * 0.5) * {bins}
                        ELSE 0 END) AS BIGINT), {bins} - 1) AS bin,
                    count(*) AS n
             FROM sample, summary WHERE isfinite(v) GROUP BY bin)
         SELECT sampled, present, finite, lo, hi, mean, bin, n
         FROM summary LEFT JOIN binned ON true ORDER BY bin"
    );
    let mut statement = conn.prepare(&sql)?;
    let mut result = statement.query([])?;
    let mut counts = Vec::new();
    let mut distribution = Distribution::default();
    while let Some(row) = result.next()? {
        let (sampled, present, finite): (i64, i64, i64) = (row.get(0)?, row.get(1)?, row.get(2)?);
        distribution.sampled = count(sampled);
        distribution.nulls = count(sampled - present);
        distribution.non_finite = count(present - finite);
        distribution.min = row.get(3)?;
        distribution.max = row.get(4)?;
        distribution.mean = row.get(5)?;
        if let (Some(bin), Some(n)) = (row.get::<_, Option<i64>>(6)?, row.get::<_, Option<i64>>(7)?)
        {
            counts.push((bin, count(n)));
        }
    }
    distribution.bins = equal_width_bins(distribution.min, distribution.max, bins, &counts);
    Ok(distribution)
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Every bin of the range, empty ones included, with the counts DuckDB found.
fn equal_width_bins(
    lo: Option<f64>,
    hi: Option<f64>,
    bins: usize,
    counts: &[(i64, u64)],
) -> Vec<Bin> {
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return Vec::new();
    };
    if hi <= lo {
        let count = counts.iter().map(|&(_, n)| n).sum();
        return vec![Bin {
            lower: lo,
            upper: hi,
            count,
        }];
    }
    let edge = |i: usize| {
        if i == bins {
            hi
        } else {
            // Never `lo + (hi - lo) * f`: `hi - lo` overflows near the limits of f64.
            let f = i as f64 / bins as f64;
            lo * (1.0 - f) + hi * f
        }
    };
    (0..bins)
        .map(|i| Bin {
            lower: edge(i),
            upper: edge(i + 1),
            count: counts
                .iter()
                .find(|&&(bin, _)| usize::try_from(bin).is_ok_and(|b| b == i))
                .map_or(0, |&(_, n)| n),
        })
        .collect()
}

/// Which stretch of server time a freshness series covers, and how finely.
#[derive(Debug, Clone, Copy, Default)]
pub struct FreshnessQuery {
    /// Bucket width in microseconds; the server picks one when `None`.
    pub bucket_micros: Option<i64>,
    /// Inclusive, UTC microseconds; the first ingest (rounded down to a bucket) when `None`.
    pub start: Option<i64>,
    /// Exclusive, UTC microseconds; now when `None`.
    pub end: Option<i64>,
}

impl FreshnessQuery {
    /// Checks what it can before storage is read: a positive bucket width of whole seconds,
    /// and `start` before `end`.
    pub fn check(&self) -> Result<()> {
        if let Some(width) = self.bucket_micros {
            if width < MICROS || width % MICROS != 0 {
                return Err(DomainError::invalid(format!(
                    "bucket must be a whole number of seconds, at least 1 s, not {} µs",
                    width
                ))
                .into());
            }
        }
        if let (Some(start), Some(end)) = (self.start, self.end) {
            if start >= end {
                return Err(DomainError::invalid("start must be before end").into());
            }
        }
        Ok(())
    }
}

/// A set's freshness over server time, bucket by bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Freshness {
    pub bucket_micros: i64,
    pub buckets: Vec<FreshnessBucket>,
}

/// One bucket `[start, end)` of server time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreshnessBucket {
    pub start: i64,
    pub end: i64,
    /// Rows ingested in the bucket.
    pub rows: u64,
    /// The greatest event time among the rows ingested before the bucket's end: the newest
    /// value a reader could see then.
    pub latest_event_timestamp: Option<i64>,
    /// The bucket's end (or `now`, for a bucket not over yet) minus
    /// `latest_event_timestamp`: how old the newest value was.
    pub freshness_micros: Option<i64>,
    /// The greatest delay, ingest time minus event time, of the rows ingested in the bucket.
    pub max_lag_micros: Option<i64>,
}

/// The freshness series of `relation` as of `now` (UTC microseconds), for a query that
/// passed [`FreshnessQuery::check`].
pub(crate) fn freshness(
    conn: &Connection,
    relation: &str,
    spec: &FeatureSetSpec,
    query: &FreshnessQuery,
    now: i64,
) -> Result<Freshness> {
    let ingested = ident(INGESTED_AT_COLUMN);
    let event = ident(&spec.timestamp);
    let end = query.end.unwrap_or(now);
    let start = match query.start {
        Some(start) => start,
        None => {
            let first: Option<i64> = conn.query_row(
                &format!("SELECT epoch_us(min({ingested})) FROM {relation}"),
                [],
                |row| row.get(0),
            )?;
            match first {
                Some(first) if first < end => first,
                // Nothing stored (or nothing before `end`): an empty series.
                _ => {
                    return Ok(Freshness {
                        bucket_micros: query.bucket_micros.unwrap_or(AUTO_WIDTHS[0] * MICROS),
                        buckets: Vec::new(),
                    })
                }
            }
        }
    };
    let width = query
        .bucket_micros
        .unwrap_or_else(|| auto_width(end.saturating_sub(start)));
    // Buckets aligned on multiples of their width (whole hours for an hour), from the one
    // holding `start`.
    let first = start.div_euclid(width) * width;
    let buckets = (end - first).div_euclid(width) + i64::from((end - first) % width != 0);
    let limit = i64::try_from(MAX_FRESHNESS_BUCKETS).unwrap_or(i64::MAX);
    if buckets > limit {
        return Err(DomainError::invalid(format!(
            "the range holds {buckets} buckets of {} s; at most {MAX_FRESHNESS_BUCKETS} are allowed: choose a wider bucket or a shorter range",
            width / MICROS
        ))
        .into());
    }
    // Per bucket with rows: their count, newest event time and greatest delay; bucket -1
    // holds the newest event time ingested before the series starts.
    let sql = format!(
        "SELECT CASE WHEN i < {first} THEN -1 ELSE (i - {first}) // {width} END AS bucket,
                count(*), max(e), max(i - e)
         FROM (SELECT epoch_us({ingested}) AS i, epoch_us({event}) AS e FROM {relation}
               WHERE {ingested} < make_timestamp({end}::BIGINT))
         GROUP BY bucket ORDER BY bucket"
    );
    let mut statement = conn.prepare(&sql)?;
    let mut result = statement.query([])?;
    let mut per_bucket: Vec<(i64, u64, Option<i64>, Option<i64>)> = Vec::new();
    while let Some(row) = result.next()? {
        per_bucket.push((row.get(0)?, count(row.get(1)?), row.get(2)?, row.get(3)?));
    }
    let mut latest = per_bucket
        .iter()
        .find(|&&(bucket, ..)| bucket < 0)
        .and_then(|&(_, _, newest, _)| newest);
    let mut series = Vec::with_capacity(usize::try_from(buckets).unwrap_or(0));
    for index in 0..buckets {
        let bucket_start = first + index * width;
        let bucket_end = bucket_start + width;
        let found = per_bucket.iter().find(|&&(bucket, ..)| bucket == index);
        let (rows, newest, lag) = found.map_or((0, None, None), |&(_, rows, newest, lag)| {
            (rows, newest, lag)
        });
        latest = latest.max(newest);
        series.push(FreshnessBucket {
            start: bucket_start,
            end: bucket_end,
            rows,
            latest_event_timestamp: latest,
            freshness_micros: latest.map(|latest| bucket_end.min(now).saturating_sub(latest)),
            max_lag_micros: lag,
        });
    }
    Ok(Freshness {
        bucket_micros: width,
        buckets: series,
    })
}

/// The narrowest of the usual widths that covers `span` in about [`AUTO_BUCKETS`] buckets;
/// wider spans get whole days.
fn auto_width(span: i64) -> i64 {
    let wanted = span / AUTO_BUCKETS;
    AUTO_WIDTHS
        .iter()
        .map(|seconds| seconds * MICROS)
        .find(|&width| width >= wanted)
        .unwrap_or_else(|| (wanted / (86_400 * MICROS) + 1) * 86_400 * MICROS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_cover_the_range_and_keep_empty_ones() {
        let bins = equal_width_bins(Some(0.0), Some(10.0), 5, &[(0, 3), (4, 1)]);
        assert_eq!(bins.len(), 5);
        assert_eq!((bins[0].lower, bins[0].upper, bins[0].count), (0.0, 2.0, 3));
        assert_eq!(bins[2].count, 0);
        assert_eq!(
            (bins[4].lower, bins[4].upper, bins[4].count),
            (8.0, 10.0, 1)
        );
        let single = equal_width_bins(Some(4.0), Some(4.0), 5, &[(0, 7)]);
        assert_eq!(
            single,
            vec![Bin {
                lower: 4.0,
                upper: 4.0,
                count: 7
            }]
        );
        assert!(equal_width_bins(None, None, 5, &[]).is_empty());
        let wide = equal_width_bins(Some(-f64::MAX), Some(f64::MAX), 2, &[(0, 1), (1, 1)]);
        assert_eq!(wide[0].upper, 0.0);
        assert_eq!(wide[1].upper, f64::MAX);
    }

    #[test]
    fn picks_a_usual_width_for_about_a_hundred_buckets() {
        assert_eq!(auto_width(0), 60 * MICROS);
        assert_eq!(auto_width(3_600 * MICROS), 60 * MICROS);
        assert_eq!(auto_width(86_400 * MICROS), 900 * MICROS);
        let century = 36_500 * 86_400 * MICROS;
        let width = auto_width(century);
        assert_eq!(width % (86_400 * MICROS), 0);
        assert!(century / width <= AUTO_BUCKETS);
    }

    #[test]
    fn checks_bucket_and_range() {
        let bad = |q: FreshnessQuery| q.check().unwrap_err().to_string();
        assert!(bad(FreshnessQuery {
            bucket_micros: Some(0),
            ..Default::default()
        })
        .contains("at least 1 s"));
        assert!(bad(FreshnessQuery {
            bucket_micros: Some(1_500_000),
            ..Default::default()
        })
        .contains("whole number"));
        assert!(bad(FreshnessQuery {
            start: Some(5),
            end: Some(5),
            ..Default::default()
        })
        .contains("before end"));
    }
}
