//! Column statistics of a scan, merged from what each segment records of a column:
//! its null count, min and max, and (for strings) its number of distinct values. A
//! historical reads them from the segments' footers; a broker from their descriptors.
//! The planner sizes joins and aggregates by them.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};
use datafusion::common::{ColumnStatistics, ScalarValue, stats::Precision};

use crate::format::{ColumnKind, ColumnLayout, ColumnMeta, Stat};

/// What one segment records of a column.
#[derive(Debug, Clone, Copy)]
pub struct ColumnFacts<'a> {
    pub kind: ColumnKind,
    pub null_count: u64,
    pub min: Option<&'a Stat>,
    pub max: Option<&'a Stat>,
    /// Distinct non-NULL values (a string column's dictionary size).
    pub distinct: Option<u64>,
}

impl<'a> ColumnFacts<'a> {
    pub fn of(column: &'a ColumnMeta) -> ColumnFacts<'a> {
        ColumnFacts {
            kind: column.kind,
            null_count: column.null_count,
            min: column.min.as_ref(),
            max: column.max.as_ref(),
            distinct: match column.layout {
                ColumnLayout::Dictionary { dict_len, .. } => Some(u64::from(dict_len)),
                ColumnLayout::Primitive { .. } => None,
            },
        }
    }
}

/// The statistics of `field` over segments given as `(rows, facts)`, facts `None`
/// where a segment lacks the column (it reads as NULL there). `exact` when whole
/// segments are read unfiltered; estimates otherwise. Distinct values over several
/// segments are estimated as the most any one of them has.
pub fn column_statistics<'a>(
    field: &Field,
    exact: bool,
    segments: impl IntoIterator<Item = (usize, Option<ColumnFacts<'a>>)>,
) -> ColumnStatistics {
    let mut stats = ColumnStatistics::new_unknown();
    let mut nulls = 0usize;
    let mut bounds_known = true;
    let mut exact = exact;
    let (mut min, mut max): (Option<Stat>, Option<Stat>) = (None, None);
    let mut distinct: Option<u64> = Some(0);
    let mut count = 0;
    for (rows, facts) in segments {
        count += 1;
        let Some(column) = facts else {
            nulls += rows;
            continue;
        };
        nulls += column.null_count as usize;
        if column.kind.data_type() != *field.data_type() {
            // Stored as another type and cast when read: values that do not convert
            // become NULLs the segment does not count, and bounds are in other units.
            exact = false;
            bounds_known = false;
            distinct = None;
            continue;
        }
        // No min/max with non-NULL values means they were not recorded (NaN, infinities).
        let has_values = (column.null_count as usize) < rows;
        if has_values && (column.min.is_none() || column.max.is_none()) {
            bounds_known = false;
        }
        min = merge_stat(min, column.min.cloned(), std::cmp::Ordering::Less);
        max = merge_stat(max, column.max.cloned(), std::cmp::Ordering::Greater);
        distinct = distinct.zip(column.distinct).map(|(a, b)| a.max(b));
    }
    stats.null_count = precision(exact, nulls);
    if bounds_known {
        let scalar = |s: Option<Stat>| s.and_then(|s| stat_scalar(s, field.data_type()));
        if let (Some(lo), Some(hi)) = (scalar(min), scalar(max)) {
            stats.min_value = precision(exact, lo);
            stats.max_value = precision(exact, hi);
        }
    }
    if let Some(d) = distinct.filter(|_| count > 0) {
        stats.distinct_count = precision(exact && count == 1, d as usize);
    }
    stats
}

fn precision<T: std::fmt::Debug + Clone + PartialEq + Eq + PartialOrd>(
    exact: bool,
    value: T,
) -> Precision<T> {
    if exact {
        Precision::Exact(value)
    } else {
        Precision::Inexact(value)
    }
}

/// A recorded statistic as a value of the table column's type, if it converts exactly.
fn stat_scalar(stat: Stat, data_type: &DataType) -> Option<ScalarValue> {
    let utc = || Some(Arc::from("UTC"));
    Some(match (stat, data_type) {
        (Stat::Int(v), DataType::Int64) => ScalarValue::Int64(Some(v)),
        (Stat::Int(v), DataType::Date32) => ScalarValue::Date32(Some(i32::try_from(v).ok()?)),
        (Stat::Int(v), DataType::Timestamp(TimeUnit::Millisecond, _)) => {
            ScalarValue::TimestampMillisecond(Some(v), utc())
        }
        (Stat::Float(v), DataType::Float64) => ScalarValue::Float64(Some(v)),
        (Stat::Float(v), DataType::Float32) => ScalarValue::Float32(Some(v as f32)),
        (Stat::Str(v), DataType::Dictionary(key, value)) if **value == DataType::Utf8 => {
            ScalarValue::Dictionary(key.clone(), Box::new(ScalarValue::Utf8(Some(v))))
        }
        _ => return None,
    })
}

fn merge_stat(a: Option<Stat>, b: Option<Stat>, keep: std::cmp::Ordering) -> Option<Stat> {
    match (a, b) {
        (Some(a), Some(b)) => {
            let order = match (&a, &b) {
                (Stat::Int(x), Stat::Int(y)) => x.cmp(y),
                (Stat::Float(x), Stat::Float(y)) => x.total_cmp(y),
                (Stat::Str(x), Stat::Str(y)) => x.cmp(y),
                _ => return None,
            };
            Some(if order == keep { a } else { b })
        }
        (a, b) => a.or(b),
    }
}
