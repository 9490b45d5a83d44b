//! `dataSchema.granularitySpec`: how time is cut into segments and rollup buckets, and
//! which intervals are ingested.

use serde::Deserialize;
use serde_json::Value;

use super::json::{JsonPath, invalid_at, parse_object_or_default, prefix_error};
use crate::error::Result;
use crate::granularity::Granularity;
use crate::id::Interval;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawGranularitySpec {
    #[serde(rename = "type")]
    kind: Option<String>,
    segment_granularity: Option<Granularity>,
    query_granularity: Option<Granularity>,
    rollup: Option<bool>,
    intervals: Option<Vec<String>>,
}

/// The parsed `granularitySpec`, with Druid's defaults filled in.
pub(super) struct GranularityConfig {
    pub(super) segment: Granularity,
    pub(super) query: Granularity,
    pub(super) rollup: bool,
    pub(super) intervals: Option<Vec<Interval>>,
}

pub(super) fn parse_granularity_spec(
    value: Option<Value>,
    path: &JsonPath,
) -> Result<GranularityConfig> {
    let raw: RawGranularitySpec = parse_object_or_default(value, path)?;
    if let Some(kind) = raw.kind.filter(|kind| kind != "uniform") {
        return Err(invalid_at(
            &path.field("type"),
            format!("unsupported granularitySpec type {kind:?}: only \"uniform\" is supported"),
        ));
    }
    let intervals_path = path.field("intervals");
    let intervals = raw
        .intervals
        .filter(|intervals| !intervals.is_empty())
        .map(|intervals| {
            intervals
                .iter()
                .enumerate()
                .map(|(i, text)| {
                    Interval::parse(text).map_err(|e| prefix_error(intervals_path.index(i), e))
                })
                .collect::<Result<Vec<_>>>()
        })
        .transpose()?;
    Ok(GranularityConfig {
        segment: raw.segment_granularity.unwrap_or(Granularity::Day),
        query: raw.query_granularity.unwrap_or(Granularity::None),
        rollup: raw.rollup.unwrap_or(true),
        intervals,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::spec::fixture::{assert_contains, error_of, parse_edited, set};

    #[test]
    fn empty_intervals_mean_no_intervals() {
        let spec = parse_edited(|s| {
            set(
                s,
                "/spec/dataSchema/granularitySpec",
                json!({"intervals": []}),
            );
        })
        .unwrap();
        assert_eq!(spec.intervals, None);
    }

    #[test]
    fn rejects_unknown_granularity_spec_field() {
        let message = error_of(|s| {
            set(
                s,
                "/spec/dataSchema/granularitySpec",
                json!({"rollup": false, "foo": 1}),
            );
        });
        assert_contains(
            &message,
            "unsupported field \"spec.dataSchema.granularitySpec.foo\"",
        );
        assert_contains(&message, "segmentGranularity");
        let message = error_of(|s| {
            set(
                s,
                "/spec/dataSchema/granularitySpec",
                json!({"segmentGranularity": "fortnight"}),
            );
        });
        assert_contains(
            &message,
            "spec.dataSchema.granularitySpec: unknown granularity \"fortnight\"",
        );
        let message = error_of(|s| {
            set(
                s,
                "/spec/dataSchema/granularitySpec",
                json!({"intervals": ["2024-01-01"]}),
            );
        });
        assert_contains(
            &message,
            "spec.dataSchema.granularitySpec.intervals[0]: interval",
        );
    }
}
