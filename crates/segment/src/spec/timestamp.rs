//! `dataSchema.timestampSpec`: which input column holds each row's time, how its values
//! are read, and the time a row gets when the column is missing.

use serde::Deserialize;
use serde_json::Value;

use super::json::{
    JsonPath, describe, invalid_at, lookup_by, non_empty, parse_object_or_default, prefix_error,
};
use crate::error::Result;
use crate::id::parse_instant;

#[derive(Debug, Clone, PartialEq)]
pub struct TimestampSpec {
    /// Input column holding the time; Druid's default is "timestamp".
    pub column: String,
    pub format: TimestampFormat,
    /// missingValue, as UTC millis: used when the column is absent or null in a row.
    pub missing_value: Option<i64>,
}

/// How the timestamp column's values are read (`timestampSpec.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampFormat {
    /// ISO-8601 text.
    Iso,
    /// Milliseconds since the epoch.
    Millis,
    /// Seconds since the epoch.
    Posix,
    /// Numbers as millis, text as ISO-8601 (Druid's default).
    Auto,
}

const DEFAULT_TIMESTAMP_COLUMN: &str = "timestamp";

const TIMESTAMP_FORMATS: [(&str, TimestampFormat); 4] = [
    ("iso", TimestampFormat::Iso),
    ("millis", TimestampFormat::Millis),
    ("posix", TimestampFormat::Posix),
    ("auto", TimestampFormat::Auto),
];

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawTimestampSpec {
    column: Option<String>,
    format: Option<String>,
    missing_value: Option<Value>,
}

pub(super) fn parse_timestamp_spec(value: Option<Value>, path: &JsonPath) -> Result<TimestampSpec> {
    let raw: RawTimestampSpec = parse_object_or_default(value, path)?;
    let column = raw
        .column
        .unwrap_or_else(|| DEFAULT_TIMESTAMP_COLUMN.to_string());
    let column = non_empty(column, &path.field("column"))?;
    let format = match raw.format {
        Some(format) => lookup_by(
            &TIMESTAMP_FORMATS,
            &format,
            "timestamp format",
            &path.field("format"),
            |known| known.eq_ignore_ascii_case(&format),
        )?,
        None => TimestampFormat::Auto,
    };
    let missing_value = raw
        .missing_value
        .map(|value| parse_missing_value(value, &path.field("missingValue")))
        .transpose()?;
    Ok(TimestampSpec {
        column,
        format,
        missing_value,
    })
}

/// `missingValue` is an ISO-8601 time in Druid; epoch millis are accepted too since
/// that is what Grove stores.
fn parse_missing_value(value: Value, path: &JsonPath) -> Result<i64> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| invalid_at(path, format!("{n} is not a whole number of milliseconds"))),
        Value::String(text) => parse_instant(&text).map_err(|e| prefix_error(path, e)),
        other => Err(invalid_at(
            path,
            format!(
                "expected an ISO-8601 time or epoch milliseconds, found {}",
                describe(&other)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::spec::fixture::{assert_contains, error_of, parse_edited, set};

    #[test]
    fn parses_timestamp_formats_and_missing_values() {
        let cases = [
            (
                "ISO",
                json!("2024-01-01"),
                TimestampFormat::Iso,
                1_704_067_200_000,
            ),
            ("Millis", json!(1_000), TimestampFormat::Millis, 1_000),
            (
                "posix",
                json!("1970-01-01T00:00:02Z"),
                TimestampFormat::Posix,
                2_000,
            ),
            ("auto", json!(-5), TimestampFormat::Auto, -5),
        ];
        for (format, missing, expected_format, expected_missing) in cases {
            let spec = parse_edited(|s| {
                let timestamp = json!({"column": "ts", "format": format, "missingValue": missing});
                set(s, "/spec/dataSchema/timestampSpec", timestamp);
            })
            .unwrap();
            assert_eq!(
                spec.timestamp,
                TimestampSpec {
                    column: "ts".into(),
                    format: expected_format,
                    missing_value: Some(expected_missing),
                }
            );
        }
    }

    #[test]
    fn rejects_unknown_timestamp_format() {
        let message = error_of(|s| {
            set(
                s,
                "/spec/dataSchema/timestampSpec",
                json!({"format": "yyyy-MM-dd"}),
            );
        });
        assert_contains(
            &message,
            "spec.dataSchema.timestampSpec.format: unknown timestamp format \"yyyy-MM-dd\"",
        );
    }
}
