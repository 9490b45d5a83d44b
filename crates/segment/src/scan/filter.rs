//! Predicates the scan applies itself: time ranges on `__time` (by binary search) and
//! comparisons of string dimensions with literals (by bitmap index).
//!
//! [`classify`] decides, per DataFusion filter, whether the scan applies it exactly;
//! only those are reported `Exact`, everything else stays with DataFusion.
//!
//! Bitmap evaluation follows SQL's three-valued logic: each predicate yields the rows
//! where it is TRUE and the rows where it is NULL (UNKNOWN); the scan keeps the TRUE
//! rows. That is what makes `NOT (country = 'nl')` drop rows whose country is NULL.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};
use roaring::RoaringBitmap;

use crate::error::Result;
use crate::format::{Segment, TIME_COLUMN};
use crate::id::Interval;

/// A predicate over string dimensions that bitmap indexes answer exactly.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexFilter {
    /// `column = value`
    Eq {
        column: String,
        value: String,
    },
    /// `column IN (values)`
    In {
        column: String,
        values: Vec<String>,
    },
    /// `column IS NULL`
    IsNull {
        column: String,
    },
    Not(Box<IndexFilter>),
    And(Vec<IndexFilter>),
    Or(Vec<IndexFilter>),
}

/// What the scan makes of one pushed-down filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Pushed {
    /// Rows whose `__time` lies in the interval.
    Time(Interval),
    /// Rows where the index filter is TRUE.
    Index(IndexFilter),
    /// The scan cannot apply it; DataFusion must.
    No,
}

/// Classifies a filter. `is_string_dimension` tells which columns have bitmap indexes.
pub fn classify(expr: &Expr, is_string_dimension: &dyn Fn(&str) -> bool) -> Pushed {
    if let Some(interval) = time_interval(expr) {
        return Pushed::Time(interval);
    }
    match index_filter(expr, is_string_dimension) {
        Some(filter) => Pushed::Index(filter),
        None => Pushed::No,
    }
}

fn column_name(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Column(c) => Some(c.name.as_str()),
        // Comparisons of dictionary columns with strings may arrive with the column cast
        // to a plain string type; the cast does not change which rows match.
        Expr::Cast(cast) if is_string_type(cast.field.data_type()) => column_name(&cast.expr),
        _ => None,
    }
}

fn is_string_type(data_type: &DataType) -> bool {
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, value) => is_string_type(value),
        _ => false,
    }
}

/// The string a literal holds: `Some(None)` for a typed NULL, `None` if not a string.
fn string_literal(expr: &Expr) -> Option<Option<String>> {
    let Expr::Literal(value, _) = expr else {
        return None;
    };
    scalar_string(value)
}

fn scalar_string(value: &ScalarValue) -> Option<Option<String>> {
    match value {
        ScalarValue::Utf8(v) | ScalarValue::LargeUtf8(v) | ScalarValue::Utf8View(v) => {
            Some(v.clone())
        }
        ScalarValue::Dictionary(_, inner) => scalar_string(inner),
        _ => None,
    }
}

fn index_filter(expr: &Expr, is_dim: &dyn Fn(&str) -> bool) -> Option<IndexFilter> {
    let dim = |e: &Expr| {
        column_name(e)
            .filter(|name| is_dim(name))
            .map(str::to_string)
    };
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
            Operator::And | Operator::Or => {
                let l = index_filter(left, is_dim)?;
                let r = index_filter(right, is_dim)?;
                Some(if *op == Operator::And {
                    IndexFilter::And(vec![l, r])
                } else {
                    IndexFilter::Or(vec![l, r])
                })
            }
            Operator::Eq | Operator::NotEq => {
                let (column, value) = match (dim(left), dim(right)) {
                    (Some(c), None) => (c, string_literal(right)??),
                    (None, Some(c)) => (c, string_literal(left)??),
                    _ => return None,
                };
                let eq = IndexFilter::Eq { column, value };
                Some(if *op == Operator::Eq {
                    eq
                } else {
                    IndexFilter::Not(Box::new(eq))
                })
            }
            _ => None,
        },
        Expr::InList(list) => {
            let column = dim(&list.expr)?;
            // A NULL in the list makes non-matches UNKNOWN rather than FALSE; leave
            // that rare case to DataFusion.
            let values = list
                .list
                .iter()
                .map(|e| string_literal(e).flatten())
                .collect::<Option<Vec<_>>>()?;
            let in_list = IndexFilter::In { column, values };
            Some(if list.negated {
                IndexFilter::Not(Box::new(in_list))
            } else {
                in_list
            })
        }
        Expr::IsNull(e) => Some(IndexFilter::IsNull { column: dim(e)? }),
        Expr::IsNotNull(e) => Some(IndexFilter::Not(Box::new(IndexFilter::IsNull {
            column: dim(e)?,
        }))),
        Expr::Not(e) => Some(IndexFilter::Not(Box::new(index_filter(e, is_dim)?))),
        _ => None,
    }
}

/// The interval a `__time` comparison (or a conjunction of them, or BETWEEN) selects.
fn time_interval(expr: &Expr) -> Option<Interval> {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            if *op == Operator::And {
                return time_interval(left)?
                    .intersect(&time_interval(right)?)
                    .or(Some(EMPTY));
            }
            if column_is_time(left) {
                bound(*op, right)
            } else if column_is_time(right) {
                bound(op.swap()?, left)
            } else {
                None
            }
        }
        Expr::Between(Between {
            expr,
            negated: false,
            low,
            high,
        }) if column_is_time(expr) => {
            let lo = bound(Operator::GtEq, low)?;
            let hi = bound(Operator::LtEq, high)?;
            lo.intersect(&hi).or(Some(EMPTY))
        }
        _ => None,
    }
}

const EMPTY: Interval = Interval { start: 0, end: 0 };

fn column_is_time(expr: &Expr) -> bool {
    matches!(expr, Expr::Column(c) if c.name == TIME_COLUMN)
}

/// `__time {op} literal` as an interval of milliseconds. Literals finer than
/// milliseconds round so that the interval holds exactly the matching rows.
fn bound(op: Operator, literal: &Expr) -> Option<Interval> {
    let Expr::Literal(value, _) = literal else {
        return None;
    };
    let (floor, ceil) = literal_millis(value)?;
    let all = Interval::ETERNITY;
    // Bounds outside the representable range leave the filter to DataFusion.
    let clamp = |t: i64| (all.start..=all.end).contains(&t).then_some(t);
    let (floor, ceil) = (clamp(floor)?, clamp(ceil)?);
    Some(match op {
        Operator::Eq if floor == ceil => Interval {
            start: floor,
            end: floor + 1,
        },
        Operator::Eq => EMPTY,
        Operator::Gt => Interval {
            start: floor + 1,
            end: all.end,
        },
        Operator::GtEq => Interval {
            start: ceil,
            end: all.end,
        },
        Operator::Lt => Interval {
            start: all.start,
            end: ceil,
        },
        Operator::LtEq => Interval {
            start: all.start,
            end: floor + 1,
        },
        _ => return None,
    })
}

/// A timestamp literal as (floor, ceil) milliseconds; None if it does not fit.
fn literal_millis(value: &ScalarValue) -> Option<(i64, i64)> {
    let (v, per_ms) = match value {
        ScalarValue::TimestampSecond(Some(v), _) => {
            let ms = v.checked_mul(1000)?;
            return Some((ms, ms));
        }
        ScalarValue::TimestampMillisecond(Some(v), _) => return Some((*v, *v)),
        ScalarValue::TimestampMicrosecond(Some(v), _) => (*v, 1_000),
        ScalarValue::TimestampNanosecond(Some(v), _) => (*v, 1_000_000),
        _ => return None,
    };
    let floor = v.div_euclid(per_ms);
    let ceil = floor + i64::from(v.rem_euclid(per_ms) != 0);
    Some((floor, ceil))
}

/// The rows where a predicate is TRUE, and where it is UNKNOWN.
struct Truth {
    yes: RoaringBitmap,
    unknown: RoaringBitmap,
}

impl IndexFilter {
    /// The rows of `segment` for which this filter is TRUE.
    pub fn evaluate(&self, segment: &Segment) -> Result<RoaringBitmap> {
        Ok(self.truth(segment)?.yes)
    }

    fn truth(&self, segment: &Segment) -> Result<Truth> {
        let all =
            || RoaringBitmap::from_sorted_iter(0..segment.num_rows() as u32).unwrap_or_default();
        Ok(match self {
            IndexFilter::Eq { column, value } => {
                let (yes, nulls) = rows_with(segment, column, std::slice::from_ref(value))?;
                Truth {
                    yes,
                    unknown: nulls,
                }
            }
            IndexFilter::In { column, values } => {
                let (yes, nulls) = rows_with(segment, column, values)?;
                Truth {
                    yes,
                    unknown: nulls,
                }
            }
            IndexFilter::IsNull { column } => Truth {
                yes: null_rows(segment, column)?,
                unknown: RoaringBitmap::new(),
            },
            IndexFilter::Not(inner) => {
                let t = inner.truth(segment)?;
                Truth {
                    yes: all() - &t.yes - &t.unknown,
                    unknown: t.unknown,
                }
            }
            IndexFilter::And(parts) => {
                let mut acc = Truth {
                    yes: all(),
                    unknown: RoaringBitmap::new(),
                };
                for part in parts {
                    let t = part.truth(segment)?;
                    let maybe = (&acc.yes | &acc.unknown) & (&t.yes | &t.unknown);
                    acc.yes &= &t.yes;
                    acc.unknown = maybe - &acc.yes;
                }
                acc
            }
            IndexFilter::Or(parts) => {
                let mut acc = Truth {
                    yes: RoaringBitmap::new(),
                    unknown: RoaringBitmap::new(),
                };
                for part in parts {
                    let t = part.truth(segment)?;
                    acc.yes |= &t.yes;
                    acc.unknown |= &t.unknown;
                    acc.unknown -= &acc.yes;
                }
                acc
            }
        })
    }
}

/// Rows holding any of `values` in `column`, and rows where it is NULL. A column the
/// segment lacks is NULL everywhere.
fn rows_with(
    segment: &Segment,
    column: &str,
    values: &[String],
) -> Result<(RoaringBitmap, RoaringBitmap)> {
    let Some(index) = index_of(segment, column)? else {
        return Ok((RoaringBitmap::new(), null_rows(segment, column)?));
    };
    let mut yes = RoaringBitmap::new();
    for value in values {
        if let Some(id) = index.lookup(value) {
            yes |= index.rows_of(id)?;
        }
    }
    Ok((yes, index.null_rows()?))
}

fn null_rows(segment: &Segment, column: &str) -> Result<RoaringBitmap> {
    match index_of(segment, column)? {
        Some(index) => index.null_rows(),
        None => {
            Ok(RoaringBitmap::from_sorted_iter(0..segment.num_rows() as u32).unwrap_or_default())
        }
    }
}

fn index_of(
    segment: &Segment,
    column: &str,
) -> Result<Option<std::sync::Arc<crate::format::StringIndex>>> {
    match segment.footer().column_index(column) {
        Some(i) => segment.string_index(i),
        None => Ok(None),
    }
}
