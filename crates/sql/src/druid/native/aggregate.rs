//! Druid's aggregators and post-aggregators as DataFusion expressions: an aggregator
//! is an aggregate named by its `name`; a post-aggregator an expression over the
//! aggregated row's columns.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DFSchema, DataFusionError, Result};
use datafusion::logical_expr::{Expr, ExprFunctionExt, cast, lit, when};
use datafusion::prelude::ident;
use serde_json::Value;

use super::Planner;
use super::filter::plan;
use super::spec::{Aggregator, PostAggregator};

impl Planner<'_> {
    /// `aggregator`'s aggregate, named by it.
    /// `aggregator`'s aggregate over rows of `schema`, named by it.
    pub(super) fn aggregate(&self, aggregator: &Aggregator, schema: &DFSchema) -> Result<Expr> {
        Ok(self
            .aggregate_unnamed(aggregator, schema)?
            .alias(&aggregator.name))
    }

    fn aggregate_unnamed(&self, a: &Aggregator, schema: &DFSchema) -> Result<Expr> {
        let field = || -> Result<Expr> {
            match (&a.field_name, &a.expression) {
                (Some(name), _) => Ok(ident(name)),
                (None, Some(expression)) => self.compiler(schema).value(expression),
                (None, None) => Err(plan(format!(
                    "aggregator {:?} has neither fieldName nor expression",
                    a.name
                ))),
            }
        };
        let call = |name: &str, args: Vec<Expr>| -> Result<Expr> {
            Ok(self.aggregate_function(name)?.call(args))
        };
        let kind = a.kind.as_str();
        Ok(match kind {
            "count" => call("count", vec![lit(1)])?,
            "longSum" => call("sum", vec![cast(field()?, DataType::Int64)])?,
            "doubleSum" | "floatSum" => call("sum", vec![cast(field()?, DataType::Float64)])?,
            "longMin" => call("min", vec![cast(field()?, DataType::Int64)])?,
            "longMax" => call("max", vec![cast(field()?, DataType::Int64)])?,
            "doubleMin" | "floatMin" => call("min", vec![cast(field()?, DataType::Float64)])?,
            "doubleMax" | "floatMax" => call("max", vec![cast(field()?, DataType::Float64)])?,
            "longFirst" | "doubleFirst" | "floatFirst" | "stringFirst" | "longLast"
            | "doubleLast" | "floatLast" | "stringLast" => {
                let time = ident(a.time_column.as_deref().unwrap_or("__time"));
                let function = if kind.ends_with("First") {
                    "first_value"
                } else {
                    "last_value"
                };
                self.aggregate_function(function)?
                    .call(vec![field()?])
                    .order_by(vec![time.sort(true, false)])
                    .build()?
            }
            "cardinality" | "hyperUnique" => {
                let value = match (kind, a.fields.as_deref()) {
                    ("hyperUnique", _) => field()?,
                    (_, Some([one])) => self.dimension(one, schema)?,
                    (_, Some(several)) if a.by_row => {
                        let mut args = vec![lit("\u{1}")];
                        for d in several {
                            args.push(self.dimension(d, schema)?);
                        }
                        self.function("concat_ws")?.call(args)
                    }
                    _ => {
                        return Err(DataFusionError::NotImplemented(format!(
                            "aggregator {:?}: cardinality over several fields needs byRow",
                            a.name
                        )));
                    }
                };
                let estimate = call("approx_distinct", vec![cast(value, DataType::Utf8)])?;
                // Druid answers the estimate as a double, or rounded when asked.
                cast(
                    estimate,
                    if a.round {
                        DataType::Int64
                    } else {
                        DataType::Float64
                    },
                )
            }
            "filtered" => {
                let (Some(filter), Some(inner)) = (&a.filter, &a.aggregator) else {
                    return Err(plan(format!(
                        "filtered aggregator {:?} needs a filter and an aggregator",
                        a.name
                    )));
                };
                self.aggregate_unnamed(inner, schema)?
                    .filter(self.filter(filter, schema)?)
                    .build()?
            }
            other => {
                return Err(DataFusionError::NotImplemented(format!(
                    "aggregator {:?}: type {other:?} is not supported",
                    a.name
                )));
            }
        })
    }

    /// `post`'s expression over the aggregated columns (`schema`), named by it.
    pub(super) fn post_aggregate(&self, post: &PostAggregator, schema: &DFSchema) -> Result<Expr> {
        let name = post.name.clone().ok_or_else(|| {
            plan(format!(
                "post-aggregator of type {:?} has no name",
                post.kind
            ))
        })?;
        Ok(self.post_unnamed(post, schema)?.alias(name))
    }

    fn post_unnamed(&self, p: &PostAggregator, schema: &DFSchema) -> Result<Expr> {
        let double = |e: Expr| cast(e, DataType::Float64);
        let fields = || -> Result<Vec<Expr>> {
            p.fields
                .iter()
                .map(|f| self.post_unnamed(f, schema))
                .collect()
        };
        Ok(match p.kind.as_str() {
            "fieldAccess" | "finalizingFieldAccess" => ident(
                p.field_name
                    .as_deref()
                    .ok_or_else(|| plan(format!("{} post-aggregator has no fieldName", p.kind)))?,
            ),
            "constant" => match &p.value {
                Some(Value::Number(n)) => match n.as_i64() {
                    Some(i) => lit(i),
                    None => lit(n.as_f64().unwrap_or(f64::NAN)),
                },
                other => {
                    return Err(plan(format!(
                        "constant post-aggregator value {other:?} is not a number"
                    )));
                }
            },
            "arithmetic" => {
                let function = p.function.as_deref().unwrap_or_default();
                let operands: Vec<Expr> = fields()?.into_iter().map(double).collect();
                if operands.len() < 2 {
                    return Err(plan(format!(
                        "arithmetic post-aggregator {:?} needs two fields",
                        p.name
                    )));
                }
                operands
                    .into_iter()
                    .map(Ok)
                    .reduce(|a, b| {
                        let (a, b) = (a?, b?);
                        Ok(match function {
                            "+" => a + b,
                            "-" => a - b,
                            "*" => a * b,
                            // Druid: dividing by zero is 0.
                            "/" => when(b.clone().eq(lit(0.0)), lit(0.0)).otherwise(a / b)?,
                            "quotient" => a / b,
                            other => {
                                return Err(plan(format!(
                                    "arithmetic post-aggregator function {other:?} is not one of + - * / quotient"
                                )));
                            }
                        })
                    })
                    .unwrap_or_else(|| Ok(lit(0.0)))?
            }
            "expression" => {
                let expression = p.expression.as_deref().ok_or_else(|| {
                    plan(format!(
                        "expression post-aggregator {:?} has no expression",
                        p.name
                    ))
                })?;
                self.compiler(schema).value(expression)?
            }
            "doubleGreatest" | "longGreatest" => self.function("greatest")?.call(fields()?),
            "doubleLeast" | "longLeast" => self.function("least")?.call(fields()?),
            other => {
                return Err(DataFusionError::NotImplemented(format!(
                    "post-aggregator {:?}: type {other:?} is not supported",
                    p.name
                )));
            }
        })
    }
}
