//! Time inside FeatherStore is UTC microseconds since the Unix epoch (`i64`).

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

use crate::{Error, Result};

pub const MICROS_PER_SECOND: i64 = 1_000_000;

pub fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

/// Parses an RFC 3339 timestamp (`2026-01-01T00:00:00Z`, any offset) or a bare date
/// (`2026-01-01`, midnight UTC) into UTC microseconds. Sub-microsecond digits are truncated
/// toward the past.
pub fn parse_timestamp(text: &str) -> Result<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return to_micros(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return to_micros(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    Err(Error::invalid(format!(
        "invalid timestamp {text:?}: expected RFC 3339 like \"2026-01-01T00:00:00Z\" or a date \"2026-01-01\""
    )))
}

fn to_micros(t: DateTime<Utc>) -> Result<i64> {
    let seconds = t.timestamp();
    let micros = i64::from(t.timestamp_subsec_nanos() / 1_000);
    seconds
        .checked_mul(MICROS_PER_SECOND)
        .and_then(|s| s.checked_add(micros))
        .ok_or_else(|| Error::invalid(format!("timestamp {t} is out of range")))
}

/// Formats UTC microseconds as RFC 3339 with a `Z` suffix and only as many fractional digits as
/// needed (0, 3 or 6).
pub fn format_timestamp(micros: i64) -> String {
    match DateTime::<Utc>::from_timestamp_micros(micros) {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        None => micros.to_string(),
    }
}

/// Days since the epoch (Arrow Date32) as `YYYY-MM-DD`.
pub fn format_date(days: i32) -> String {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
    epoch
        .checked_add_signed(chrono::Duration::days(i64::from(days)))
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| days.to_string())
}

pub fn parse_date(text: &str) -> Result<i32> {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| Error::invalid(format!("invalid date {text:?}: expected YYYY-MM-DD")))?;
    i32::try_from((date - epoch).num_days())
        .map_err(|_| Error::invalid(format!("date {text:?} is out of range")))
}

/// The UTC calendar day (days since the epoch) of a microsecond timestamp, floored for
/// instants before 1970.
pub fn day_of(micros: i64) -> i64 {
    micros.div_euclid(86_400 * MICROS_PER_SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_offsets_and_dates_as_utc() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:01Z").unwrap(), 1_000_000);
        assert_eq!(
            parse_timestamp("1970-01-01T01:00:01+01:00").unwrap(),
            1_000_000
        );
        assert_eq!(parse_timestamp("1970-01-02").unwrap(), 86_400_000_000);
        assert_eq!(
            parse_timestamp("1970-01-01T00:00:00.0000019Z").unwrap(),
            1,
            "nanoseconds truncate"
        );
        assert!(parse_timestamp("yesterday").is_err());
    }

    #[test]
    fn formats_round_trip() {
        for micros in [0, 1, 1_500_000, 1_767_225_600_000_000, -1] {
            assert_eq!(parse_timestamp(&format_timestamp(micros)).unwrap(), micros);
        }
        assert_eq!(format_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_date(1), "1970-01-02");
        assert_eq!(parse_date("1970-01-02").unwrap(), 1);
        assert_eq!(day_of(-1), -1);
    }
}
