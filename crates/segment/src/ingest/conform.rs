//! Turning input rows into the rows a segment stores: each row's time parsed by the
//! timestampSpec (a row whose time does not parse is a parse exception), the
//! transformSpec filter and granularitySpec intervals applied, time truncated to the
//! query granularity, and dimensions and metric inputs cast to their types.
//!
//! Dimension and metric values that do not convert to their type become NULL, as in
//! Druid; only an unparseable time (or an unreadable row) is a parse exception.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, StringArray, TimestampMillisecondArray, UInt32Array,
    new_null_array,
};
use arrow::compute::{CastOptions, cast, cast_with_options, take};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit, TimestampMillisecondType};

use super::Progress;
use super::chunk::Layout;
use super::input::InputBatch;
use crate::error::Result;
use crate::format::{ColumnRole, TIME_COLUMN};
use crate::granularity::Granularity;
use crate::id::{Interval, parse_instant};
use crate::spec::{
    Aggregator, DimensionKind, IngestionSpec, RowFilter, TimestampFormat, TimestampSpec,
};

/// Rows ready for a chunk builder, and the parse exceptions met on the way.
pub struct Conformed {
    pub batch: RecordBatch,
    pub exceptions: Vec<(String, String)>,
}

pub struct Conformer {
    timestamp: TimestampSpec,
    dimensions: Vec<(String, DataType)>,
    /// Output name, input field (None for count), input type.
    metrics: Vec<(String, Aggregator, Option<String>)>,
    filter: Option<RowFilter>,
    intervals: Option<Vec<Interval>>,
    query_granularity: Granularity,
    rollup: bool,
    max_rows: usize,
}

const UTC_MILLIS: DataType = DataType::Timestamp(TimeUnit::Millisecond, None);

fn utc_millis() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

pub fn dimension_type(kind: DimensionKind) -> DataType {
    match kind {
        DimensionKind::String => DataType::Utf8,
        DimensionKind::Long => DataType::Int64,
        DimensionKind::Double => DataType::Float64,
        DimensionKind::Float => DataType::Float32,
        DimensionKind::Date => DataType::Date32,
        DimensionKind::Timestamp => utc_millis(),
    }
}

/// The type a metric's input is accumulated in, and the type it is stored as.
fn metric_types(aggregator: Aggregator) -> (DataType, DataType) {
    use Aggregator::*;
    match aggregator {
        Count | LongSum | LongMin | LongMax => (DataType::Int64, DataType::Int64),
        DoubleSum | DoubleMin | DoubleMax => (DataType::Float64, DataType::Float64),
        FloatSum | FloatMin | FloatMax => (DataType::Float64, DataType::Float32),
    }
}

/// The time column of a conformed batch.
pub fn times(batch: &RecordBatch) -> &[i64] {
    batch
        .column(0)
        .as_primitive::<TimestampMillisecondType>()
        .values()
}

/// The rows of a conformed batch by the time chunk of `granularity` they fall in
/// (each chunk's start), in chunk order; the batch itself when all fall in one.
pub fn split_by_chunk(
    batch: &RecordBatch,
    granularity: crate::granularity::Granularity,
) -> Result<Vec<(i64, RecordBatch)>> {
    let mut rows_of: std::collections::BTreeMap<i64, Vec<u32>> = Default::default();
    for (row, t) in times(batch).iter().enumerate() {
        rows_of
            .entry(granularity.truncate(*t))
            .or_default()
            .push(row as u32);
    }
    if rows_of.len() == 1 {
        return Ok(rows_of
            .into_keys()
            .map(|start| (start, batch.clone()))
            .collect());
    }
    rows_of
        .into_iter()
        .map(|(start, rows)| {
            let part =
                arrow::compute::take_record_batch(batch, &arrow::array::UInt32Array::from(rows))?;
            Ok((start, part))
        })
        .collect()
}

impl Conformer {
    pub fn new(spec: &IngestionSpec) -> Self {
        Conformer {
            timestamp: spec.timestamp.clone(),
            dimensions: spec
                .dimensions
                .iter()
                .map(|d| (d.name.clone(), dimension_type(d.kind)))
                .collect(),
            metrics: spec
                .metrics
                .iter()
                .map(|m| (m.name.clone(), m.aggregator, m.field.clone()))
                .collect(),
            filter: spec.filter.clone(),
            intervals: spec.intervals.clone(),
            query_granularity: spec.query_granularity,
            rollup: spec.rollup,
            max_rows: spec.max_rows_per_segment,
        }
    }

    /// The segments' schema and how chunk builders read conformed batches.
    pub fn layout(&self) -> Layout {
        let mut fields = vec![Field::new(TIME_COLUMN, utc_millis(), false)];
        let mut roles = vec![ColumnRole::Time];
        for (name, data_type) in &self.dimensions {
            fields.push(Field::new(name, data_type.clone(), true));
            roles.push(ColumnRole::Dimension);
        }
        for (name, aggregator, _) in &self.metrics {
            fields.push(Field::new(name, metric_types(*aggregator).1, true));
            roles.push(ColumnRole::Metric);
        }
        Layout {
            schema: Arc::new(Schema::new(fields)),
            roles,
            dimensions: self.dimensions.len(),
            metrics: self.metrics.iter().map(|m| m.1).collect(),
            rollup: self.rollup,
            max_rows: self.max_rows,
        }
    }

    /// The type readers that choose types (JSON) should read a column as.
    pub fn read_type(&self, name: &str) -> DataType {
        if name == self.timestamp.column {
            return DataType::Utf8;
        }
        if let Some((_, t)) = self.dimensions.iter().find(|(n, _)| n == name) {
            return match t {
                DataType::Int64 | DataType::Float64 | DataType::Float32 => t.clone(),
                _ => DataType::Utf8,
            };
        }
        match self.metrics.iter().find(|m| m.2.as_deref() == Some(name)) {
            Some((_, aggregator, _)) => metric_types(*aggregator).0,
            None => DataType::Utf8,
        }
    }

    pub fn conform(&self, input: &InputBatch, progress: &mut Progress) -> Result<Conformed> {
        let batch = &input.batch;
        let n = batch.num_rows();
        let keep_by_filter = match &self.filter {
            Some(filter) => evaluate_filter(filter, batch)?,
            None => vec![true; n],
        };
        let parsed = self.parse_times(batch)?;
        let mut exceptions = Vec::new();
        let mut rows = Vec::with_capacity(n);
        let mut times = Vec::with_capacity(n);
        for (row, (keep, time)) in keep_by_filter.into_iter().zip(parsed).enumerate() {
            if !keep {
                progress.rows_filtered += 1;
                continue;
            }
            let t = match time.and_then(in_range) {
                Ok(t) => t,
                Err(reason) => {
                    exceptions.push((input.origin.describe(row), reason));
                    continue;
                }
            };
            let wanted = self
                .intervals
                .as_ref()
                .is_none_or(|ivs| ivs.iter().any(|iv| iv.contains(t)));
            if !wanted {
                progress.rows_thrown_away += 1;
                continue;
            }
            rows.push(row as u32);
            times.push(self.query_granularity.truncate(t));
        }
        let indices = UInt32Array::from(rows);
        let mut columns: Vec<ArrayRef> = vec![Arc::new(
            TimestampMillisecondArray::from(times).with_timezone("UTC"),
        )];
        for (name, data_type) in &self.dimensions {
            columns.push(select(batch, name, data_type, &indices)?);
        }
        for (_, aggregator, field) in &self.metrics {
            if let Some(field) = field {
                columns.push(select(
                    batch,
                    field,
                    &metric_types(*aggregator).0,
                    &indices,
                )?);
            }
        }
        let fields: Vec<Field> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| Field::new(format!("c{i}"), c.data_type().clone(), i > 0))
            .collect();
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
        Ok(Conformed { batch, exceptions })
    }

    /// Each row's time in UTC milliseconds, or why it has none.
    fn parse_times(&self, batch: &RecordBatch) -> Result<Vec<Result<i64, String>>> {
        let spec = &self.timestamp;
        let missing = |what: &str| {
            spec.missing_value.ok_or_else(|| {
                format!(
                    "{what} timestamp column {:?} and no missingValue",
                    spec.column
                )
            })
        };
        let Some(column) = batch.column_by_name(&spec.column) else {
            return Ok(vec![missing("no"); batch.num_rows()]);
        };
        let format = spec.format;
        let parse_text = |text: &str| parse_time_text(text, format);
        let values: Vec<Result<i64, String>> = match column.data_type() {
            DataType::Int64
            | DataType::Int32
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Int16 => {
                let ints = cast(column, &DataType::Int64)?;
                ints.as_primitive::<Int64Type>()
                    .iter()
                    .map(|v| v.map_or_else(|| missing("null"), |v| Ok(scale_number(v, format))))
                    .collect()
            }
            DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => {
                let ms = cast(column, &UTC_MILLIS)?;
                ms.as_primitive::<TimestampMillisecondType>()
                    .iter()
                    .map(|v| v.map_or_else(|| missing("null"), Ok))
                    .collect()
            }
            _ => {
                let text = cast(column, &DataType::Utf8)?;
                let text: &StringArray = text.as_string::<i32>();
                text.iter()
                    .map(|v| v.map_or_else(|| missing("null"), parse_text))
                    .collect()
            }
        };
        Ok(values)
    }
}

/// Times Grove can bucket and print: the range of calendar dates chrono supports.
fn in_range(t: i64) -> Result<i64, String> {
    let (min, max) = (
        chrono::DateTime::<chrono::Utc>::MIN_UTC.timestamp_millis(),
        chrono::DateTime::<chrono::Utc>::MAX_UTC.timestamp_millis(),
    );
    if (min..=max).contains(&t) {
        Ok(t)
    } else {
        Err(format!("timestamp {t} ms is out of range"))
    }
}

/// Numbers are milliseconds, or seconds for `posix`.
fn scale_number(v: i64, format: TimestampFormat) -> i64 {
    match format {
        TimestampFormat::Posix => v.saturating_mul(1000),
        _ => v,
    }
}

fn parse_time_text(text: &str, format: TimestampFormat) -> Result<i64, String> {
    let bad = || {
        format!(
            "timestamp {text:?} does not parse as {}",
            format_name(format)
        )
    };
    let text = text.trim();
    let numeric = !text.is_empty()
        && text
            .trim_start_matches('-')
            .bytes()
            .all(|b| b.is_ascii_digit());
    match format {
        TimestampFormat::Millis => text.parse::<i64>().map_err(|_| bad()),
        TimestampFormat::Posix => text
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite())
            .map(|s| (s * 1000.0).round() as i64)
            .ok_or_else(bad),
        TimestampFormat::Iso => parse_instant(text).map_err(|_| bad()),
        TimestampFormat::Auto if numeric => text.parse::<i64>().map_err(|_| bad()),
        TimestampFormat::Auto => parse_instant(text).map_err(|_| bad()),
    }
}

fn format_name(format: TimestampFormat) -> &'static str {
    match format {
        TimestampFormat::Iso => "iso",
        TimestampFormat::Millis => "millis",
        TimestampFormat::Posix => "posix",
        TimestampFormat::Auto => "auto (ISO-8601 or milliseconds)",
    }
}

/// Column `name` of the kept rows, as `data_type`; NULL where absent or unconvertible.
fn select(
    batch: &RecordBatch,
    name: &str,
    data_type: &DataType,
    rows: &UInt32Array,
) -> Result<ArrayRef> {
    let Some(column) = batch.column_by_name(name) else {
        return Ok(new_null_array(data_type, rows.len()));
    };
    let column = if rows.len() == batch.num_rows() {
        // Every row kept (the common case): no copy.
        Arc::clone(column)
    } else {
        take(column, rows, None)?
    };
    let options = CastOptions {
        safe: true,
        ..CastOptions::default()
    };
    // Strings holding times or dates go through the same parser as the time column, so
    // that "2024-01-01T00:00:00Z" and "2024-01-01" both load.
    if matches!(data_type, DataType::Timestamp(..) | DataType::Date32)
        && column.data_type().is_string()
    {
        return parse_temporal_strings(&column, data_type);
    }
    Ok(cast_with_options(&column, data_type, &options)?)
}

fn parse_temporal_strings(column: &ArrayRef, data_type: &DataType) -> Result<ArrayRef> {
    let text = cast(column, &DataType::Utf8)?;
    let millis: TimestampMillisecondArray = text
        .as_string::<i32>()
        .iter()
        .map(|v| v.and_then(|v| parse_instant(v).ok()))
        .collect();
    let millis: ArrayRef = Arc::new(millis.with_timezone("UTC"));
    Ok(cast(&millis, data_type)?)
}

/// Rows passing a transformSpec filter. Values compare as strings, as Druid's
/// selector filter does; NULL matches only a null `value`.
fn evaluate_filter(filter: &RowFilter, batch: &RecordBatch) -> Result<Vec<bool>> {
    let n = batch.num_rows();
    let strings = |dimension: &str| -> Result<Option<ArrayRef>> {
        batch
            .column_by_name(dimension)
            .map(|c| cast(c, &DataType::Utf8))
            .transpose()
            .map_err(Into::into)
    };
    let matches = |dimension: &str, wanted: &[Option<String>]| -> Result<Vec<bool>> {
        Ok(match strings(dimension)? {
            Some(column) => column
                .as_string::<i32>()
                .iter()
                .map(|v| wanted.iter().any(|w| w.as_deref() == v))
                .collect(),
            None => vec![wanted.contains(&None); n],
        })
    };
    Ok(match filter {
        RowFilter::Selector { dimension, value } => {
            matches(dimension, std::slice::from_ref(value))?
        }
        RowFilter::In { dimension, values } => matches(dimension, values)?,
        RowFilter::IsNull { dimension } => matches(dimension, &[None])?,
        RowFilter::Not(inner) => evaluate_filter(inner, batch)?
            .into_iter()
            .map(|b| !b)
            .collect(),
        RowFilter::And(parts) => combine(parts, batch, true)?,
        RowFilter::Or(parts) => combine(parts, batch, false)?,
    })
}

fn combine(parts: &[RowFilter], batch: &RecordBatch, all: bool) -> Result<Vec<bool>> {
    let mut acc = vec![all; batch.num_rows()];
    for part in parts {
        for (a, b) in acc.iter_mut().zip(evaluate_filter(part, batch)?) {
            *a = if all { *a && b } else { *a || b };
        }
    }
    Ok(acc)
}
