//! The physical optimizer rule that moves work next to the data: operators above a
//! [`DistributedScanExec`] that can run on the historicals become part of its
//! fragment.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::Result;

use datafusion::physical_plan::{ExecutionPlan, Partitioning};

use super::admit::fetch_allowed;
use super::scan::{DistributedScanExec, is_row_local};

/// A top-N (`ORDER BY .. LIMIT n`, a sort with a fetch) over a distributed scan runs
/// first on the historicals, each sending its own best `n` rows; the broker's sort
/// stays and picks the best `n` of those.
fn push_top_k(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    use datafusion::physical_plan::repartition::RepartitionExec;
    use datafusion::physical_plan::sorts::sort::SortExec;
    let Some(sort) = node.downcast_ref::<SortExec>() else {
        return Ok(None);
    };
    // Historicals take only top-Ns they can set room aside for.
    if !sort.fetch().is_some_and(fetch_allowed) {
        return Ok(None);
    }
    let mut below = sort.input().clone();
    while let Some(repartition) = below.downcast_ref::<RepartitionExec>() {
        below = repartition.input().clone();
    }
    let Some(scan) = below.downcast_ref::<DistributedScanExec>() else {
        return Ok(None);
    };
    if !scan.is_open() {
        return Ok(None);
    }
    let remote_sort = node.clone();
    let pushed: Arc<dyn ExecutionPlan> = Arc::new(scan.with_top(|leaf| {
        datafusion::physical_plan::execution_plan::replace_children_if_necessary(
            remote_sort,
            vec![leaf],
        )
    })?);
    let local = datafusion::physical_plan::execution_plan::replace_children_if_necessary(
        node.clone(),
        vec![pushed],
    )?;
    Ok(Some(local))
}

/// A filter or projection over a distributed scan (directly, or through a
/// round-robin repartition, which does not look at rows) runs in the fragments, so
/// historicals send fewer rows and columns.
fn push_row_local(node: Arc<dyn ExecutionPlan>) -> Result<Transformed<Arc<dyn ExecutionPlan>>> {
    use datafusion::physical_plan::repartition::RepartitionExec;
    if !is_row_local(&node) {
        return Ok(Transformed::no(node));
    }
    let child = node.children()[0].clone();
    let through = child
        .downcast_ref::<RepartitionExec>()
        .filter(|r| matches!(r.partitioning(), Partitioning::RoundRobinBatch(_)))
        .map(|r| r.input().clone());
    let scan_node = through.clone().unwrap_or_else(|| child.clone());
    let Some(scan) = scan_node.downcast_ref::<DistributedScanExec>() else {
        return Ok(Transformed::no(node));
    };
    if !scan.is_open() {
        return Ok(Transformed::no(node));
    }
    let operator = node.clone();
    let pushed: Arc<dyn ExecutionPlan> = Arc::new(scan.with_top(|below| {
        datafusion::physical_plan::execution_plan::replace_children_if_necessary(
            operator,
            vec![below],
        )
    })?);
    let replaced = match through {
        Some(_) => datafusion::physical_plan::execution_plan::replace_children_if_necessary(
            child,
            vec![pushed],
        )?,
        None => pushed,
    };
    Ok(Transformed::yes(replaced))
}

/// Moves what can run next to the data into the distributed scan below it: first
/// filters and projections (`push_row_local`), then the Partial half of a split
/// aggregate, so historicals send partial aggregate rows instead of raw rows. Only
/// repartitions may stand between an aggregate and the scan; anything else stays on
/// the broker. Top-N sorts are pushed the same way (see `push_top_k`).
#[derive(Debug, Default)]
pub struct PushPartialAggregate;

impl datafusion::physical_optimizer::PhysicalOptimizerRule for PushPartialAggregate {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &datafusion::config::ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
        use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
        use datafusion::physical_plan::coop::CooperativeExec;
        use datafusion::physical_plan::repartition::RepartitionExec;
        let plan = plan.transform_up(push_row_local)?.data;
        plan.transform_down(|node| {
            if let Some(pushed) = push_top_k(&node)? {
                return Ok(Transformed::new(pushed, true, TreeNodeRecursion::Jump));
            }
            let Some(aggregate) = node.downcast_ref::<AggregateExec>() else {
                return Ok(Transformed::no(node));
            };
            let single = *aggregate.mode() == AggregateMode::Single;
            if *aggregate.mode() != AggregateMode::Partial && !single {
                return Ok(Transformed::no(node));
            }
            if let Some(limit) = aggregate.limit_options()
                && !fetch_allowed(limit.limit)
            {
                return Ok(Transformed::no(node));
            }
            // Repartitions, and the wrapper that makes a leaf yield to the scheduler,
            // lie between the aggregate and the scan.
            let mut below = aggregate.input().clone();
            let mut cooperative = false;
            loop {
                if let Some(repartition) = below.downcast_ref::<RepartitionExec>() {
                    below = repartition.input().clone();
                } else if let Some(wrapper) = below.downcast_ref::<CooperativeExec>() {
                    cooperative = true;
                    below = wrapper.input().clone();
                } else {
                    break;
                }
            }
            let Some(scan) = below.downcast_ref::<DistributedScanExec>() else {
                return Ok(Transformed::no(node));
            };
            if !scan.is_open() {
                return Ok(Transformed::no(node));
            }
            if single {
                // One input partition made DataFusion combine the two halves: split
                // them again, Partial on the historicals and Final here.
                let mut aggregates = Vec::new();
                let pushed = scan.with_top(|leaf| {
                    let schema = leaf.schema();
                    let partial = AggregateExec::try_new(
                        AggregateMode::Partial,
                        aggregate.group_expr().clone(),
                        aggregate.aggr_expr().to_vec(),
                        aggregate.filter_expr().to_vec(),
                        leaf,
                        schema,
                    )?;
                    aggregates = partial.aggr_expr().to_vec();
                    Ok(Arc::new(partial))
                })?;
                let mut input: Arc<dyn ExecutionPlan> = Arc::new(pushed);
                if cooperative {
                    input = Arc::new(CooperativeExec::new(input));
                }
                if input.properties().partitioning.partition_count() > 1 {
                    input = Arc::new(CoalescePartitionsExec::new(input));
                }
                let last = AggregateExec::try_new(
                    AggregateMode::Final,
                    aggregate.group_expr().as_final(),
                    aggregates,
                    aggregate.filter_expr().to_vec(),
                    input,
                    aggregate.input_schema(),
                )?
                .with_limit_options(aggregate.limit_options());
                return Ok(Transformed::new(
                    Arc::new(last) as Arc<dyn ExecutionPlan>,
                    true,
                    TreeNodeRecursion::Jump,
                ));
            }
            let partial = node.clone();
            let pushed = scan.with_top(|leaf| {
                datafusion::physical_plan::execution_plan::replace_children_if_necessary(
                    partial,
                    vec![leaf],
                )
            })?;
            Ok(Transformed::new(
                Arc::new(pushed) as Arc<dyn ExecutionPlan>,
                true,
                TreeNodeRecursion::Jump,
            ))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "push_partial_aggregate"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
