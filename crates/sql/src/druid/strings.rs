//! Druid's string functions DataFusion has no equivalent of:
//!
//! - `STRING_FORMAT(pattern, args...)`: Java's `String.format` for the conversions
//!   queries use: `%s`, `%S`, `%d`, `%x`, `%X`, `%o`, `%f`, `%e`, `%b`, `%c`, `%%` and
//!   `%n`, with the `-` and `0` flags, a width and a precision;
//! - `PARSE_LONG(text[, radix])`: a BIGINT, NULL when the text is not a number in the
//!   radix (2 to 36, 10 by default; in 16 it may start with `0x`).

use std::fmt::Write;
use std::sync::Arc;

use super::scalar_or_array;
use datafusion::arrow::array::{ArrayRef, AsArray, Int64Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// The functions of this module.
pub fn functions() -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::new_from_impl(StringFormat {
            signature: Signature::variadic_any(Volatility::Immutable),
        }),
        ScalarUDF::new_from_impl(ParseLong {
            signature: Signature::user_defined(Volatility::Immutable),
        }),
    ]
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct StringFormat {
    signature: Signature,
}

impl ScalarUDFImpl for StringFormat {
    fn name(&self) -> &str {
        "string_format"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let Some(ColumnarValue::Scalar(pattern)) = args.args.first() else {
            return plan_err!("STRING_FORMAT's pattern must be a literal");
        };
        let ScalarValue::Utf8(Some(pattern)) = pattern.cast_to(&DataType::Utf8)? else {
            return Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None)));
        };
        let pattern = parse_pattern(&pattern)?;
        let values: Vec<ArrayRef> = args.args[1..]
            .iter()
            .map(|a| a.to_array(rows))
            .collect::<Result<_>>()?;
        let mut out = Vec::with_capacity(rows);
        for row in 0..rows {
            let row_values = values
                .iter()
                .map(|v| ScalarValue::try_from_array(v, row))
                .collect::<Result<Vec<_>>>()?;
            out.push(Some(format_row(&pattern, &row_values)?));
        }
        let answer: ArrayRef = Arc::new(StringArray::from(out));
        scalar_or_array(&args.args, answer)
    }
}

/// A piece of a format pattern.
#[derive(Debug, PartialEq)]
enum Piece {
    Text(String),
    Spec {
        left: bool,
        zero: bool,
        width: usize,
        precision: Option<usize>,
        conversion: char,
    },
}

fn parse_pattern(pattern: &str) -> Result<Vec<Piece>> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            text.push(c);
            continue;
        }
        let (mut left, mut zero) = (false, false);
        while let Some(&flag @ ('-' | '0')) = chars.peek() {
            left |= flag == '-';
            zero |= flag == '0';
            chars.next();
        }
        let width = digits(&mut chars, pattern)?.unwrap_or(0);
        let mut precision = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            precision = Some(digits(&mut chars, pattern)?.unwrap_or(0));
        }
        let Some(conversion) = chars.next() else {
            return plan_err!("STRING_FORMAT's pattern {pattern:?} ends inside a %");
        };
        match conversion {
            '%' => text.push('%'),
            'n' => text.push('\n'),
            's' | 'S' | 'd' | 'x' | 'X' | 'o' | 'f' | 'e' | 'b' | 'c' => {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
                pieces.push(Piece::Spec {
                    left,
                    zero,
                    width,
                    precision,
                    conversion,
                });
            }
            other => {
                return plan_err!(
                    "STRING_FORMAT does not know the conversion %{other} in {pattern:?}"
                );
            }
        }
    }
    pieces.push(Piece::Text(text));
    Ok(pieces)
}

/// The widest field and the longest precision a pattern may ask for: a query cannot
/// make the server write gigabytes for one value.
const MAX_WIDTH: usize = 10_000;

/// A width or precision: the digits at the front of `chars`, if any.
fn digits(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    pattern: &str,
) -> Result<Option<usize>> {
    let mut text = String::new();
    while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
        text.push(d);
        chars.next();
    }
    if text.is_empty() {
        return Ok(None);
    }
    match text.parse::<usize>() {
        Ok(n) if n <= MAX_WIDTH => Ok(Some(n)),
        _ => plan_err!(
            "STRING_FORMAT's pattern {pattern:?} asks for {text} characters; at most \
             {MAX_WIDTH} are allowed"
        ),
    }
}

/// One row's text: each `%` conversion takes the next value, as Java's does.
fn format_row(pattern: &[Piece], values: &[ScalarValue]) -> Result<String> {
    let mut out = String::new();
    let mut next = values.iter();
    for piece in pattern {
        let Piece::Spec {
            left,
            zero,
            width,
            precision,
            conversion,
        } = piece
        else {
            if let Piece::Text(text) = piece {
                out.push_str(text);
            }
            continue;
        };
        let Some(value) = next.next() else {
            return exec_err!("STRING_FORMAT has more conversions than values");
        };
        let text = convert(*conversion, *precision, value)?;
        let pad = width.saturating_sub(text.chars().count());
        if *left {
            out.push_str(&text);
            out.extend(std::iter::repeat_n(' ', pad));
        } else if *zero && !matches!(conversion, 's' | 'S' | 'b' | 'c') {
            let (sign, digits) = text.split_at(usize::from(text.starts_with('-')));
            out.push_str(sign);
            out.extend(std::iter::repeat_n('0', pad));
            out.push_str(digits);
        } else {
            out.extend(std::iter::repeat_n(' ', pad));
            out.push_str(&text);
        }
    }
    Ok(out)
}

/// One value by one conversion; a NULL is `null`, as Java prints it.
fn convert(conversion: char, precision: Option<usize>, value: &ScalarValue) -> Result<String> {
    if value.is_null() {
        return Ok(if conversion == 'b' { "false" } else { "null" }.into());
    }
    let long = || -> Result<i64> {
        match value.cast_to(&DataType::Int64)? {
            ScalarValue::Int64(Some(n)) => Ok(n),
            _ => exec_err!("STRING_FORMAT's %{conversion} takes a whole number, not {value}"),
        }
    };
    let double = || -> Result<f64> {
        match value.cast_to(&DataType::Float64)? {
            ScalarValue::Float64(Some(x)) => Ok(x),
            _ => exec_err!("STRING_FORMAT's %{conversion} takes a number, not {value}"),
        }
    };
    let mut text = String::new();
    match conversion {
        's' | 'S' => {
            let mut s = match value {
                ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) => s.clone(),
                ScalarValue::Utf8View(Some(s)) => s.clone(),
                other => other.to_string(),
            };
            if let Some(p) = precision {
                s = s.chars().take(p).collect();
            }
            text = if conversion == 'S' {
                s.to_uppercase()
            } else {
                s
            };
        }
        'd' => write!(text, "{}", long()?).unwrap_or_default(),
        'x' => write!(text, "{:x}", long()?).unwrap_or_default(),
        'X' => write!(text, "{:X}", long()?).unwrap_or_default(),
        'o' => write!(text, "{:o}", long()?).unwrap_or_default(),
        'f' | 'e' if !double()?.is_finite() => {
            let x = double()?;
            text = if x.is_nan() {
                "NaN".into()
            } else if x > 0.0 {
                "Infinity".into()
            } else {
                "-Infinity".into()
            };
        }
        'f' => write!(text, "{:.*}", precision.unwrap_or(6), double()?).unwrap_or_default(),
        'e' => {
            // Java writes the exponent with a sign and at least two digits: 1.5e+03.
            let formatted = format!("{:.*e}", precision.unwrap_or(6), double()?);
            let (mantissa, exponent) = formatted.split_once('e').unwrap_or((&formatted, "0"));
            let (sign, digits) = match exponent.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exponent),
            };
            write!(text, "{mantissa}e{sign}{digits:0>2}").unwrap_or_default();
        }
        'b' => {
            text = match value {
                ScalarValue::Boolean(Some(b)) => b.to_string(),
                _ => "true".into(),
            }
        }
        'c' => {
            let code = u32::try_from(long()?).ok().and_then(char::from_u32);
            match code {
                Some(c) => text.push(c),
                None => return exec_err!("STRING_FORMAT's %c takes a character code, not {value}"),
            }
        }
        _ => unreachable!("parse_pattern admits only the conversions above"),
    }
    Ok(text)
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ParseLong {
    signature: Signature,
}

impl ScalarUDFImpl for ParseLong {
    fn name(&self) -> &str {
        "parse_long"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types.len() {
            1 => Ok(vec![DataType::Utf8]),
            2 => Ok(vec![DataType::Utf8, DataType::Int64]),
            n => plan_err!("PARSE_LONG takes a string and optionally a radix, not {n} arguments"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let texts = cast(&args.args[0].to_array(rows)?, &DataType::Utf8)?;
        let radixes: ArrayRef = match args.args.get(1) {
            Some(radix) => radix.to_array(rows)?,
            None => Arc::new(Int64Array::from_value(10, rows)),
        };
        let radixes = radixes.as_primitive::<Int64Type>();
        let parsed: Int64Array = texts
            .as_string::<i32>()
            .iter()
            .zip(radixes.iter())
            .map(|(text, radix)| {
                let radix = u32::try_from(radix?)
                    .ok()
                    .filter(|r| (2..=36).contains(r))?;
                let text = text?.trim();
                // Hexadecimal may start with 0x, as Druid's.
                let digits = match radix {
                    16 => text
                        .strip_prefix("0x")
                        .or_else(|| text.strip_prefix("0X"))
                        .unwrap_or(text),
                    _ => text,
                };
                i64::from_str_radix(digits, radix).ok()
            })
            .collect();
        let answer: ArrayRef = Arc::new(parsed);
        scalar_or_array(&args.args, answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(pattern: &str, values: &[ScalarValue]) -> String {
        format_row(&parse_pattern(pattern).unwrap(), values).unwrap()
    }

    #[test]
    fn patterns_format_as_javas_string_format() {
        // Druid's STRING_FORMAT example.
        let values = [ScalarValue::Int64(Some(314)), ScalarValue::from("SJU")];
        assert_eq!(
            format("Flight No.%d departing from %s", &values),
            "Flight No.314 departing from SJU"
        );
        assert_eq!(
            format("%5d|%-5d|%05d", &[314.into(), 314.into(), (-42).into()]),
            "  314|314  |-0042"
        );
        assert_eq!(
            format("%.2f %e", &[12.3456_f64.into(), 1500.0_f64.into()]),
            "12.35 1.500000e+03"
        );
        assert_eq!(
            format("%x %X %o %%%n", &[255.into(), 255.into(), 8.into()]),
            "ff FF 10 %\n"
        );
        assert_eq!(
            format(
                "%s %S %.3s",
                &[ScalarValue::Utf8(None), "ab".into(), "abcdef".into()]
            ),
            "null AB abc"
        );
        assert!(parse_pattern("100%").is_err());
        assert!(parse_pattern("%q").is_err());
        assert!(parse_pattern("%2000000000d").is_err());
        assert!(parse_pattern("%.99999999999999999999f").is_err());
        assert_eq!(
            format("%f %e", &[f64::NAN.into(), f64::NEG_INFINITY.into()]),
            "NaN -Infinity"
        );
        assert!(format_row(&parse_pattern("%s %s").unwrap(), &["a".into()]).is_err());
    }
}
