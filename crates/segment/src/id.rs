//! Segment identity: the half-open UTC [`Interval`] a segment covers and the
//! [`SegmentId`] `{datasource}_{start}_{end}_{version}_{partition}` that names it.

use std::fmt;

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};
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

    /// Parses Druid's `start/end` form with ISO-8601 instants or dates on either side.
    pub fn parse(text: &str) -> Result<Self> {
        let (start, end) = text.split_once('/').ok_or_else(|| {
            Error::invalid(format!("interval {text:?} is not of the form start/end"))
        })?;
        Interval::new(parse_instant(start)?, parse_instant(end)?)
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
