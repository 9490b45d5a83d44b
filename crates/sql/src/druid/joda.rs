//! Joda-Time's date-time patterns (`yyyy-MM-dd'T'HH:mm:ss.SSSZZ`), which Druid's
//! `TIME_FORMAT` and `TIME_PARSE` take, translated to chrono's format items.
//!
//! A pattern is letters, each repeated to choose a width or a form, literal text in
//! single quotes (`''` is a quote) and any other character as itself. The letters
//! Grove knows are those of dates and times in common use: era-less years (`y`, `Y`,
//! `u`), week years (`x`), months (`M`), days of the month, year and week (`d`, `D`,
//! `e`, `E`), ISO weeks (`w`), half days (`a`), hours (`H`, `k`, `h`, `K`), minutes,
//! seconds, fractions (`S`) and zones (`Z`, `z`). Any other letter is an error that
//! names it, never text printed as it is.

use chrono::format::{Fixed, Item, Numeric, Pad};

/// The items of `pattern`.
pub fn items(pattern: &str) -> Result<Vec<Item<'static>>, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            let (text, next) = quoted(&chars, i + 1)
                .ok_or_else(|| format!("pattern {pattern:?} has an unclosed quote"))?;
            out.push(Item::OwnedLiteral(text.into()));
            i = next;
            continue;
        }
        let run = chars[i..].iter().take_while(|&&d| d == c).count();
        i += run;
        if !c.is_ascii_alphabetic() {
            out.push(Item::OwnedLiteral(c.to_string().repeat(run).into()));
            continue;
        }
        out.push(letter(c, run).ok_or_else(|| {
            format!("pattern {pattern:?}: the letter {c:?} is not a date or time field")
        })?);
    }
    Ok(out)
}

/// The text quoted from `start` to its closing quote, and where the pattern goes on.
fn quoted(chars: &[char], start: usize) -> Option<(String, usize)> {
    let mut text = String::new();
    let mut i = start;
    if chars.get(i) == Some(&'\'') {
        // `''` outside quotes is one quote.
        return Some(("'".into(), i + 1));
    }
    while i < chars.len() {
        match (chars[i], chars.get(i + 1)) {
            ('\'', Some('\'')) => {
                text.push('\'');
                i += 2;
            }
            ('\'', _) => return Some((text, i + 1)),
            (c, _) => {
                text.push(c);
                i += 1;
            }
        }
    }
    None
}

/// The item of a letter repeated `run` times.
fn letter(c: char, run: usize) -> Option<Item<'static>> {
    let number = |numeric: Numeric, width: usize| {
        Item::Numeric(numeric, if run >= width { Pad::Zero } else { Pad::None })
    };
    Some(match c {
        'y' | 'Y' | 'u' if run == 2 => Item::Numeric(Numeric::YearMod100, Pad::Zero),
        'y' | 'Y' | 'u' => Item::Numeric(Numeric::Year, Pad::Zero),
        'x' if run == 2 => Item::Numeric(Numeric::IsoYearMod100, Pad::Zero),
        'x' => Item::Numeric(Numeric::IsoYear, Pad::Zero),
        'M' if run >= 4 => Item::Fixed(Fixed::LongMonthName),
        'M' if run == 3 => Item::Fixed(Fixed::ShortMonthName),
        'M' => number(Numeric::Month, 2),
        'd' => number(Numeric::Day, 2),
        'D' => number(Numeric::Ordinal, 3),
        'w' => number(Numeric::IsoWeek, 2),
        'e' => Item::Numeric(Numeric::WeekdayFromMon, Pad::None),
        'E' if run >= 4 => Item::Fixed(Fixed::LongWeekdayName),
        'E' => Item::Fixed(Fixed::ShortWeekdayName),
        'a' => Item::Fixed(Fixed::UpperAmPm),
        'H' | 'k' => number(Numeric::Hour, 2),
        'h' | 'K' => number(Numeric::Hour12, 2),
        'm' => number(Numeric::Minute, 2),
        's' => number(Numeric::Second, 2),
        // A fraction's digits without a dot: chrono's `%3f` (the item is internal to
        // chrono, so it comes from its strftime parser).
        'S' => chrono::format::StrftimeItems::new(match run {
            1..=3 => "%3f",
            4..=6 => "%6f",
            _ => "%9f",
        })
        .next()?,
        'Z' if run == 1 => Item::Fixed(Fixed::TimezoneOffset),
        'Z' => Item::Fixed(Fixed::TimezoneOffsetColon),
        'z' => Item::Fixed(Fixed::TimezoneName),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, FixedOffset, TimeZone};

    use super::*;

    fn format(pattern: &str, t: DateTime<FixedOffset>) -> String {
        t.format_with_items(items(pattern).unwrap().iter())
            .to_string()
    }

    #[test]
    fn patterns_format_as_joda_does() {
        let minus5 = FixedOffset::west_opt(5 * 3600).unwrap();
        // 2013-08-01T08:14:37Z, at -05:00 (Druid's TIME_FORMAT example).
        let t = minus5.timestamp_millis_opt(1_375_344_877_000).unwrap();
        assert_eq!(
            format("dd-MM-YYYY hh:mm aa zzz", t),
            "01-08-2013 03:14 AM -05:00"
        );
        assert_eq!(
            format("yyyy-MM-dd'T'HH:mm:ss.SSSZZ", t),
            "2013-08-01T03:14:37.000-05:00"
        );
        assert_eq!(format("EEE, d MMM yy", t), "Thu, 1 Aug 13");
        assert_eq!(
            format("EEEE MMMM D 'o''clock' ''", t),
            "Thursday August 213 o'clock '"
        );
        assert_eq!(format("HHmmZ", t), "0314-0500");
    }

    #[test]
    fn unknown_letters_and_open_quotes_are_errors() {
        assert!(items("yyyy-MM-dd G").unwrap_err().contains("'G'"));
        assert!(items("yyyy 'at").unwrap_err().contains("unclosed"));
    }
}
