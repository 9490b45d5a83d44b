//! `dataSchema.transformSpec`: its `filter`, the subset of Druid's row filters Grove
//! implements. Computed columns (`transforms`) are not supported.

use serde::Deserialize;
use serde_json::Value;

use super::json::{
    JsonPath, describe, from_map, invalid_at, parse_object_or_default, reject_non_empty, required,
    required_name, typed_object,
};
use crate::error::Result;

/// transformSpec.filter: Druid's filter subset.
#[derive(Debug, Clone, PartialEq)]
pub enum RowFilter {
    /// {"type":"selector","dimension":d,"value":v} (value may be null) and
    /// {"type":"equals","column":d,"matchValueType":"STRING"|..,"matchValue":v}
    Selector {
        dimension: String,
        value: Option<String>,
    },
    /// {"type":"in","dimension":d,"values":[..]}
    In {
        dimension: String,
        values: Vec<Option<String>>,
    },
    /// {"type":"null","column":d}
    IsNull {
        dimension: String,
    },
    Not(Box<RowFilter>),
    And(Vec<RowFilter>),
    Or(Vec<RowFilter>),
}

/// Appends the columns `filter` reads, depth first.
pub(super) fn push_filter_columns(filter: &RowFilter, out: &mut Vec<String>) {
    match filter {
        RowFilter::Selector { dimension, .. }
        | RowFilter::In { dimension, .. }
        | RowFilter::IsNull { dimension } => out.push(dimension.clone()),
        RowFilter::Not(inner) => push_filter_columns(inner, out),
        RowFilter::And(filters) | RowFilter::Or(filters) => {
            filters.iter().for_each(|f| push_filter_columns(f, out));
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTransformSpec {
    filter: Option<Value>,
    transforms: Option<Vec<Value>>,
}

pub(super) fn parse_transform_spec(
    value: Option<Value>,
    path: &JsonPath,
) -> Result<Option<RowFilter>> {
    let raw: RawTransformSpec = parse_object_or_default(value, path)?;
    reject_non_empty(
        raw.transforms,
        &path.field("transforms"),
        "transforms (computed columns) are not supported",
    )?;
    raw.filter
        .map(|filter| parse_filter(filter, &path.field("filter")))
        .transpose()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSelectorFilter {
    dimension: Option<String>,
    value: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawEqualsFilter {
    column: Option<String>,
    match_value: Option<Value>,
    /// Grove compares values in their string form, so the declared type changes nothing;
    /// it is still type-checked so a malformed one is reported.
    #[serde(rename = "matchValueType")]
    _match_value_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInFilter {
    dimension: Option<String>,
    values: Option<Vec<Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNullFilter {
    column: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotFilter {
    field: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJunctionFilter {
    fields: Option<Vec<Value>>,
}

fn parse_filter(value: Value, path: &JsonPath) -> Result<RowFilter> {
    let (kind, map) = typed_object(value, path)?;
    let type_path = path.field("type");
    match required(kind, &type_path)?.as_str() {
        "selector" => selector_filter(from_map(map, path)?, path),
        "equals" => equals_filter(from_map(map, path)?, path),
        "in" => in_filter(from_map(map, path)?, path),
        "null" => null_filter(from_map(map, path)?, path),
        "not" => not_filter(from_map(map, path)?, path),
        "and" => Ok(RowFilter::And(filter_list(from_map(map, path)?, path)?)),
        "or" => Ok(RowFilter::Or(filter_list(from_map(map, path)?, path)?)),
        other => Err(invalid_at(
            &type_path,
            format!(
                "unknown filter type {other:?}: expected selector, equals, in, null, not, \
                 and or or"
            ),
        )),
    }
}

fn selector_filter(raw: RawSelectorFilter, path: &JsonPath) -> Result<RowFilter> {
    Ok(RowFilter::Selector {
        dimension: required_name(raw.dimension, &path.field("dimension"))?,
        value: raw
            .value
            .map(|value| scalar_string(value, &path.field("value")))
            .transpose()?
            .flatten(),
    })
}

/// `equals` never matches null in Druid (that is the `null` filter's job), so its
/// `matchValue` is required.
fn equals_filter(raw: RawEqualsFilter, path: &JsonPath) -> Result<RowFilter> {
    let value_path = path.field("matchValue");
    let value = scalar_string(required(raw.match_value, &value_path)?, &value_path)?;
    Ok(RowFilter::Selector {
        dimension: required_name(raw.column, &path.field("column"))?,
        value,
    })
}

fn in_filter(raw: RawInFilter, path: &JsonPath) -> Result<RowFilter> {
    let values_path = path.field("values");
    let values = required(raw.values, &values_path)?
        .into_iter()
        .enumerate()
        .map(|(i, value)| scalar_string(value, &values_path.index(i)))
        .collect::<Result<Vec<_>>>()?;
    Ok(RowFilter::In {
        dimension: required_name(raw.dimension, &path.field("dimension"))?,
        values,
    })
}

fn null_filter(raw: RawNullFilter, path: &JsonPath) -> Result<RowFilter> {
    Ok(RowFilter::IsNull {
        dimension: required_name(raw.column, &path.field("column"))?,
    })
}

fn not_filter(raw: RawNotFilter, path: &JsonPath) -> Result<RowFilter> {
    let field_path = path.field("field");
    let inner = parse_filter(required(raw.field, &field_path)?, &field_path)?;
    Ok(RowFilter::Not(Box::new(inner)))
}

/// The operands of `and`/`or`; Druid rejects an empty list, whose meaning would be
/// ambiguous to a reader of the spec.
fn filter_list(raw: RawJunctionFilter, path: &JsonPath) -> Result<Vec<RowFilter>> {
    let fields_path = path.field("fields");
    let fields = required(raw.fields, &fields_path)?;
    if fields.is_empty() {
        return Err(invalid_at(&fields_path, "must list at least one filter"));
    }
    fields
        .into_iter()
        .enumerate()
        .map(|(i, field)| parse_filter(field, &fields_path.index(i)))
        .collect()
}

/// Filter values are compared as strings; like Druid (through Jackson), Grove takes
/// any JSON scalar, so `42` and `"42"` mean the same.
fn scalar_string(value: Value, path: &JsonPath) -> Result<Option<String>> {
    match value {
        Value::Null => Ok(None),
        Value::String(text) => Ok(Some(text)),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        other => Err(invalid_at(
            path,
            format!(
                "expected a string, number, boolean or null, found {}",
                describe(&other)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::spec::fixture::{assert_contains, error_of, parse_edited, set};

    /// Parses `filter` as the spec's transformSpec.filter.
    fn filter_of(filter: Value) -> Result<Option<RowFilter>> {
        parse_edited(|s| {
            set(
                s,
                "/spec/dataSchema/transformSpec",
                json!({"filter": filter}),
            );
        })
        .map(|spec| spec.filter)
    }

    fn selector(dimension: &str, value: Option<&str>) -> RowFilter {
        RowFilter::Selector {
            dimension: dimension.into(),
            value: value.map(String::from),
        }
    }

    #[test]
    fn parses_selector_and_equals_filters() {
        let cases = [
            (
                json!({"type": "selector", "dimension": "a", "value": "x"}),
                selector("a", Some("x")),
            ),
            (
                json!({"type": "selector", "dimension": "a", "value": null}),
                selector("a", None),
            ),
            (
                json!({"type": "selector", "dimension": "a"}),
                selector("a", None),
            ),
            (
                json!({
                    "type": "equals", "column": "b", "matchValueType": "LONG", "matchValue": 42
                }),
                selector("b", Some("42")),
            ),
            (
                json!({
                    "type": "equals", "column": "b", "matchValueType": "DOUBLE", "matchValue": 1.5
                }),
                selector("b", Some("1.5")),
            ),
            (
                json!({"type": "equals", "column": "b", "matchValue": true}),
                selector("b", Some("true")),
            ),
        ];
        for (filter, expected) in cases {
            assert_eq!(filter_of(filter).unwrap(), Some(expected));
        }
    }

    #[test]
    fn parses_in_and_null_filters() {
        let filter = json!({"type": "in", "dimension": "c", "values": ["x", 7, null]});
        assert_eq!(
            filter_of(filter).unwrap(),
            Some(RowFilter::In {
                dimension: "c".into(),
                values: vec![Some("x".into()), Some("7".into()), None],
            })
        );
        let filter = json!({"type": "null", "column": "d"});
        assert_eq!(
            filter_of(filter).unwrap(),
            Some(RowFilter::IsNull {
                dimension: "d".into()
            })
        );
    }

    #[test]
    fn parses_logical_filters() {
        let filter = json!({
            "type": "and",
            "fields": [
                {"type": "not", "field": {"type": "null", "column": "country"}},
                {"type": "or", "fields": [
                    {"type": "selector", "dimension": "page", "value": "Main"},
                    {"type": "in", "dimension": "user", "values": ["bot"]}
                ]}
            ]
        });
        let expected = RowFilter::And(vec![
            RowFilter::Not(Box::new(RowFilter::IsNull {
                dimension: "country".into(),
            })),
            RowFilter::Or(vec![
                selector("page", Some("Main")),
                RowFilter::In {
                    dimension: "user".into(),
                    values: vec![Some("bot".into())],
                },
            ]),
        ]);
        let spec = parse_edited(|s| {
            set(
                s,
                "/spec/dataSchema/transformSpec",
                json!({"filter": filter}),
            );
        })
        .unwrap();
        assert_eq!(spec.filter, Some(expected));
        assert_eq!(
            spec.input_columns(),
            ["timestamp", "page", "country", "user"]
        );
    }

    #[test]
    fn rejects_bad_filters() {
        let message = filter_of(json!({"type": "regex", "dimension": "a", "pattern": "x"}))
            .unwrap_err()
            .to_string();
        assert_contains(
            &message,
            "spec.dataSchema.transformSpec.filter.type: unknown filter type \"regex\"",
        );
        let message =
            filter_of(json!({"type": "not", "field": {"type": "like", "dimension": "a"}}))
                .unwrap_err()
                .to_string();
        assert_contains(&message, "filter.field.type: unknown filter type \"like\"");
        let message = filter_of(json!({"type": "or", "fields": []}))
            .unwrap_err()
            .to_string();
        assert_contains(&message, "filter.fields: must list at least one filter");
        let message = filter_of(json!({"type": "equals", "column": "a", "matchValue": [1]}))
            .unwrap_err()
            .to_string();
        assert_contains(
            &message,
            "filter.matchValue: expected a string, number, boolean or null",
        );
        let message = filter_of(json!({"type": "selector", "dimension": "a", "extractionFn": {}}))
            .unwrap_err()
            .to_string();
        assert_contains(
            &message,
            "unsupported field \"spec.dataSchema.transformSpec.filter.extractionFn\"",
        );
    }

    #[test]
    fn rejects_unsupported_transforms() {
        let message = error_of(|s| {
            let transforms = json!([{"type": "expression", "name": "y", "expression": "x"}]);
            set(
                s,
                "/spec/dataSchema/transformSpec",
                json!({"transforms": transforms}),
            );
        });
        assert_contains(
            &message,
            "unsupported field \"spec.dataSchema.transformSpec.transforms\"",
        );
    }
}
