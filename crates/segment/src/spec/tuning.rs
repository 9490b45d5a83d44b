//! `tuningConfig`: how large segments grow (`partitionsSpec`) and how many unparseable
//! rows an ingestion tolerates.

use serde::Deserialize;
use serde_json::Value;

use super::check_section_type;
use super::json::{
    JsonPath, from_map, invalid_at, parse_object_or_default, required, typed_object,
};
use crate::error::Result;

const DEFAULT_MAX_ROWS_PER_SEGMENT: usize = 5_000_000;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawTuningConfig {
    #[serde(rename = "type")]
    kind: Option<String>,
    partitions_spec: Option<Value>,
    max_parse_exceptions: Option<u64>,
    await_segment_availability_timeout_millis: Option<u64>,
    max_num_concurrent_sub_tasks: Option<usize>,
    /// Grove sizes its in-memory buffers itself; the Druid knob is accepted and ignored.
    #[serde(rename = "maxRowsInMemory")]
    _max_rows_in_memory: Option<u64>,
    /// Druid's older place for the dynamic partitioning's limit, which its tutorials
    /// still write: the same as `partitionsSpec.maxRowsPerSegment`.
    max_rows_per_segment: Option<usize>,
    /// Ignored, as in `partitionsSpec` (see [`RawDynamicPartitions`]).
    #[serde(rename = "maxTotalRows")]
    _max_total_rows: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawDynamicPartitions {
    max_rows_per_segment: Option<usize>,
    /// In Druid this bounds rows held across all segments before a push; Grove writes each
    /// segment as soon as it is full, so the limit has nothing to bound and is ignored.
    #[serde(rename = "maxTotalRows")]
    _max_total_rows: Option<u64>,
}

/// The parsed `tuningConfig`, with defaults filled in.
pub(super) struct TuningConfig {
    pub(super) max_rows_per_segment: usize,
    pub(super) max_parse_exceptions: u64,
    pub(super) await_segment_availability_timeout_millis: u64,
    pub(super) max_num_concurrent_sub_tasks: usize,
}

pub(super) fn parse_tuning_config(
    value: Option<Value>,
    path: &JsonPath,
    task_type: &str,
) -> Result<TuningConfig> {
    let raw: RawTuningConfig = parse_object_or_default(value, path)?;
    check_section_type(raw.kind.as_deref(), task_type, &path.field("type"))?;
    let max_rows_per_segment = match (raw.max_rows_per_segment, raw.partitions_spec) {
        (Some(_), Some(_)) => {
            return Err(invalid_at(
                &path.field("maxRowsPerSegment"),
                "give it in partitionsSpec or here, not both",
            ));
        }
        (Some(0), None) => {
            return Err(invalid_at(
                &path.field("maxRowsPerSegment"),
                "must be greater than 0",
            ));
        }
        (Some(rows), None) => rows,
        (None, spec) => parse_partitions_spec(spec, &path.field("partitionsSpec"))?,
    };
    Ok(TuningConfig {
        max_rows_per_segment,
        max_parse_exceptions: raw.max_parse_exceptions.unwrap_or(0),
        await_segment_availability_timeout_millis: raw
            .await_segment_availability_timeout_millis
            .unwrap_or(0),
        max_num_concurrent_sub_tasks: match raw.max_num_concurrent_sub_tasks {
            None => 1,
            Some(0) => {
                return Err(invalid_at(
                    &path.field("maxNumConcurrentSubTasks"),
                    "must be at least 1",
                ));
            }
            Some(n) => n,
        },
    })
}

/// Only `dynamic` partitioning exists in Grove; returns its `maxRowsPerSegment`.
fn parse_partitions_spec(value: Option<Value>, path: &JsonPath) -> Result<usize> {
    let Some(value) = value else {
        return Ok(DEFAULT_MAX_ROWS_PER_SEGMENT);
    };
    let (kind, map) = typed_object(value, path)?;
    let type_path = path.field("type");
    let kind = required(kind, &type_path)?;
    if kind != "dynamic" {
        return Err(invalid_at(
            &type_path,
            format!("unsupported partitionsSpec type {kind:?}: only \"dynamic\" is supported"),
        ));
    }
    let raw: RawDynamicPartitions = from_map(map, path)?;
    match raw.max_rows_per_segment {
        None => Ok(DEFAULT_MAX_ROWS_PER_SEGMENT),
        Some(0) => Err(invalid_at(
            &path.field("maxRowsPerSegment"),
            "must be greater than 0",
        )),
        Some(rows) => Ok(rows),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::spec::fixture::{assert_contains, error_of, parse_edited, set};

    #[test]
    fn druids_tutorial_tuning_config_is_taken_as_written() {
        // Druid's batch tutorial (quickstart/tutorial/wikipedia-index.json).
        let tuning = json!({
            "type": "index_parallel",
            "maxRowsPerSegment": 5000000,
            "maxRowsInMemory": 25000,
            "maxTotalRows": 20000000,
        });
        let spec = parse_edited(|s| set(s, "/spec/tuningConfig", tuning.clone())).unwrap();
        assert_eq!(spec.max_rows_per_segment, 5_000_000);
        let message = error_of(|s| {
            let both = json!({
                "maxRowsPerSegment": 10,
                "partitionsSpec": {"type": "dynamic", "maxRowsPerSegment": 10},
            });
            set(s, "/spec/tuningConfig", both);
        });
        assert_contains(
            &message,
            "spec.tuningConfig.maxRowsPerSegment: give it in partitionsSpec or here",
        );
    }

    #[test]
    fn io_and_tuning_config_rules() {
        let message = error_of(|s| set(s, "/spec/ioConfig/type", json!("index")));
        assert_contains(
            &message,
            "spec.ioConfig.type: \"index\" does not match the task type",
        );
        let message = error_of(|s| set(s, "/spec/ioConfig/dropExisting", json!(true)));
        assert_contains(&message, "unsupported field \"spec.ioConfig.dropExisting\"");
        let message = error_of(|s| {
            let partitions = json!({"type": "dynamic", "maxRowsPerSegment": 0});
            set(
                s,
                "/spec/tuningConfig",
                json!({"partitionsSpec": partitions}),
            );
        });
        assert_contains(
            &message,
            "spec.tuningConfig.partitionsSpec.maxRowsPerSegment: must be greater than 0",
        );
        let message = error_of(|s| {
            let partitions = json!({"type": "hashed", "numShards": 3});
            set(
                s,
                "/spec/tuningConfig",
                json!({"partitionsSpec": partitions}),
            );
        });
        assert_contains(&message, "unsupported partitionsSpec type \"hashed\"");
        let message = error_of(|s| {
            set(
                s,
                "/spec/tuningConfig",
                json!({"maxParseExceptions": "many"}),
            );
        });
        assert_contains(&message, "spec.tuningConfig: invalid type: string \"many\"");
    }
}
