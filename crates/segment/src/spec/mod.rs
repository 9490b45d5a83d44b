//! Druid native batch ingestion specs (`index_parallel` / `index` tasks), parsed into a
//! typed, validated [`IngestionSpec`].
//!
//! Druid quietly ignores many properties it does not know. Grove does the opposite:
//! every field it does not implement is an error naming the field's JSON path, so a
//! spec written for a Druid feature Grove lacks fails up front instead of ingesting
//! different data than its author expected. Fields whose Druid default is the only
//! behaviour Grove has are accepted when they hold that default.
//!
//! Parsing goes in two steps. The JSON is first read into a [`Value`]; each section is
//! then deserialized on its own into a private `Raw*` struct with
//! `#[serde(deny_unknown_fields)]`, which lets errors carry the section's path
//! (serde itself only says `unknown field `foo``). Nested sections, arrays of objects
//! and polymorphic objects (those with a `type`) stay [`Value`]s in the raw structs
//! and are converted one by one with their own paths.
//!
//! # Layout
//! Each section of the spec has its own module, which turns the section's [`Value`] into
//! its typed part, naming every error by the section's path:
//! - `timestamp`: `timestampSpec` -> [`TimestampSpec`].
//! - `dimensions`: `dimensionsSpec` -> [`DimensionSpec`]s.
//! - `metrics`: each `metricsSpec` entry -> a [`MetricSpec`].
//! - `granularity`: `granularitySpec` -> segment and query granularity, rollup and
//!   intervals.
//! - `transform`: `transformSpec` -> its [`RowFilter`].
//! - `input`: `ioConfig` -> [`InputSource`], resolved to local files, and [`InputFormat`].
//! - `tuning`: `tuningConfig` -> rows per segment and the parse exception limit.
//! - `stream`: Druid's Kafka supervisor spec -> [`KafkaSupervisorSpec`], its
//!   `dataSchema` read as a batch spec's.
//! - `json`: the `JsonPath` each section is handed, and the helpers they share to read a
//!   section into its `Raw*` struct and to build errors naming a path.
//!
//! This module reads the task and its `dataSchema`, hands each section to its module,
//! checks what spans sections (the task type the `ioConfig` and `tuningConfig` types must
//! match, unique column names) and spreads the parts over [`IngestionSpec`]'s fields.

mod dimensions;
#[cfg(test)]
mod fixture;
mod granularity;
mod input;
mod json;
mod metrics;
mod stream;
mod timestamp;
mod transform;
mod tuning;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

pub use dimensions::{DimensionKind, DimensionSpec};
pub use input::{InputFormat, InputSource};
pub use metrics::{Aggregator, MetricSpec};
pub use stream::{KafkaSupervisorSpec, KafkaTopic, KeyFormat, RecordColumns};
pub use timestamp::{TimestampFormat, TimestampSpec};
pub use transform::RowFilter;

use dimensions::parse_dimensions_spec;
use granularity::{GranularityConfig, parse_granularity_spec};
use input::parse_io_config;
use json::{JsonPath, invalid_at, parse_object, prefix_error, required, required_name};
use metrics::parse_metric;
use timestamp::parse_timestamp_spec;
use transform::{parse_transform_spec, push_filter_columns};
use tuning::parse_tuning_config;

use crate::error::{Error, Result};
/// The output time column; no dimension or metric may take its name.
use crate::format::TIME_COLUMN;
use crate::granularity::Granularity;
use crate::id::Interval;

/// A validated Druid native batch ingestion spec (`type: index_parallel`, or `index`).
#[derive(Debug, Clone, PartialEq)]
pub struct IngestionSpec {
    pub datasource: String,
    pub timestamp: TimestampSpec,
    pub dimensions: Vec<DimensionSpec>,
    pub metrics: Vec<MetricSpec>,
    pub segment_granularity: Granularity,
    pub query_granularity: Granularity,
    pub rollup: bool,
    /// granularitySpec.intervals: rows outside all of them are dropped (thrown away, not
    /// errors). An empty list is treated like an absent one, as Druid does.
    pub intervals: Option<Vec<Interval>>,
    /// transformSpec.filter
    pub filter: Option<RowFilter>,
    pub input: InputSource,
    pub format: InputFormat,
    pub append_to_existing: bool,
    /// partitionsSpec {"type":"dynamic","maxRowsPerSegment":N}; default 5_000_000
    pub max_rows_per_segment: usize,
    /// tuningConfig.maxParseExceptions; default 0
    pub max_parse_exceptions: u64,
    /// tuningConfig.awaitSegmentAvailabilityTimeoutMillis: how long a task waits, after
    /// publishing, for its segments to be served before it reports success; default 0
    /// (it does not wait).
    pub await_segment_availability_timeout_millis: u64,
    /// tuningConfig.maxNumConcurrentSubTasks: above 1, an `index_parallel` task splits
    /// its input files among that many sub-tasks; default 1.
    pub max_num_concurrent_sub_tasks: usize,
}

const TASK_TYPES: [&str; 2] = ["index_parallel", "index"];

impl IngestionSpec {
    /// Parses a spec from JSON text. `base_dir` resolves relative input paths (the spec
    /// file's directory).
    ///
    /// Local input files are resolved and checked here, so a spec that parses names
    /// files that existed at parse time.
    pub fn from_json(text: &str, base_dir: &Path) -> Result<IngestionSpec> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Error::invalid(format!("ingestion spec is not valid JSON: {e}")))?;
        parse_task(value, Some(base_dir))
    }

    /// Checks a spec as a server receiving it does: everything but the local input
    /// files, which exist (or not) where the task will run and are found there. The
    /// returned spec's local input source lists no files.
    pub fn check_json(text: &str) -> Result<IngestionSpec> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Error::invalid(format!("ingestion spec is not valid JSON: {e}")))?;
        parse_task(value, None)
    }

    /// Reads and parses a spec file; relative input paths are resolved against the
    /// file's directory, and validation errors are prefixed with the file's path.
    pub fn from_file(path: &Path) -> Result<IngestionSpec> {
        let text = fs::read_to_string(path)
            .map_err(|e| Error::io(format!("cannot read ingestion spec {}", path.display()), e))?;
        let base_dir = path.parent().unwrap_or(Path::new(""));
        IngestionSpec::from_json(&text, base_dir).map_err(|e| prefix_error(path.display(), e))
    }

    /// Input columns the ingestion must read: the timestamp column, every dimension,
    /// every metric's field, and columns used by the filter; de-duplicated, in that
    /// order.
    pub fn input_columns(&self) -> Vec<String> {
        let mut columns = vec![self.timestamp.column.clone()];
        columns.extend(self.dimensions.iter().map(|d| d.name.clone()));
        columns.extend(self.metrics.iter().filter_map(|m| m.field.clone()));
        if let Some(filter) = &self.filter {
            push_filter_columns(filter, &mut columns);
        }
        let mut seen = HashSet::new();
        columns.retain(|column| seen.insert(column.clone()));
        columns
    }
}

// ---------------------------------------------------------------------------------
// Top level
// ---------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    #[serde(rename = "type")]
    kind: Option<String>,
    spec: Option<Value>,
    /// Task context (priority, lock settings, ..): meaningless to Grove, but present in
    /// most real Druid specs, so it is accepted as long as it is an object.
    #[serde(rename = "context")]
    _context: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSpec {
    data_schema: Option<Value>,
    io_config: Option<Value>,
    tuning_config: Option<Value>,
}

fn parse_task(value: Value, base_dir: Option<&Path>) -> Result<IngestionSpec> {
    let root = JsonPath::root();
    let raw: RawTask = parse_object(value, &root)?;
    let task_type = parse_task_type(raw.kind, &root.field("type"))?;
    let spec_path = root.field("spec");
    let spec: RawSpec = parse_object(required(raw.spec, &spec_path)?, &spec_path)?;
    let schema_path = spec_path.field("dataSchema");
    let schema = parse_data_schema(required(spec.data_schema, &schema_path)?, &schema_path)?;
    let io_path = spec_path.field("ioConfig");
    let io = parse_io_config(
        required(spec.io_config, &io_path)?,
        &io_path,
        &task_type,
        base_dir,
    )?;
    let tuning_path = spec_path.field("tuningConfig");
    let tuning = parse_tuning_config(spec.tuning_config, &tuning_path, &task_type)?;
    Ok(IngestionSpec {
        datasource: schema.datasource,
        timestamp: schema.timestamp,
        dimensions: schema.dimensions,
        metrics: schema.metrics,
        segment_granularity: schema.granularity.segment,
        query_granularity: schema.granularity.query,
        rollup: schema.granularity.rollup,
        intervals: schema.granularity.intervals,
        filter: schema.filter,
        input: io.input,
        format: io.format,
        append_to_existing: io.append_to_existing,
        max_rows_per_segment: tuning.max_rows_per_segment,
        max_parse_exceptions: tuning.max_parse_exceptions,
        await_segment_availability_timeout_millis: tuning.await_segment_availability_timeout_millis,
        max_num_concurrent_sub_tasks: tuning.max_num_concurrent_sub_tasks,
    })
}

fn parse_task_type(kind: Option<String>, path: &JsonPath) -> Result<String> {
    let kind = required(kind, path)?;
    if TASK_TYPES.contains(&kind.as_str()) {
        Ok(kind)
    } else {
        Err(invalid_at(
            path,
            format!("unsupported task type {kind:?}: expected \"index_parallel\" or \"index\""),
        ))
    }
}

/// An `ioConfig`/`tuningConfig` `type` must name the task's own type, as in Druid, where
/// each task type has its own config classes.
fn check_section_type(kind: Option<&str>, task_type: &str, path: &JsonPath) -> Result<()> {
    match kind {
        Some(kind) if kind != task_type => Err(invalid_at(
            path,
            format!("{kind:?} does not match the task type {task_type:?}"),
        )),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------
// dataSchema
// ---------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawDataSchema {
    data_source: Option<String>,
    timestamp_spec: Option<Value>,
    dimensions_spec: Option<Value>,
    metrics_spec: Option<Vec<Value>>,
    granularity_spec: Option<Value>,
    transform_spec: Option<Value>,
}

/// The parsed `dataSchema`, before it is spread over [`IngestionSpec`]'s fields.
struct DataSchema {
    datasource: String,
    timestamp: TimestampSpec,
    dimensions: Vec<DimensionSpec>,
    metrics: Vec<MetricSpec>,
    granularity: GranularityConfig,
    filter: Option<RowFilter>,
}

fn parse_data_schema(value: Value, path: &JsonPath) -> Result<DataSchema> {
    let raw: RawDataSchema = parse_object(value, path)?;
    let datasource = parse_datasource(raw.data_source, &path.field("dataSource"))?;
    let timestamp = parse_timestamp_spec(raw.timestamp_spec, &path.field("timestampSpec"))?;
    let dimensions_path = path.field("dimensionsSpec");
    let dimensions = parse_dimensions_spec(
        required(raw.dimensions_spec, &dimensions_path)?,
        &dimensions_path,
    )?;
    let metrics_path = path.field("metricsSpec");
    let metrics = raw
        .metrics_spec
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, metric)| parse_metric(metric, &metrics_path.index(i)))
        .collect::<Result<Vec<_>>>()?;
    check_unique_columns(&dimensions, &metrics, path)?;
    let granularity = parse_granularity_spec(raw.granularity_spec, &path.field("granularitySpec"))?;
    let filter = parse_transform_spec(raw.transform_spec, &path.field("transformSpec"))?;
    Ok(DataSchema {
        datasource,
        timestamp,
        dimensions,
        metrics,
        granularity,
        filter,
    })
}

/// Datasource names become directory and segment file names, so they are restricted to
/// characters that are safe in paths on every platform; a leading '.' is rejected
/// because it would make hidden directories (and `..` a way out of the data root).
fn parse_datasource(name: Option<String>, path: &JsonPath) -> Result<String> {
    let name = required_name(name, path)?;
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if let Some(bad) = name.chars().find(|&c| !allowed(c)) {
        return Err(invalid_at(
            path,
            format!(
                "{name:?} contains {bad:?}: a datasource name may only contain letters, \
                 digits, '_', '-' and '.'"
            ),
        ));
    }
    if name.starts_with('.') {
        return Err(invalid_at(path, format!("{name:?} may not start with '.'")));
    }
    Ok(name)
}

/// Every output column must have its own name: `__time`, each dimension and each
/// metric. A clash would make one silently overwrite the other in a segment.
fn check_unique_columns(
    dimensions: &[DimensionSpec],
    metrics: &[MetricSpec],
    path: &JsonPath,
) -> Result<()> {
    let dimensions_path = path.field("dimensionsSpec").field("dimensions");
    let metrics_path = path.field("metricsSpec");
    let named_by_dimensions = dimensions
        .iter()
        .enumerate()
        .map(|(i, d)| (d.name.as_str(), dimensions_path.index(i).to_string()));
    let named_by_metrics = metrics
        .iter()
        .enumerate()
        .map(|(i, m)| (m.name.as_str(), metrics_path.index(i).to_string()));
    let mut seen = HashMap::from([(TIME_COLUMN, "the time column".to_string())]);
    for (name, origin) in named_by_dimensions.chain(named_by_metrics) {
        if let Some(first) = seen.insert(name, origin.clone()) {
            return Err(Error::invalid(format!(
                "duplicate column {name:?}: named by both {first} and {origin}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::spec::fixture::{
        TempDir, assert_contains, error_of, minimal, parse, parse_edited, remove, set,
    };

    #[test]
    fn parses_a_full_realistic_spec() {
        let dir = TempDir::new(&[
            "data/b.json",
            "data/a.json",
            "data/notes.txt",
            "data/nested/c.json",
        ]);
        let spec = json!({
            "type": "index_parallel",
            "context": {"priority": 50},
            "spec": {
                "dataSchema": {
                    "dataSource": "wikipedia_edits-v1.2",
                    "timestampSpec": {"column": "time", "format": "iso"},
                    "dimensionsSpec": {
                        "dimensions": [
                            "channel",
                            "page",
                            {"type": "long", "name": "delta"},
                            {"type": "string", "name": "user", "createBitmapIndex": true}
                        ],
                        "dimensionExclusions": [],
                        "spatialDimensions": []
                    },
                    "metricsSpec": [
                        {"type": "count", "name": "count"},
                        {"type": "longSum", "name": "added", "fieldName": "added"},
                        {"type": "doubleMax", "name": "max_delta", "fieldName": "delta"}
                    ],
                    "granularitySpec": {
                        "type": "uniform",
                        "segmentGranularity": "hour",
                        "queryGranularity": {"type": "minute"},
                        "rollup": true,
                        "intervals": ["2016-06-27/2016-06-28"]
                    },
                    "transformSpec": {
                        "filter": {"type": "selector", "dimension": "isRobot", "value": "false"},
                        "transforms": []
                    }
                },
                "ioConfig": {
                    "type": "index_parallel",
                    "inputSource": {"type": "local", "baseDir": "data", "filter": "*.json"},
                    "inputFormat": {"type": "json"},
                    "appendToExisting": true,
                    "dropExisting": false
                },
                "tuningConfig": {
                    "type": "index_parallel",
                    "partitionsSpec": {
                        "type": "dynamic",
                        "maxRowsPerSegment": 1000,
                        "maxTotalRows": 20000
                    },
                    "maxParseExceptions": 10,
                    "maxNumConcurrentSubTasks": 2,
                    "maxRowsInMemory": 100000
                }
            }
        });
        let parsed = parse(&spec, &dir).unwrap();
        let day = Interval::parse("2016-06-27/2016-06-28").unwrap();
        let expected = IngestionSpec {
            datasource: "wikipedia_edits-v1.2".into(),
            timestamp: TimestampSpec {
                column: "time".into(),
                format: TimestampFormat::Iso,
                missing_value: None,
            },
            dimensions: vec![
                DimensionSpec {
                    name: "channel".into(),
                    kind: DimensionKind::String,
                },
                DimensionSpec {
                    name: "page".into(),
                    kind: DimensionKind::String,
                },
                DimensionSpec {
                    name: "delta".into(),
                    kind: DimensionKind::Long,
                },
                DimensionSpec {
                    name: "user".into(),
                    kind: DimensionKind::String,
                },
            ],
            metrics: vec![
                MetricSpec {
                    name: "count".into(),
                    aggregator: Aggregator::Count,
                    field: None,
                },
                MetricSpec {
                    name: "added".into(),
                    aggregator: Aggregator::LongSum,
                    field: Some("added".into()),
                },
                MetricSpec {
                    name: "max_delta".into(),
                    aggregator: Aggregator::DoubleMax,
                    field: Some("delta".into()),
                },
            ],
            segment_granularity: Granularity::Hour,
            query_granularity: Granularity::Minute,
            rollup: true,
            intervals: Some(vec![day]),
            filter: Some(RowFilter::Selector {
                dimension: "isRobot".into(),
                value: Some("false".into()),
            }),
            input: InputSource::Local {
                files: vec![dir.path("data/a.json"), dir.path("data/b.json")],
            },
            format: InputFormat::Json,
            append_to_existing: true,
            max_rows_per_segment: 1000,
            max_parse_exceptions: 10,
            await_segment_availability_timeout_millis: 0,
            max_num_concurrent_sub_tasks: 2,
        };
        assert_eq!(parsed, expected);
        assert_eq!(
            parsed.input_columns(),
            [
                "time", "channel", "page", "delta", "user", "added", "isRobot"
            ]
        );
    }

    #[test]
    fn fills_in_druid_defaults() {
        let spec = parse_edited(|_| {}).unwrap();
        assert_eq!(spec.datasource, "wiki");
        assert_eq!(
            spec.timestamp,
            TimestampSpec {
                column: "timestamp".into(),
                format: TimestampFormat::Auto,
                missing_value: None,
            }
        );
        assert!(spec.metrics.is_empty());
        assert_eq!(spec.segment_granularity, Granularity::Day);
        assert_eq!(spec.query_granularity, Granularity::None);
        assert!(spec.rollup);
        assert_eq!(spec.intervals, None);
        assert_eq!(spec.filter, None);
        assert_eq!(spec.format, InputFormat::Json);
        assert!(!spec.append_to_existing);
        assert_eq!(spec.max_rows_per_segment, 5_000_000);
        assert_eq!(spec.max_parse_exceptions, 0);
        assert_eq!(spec.input_columns(), ["timestamp", "page"]);
    }

    #[test]
    fn from_file_uses_the_files_directory() {
        let dir = TempDir::new(&["data.json"]);
        let spec_path = dir.path("spec.json");
        fs::write(&spec_path, minimal().to_string()).unwrap();
        let parsed = IngestionSpec::from_file(&spec_path).unwrap();
        assert_eq!(
            parsed.input,
            InputSource::Local {
                files: vec![dir.path("data.json")]
            }
        );

        let broken = dir.path("broken.json");
        fs::write(&broken, r#"{"type": "index", "spec": {}}"#).unwrap();
        let message = IngestionSpec::from_file(&broken).unwrap_err().to_string();
        assert_contains(&message, "broken.json");
        assert_contains(&message, "missing required field \"spec.dataSchema\"");
    }

    #[test]
    fn missing_spec_file_is_an_io_error() {
        let dir = TempDir::new(&[]);
        let err = IngestionSpec::from_file(&dir.path("nope.json")).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        assert_contains(&err.to_string(), "nope.json");
    }

    #[test]
    fn rejects_unknown_top_level_field() {
        let message = error_of(|s| set(s, "/id", json!("task-1")));
        assert_contains(&message, "unsupported field \"id\"");
        let message = error_of(|s| set(s, "/type", json!("index_hadoop")));
        assert_contains(&message, "type: unsupported task type \"index_hadoop\"");
    }

    #[test]
    fn rejects_duplicate_columns() {
        let message = error_of(|s| {
            let metrics = json!([{"type": "longSum", "name": "page", "fieldName": "x"}]);
            set(s, "/spec/dataSchema/metricsSpec", metrics);
        });
        assert_contains(&message, "duplicate column \"page\"");
        assert_contains(&message, "spec.dataSchema.dimensionsSpec.dimensions[0]");
        assert_contains(&message, "spec.dataSchema.metricsSpec[0]");
        let message = error_of(|s| {
            set(
                s,
                "/spec/dataSchema/dimensionsSpec/dimensions",
                json!(["__time"]),
            );
        });
        assert_contains(&message, "duplicate column \"__time\"");
    }

    #[test]
    fn allows_the_timestamp_column_as_a_dimension() {
        let spec = parse_edited(|s| {
            set(
                s,
                "/spec/dataSchema/dimensionsSpec/dimensions",
                json!(["timestamp"]),
            );
        })
        .unwrap();
        assert_eq!(spec.input_columns(), ["timestamp"]);
    }

    #[test]
    fn rejects_missing_datasource() {
        let message = error_of(|s| remove(s, "/spec/dataSchema/dataSource"));
        assert_contains(
            &message,
            "missing required field \"spec.dataSchema.dataSource\"",
        );
        let message = error_of(|s| set(s, "/spec/dataSchema/dataSource", json!("")));
        assert_contains(&message, "spec.dataSchema.dataSource: must not be empty");
    }

    #[test]
    fn rejects_unsafe_datasource_names() {
        for name in ["a/b", "wiki edits", "..", "wiki:2"] {
            let message = error_of(|s| set(s, "/spec/dataSchema/dataSource", json!(name)));
            assert_contains(&message, "spec.dataSchema.dataSource: ");
            assert_contains(&message, &format!("{name:?}"));
        }
    }

    #[test]
    fn rejects_missing_sections() {
        let message = error_of(|s| remove(s, "/spec/ioConfig"));
        assert_contains(&message, "missing required field \"spec.ioConfig\"");
        let message = error_of(|s| remove(s, "/spec/ioConfig/inputFormat"));
        assert_contains(
            &message,
            "missing required field \"spec.ioConfig.inputFormat\"",
        );
        let message = error_of(|s| set(s, "/spec/dataSchema", json!(null)));
        assert_contains(&message, "missing required field \"spec.dataSchema\"");
        let message = error_of(|s| set(s, "/spec/dataSchema", json!([])));
        assert_contains(
            &message,
            "spec.dataSchema: expected a JSON object, found an array",
        );
    }

    #[test]
    fn rejects_text_that_is_not_json() {
        let message = IngestionSpec::from_json("{\"type\": ", Path::new("."))
            .unwrap_err()
            .to_string();
        assert_contains(&message, "ingestion spec is not valid JSON");
    }
}
