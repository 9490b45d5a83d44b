//! Time granularities: how `segmentGranularity` cuts time into chunks and how
//! `queryGranularity` truncates timestamps before rollup. All arithmetic is in UTC;
//! weeks start on Monday, as in Druid's ISO weeks.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use serde::{Deserialize, Deserializer};

use crate::error::{Error, Result};
use crate::id::Interval;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Granularity {
    None,
    Second,
    Minute,
    FifteenMinute,
    Hour,
    Day,
    Week,
    Month,
    Quarter,
    Year,
    All,
}

const SECOND: i64 = 1_000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
/// 1970-01-01 was a Thursday; the Monday before it is three days earlier.
const WEEK_OFFSET: i64 = 3 * DAY;

impl Granularity {
    /// The start of the bucket holding `t`.
    pub fn truncate(self, t: i64) -> i64 {
        match self {
            Granularity::None => t,
            Granularity::Second => t.div_euclid(SECOND) * SECOND,
            Granularity::Minute => t.div_euclid(MINUTE) * MINUTE,
            Granularity::FifteenMinute => t.div_euclid(15 * MINUTE) * 15 * MINUTE,
            Granularity::Hour => t.div_euclid(HOUR) * HOUR,
            Granularity::Day => t.div_euclid(DAY) * DAY,
            Granularity::Week => (t + WEEK_OFFSET).div_euclid(7 * DAY) * 7 * DAY - WEEK_OFFSET,
            Granularity::Month => month_start(t, 1),
            Granularity::Quarter => month_start(t, 3),
            Granularity::Year => month_start(t, 12),
            Granularity::All => Interval::ETERNITY.start,
        }
    }

    /// The bucket holding `t`.
    pub fn bucket(self, t: i64) -> Interval {
        let start = self.truncate(t);
        let end = match self {
            Granularity::None => start + 1,
            Granularity::Second => start + SECOND,
            Granularity::Minute => start + MINUTE,
            Granularity::FifteenMinute => start + 15 * MINUTE,
            Granularity::Hour => start + HOUR,
            Granularity::Day => start + DAY,
            Granularity::Week => start + 7 * DAY,
            Granularity::Month => add_months(start, 1),
            Granularity::Quarter => add_months(start, 3),
            Granularity::Year => add_months(start, 12),
            Granularity::All => Interval::ETERNITY.end,
        };
        Interval { start, end }
    }
}

fn to_datetime(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn month_start(t: i64, months_per_bucket: u32) -> i64 {
    let d = to_datetime(t).date_naive();
    let month0 = d.month0() / months_per_bucket * months_per_bucket;
    NaiveDate::from_ymd_opt(d.year(), month0 + 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(t, |d| d.and_utc().timestamp_millis())
}

fn add_months(t: i64, months: u32) -> i64 {
    to_datetime(t)
        .checked_add_months(Months::new(months))
        .map_or(Interval::ETERNITY.end, |d| d.timestamp_millis())
}

impl FromStr for Granularity {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "none" => Granularity::None,
            "second" => Granularity::Second,
            "minute" => Granularity::Minute,
            "fifteen_minute" => Granularity::FifteenMinute,
            "hour" => Granularity::Hour,
            "day" => Granularity::Day,
            "week" => Granularity::Week,
            "month" => Granularity::Month,
            "quarter" => Granularity::Quarter,
            "year" => Granularity::Year,
            "all" => Granularity::All,
            _ => {
                return Err(Error::invalid(format!(
                    "unknown granularity {s:?}: expected none, second, minute, fifteen_minute, \
                     hour, day, week, month, quarter, year or all"
                )));
            }
        })
    }
}

impl fmt::Display for Granularity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Granularity::None => "none",
            Granularity::Second => "second",
            Granularity::Minute => "minute",
            Granularity::FifteenMinute => "fifteen_minute",
            Granularity::Hour => "hour",
            Granularity::Day => "day",
            Granularity::Week => "week",
            Granularity::Month => "month",
            Granularity::Quarter => "quarter",
            Granularity::Year => "year",
            Granularity::All => "all",
        };
        f.write_str(name)
    }
}

/// Accepts Druid's string form (`"day"`) and its object form (`{"type": "day"}`).
impl<'de> Deserialize<'de> for Granularity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Name(String),
            Object {
                #[serde(rename = "type")]
                kind: String,
            },
        }
        let name = match Form::deserialize(deserializer)? {
            Form::Name(name) | Form::Object { kind: name } => name,
        };
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::parse_instant;

    fn t(s: &str) -> i64 {
        parse_instant(s).unwrap()
    }

    #[test]
    fn truncates_to_calendar_buckets() {
        let x = t("2024-05-15T13:47:12.345Z");
        assert_eq!(Granularity::Second.truncate(x), t("2024-05-15T13:47:12Z"));
        assert_eq!(Granularity::Hour.truncate(x), t("2024-05-15T13:00:00Z"));
        assert_eq!(Granularity::Day.truncate(x), t("2024-05-15"));
        assert_eq!(Granularity::Week.truncate(x), t("2024-05-13"), "a Monday");
        assert_eq!(
            Granularity::Month.bucket(x),
            Interval::parse("2024-05-01/2024-06-01").unwrap()
        );
        assert_eq!(
            Granularity::Year.bucket(x),
            Interval::parse("2024-01-01/2025-01-01").unwrap()
        );
        assert_eq!(Granularity::None.truncate(x), x);
    }

    #[test]
    fn negative_times_truncate_downwards() {
        let x = t("1969-12-31T23:59:59.999Z");
        assert_eq!(Granularity::Day.truncate(x), t("1969-12-31"));
        assert_eq!(Granularity::Week.truncate(x), t("1969-12-29"));
    }

    #[test]
    fn all_covers_everything() {
        let b = Granularity::All.bucket(0);
        assert!(b.contains(t("1900-01-01")) && b.contains(t("2999-01-01")));
    }

    #[test]
    fn parses_string_and_object_forms() {
        let g: Granularity = serde_json::from_str(r#""HOUR""#).unwrap();
        assert_eq!(g, Granularity::Hour);
        let g: Granularity = serde_json::from_str(r#"{"type":"month"}"#).unwrap();
        assert_eq!(g, Granularity::Month);
        let err = serde_json::from_str::<Granularity>(r#""fortnight""#).unwrap_err();
        assert!(err.to_string().contains("fortnight"));
    }
}
