//! Time inside FeatherStore is UTC microseconds since the Unix epoch (`i64`).

use chrono::{DateTime, Datelike, NaiveDate, SecondsFormat, Timelike, Utc};

use crate::{Error, Result};

pub const MICROS_PER_SECOND: i64 = 1_000_000;

/// The earliest instant the store accepts: 0001-01-01T00:00:00Z, in UTC microseconds.
///
/// Every time the store keeps or is asked about lies in [`MIN_MICROS`, `MAX_MICROS`]: the
/// years 1 to 9999, which RFC 3339 can write, DuckDB's `TIMESTAMP` holds (it reaches to year
/// 294247), and the training join can pack as `time * 2^64 + seq` in a 128-bit integer
/// (|time| < 2^58, so |key| < 2^122) and compare against a TTL without overflow.
pub(crate) const MIN_MICROS: i64 = -62_135_596_800_000_000;
/// The latest instant the store accepts: 9999-12-31T23:59:59.999999Z.
pub(crate) const MAX_MICROS: i64 = 253_402_300_799_999_999;
/// The earliest date (Arrow Date32, days since the epoch) the store accepts: 0001-01-01.
pub(crate) const MIN_DAYS: i32 = -719_162;
/// The latest date the store accepts: 9999-12-31.
pub(crate) const MAX_DAYS: i32 = 2_932_896;

/// The accepted range of timestamps, as error messages state it.
pub(crate) const TIMESTAMP_RANGE: &str = "0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z";
/// The accepted range of dates, as error messages state it.
pub(crate) const DATE_RANGE: &str = "0001-01-01 to 9999-12-31";

/// Whether UTC microseconds lie in the accepted range.
pub(crate) fn micros_in_range(micros: i64) -> bool {
    (MIN_MICROS..=MAX_MICROS).contains(&micros)
}

/// Whether a date (days since the epoch) lies in the accepted range.
pub(crate) fn days_in_range(days: i32) -> bool {
    (MIN_DAYS..=MAX_DAYS).contains(&days)
}

pub fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

/// Parses an RFC 3339 timestamp (`2026-01-01T00:00:00Z`, any offset) or a bare date
/// (`2026-01-01`, midnight UTC) into UTC microseconds. Sub-microsecond digits are truncated
/// toward the past. An instant outside [`TIMESTAMP_RANGE`] is refused.
pub fn parse_timestamp(text: &str) -> Result<i64> {
    let instant = if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        t.with_timezone(&Utc)
    } else if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        d.and_time(chrono::NaiveTime::MIN).and_utc()
    } else {
        return Err(Error::invalid(format!(
            "invalid timestamp {text:?}: expected RFC 3339 like \"2026-01-01T00:00:00Z\" or a date \"2026-01-01\""
        )));
    };
    to_micros(instant)
        .filter(|&micros| micros_in_range(micros))
        .ok_or_else(|| {
            Error::invalid(format!(
                "timestamp {text:?} is out of range: expected {TIMESTAMP_RANGE}"
            ))
        })
}

fn to_micros(t: DateTime<Utc>) -> Option<i64> {
    let seconds = t.timestamp();
    let micros = i64::from(t.timestamp_subsec_nanos() / 1_000);
    seconds
        .checked_mul(MICROS_PER_SECOND)
        .and_then(|s| s.checked_add(micros))
}

/// Formats UTC microseconds as RFC 3339 with a `Z` suffix and only as many fractional digits as
/// needed (0, 3 or 6).
pub fn format_timestamp(micros: i64) -> String {
    match DateTime::<Utc>::from_timestamp_micros(micros) {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        None => micros.to_string(),
    }
}

/// Appends [`format_timestamp`]'s text for `micros`, quoted as a JSON string: for a JSON
/// answer of many rows, without a `String` per cell and chrono's general formatter. Times in
/// the store's range (years 1 to 9999) are written digit by digit; others, which the store
/// never holds, take the general path.
pub fn write_timestamp_json(out: &mut Vec<u8>, micros: i64) {
    out.push(b'"');
    match DateTime::<Utc>::from_timestamp_micros(micros).filter(|_| micros_in_range(micros)) {
        Some(t) => {
            let date = t.date_naive();
            let time = t.time();
            push_digits(out, date.year() as u32, 4);
            out.push(b'-');
            push_digits(out, date.month(), 2);
            out.push(b'-');
            push_digits(out, date.day(), 2);
            out.push(b'T');
            push_digits(out, time.hour(), 2);
            out.push(b':');
            push_digits(out, time.minute(), 2);
            out.push(b':');
            push_digits(out, time.second(), 2);
            // As chrono's `SecondsFormat::AutoSi`: no fraction, milliseconds or microseconds,
            // whichever writes the fraction whole.
            let fraction = micros.rem_euclid(MICROS_PER_SECOND) as u32;
            if !fraction.is_multiple_of(1_000) {
                out.push(b'.');
                push_digits(out, fraction, 6);
            } else if fraction != 0 {
                out.push(b'.');
                push_digits(out, fraction / 1_000, 3);
            }
            out.push(b'Z');
        }
        // Digits, signs, colons and letters only: nothing to escape.
        None => out.extend_from_slice(format_timestamp(micros).as_bytes()),
    }
    out.push(b'"');
}

/// Appends `value`'s last `width` (2, 3, 4 or 6) decimal digits, zero-padded. Each division is
/// by a constant, which compiles to a multiplication.
fn push_digits(out: &mut Vec<u8>, value: u32, width: u32) {
    let pair = |out: &mut Vec<u8>, two: u32| {
        out.extend_from_slice(&[b'0' + (two / 10 % 10) as u8, b'0' + (two % 10) as u8])
    };
    match width {
        2 => pair(out, value),
        3 => {
            out.push(b'0' + (value / 100 % 10) as u8);
            pair(out, value % 100);
        }
        4 => {
            pair(out, value / 100);
            pair(out, value % 100);
        }
        _ => {
            pair(out, value / 10_000);
            pair(out, value / 100 % 100);
            pair(out, value % 100);
        }
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

/// Parses `YYYY-MM-DD` into days since the epoch; a date outside [`DATE_RANGE`] is refused.
pub(crate) fn parse_date(text: &str) -> Result<i32> {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| Error::invalid(format!("invalid date {text:?}: expected YYYY-MM-DD")))?;
    i32::try_from((date - epoch).num_days())
        .ok()
        .filter(|&days| days_in_range(days))
        .ok_or_else(|| {
            Error::invalid(format!(
                "date {text:?} is out of range: expected {DATE_RANGE}"
            ))
        })
}

/// The UTC calendar day (days since the epoch) of a microsecond timestamp, floored for
/// instants before 1970.
pub fn day_of(micros: i64) -> i64 {
    micros.div_euclid(86_400 * MICROS_PER_SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The direct writer gives `format_timestamp`'s text, quoted, across the store's range,
    /// at its ends, either side of the epoch, and outside the range.
    #[test]
    fn timestamps_written_as_json_are_format_timestamps_text() {
        let mut rng = featherstore_testkit::fixtures::Rng(17);
        let span = (MAX_MICROS - MIN_MICROS) as u64;
        let mut times = vec![
            MIN_MICROS,
            MAX_MICROS,
            MIN_MICROS - 1,
            MAX_MICROS + 1,
            i64::MIN,
            i64::MAX,
            0,
            -1,
            1,
            -1_000,
            999_000,
            1_000_001,
            951_782_400_000_000,
        ];
        for _ in 0..100_000 {
            let at = MIN_MICROS + rng.below(span) as i64;
            // Whole seconds and whole milliseconds as often as any other time.
            times.extend([
                at,
                at - at.rem_euclid(1_000),
                at - at.rem_euclid(MICROS_PER_SECOND),
            ]);
        }
        for micros in times {
            let mut out = Vec::new();
            write_timestamp_json(&mut out, micros);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                format!("\"{}\"", format_timestamp(micros)),
                "{micros}"
            );
        }
    }

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

    #[test]
    fn range_is_years_1_to_9999() {
        assert_eq!(format_timestamp(MIN_MICROS), "0001-01-01T00:00:00Z");
        assert_eq!(format_timestamp(MAX_MICROS), "9999-12-31T23:59:59.999999Z");
        assert_eq!(format_date(MIN_DAYS), "0001-01-01");
        assert_eq!(format_date(MAX_DAYS), "9999-12-31");
        for (text, micros) in [
            ("0001-01-01T00:00:00Z", MIN_MICROS),
            ("9999-12-31T23:59:59.999999Z", MAX_MICROS),
        ] {
            assert_eq!(parse_timestamp(text).unwrap(), micros);
        }
        for text in [
            "0001-01-01T00:00:00+00:01",
            "9999-12-31T23:59:59-00:01",
            "0000-12-31T23:59:59Z",
        ] {
            let err = parse_timestamp(text).unwrap_err().to_string();
            assert!(
                err.contains("out of range") && err.contains(TIMESTAMP_RANGE),
                "{err}"
            );
        }
        assert_eq!(parse_date("0001-01-01").unwrap(), MIN_DAYS);
        assert_eq!(parse_date("9999-12-31").unwrap(), MAX_DAYS);
        for text in ["0000-12-31", "+10000-01-01"] {
            let err = parse_date(text).unwrap_err().to_string();
            assert!(err.contains("out of range"), "{text}: {err}");
        }
    }
}
