//! Druid's time functions, with Druid's semantics:
//!
//! | function | answers |
//! |---|---|
//! | `TIME_FLOOR(t, period[, origin[, zone]])` | the start of `t`'s bucket ([`Calendar`]) |
//! | `TIME_CEIL(t, period[, origin[, zone]])` | the end of `t`'s bucket, or `t` on a boundary |
//! | `TIME_SHIFT(t, period, steps[, zone])` | `t` moved by `steps` periods on the zone's clock |
//! | `TIME_EXTRACT(t, unit[, zone])` | a field of `t`: `DOW` is Monday 1 .. Sunday 7 |
//! | `TIME_PARSE(text[, pattern[, zone]])` | the instant, or NULL when it does not parse |
//! | `TIME_FORMAT(t[, pattern[, zone]])` | text in a Joda pattern, by default ISO 8601 |
//! | `MILLIS_TO_TIMESTAMP(ms)`, `TIMESTAMP_TO_MILLIS(t)` | epoch milliseconds and back |
//! | `TIME_IN_INTERVAL(t, 'start/end')` | whether `t` is in the half-open interval |
//! | `TIMESTAMPDIFF(unit, a, b)` | whole units from `a` to `b` (months by the calendar) |
//!
//! The arguments after the time (periods, origins, zones, patterns, units, intervals)
//! are literals, as Druid requires: one value for the whole query, so a bucket's
//! calendar is worked out once.

use std::sync::Arc;

use chrono::format::{Parsed, parse};
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, TimeZone, Timelike};
use datafusion::arrow::array::timezone::Tz;
use datafusion::arrow::array::{
    ArrayRef, AsArray, BooleanArray, Int64Array, StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampMillisecondType};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use grove_segment::calendar::{Calendar, in_zone, parse_zone};
use grove_segment::id::Interval;
use grove_segment::period::{Period, Unit};

use super::{joda, scalar_or_array};

/// The type of Grove's times: milliseconds, UTC.
fn time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// The functions of this module.
pub fn functions() -> Vec<ScalarUDF> {
    use Kind::*;
    [
        Floor,
        Ceil,
        Shift,
        Extract,
        Parse,
        Format,
        MillisToTimestamp,
        TimestampToMillis,
        InInterval,
        Diff,
    ]
    .into_iter()
    .map(|kind| {
        ScalarUDF::new_from_impl(TimeFunction {
            kind,
            signature: Signature::user_defined(Volatility::Immutable),
        })
    })
    .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Floor,
    Ceil,
    Shift,
    Extract,
    Parse,
    Format,
    MillisToTimestamp,
    TimestampToMillis,
    InInterval,
    Diff,
}

/// What an argument is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arg {
    Time,
    Text,
    Integer,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Floor => "time_floor",
            Kind::Ceil => "time_ceil",
            Kind::Shift => "time_shift",
            Kind::Extract => "time_extract",
            Kind::Parse => "time_parse",
            Kind::Format => "time_format",
            Kind::MillisToTimestamp => "millis_to_timestamp",
            Kind::TimestampToMillis => "timestamp_to_millis",
            Kind::InInterval => "time_in_interval",
            Kind::Diff => "timestampdiff",
        }
    }

    /// The arguments, and how many of them may be left out at the end.
    fn arguments(self) -> (&'static [Arg], usize) {
        use Arg::*;
        match self {
            Kind::Floor | Kind::Ceil => (&[Time, Text, Time, Text], 2),
            Kind::Shift => (&[Time, Text, Integer, Text], 1),
            Kind::Extract => (&[Time, Text, Text], 1),
            Kind::Parse => (&[Text, Text, Text], 2),
            Kind::Format => (&[Time, Text, Text], 2),
            Kind::MillisToTimestamp => (&[Integer], 0),
            Kind::TimestampToMillis => (&[Time], 0),
            Kind::InInterval => (&[Time, Text], 0),
            Kind::Diff => (&[Text, Time, Time], 0),
        }
    }

    fn return_type(self) -> DataType {
        match self {
            Kind::Floor | Kind::Ceil | Kind::Shift | Kind::Parse | Kind::MillisToTimestamp => {
                time_type()
            }
            Kind::Extract | Kind::TimestampToMillis | Kind::Diff => DataType::Int64,
            Kind::Format => DataType::Utf8,
            Kind::InInterval => DataType::Boolean,
        }
    }
}

/// One of Druid's time functions.
#[derive(Debug, PartialEq, Eq, Hash)]
struct TimeFunction {
    kind: Kind,
    signature: Signature,
}

impl ScalarUDFImpl for TimeFunction {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(self.kind.return_type())
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let (args, optional) = self.kind.arguments();
        if arg_types.len() > args.len() || arg_types.len() < args.len() - optional {
            let least = args.len() - optional;
            let takes = if optional == 0 {
                format!("{least}")
            } else {
                format!("{least} to {}", args.len())
            };
            return plan_err!(
                "{} takes {takes} arguments, not {}",
                self.name().to_uppercase(),
                arg_types.len()
            );
        }
        Ok(args[..arg_types.len()]
            .iter()
            .map(|arg| match arg {
                Arg::Time => time_type(),
                Arg::Text => DataType::Utf8,
                // A fractional count of milliseconds or steps is cut to a whole one,
                // as Druid's longs are.
                Arg::Integer => DataType::Int64,
            })
            .collect())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let call = Call {
            name: self.kind.name(),
            args: &args.args,
        };
        let answer: ArrayRef = match self.kind {
            Kind::Floor | Kind::Ceil => {
                let calendar = call.calendar(1, Some(2), 3)?;
                let ceil = self.kind == Kind::Ceil;
                Arc::new(map_times(&call.array(0, rows)?, |t| match &calendar {
                    None => None,
                    Some(c) if ceil => c.ceil(t),
                    Some(c) => c.floor(t),
                })?)
            }
            Kind::Shift => {
                let calendar = call.calendar(1, None, 3)?;
                let steps = call.array(2, rows)?;
                let steps = steps.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
                let times = call.array(0, rows)?;
                let times = times.as_primitive::<TimestampMillisecondType>();
                let shifted: TimestampMillisecondArray = times
                    .iter()
                    .zip(steps.iter())
                    .map(|(t, n)| calendar.as_ref()?.shift(t?, n?))
                    .collect();
                Arc::new(shifted.with_timezone("UTC"))
            }
            Kind::Extract => {
                let Some(unit) = call.text(1)? else {
                    return Ok(ColumnarValue::Scalar(ScalarValue::Int64(None)));
                };
                let field = Field::parse(&unit)?;
                let zone = call.zone(2)?;
                let times = call.array(0, rows)?;
                let fields: Int64Array = times
                    .as_primitive::<TimestampMillisecondType>()
                    .iter()
                    .map(|t| field.of(t?, &zone))
                    .collect();
                Arc::new(fields)
            }
            Kind::Parse => {
                let pattern = call.text(1)?.map(|p| joda::items(&p)).transpose();
                let pattern = pattern.map_err(datafusion::error::DataFusionError::Plan)?;
                let zone = call.zone(2)?;
                let texts = cast(&call.array(0, rows)?, &DataType::Utf8)?;
                let parsed: TimestampMillisecondArray = texts
                    .as_string::<i32>()
                    .iter()
                    .map(|text| parse_time(text?, pattern.as_deref(), &zone))
                    .collect();
                Arc::new(parsed.with_timezone("UTC"))
            }
            Kind::Format => {
                let pattern = match call.text(1)? {
                    Some(p) => joda::items(&p).map_err(datafusion::error::DataFusionError::Plan)?,
                    None => iso_items(),
                };
                let zone = call.zone(2)?;
                let times = call.array(0, rows)?;
                let texts: StringArray = times
                    .as_primitive::<TimestampMillisecondType>()
                    .iter()
                    .map(|t| {
                        let local = in_zone(t?, &zone)?;
                        Some(local.format_with_items(pattern.iter()).to_string())
                    })
                    .collect();
                Arc::new(texts)
            }
            Kind::MillisToTimestamp => {
                let millis = call.array(0, rows)?;
                let times = millis
                    .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                    .reinterpret_cast::<TimestampMillisecondType>();
                Arc::new(times.with_timezone("UTC"))
            }
            Kind::TimestampToMillis => {
                let times = call.array(0, rows)?;
                let millis: Int64Array = times
                    .as_primitive::<TimestampMillisecondType>()
                    .reinterpret_cast();
                Arc::new(millis)
            }
            Kind::InInterval => {
                let Some(text) = call.text(1)? else {
                    return Ok(ColumnarValue::Scalar(ScalarValue::Boolean(None)));
                };
                let interval = Interval::parse(&text)
                    .map_err(|e| datafusion::error::DataFusionError::Plan(e.to_string()))?;
                let times = call.array(0, rows)?;
                let inside: BooleanArray = times
                    .as_primitive::<TimestampMillisecondType>()
                    .iter()
                    .map(|t| t.map(|t| interval.contains(t)))
                    .collect();
                Arc::new(inside)
            }
            Kind::Diff => {
                let Some(unit) = call.text(0)? else {
                    return Ok(ColumnarValue::Scalar(ScalarValue::Int64(None)));
                };
                let unit = sql_unit(&unit).ok_or_else(|| {
                    datafusion::error::DataFusionError::Plan(format!(
                        "TIMESTAMPDIFF does not know the unit {unit}: use SECOND, MINUTE, \
                         HOUR, DAY, WEEK, MONTH, QUARTER or YEAR"
                    ))
                })?;
                let (a, b) = (call.array(1, rows)?, call.array(2, rows)?);
                let a = a.as_primitive::<TimestampMillisecondType>();
                let b = b.as_primitive::<TimestampMillisecondType>();
                let diffs: Int64Array = a
                    .iter()
                    .zip(b.iter())
                    .map(|(a, b)| difference(&unit, a?, b?))
                    .collect();
                Arc::new(diffs)
            }
        };
        scalar_or_array(&args.args, answer)
    }
}

/// A call's arguments, read as the function needs them.
struct Call<'a> {
    name: &'a str,
    args: &'a [ColumnarValue],
}

impl Call<'_> {
    /// Argument `i` as an array of `rows`.
    fn array(&self, i: usize, rows: usize) -> Result<ArrayRef> {
        match self.args.get(i) {
            Some(arg) => arg.to_array(rows),
            None => exec_err!("{} has no argument {}", self.name, i + 1),
        }
    }

    /// The literal text of argument `i`: `None` when it is NULL or left out.
    fn text(&self, i: usize) -> Result<Option<String>> {
        match self.args.get(i) {
            None => Ok(None),
            Some(ColumnarValue::Scalar(value)) => match value.cast_to(&DataType::Utf8)? {
                ScalarValue::Utf8(text) => Ok(text),
                _ => Ok(None),
            },
            Some(ColumnarValue::Array(_)) => plan_err!(
                "{}'s argument {} must be a literal, the same for every row",
                self.name.to_uppercase(),
                i + 1
            ),
        }
    }

    /// The literal time of argument `i`, if given and not NULL.
    fn time(&self, i: usize) -> Result<Option<i64>> {
        match self.args.get(i) {
            None => Ok(None),
            Some(ColumnarValue::Scalar(value)) => match value.cast_to(&time_type())? {
                ScalarValue::TimestampMillisecond(t, _) => Ok(t),
                _ => Ok(None),
            },
            Some(ColumnarValue::Array(_)) => plan_err!(
                "{}'s argument {} must be a literal, the same for every row",
                self.name.to_uppercase(),
                i + 1
            ),
        }
    }

    /// The time zone of argument `i`, UTC when it is left out or NULL.
    fn zone(&self, i: usize) -> Result<Tz> {
        let text = self.text(i)?;
        parse_zone(text.as_deref().unwrap_or("UTC"))
            .map_err(|e| datafusion::error::DataFusionError::Plan(e.to_string()))
    }

    /// The calendar of the period in argument `period`, counted from the origin in
    /// argument `origin`, in the zone of argument `zone`; `None` when the period is
    /// NULL (every answer is then NULL).
    fn calendar(
        &self,
        period: usize,
        origin: Option<usize>,
        zone: usize,
    ) -> Result<Option<Calendar>> {
        let Some(text) = self.text(period)? else {
            return Ok(None);
        };
        let plan =
            |e: grove_segment::Error| datafusion::error::DataFusionError::Plan(e.to_string());
        let period = Period::parse(&text).map_err(plan)?;
        let origin = match origin {
            Some(i) => self.time(i)?,
            None => None,
        };
        let zone = self.text(zone)?;
        Calendar::new(period, origin, zone.as_deref())
            .map(Some)
            .map_err(plan)
    }
}

/// `f` of every time of `times`; NULL where it has none.
fn map_times(
    times: &ArrayRef,
    f: impl Fn(i64) -> Option<i64>,
) -> Result<TimestampMillisecondArray> {
    let answer: TimestampMillisecondArray = times
        .as_primitive::<TimestampMillisecondType>()
        .iter()
        .map(|t| f(t?))
        .collect();
    Ok(answer.with_timezone("UTC"))
}

/// A field `TIME_EXTRACT` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Epoch,
    Millisecond,
    Second,
    Minute,
    Hour,
    Day,
    /// Druid's (and ISO's) day of the week: Monday 1 .. Sunday 7.
    DayOfWeek,
    DayOfYear,
    /// The ISO week of the week year.
    Week,
    Month,
    Quarter,
    Year,
    IsoYear,
    Decade,
    Century,
    Millennium,
}

impl Field {
    fn parse(unit: &str) -> Result<Field> {
        Ok(match unit.to_ascii_uppercase().as_str() {
            "EPOCH" => Field::Epoch,
            "MILLISECOND" => Field::Millisecond,
            "SECOND" => Field::Second,
            "MINUTE" => Field::Minute,
            "HOUR" => Field::Hour,
            "DAY" => Field::Day,
            "DOW" | "ISODOW" => Field::DayOfWeek,
            "DOY" => Field::DayOfYear,
            "WEEK" => Field::Week,
            "MONTH" => Field::Month,
            "QUARTER" => Field::Quarter,
            "YEAR" => Field::Year,
            "ISOYEAR" => Field::IsoYear,
            "DECADE" => Field::Decade,
            "CENTURY" => Field::Century,
            "MILLENNIUM" => Field::Millennium,
            other => {
                return plan_err!(
                    "TIME_EXTRACT does not know the unit {other:?}: use EPOCH, MILLISECOND, \
                     SECOND, MINUTE, HOUR, DAY, DOW, ISODOW, DOY, WEEK, MONTH, QUARTER, YEAR, \
                     ISOYEAR, DECADE, CENTURY or MILLENNIUM"
                );
            }
        })
    }

    /// The field of `t` on the clock of `zone`, as Druid computes it: `EPOCH` in
    /// whole seconds toward zero, `DECADE` the year divided by ten, `CENTURY` and
    /// `MILLENNIUM` the ones a year is in (2013 is in the 21st century and the 3rd
    /// millennium).
    fn of(self, t: i64, zone: &Tz) -> Option<i64> {
        let local = in_zone(t, zone)?;
        let year = i64::from(local.year());
        Some(match self {
            Field::Epoch => t / 1000,
            Field::Millisecond => i64::from(local.timestamp_subsec_millis()),
            Field::Second => i64::from(local.second()),
            Field::Minute => i64::from(local.minute()),
            Field::Hour => i64::from(local.hour()),
            Field::Day => i64::from(local.day()),
            Field::DayOfWeek => i64::from(local.weekday().number_from_monday()),
            Field::DayOfYear => i64::from(local.ordinal()),
            Field::Week => i64::from(local.iso_week().week()),
            Field::Month => i64::from(local.month()),
            Field::Quarter => i64::from(local.month0() / 3 + 1),
            Field::Year => year,
            Field::IsoYear => i64::from(local.iso_week().year()),
            Field::Decade => year / 10,
            Field::Century => (year as f64 / 100.0).ceil() as i64,
            Field::Millennium => (year as f64 / 1000.0).ceil() as i64,
        })
    }
}

/// A SQL time unit (`HOUR`, `QUARTER`) as one of a period's fields and a count.
pub fn sql_unit(unit: &str) -> Option<(Unit, u32)> {
    Some(match unit.to_ascii_uppercase().as_str() {
        "MILLISECOND" => (Unit::Millisecond, 1),
        "SECOND" => (Unit::Second, 1),
        "MINUTE" => (Unit::Minute, 1),
        "HOUR" => (Unit::Hour, 1),
        "DAY" => (Unit::Day, 1),
        "WEEK" => (Unit::Week, 1),
        "MONTH" => (Unit::Month, 1),
        "QUARTER" => (Unit::Month, 3),
        "YEAR" => (Unit::Year, 1),
        _ => return None,
    })
}

/// The whole `unit`s from `a` to `b`, negative when `b` is earlier: months, quarters
/// and years by the calendar, the others by their length. A month is whole when the
/// day of the month comes round again, or the month ends before it does (January 31
/// to February 29 is a month, as in Joda's `monthsBetween`).
fn difference(unit: &(Unit, u32), a: i64, b: i64) -> Option<i64> {
    let (field, count) = *unit;
    let months_per = match field {
        Unit::Year => 12 * i64::from(count),
        Unit::Month => i64::from(count),
        _ => {
            let length = Period::of(field, count).millis;
            return Some(b.checked_sub(a)? / length);
        }
    };
    let (from, to) = (
        DateTime::from_timestamp_millis(a)?.naive_utc(),
        DateTime::from_timestamp_millis(b)?.naive_utc(),
    );
    let mut months =
        i64::from(to.year() - from.year()) * 12 + i64::from(to.month0()) - i64::from(from.month0());
    // Whole months: as many as `from` can move (its day clamped to a shorter month's
    // last) without passing `to`.
    let moved = |m: i64| -> Option<NaiveDateTime> {
        let n = chrono::Months::new(u32::try_from(m.unsigned_abs()).ok()?);
        if m >= 0 {
            from.checked_add_months(n)
        } else {
            from.checked_sub_months(n)
        }
    };
    if months > 0 && moved(months)? > to {
        months -= 1;
    } else if months < 0 && moved(months)? < to {
        months += 1;
    }
    Some(months / months_per)
}

/// ISO 8601 with milliseconds and the zone's offset (`Z` in UTC), as Druid writes
/// times by default.
fn iso_items() -> Vec<chrono::format::Item<'static>> {
    use chrono::format::{Fixed, Item};
    let mut items = joda::items("yyyy-MM-dd'T'HH:mm:ss.SSS").unwrap_or_default();
    items.push(Item::Fixed(Fixed::TimezoneOffsetColonZ));
    items
}

/// `text` as an instant: by `pattern` when given, else as ISO 8601 or SQL's
/// `2000-01-02 03:04:05`. A time without an offset is on `zone`'s clock; text that
/// does not parse is `None` (NULL), as in Druid.
fn parse_time(
    text: &str,
    pattern: Option<&[chrono::format::Item<'static>]>,
    zone: &Tz,
) -> Option<i64> {
    let text = text.trim();
    let mut parsed = Parsed::new();
    match pattern {
        Some(items) => parse(&mut parsed, text, items.iter()).ok()?,
        None => {
            let formats = [
                "%Y-%m-%dT%H:%M:%S%.f%:z",
                "%Y-%m-%dT%H:%M:%S%.fZ",
                "%Y-%m-%dT%H:%M:%S%.f",
                "%Y-%m-%d %H:%M:%S%.f",
                "%Y-%m-%dT%H:%M%:z",
                "%Y-%m-%dT%H:%MZ",
                "%Y-%m-%dT%H:%M",
                "%Y-%m-%d %H:%M",
                "%Y-%m-%d",
            ];
            let found = formats.iter().find_map(|format| {
                let mut p = Parsed::new();
                let items = chrono::format::StrftimeItems::new(format);
                parse(&mut p, text, items).ok().map(|()| p)
            })?;
            parsed = found;
            if text.ends_with('Z') {
                parsed.set_offset(0).ok()?;
            }
        }
    }
    // What the text leaves out is the start of its unit: a pattern of a date alone is
    // midnight, of a year alone January 1.
    if parsed.year().is_none() && parsed.year_mod_100().is_none() && parsed.isoyear().is_none() {
        parsed.set_year(1970).ok()?;
    }
    if parsed.month().is_none() && parsed.ordinal().is_none() && parsed.isoweek().is_none() {
        parsed.set_month(1).ok()?;
    }
    if parsed.day().is_none() && parsed.ordinal().is_none() && parsed.isoweek().is_none() {
        parsed.set_day(1).ok()?;
    }
    if parsed.isoweek().is_some() && parsed.weekday().is_none() {
        parsed.set_weekday(chrono::Weekday::Mon).ok()?;
    }
    if parsed.hour_div_12().is_none() {
        parsed.set_ampm(false).ok()?;
    }
    if parsed.hour_mod_12().is_none() {
        parsed.set_hour12(12).ok()?;
    }
    if parsed.minute().is_none() {
        parsed.set_minute(0).ok()?;
    }
    if parsed.second().is_none() {
        parsed.set_second(0).ok()?;
    }
    let date: NaiveDate = parsed.to_naive_date().ok()?;
    let time = parsed.to_naive_time().ok()?;
    let local = date.and_time(time);
    match parsed.offset() {
        Some(offset) => {
            let fixed = chrono::FixedOffset::east_opt(offset)?;
            Some(
                fixed
                    .from_local_datetime(&local)
                    .single()?
                    .timestamp_millis(),
            )
        }
        None => Some(
            zone.from_local_datetime(&local)
                .earliest()?
                .timestamp_millis(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use grove_segment::id::parse_instant;

    use super::*;

    fn utc() -> Tz {
        parse_zone("UTC").unwrap()
    }

    #[test]
    fn day_of_week_is_monday_one_to_sunday_seven() {
        // 2024-03-11 is a Monday, 2024-03-17 a Sunday.
        let monday = parse_instant("2024-03-11T12:00:00Z").unwrap();
        let sunday = parse_instant("2024-03-17T12:00:00Z").unwrap();
        assert_eq!(Field::DayOfWeek.of(monday, &utc()), Some(1));
        assert_eq!(Field::DayOfWeek.of(sunday, &utc()), Some(7));
        // Druid's TIME_EXTRACT example: 08:14 UTC is hour 4 at -04:00.
        let t = 1_375_344_877_000;
        assert_eq!(Field::Hour.of(t, &parse_zone("-04:00").unwrap()), Some(4));
        assert_eq!(Field::Epoch.of(t, &utc()), Some(1_375_344_877));
        assert_eq!(Field::Quarter.of(t, &utc()), Some(3));
        assert_eq!(Field::Decade.of(t, &utc()), Some(201));
        assert_eq!(Field::Century.of(t, &utc()), Some(21));
        assert_eq!(Field::Millennium.of(t, &utc()), Some(3));
        assert_eq!(
            Field::Hour.of(i64::MIN, &parse_zone("+05:00").unwrap()),
            None
        );
    }

    #[test]
    fn differences_count_whole_units() {
        let at = |t: &str| parse_instant(t).unwrap();
        let minute = sql_unit("MINUTE").unwrap();
        // Druid's TIMESTAMPDIFF example: 54 minutes and 29 seconds is 54 minutes.
        let (a, b) = (at("2013-08-01T08:14:37Z"), at("2013-08-01T09:09:06Z"));
        assert_eq!(difference(&minute, a, b), Some(54));
        assert_eq!(difference(&minute, b, a), Some(-54));
        let month = sql_unit("MONTH").unwrap();
        let (jan31, feb29) = (at("2024-01-31T00:00:00Z"), at("2024-02-29T00:00:00Z"));
        assert_eq!(difference(&month, jan31, feb29), Some(1));
        assert_eq!(
            difference(&month, at("2024-01-31T12:00:00Z"), feb29),
            Some(0)
        );
        assert_eq!(
            difference(&month, at("2024-01-30T00:00:00Z"), feb29),
            Some(1)
        );
        assert_eq!(
            difference(&month, at("2024-01-29T00:00:01Z"), feb29),
            Some(0)
        );
        assert_eq!(
            difference(&month, at("2024-03-31T00:00:00Z"), jan31),
            Some(-2)
        );
        assert_eq!(
            difference(&month, jan31, at("2024-03-31T00:00:00Z")),
            Some(2)
        );
        assert_eq!(
            difference(&sql_unit("YEAR").unwrap(), feb29, jan31),
            Some(0)
        );
        assert_eq!(
            difference(
                &sql_unit("QUARTER").unwrap(),
                jan31,
                at("2025-02-01T00:00:00Z")
            ),
            Some(4)
        );
    }

    #[test]
    fn texts_parse_by_pattern_or_as_iso_and_sql_times() {
        let utc = utc();
        let at = |t: &str| parse_instant(t).unwrap();
        assert_eq!(
            parse_time("2000-01-02T03:04:05Z", None, &utc),
            Some(at("2000-01-02T03:04:05Z"))
        );
        assert_eq!(
            parse_time("2000-01-02 03:04:05", None, &utc),
            Some(at("2000-01-02T03:04:05Z"))
        );
        assert_eq!(
            parse_time("2000-01-02", None, &utc),
            Some(at("2000-01-02T00:00:00Z"))
        );
        assert_eq!(
            parse_time("2000-01-02T03:04:05.250+01:00", None, &utc),
            Some(at("2000-01-02T02:04:05.250Z"))
        );
        // Druid's TIME_PARSE example: a date at -05:00.
        let items = joda::items("YYYY-MM-dd").unwrap();
        let minus5 = parse_zone("-05:00").unwrap();
        assert_eq!(
            parse_time("2005-11-01", Some(&items), &minus5),
            Some(at("2005-11-01T05:00:00Z"))
        );
        // An offset in the text wins over the zone.
        let la = parse_zone("America/Los_Angeles").unwrap();
        assert_eq!(
            parse_time("2000-02-01 00:00:00", None, &la),
            Some(at("2000-02-01T08:00:00Z"))
        );
        let items = joda::items("dd/MM/yyyy HH:mm").unwrap();
        assert_eq!(
            parse_time("31/12/2023 23:59", Some(&items), &utc),
            Some(at("2023-12-31T23:59:00Z"))
        );
        assert_eq!(parse_time("not a time", None, &utc), None);
        assert_eq!(parse_time("2023-02-30", None, &utc), None);
        assert_eq!(parse_time("31/12/2023", Some(&items), &utc), None);
    }
}
