//! Druid's filters as DataFusion predicates over a datasource's columns.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DFSchema, DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::{Expr, cast, lit, try_cast};
use datafusion::prelude::ident;
use grove_segment::id::Interval;
use serde_json::Value;

use super::Planner;
use super::spec::{Filter, SearchSpec};

impl Planner<'_> {
    /// The predicate of `filter`.
    pub(super) fn filter(&self, filter: &Filter, schema: &DFSchema) -> Result<Expr> {
        Ok(match filter {
            Filter::Selector {
                dimension,
                extraction_fn,
                value,
            } => {
                let column = self.filtered_value(dimension, extraction_fn.as_ref(), schema)?;
                match text_of(value) {
                    None => column.is_null(),
                    Some(text) => column.eq(lit(text)),
                }
            }
            Filter::Equals {
                column,
                match_value_type,
                match_value,
            } => ident(column).eq(typed(match_value, match_value_type.as_deref())?),
            Filter::Null { column } => ident(column).is_null(),
            Filter::In {
                dimension,
                extraction_fn,
                values,
            } => {
                let column = self.filtered_value(dimension, extraction_fn.as_ref(), schema)?;
                let (nulls, texts): (Vec<&Value>, Vec<&Value>) =
                    values.iter().partition(|v| v.is_null());
                let list = texts
                    .iter()
                    .filter_map(|v| text_of(v))
                    .map(lit)
                    .collect::<Vec<_>>();
                let listed = column.clone().in_list(list, false);
                if nulls.is_empty() {
                    listed
                } else {
                    listed.or(column.is_null())
                }
            }
            Filter::Bound {
                dimension,
                extraction_fn,
                lower,
                upper,
                lower_strict,
                upper_strict,
                ordering,
            } => {
                let numeric = ordering
                    .as_ref()
                    .and_then(|o| o.as_str().or_else(|| o["type"].as_str()))
                    .is_some_and(|o| o.eq_ignore_ascii_case("numeric"));
                let value = self.filtered_value(dimension, extraction_fn.as_ref(), schema)?;
                let column = if numeric {
                    try_cast(value, DataType::Float64)
                } else {
                    value
                };
                let bound = |value: &Value| -> Result<Expr> {
                    if numeric {
                        let number = text_of(value)
                            .and_then(|t| t.parse::<f64>().ok())
                            .ok_or_else(|| plan(format!("bound {value} is not a number")))?;
                        Ok(lit(number))
                    } else {
                        Ok(lit(text_of(value).unwrap_or_default()))
                    }
                };
                let mut parts = Vec::new();
                if let Some(lower) = lower.as_ref().filter(|v| !v.is_null()) {
                    let b = bound(lower)?;
                    parts.push(if *lower_strict {
                        column.clone().gt(b)
                    } else {
                        column.clone().gt_eq(b)
                    });
                }
                if let Some(upper) = upper.as_ref().filter(|v| !v.is_null()) {
                    let b = bound(upper)?;
                    parts.push(if *upper_strict {
                        column.clone().lt(b)
                    } else {
                        column.clone().lt_eq(b)
                    });
                }
                all_of(parts)
            }
            Filter::Range {
                column,
                match_value_type,
                lower,
                upper,
                lower_open,
                upper_open,
            } => {
                let kind = match_value_type.as_deref();
                let mut parts = Vec::new();
                if let Some(lower) = lower.as_ref().filter(|v| !v.is_null()) {
                    let b = typed(lower, kind)?;
                    parts.push(if *lower_open {
                        ident(column).gt(b)
                    } else {
                        ident(column).gt_eq(b)
                    });
                }
                if let Some(upper) = upper.as_ref().filter(|v| !v.is_null()) {
                    let b = typed(upper, kind)?;
                    parts.push(if *upper_open {
                        ident(column).lt(b)
                    } else {
                        ident(column).lt_eq(b)
                    });
                }
                all_of(parts)
            }
            Filter::And { fields } => all_of(
                fields
                    .iter()
                    .map(|f| self.filter(f, schema))
                    .collect::<Result<_>>()?,
            ),
            Filter::Or { fields } => any_of(
                fields
                    .iter()
                    .map(|f| self.filter(f, schema))
                    .collect::<Result<_>>()?,
            ),
            Filter::Not { field } => !self.filter(field, schema)?,
            Filter::Interval {
                dimension,
                extraction_fn,
                intervals,
            } => {
                let parsed = intervals
                    .iter()
                    .map(|i| Interval::parse(i).map_err(|e| plan(e.to_string())))
                    .collect::<Result<Vec<_>>>()?;
                let column = self.filtered_value(dimension, extraction_fn.as_ref(), schema)?;
                let time =
                    dimension == grove_segment::format::TIME_COLUMN && extraction_fn.is_none();
                any_of(
                    parsed
                        .into_iter()
                        .map(|i| {
                            let (start, end) = if time {
                                (time_literal(i.start), time_literal(i.end))
                            } else {
                                (lit(i.start), lit(i.end))
                            };
                            column.clone().gt_eq(start).and(column.clone().lt(end))
                        })
                        .collect(),
                )
            }
            Filter::Like {
                dimension,
                extraction_fn,
                pattern,
                escape,
            } => {
                let column = self.filtered_value(dimension, extraction_fn.as_ref(), schema)?;
                like(column, pattern, escape.as_deref()).map_err(plan)?
            }
            Filter::Regex {
                dimension,
                extraction_fn,
                pattern,
            } => {
                let column = self.filtered_value(dimension, extraction_fn.as_ref(), schema)?;
                self.function("regexp_like")?
                    .call(vec![cast(column, DataType::Utf8), lit(pattern.clone())])
            }
            Filter::Search {
                dimension,
                extraction_fn,
                query,
            } => {
                let column = self.filtered_value(dimension, extraction_fn.as_ref(), schema)?;
                self.matches(cast(column, DataType::Utf8), query)?
            }
            Filter::Expression { expression } => self.compiler(schema).predicate(expression)?,
            Filter::True => lit(true),
            Filter::False => lit(false),
            Filter::ColumnComparison { dimensions } => {
                let texts = dimensions
                    .iter()
                    .map(|d| self.dimension(d, schema))
                    .collect::<Result<Vec<_>>>()?;
                all_of(
                    texts
                        .windows(2)
                        .map(|pair| pair[0].clone().eq(pair[1].clone()))
                        .collect(),
                )
            }
        })
    }

    /// Whether `text` holds what a search spec looks for.
    pub(super) fn matches(&self, text: Expr, spec: &SearchSpec) -> Result<Expr> {
        let contains = |needle: &str, case_sensitive: bool| -> Result<Expr> {
            let (haystack, needle) = if case_sensitive {
                (text.clone(), needle.to_string())
            } else {
                (
                    self.function("lower")?.call(vec![text.clone()]),
                    needle.to_lowercase(),
                )
            };
            Ok(self
                .function("strpos")?
                .call(vec![haystack, lit(needle)])
                .gt(lit(0)))
        };
        match spec {
            SearchSpec::Contains {
                value,
                case_sensitive,
            } => contains(value, *case_sensitive),
            SearchSpec::InsensitiveContains { value } => contains(value, false),
            SearchSpec::Fragment {
                values,
                case_sensitive,
            } => Ok(all_of(
                values
                    .iter()
                    .map(|v| contains(v, *case_sensitive))
                    .collect::<Result<_>>()?,
            )),
            SearchSpec::Regex { pattern } => Ok(self
                .function("regexp_like")?
                .call(vec![text, lit(pattern.clone())])),
        }
    }
}

/// `text LIKE pattern`, where `escape` (one character) makes the next one literal and
/// a backslash is itself unless it is the escape. DataFusion escapes with a backslash
/// only, so the pattern is rewritten to it.
pub(super) fn like(text: Expr, pattern: &str, escape: Option<&str>) -> Result<Expr, String> {
    let escape = match escape {
        None | Some("") => None,
        Some(e) if e.chars().count() == 1 => e.chars().next(),
        Some(e) => return Err(format!("like's escape {e:?} is not one character")),
    };
    let mut rewritten = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if Some(c) == escape {
            // A last escape with nothing after it escapes nothing, as Druid's.
            if let Some(next) = chars.next() {
                rewritten.push('\\');
                rewritten.push(next);
            }
        } else if c == '\\' {
            rewritten.push_str("\\\\");
        } else {
            rewritten.push(c);
        }
    }
    Ok(Expr::Like(datafusion::logical_expr::expr::Like::new(
        false,
        Box::new(text),
        Box::new(lit(rewritten)),
        Some('\\'),
        false,
    )))
}

/// Any of `parts` (false when there is none).
pub(super) fn any_of(parts: Vec<Expr>) -> Expr {
    parts.into_iter().reduce(Expr::or).unwrap_or(lit(false))
}

/// Every one of `parts` (true when there is none).
pub(super) fn all_of(parts: Vec<Expr>) -> Expr {
    parts.into_iter().reduce(Expr::and).unwrap_or(lit(true))
}

/// A JSON value as the text Druid compares a dimension with; `None` for null.
fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// A value as the type a filter names (`LONG`, `DOUBLE`, `FLOAT`, `STRING`).
fn typed(value: &Value, kind: Option<&str>) -> Result<Expr> {
    let wrong = || plan(format!("{value} is not a {}", kind.unwrap_or("STRING")));
    Ok(match kind.map(str::to_ascii_uppercase).as_deref() {
        Some("LONG") => lit(value
            .as_i64()
            .or_else(|| value.as_str()?.parse().ok())
            .ok_or_else(wrong)?),
        Some("DOUBLE" | "FLOAT") => lit(value
            .as_f64()
            .or_else(|| value.as_str()?.parse().ok())
            .ok_or_else(wrong)?),
        None | Some("STRING") => lit(text_of(value).ok_or_else(wrong)?),
        Some(other) => return Err(plan(format!("matchValueType {other} is not supported"))),
    })
}

/// A time in milliseconds as a literal of `__time`'s type.
pub(super) fn time_literal(ms: i64) -> Expr {
    lit(ScalarValue::TimestampMillisecond(
        Some(ms),
        Some("UTC".into()),
    ))
}

pub(super) fn plan(message: String) -> DataFusionError {
    DataFusionError::Plan(message)
}
