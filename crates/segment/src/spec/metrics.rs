//! `dataSchema.metricsSpec`: the columns aggregated when rows are rolled up, each with
//! its aggregator and input field.

use serde::Deserialize;
use serde_json::Value;

use super::json::{
    JsonPath, from_map, lookup, required, required_name, typed_object, unsupported_field,
};
use crate::error::Result;

/// One entry of `metricsSpec`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSpec {
    /// Output column name.
    pub name: String,
    pub aggregator: Aggregator,
    /// Input field (`fieldName`); None only for `count`.
    pub field: Option<String>,
}

/// A metric's aggregator `type`, named after Druid's (`longSum`, `doubleMax`, ..).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregator {
    Count,
    LongSum,
    DoubleSum,
    FloatSum,
    LongMin,
    LongMax,
    DoubleMin,
    DoubleMax,
    FloatMin,
    FloatMax,
}

impl Aggregator {
    /// The aggregator that combines values this one stored: rows rolled up again, as
    /// when the persisted pieces of a streaming segment are merged. A count's stored
    /// values are summed.
    pub fn combining(self) -> Aggregator {
        match self {
            Aggregator::Count => Aggregator::LongSum,
            other => other,
        }
    }
}

const AGGREGATORS: [(&str, Aggregator); 10] = [
    ("count", Aggregator::Count),
    ("longSum", Aggregator::LongSum),
    ("doubleSum", Aggregator::DoubleSum),
    ("floatSum", Aggregator::FloatSum),
    ("longMin", Aggregator::LongMin),
    ("longMax", Aggregator::LongMax),
    ("doubleMin", Aggregator::DoubleMin),
    ("doubleMax", Aggregator::DoubleMax),
    ("floatMin", Aggregator::FloatMin),
    ("floatMax", Aggregator::FloatMax),
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawMetric {
    name: Option<String>,
    field_name: Option<String>,
}

pub(super) fn parse_metric(value: Value, path: &JsonPath) -> Result<MetricSpec> {
    let (kind, map) = typed_object(value, path)?;
    let type_path = path.field("type");
    let kind = required(kind, &type_path)?;
    let aggregator = lookup(&AGGREGATORS, &kind, "aggregator", &type_path)?;
    let raw: RawMetric = from_map(map, path)?;
    let name = required_name(raw.name, &path.field("name"))?;
    let field_path = path.field("fieldName");
    let field = match (aggregator, raw.field_name) {
        (Aggregator::Count, None) => None,
        (Aggregator::Count, Some(_)) => {
            return Err(unsupported_field(
                &field_path,
                "a count aggregator counts rows and reads no field",
            ));
        }
        (_, field) => Some(required_name(field, &field_path)?),
    };
    Ok(MetricSpec {
        name,
        aggregator,
        field,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::spec::fixture::{assert_contains, error_of, parse_edited, set};

    #[test]
    fn parses_every_aggregator() {
        let names = [
            ("longSum", Aggregator::LongSum),
            ("doubleSum", Aggregator::DoubleSum),
            ("floatSum", Aggregator::FloatSum),
            ("longMin", Aggregator::LongMin),
            ("longMax", Aggregator::LongMax),
            ("doubleMin", Aggregator::DoubleMin),
            ("doubleMax", Aggregator::DoubleMax),
            ("floatMin", Aggregator::FloatMin),
            ("floatMax", Aggregator::FloatMax),
        ];
        let mut metrics = vec![json!({"type": "count", "name": "rows"})];
        metrics.extend(
            names.iter().map(
                |(kind, _)| json!({"type": kind, "name": format!("m_{kind}"), "fieldName": "x"}),
            ),
        );
        let spec =
            parse_edited(|s| set(s, "/spec/dataSchema/metricsSpec", json!(metrics))).unwrap();
        let mut expected = vec![MetricSpec {
            name: "rows".into(),
            aggregator: Aggregator::Count,
            field: None,
        }];
        expected.extend(names.iter().map(|&(kind, aggregator)| MetricSpec {
            name: format!("m_{kind}"),
            aggregator,
            field: Some("x".into()),
        }));
        assert_eq!(spec.metrics, expected);
        assert_eq!(spec.input_columns(), ["timestamp", "page", "x"]);
    }

    #[test]
    fn rejects_unknown_metric_field() {
        let message = error_of(|s| {
            let metrics =
                json!([{"type": "longSum", "name": "m", "fieldName": "x", "expression": "x+1"}]);
            set(s, "/spec/dataSchema/metricsSpec", metrics);
        });
        assert_contains(
            &message,
            "unsupported field \"spec.dataSchema.metricsSpec[0].expression\"",
        );
    }

    #[test]
    fn rejects_unknown_aggregator() {
        let message = error_of(|s| {
            let metrics = json!([{
                "type": "hyperUnique", "name": "u", "fieldName": "user", "isInputHyperUnique": false
            }]);
            set(s, "/spec/dataSchema/metricsSpec", metrics);
        });
        assert_contains(
            &message,
            "spec.dataSchema.metricsSpec[0].type: unknown aggregator \"hyperUnique\"",
        );
    }

    #[test]
    fn metric_field_name_rules() {
        let message = error_of(|s| {
            let metrics =
                json!([{"type": "count", "name": "c"}, {"type": "doubleSum", "name": "m"}]);
            set(s, "/spec/dataSchema/metricsSpec", metrics);
        });
        assert_contains(
            &message,
            "missing required field \"spec.dataSchema.metricsSpec[1].fieldName\"",
        );
        let message = error_of(|s| {
            let metrics = json!([{"type": "count", "name": "c", "fieldName": "x"}]);
            set(s, "/spec/dataSchema/metricsSpec", metrics);
        });
        assert_contains(
            &message,
            "unsupported field \"spec.dataSchema.metricsSpec[0].fieldName\"",
        );
    }
}
