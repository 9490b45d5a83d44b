//! ISO-8601 periods (`P1M`, `PT10M`, `P1Y2M3DT4H5M6S`, `PT0.750S`), as Druid's rules,
//! streaming specs, granularities and time functions write durations.

use chrono::{DateTime, Months, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// An ISO-8601 period such as `P1M`, `P7D`, `PT6H` or `P1Y2M3DT4H5M6S`; months and
/// years are calendar months and years (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Period {
    /// The years and months, in months.
    pub months: u32,
    /// The weeks, days, hours, minutes and seconds, in milliseconds (a day is 24 hours).
    pub millis: i64,
    /// Each field as written.
    pub fields: Fields,
}

/// A period's fields as written: `P1Y2M` has a year and two months, where `P14M` has
/// fourteen months. Calendar rounding depends on which fields a period has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fields {
    pub years: u32,
    pub months: u32,
    pub weeks: u32,
    pub days: u32,
    pub hours: u32,
    pub minutes: u32,
    pub seconds: u32,
    pub millis: u32,
}

impl Fields {
    /// The one field this period has, with its count: `P1D` is `(Unit::Day, 1)`.
    pub fn single(&self) -> Option<(Unit, u32)> {
        let all = [
            (Unit::Year, self.years),
            (Unit::Month, self.months),
            (Unit::Week, self.weeks),
            (Unit::Day, self.days),
            (Unit::Hour, self.hours),
            (Unit::Minute, self.minutes),
            (Unit::Second, self.seconds),
            (Unit::Millisecond, self.millis),
        ];
        let mut set = all.into_iter().filter(|(_, n)| *n > 0);
        match (set.next(), set.next()) {
            (Some(one), None) => Some(one),
            _ => None,
        }
    }
}

/// A field of a period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    Year,
    Month,
    Week,
    Day,
    Hour,
    Minute,
    Second,
    Millisecond,
}

impl Period {
    pub fn parse(text: &str) -> Result<Period> {
        let bad = |why: &str| Error::invalid(format!("invalid period {text:?}: {why}"));
        let rest = text
            .strip_prefix('P')
            .ok_or_else(|| bad("it must start with P"))?;
        if rest.is_empty() {
            return Err(bad("it is empty"));
        }
        let (date, time) = match rest.split_once('T') {
            Some((_, "")) => return Err(bad("nothing after T")),
            Some((d, t)) => (d, Some(t)),
            None => (rest, None),
        };
        let mut f = Fields::default();
        let mut seen = String::new();
        let mut once = |unit: char, part: &str| {
            let key = format!("{part}{unit}");
            if seen.contains(&key) {
                return Err(bad(&format!("{unit} is given twice")));
            }
            seen.push_str(&key);
            Ok(())
        };
        for (number, unit) in fields(date).map_err(|e| bad(&e))? {
            once(unit, "D")?;
            let count = number
                .whole()
                .ok_or_else(|| bad("only seconds may have a fraction"))?;
            match unit {
                'Y' => f.years += count,
                'M' => f.months += count,
                'W' => f.weeks += count,
                'D' => f.days += count,
                u => return Err(bad(&format!("unknown date unit {u:?}"))),
            }
        }
        for (number, unit) in time
            .map(fields)
            .transpose()
            .map_err(|e| bad(&e))?
            .into_iter()
            .flatten()
        {
            once(unit, "T")?;
            if unit == 'S' {
                f.seconds += number.whole;
                f.millis += number.millis;
                continue;
            }
            let count = number
                .whole()
                .ok_or_else(|| bad("only seconds may have a fraction"))?;
            match unit {
                'H' => f.hours += count,
                'M' => f.minutes += count,
                u => return Err(bad(&format!("unknown time unit {u:?}"))),
            }
        }
        Ok(Period::from_fields(f))
    }

    /// The period of these fields.
    pub fn from_fields(fields: Fields) -> Period {
        let f = fields;
        let millis = i64::from(f.weeks) * 7 * 86_400_000
            + i64::from(f.days) * 86_400_000
            + i64::from(f.hours) * 3_600_000
            + i64::from(f.minutes) * 60_000
            + i64::from(f.seconds) * 1_000
            + i64::from(f.millis);
        Period {
            months: f.years.saturating_mul(12).saturating_add(f.months),
            millis,
            fields,
        }
    }

    /// One of `unit`.
    pub fn of(unit: Unit, count: u32) -> Period {
        let mut f = Fields::default();
        *match unit {
            Unit::Year => &mut f.years,
            Unit::Month => &mut f.months,
            Unit::Week => &mut f.weeks,
            Unit::Day => &mut f.days,
            Unit::Hour => &mut f.hours,
            Unit::Minute => &mut f.minutes,
            Unit::Second => &mut f.seconds,
            Unit::Millisecond => &mut f.millis,
        } = count;
        Period::from_fields(f)
    }

    /// Whether the period is empty (`PT0S`).
    pub fn is_zero(&self) -> bool {
        self.months == 0 && self.millis == 0
    }

    /// The instant this period before `now` (ms).
    pub fn before(&self, now: i64) -> i64 {
        let Some(t) = DateTime::<Utc>::from_timestamp_millis(now) else {
            return i64::MIN / 2;
        };
        t.checked_sub_months(Months::new(self.months))
            .and_then(|t| t.checked_sub_signed(TimeDelta::milliseconds(self.millis)))
            .map_or(i64::MIN / 2, |t| t.timestamp_millis())
    }
}

/// A field's number: whole, with milliseconds when it had a fraction (`0.750`).
struct Number {
    whole: u32,
    millis: u32,
}

impl Number {
    /// The number, if it has no fraction.
    fn whole(&self) -> Option<u32> {
        (self.millis == 0).then_some(self.whole)
    }
}

/// `3D12H` -> [(3, 'D'), (12, 'H')]; `0.750S` -> [(0 and 750 ms, 'S')].
fn fields(text: &str) -> std::result::Result<Vec<(Number, char)>, String> {
    let mut out = Vec::new();
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() || (c == '.' && !number.is_empty() && !number.contains('.')) {
            number.push(c);
        } else if number.is_empty() {
            return Err(format!("{c:?} has no number before it"));
        } else {
            let (whole, fraction) = number.split_once('.').unwrap_or((&number, ""));
            let whole = whole
                .parse()
                .map_err(|_| format!("{number} is too large"))?;
            if fraction.len() > 3 {
                return Err(format!("{number} is finer than a millisecond"));
            }
            let millis = format!("{fraction:0<3}")
                .parse()
                .map_err(|_| format!("{number} is not a number"))?;
            out.push((Number { whole, millis }, c));
            number.clear();
        }
    }
    if !number.is_empty() {
        return Err(format!("{number} has no unit after it"));
    }
    Ok(out)
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = &self.fields;
        f.write_str("P")?;
        for (n, unit) in [
            (p.years, 'Y'),
            (p.months, 'M'),
            (p.weeks, 'W'),
            (p.days, 'D'),
        ] {
            if n > 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        if [p.hours, p.minutes, p.seconds, p.millis]
            .iter()
            .any(|n| *n > 0)
        {
            f.write_str("T")?;
            for (n, unit) in [(p.hours, 'H'), (p.minutes, 'M')] {
                if n > 0 {
                    write!(f, "{n}{unit}")?;
                }
            }
            match (p.seconds, p.millis) {
                (0, 0) => {}
                (s, 0) => write!(f, "{s}S")?,
                (s, ms) => write!(f, "{s}.{ms:03}S")?,
            }
        }
        if self.is_zero() {
            f.write_str("T0S")?;
        }
        Ok(())
    }
}

impl Serialize for Period {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Period::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_periods_have_their_length_in_milliseconds() {
        let p = Period::parse("PT10M").unwrap();
        assert_eq!((p.months, p.millis), (0, 600_000));
        assert_eq!(Period::parse("P1DT1S").unwrap().millis, 86_401_000);
        assert_eq!(Period::parse("PT1H").unwrap().to_string(), "PT1H");
        assert!(Period::parse("10M").is_err());
        assert_eq!(Period::parse("PT0.750S").unwrap().millis, 750);
        assert_eq!(Period::parse("PT1.5S").unwrap().to_string(), "PT1.500S");
        assert!(Period::parse("P0.5D").is_err());
        assert!(Period::parse("PT0.0001S").is_err());
        assert!(Period::parse("P4294967295Y1Y").is_err());
        assert!(Period::parse("PT1.5S1.6S").is_err());
        assert!(Period::parse("PT99999999999H").is_err());
    }

    #[test]
    fn periods_keep_their_fields_as_written() {
        let p = Period::parse("P1Y2M").unwrap();
        assert_eq!((p.months, p.fields.years, p.fields.months), (14, 1, 2));
        assert_eq!(p.to_string(), "P1Y2M");
        assert_eq!(Period::parse("P2W").unwrap().to_string(), "P2W");
        assert_eq!(
            Period::parse("P14M").unwrap().fields.single(),
            Some((Unit::Month, 14))
        );
        assert_eq!(Period::parse("PT1H30M").unwrap().fields.single(), None);
        assert_eq!(Period::of(Unit::Week, 1), Period::parse("P1W").unwrap());
    }
}
