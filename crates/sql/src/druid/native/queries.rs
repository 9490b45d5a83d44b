//! Each native query's plan and its answer, in the shapes Druid's docs give:
//!
//! - `timeseries`: `[{"timestamp", "result": {aggregates...}}]`, a row per bucket,
//!   the empty buckets between the first and the last filled (a `count` with 0, the
//!   others with null) unless the context says `skipEmptyBuckets`, and with the
//!   context's `grandTotal` a last row of the totals with a null timestamp;
//! - `topN`: `[{"timestamp", "result": [{dimension, aggregates...}, ...]}]`, at most
//!   `threshold` rows per bucket;
//! - `groupBy`: `[{"version": "v1", "timestamp", "event": {...}}]`;
//! - `scan`: `[{"segmentId": null, "columns", "events"}]`, one batch of every row, each
//!   an object (`list`) or an array (`compactedList`), `__time` in milliseconds;
//! - `timeBoundary`: `[{"timestamp", "result": {"minTime", "maxTime"}}]`.
//!
//! With granularity `all`, timeseries and topN carry the first time of the data in
//! the query's intervals (or the intervals' start, if later), groupBy the intervals'
//! start. Times are in the granularity's zone.

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampMillisecondType};
use datafusion::common::{DFSchema, DataFusionError, Result};
use datafusion::logical_expr::{Expr, ExprFunctionExt, SortExpr, cast as cast_expr, lit};
use datafusion::prelude::{DataFrame, ident};
use grove_segment::id::Interval;
use serde_json::Value;

use super::filter::{all_of, any_of, plan};
use super::spec::{
    Aggregator, Common, GroupBy, Having, OrderByColumn, PostAggregator, Scan, ScanFormat,
    ScanOrder, TimeBoundary, Timeseries, TopN, TopNMetric, TopNMetricSpec,
};
use super::{Planner, format_time, intervals};
use crate::druid::json::column_json;

/// JSON whose objects keep their keys in order, as Druid writes them.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Value(Value),
    Object(Vec<(String, Json)>),
    Array(Vec<Json>),
}

impl Json {
    pub fn write(&self, out: &mut String) {
        match self {
            Json::Value(v) => out.push_str(&v.to_string()),
            Json::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Json::Object(pairs) => {
                out.push('{');
                for (i, (key, value)) in pairs.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::from(key.as_str()).to_string());
                    out.push(':');
                    value.write(out);
                }
                out.push('}');
            }
        }
    }

    /// Written as Druid writes `?pretty` answers (Jackson's default pretty printer):
    /// objects one key per line indented by two spaces, arrays on one line.
    pub fn write_pretty(&self, out: &mut String, depth: usize) {
        match self {
            Json::Value(Value::Array(items)) => {
                Json::Array(items.iter().cloned().map(Json::Value).collect())
                    .write_pretty(out, depth);
            }
            Json::Value(Value::Object(map)) => Json::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), Json::Value(v.clone())))
                    .collect(),
            )
            .write_pretty(out, depth),
            Json::Value(v) => out.push_str(&v.to_string()),
            Json::Array(items) if items.is_empty() => out.push_str("[ ]"),
            Json::Array(items) => {
                out.push_str("[ ");
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.write_pretty(out, depth);
                }
                out.push_str(" ]");
            }
            Json::Object(pairs) if pairs.is_empty() => out.push_str("{ }"),
            Json::Object(pairs) => {
                out.push('{');
                for (i, (key, value)) in pairs.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push('\n');
                    out.push_str(&"  ".repeat(depth + 1));
                    out.push_str(&Value::from(key.as_str()).to_string());
                    out.push_str(" : ");
                    value.write_pretty(out, depth + 1);
                }
                out.push('\n');
                out.push_str(&"  ".repeat(depth));
                out.push('}');
            }
        }
    }

    fn text(text: String) -> Json {
        Json::Value(Value::String(text))
    }
}

/// Rows of batches: each a map of column name to JSON value, in column order.
struct Rows {
    names: Vec<String>,
    rows: Vec<Vec<Value>>,
    /// Each row's bucket in milliseconds, when the rows have `__bucket`.
    buckets: Vec<Option<i64>>,
}

impl Rows {
    fn of(batches: &[RecordBatch]) -> Result<Rows> {
        let mut out = Rows {
            names: Vec::new(),
            rows: Vec::new(),
            buckets: Vec::new(),
        };
        for batch in batches {
            let schema = batch.schema();
            out.names = schema.fields().iter().map(|f| f.name().clone()).collect();
            let columns: Vec<Vec<Value>> = batch
                .columns()
                .iter()
                .zip(schema.fields())
                .map(|(c, f)| column_json(c, f).map_err(DataFusionError::Execution))
                .collect::<Result<_>>()?;
            for i in 0..batch.num_rows() {
                out.rows.push(
                    columns
                        .iter()
                        .map(|c| c.get(i).cloned().unwrap_or(Value::Null))
                        .collect(),
                );
            }
            if let Some(bucket) = batch.column_by_name(BUCKET) {
                out.buckets.extend(millis_of(bucket)?);
            }
        }
        Ok(out)
    }

    fn get(&self, row: usize, name: &str) -> Value {
        self.names
            .iter()
            .position(|n| n == name)
            .and_then(|i| self.rows[row].get(i).cloned())
            .unwrap_or(Value::Null)
    }

    /// The named values of a row, in `names`' order.
    fn object(&self, row: usize, names: &[String]) -> Json {
        Json::Object(
            names
                .iter()
                .map(|n| (n.clone(), Json::Value(self.get(row, n))))
                .collect(),
        )
    }
}

const BUCKET: &str = "__bucket";
const FIRST: &str = "__first";

/// A column of times as milliseconds.
pub(super) fn millis_of(column: &dyn Array) -> Result<Vec<Option<i64>>> {
    let as_millis = cast(
        &datafusion::arrow::array::make_array(column.to_data()),
        &DataType::Timestamp(TimeUnit::Millisecond, None),
    )?;
    Ok(as_millis
        .as_primitive::<TimestampMillisecondType>()
        .iter()
        .collect())
}

impl Planner<'_> {
    /// The aggregates of `aggregators` over the rows of `frame`.
    fn aggregates(&self, aggregators: &[Aggregator], frame: &DataFrame) -> Result<Vec<Expr>> {
        aggregators
            .iter()
            .map(|a| self.aggregate(a, frame.schema()))
            .collect()
    }

    /// `frame` with `posts` added after its columns, in order: each may name those
    /// before it.
    fn with_posts(&self, mut frame: DataFrame, posts: &[PostAggregator]) -> Result<DataFrame> {
        for post in posts {
            let column = self.post_aggregate(post, frame.schema())?;
            let Expr::Alias(alias) = &column else {
                return Err(DataFusionError::Internal(
                    "a post-aggregator is named".into(),
                ));
            };
            let name = alias.name.clone();
            frame = frame.with_column(&name, column.unalias())?;
        }
        Ok(frame)
    }

    /// The first time of a query's data in `intervals`, or the intervals' start when
    /// it is later: a bucket of all of time's timestamp.
    pub(super) async fn first_time(
        &self,
        common: &Common,
        intervals: &[Interval],
    ) -> Result<Option<i64>> {
        let frame = self.query_rows(common, intervals).await?;
        let min = self.aggregate_function("min")?.call(vec![ident("__time")]);
        let batches = frame
            .aggregate(vec![], vec![min.alias(FIRST)])?
            .collect()
            .await?;
        let first = batches
            .first()
            .map(|b| millis_of(b.column(0).as_ref()))
            .transpose()?
            .and_then(|v| v.first().copied().flatten());
        let start = intervals.iter().map(|i| i.start).min().unwrap_or(0);
        Ok(first.map(|t| t.max(start)))
    }

    pub async fn timeseries(&self, q: &Timeseries) -> Result<Json> {
        let spans = intervals(&q.common.intervals)?;
        let buckets = self.buckets(&q.granularity)?;
        let frame = self.query_rows(&q.common, &spans).await?;
        let group: Vec<Expr> = buckets
            .expr
            .iter()
            .map(|e| e.clone().alias(BUCKET))
            .collect();
        let mut aggregates = self.aggregates(&q.aggregations, &frame)?;
        if group.is_empty() {
            // The bucket of all of time carries its first time, from the same pass.
            let min = self.aggregate_function("min")?;
            aggregates.push(min.call(vec![ident("__time")]).alias(FIRST));
        }
        let mut frame =
            self.with_posts(frame.aggregate(group, aggregates)?, &q.post_aggregations)?;
        if buckets.expr.is_some() {
            frame = frame.sort(vec![ident(BUCKET).sort(!q.descending, false)])?;
        }
        let batches = frame.collect().await?;
        let rows = Rows::of(&batches)?;
        let names: Vec<String> = q
            .aggregations
            .iter()
            .map(|a| a.name.clone())
            .chain(q.post_aggregations.iter().filter_map(|p| p.name.clone()))
            .collect();
        let mut out = Vec::new();
        if buckets.expr.is_none() {
            let Some(row) = (!rows.rows.is_empty()).then_some(0) else {
                return Ok(Json::Array(out));
            };
            let first = match batches.iter().find(|b| b.num_rows() > 0) {
                Some(batch) => batch
                    .column_by_name(FIRST)
                    .map(|c| millis_of(c.as_ref()))
                    .transpose()?
                    .and_then(|m| m.first().copied().flatten()),
                None => None,
            };
            let start = spans.iter().map(|i| i.start).min().unwrap_or(0);
            let time = match first {
                Some(t) => t.max(start),
                None if start == Interval::ETERNITY.start => 0,
                None => start,
            };
            out.push(bucket_row(
                format_time(time, &buckets.zone),
                rows.object(row, &names),
            ));
            return Ok(Json::Array(out));
        }
        let skip_empty = flag(q.common.context.skip_empty_buckets.as_ref());
        let empty = empty_result(&q.aggregations, &q.post_aggregations);
        let mut previous: Option<i64> = None;
        for row in 0..rows.rows.len() {
            let Some(bucket) = rows.buckets.get(row).copied().flatten() else {
                continue;
            };
            if let (Some(previous), false, Some(calendar)) =
                (previous, skip_empty, &buckets.calendar)
            {
                for missing in between(calendar, previous, bucket, q.descending) {
                    out.push(bucket_row(
                        format_time(missing, &buckets.zone),
                        empty.clone(),
                    ));
                }
            }
            previous = Some(bucket);
            out.push(bucket_row(
                format_time(bucket, &buckets.zone),
                rows.object(row, &names),
            ));
        }
        if let Some(limit) = q.limit {
            out.truncate(limit);
        }
        if flag(q.common.context.grand_total.as_ref()) {
            // The totals of every bucket, last whatever the order, without a timestamp.
            let rows = self.query_rows(&q.common, &spans).await?;
            let aggregates = self.aggregates(&q.aggregations, &rows)?;
            let all = rows.aggregate(vec![], aggregates)?;
            let totals = Rows::of(
                &self
                    .with_posts(all, &q.post_aggregations)?
                    .collect()
                    .await?,
            )?;
            if !totals.rows.is_empty() {
                out.push(Json::Object(vec![
                    ("timestamp".into(), Json::Value(Value::Null)),
                    ("result".into(), totals.object(0, &names)),
                ]));
            }
        }
        Ok(Json::Array(out))
    }

    pub async fn top_n(&self, q: &TopN) -> Result<Json> {
        let spans = intervals(&q.common.intervals)?;
        let buckets = self.buckets(&q.granularity)?;
        let frame = self.query_rows(&q.common, &spans).await?;
        let output = q.dimension.output_name().to_string();
        let mut group: Vec<Expr> = buckets
            .expr
            .iter()
            .map(|e| e.clone().alias(BUCKET))
            .collect();
        group.push(self.dimension(&q.dimension, frame.schema())?.alias(&output));
        let aggregates = self.aggregates(&q.aggregations, &frame)?;
        let frame = frame.aggregate(group, aggregates)?;
        let frame = self.with_posts(frame, &q.post_aggregations)?;
        let order = top_n_order(&q.metric, &output)?;
        let frame = match &buckets.expr {
            None => frame.sort(order.sort)?.limit(0, Some(q.threshold))?,
            Some(_) => {
                let window = self.session.context().state();
                let rank = window
                    .window_functions()
                    .get("row_number")
                    .cloned()
                    .ok_or_else(|| DataFusionError::Internal("no row_number".into()))?;
                let ranked = datafusion::logical_expr::Expr::from(
                    datafusion::logical_expr::expr::WindowFunction::new(
                        datafusion::logical_expr::expr::WindowFunctionDefinition::WindowUDF(rank),
                        vec![],
                    ),
                )
                .partition_by(vec![ident(BUCKET)])
                .order_by(order.sort.clone())
                .build()?
                .alias("__rank");
                let mut sort = vec![ident(BUCKET).sort(true, false)];
                sort.extend(order.sort);
                frame
                    .window(vec![ranked])?
                    .filter(ident("__rank").lt_eq(lit(q.threshold as u64)))?
                    .sort(sort)?
            }
        };
        let rows = Rows::of(&frame.collect().await?)?;
        let names: Vec<String> = std::iter::once(output)
            .chain(q.aggregations.iter().map(|a| a.name.clone()))
            .chain(q.post_aggregations.iter().filter_map(|p| p.name.clone()))
            .collect();
        if buckets.expr.is_none() {
            if rows.rows.is_empty() {
                return Ok(Json::Array(vec![]));
            }
            let first = self.first_time(&q.common, &spans).await?.unwrap_or(0);
            let result = (0..rows.rows.len())
                .map(|r| rows.object(r, &names))
                .collect();
            return Ok(Json::Array(vec![bucket_row(
                format_time(first, &buckets.zone),
                Json::Array(result),
            )]));
        }
        let mut out: Vec<(i64, Vec<Json>)> = Vec::new();
        for row in 0..rows.rows.len() {
            let Some(bucket) = rows.buckets.get(row).copied().flatten() else {
                continue;
            };
            match out.last_mut() {
                Some((b, results)) if *b == bucket => results.push(rows.object(row, &names)),
                _ => out.push((bucket, vec![rows.object(row, &names)])),
            }
        }
        Ok(Json::Array(
            out.into_iter()
                .map(|(bucket, results)| {
                    bucket_row(format_time(bucket, &buckets.zone), Json::Array(results))
                })
                .collect(),
        ))
    }

    pub async fn group_by(&self, q: &GroupBy) -> Result<Json> {
        if q.subtotals_spec.is_some() {
            return Err(DataFusionError::NotImplemented(
                "groupBy's subtotalsSpec is not supported".into(),
            ));
        }
        let spans = intervals(&q.common.intervals)?;
        let buckets = self.buckets(&q.granularity)?;
        let frame = self.query_rows(&q.common, &spans).await?;
        let mut group: Vec<Expr> = buckets
            .expr
            .iter()
            .map(|e| e.clone().alias(BUCKET))
            .collect();
        for d in &q.dimensions {
            group.push(self.dimension(d, frame.schema())?.alias(d.output_name()));
        }
        let aggregates = self.aggregates(&q.aggregations, &frame)?;
        let mut frame =
            self.with_posts(frame.aggregate(group, aggregates)?, &q.post_aggregations)?;
        if let Some(having) = &q.having {
            let predicate = self.having(having, frame.schema())?;
            frame = frame.filter(predicate)?;
        }
        let mut sort: Vec<SortExpr> = Vec::new();
        let limit = q.limit_spec.as_ref();
        for column in limit.map(|l| l.columns.as_slice()).unwrap_or_default() {
            sort.push(order_by_column(column));
        }
        if sort.is_empty() {
            if buckets.expr.is_some() {
                sort.push(ident(BUCKET).sort(true, true));
            }
            sort.extend(
                q.dimensions
                    .iter()
                    .map(|d| ident(d.output_name()).sort(true, true)),
            );
        }
        if !sort.is_empty() {
            frame = frame.sort(sort)?;
        }
        if let Some(spec) = limit
            && (spec.limit.is_some() || spec.offset.is_some())
        {
            frame = frame.limit(spec.offset.unwrap_or(0), spec.limit)?;
        }
        let rows = Rows::of(&frame.collect().await?)?;
        let names: Vec<String> = q
            .dimensions
            .iter()
            .map(|d| d.output_name().to_string())
            .chain(q.aggregations.iter().map(|a| a.name.clone()))
            .chain(q.post_aggregations.iter().filter_map(|p| p.name.clone()))
            .collect();
        let start = spans.iter().map(|i| i.start).min().unwrap_or(0);
        let all_time = if start == Interval::ETERNITY.start {
            0
        } else {
            start
        };
        Ok(Json::Array(
            (0..rows.rows.len())
                .map(|row| {
                    let time = rows.buckets.get(row).copied().flatten().unwrap_or(all_time);
                    Json::Object(vec![
                        ("version".into(), Json::text("v1".into())),
                        (
                            "timestamp".into(),
                            Json::text(format_time(time, &buckets.zone)),
                        ),
                        ("event".into(), rows.object(row, &names)),
                    ])
                })
                .collect(),
        ))
    }

    /// A groupBy's `having` over the aggregated row.
    fn having(&self, having: &Having, schema: &DFSchema) -> Result<Expr> {
        let number = |v: &Value| -> Result<Expr> {
            v.as_f64()
                .or_else(|| v.as_str()?.parse().ok())
                .map(lit)
                .ok_or_else(|| plan(format!("having value {v} is not a number")))
        };
        let double = |name: &str| cast_expr(ident(name), DataType::Float64);
        Ok(match having {
            Having::GreaterThan { aggregation, value } => double(aggregation).gt(number(value)?),
            Having::LessThan { aggregation, value } => double(aggregation).lt(number(value)?),
            Having::EqualTo { aggregation, value } => double(aggregation).eq(number(value)?),
            Having::And { having_specs } => all_of(
                having_specs
                    .iter()
                    .map(|h| self.having(h, schema))
                    .collect::<Result<_>>()?,
            ),
            Having::Or { having_specs } => any_of(
                having_specs
                    .iter()
                    .map(|h| self.having(h, schema))
                    .collect::<Result<_>>()?,
            ),
            Having::Not { having_spec } => !self.having(having_spec, schema)?,
            Having::Filter { filter } => self.filter(filter, schema)?,
            Having::DimSelector { dimension, value } => match value {
                Value::Null => ident(dimension).is_null(),
                Value::String(s) => ident(dimension).eq(lit(s.clone())),
                other => ident(dimension).eq(lit(other.to_string())),
            },
        })
    }

    pub async fn scan(&self, q: &Scan) -> Result<Json> {
        let spans = intervals(&q.common.intervals)?;
        let mut frame = self.query_rows(&q.common, &spans).await?;
        if q.order != ScanOrder::None {
            frame = frame.sort(vec![
                ident("__time").sort(q.order == ScanOrder::Ascending, false),
            ])?;
        }
        if !q.columns.is_empty() {
            frame = frame.select(q.columns.iter().map(ident).collect::<Vec<Expr>>())?;
        }
        if q.limit.is_some() || q.offset.is_some() {
            frame = frame.limit(q.offset.unwrap_or(0), q.limit)?;
        }
        let columns: Vec<String> = frame
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        // `__time` as Druid's scans answer it: milliseconds.
        let select: Vec<Expr> = columns
            .iter()
            .map(|c| {
                if c == "__time" {
                    cast_expr(
                        cast_expr(ident(c), DataType::Timestamp(TimeUnit::Millisecond, None)),
                        DataType::Int64,
                    )
                    .alias(c)
                } else {
                    ident(c)
                }
            })
            .collect();
        let rows = Rows::of(&frame.select(select)?.collect().await?)?;
        if rows.rows.is_empty() {
            return Ok(Json::Array(vec![]));
        }
        let events = (0..rows.rows.len())
            .map(|row| match q.result_format {
                ScanFormat::List => rows.object(row, &columns),
                ScanFormat::CompactedList => Json::Array(
                    columns
                        .iter()
                        .map(|c| Json::Value(rows.get(row, c)))
                        .collect(),
                ),
            })
            .collect();
        Ok(Json::Array(vec![Json::Object(vec![
            ("segmentId".into(), Json::Value(Value::Null)),
            (
                "columns".into(),
                Json::Array(columns.iter().map(|c| Json::text(c.clone())).collect()),
            ),
            ("events".into(), Json::Array(events)),
        ])]))
    }

    pub async fn time_boundary(&self, q: &TimeBoundary) -> Result<Json> {
        let spans = intervals(&q.intervals)?;
        let frame = self
            .rows(&q.data_source, &spans, q.filter.as_ref(), &[])
            .await?;
        let (min, max) = (
            self.aggregate_function("min")?,
            self.aggregate_function("max")?,
        );
        let batches = frame
            .aggregate(
                vec![],
                vec![
                    min.call(vec![ident("__time")]).alias("minTime"),
                    max.call(vec![ident("__time")]).alias("maxTime"),
                ],
            )?
            .collect()
            .await?;
        let Some(batch) = batches.first() else {
            return Ok(Json::Array(vec![]));
        };
        let (Some(Some(min)), Some(Some(max))) = (
            millis_of(batch.column(0).as_ref())?.first().copied(),
            millis_of(batch.column(1).as_ref())?.first().copied(),
        ) else {
            return Ok(Json::Array(vec![]));
        };
        let utc = grove_segment::calendar::parse_zone("UTC").map_err(|e| plan(e.to_string()))?;
        let text = |t: i64| Json::text(format_time(t, &utc));
        let (timestamp, result) = match q.bound.as_deref() {
            Some("minTime") => (min, vec![("minTime".to_string(), text(min))]),
            Some("maxTime") => (max, vec![("maxTime".to_string(), text(max))]),
            None => (
                min,
                vec![
                    ("minTime".to_string(), text(min)),
                    ("maxTime".to_string(), text(max)),
                ],
            ),
            Some(other) => return Err(plan(format!("bound {other:?} is not minTime or maxTime"))),
        };
        Ok(Json::Array(vec![bucket_row(
            format_time(timestamp, &utc),
            Json::Object(result),
        )]))
    }
}

/// `{"timestamp": time, "result": result}`.
pub(super) fn bucket_row(time: String, result: Json) -> Json {
    Json::Object(vec![
        ("timestamp".into(), Json::text(time)),
        ("result".into(), result),
    ])
}

/// A bucket's result without rows: a count is 0, anything else null.
fn empty_result(aggregators: &[Aggregator], posts: &[PostAggregator]) -> Json {
    Json::Object(
        aggregators
            .iter()
            .map(|a| {
                let value = if a.kind == "count" {
                    Value::from(0)
                } else {
                    Value::Null
                };
                (a.name.clone(), Json::Value(value))
            })
            .chain(
                posts
                    .iter()
                    .filter_map(|p| Some((p.name.clone()?, Json::Value(Value::Null)))),
            )
            .collect(),
    )
}

/// The buckets strictly between two consecutive ones of an answer (at most a
/// million: a `none`-like period over years is not filled).
fn between(
    calendar: &grove_segment::calendar::Calendar,
    a: i64,
    b: i64,
    descending: bool,
) -> Vec<i64> {
    const MOST: usize = 1_000_000;
    let (low, high) = if descending { (b, a) } else { (a, b) };
    let mut out = Vec::new();
    let mut t = low;
    while let Some(next) = calendar.shift(t, 1) {
        if next >= high || next <= t || out.len() == MOST {
            break;
        }
        out.push(next);
        t = next;
    }
    if descending {
        out.reverse();
    }
    out
}

/// Whether a context flag is set (`true` or `"true"`).
fn flag(value: Option<&Value>) -> bool {
    match value {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// How a topN orders its rows.
struct Order {
    sort: Vec<SortExpr>,
}

fn top_n_order(metric: &TopNMetric, dimension: &str) -> Result<Order> {
    Ok(match metric {
        TopNMetric::Name(name) => Order {
            sort: vec![ident(name).sort(false, false)],
        },
        TopNMetric::Spec(TopNMetricSpec::Numeric { metric }) => Order {
            sort: vec![ident(metric).sort(false, false)],
        },
        TopNMetric::Spec(TopNMetricSpec::Inverted { metric }) => {
            let inner = top_n_order(metric, dimension)?;
            Order {
                sort: inner
                    .sort
                    .into_iter()
                    .map(|s| s.expr.sort(!s.asc, s.nulls_first))
                    .collect(),
            }
        }
        TopNMetric::Spec(
            TopNMetricSpec::Dimension {
                previous_stop: None,
                ..
            }
            | TopNMetricSpec::Lexicographic {
                previous_stop: None,
            }
            | TopNMetricSpec::Alphanumeric {
                previous_stop: None,
            },
        ) => Order {
            sort: vec![ident(dimension).sort(true, true)],
        },
        TopNMetric::Spec(_) => {
            return Err(DataFusionError::NotImplemented(
                "topN's previousStop is not supported".into(),
            ));
        }
    })
}

/// A limitSpec's column: ascending unless it says descending; numeric order casts.
fn order_by_column(column: &OrderByColumn) -> SortExpr {
    match column {
        OrderByColumn::Name(name) => ident(name).sort(true, true),
        OrderByColumn::Spec {
            dimension,
            direction,
            dimension_order,
        } => {
            let ascending = !direction
                .as_deref()
                .is_some_and(|d| d.eq_ignore_ascii_case("descending"));
            let numeric = dimension_order
                .as_ref()
                .and_then(|o| o.as_str().or_else(|| o["type"].as_str()))
                .is_some_and(|o| o.eq_ignore_ascii_case("numeric"));
            let expr = if numeric {
                cast_expr(ident(dimension), DataType::Float64)
            } else {
                ident(dimension)
            };
            expr.sort(ascending, ascending)
        }
    }
}
