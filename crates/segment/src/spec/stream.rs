//! Druid's Kafka supervisor spec (`{"type": "kafka", "spec": {dataSchema, ioConfig,
//! tuningConfig}}`, or the same sections at the top level as older specs have them),
//! parsed into a typed [`KafkaSupervisorSpec`] with Druid's defaults.
//!
//! The `dataSchema` is read as a batch spec's is. Every other field Grove does not
//! implement is an error naming its path, as in batch specs.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::input::parse_input_format;
use super::json::{JsonPath, invalid_at, parse_object, parse_object_or_default, required};
use super::{
    DimensionSpec, IngestionSpec, InputFormat, InputSource, MetricSpec, RowFilter, TimestampSpec,
    check_section_type, parse_data_schema,
};
use crate::error::{Error, Result};
use crate::granularity::Granularity;
use crate::id::Interval;
use crate::period::Period;

const KAFKA: &str = "kafka";

/// What a supervisor reads: one topic, or every topic matching a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KafkaTopic {
    Name(String),
    /// A regular expression that a whole topic name must match (`topicPattern`), as
    /// Java's `Pattern.matches` reads it.
    Pattern(String),
}

impl KafkaTopic {
    /// The topic, or the pattern: Druid's `stream`.
    pub fn stream(&self) -> &str {
        match self {
            KafkaTopic::Name(name) | KafkaTopic::Pattern(name) => name,
        }
    }

    /// Whether a supervisor of this may read several topics: its partitions are then
    /// named `topic:partition` where Druid names them.
    pub fn is_pattern(&self) -> bool {
        matches!(self, KafkaTopic::Pattern(_))
    }

    /// The names among `topics` this reads, in the order given.
    pub fn select<'a>(&self, topics: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
        match self {
            KafkaTopic::Name(name) => topics.into_iter().filter(|t| t == name).collect(),
            KafkaTopic::Pattern(pattern) => match whole_match(pattern) {
                Ok(regex) => topics.into_iter().filter(|t| regex.is_match(t)).collect(),
                // Checked when the spec was read.
                Err(_) => Vec::new(),
            },
        }
    }
}

/// `pattern` anchored at both ends: a topic matches only as a whole.
fn whole_match(pattern: &str) -> std::result::Result<regex::Regex, regex::Error> {
    regex::Regex::new(&format!("^(?:{pattern})$"))
}

/// A validated Kafka supervisor spec, Druid's defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaSupervisorSpec {
    pub datasource: String,
    pub timestamp: TimestampSpec,
    pub dimensions: Vec<DimensionSpec>,
    pub metrics: Vec<MetricSpec>,
    pub segment_granularity: Granularity,
    pub query_granularity: Granularity,
    pub rollup: bool,
    pub filter: Option<RowFilter>,
    /// How a message's value is read (`valueFormat`, for the `kafka` format).
    pub format: InputFormat,
    /// With Druid's `kafka` input format: the columns a row gets from its record.
    pub record_columns: Option<RecordColumns>,
    pub topic: KafkaTopic,
    /// `consumerProperties["bootstrap.servers"]`.
    pub bootstrap_servers: String,
    /// Reading tasks per replica set; default 1.
    pub task_count: u32,
    /// Replica sets; default 1.
    pub replicas: u32,
    /// How long a task reads before it publishes; default PT1H.
    pub task_duration_ms: i64,
    /// Default PT5S.
    pub start_delay_ms: i64,
    /// How often the supervisor runs; default PT30S.
    pub period_ms: i64,
    /// Where a partition with no committed offset starts; default false (the latest).
    pub use_earliest_offset: bool,
    /// How long publishing may take before the task counts as failed; default PT30M.
    pub completion_timeout_ms: i64,
    pub late_message_rejection_period_ms: Option<i64>,
    pub early_message_rejection_period_ms: Option<i64>,
    /// How long a fetch waits for messages, in ms; default 100.
    pub poll_timeout_ms: u64,
    /// Rows held in memory before a persist; default 150000.
    pub max_rows_in_memory: usize,
    /// Default 5000000.
    pub max_rows_per_segment: usize,
    /// Default 20000000.
    pub max_total_rows: u64,
    /// Default PT10M.
    pub intermediate_persist_period_ms: i64,
    /// How long a task waits for historicals to serve what it published (0: forever);
    /// default 900000 (15 minutes).
    pub handoff_condition_timeout_ms: u64,
    /// Default unlimited.
    pub max_parse_exceptions: u64,
    /// Submitted suspended.
    pub suspended: bool,
}

/// The columns Druid's `kafka` input format adds to each row from its Kafka record:
/// its timestamp (milliseconds), its topic, each header (as UTF-8 text), and, with a
/// `keyFormat`, its key (the first field the key format reads from it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordColumns {
    /// `timestampColumnName`, default `kafka.timestamp`.
    pub timestamp: String,
    /// `topicColumnName`, default `kafka.topic`.
    pub topic: String,
    /// `headerColumnPrefix`, default `kafka.header.`.
    pub header_prefix: String,
    /// `keyColumnName` (default `kafka.key`) and how the key is read; none without a
    /// `keyFormat`.
    pub key: Option<(String, KeyFormat)>,
}

/// How a record's key is read: its first field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormat {
    /// `csv` or `tsv`: the text up to the first delimiter.
    Delimited(u8),
    /// `json`: the first value of the object, as text.
    Json,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawKafkaFormat {
    value_format: Option<Value>,
    timestamp_column_name: Option<String>,
    topic_column_name: Option<String>,
    header_column_prefix: Option<String>,
    header_format: Option<Value>,
    key_format: Option<Value>,
    key_column_name: Option<String>,
}

/// A stream's `inputFormat`: a value format, or Druid's `kafka` format wrapping one.
fn parse_stream_format(
    value: Value,
    path: &JsonPath,
) -> Result<(InputFormat, Option<RecordColumns>)> {
    if value.get("type").and_then(Value::as_str) != Some(KAFKA) {
        return Ok((parse_input_format(value, path)?, None));
    }
    let mut map = match value {
        Value::Object(map) => map,
        _ => return Err(invalid_at(path, "must be an object")),
    };
    map.remove("type");
    let raw: RawKafkaFormat = parse_object(Value::Object(map), path)?;
    let value_path = path.field("valueFormat");
    let format = parse_input_format(required(raw.value_format, &value_path)?, &value_path)?;
    if let Some(header) = raw.header_format {
        let kind = header.get("type").and_then(Value::as_str);
        let encoding = header.get("encoding").and_then(Value::as_str);
        let utf8 = encoding.is_none_or(|e| e.eq_ignore_ascii_case("UTF-8"));
        if kind != Some("string") || !utf8 {
            return Err(invalid_at(
                &path.field("headerFormat"),
                "only {\"type\": \"string\", \"encoding\": \"UTF-8\"} is supported",
            ));
        }
    }
    let key = match raw.key_format {
        None => None,
        Some(format) => {
            let key_path = path.field("keyFormat");
            let kind = match format.get("type").and_then(Value::as_str) {
                Some("csv") => KeyFormat::Delimited(b','),
                Some("tsv") => KeyFormat::Delimited(b'\t'),
                Some("json") => KeyFormat::Json,
                other => {
                    return Err(invalid_at(
                        &key_path.field("type"),
                        format!("unsupported key format {other:?}: expected csv, tsv or json"),
                    ));
                }
            };
            let name = raw.key_column_name.unwrap_or_else(|| "kafka.key".into());
            Some((name, kind))
        }
    };
    let columns = RecordColumns {
        timestamp: raw
            .timestamp_column_name
            .unwrap_or_else(|| "kafka.timestamp".into()),
        topic: raw
            .topic_column_name
            .unwrap_or_else(|| "kafka.topic".into()),
        header_prefix: raw
            .header_column_prefix
            .unwrap_or_else(|| "kafka.header.".into()),
        key,
    };
    Ok((format, Some(columns)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSupervisor {
    #[serde(rename = "type")]
    kind: Option<String>,
    spec: Option<Value>,
    data_schema: Option<Value>,
    io_config: Option<Value>,
    tuning_config: Option<Value>,
    suspended: Option<bool>,
    /// Task context: accepted as long as it is an object, as in batch specs.
    #[serde(rename = "context")]
    _context: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSections {
    data_schema: Option<Value>,
    io_config: Option<Value>,
    tuning_config: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawKafkaIoConfig {
    #[serde(rename = "type")]
    kind: Option<String>,
    topic: Option<String>,
    topic_pattern: Option<String>,
    input_format: Option<Value>,
    consumer_properties: Option<Map<String, Value>>,
    poll_timeout: Option<u64>,
    use_earliest_offset: Option<bool>,
    task_count: Option<u32>,
    replicas: Option<u32>,
    task_duration: Option<String>,
    start_delay: Option<String>,
    period: Option<String>,
    completion_timeout: Option<String>,
    late_message_rejection_period: Option<String>,
    early_message_rejection_period: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawKafkaTuningConfig {
    #[serde(rename = "type")]
    kind: Option<String>,
    max_rows_in_memory: Option<usize>,
    max_rows_per_segment: Option<usize>,
    max_total_rows: Option<u64>,
    intermediate_persist_period: Option<String>,
    handoff_condition_timeout: Option<u64>,
    max_parse_exceptions: Option<u64>,
}

impl KafkaSupervisorSpec {
    /// The spec a streaming task conforms its rows with: its dataSchema, appending,
    /// rows outside `window` (the rejection periods, when given) thrown away.
    pub fn ingestion_spec(&self, window: Option<Interval>) -> IngestionSpec {
        IngestionSpec {
            datasource: self.datasource.clone(),
            timestamp: self.timestamp.clone(),
            dimensions: self.dimensions.clone(),
            metrics: self.metrics.clone(),
            segment_granularity: self.segment_granularity,
            query_granularity: self.query_granularity,
            rollup: self.rollup,
            intervals: window.map(|w| vec![w]),
            filter: self.filter.clone(),
            input: InputSource::Inline {
                data: String::new(),
            },
            format: self.format.clone(),
            append_to_existing: true,
            max_rows_per_segment: self.max_rows_per_segment,
            max_parse_exceptions: self.max_parse_exceptions,
            await_segment_availability_timeout_millis: 0,
            max_num_concurrent_sub_tasks: 1,
        }
    }

    /// Parses a supervisor spec from JSON text.
    pub fn from_json(text: &str) -> Result<KafkaSupervisorSpec> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Error::invalid(format!("supervisor spec is not valid JSON: {e}")))?;
        parse_supervisor(value)
    }
}

fn parse_supervisor(value: Value) -> Result<KafkaSupervisorSpec> {
    let root = JsonPath::root();
    let raw: RawSupervisor = parse_object(value, &root)?;
    let type_path = root.field("type");
    match required(raw.kind, &type_path)?.as_str() {
        KAFKA => {}
        other => {
            return Err(invalid_at(
                &type_path,
                format!("unsupported supervisor type {other:?}: only \"kafka\" is supported"),
            ));
        }
    }
    // Druid takes the sections inside `spec` or, as older specs have them, beside it.
    let (sections, spec_path) = match raw.spec {
        Some(spec) => {
            let spec_path = root.field("spec");
            if raw.data_schema.is_some() || raw.io_config.is_some() || raw.tuning_config.is_some() {
                return Err(invalid_at(
                    &root,
                    "give dataSchema, ioConfig and tuningConfig inside spec, not beside it",
                ));
            }
            (parse_object::<RawSections>(spec, &spec_path)?, spec_path)
        }
        None => (
            RawSections {
                data_schema: raw.data_schema,
                io_config: raw.io_config,
                tuning_config: raw.tuning_config,
            },
            JsonPath::root(),
        ),
    };
    let schema_path = spec_path.field("dataSchema");
    let schema = parse_data_schema(required(sections.data_schema, &schema_path)?, &schema_path)?;
    if schema.granularity.intervals.is_some() {
        return Err(invalid_at(
            &schema_path.field("granularitySpec").field("intervals"),
            "a stream has no fixed intervals; use lateMessageRejectionPeriod and \
             earlyMessageRejectionPeriod",
        ));
    }
    let io_path = spec_path.field("ioConfig");
    let io: RawKafkaIoConfig = parse_object(required(sections.io_config, &io_path)?, &io_path)?;
    check_section_type(io.kind.as_deref(), KAFKA, &io_path.field("type"))?;
    let topic = match (io.topic, io.topic_pattern) {
        (Some(t), None) if !t.is_empty() => KafkaTopic::Name(t),
        (None, Some(p)) if !p.is_empty() => match whole_match(&p) {
            Ok(_) => KafkaTopic::Pattern(p),
            Err(e) => {
                return Err(invalid_at(
                    &io_path.field("topicPattern"),
                    format!("not a regular expression: {e}"),
                ));
            }
        },
        (Some(_), Some(_)) => {
            return Err(invalid_at(&io_path, "give topic or topicPattern, not both"));
        }
        _ => return Err(invalid_at(&io_path, "give topic (or topicPattern)")),
    };
    let format_path = io_path.field("inputFormat");
    let (format, record_columns) =
        parse_stream_format(required(io.input_format, &format_path)?, &format_path)?;
    if format == InputFormat::Parquet {
        return Err(invalid_at(
            &format_path.field("type"),
            "a stream's messages are read as json or csv",
        ));
    }
    let bootstrap_servers = bootstrap_servers(io.consumer_properties, &io_path)?;
    let duration = |text: Option<String>, field: &str, default: &str| -> Result<i64> {
        fixed_period(text.as_deref().unwrap_or(default), &io_path.field(field))
    };
    let optional = |text: Option<String>, field: &str| -> Result<Option<i64>> {
        text.map(|t| fixed_period(&t, &io_path.field(field)))
            .transpose()
    };
    let task_count = positive(io.task_count.unwrap_or(1), &io_path.field("taskCount"))?;
    let replicas = positive(io.replicas.unwrap_or(1), &io_path.field("replicas"))?;
    let io_parts = (
        duration(io.task_duration, "taskDuration", "PT1H")?,
        duration(io.start_delay, "startDelay", "PT5S")?,
        duration(io.period, "period", "PT30S")?,
        duration(io.completion_timeout, "completionTimeout", "PT30M")?,
        optional(
            io.late_message_rejection_period,
            "lateMessageRejectionPeriod",
        )?,
        optional(
            io.early_message_rejection_period,
            "earlyMessageRejectionPeriod",
        )?,
    );

    let tuning_path = spec_path.field("tuningConfig");
    let tuning: RawKafkaTuningConfig =
        parse_object_or_default(sections.tuning_config, &tuning_path)?;
    check_section_type(tuning.kind.as_deref(), KAFKA, &tuning_path.field("type"))?;
    let max_rows_in_memory = tuning.max_rows_in_memory.unwrap_or(150_000);
    let max_rows_per_segment = tuning.max_rows_per_segment.unwrap_or(5_000_000);
    for (value, field) in [
        (max_rows_in_memory, "maxRowsInMemory"),
        (max_rows_per_segment, "maxRowsPerSegment"),
    ] {
        if value == 0 {
            return Err(invalid_at(
                &tuning_path.field(field),
                "must be greater than 0",
            ));
        }
    }
    let persist = tuning.intermediate_persist_period;
    let intermediate_persist_period_ms = fixed_period(
        persist.as_deref().unwrap_or("PT10M"),
        &tuning_path.field("intermediatePersistPeriod"),
    )?;
    Ok(KafkaSupervisorSpec {
        datasource: schema.datasource,
        timestamp: schema.timestamp,
        dimensions: schema.dimensions,
        metrics: schema.metrics,
        segment_granularity: schema.granularity.segment,
        query_granularity: schema.granularity.query,
        rollup: schema.granularity.rollup,
        filter: schema.filter,
        format,
        record_columns,
        topic,
        bootstrap_servers,
        task_count,
        replicas,
        task_duration_ms: io_parts.0,
        start_delay_ms: io_parts.1,
        period_ms: io_parts.2,
        use_earliest_offset: io.use_earliest_offset.unwrap_or(false),
        completion_timeout_ms: io_parts.3,
        late_message_rejection_period_ms: io_parts.4,
        early_message_rejection_period_ms: io_parts.5,
        poll_timeout_ms: io.poll_timeout.unwrap_or(100),
        max_rows_in_memory,
        max_rows_per_segment,
        max_total_rows: tuning.max_total_rows.unwrap_or(20_000_000),
        intermediate_persist_period_ms,
        handoff_condition_timeout_ms: tuning.handoff_condition_timeout.unwrap_or(900_000),
        max_parse_exceptions: tuning.max_parse_exceptions.unwrap_or(u64::MAX),
        suspended: raw.suspended.unwrap_or(false),
    })
}

/// `consumerProperties` holds the brokers' addresses and nothing else Grove would have
/// to honour (security settings, client tuning): those are refused by name.
fn bootstrap_servers(properties: Option<Map<String, Value>>, io_path: &JsonPath) -> Result<String> {
    let path = io_path.field("consumerProperties");
    let mut properties = required(properties, &path)?;
    let servers_path = path.field("bootstrap.servers");
    let servers = match properties.remove("bootstrap.servers") {
        Some(Value::String(s)) if !s.trim().is_empty() => s,
        Some(_) => return Err(invalid_at(&servers_path, "must be a non-empty string")),
        None => {
            return Err(Error::invalid(format!(
                "missing required field \"{servers_path}\""
            )));
        }
    };
    if let Some(other) = properties.keys().next() {
        return Err(invalid_at(
            &path.field(other),
            "not supported: Grove reads Kafka over plain TCP with bootstrap.servers only",
        ));
    }
    Ok(servers)
}

/// A duration in milliseconds: a period without months or years.
fn fixed_period(text: &str, path: &JsonPath) -> Result<i64> {
    let period = Period::parse(text).map_err(|e| invalid_at(path, e))?;
    if period.months != 0 {
        return Err(invalid_at(
            path,
            format!("{text} has months or years, which have no fixed length"),
        ));
    }
    Ok(period.millis)
}

fn positive(value: u32, path: &JsonPath) -> Result<u32> {
    if value == 0 {
        Err(invalid_at(path, "must be at least 1"))
    } else {
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::spec::fixture::assert_contains;

    /// The Kafka example of Druid's documentation (supervisor.md), its dimensions
    /// named (Grove has no schemaless dimension discovery).
    fn documented() -> Value {
        json!({
            "type": "kafka",
            "spec": {
                "dataSchema": {
                    "dataSource": "metrics-kafka",
                    "timestampSpec": {"column": "timestamp", "format": "auto"},
                    "dimensionsSpec": {"dimensions": ["host", "service"]},
                    "metricsSpec": [
                        {"name": "count", "type": "count"},
                        {"name": "value_sum", "fieldName": "value", "type": "doubleSum"},
                        {"name": "value_min", "fieldName": "value", "type": "doubleMin"},
                        {"name": "value_max", "fieldName": "value", "type": "doubleMax"}
                    ],
                    "granularitySpec": {"type": "uniform", "segmentGranularity": "HOUR", "queryGranularity": "NONE"}
                },
                "ioConfig": {
                    "topic": "metrics",
                    "inputFormat": {"type": "json"},
                    "consumerProperties": {"bootstrap.servers": "localhost:9092"},
                    "taskCount": 1,
                    "replicas": 1,
                    "taskDuration": "PT1H"
                },
                "tuningConfig": {"type": "kafka", "maxRowsPerSegment": 5000000}
            }
        })
    }

    fn error_of(edit: impl FnOnce(&mut Value)) -> String {
        let mut spec = documented();
        edit(&mut spec);
        KafkaSupervisorSpec::from_json(&spec.to_string())
            .expect_err("the spec must be refused")
            .to_string()
    }

    #[test]
    fn the_documented_spec_parses_with_druids_defaults() {
        let spec = KafkaSupervisorSpec::from_json(&documented().to_string()).unwrap();
        assert_eq!(spec.datasource, "metrics-kafka");
        assert_eq!(spec.topic, KafkaTopic::Name("metrics".into()));
        assert_eq!(spec.bootstrap_servers, "localhost:9092");
        assert_eq!(spec.segment_granularity, Granularity::Hour);
        assert_eq!(spec.metrics.len(), 4);
        assert_eq!(
            (spec.task_count, spec.replicas, spec.task_duration_ms),
            (1, 1, 3_600_000)
        );
        assert_eq!((spec.start_delay_ms, spec.period_ms), (5_000, 30_000));
        assert_eq!(spec.completion_timeout_ms, 30 * 60_000);
        assert!(!spec.use_earliest_offset && !spec.suspended);
        assert_eq!(spec.late_message_rejection_period_ms, None);
        assert_eq!(spec.poll_timeout_ms, 100);
        assert_eq!(
            (
                spec.max_rows_in_memory,
                spec.max_rows_per_segment,
                spec.max_total_rows
            ),
            (150_000, 5_000_000, 20_000_000)
        );
        assert_eq!(spec.intermediate_persist_period_ms, 600_000);
        assert_eq!(spec.handoff_condition_timeout_ms, 900_000);
        assert_eq!(spec.max_parse_exceptions, u64::MAX);

        // The older form, sections beside `type`, means the same.
        let mut flat = documented();
        let sections = flat["spec"].take();
        let mut flat_map = sections.as_object().unwrap().clone();
        flat_map.insert("type".into(), json!("kafka"));
        flat = Value::Object(flat_map);
        assert_eq!(
            KafkaSupervisorSpec::from_json(&flat.to_string()).unwrap(),
            spec
        );
    }

    #[test]
    fn what_grove_does_not_do_is_refused_by_name() {
        let cases = [
            (
                "/type",
                json!("kinesis"),
                "type: unsupported supervisor type \"kinesis\"",
            ),
            (
                "/spec/ioConfig/consumerProperties/security.protocol",
                json!("SSL"),
                "spec.ioConfig.consumerProperties.security.protocol: not supported",
            ),
            (
                "/spec/ioConfig/autoScalerConfig",
                json!({}),
                "autoScalerConfig",
            ),
            (
                "/spec/ioConfig/taskDuration",
                json!("P1M"),
                "spec.ioConfig.taskDuration: P1M has months",
            ),
            (
                "/spec/ioConfig/topicPattern",
                json!("metrics-.*"),
                "topic or topicPattern, not both",
            ),
            (
                "/spec/ioConfig/replicas",
                json!(0),
                "spec.ioConfig.replicas: must be at least 1",
            ),
            (
                "/spec/tuningConfig/type",
                json!("index_parallel"),
                "spec.tuningConfig.type",
            ),
            (
                "/spec/tuningConfig/maxBytesInMemory",
                json!(1),
                "maxBytesInMemory",
            ),
            (
                "/spec/dataSchema/granularitySpec/intervals",
                json!(["2024-01-01/2024-01-02"]),
                "spec.dataSchema.granularitySpec.intervals: a stream has no fixed intervals",
            ),
            (
                "/spec/ioConfig/inputFormat",
                json!({"type": "parquet"}),
                "spec.ioConfig.inputFormat.type",
            ),
            (
                "/spec/ioConfig/consumerProperties",
                json!({}),
                "missing required field \"spec.ioConfig.consumerProperties.bootstrap.servers\"",
            ),
        ];
        for (pointer, value, expected) in cases {
            let message = error_of(|spec| {
                let (parent, field) = pointer.rsplit_once('/').unwrap();
                let target = if parent.is_empty() {
                    spec
                } else {
                    spec.pointer_mut(parent).unwrap()
                };
                target[field] = value;
            });
            assert_contains(&message, expected);
        }
    }

    #[test]
    fn a_topic_pattern_selects_whole_topic_names() {
        let mut spec = documented();
        let io = spec["spec"]["ioConfig"].as_object_mut().unwrap();
        io.remove("topic");
        io.insert("topicPattern".into(), json!("metrics-(eu|us)"));
        let spec = KafkaSupervisorSpec::from_json(&spec.to_string()).unwrap();
        assert!(spec.topic.is_pattern());
        assert_eq!(spec.topic.stream(), "metrics-(eu|us)");
        let topics = [
            "metrics-eu",
            "metrics-us",
            "metrics-eu-old",
            "old-metrics-us",
            "x",
        ];
        assert_eq!(spec.topic.select(topics), ["metrics-eu", "metrics-us"]);
        let one = KafkaTopic::Name("x".into());
        assert_eq!(one.select(topics), ["x"]);

        let message = error_of(|spec| {
            let io = spec["spec"]["ioConfig"].as_object_mut().unwrap();
            io.remove("topic");
            io.insert("topicPattern".into(), json!("metrics-(eu"));
        });
        assert_contains(
            &message,
            "spec.ioConfig.topicPattern: not a regular expression",
        );
    }

    #[test]
    fn the_kafka_format_reads_values_with_its_format_and_names_record_columns() {
        let mut spec = documented();
        spec["spec"]["ioConfig"]["inputFormat"] = json!({
            "type": "kafka",
            "valueFormat": {"type": "json"},
            "keyFormat": {"type": "tsv", "columns": ["k"]},
            "headerColumnPrefix": "h."
        });
        let parsed = KafkaSupervisorSpec::from_json(&spec.to_string()).unwrap();
        assert_eq!(parsed.format, InputFormat::Json);
        assert_eq!(
            parsed.record_columns,
            Some(RecordColumns {
                timestamp: "kafka.timestamp".into(),
                topic: "kafka.topic".into(),
                header_prefix: "h.".into(),
                key: Some(("kafka.key".into(), KeyFormat::Delimited(b'\t'))),
            })
        );
        // Without a key format there is no key column; a plain format has no record
        // columns at all.
        spec["spec"]["ioConfig"]["inputFormat"] =
            json!({"type": "kafka", "valueFormat": {"type": "csv", "columns": ["a", "b"]}});
        let parsed = KafkaSupervisorSpec::from_json(&spec.to_string()).unwrap();
        assert_eq!(parsed.record_columns.and_then(|c| c.key), None);
        let plain = KafkaSupervisorSpec::from_json(&documented().to_string()).unwrap();
        assert_eq!(plain.record_columns, None);

        for (format, named) in [
            (json!({"type": "kafka"}), "valueFormat"),
            (
                json!({"type": "kafka", "valueFormat": {"type": "json"}, "headerFormat": {"type": "string", "encoding": "ISO-8859-1"}}),
                "headerFormat",
            ),
            (
                json!({"type": "kafka", "valueFormat": {"type": "json"}, "keyFormat": {"type": "avro"}}),
                "keyFormat.type",
            ),
            (
                json!({"type": "kafka", "valueFormat": {"type": "json"}, "valueSchema": {}}),
                "valueSchema",
            ),
        ] {
            spec["spec"]["ioConfig"]["inputFormat"] = format;
            let refused = KafkaSupervisorSpec::from_json(&spec.to_string()).unwrap_err();
            assert_contains(&refused.to_string(), named);
        }
    }
}
