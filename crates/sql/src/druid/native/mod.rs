//! Druid's native JSON queries (`POST /druid/v2`), planned as DataFusion plans over
//! the datasource's table, so they take the same path as SQL: pruned by time, pushed
//! to the historicals, aggregated in parts.
//!
//! # Layout
//! - [`spec`]: the queries as JSON.
//! - [`filter`]: filters as predicates.
//! - [`aggregate`]: aggregators and post-aggregators as expressions.
//! - [`extraction`]: dimension specs and extraction functions.
//! - [`expression`]: Druid's expression language (virtual columns, `expression`
//!   filters, aggregators and post-aggregators) as DataFusion expressions.
//! - [`queries`]: each aggregating query's plan and its answer in Druid's shape.
//! - [`metadata`]: `search`, `segmentMetadata` and `dataSourceMetadata`.
//!
//! Supported: `timeseries`, `topN`, `groupBy`, `scan`, `timeBoundary`, `search`,
//! `segmentMetadata` and `dataSourceMetadata`, with
//! granularities (simple names, `period` with a time zone and origin, `duration`),
//! intervals in every form, `expression` virtual columns, the filters, aggregators and
//! post-aggregators of Druid's docs (`expression` ones too). The others are refused by
//! name, never answered wrongly.

pub mod aggregate;
pub mod expression;
pub mod extraction;
pub mod filter;
pub mod metadata;
pub mod queries;
pub mod spec;

use std::sync::Arc;

use chrono::{DateTime, Offset};
use datafusion::arrow::array::timezone::Tz;
use datafusion::common::{DFSchema, DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::{AggregateUDF, Expr, ScalarUDF, lit};
use datafusion::prelude::{DataFrame, ident};
use grove_segment::calendar::{Calendar, in_zone, parse_zone};
use grove_segment::id::{Interval, parse_instant};
use grove_segment::period::Period;

use crate::Session;
use expression::Compiler;
use filter::{plan, time_literal};
use spec::{DataSource, Granularity, Intervals, VirtualColumn};

use crate::druid::rewrite::Lookups;

/// Plans native queries in one session.
pub struct Planner<'a> {
    session: &'a Session,
    /// Druid's lookups, for expressions' `lookup`.
    lookups: Lookups,
}

/// How a query cuts time into buckets.
struct Buckets {
    /// The bucket of a row (`None`: one bucket for all of time).
    pub expr: Option<Expr>,
    /// The calendar of the buckets, to step from one to the next.
    pub calendar: Option<Calendar>,
    /// The zone results are written in.
    pub zone: Tz,
}

impl<'a> Planner<'a> {
    pub fn new(session: &'a Session) -> Self {
        Planner {
            session,
            lookups: Lookups::new(),
        }
    }

    /// Expressions may look values up in `lookups`.
    pub fn with_lookups(mut self, lookups: Lookups) -> Self {
        self.lookups = lookups;
        self
    }

    /// Compiles Druid's expressions over the columns of `schema`.
    fn compiler<'s>(&'s self, schema: &'s DFSchema) -> Compiler<'s> {
        Compiler::new(self.session.context(), schema, &self.lookups)
    }

    fn function(&self, name: &str) -> Result<Arc<ScalarUDF>> {
        self.session
            .context()
            .state()
            .scalar_functions()
            .get(name)
            .cloned()
            .ok_or_else(|| DataFusionError::Internal(format!("no function {name}")))
    }

    fn aggregate_function(&self, name: &str) -> Result<Arc<AggregateUDF>> {
        self.session
            .context()
            .state()
            .aggregate_functions()
            .get(name)
            .cloned()
            .ok_or_else(|| DataFusionError::Internal(format!("no aggregate function {name}")))
    }

    /// The table of a query's `dataSource` with its virtual columns, its rows in
    /// `intervals` and passing `filter`.
    async fn rows(
        &self,
        source: &DataSource,
        intervals: &[Interval],
        filter: Option<&spec::Filter>,
        virtuals: &[VirtualColumn],
    ) -> Result<DataFrame> {
        let name = match source {
            DataSource::Name(name) => name.clone(),
            DataSource::Object { kind, name } if kind == "table" => name
                .clone()
                .ok_or_else(|| plan("a table dataSource needs a name".into()))?,
            DataSource::Object { kind, .. } => {
                return Err(DataFusionError::NotImplemented(format!(
                    "dataSource of type {kind:?} is not supported; use a table"
                )));
            }
        };
        let mut frame = self.session.datasource(&name).await?;
        if let Some(times) = time_predicate(intervals) {
            frame = frame.filter(times)?;
        }
        for column in expression::in_dependency_order(virtuals)? {
            if column.name == "__time" {
                return Err(plan("a virtual column may not be named __time".into()));
            }
            let value = self.compiler(frame.schema()).virtual_column(column)?;
            frame = frame.with_column(&column.name, value)?;
        }
        if let Some(filter) = filter {
            let predicate = self.filter(filter, frame.schema())?;
            frame = frame.filter(predicate)?;
        }
        Ok(frame)
    }

    /// [`Self::rows`] of a query's `dataSource`, `filter` and `virtualColumns`.
    async fn query_rows(&self, common: &spec::Common, intervals: &[Interval]) -> Result<DataFrame> {
        self.rows(
            &common.data_source,
            intervals,
            common.filter.as_ref(),
            &common.virtual_columns,
        )
        .await
    }

    /// A query's granularity as buckets of `__time`.
    fn buckets(&self, granularity: &Granularity) -> Result<Buckets> {
        self.buckets_of(granularity, ident("__time"))
    }

    /// `time` floored to `granularity` (unchanged by `all` and `none`), as
    /// extraction functions apply one.
    fn bucket_of(&self, granularity: &Granularity, time: Expr) -> Result<Expr> {
        Ok(self
            .buckets_of(granularity, time.clone())?
            .expr
            .unwrap_or(time))
    }

    /// How `granularity` cuts the times `time` into buckets.
    fn buckets_of(&self, granularity: &Granularity, time: Expr) -> Result<Buckets> {
        let utc = parse_zone("UTC").map_err(|e| plan(e.to_string()))?;
        let (period, origin, zone) = match granularity {
            Granularity::Simple(name) => match simple_period(name)? {
                None if name.eq_ignore_ascii_case("none") => {
                    return Ok(Buckets {
                        expr: Some(time),
                        calendar: None,
                        zone: utc,
                    });
                }
                None => {
                    return Ok(Buckets {
                        expr: None,
                        calendar: None,
                        zone: utc,
                    });
                }
                Some(period) => (period, None, None),
            },
            Granularity::Object(object) => match object.kind.as_str() {
                "all" | "none" => {
                    return self.buckets_of(&Granularity::Simple(object.kind.clone()), time);
                }
                "period" => {
                    let text = object
                        .period
                        .as_deref()
                        .ok_or_else(|| plan("a period granularity needs a period".into()))?;
                    let period = Period::parse(&text.to_ascii_uppercase())
                        .map_err(|e| plan(e.to_string()))?;
                    (period, object.origin.clone(), object.time_zone.clone())
                }
                "duration" => {
                    let millis = object
                        .duration
                        .as_ref()
                        .and_then(|d| d.as_u64().or_else(|| d.as_str()?.parse().ok()))
                        .filter(|d| *d > 0)
                        .ok_or_else(|| {
                            plan("a duration granularity needs a duration in ms".into())
                        })?;
                    let fields = grove_segment::period::Fields {
                        seconds: u32::try_from(millis / 1000)
                            .map_err(|_| plan(format!("duration {millis} is too long")))?,
                        millis: (millis % 1000) as u32,
                        ..Default::default()
                    };
                    (Period::from_fields(fields), object.origin.clone(), None)
                }
                other => {
                    return Err(plan(format!(
                        "granularity type {other:?} is not one of period, duration, all, none"
                    )));
                }
            },
        };
        let origin_ms = origin
            .as_deref()
            .map(|o| parse_instant(o).map_err(|e| plan(e.to_string())))
            .transpose()?;
        let calendar =
            Calendar::new(period, origin_ms, zone.as_deref()).map_err(|e| plan(e.to_string()))?;
        let origin_arg = match origin_ms {
            Some(ms) => time_literal(ms),
            None => lit(ScalarValue::TimestampMillisecond(None, Some("UTC".into()))),
        };
        let zone_arg = lit(zone.clone().unwrap_or_else(|| "UTC".into()));
        let expr = self.function("time_floor")?.call(vec![
            time,
            lit(calendar.period().to_string()),
            origin_arg,
            zone_arg,
        ]);
        Ok(Buckets {
            expr: Some(expr),
            zone: *calendar.zone(),
            calendar: Some(calendar),
        })
    }
}

/// The period of a simple granularity's name, or `None` for `all` and `none`.
fn simple_period(name: &str) -> Result<Option<Period>> {
    let text = match name.to_ascii_lowercase().as_str() {
        "all" | "none" => return Ok(None),
        "second" => "PT1S",
        "minute" => "PT1M",
        "five_minute" => "PT5M",
        "ten_minute" => "PT10M",
        "fifteen_minute" => "PT15M",
        "thirty_minute" => "PT30M",
        "hour" => "PT1H",
        "six_hour" => "PT6H",
        "eight_hour" => "PT8H",
        "day" => "P1D",
        "week" => "P1W",
        "month" => "P1M",
        "quarter" => "P3M",
        "year" => "P1Y",
        other => return Err(plan(format!("granularity {other:?} is not one of Druid's"))),
    };
    Period::parse(text)
        .map(Some)
        .map_err(|e| plan(e.to_string()))
}

/// A query's intervals; none is all of time.
fn intervals(spec: &Intervals) -> Result<Vec<Interval>> {
    let texts: Vec<&String> = match spec {
        Intervals::All => return Ok(vec![Interval::ETERNITY]),
        Intervals::One(text) => vec![text],
        Intervals::List(list) => list.iter().collect(),
        Intervals::Object { kind, intervals } if kind == "intervals" => intervals.iter().collect(),
        Intervals::Object { kind, .. } => {
            return Err(plan(format!(
                "intervals of type {kind:?} are not supported"
            )));
        }
    };
    texts
        .into_iter()
        .map(|t| Interval::parse(t).map_err(|e| plan(e.to_string())))
        .collect()
}

/// `__time` in any of `intervals`; `None` when they cover all of time.
fn time_predicate(intervals: &[Interval]) -> Option<Expr> {
    if intervals.contains(&Interval::ETERNITY) {
        return None;
    }
    intervals
        .iter()
        .map(|i| {
            ident("__time")
                .gt_eq(time_literal(i.start))
                .and(ident("__time").lt(time_literal(i.end)))
        })
        .reduce(Expr::or)
}

/// A time as Druid writes it in native answers: milliseconds, and the zone's offset
/// (`Z` in UTC): `2013-08-30T00:00:00.000-07:00`.
pub fn format_time(ms: i64, zone: &Tz) -> String {
    match in_zone(ms, zone) {
        Some(t) if t.offset().fix().local_minus_utc() == 0 => {
            t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
        }
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.3f%:z").to_string(),
        None => DateTime::from_timestamp_millis(ms)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
            .unwrap_or_else(|| ms.to_string()),
    }
}
