//! Which decoded fragments a historical agrees to run.
//!
//! A fragment ticket carries a whole DataFusion physical plan, and DataFusion can
//! express far more than brokers ever push: scans of any local file, sinks that write
//! files, joins, table functions, async functions. A historical's Flight port is
//! reachable by whoever reaches the node, so it decodes a ticket with its own
//! registry and Grove's codec, then walks the plan before anything executes:
//!
//! - every leaf is a Grove segment scan, reading only segments the ticket lists, or
//!   the rows of a join's build side that the ticket carries ([`BroadcastRowsExec`]);
//!   in a shuffle stage's ticket, which lists no segments, the fragments of other
//!   historicals it reads ([`PeerFragmentsExec`]) instead;
//! - every other node is an operator brokers push ([`operator_allowed`]), a hash join
//!   only when it collects its build side and answers probe row by probe row
//!   ([`broadcast_join`]), or in a stage, when it joins two hash-partitioned inputs;
//! - every expression is one of DataFusion's pure expressions, and every function
//!   (scalar, aggregate, higher-order) is registered in the historical's session.
//!
//! Anything else is [`Refused`], naming what was found; the service answers gRPC
//! `PermissionDenied`.

use std::any::Any;
use std::collections::HashSet;
use std::sync::Arc;

use datafusion::common::JoinType;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::execution::FunctionRegistry;
use datafusion::physical_expr::expressions::{
    BinaryExpr, CaseExpr, CastExpr, Column, DynamicFilterPhysicalExpr, InListExpr, IsNotNullExpr,
    IsNullExpr, LambdaExpr, LambdaVariable, LikeExpr, Literal, NegativeExpr, NoOp, NotExpr,
    TryCastExpr, UnKnownColumn,
};
use datafusion::physical_expr::{HigherOrderFunctionExpr, PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::limit::{GlobalLimitExec, LocalLimitExec};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use grove_segment::scan::SegmentScanExec;

use super::broadcast::BroadcastRowsExec;
use super::peers::{MAX_PEER_FRAGMENTS, PeerFragmentsExec};
pub(crate) use super::refusal::find_external;
pub use super::refusal::{MAX_FIXED_WIDTH, Refused, check_type};

/// The most output partitions a fragment's repartition may ask for (as many as a
/// segment scan may have): each is a channel and a task on the historical.
pub const MAX_PARTITIONS: usize = 1024;

/// The most rows per batch a ticket may ask for (DataFusion's default is 8192).
pub const MAX_BATCH_SIZE: usize = 1 << 20;

/// Checks every node and expression of `plan` (see the module documentation);
/// `segments` are those the ticket lists, `functions` the historical's registry,
/// `stage` whether the ticket is a shuffle stage's.
pub fn admit(
    plan: &Arc<dyn ExecutionPlan>,
    segments: &[String],
    functions: &dyn FunctionRegistry,
    stage: bool,
) -> Result<(), Refused> {
    let listed: HashSet<&str> = segments.iter().map(String::as_str).collect();
    first_refusal(|refuse| {
        plan.apply(|node| Ok(refuse(admit_node(node.as_ref(), &listed, functions, stage))))
    })?;
    // A stage reads each historical's fragments once per scan it joins.
    let mut fragments = 0;
    let _ = plan.apply(|node| {
        if let Some(leaf) = concrete::<PeerFragmentsExec>(node.as_ref()) {
            fragments += leaf.fragments().len();
        }
        Ok(TreeNodeRecursion::Continue)
    });
    if fragments > MAX_PEER_FRAGMENTS {
        return Err(Refused(format!(
            "a stage reading {fragments} fragments (at most {MAX_PEER_FRAGMENTS})"
        )));
    }
    // Rows a ticket carries are only ever a join's build side.
    let (mut carried, mut built) = (0, 0);
    let _ = plan.apply(|node| {
        carried += usize::from(concrete::<BroadcastRowsExec>(node.as_ref()).is_some());
        built += usize::from(
            concrete::<HashJoinExec>(node.as_ref())
                .is_some_and(|join| concrete::<BroadcastRowsExec>(join.left().as_ref()).is_some()),
        );
        Ok(TreeNodeRecursion::Continue)
    });
    if carried != built {
        return Err(Refused(
            "rows the ticket carries that are not a hash join's build side".into(),
        ));
    }
    Ok(())
}

/// Runs a walk whose visitor hands each check to `refuse`, which keeps the first
/// refusal and stops the walk there. A walk that fails is a refusal too: what cannot
/// be looked at does not run.
fn first_refusal(
    walk: impl FnOnce(
        &mut dyn FnMut(Result<(), Refused>) -> TreeNodeRecursion,
    ) -> datafusion::error::Result<TreeNodeRecursion>,
) -> Result<(), Refused> {
    let mut refused = None;
    let mut refuse = |checked: Result<(), Refused>| match checked {
        Ok(()) => TreeNodeRecursion::Continue,
        Err(why) => {
            refused.get_or_insert(why);
            TreeNodeRecursion::Stop
        }
    };
    let walked = walk(&mut refuse);
    match (refused, walked) {
        (Some(why), _) => Err(why),
        (None, Err(e)) => Err(Refused(format!("the plan cannot be checked: {e}"))),
        (None, Ok(_)) => Ok(()),
    }
}

fn admit_node(
    node: &dyn ExecutionPlan,
    listed: &HashSet<&str>,
    functions: &dyn FunctionRegistry,
    stage: bool,
) -> Result<(), Refused> {
    if let Some(scan) = concrete::<SegmentScanExec>(node) {
        if let Some(unlisted) = scan
            .segments()
            .iter()
            .map(|s| s.segment.id().to_string())
            .find(|id| !listed.contains(id.as_str()))
        {
            return Err(Refused(format!(
                "the plan reads segment {unlisted}, which the ticket does not list"
            )));
        }
    } else if concrete::<BroadcastRowsExec>(node).is_some() {
        // Rows the ticket carries; its size limit bounds them.
    } else if concrete::<PeerFragmentsExec>(node).is_some() {
        if !stage {
            return Err(Refused(
                "fragments of other historicals in a ticket that is not a shuffle stage".into(),
            ));
        }
    } else if let Some(join) = concrete::<HashJoinExec>(node)
        && stage
    {
        // A stage's inputs are its slice of both sides, hash-partitioned alike.
        if *join.partition_mode() != PartitionMode::Partitioned || join.fetch().is_some() {
            return Err(Refused(format!(
                "a {} hash join in {:?} mode in a shuffle stage (only partitioned joins \
                 without a limit)",
                join.join_type(),
                join.partition_mode()
            )));
        }
    } else if let Some(join) = concrete::<HashJoinExec>(node) {
        if concrete::<BroadcastRowsExec>(join.left().as_ref()).is_none() {
            return Err(Refused(
                "a hash join whose build side is not rows the ticket carries".into(),
            ));
        }
        if !broadcast_join(join) {
            return Err(Refused(format!(
                "a {} hash join in {:?} mode (fragments run only inner and right joins \
                 that collect their build side, without a limit)",
                join.join_type(),
                join.partition_mode()
            )));
        }
    } else if !operator_allowed(node) {
        return Err(Refused(format!(
            "{} is not an operator brokers push to historicals",
            node.name()
        )));
    }
    if let Some(repartition) = concrete::<RepartitionExec>(node) {
        let partitions = repartition.partitioning().partition_count();
        if partitions > MAX_PARTITIONS {
            return Err(Refused(format!(
                "RepartitionExec into {partitions} partitions (at most {MAX_PARTITIONS})"
            )));
        }
    }
    if let Some(sort) = concrete::<SortExec>(node) {
        check_fetch("SortExec", sort.fetch())?;
    }
    if let Some(aggregate) = concrete::<AggregateExec>(node) {
        check_fetch("AggregateExec", aggregate.limit_options().map(|l| l.limit))?;
        for function in aggregate.aggr_expr() {
            let name = function.fun().name();
            require(functions.udaf(name).is_ok(), "aggregate function", name)?;
        }
        // Evaluated for grouping sets, but not among `apply_expressions`'.
        for (expr, _) in aggregate.group_expr().null_expr() {
            admit_expr_tree(expr, functions)?;
        }
    }
    first_refusal(|refuse| {
        node.apply_expressions(&mut |root| Ok(refuse(admit_expr_tree(root, functions))))
    })
}

/// The most rows a fragment's top-N sort or limited aggregate may keep: they set
/// room aside for that many rows before reading any. Brokers push no larger one.
pub const MAX_FRAGMENT_FETCH: usize = 1 << 24;

/// Whether a fragment may keep `fetch` rows (see [`MAX_FRAGMENT_FETCH`]); zero is
/// refused too, as the top-N operator cannot run with it.
pub fn fetch_allowed(fetch: usize) -> bool {
    (1..=MAX_FRAGMENT_FETCH).contains(&fetch)
}

fn check_fetch(operator: &str, fetch: Option<usize>) -> Result<(), Refused> {
    match fetch {
        Some(rows) if !fetch_allowed(rows) => Err(Refused(format!(
            "{operator} keeping {rows} rows (1 to {MAX_FRAGMENT_FETCH})"
        ))),
        _ => Ok(()),
    }
}

/// Checks every expression of the tree under `root`, and the expression a dynamic
/// filter holds (which it evaluates, but does not list among its children).
fn admit_expr_tree(
    root: &Arc<dyn PhysicalExpr>,
    functions: &dyn FunctionRegistry,
) -> Result<(), Refused> {
    first_refusal(|refuse| {
        root.apply(|expr| {
            let mut checked = admit_expr(expr.as_ref(), functions);
            if let (Ok(()), Some(filter)) =
                (&checked, expr.downcast_ref::<DynamicFilterPhysicalExpr>())
            {
                checked = match filter.current() {
                    Ok(inner) => admit_expr_tree(&inner, functions),
                    Err(e) => Err(Refused(format!("a dynamic filter cannot be checked: {e}"))),
                };
            }
            Ok(refuse(checked))
        })
    })
}

/// The operators brokers push above a segment scan: filters and projections, the
/// Partial half of an aggregate, a top-N sort, limits, and the repartitions, merges
/// and cooperative-yield wrappers DataFusion puts between them.
fn operator_allowed(node: &dyn ExecutionPlan) -> bool {
    concrete::<ProjectionExec>(node).is_some()
        || concrete::<FilterExec>(node).is_some()
        || concrete::<AggregateExec>(node).is_some()
        || concrete::<SortExec>(node).is_some()
        || concrete::<SortPreservingMergeExec>(node).is_some()
        || concrete::<GlobalLimitExec>(node).is_some()
        || concrete::<LocalLimitExec>(node).is_some()
        || concrete::<RepartitionExec>(node).is_some()
        || concrete::<CoalescePartitionsExec>(node).is_some()
        || concrete::<CooperativeExec>(node).is_some()
}

/// Whether a hash join can run in every fragment with the whole build side and a
/// share of the probe rows: it collects its (left) build side, and each probe row's
/// answer depends on that row alone (inner, right, right semi/anti/mark joins; a left
/// or full join needs every probe row to know which build rows never matched). No
/// limit: each fragment would keep its own.
pub fn broadcast_join(join: &HashJoinExec) -> bool {
    *join.partition_mode() == PartitionMode::CollectLeft
        && matches!(
            join.join_type(),
            JoinType::Inner
                | JoinType::Right
                | JoinType::RightSemi
                | JoinType::RightAnti
                | JoinType::RightMark
        )
        && !join.null_aware
        && join.fetch().is_none()
}

/// `node` as a `T` if that is its concrete type. (`dyn ExecutionPlan::downcast_ref`
/// follows `downcast_delegate`, through which a wrapper could pass for an operator
/// it is not.)
fn concrete<T: ExecutionPlan>(node: &dyn ExecutionPlan) -> Option<&T> {
    (node as &dyn Any).downcast_ref::<T>()
}

/// DataFusion's own expressions, which compute from their inputs alone, and
/// functions the historical has registered. Not allowed: async functions (they may
/// call out), scalar subqueries (their value is the broker's) and any expression
/// type this list does not know.
fn admit_expr(expr: &dyn PhysicalExpr, functions: &dyn FunctionRegistry) -> Result<(), Refused> {
    if let Some(call) = expr.downcast_ref::<ScalarFunctionExpr>() {
        let name = call.fun().name();
        return require(functions.udf(name).is_ok(), "function", name);
    }
    if let Some(call) = expr.downcast_ref::<HigherOrderFunctionExpr>() {
        let name = call.fun().name();
        return require(
            functions.higher_order_function(name).is_ok(),
            "function",
            name,
        );
    }
    if let Some(literal) = expr.downcast_ref::<Literal>() {
        return check_type(&literal.value().data_type());
    }
    if let Some(cast) = expr.downcast_ref::<CastExpr>() {
        return check_type(cast.cast_type());
    }
    if let Some(cast) = expr.downcast_ref::<TryCastExpr>() {
        return check_type(cast.cast_type());
    }
    let pure = expr.is::<Column>()
        || expr.is::<BinaryExpr>()
        || expr.is::<CaseExpr>()
        || expr.is::<InListExpr>()
        || expr.is::<IsNullExpr>()
        || expr.is::<IsNotNullExpr>()
        || expr.is::<LikeExpr>()
        || expr.is::<NegativeExpr>()
        || expr.is::<NotExpr>()
        || expr.is::<NoOp>()
        || expr.is::<UnKnownColumn>()
        || expr.is::<LambdaExpr>()
        || expr.is::<LambdaVariable>()
        || expr.is::<DynamicFilterPhysicalExpr>();
    if pure {
        Ok(())
    } else {
        Err(Refused(format!(
            "expression {expr} is not one a fragment may compute"
        )))
    }
}

fn require(registered: bool, kind: &str, name: &str) -> Result<(), Refused> {
    if registered {
        Ok(())
    } else {
        Err(unregistered(kind, name))
    }
}

/// A refusal of a function the historical's session does not have.
pub fn unregistered(kind: &str, name: &str) -> Refused {
    Refused(format!(
        "{kind} {name} is not registered on this historical"
    ))
}
