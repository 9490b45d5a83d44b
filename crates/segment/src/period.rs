//! ISO-8601 periods (`P1M`, `PT10M`, `P1Y2M3DT4H5M6S`), as Druid's rules and
//! streaming specs write durations.

use chrono::{DateTime, Months, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// An ISO-8601 period such as `P1M`, `P7D`, `PT6H` or `P1Y2M3DT4H5M6S`; months and
/// years are calendar months and years (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Period {
    pub months: u32,
    pub millis: i64,
    text_years: u32,
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
        let mut period = Period::default();
        for (number, unit) in fields(date).map_err(|e| bad(&e))? {
            match unit {
                'Y' => {
                    period.months += number * 12;
                    period.text_years += number;
                }
                'M' => period.months += number,
                'W' => period.millis += i64::from(number) * 7 * 86_400_000,
                'D' => period.millis += i64::from(number) * 86_400_000,
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
            match unit {
                'H' => period.millis += i64::from(number) * 3_600_000,
                'M' => period.millis += i64::from(number) * 60_000,
                'S' => period.millis += i64::from(number) * 1_000,
                u => return Err(bad(&format!("unknown time unit {u:?}"))),
            }
        }
        Ok(period)
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

/// `3D12H` -> [(3, 'D'), (12, 'H')].
fn fields(text: &str) -> std::result::Result<Vec<(u32, char)>, String> {
    let mut out = Vec::new();
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
        } else if number.is_empty() {
            return Err(format!("{c:?} has no number before it"));
        } else {
            let n = number
                .parse()
                .map_err(|_| format!("{number} is too large"))?;
            out.push((n, c));
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
        let years = self.text_years;
        let months = self.months - years * 12;
        let mut ms = self.millis;
        let days = ms / 86_400_000;
        ms %= 86_400_000;
        f.write_str("P")?;
        for (n, unit) in [
            (i64::from(years), 'Y'),
            (i64::from(months), 'M'),
            (days, 'D'),
        ] {
            if n > 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        if ms > 0 {
            f.write_str("T")?;
            for (div, unit) in [(3_600_000, 'H'), (60_000, 'M'), (1_000, 'S')] {
                if ms / div > 0 {
                    write!(f, "{}{unit}", ms / div)?;
                }
                ms %= div;
            }
        }
        if years == 0 && months == 0 && self.millis == 0 {
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
    }
}
