//! Segment identity: the half-open UTC [`Interval`] a segment covers and the
//! [`SegmentId`] `{datasource}_{start}_{end}_{version}_{partition}` that names it.

use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A half-open interval `[start, end)` of UTC milliseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Interval {
    pub start: i64,
    pub end: i64,
}

impl Interval {
    /// Everything representable: what `segmentGranularity: all` and unbounded queries use.
    pub const ETERNITY: Interval = Interval {
        start: i64::MIN / 2,
        end: i64::MAX / 2,
    };

    pub fn new(start: i64, end: i64) -> Result<Self> {
        if start > end {
            return Err(Error::invalid(format!(
                "interval start {} is after its end {}",
                format_millis(start),
                format_millis(end)
            )));
        }
        Ok(Interval { start, end })
    }

    pub fn contains(&self, t: i64) -> bool {
        self.start <= t && t < self.end
    }

    pub fn overlaps(&self, other: &Interval) -> bool {
        self.start < other.end && other.start < self.end
    }

    /// Whether `other` lies entirely inside `self`.
    pub fn covers(&self, other: &Interval) -> bool {
        self.start <= other.start && other.end <= self.end
    }

    pub fn intersect(&self, other: &Interval) -> Option<Interval> {
        let start = self.start.max(other.start);
        let end = self.end.min(other.end);
        (start < end).then_some(Interval { start, end })
    }

    pub fn is_empty(&self) -> bool {
        self.start >= self.end
    }

    /// Parses Druid's `start/end` form with ISO-8601 instants or dates on either side,
    /// or an ISO-8601 period on one side (`2024-01-01/P1D`, `P1D/2024-01-02`).
    pub fn parse(text: &str) -> Result<Self> {
        let (start, end) = text.split_once('/').ok_or_else(|| {
            Error::invalid(format!("interval {text:?} is not of the form start/end"))
        })?;
        let period = |side: &str| crate::period::Period::parse(&side.trim().to_ascii_uppercase());
        let shifted = |t: i64, period: crate::period::Period, steps: i64| {
            crate::calendar::Calendar::new(period, None, None)
                .ok()
                .and_then(|c| c.shift(t, steps))
                .ok_or_else(|| Error::invalid(format!("interval {text:?} is out of range")))
        };
        if start.trim_start().starts_with(['P', 'p']) {
            let end = parse_instant(end)?;
            return Interval::new(shifted(end, period(start)?, -1)?, end);
        }
        let start = parse_instant(start)?;
        if end.trim_start().starts_with(['P', 'p']) {
            return Interval::new(start, shifted(start, period(end)?, 1)?);
        }
        Interval::new(start, parse_instant(end)?)
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            format_millis(self.start),
            format_millis(self.end)
        )
    }
}

/// Formats UTC milliseconds as ISO-8601 (`2024-01-01T00:00:00.000Z`).
pub fn format_millis(ms: i64) -> String {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        None if ms <= Interval::ETERNITY.start => "-inf".to_string(),
        None => "+inf".to_string(),
    }
}

/// Parses an ISO-8601 instant (`2024-01-01T10:00:00Z`, with or without zone, fraction
/// or seconds) or a plain date (`2024-01-01`) as UTC milliseconds.
pub fn parse_instant(text: &str) -> Result<i64> {
    let text = text.trim();
    match common_instant(text.as_bytes()) {
        Some(t) => Ok(t),
        None => any_instant(text),
    }
}

/// Every shape [`parse_instant`] takes, through chrono.
fn any_instant(text: &str) -> Result<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    const NAIVE_FORMATS: [&str; 4] = [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ];
    for format in NAIVE_FORMATS {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    if let Some(t) = text
        .strip_suffix('Z')
        .and_then(|rest| NaiveDateTime::parse_from_str(rest, "%Y-%m-%dT%H:%M:%S%.f").ok())
    {
        return Ok(t.and_utc().timestamp_millis());
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d
            .and_hms_opt(0, 0, 0)
            .map_or(0, |t| t.and_utc().timestamp_millis()));
    }
    Err(Error::invalid(format!("{text:?} is not an ISO-8601 time")))
}

/// The shapes nearly every input uses, parsed without chrono's format machinery (the
/// hot path of ingestion): `YYYY-MM-DD`, then `T` or a space and `HH:MM:SS`, an
/// optional fraction (milliseconds kept, finer digits dropped), and `Z`, `+HH:MM`,
/// `-HH:MM` or no zone (UTC). Anything else (or an impossible date) is `None`, and
/// left to the general parser.
fn common_instant(b: &[u8]) -> Option<i64> {
    fn digits(b: &[u8]) -> Option<i64> {
        b.iter().try_fold(0i64, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
        })
    }
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = digits(&b[0..4])?;
    let (month, day) = (digits(&b[5..7])?, digits(&b[8..10])?);
    let (hour, minute, second) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut rest = &b[19..];
    let mut millis = 0;
    if let Some((b'.', fraction)) = rest.split_first() {
        let n = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        let kept = &fraction[..n.min(3)];
        millis = digits(kept)? * 10i64.pow(3 - kept.len() as u32);
        rest = &fraction[n..];
    }
    let offset_minutes = match rest {
        [] | [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let minutes = digits(&[*h1, *h2])? * 60 + digits(&[*m1, *m2])?;
            if *sign == b'+' { minutes } else { -minutes }
        }
        _ => return None,
    };
    let date = NaiveDate::from_ymd_opt(year as i32, month as u32, day as u32)?;
    let days = i64::from(date.num_days_from_ce()) - 719_163; // 1970-01-01
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1000 + millis)
}

/// The name of one segment: a datasource, the interval it covers, the version that
/// published it and its partition number within that (interval, version).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SegmentId {
    pub datasource: String,
    pub interval: Interval,
    pub version: String,
    pub partition: u32,
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}_{}_{}_{}_{}",
            self.datasource,
            format_millis(self.interval.start),
            format_millis(self.interval.end),
            self.version,
            self.partition
        )
    }
}

impl SegmentId {
    /// A form of the id safe to use as a file name on every platform.
    pub fn file_stem(&self) -> String {
        self.to_string().replace(':', "-")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_take_a_period_on_either_side() {
        let whole = Interval::parse("2013-08-01T08:00:00/2013-08-01T09:00:00").unwrap();
        assert_eq!(Interval::parse("2013-08-01T08:00:00/PT1H").unwrap(), whole);
        assert_eq!(Interval::parse("PT1H/2013-08-01T09:00:00Z").unwrap(), whole);
        assert_eq!(Interval::parse("2013-08-01T08:00:00/pt1h").unwrap(), whole);
        let month = Interval::parse("2024-01-31/P1M").unwrap();
        assert_eq!(format_millis(month.end), "2024-02-29T00:00:00.000Z");
        assert!(Interval::parse("2024-01-01/P").is_err());
        assert!(Interval::parse("2024-01-01").is_err());
    }

    #[test]
    fn common_instants_parse_as_chrono_parses_them() {
        for text in [
            "2024-02-29T23:59:59.999Z",
            "1969-12-31T23:59:59.5Z",
            "2024-06-03T00:00:00",
            "2024-06-03 10:20:30.123456+05:30",
            "2024-06-03T10:20:30-08:00",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.1234567890Z",
        ] {
            assert_eq!(
                common_instant(text.as_bytes()),
                Some(any_instant(text).unwrap()),
                "{text}"
            );
        }
        // Impossible or other shapes are left to chrono, which decides.
        for text in [
            "2023-02-29T00:00:00Z",
            "2024-06-03T24:00:00Z",
            "2024-06-03T10:20",
            "2024-06-03",
            "2024-06-03T10:20:30.Z",
        ] {
            assert_eq!(common_instant(text.as_bytes()), None, "{text}");
        }
        assert_eq!(parse_instant("2024-06-03").unwrap(), 1_717_372_800_000);
        assert!(parse_instant("2023-02-29T00:00:00Z").is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_time_in_any_common_shape_parses_as_chrono_parses_it(
            ms in -62_135_596_800_000i64..253_402_300_799_999,
            zone in 0usize..4,
            digits in 0usize..10,
            offset in -(14 * 60i32)..=(14 * 60),
        ) {
            let t = Utc.timestamp_millis_opt(ms).unwrap();
            let fraction = match digits {
                0 => String::new(),
                n => format!(".{}", &format!("{:09}", t.timestamp_subsec_nanos())[..n]),
            };
            let (local, suffix) = match zone {
                0 => (t.naive_utc(), "Z".to_string()),
                1 => (t.naive_utc(), String::new()),
                _ => {
                    let offset = chrono::FixedOffset::east_opt(offset * 60).unwrap();
                    let sign = if offset.local_minus_utc() < 0 { '-' } else { '+' };
                    let minutes = offset.local_minus_utc().abs() / 60;
                    (t.with_timezone(&offset).naive_local(), format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60))
                }
            };
            let separator = if zone == 3 { " " } else { "T" };
            let text = format!("{}{separator}{}{fraction}{suffix}", local.format("%Y-%m-%d"), local.format("%H:%M:%S"));
            let fast = common_instant(text.as_bytes());
            proptest::prop_assert_eq!(fast, any_instant(&text).ok(), "{}", text);
        }
    }

    #[test]
    fn interval_round_trips_through_text() {
        let i = Interval::parse("2024-01-01/2024-01-02T00:00:00.000Z").unwrap();
        assert_eq!(i.end - i.start, 86_400_000);
        assert_eq!(
            i.to_string(),
            "2024-01-01T00:00:00.000Z/2024-01-02T00:00:00.000Z"
        );
        assert_eq!(Interval::parse(&i.to_string()).unwrap(), i);
    }

    #[test]
    fn reversed_interval_is_rejected() {
        let err = Interval::parse("2024-01-02/2024-01-01").unwrap_err();
        assert!(err.to_string().contains("after its end"), "{err}");
    }

    #[test]
    fn segment_id_names_every_part() {
        let id = SegmentId {
            datasource: "wiki".into(),
            interval: Interval::parse("2024-01-01/2024-01-02").unwrap(),
            version: "2024-05-01T00:00:00.000Z".into(),
            partition: 3,
        };
        assert_eq!(
            id.to_string(),
            "wiki_2024-01-01T00:00:00.000Z_2024-01-02T00:00:00.000Z_2024-05-01T00:00:00.000Z_3"
        );
        assert!(!id.file_stem().contains(':'));
    }
}
