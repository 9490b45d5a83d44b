//! Semi and anti joins move below the inner joins they filter.
//!
//! `x JOIN y ... WHERE x.k IN (SELECT ...)` becomes, once DataFusion decorrelates the
//! subquery, a semi join over the inner join's answer: every row of `x JOIN y` is
//! hashed or probed before the few that match are kept (TPC-H Q18 joins six million
//! lineitems with their orders to keep 57 orders' worth). A semi or anti join without
//! a filter keeps or drops a row by the columns of its keys alone, so when those are
//! all columns of one side of the inner join it is a filter on that side:
//! [`PushSemiJoins`] moves it there, `(x SEMI JOIN s) JOIN y`, where it reads fewer
//! rows and the join above reads only the rows it keeps. The answer is the same rows: the inner join pairs
//! each kept row of `x` with the rows of `y` it paired before.
//!
//! A semi join with a filter (a correlated `EXISTS` comparing columns of both sides,
//! as TPC-H Q21's) stays where it is: over a scan and a broadcast dimension it runs in
//! the scan's fragments with the dimension's join, and moved below that join it would
//! not.
//!
//! It moves only past a join whose other side is tables joined without a filter
//! ([`keeps_every_row`]): a join with a filtered dimension (TPC-H Q21's one nation)
//! may keep few of the rows, and the semi join then reads fewer above it than below.
//!
//! The rule looks through a projection of plain columns between the semi join and the
//! inner join (the names, and so the keys' columns, are the same below it), and applies
//! again below, so a semi join reaches the table whose column it reads.

use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, Result};
use datafusion::logical_expr::{Expr, Join, JoinType, LogicalPlan, Projection};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// The logical optimizer rule (see the module documentation).
#[derive(Debug, Default)]
pub struct PushSemiJoins;

impl OptimizerRule for PushSemiJoins {
    fn name(&self) -> &str {
        "grove_push_semi_joins"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        match pushed(&plan)? {
            Some(pushed) => Ok(Transformed::yes(pushed)),
            None => Ok(Transformed::no(plan)),
        }
    }
}

/// `plan` with its semi or anti join moved below the inner join under it, if it is one
/// that can move.
fn pushed(plan: &LogicalPlan) -> Result<Option<LogicalPlan>> {
    let LogicalPlan::Join(semi) = plan else {
        return Ok(None);
    };
    if !matches!(semi.join_type, JoinType::LeftSemi | JoinType::LeftAnti) || semi.filter.is_some() {
        return Ok(None);
    }
    // The columns of the semi join's left side that decide whether a row stays.
    let deciding: Vec<&Column> = semi.on.iter().flat_map(|(l, _)| l.column_refs()).collect();
    let (projection, inner) = match semi.left.as_ref() {
        LogicalPlan::Projection(projection)
            if projection.expr.iter().all(|e| matches!(e, Expr::Column(_))) =>
        {
            (Some(projection), projection.input.as_ref())
        }
        other => (None, other),
    };
    let LogicalPlan::Join(join) = inner else {
        return Ok(None);
    };
    if join.join_type != JoinType::Inner || join.filter.is_some() {
        return Ok(None);
    }
    let reads_only = |side: &LogicalPlan| deciding.iter().all(|c| side.schema().has_column(c));
    let below = |side: &Arc<LogicalPlan>| -> Result<Arc<LogicalPlan>> {
        Ok(Arc::new(LogicalPlan::Join(Join::try_new(
            Arc::clone(side),
            Arc::clone(&semi.right),
            semi.on.clone(),
            semi.filter.clone(),
            semi.join_type,
            semi.join_constraint,
            semi.null_equality,
            semi.null_aware,
        )?)))
    };
    // A semi join's answer has its left side's schema, so the inner join's stays.
    let join = if reads_only(&join.left) && keeps_every_row(&join.right) {
        Join {
            left: below(&join.left)?,
            ..join.clone()
        }
    } else if reads_only(&join.right) && keeps_every_row(&join.left) {
        Join {
            right: below(&join.right)?,
            ..join.clone()
        }
    } else {
        return Ok(None);
    };
    let join = LogicalPlan::Join(join);
    Ok(Some(match projection {
        Some(projection) => LogicalPlan::Projection(Projection::try_new_with_schema(
            projection.expr.clone(),
            Arc::new(join),
            Arc::clone(&projection.schema),
        )?),
        None => join,
    }))
}

/// Whether `plan` is tables joined without a filter: rows its join with another side
/// on a key leaves out only for want of a partner, as a dimension joined on its key
/// leaves out none. Below a join with a filtered side, the join may drop most rows, and
/// a semi join above it reads fewer rows than it would below: it stays.
fn keeps_every_row(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::TableScan(scan) => scan.filters.is_empty() && scan.fetch.is_none(),
        LogicalPlan::Projection(_) | LogicalPlan::SubqueryAlias(_) => {
            plan.inputs().into_iter().all(keeps_every_row)
        }
        LogicalPlan::Join(join) => {
            join.join_type == JoinType::Inner
                && join.filter.is_none()
                && keeps_every_row(&join.left)
                && keeps_every_row(&join.right)
        }
        _ => false,
    }
}
