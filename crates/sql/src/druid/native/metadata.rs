//! The native queries about a datasource rather than its rows' aggregates:
//!
//! - `search`: `[{"timestamp", "result": [{"dimension", "value", "count"}]}]`, the
//!   values of the searched dimensions (every string dimension by default) that match,
//!   with how many rows hold each, sorted by value (or, with `"sort": {"type":
//!   "strlen"}`, by length), at most `limit` (1000) per bucket;
//! - `segmentMetadata`: per segment in the intervals (or one, merged), its id,
//!   interval, columns (type, cardinality of strings, min and max), size and rows,
//!   from the segments' descriptors, without reading them;
//! - `dataSourceMetadata`: `[{"timestamp", "result": {"maxIngestedEventTime"}}]`.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, cast, lit};
use datafusion::prelude::{DataFrame, ident};
use grove_cluster::segments::{ColumnSchema, SegmentDescriptor};
use grove_segment::format::{ColumnKind, Stat};
use grove_segment::id::format_millis;
use serde_json::Value;

use super::queries::{Json, bucket_row, millis_of};
use super::spec::{DataSource, DataSourceMetadata, Search, SegmentMetadata};
use super::{Planner, filter::plan, format_time, intervals};

const DEFAULT_SEARCH_LIMIT: usize = 1000;

impl Planner<'_> {
    pub async fn search(&self, q: &Search) -> Result<Json> {
        let spans = intervals(&q.common.intervals)?;
        let buckets = self.buckets(&q.granularity)?;
        let frame = self.query_rows(&q.common, &spans).await?;
        // Each searched dimension's name and its value as text.
        let dimensions: Vec<(String, Expr)> = if q.search_dimensions.is_empty() {
            frame
                .schema()
                .fields()
                .iter()
                .filter(|f| f.name() != "__time" && is_text(f.data_type()))
                .map(|f| (f.name().clone(), cast(ident(f.name()), DataType::Utf8)))
                .collect()
        } else {
            q.search_dimensions
                .iter()
                .map(|d| {
                    Ok((
                        d.output_name().to_string(),
                        self.dimension(d, frame.schema())?,
                    ))
                })
                .collect::<Result<_>>()?
        };
        let count = self.aggregate_function("count")?;
        let mut union: Option<DataFrame> = None;
        for (dimension, value) in &dimensions {
            let mut group: Vec<Expr> = vec![lit(dimension.clone()).alias("dimension")];
            group.push(value.clone().alias("value"));
            if let Some(bucket) = &buckets.expr {
                group.push(bucket.clone().alias("__bucket"));
            }
            let matched = frame
                .clone()
                .filter(self.matches(value.clone(), &q.query)?)?
                .aggregate(group, vec![count.call(vec![lit(1)]).alias("count")])?;
            union = Some(match union {
                None => matched,
                Some(so_far) => so_far.union(matched)?,
            });
        }
        let Some(frame) = union else {
            return Ok(Json::Array(vec![]));
        };
        let by_length = q
            .sort
            .as_ref()
            .and_then(|s| s["type"].as_str())
            .is_some_and(|t| t == "strlen");
        let mut sort = Vec::new();
        if buckets.expr.is_some() {
            sort.push(ident("__bucket").sort(true, false));
        }
        if by_length {
            sort.push(
                self.function("character_length")?
                    .call(vec![ident("value")])
                    .sort(true, false),
            );
        }
        sort.push(ident("value").sort(true, false));
        sort.push(ident("dimension").sort(true, false));
        let batches = frame.sort(sort)?.collect().await?;
        let limit = q.limit.unwrap_or(DEFAULT_SEARCH_LIMIT);
        let mut out: Vec<(Option<i64>, Vec<Json>)> = Vec::new();
        for batch in &batches {
            let names = ["dimension", "value", "count"];
            let columns: Vec<Vec<Value>> = names
                .iter()
                .map(|n| {
                    let column = batch.column_by_name(n).ok_or_else(|| {
                        DataFusionError::Internal(format!("search lost its column {n}"))
                    })?;
                    let field = batch.schema().field_with_name(n)?.clone();
                    crate::druid::json::column_json(column, &field)
                        .map_err(DataFusionError::Execution)
                })
                .collect::<Result<_>>()?;
            let buckets_of = match batch.column_by_name("__bucket") {
                Some(b) => millis_of(b.as_ref())?,
                None => vec![None; batch.num_rows()],
            };
            for row in 0..batch.num_rows() {
                let item = Json::Object(
                    names
                        .iter()
                        .zip(&columns)
                        .map(|(n, c)| (n.to_string(), Json::Value(c[row].clone())))
                        .collect(),
                );
                match out.last_mut() {
                    Some((b, items)) if *b == buckets_of[row] => {
                        if items.len() < limit {
                            items.push(item)
                        }
                    }
                    _ => out.push((buckets_of[row], vec![item])),
                }
            }
        }
        let start = spans.iter().map(|i| i.start).min().unwrap_or(0).max(0);
        let mut answer = Vec::new();
        for (bucket, items) in out {
            let time = match bucket {
                Some(t) => t,
                None => self.first_time(&q.common, &spans).await?.unwrap_or(start),
            };
            answer.push(bucket_row(
                format_time(time, &buckets.zone),
                Json::Array(items),
            ));
        }
        Ok(Json::Array(answer))
    }

    pub async fn data_source_metadata(&self, q: &DataSourceMetadata) -> Result<Json> {
        let spans = vec![grove_segment::id::Interval::ETERNITY];
        let frame = self.rows(&q.data_source, &spans, None, &[]).await?;
        let max = self.aggregate_function("max")?;
        let batches = frame
            .aggregate(
                vec![],
                vec![max.call(vec![ident("__time")]).alias("latest")],
            )?
            .collect()
            .await?;
        let latest = match batches.first() {
            Some(batch) => millis_of(batch.column(0).as_ref())?
                .first()
                .copied()
                .flatten(),
            None => None,
        };
        let Some(latest) = latest else {
            return Ok(Json::Array(vec![]));
        };
        let text = Json::Value(Value::String(format_millis(latest)));
        Ok(Json::Array(vec![bucket_row(
            format_millis(latest),
            Json::Object(vec![("maxIngestedEventTime".into(), text)]),
        )]))
    }

    pub async fn segment_metadata(&self, q: &SegmentMetadata) -> Result<Json> {
        let name = match &q.data_source {
            DataSource::Name(name) => name.clone(),
            DataSource::Object {
                name: Some(name), ..
            } => name.clone(),
            DataSource::Object { .. } => return Err(plan("a dataSource needs a name".into())),
        };
        // Fresh metadata, and the datasource's existence, as every query checks them.
        self.session.datasource(&name).await?;
        let spans = intervals(&q.intervals)?;
        let mut segments: Vec<SegmentDescriptor> = self
            .session
            .metadata()
            .segments(Some(&name))
            .into_iter()
            .filter(|s| s.available && spans.iter().any(|i| i.overlaps(&s.descriptor.id.interval)))
            .map(|s| s.descriptor)
            .collect();
        segments.sort_by(|a, b| a.id.cmp(&b.id));
        if q.merge {
            return Ok(Json::Array(vec![merged(&segments)]));
        }
        Ok(Json::Array(segments.iter().map(segment_analysis).collect()))
    }
}

fn is_text(t: &DataType) -> bool {
    match t {
        DataType::Dictionary(_, value) => is_text(value),
        other => other.is_string(),
    }
}

/// Druid's type name of a stored column.
fn column_type(kind: ColumnKind) -> &'static str {
    match kind {
        ColumnKind::String => "STRING",
        ColumnKind::Double => "DOUBLE",
        ColumnKind::Float => "FLOAT",
        ColumnKind::Time | ColumnKind::Long | ColumnKind::Date | ColumnKind::Timestamp => "LONG",
    }
}

fn stat(value: &Option<Stat>) -> Json {
    Json::Value(match value {
        None => Value::Null,
        Some(Stat::Int(i)) => Value::from(*i),
        Some(Stat::Float(f)) => Value::from(*f),
        Some(Stat::Str(s)) => Value::from(s.clone()),
    })
}

fn column_analysis(column: &ColumnSchema) -> Json {
    let string = column.kind == ColumnKind::String;
    let mut fields = vec![
        (
            "type".to_string(),
            Json::Value(Value::from(column_type(column.kind))),
        ),
        ("hasMultipleValues".into(), Json::Value(Value::Bool(false))),
        (
            "hasNulls".into(),
            Json::Value(Value::Bool(column.null_count.is_none_or(|n| n > 0))),
        ),
        ("size".into(), Json::Value(Value::from(0))),
        (
            "cardinality".into(),
            Json::Value(match (string, column.distinct) {
                (true, Some(d)) => Value::from(d),
                _ => Value::Null,
            }),
        ),
    ];
    if string {
        fields.push(("minValue".into(), stat(&column.min)));
        fields.push(("maxValue".into(), stat(&column.max)));
    }
    fields.push(("errorMessage".into(), Json::Value(Value::Null)));
    Json::Object(fields)
}

fn segment_analysis(d: &SegmentDescriptor) -> Json {
    Json::Object(vec![
        ("id".into(), Json::Value(Value::from(d.id.to_string()))),
        (
            "intervals".into(),
            Json::Array(vec![Json::Value(Value::from(d.id.interval.to_string()))]),
        ),
        (
            "columns".into(),
            Json::Object(
                d.columns
                    .iter()
                    .map(|c| (c.name.clone(), column_analysis(c)))
                    .collect(),
            ),
        ),
        ("aggregators".into(), Json::Value(Value::Null)),
        ("queryGranularity".into(), Json::Value(Value::Null)),
        ("size".into(), Json::Value(Value::from(d.size))),
        ("numRows".into(), Json::Value(Value::from(d.num_rows))),
    ])
}

/// Every segment's analysis as one: their intervals, the columns any has (with the
/// largest cardinality any segment saw), their sizes and rows summed.
fn merged(segments: &[SegmentDescriptor]) -> Json {
    let mut columns: Vec<ColumnSchema> = Vec::new();
    for column in segments.iter().flat_map(|d| &d.columns) {
        match columns.iter_mut().find(|c| c.name == column.name) {
            Some(known) => {
                known.distinct = known.distinct.max(column.distinct);
                known.min = None;
                known.max = None;
            }
            None => columns.push(column.clone()),
        }
    }
    Json::Object(vec![
        ("id".into(), Json::Value(Value::from("merged"))),
        (
            "intervals".into(),
            Json::Array(
                segments
                    .iter()
                    .map(|d| Json::Value(Value::from(d.id.interval.to_string())))
                    .collect(),
            ),
        ),
        (
            "columns".into(),
            Json::Object(
                columns
                    .iter()
                    .map(|c| (c.name.clone(), column_analysis(c)))
                    .collect(),
            ),
        ),
        ("aggregators".into(), Json::Value(Value::Null)),
        ("queryGranularity".into(), Json::Value(Value::Null)),
        (
            "size".into(),
            Json::Value(Value::from(segments.iter().map(|d| d.size).sum::<u64>())),
        ),
        (
            "numRows".into(),
            Json::Value(Value::from(
                segments.iter().map(|d| d.num_rows).sum::<u64>(),
            )),
        ),
    ])
}
