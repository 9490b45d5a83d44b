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

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
/// The output time column; no dimension or metric may take its name.
use crate::format::TIME_COLUMN;
use crate::granularity::Granularity;
use crate::id::{Interval, parse_instant};

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
}

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

/// One entry of `dimensionsSpec.dimensions`.
#[derive(Debug, Clone, PartialEq)]
pub struct DimensionSpec {
    pub name: String,
    pub kind: DimensionKind,
}

/// A dimension's `type`; `String` when the dimension is given as a bare name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DimensionKind {
    String,
    Long,
    Double,
    Float,
    Date,
    Timestamp,
}

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

#[derive(Debug, Clone, PartialEq)]
pub enum InputSource {
    /// {"type":"local","baseDir":..,"filter":"*.json"} and/or {"type":"local","files":[..]}
    /// Resolved to concrete, sorted file paths (relative paths are relative to the
    /// directory of the spec file); a baseDir+filter matching nothing is an error.
    Local { files: Vec<PathBuf> },
}

#[derive(Debug, Clone, PartialEq)]
pub enum InputFormat {
    /// {"type":"json"} newline-delimited
    Json,
    /// {"type":"csv","columns":[..],"findColumnsFromHeader":bool,"skipHeaderRows":n}
    /// Druid rule: findColumnsFromHeader defaults to false when columns is given,
    /// and it is an error to give neither.
    Csv {
        columns: Option<Vec<String>>,
        find_columns_from_header: bool,
        skip_header_rows: usize,
    },
    /// {"type":"parquet"} (binaryAsString accepted)
    Parquet,
}

const DEFAULT_TIMESTAMP_COLUMN: &str = "timestamp";
const DEFAULT_MAX_ROWS_PER_SEGMENT: usize = 5_000_000;
const TASK_TYPES: [&str; 2] = ["index_parallel", "index"];

const TIMESTAMP_FORMATS: [(&str, TimestampFormat); 4] = [
    ("iso", TimestampFormat::Iso),
    ("millis", TimestampFormat::Millis),
    ("posix", TimestampFormat::Posix),
    ("auto", TimestampFormat::Auto),
];

const DIMENSION_KINDS: [(&str, DimensionKind); 6] = [
    ("string", DimensionKind::String),
    ("long", DimensionKind::Long),
    ("double", DimensionKind::Double),
    ("float", DimensionKind::Float),
    ("date", DimensionKind::Date),
    ("timestamp", DimensionKind::Timestamp),
];

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

impl IngestionSpec {
    /// Parses a spec from JSON text. `base_dir` resolves relative input paths (the spec
    /// file's directory).
    ///
    /// Local input files are resolved and checked here, so a spec that parses names
    /// files that existed at parse time.
    pub fn from_json(text: &str, base_dir: &Path) -> Result<IngestionSpec> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Error::invalid(format!("ingestion spec is not valid JSON: {e}")))?;
        parse_task(value, base_dir)
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

/// Appends the columns `filter` reads, depth first.
fn push_filter_columns(filter: &RowFilter, out: &mut Vec<String>) {
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

// ---------------------------------------------------------------------------------
// JSON paths and error helpers
// ---------------------------------------------------------------------------------

/// Where a value sits in the spec (`spec.dataSchema.metricsSpec[2].fieldName`), so that
/// every error can point at the exact field the user has to fix.
#[derive(Debug)]
struct JsonPath(String);

impl JsonPath {
    fn root() -> Self {
        JsonPath(String::new())
    }

    fn field(&self, name: &str) -> Self {
        if self.0.is_empty() {
            JsonPath(name.to_string())
        } else {
            JsonPath(format!("{}.{name}", self.0))
        }
    }

    fn index(&self, i: usize) -> Self {
        JsonPath(format!("{}[{i}]", self.0))
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("ingestion spec")
        } else {
            f.write_str(&self.0)
        }
    }
}

/// An invalid-spec error about the value at `path`.
fn invalid_at(path: &JsonPath, message: impl fmt::Display) -> Error {
    Error::invalid(format!("{path}: {message}"))
}

/// A field Grove recognises but cannot honour (or does not know at all).
fn unsupported_field(path: &JsonPath, why: impl fmt::Display) -> Error {
    Error::invalid(format!("unsupported field \"{path}\": {why}"))
}

/// Adds context (a path, a file name) in front of an invalid-spec message; I/O and
/// other errors already carry their own context and pass through unchanged.
fn prefix_error(prefix: impl fmt::Display, error: Error) -> Error {
    match error {
        Error::Invalid(message) => Error::invalid(format!("{prefix}: {message}")),
        other => other,
    }
}

/// Turns serde's `unknown field `foo`, expected one of ...` (which does not say where)
/// into an error naming the field's full path; other serde messages (type mismatches,
/// bad granularities) are prefixed with the section's path.
fn serde_error(path: &JsonPath, error: &serde_json::Error) -> Error {
    let message = error.to_string();
    let unknown = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'));
    match unknown {
        Some((field, hint)) => unsupported_field(&path.field(field), hint.trim_start_matches(", ")),
        None => invalid_at(path, message),
    }
}

/// Describes a JSON value's kind for "expected X, found Y" messages.
fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Every raw field is an `Option` so that a missing field and an explicit `null` (which
/// Druid treats alike) both end up here, with the field's path in the message.
fn required<T>(value: Option<T>, path: &JsonPath) -> Result<T> {
    value.ok_or_else(|| Error::invalid(format!("missing required field \"{path}\"")))
}

/// Column and datasource names become Arrow field names and file names, where an empty
/// name is never what the user meant.
fn non_empty(name: String, path: &JsonPath) -> Result<String> {
    if name.is_empty() {
        Err(invalid_at(path, "must not be empty"))
    } else {
        Ok(name)
    }
}

fn required_name(name: Option<String>, path: &JsonPath) -> Result<String> {
    non_empty(required(name, path)?, path)
}

/// Looks `name` up in a table of accepted spellings, listing them all when it is unknown.
fn lookup<T: Copy>(table: &[(&str, T)], name: &str, what: &str, path: &JsonPath) -> Result<T> {
    lookup_by(table, name, what, path, |known| known == name)
}

/// [`lookup`] with the comparison given, for the few names Druid treats case-insensitively.
fn lookup_by<T: Copy>(
    table: &[(&str, T)],
    name: &str,
    what: &str,
    path: &JsonPath,
    matches: impl Fn(&str) -> bool,
) -> Result<T> {
    let found = table.iter().find(|(known, _)| matches(known));
    found.map(|&(_, value)| value).ok_or_else(|| {
        let known: Vec<&str> = table.iter().map(|(known, _)| *known).collect();
        invalid_at(
            path,
            format!(
                "unknown {what} {name:?}: expected one of {}",
                known.join(", ")
            ),
        )
    })
}

/// Rejects a non-empty list in a field Grove only accepts empty.
fn reject_non_empty(list: Option<Vec<Value>>, path: &JsonPath, why: &str) -> Result<()> {
    match list {
        Some(list) if !list.is_empty() => Err(unsupported_field(path, why)),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------
// Section deserialization
// ---------------------------------------------------------------------------------

fn into_object(value: Value, path: &JsonPath) -> Result<Map<String, Value>> {
    match value {
        Value::Object(map) => Ok(map),
        other => Err(invalid_at(
            path,
            format!("expected a JSON object, found {}", describe(&other)),
        )),
    }
}

fn from_map<T: DeserializeOwned>(map: Map<String, Value>, path: &JsonPath) -> Result<T> {
    T::deserialize(Value::Object(map)).map_err(|e| serde_error(path, &e))
}

fn parse_object<T: DeserializeOwned>(value: Value, path: &JsonPath) -> Result<T> {
    from_map(into_object(value, path)?, path)
}

/// Optional sections fall back to their raw struct's default, i.e. every field absent.
fn parse_object_or_default<T: DeserializeOwned + Default>(
    value: Option<Value>,
    path: &JsonPath,
) -> Result<T> {
    value.map_or_else(|| Ok(T::default()), |value| parse_object(value, path))
}

/// Splits a polymorphic Druid object into its `type` and its other fields. The type is
/// read first so that an unsupported type (an `s3` input source, a `hyperUnique`
/// aggregator) is reported as such, rather than as an unknown field only that type has.
fn typed_object(value: Value, path: &JsonPath) -> Result<(Option<String>, Map<String, Value>)> {
    let mut map = into_object(value, path)?;
    let kind = match map.remove("type") {
        None | Some(Value::Null) => None,
        Some(Value::String(kind)) => Some(kind),
        Some(other) => {
            return Err(invalid_at(
                &path.field("type"),
                format!("expected a string, found {}", describe(&other)),
            ));
        }
    };
    Ok((kind, map))
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

fn parse_task(value: Value, base_dir: &Path) -> Result<IngestionSpec> {
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

// ---------------------------------------------------------------------------------
// timestampSpec
// ---------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawTimestampSpec {
    column: Option<String>,
    format: Option<String>,
    missing_value: Option<Value>,
}

fn parse_timestamp_spec(value: Option<Value>, path: &JsonPath) -> Result<TimestampSpec> {
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

// ---------------------------------------------------------------------------------
// dimensionsSpec
// ---------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawDimensionsSpec {
    dimensions: Option<Vec<Value>>,
    dimension_exclusions: Option<Vec<Value>>,
    spatial_dimensions: Option<Vec<Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawDimension {
    name: Option<String>,
    create_bitmap_index: Option<bool>,
    multi_value_handling: Option<String>,
}

/// The dimensions list is required and may not be empty: in Druid an empty list means
/// "discover the dimensions from the data", which Grove does not do, and silently
/// ingesting no dimensions instead would lose data.
fn parse_dimensions_spec(value: Value, path: &JsonPath) -> Result<Vec<DimensionSpec>> {
    let raw: RawDimensionsSpec = parse_object(value, path)?;
    let discovery = "schemaless dimension discovery is not supported";
    reject_non_empty(
        raw.dimension_exclusions,
        &path.field("dimensionExclusions"),
        format!("exclusions only apply to {discovery}").as_str(),
    )?;
    reject_non_empty(
        raw.spatial_dimensions,
        &path.field("spatialDimensions"),
        "spatial dimensions are not supported",
    )?;
    let list_path = path.field("dimensions");
    let list = required(raw.dimensions, &list_path)?;
    if list.is_empty() {
        return Err(invalid_at(
            &list_path,
            format!("must list the dimensions: {discovery}"),
        ));
    }
    list.into_iter()
        .enumerate()
        .map(|(i, dimension)| parse_dimension(dimension, &list_path.index(i)))
        .collect()
}

/// A dimension is a bare name (a string dimension) or an object with an optional type.
fn parse_dimension(value: Value, path: &JsonPath) -> Result<DimensionSpec> {
    let value = match value {
        Value::String(name) => {
            return Ok(DimensionSpec {
                name: non_empty(name, path)?,
                kind: DimensionKind::String,
            });
        }
        Value::Object(_) => value,
        other => {
            return Err(invalid_at(
                path,
                format!(
                    "expected a dimension name or object, found {}",
                    describe(&other)
                ),
            ));
        }
    };
    let (kind, map) = typed_object(value, path)?;
    let kind = lookup(
        &DIMENSION_KINDS,
        kind.as_deref().unwrap_or("string"),
        "dimension type",
        &path.field("type"),
    )?;
    let raw: RawDimension = from_map(map, path)?;
    check_dimension_defaults(&raw, path)?;
    Ok(DimensionSpec {
        name: required_name(raw.name, &path.field("name"))?,
        kind,
    })
}

/// Grove always indexes string dimensions and stores multi-values sorted, so these
/// options are accepted only when they ask for exactly that (Druid's defaults).
fn check_dimension_defaults(raw: &RawDimension, path: &JsonPath) -> Result<()> {
    if raw.create_bitmap_index == Some(false) {
        return Err(unsupported_field(
            &path.field("createBitmapIndex"),
            "only the default, true, is supported",
        ));
    }
    if let Some(handling) = &raw.multi_value_handling
        && !handling.eq_ignore_ascii_case("SORTED_ARRAY")
    {
        return Err(unsupported_field(
            &path.field("multiValueHandling"),
            format!("{handling:?} is not supported; only the default, \"SORTED_ARRAY\", is"),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// metricsSpec
// ---------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawMetric {
    name: Option<String>,
    field_name: Option<String>,
}

fn parse_metric(value: Value, path: &JsonPath) -> Result<MetricSpec> {
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

// ---------------------------------------------------------------------------------
// granularitySpec
// ---------------------------------------------------------------------------------

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
struct GranularityConfig {
    segment: Granularity,
    query: Granularity,
    rollup: bool,
    intervals: Option<Vec<Interval>>,
}

fn parse_granularity_spec(value: Option<Value>, path: &JsonPath) -> Result<GranularityConfig> {
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

// ---------------------------------------------------------------------------------
// transformSpec and filters
// ---------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTransformSpec {
    filter: Option<Value>,
    transforms: Option<Vec<Value>>,
}

fn parse_transform_spec(value: Option<Value>, path: &JsonPath) -> Result<Option<RowFilter>> {
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

// ---------------------------------------------------------------------------------
// ioConfig
// ---------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawIoConfig {
    #[serde(rename = "type")]
    kind: Option<String>,
    input_source: Option<Value>,
    input_format: Option<Value>,
    append_to_existing: Option<bool>,
    drop_existing: Option<bool>,
}

/// The parsed `ioConfig`.
struct IoConfig {
    input: InputSource,
    format: InputFormat,
    append_to_existing: bool,
}

fn parse_io_config(
    value: Value,
    path: &JsonPath,
    task_type: &str,
    base_dir: &Path,
) -> Result<IoConfig> {
    let raw: RawIoConfig = parse_object(value, path)?;
    check_section_type(raw.kind.as_deref(), task_type, &path.field("type"))?;
    if raw.drop_existing == Some(true) {
        return Err(unsupported_field(
            &path.field("dropExisting"),
            "dropping existing segments is not supported; only false is accepted",
        ));
    }
    let source_path = path.field("inputSource");
    let input = parse_input_source(
        required(raw.input_source, &source_path)?,
        &source_path,
        base_dir,
    )?;
    let format_path = path.field("inputFormat");
    let format = parse_input_format(required(raw.input_format, &format_path)?, &format_path)?;
    Ok(IoConfig {
        input,
        format,
        append_to_existing: raw.append_to_existing.unwrap_or(false),
    })
}

// ---------------------------------------------------------------------------------
// inputSource
// ---------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawLocalSource {
    base_dir: Option<String>,
    filter: Option<String>,
    files: Option<Vec<String>>,
}

fn parse_input_source(value: Value, path: &JsonPath, base_dir: &Path) -> Result<InputSource> {
    let (kind, map) = typed_object(value, path)?;
    let type_path = path.field("type");
    let kind = required(kind, &type_path)?;
    if kind != "local" {
        return Err(invalid_at(
            &type_path,
            format!("unsupported input source type {kind:?}: only \"local\" is supported"),
        ));
    }
    let raw: RawLocalSource = from_map(map, path)?;
    let files = resolve_local_files(raw, path, base_dir)?;
    Ok(InputSource::Local { files })
}

/// Resolves a local input source to the files it names: the files in `baseDir` whose
/// names match `filter`, plus every listed file, sorted and without repeats so a file
/// named both ways is read once.
fn resolve_local_files(
    raw: RawLocalSource,
    path: &JsonPath,
    base_dir: &Path,
) -> Result<Vec<PathBuf>> {
    let mut files = match (raw.base_dir, raw.filter) {
        (Some(dir), Some(filter)) => list_matching_files(&base_dir.join(dir), &filter, path)?,
        (None, None) => Vec::new(),
        (Some(_), None) => {
            return Err(invalid_at(path, "baseDir needs a filter (e.g. \"*.json\")"));
        }
        (None, Some(_)) => return Err(invalid_at(path, "filter needs a baseDir")),
    };
    let files_path = path.field("files");
    for (i, file) in raw.files.unwrap_or_default().into_iter().enumerate() {
        files.push(existing_file(base_dir.join(file), &files_path.index(i))?);
    }
    if files.is_empty() {
        return Err(invalid_at(
            path,
            "names no input files: give baseDir and filter, or files",
        ));
    }
    files.sort();
    files.dedup();
    Ok(files)
}

/// Lists the regular files directly in `dir` (not in subdirectories) whose names match
/// `pattern`, sorted by name. Matching nothing is an error: an ingestion that reads no
/// rows is almost always a mistyped directory or pattern.
fn list_matching_files(dir: &Path, pattern: &str, path: &JsonPath) -> Result<Vec<PathBuf>> {
    if pattern.contains(['/', '\\']) {
        return Err(invalid_at(
            &path.field("filter"),
            format!("{pattern:?} must match file names in baseDir, not paths"),
        ));
    }
    let read_error = |e: io::Error| {
        Error::io(
            format!(
                "{}: cannot read input directory {}",
                path.field("baseDir"),
                dir.display()
            ),
            e,
        )
    };
    let mut matches = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_error)? {
        let entry_path = entry.map_err(read_error)?.path();
        let matched = entry_path
            .file_name()
            .is_some_and(|name| glob_matches(pattern, &name.to_string_lossy()));
        // Anything but a directory: regular files, and named pipes a process writes.
        if matched && !entry_path.is_dir() {
            matches.push(entry_path);
        }
    }
    if matches.is_empty() {
        return Err(invalid_at(
            path,
            format!("no file in {} matches filter {pattern:?}", dir.display()),
        ));
    }
    matches.sort();
    Ok(matches)
}

/// Matches a file name against a glob where `*` is any run of characters and `?` any
/// one character; everything else is literal, as in Druid's wildcard file filter.
fn glob_matches(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    let (mut p, mut n) = (0, 0);
    // The most recent `*`: the pattern position after it and the name position it has
    // absorbed up to. On a mismatch, the star absorbs one more character and we retry.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                p += 1;
                star = Some((p, n));
            }
            Some(&c) if c == '?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((after_star, absorbed)) => {
                    p = after_star;
                    n = absorbed + 1;
                    star = Some((after_star, n));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// Checks a listed input file up front, so a typo fails the spec rather than the
/// ingestion halfway through.
fn existing_file(file: PathBuf, path: &JsonPath) -> Result<PathBuf> {
    match fs::metadata(&file) {
        Ok(meta) if !meta.is_dir() => Ok(file),
        Ok(_) => Err(invalid_at(
            path,
            format!("{} is not a file", file.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(invalid_at(
            path,
            format!("input file {} does not exist", file.display()),
        )),
        Err(e) => Err(Error::io(
            format!("{path}: cannot read input file {}", file.display()),
            e,
        )),
    }
}

// ---------------------------------------------------------------------------------
// inputFormat
// ---------------------------------------------------------------------------------

/// `{"type":"json"}` takes no options: Druid's (flattenSpec, featureSpec, ..) all change
/// how rows are read in ways Grove does not implement.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJsonFormat {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawCsvFormat {
    columns: Option<Vec<String>>,
    find_columns_from_header: Option<bool>,
    skip_header_rows: Option<usize>,
    list_delimiter: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParquetFormat {
    /// Grove always reads Parquet binary columns without a logical type as UTF-8, which
    /// is what `binaryAsString: true` asks for; the flag is only type-checked.
    #[serde(rename = "binaryAsString")]
    _binary_as_string: Option<bool>,
}

fn parse_input_format(value: Value, path: &JsonPath) -> Result<InputFormat> {
    let (kind, map) = typed_object(value, path)?;
    let type_path = path.field("type");
    match required(kind, &type_path)?.as_str() {
        "json" => from_map::<RawJsonFormat>(map, path).map(|_| InputFormat::Json),
        "csv" => csv_format(from_map(map, path)?, path),
        "parquet" => from_map::<RawParquetFormat>(map, path).map(|_| InputFormat::Parquet),
        other => Err(invalid_at(
            &type_path,
            format!("unsupported input format {other:?}: expected json, csv or parquet"),
        )),
    }
}

/// Applies Druid's CSV rules: an empty `columns` counts as absent; without columns the
/// header must supply them, and with them `findColumnsFromHeader` defaults to false.
fn csv_format(raw: RawCsvFormat, path: &JsonPath) -> Result<InputFormat> {
    if raw.list_delimiter.is_some() {
        return Err(unsupported_field(
            &path.field("listDelimiter"),
            "multi-value CSV columns are not supported",
        ));
    }
    let columns = raw.columns.filter(|columns| !columns.is_empty());
    if let Some(columns) = &columns {
        check_unique_csv_columns(columns, &path.field("columns"))?;
    }
    let find_columns_from_header = match (&columns, raw.find_columns_from_header) {
        (None, Some(true)) => true,
        (None, _) => {
            return Err(invalid_at(
                path,
                "give columns, or set findColumnsFromHeader to true to read them from \
                 the header row",
            ));
        }
        (Some(_), find) => find.unwrap_or(false),
    };
    Ok(InputFormat::Csv {
        columns,
        find_columns_from_header,
        skip_header_rows: raw.skip_header_rows.unwrap_or(0),
    })
}

/// Two CSV columns with one name would make every row's value for it ambiguous.
fn check_unique_csv_columns(columns: &[String], path: &JsonPath) -> Result<()> {
    let mut seen = HashSet::new();
    match columns.iter().find(|column| !seen.insert(column.as_str())) {
        Some(column) => Err(invalid_at(path, format!("duplicate column {column:?}"))),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------------
// tuningConfig
// ---------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawTuningConfig {
    #[serde(rename = "type")]
    kind: Option<String>,
    partitions_spec: Option<Value>,
    max_parse_exceptions: Option<u64>,
    /// Grove ingests in one process; Druid's subtask parallelism has no counterpart.
    #[serde(rename = "maxNumConcurrentSubTasks")]
    _max_num_concurrent_sub_tasks: Option<u64>,
    /// Grove sizes its in-memory buffers itself; the Druid knob is accepted and ignored.
    #[serde(rename = "maxRowsInMemory")]
    _max_rows_in_memory: Option<u64>,
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
struct TuningConfig {
    max_rows_per_segment: usize,
    max_parse_exceptions: u64,
}

fn parse_tuning_config(
    value: Option<Value>,
    path: &JsonPath,
    task_type: &str,
) -> Result<TuningConfig> {
    let raw: RawTuningConfig = parse_object_or_default(value, path)?;
    check_section_type(raw.kind.as_deref(), task_type, &path.field("type"))?;
    let max_rows_per_segment =
        parse_partitions_spec(raw.partitions_spec, &path.field("partitionsSpec"))?;
    Ok(TuningConfig {
        max_rows_per_segment,
        max_parse_exceptions: raw.max_parse_exceptions.unwrap_or(0),
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
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::json;

    use super::*;

    /// A fresh directory under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(files: &[&str]) -> TempDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let unique = format!(
                "grove-spec-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            let dir = TempDir(std::env::temp_dir().join(unique));
            fs::create_dir_all(&dir.0).unwrap();
            for file in files {
                let path = dir.0.join(file);
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(path, "{}\n").unwrap();
            }
            dir
        }

        fn path(&self, relative: &str) -> PathBuf {
            self.0.join(relative)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            // Best effort: a leftover directory in the temp dir is harmless.
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// The smallest valid spec: one string dimension, one listed JSON file `data.json`.
    fn minimal() -> Value {
        json!({
            "type": "index_parallel",
            "spec": {
                "dataSchema": {
                    "dataSource": "wiki",
                    "dimensionsSpec": {"dimensions": ["page"]}
                },
                "ioConfig": {
                    "inputSource": {"type": "local", "files": ["data.json"]},
                    "inputFormat": {"type": "json"}
                }
            }
        })
    }

    /// Inserts or replaces `value` at a JSON pointer whose parent object exists.
    fn set(spec: &mut Value, pointer: &str, value: Value) {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let parent = spec.pointer_mut(parent).unwrap().as_object_mut().unwrap();
        parent.insert(key.to_string(), value);
    }

    fn remove(spec: &mut Value, pointer: &str) {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let parent = spec.pointer_mut(parent).unwrap().as_object_mut().unwrap();
        parent.remove(key);
    }

    fn parse(spec: &Value, dir: &TempDir) -> Result<IngestionSpec> {
        IngestionSpec::from_json(&spec.to_string(), &dir.0)
    }

    /// Parses `minimal()` after `edit`, against a directory holding `data.json`.
    fn parse_edited(edit: impl FnOnce(&mut Value)) -> Result<IngestionSpec> {
        let dir = TempDir::new(&["data.json"]);
        let mut spec = minimal();
        edit(&mut spec);
        parse(&spec, &dir)
    }

    fn error_of(edit: impl FnOnce(&mut Value)) -> String {
        match parse_edited(edit) {
            Ok(spec) => panic!("expected an error, parsed {spec:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn assert_contains(message: &str, expected: &str) {
        assert!(
            message.contains(expected),
            "{message:?} should contain {expected:?}"
        );
    }

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
    fn resolves_listed_files_against_the_spec_directory() {
        let dir = TempDir::new(&["data.json", "more/b.json"]);
        let mut spec = minimal();
        let absolute = dir.path("more/b.json").display().to_string();
        set(
            &mut spec,
            "/spec/ioConfig/inputSource/files",
            json!(["data.json", absolute]),
        );
        let parsed = parse(&spec, &dir).unwrap();
        assert_eq!(
            parsed.input,
            InputSource::Local {
                files: vec![dir.path("data.json"), dir.path("more/b.json")]
            }
        );
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
    fn parses_typed_dimensions_of_every_kind() {
        let spec = parse_edited(|s| {
            let dimensions = json!([
                "plain",
                {"name": "untyped"},
                {"type": "string", "name": "s", "multiValueHandling": "sorted_array"},
                {"type": "long", "name": "l"},
                {"type": "double", "name": "d"},
                {"type": "float", "name": "f"},
                {"type": "date", "name": "day"},
                {"type": "timestamp", "name": "ts", "createBitmapIndex": true}
            ]);
            set(s, "/spec/dataSchema/dimensionsSpec/dimensions", dimensions);
        })
        .unwrap();
        let kinds: Vec<(&str, DimensionKind)> = spec
            .dimensions
            .iter()
            .map(|d| (d.name.as_str(), d.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                ("plain", DimensionKind::String),
                ("untyped", DimensionKind::String),
                ("s", DimensionKind::String),
                ("l", DimensionKind::Long),
                ("d", DimensionKind::Double),
                ("f", DimensionKind::Float),
                ("day", DimensionKind::Date),
                ("ts", DimensionKind::Timestamp),
            ]
        );
    }

    #[test]
    fn rejects_non_default_dimension_options() {
        let message = error_of(|s| {
            let dimensions = json!(["a", {"name": "b", "createBitmapIndex": false}]);
            set(s, "/spec/dataSchema/dimensionsSpec/dimensions", dimensions);
        });
        assert_contains(
            &message,
            "unsupported field \"spec.dataSchema.dimensionsSpec.dimensions[1].createBitmapIndex\"",
        );
        let message = error_of(|s| {
            let dimensions = json!([{"name": "b", "multiValueHandling": "ARRAY"}]);
            set(s, "/spec/dataSchema/dimensionsSpec/dimensions", dimensions);
        });
        assert_contains(&message, "dimensions[0].multiValueHandling\"");
        let message = error_of(|s| {
            let dimensions = json!([{"type": "json", "name": "nested"}]);
            set(s, "/spec/dataSchema/dimensionsSpec/dimensions", dimensions);
        });
        assert_contains(
            &message,
            "dimensions[0].type: unknown dimension type \"json\"",
        );
    }

    #[test]
    fn rejects_schemaless_dimensions() {
        let message = error_of(|s| {
            set(s, "/spec/dataSchema/dimensionsSpec/dimensions", json!([]));
        });
        assert_contains(
            &message,
            "spec.dataSchema.dimensionsSpec.dimensions: must list",
        );
        let message = error_of(|s| {
            set(
                s,
                "/spec/dataSchema/dimensionsSpec/dimensionExclusions",
                json!(["x"]),
            );
        });
        assert_contains(
            &message,
            "unsupported field \"spec.dataSchema.dimensionsSpec.dimensionExclusions\"",
        );
        let message = error_of(|s| remove(s, "/spec/dataSchema/dimensionsSpec"));
        assert_contains(
            &message,
            "missing required field \"spec.dataSchema.dimensionsSpec\"",
        );
    }

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
    fn parses_csv_with_columns() {
        let spec = parse_edited(|s| {
            let format =
                json!({"type": "csv", "columns": ["timestamp", "page"], "skipHeaderRows": 2});
            set(s, "/spec/ioConfig/inputFormat", format);
        })
        .unwrap();
        assert_eq!(
            spec.format,
            InputFormat::Csv {
                columns: Some(vec!["timestamp".into(), "page".into()]),
                find_columns_from_header: false,
                skip_header_rows: 2,
            }
        );
    }

    #[test]
    fn parses_csv_with_header() {
        let spec = parse_edited(|s| {
            let format = json!({"type": "csv", "columns": [], "findColumnsFromHeader": true});
            set(s, "/spec/ioConfig/inputFormat", format);
        })
        .unwrap();
        assert_eq!(
            spec.format,
            InputFormat::Csv {
                columns: None,
                find_columns_from_header: true,
                skip_header_rows: 0
            }
        );
    }

    #[test]
    fn rejects_bad_csv_formats() {
        let message = error_of(|s| set(s, "/spec/ioConfig/inputFormat", json!({"type": "csv"})));
        assert_contains(&message, "spec.ioConfig.inputFormat: give columns");
        let message = error_of(|s| {
            let format = json!({"type": "csv", "columns": ["a"], "listDelimiter": "|"});
            set(s, "/spec/ioConfig/inputFormat", format);
        });
        assert_contains(
            &message,
            "unsupported field \"spec.ioConfig.inputFormat.listDelimiter\"",
        );
        let message = error_of(|s| {
            set(
                s,
                "/spec/ioConfig/inputFormat",
                json!({"type": "csv", "columns": ["a", "a"]}),
            );
        });
        assert_contains(
            &message,
            "spec.ioConfig.inputFormat.columns: duplicate column \"a\"",
        );
    }

    #[test]
    fn parses_parquet() {
        let spec = parse_edited(|s| {
            set(
                s,
                "/spec/ioConfig/inputFormat",
                json!({"type": "parquet", "binaryAsString": true}),
            );
        })
        .unwrap();
        assert_eq!(spec.format, InputFormat::Parquet);
        let message = error_of(|s| {
            set(
                s,
                "/spec/ioConfig/inputFormat",
                json!({"type": "parquet", "flattenSpec": {}}),
            );
        });
        assert_contains(
            &message,
            "unsupported field \"spec.ioConfig.inputFormat.flattenSpec\"",
        );
        let message = error_of(|s| set(s, "/spec/ioConfig/inputFormat", json!({"type": "tsv"})));
        assert_contains(
            &message,
            "spec.ioConfig.inputFormat.type: unsupported input format \"tsv\"",
        );
    }

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
    fn rejects_unknown_top_level_field() {
        let message = error_of(|s| set(s, "/id", json!("task-1")));
        assert_contains(&message, "unsupported field \"id\"");
        let message = error_of(|s| set(s, "/type", json!("index_hadoop")));
        assert_contains(&message, "type: unsupported task type \"index_hadoop\"");
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

    #[test]
    fn rejects_unknown_dimension_field() {
        let message = error_of(|s| {
            let dimensions = json!(["a", {"type": "long", "name": "b", "format": "x"}]);
            set(s, "/spec/dataSchema/dimensionsSpec/dimensions", dimensions);
        });
        assert_contains(
            &message,
            "unsupported field \"spec.dataSchema.dimensionsSpec.dimensions[1].format\"",
        );
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
    fn rejects_a_filter_matching_no_file() {
        let dir = TempDir::new(&["data/a.csv"]);
        let mut spec = minimal();
        let source = json!({"type": "local", "baseDir": "data", "filter": "*.json"});
        set(&mut spec, "/spec/ioConfig/inputSource", source);
        let message = parse(&spec, &dir).unwrap_err().to_string();
        assert_contains(&message, "spec.ioConfig.inputSource: no file in");
        assert_contains(&message, &dir.path("data").display().to_string());
        assert_contains(&message, "\"*.json\"");
    }

    #[test]
    fn unreadable_base_dir_is_an_io_error_naming_it() {
        let err = parse_edited(|s| {
            let source = json!({"type": "local", "baseDir": "absent", "filter": "*"});
            set(s, "/spec/ioConfig/inputSource", source);
        })
        .unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        assert_contains(&err.to_string(), "cannot read input directory");
        assert_contains(&err.to_string(), "absent");
    }

    #[test]
    fn rejects_a_missing_listed_file() {
        let message = error_of(|s| {
            set(
                s,
                "/spec/ioConfig/inputSource/files",
                json!(["data.json", "gone.json"]),
            );
        });
        assert_contains(&message, "spec.ioConfig.inputSource.files[1]: input file");
        assert_contains(&message, "gone.json does not exist");
    }

    #[test]
    fn rejects_unsupported_input_sources() {
        let message = error_of(|s| {
            set(
                s,
                "/spec/ioConfig/inputSource",
                json!({"type": "s3", "uris": ["s3://b/k"]}),
            );
        });
        assert_contains(
            &message,
            "spec.ioConfig.inputSource.type: unsupported input source type \"s3\"",
        );
        let message = error_of(|s| set(s, "/spec/ioConfig/inputSource", json!({"type": "local"})));
        assert_contains(&message, "spec.ioConfig.inputSource: names no input files");
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

    #[test]
    fn rejects_text_that_is_not_json() {
        let message = IngestionSpec::from_json("{\"type\": ", Path::new("."))
            .unwrap_err()
            .to_string();
        assert_contains(&message, "ingestion spec is not valid JSON");
    }

    #[test]
    fn glob_matches_stars_and_question_marks() {
        assert!(glob_matches("*.json", "a.json"));
        assert!(glob_matches("*.json", ".json"));
        assert!(!glob_matches("*.json", "a.json.gz"));
        assert!(glob_matches("part-??.csv", "part-01.csv"));
        assert!(!glob_matches("part-??.csv", "part-1.csv"));
        assert!(glob_matches("*a*b*", "xaxxbx"));
        assert!(!glob_matches("*a*b", "xaxxbx"));
        assert!(glob_matches("*", ""));
        assert!(glob_matches("[ab].txt", "[ab].txt"));
        assert!(!glob_matches("[ab].txt", "a.txt"));
    }
}
