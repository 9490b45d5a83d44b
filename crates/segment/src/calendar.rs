//! Periods laid on a calendar: the buckets of Druid's period granularities
//! (`{"type": "period", "period": "P1D", "timeZone": ..., "origin": ...}`) and of its
//! time functions (`TIME_FLOOR`, `TIME_CEIL`, `TIME_SHIFT`).
//!
//! The arithmetic is on the wall clock of the time zone: `P1D` in
//! `America/Los_Angeles` starts at local midnight whatever the offset that day, and
//! adding `P1M` to January 31 gives the last day of February. A period of one field
//! and count one, without an origin, starts where the calendar's unit does: years on
//! January 1, months on the 1st, weeks on Monday, days at midnight. Any other period
//! counts whole periods from the origin (by default 1970-01-01T00:00 on the zone's wall
//! clock): `P3M` buckets start in January, April, July and October, `PT15M` ones at
//! :00, :15, :30 and :45.

use std::str::FromStr;

use arrow::array::timezone::Tz;
use chrono::{
    DateTime, Datelike, Days, Duration, LocalResult, Months, NaiveDate, NaiveDateTime, NaiveTime,
    Offset, TimeZone, Timelike,
};

use crate::error::{Error, Result};
use crate::period::{Period, Unit};

/// A period in a time zone, counted from an origin.
#[derive(Debug, Clone)]
pub struct Calendar {
    period: Period,
    /// The origin, as an instant (ms).
    origin: Option<i64>,
    zone: Tz,
}

/// How many whole periods an estimate may be off before the search gives up: the
/// estimate divides by the period's average length, so it is off by one or two.
const MAX_STEPS: usize = 64;

impl Calendar {
    /// `period` in `zone` (UTC when `None`), counted from `origin` (ms) if given.
    pub fn new(period: Period, origin: Option<i64>, zone: Option<&str>) -> Result<Calendar> {
        if period.is_zero() {
            return Err(Error::invalid(format!(
                "period {period} is empty: it cannot cut time into buckets"
            )));
        }
        Ok(Calendar {
            period,
            origin,
            zone: parse_zone(zone.unwrap_or("UTC"))?,
        })
    }

    pub fn period(&self) -> &Period {
        &self.period
    }

    pub fn zone(&self) -> &Tz {
        &self.zone
    }

    /// The start of the bucket holding `t` (ms), if it is a representable instant.
    pub fn floor(&self, t: i64) -> Option<i64> {
        match (self.origin, self.period.fields.single()) {
            (None, Some((unit, 1))) => self.unit_floor(t, unit),
            _ => self.counted_floor(t),
        }
    }

    /// The end of the bucket holding `t`, or `t` itself when a bucket starts there.
    pub fn ceil(&self, t: i64) -> Option<i64> {
        let start = self.floor(t)?;
        if start == t {
            Some(t)
        } else {
            self.shift(start, 1)
        }
    }

    /// `t` moved by `steps` periods: years, months, weeks and days on the zone's wall
    /// clock (a month after January 31 is the last of February; a day across a change
    /// of offset is 23 or 25 hours), hours and smaller as elapsed time, as Druid's
    /// periods move.
    pub fn shift(&self, t: i64, steps: i64) -> Option<i64> {
        let elapsed = self.elapsed().checked_mul(steps)?;
        if self.period.months == 0 && self.days() == 0 {
            return t.checked_add(elapsed);
        }
        let local = add_calendar(local_of(t, &self.zone)?, &self.period, steps)?;
        self.instant(local)?.checked_add(elapsed)
    }

    /// Hours, minutes, seconds and milliseconds of the period, in milliseconds.
    fn elapsed(&self) -> i64 {
        let f = &self.period.fields;
        i64::from(f.hours) * 3_600_000
            + i64::from(f.minutes) * 60_000
            + i64::from(f.seconds) * 1_000
            + i64::from(f.millis)
    }

    /// Weeks and days of the period, in days.
    fn days(&self) -> i64 {
        i64::from(self.period.fields.weeks) * 7 + i64::from(self.period.fields.days)
    }

    /// The start of the calendar unit holding `t`: years on January 1, months on the
    /// 1st, weeks on Monday, days at midnight, on the zone's clock. Hours and smaller
    /// keep the offset `t` has, so the hour a clock repeats is two buckets.
    fn unit_floor(&self, t: i64, unit: Unit) -> Option<i64> {
        let local = local_of(t, &self.zone)?;
        let millis = i64::from(local.and_utc().timestamp_subsec_millis());
        let below = match unit {
            Unit::Hour => {
                i64::from(local.minute()) * 60_000 + i64::from(local.second()) * 1_000 + millis
            }
            Unit::Minute => i64::from(local.second()) * 1_000 + millis,
            Unit::Second => millis,
            Unit::Millisecond => 0,
            Unit::Year | Unit::Month | Unit::Week | Unit::Day => {
                let date = local.date();
                let first = match unit {
                    Unit::Year => date.with_ordinal(1)?,
                    Unit::Month => date.with_day(1)?,
                    Unit::Week => date.checked_sub_days(Days::new(u64::from(
                        date.weekday().num_days_from_monday(),
                    )))?,
                    _ => date,
                };
                return self.instant(first.and_time(NaiveTime::MIN));
            }
        };
        t.checked_sub(below)
    }

    /// The latest `origin + k periods` at or before `t`.
    fn counted_floor(&self, t: i64) -> Option<i64> {
        let origin = match self.origin {
            Some(o) => local_of(o, &self.zone)?,
            None => NaiveDate::from_ymd_opt(1970, 1, 1)?.and_time(NaiveTime::MIN),
        };
        let start_of = |k: i64| -> Option<i64> {
            let local = add_calendar(origin, &self.period, k)?;
            self.instant(local)?
                .checked_add(self.elapsed().checked_mul(k)?)
        };
        // An average month is 30.436875 days (the Gregorian cycle).
        let average = i128::from(self.period.months) * 2_629_746_000
            + i128::from(self.days()) * 86_400_000
            + i128::from(self.elapsed());
        let span = i128::from(t) - i128::from(self.instant(origin)?);
        let mut k = i64::try_from(span.div_euclid(average.max(1))).ok()?;
        for _ in 0..MAX_STEPS {
            let start = start_of(k)?;
            if start > t {
                k = k.checked_sub(1)?;
                continue;
            }
            match k.checked_add(1).and_then(start_of) {
                Some(next) if next <= t => k += 1,
                // The next bucket starts after `t`, or after the last instant there is.
                _ => return Some(start),
            }
        }
        None
    }

    /// The instant of a wall-clock time: the earlier one when the clock shows it
    /// twice, and for a time the clock skips, the instant the skipped hour starts.
    fn instant(&self, local: NaiveDateTime) -> Option<i64> {
        match self.zone.from_local_datetime(&local) {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Some(t.timestamp_millis()),
            LocalResult::None => {
                // In a gap the offset changes forward; the offset before the gap
                // places the time at the gap's end.
                let before = local.checked_sub_signed(Duration::days(1))?;
                let offset = self.zone.offset_from_utc_datetime(&before).fix();
                Some(
                    local
                        .checked_sub_offset(offset)?
                        .and_utc()
                        .timestamp_millis(),
                )
            }
        }
    }
}

/// The wall-clock time of `t` in `zone`, if the calendar reaches it.
fn local_of(t: i64, zone: &Tz) -> Option<NaiveDateTime> {
    let utc = DateTime::from_timestamp_millis(t)?.naive_utc();
    utc.checked_add_offset(zone.offset_from_utc_datetime(&utc).fix())
}

/// `t` in `zone`, if its wall-clock time is within the calendar: a time whose fields
/// (year, hour, ...) can be read without overflowing.
pub fn in_zone(t: i64, zone: &Tz) -> Option<DateTime<Tz>> {
    local_of(t, zone)?;
    Some(DateTime::from_timestamp_millis(t)?.with_timezone(zone))
}

/// `local` plus `steps` times the period's months (clamping the day) and days.
fn add_calendar(local: NaiveDateTime, period: &Period, steps: i64) -> Option<NaiveDateTime> {
    let months = i64::from(period.months).checked_mul(steps)?;
    let moved = if months >= 0 {
        local.checked_add_months(Months::new(u32::try_from(months).ok()?))?
    } else {
        local.checked_sub_months(Months::new(u32::try_from(-months).ok()?))?
    };
    let f = &period.fields;
    let days = (i64::from(f.weeks) * 7 + i64::from(f.days)).checked_mul(steps)?;
    moved.checked_add_signed(Duration::try_days(days)?)
}

/// A time zone by IANA name (`America/Los_Angeles`) or offset (`+05:30`, `Z`).
pub fn parse_zone(text: &str) -> Result<Tz> {
    let name = match text {
        "Z" | "z" => "UTC",
        other => other,
    };
    Tz::from_str(name).map_err(|e| Error::invalid(format!("unknown time zone {text:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{format_millis, parse_instant};

    fn at(text: &str) -> i64 {
        parse_instant(text).unwrap()
    }

    fn calendar(period: &str, origin: Option<&str>, zone: Option<&str>) -> Calendar {
        Calendar::new(Period::parse(period).unwrap(), origin.map(at), zone).unwrap()
    }

    fn floor(period: &str, t: &str) -> String {
        format_millis(calendar(period, None, None).floor(at(t)).unwrap())
    }

    #[test]
    fn single_units_start_where_the_calendar_does() {
        let t = "2024-03-14T15:47:31.250Z";
        assert_eq!(floor("P1Y", t), "2024-01-01T00:00:00.000Z");
        assert_eq!(floor("P1M", t), "2024-03-01T00:00:00.000Z");
        // 2024-03-14 is a Thursday; its week starts on Monday the 11th.
        assert_eq!(floor("P1W", t), "2024-03-11T00:00:00.000Z");
        assert_eq!(floor("P1D", t), "2024-03-14T00:00:00.000Z");
        assert_eq!(floor("PT1H", t), "2024-03-14T15:00:00.000Z");
        assert_eq!(floor("PT1M", t), "2024-03-14T15:47:00.000Z");
        assert_eq!(floor("PT1S", t), "2024-03-14T15:47:31.000Z");
    }

    #[test]
    fn other_periods_count_from_the_origin() {
        let t = "2024-08-14T15:47:31Z";
        assert_eq!(floor("P3M", t), "2024-07-01T00:00:00.000Z");
        assert_eq!(floor("PT15M", t), "2024-08-14T15:45:00.000Z");
        assert_eq!(floor("PT6H", t), "2024-08-14T12:00:00.000Z");
        assert_eq!(floor("P2Y", t), "2024-01-01T00:00:00.000Z");
        // From Thursday 1970-01-01, two weeks at a time.
        assert_eq!(floor("P2W", t), "2024-08-01T00:00:00.000Z");
        let feb = calendar("P3M", Some("2012-02-01T00:00:00Z"), None);
        assert_eq!(
            format_millis(feb.floor(at(t)).unwrap()),
            "2024-08-01T00:00:00.000Z"
        );
        let half_hour = calendar("P1D", Some("1970-01-01T00:30:00Z"), None);
        assert_eq!(
            format_millis(half_hour.floor(at("2013-09-02T00:10:00Z")).unwrap()),
            "2013-09-01T00:30:00.000Z"
        );
        // Before the origin too.
        assert_eq!(
            floor("PT15M", "1969-12-31T23:59:59Z"),
            "1969-12-31T23:45:00.000Z"
        );
    }

    #[test]
    fn zones_move_the_buckets_to_their_wall_clock() {
        // Druid's granularity docs: 2013-09-02T23:32:45Z and 2013-09-03T03:32:45Z are
        // the same day in Pacific time, which starts at 07:00 UTC in summer.
        let pacific = calendar("P1D", None, Some("America/Los_Angeles"));
        for t in ["2013-09-02T23:32:45Z", "2013-09-03T03:32:45Z"] {
            assert_eq!(
                format_millis(pacific.floor(at(t)).unwrap()),
                "2013-09-02T07:00:00.000Z"
            );
        }
        // With an origin of 20:30 Pacific the day starts at 20:30 local.
        let evening = calendar(
            "P1D",
            Some("1970-01-01T20:30:00-08:00"),
            Some("America/Los_Angeles"),
        );
        assert_eq!(
            format_millis(evening.floor(at("2013-09-03T03:32:45Z")).unwrap()),
            "2013-09-03T03:30:00.000Z"
        );
        let india = calendar("P1D", None, Some("+05:30"));
        assert_eq!(
            format_millis(india.floor(at("2024-01-01T20:00:00Z")).unwrap()),
            "2024-01-01T18:30:00.000Z"
        );
    }

    #[test]
    fn ceilings_and_shifts() {
        let month = calendar("P1M", None, None);
        assert_eq!(
            format_millis(month.ceil(at("2024-01-31T10:00:00Z")).unwrap()),
            "2024-02-01T00:00:00.000Z"
        );
        assert_eq!(
            month.ceil(at("2024-02-01T00:00:00Z")),
            Some(at("2024-02-01T00:00:00Z"))
        );
        // A month after January 31 is the last of February.
        assert_eq!(
            format_millis(month.shift(at("2024-01-31T10:00:00Z"), 1).unwrap()),
            "2024-02-29T10:00:00.000Z"
        );
        assert_eq!(
            format_millis(month.shift(at("2024-03-31T10:00:00Z"), -1).unwrap()),
            "2024-02-29T10:00:00.000Z"
        );
        let day = calendar("P1D", None, Some("America/Los_Angeles"));
        // Across the change to summer time a day is 23 hours.
        assert_eq!(
            format_millis(day.shift(at("2024-03-10T08:00:00Z"), 1).unwrap()),
            "2024-03-11T07:00:00.000Z"
        );
    }

    #[test]
    fn hours_and_smaller_are_elapsed_time_across_a_change_of_offset() {
        // On 2024-11-03 Los Angeles shows 01:00-02:00 twice: 08:00Z-09:00Z in
        // summer time, 09:00Z-10:00Z in winter time.
        let zone = Some("America/Los_Angeles");
        let minute = calendar("PT1M", None, zone);
        let second_time = at("2024-11-03T09:30:30Z");
        assert_eq!(minute.floor(second_time), Some(at("2024-11-03T09:30:00Z")));
        assert_eq!(minute.ceil(second_time), Some(at("2024-11-03T09:31:00Z")));
        let hour = calendar("PT1H", None, zone);
        assert_eq!(
            hour.floor(at("2024-11-03T08:30:00Z")),
            Some(at("2024-11-03T08:00:00Z"))
        );
        assert_eq!(hour.floor(second_time), Some(at("2024-11-03T09:00:00Z")));
        assert_eq!(
            hour.shift(at("2024-11-03T08:00:00Z"), 1),
            Some(at("2024-11-03T09:00:00Z"))
        );
        // A day is still the local day: 25 hours that Sunday.
        let day = calendar("P1D", None, zone);
        assert_eq!(day.floor(second_time), Some(at("2024-11-03T07:00:00Z")));
        assert_eq!(day.ceil(second_time), Some(at("2024-11-04T08:00:00Z")));
    }

    #[test]
    fn extreme_periods_and_times_answer_without_panicking() {
        let huge = calendar("P99999999Y", None, None);
        assert_eq!(huge.floor(at("2024-01-01T00:00:00Z")), Some(0));
        let week = calendar("P1W", None, Some("America/Los_Angeles"));
        for t in [
            i64::MIN,
            i64::MIN / 2,
            -8_334_601_228_800_000,
            i64::MAX / 2,
            i64::MAX,
        ] {
            let _ = week.floor(t);
            let _ = week.ceil(t);
            let _ = week.shift(t, i64::MAX);
            let _ = huge.shift(t, -3);
        }
    }

    #[test]
    fn bad_periods_and_zones_are_refused() {
        assert!(Calendar::new(Period::parse("PT0S").unwrap(), None, None).is_err());
        assert!(Calendar::new(Period::parse("P1D").unwrap(), None, Some("Mars/Olympus")).is_err());
    }
}
