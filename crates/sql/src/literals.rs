//! Exact decimal literals against DOUBLE columns.
//!
//! Grove parses `0.07` as the exact number (as Druid's SQL and Postgres do), so that
//! `.06 + 0.01` is `0.07` and not the double just below it. DataFusion then compares a
//! DOUBLE column with such a literal by casting every row to `DECIMAL(30, 15)`: slow,
//! and an error for values beyond 10^15. [`DecimalLiterals`] turns the comparison
//! around: the constant side is cast once to the column's float type, its nearest
//! value, which is what ingestion stored for the same decimal text.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::DFSchema;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::error::Result;
use datafusion::logical_expr::expr::{Between, InList};
use datafusion::logical_expr::{BinaryExpr, Cast, Expr, ExprSchemable, LogicalPlan};
use datafusion::optimizer::AnalyzerRule;

/// Runs after DataFusion's type coercion: `CAST(f AS DECIMAL) op c` becomes
/// `f op CAST(c AS DOUBLE)` for a float `f` and a `c` that reads no column, and the
/// same for `BETWEEN` and `IN` lists.
#[derive(Debug, Default)]
pub struct DecimalLiterals;

impl AnalyzerRule for DecimalLiterals {
    fn analyze(&self, plan: LogicalPlan, _: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|plan| {
            let mut schema = DFSchema::empty();
            for input in plan.inputs() {
                schema.merge(input.schema());
            }
            plan.map_expressions(|expr| expr.transform_up(|e| Ok(rewrite(e, &schema))))
        })
        .data()
    }

    fn name(&self) -> &str {
        "grove_decimal_literals"
    }
}

fn rewrite(expr: Expr, schema: &DFSchema) -> Transformed<Expr> {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) if op.supports_propagation() => {
            match (
                float_under_cast(&left, schema),
                float_under_cast(&right, schema),
            ) {
                (Some((float, to)), None) if reads_no_column(&right) => Transformed::yes(
                    Expr::BinaryExpr(BinaryExpr::new(Box::new(float), op, cast(*right, to))),
                ),
                (None, Some((float, to))) if reads_no_column(&left) => Transformed::yes(
                    Expr::BinaryExpr(BinaryExpr::new(cast(*left, to), op, Box::new(float))),
                ),
                _ => Transformed::no(Expr::BinaryExpr(BinaryExpr { left, op, right })),
            }
        }
        Expr::Between(between) => match float_under_cast(&between.expr, schema) {
            Some((float, to))
                if reads_no_column(&between.low) && reads_no_column(&between.high) =>
            {
                Transformed::yes(Expr::Between(Between::new(
                    Box::new(float),
                    between.negated,
                    cast(*between.low, to.clone()),
                    cast(*between.high, to),
                )))
            }
            _ => Transformed::no(Expr::Between(between)),
        },
        Expr::InList(in_list) => match float_under_cast(&in_list.expr, schema) {
            Some((float, to)) if in_list.list.iter().all(reads_no_column) => {
                let list = in_list.list.into_iter().map(|e| *cast(e, to.clone()));
                Transformed::yes(Expr::InList(InList::new(
                    Box::new(float),
                    list.collect(),
                    in_list.negated,
                )))
            }
            _ => Transformed::no(Expr::InList(in_list)),
        },
        other => Transformed::no(other),
    }
}

/// `CAST(f AS DECIMAL)` where `f` is a float: `f` and its type.
fn float_under_cast(expr: &Expr, schema: &DFSchema) -> Option<(Expr, DataType)> {
    let Expr::Cast(Cast { expr, field }) = expr else {
        return None;
    };
    if !field.data_type().is_decimal() {
        return None;
    }
    match expr.get_type(schema) {
        Ok(float @ (DataType::Float32 | DataType::Float64)) => Some((*expr.clone(), float)),
        _ => None,
    }
}

fn reads_no_column(expr: &Expr) -> bool {
    expr.column_refs().is_empty() && !expr.is_volatile()
}

fn cast(expr: Expr, to: DataType) -> Box<Expr> {
    Box::new(Expr::Cast(Cast::new(Box::new(expr), to)))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Float64Array, RecordBatch};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;

    fn context() -> SessionContext {
        let mut config = SessionConfig::new();
        config.options_mut().sql_parser.parse_float_as_decimal = true;
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .with_analyzer_rule(Arc::new(DecimalLiterals))
            .build();
        let ctx = SessionContext::new_with_state(state);
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, true)]));
        let values = Float64Array::from(vec![0.04, 0.05, 0.06, 0.07, 0.08, 1e20]);
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(values)]).unwrap();
        let table = MemTable::try_new(schema, vec![vec![batch]]).unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
        ctx
    }

    async fn text(ctx: &SessionContext, sql: &str) -> String {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        pretty_format_batches(&batches).unwrap().to_string()
    }

    #[tokio::test]
    async fn decimal_literals_compare_with_the_doubles_they_denote() {
        let ctx = context();
        let cases = [
            // 0.06 + 0.01 in doubles is just below the double 0.07: exactly, it is 0.07.
            ("x BETWEEN .06 - 0.01 AND .06 + 0.01", 3),
            ("x NOT BETWEEN .06 - 0.01 AND .06 + 0.01", 3),
            ("x <= 0.06 + 0.01", 4),
            ("0.06 + 0.01 >= x", 4),
            ("x IN (0.05, 0.07)", 2),
            // Beyond DECIMAL(30, 15): no overflow.
            ("x > 1.5", 1),
            ("x = 100000000000000000000.0", 1),
        ];
        for (predicate, expected) in cases {
            let sql = format!("SELECT COUNT(*) AS n FROM t WHERE {predicate}");
            let answer = text(&ctx, &sql).await;
            assert!(
                answer.contains(&format!("| {expected} ")),
                "{predicate}: {answer}"
            );
            let plan = text(&ctx, &format!("EXPLAIN {sql}")).await;
            assert!(!plan.contains("CAST(t.x"), "{predicate}: {plan}");
        }
    }
}
