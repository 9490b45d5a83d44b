//! The physical optimizer rule that moves work next to the data: operators above a
//! [`DistributedScanExec`] that can run on the historicals become part of its
//! fragment.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::Result;

use datafusion::physical_plan::{ExecutionPlan, Partitioning};

use super::admit::{broadcast_join, fetch_allowed};
use super::scan::{DistributedScanExec, is_row_local};
use crate::settings::GroveSettings;

/// A top-N (`ORDER BY .. LIMIT n`, a sort with a fetch) over a distributed scan runs
/// first on the historicals, each sending its own best `n` rows; the broker's sort
/// stays and picks the best `n` of those.
fn push_top_k(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
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
    // A sort of one partition here sorts all of the fragment's partitions there.
    let merged = !sort.preserve_partitioning();
    let pushed: Arc<dyn ExecutionPlan> = Arc::new(scan.with_top(|leaf| {
        let leaf: Arc<dyn ExecutionPlan> = if merged {
            Arc::new(CoalescePartitionsExec::new(leaf))
        } else {
            leaf
        };
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

/// `input` with the open distributed scan it is (directly, or through a round-robin
/// repartition, which does not look at rows) replaced by `push(scan)`; `None` when
/// it is no such scan.
fn onto_open_scan(
    input: &Arc<dyn ExecutionPlan>,
    push: impl FnOnce(&DistributedScanExec) -> Result<DistributedScanExec>,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    use datafusion::physical_plan::repartition::RepartitionExec;
    let through = input
        .downcast_ref::<RepartitionExec>()
        .filter(|r| matches!(r.partitioning(), Partitioning::RoundRobinBatch(_)))
        .map(|r| r.input().clone());
    let scan_node = through.clone().unwrap_or_else(|| input.clone());
    let Some(scan) = scan_node.downcast_ref::<DistributedScanExec>() else {
        return Ok(None);
    };
    if !scan.is_open() {
        return Ok(None);
    }
    let pushed: Arc<dyn ExecutionPlan> = Arc::new(push(scan)?);
    Ok(Some(match through {
        Some(_) => datafusion::physical_plan::execution_plan::replace_children_if_necessary(
            input.clone(),
            vec![pushed],
        )?,
        None => pushed,
    }))
}

/// A filter or projection over a distributed scan runs in the fragments (see
/// [`onto_open_scan`]), so historicals send fewer rows and columns.
fn push_row_local(node: Arc<dyn ExecutionPlan>) -> Result<Transformed<Arc<dyn ExecutionPlan>>> {
    if !is_row_local(&node) {
        return Ok(Transformed::no(node));
    }
    let operator = node.clone();
    let pushed = onto_open_scan(node.children()[0], |scan| {
        scan.with_top(|below| {
            datafusion::physical_plan::execution_plan::replace_children_if_necessary(
                operator,
                vec![below],
            )
        })
    })?;
    Ok(match pushed {
        Some(replaced) => Transformed::yes(replaced),
        None => Transformed::no(node),
    })
}

/// Whether `plan`, a join's build side, keeps fewer rows than it reads: a filter, an
/// aggregate, a limit or a join in it, on the broker or in a scan's fragments.
fn filters_rows(plan: &Arc<dyn ExecutionPlan>) -> bool {
    use datafusion::physical_plan::aggregates::AggregateExec;
    use datafusion::physical_plan::filter::FilterExec;
    use datafusion::physical_plan::joins::{
        CrossJoinExec, HashJoinExec, NestedLoopJoinExec, SortMergeJoinExec,
    };
    use datafusion::physical_plan::limit::{GlobalLimitExec, LocalLimitExec};
    plan.exists(|node| {
        Ok(node.downcast_ref::<FilterExec>().is_some()
            || node.downcast_ref::<AggregateExec>().is_some()
            || node.downcast_ref::<HashJoinExec>().is_some()
            || node.downcast_ref::<SortMergeJoinExec>().is_some()
            || node.downcast_ref::<NestedLoopJoinExec>().is_some()
            || node.downcast_ref::<CrossJoinExec>().is_some()
            || node.downcast_ref::<GlobalLimitExec>().is_some()
            || node.downcast_ref::<LocalLimitExec>().is_some()
            || node
                .downcast_ref::<DistributedScanExec>()
                .is_some_and(DistributedScanExec::filters))
    })
    .unwrap_or(false)
}

/// Bytes a row of `schema` takes, about: strings as 16.
fn row_width(schema: &datafusion::arrow::datatypes::Schema) -> usize {
    schema
        .fields()
        .iter()
        .map(|f| f.data_type().primitive_width().unwrap_or(16))
        .sum()
}

/// Whether a join that ends what the fragments run (only filters and projections
/// above it) is worth running there: it keeps only some probe rows (a semi or anti
/// join, or a `build` side that keeps fewer rows than its table, so fewer probe rows
/// match), or its rows are no wider than the probe rows it reads (then the broker
/// does less for the same bytes). A join of every probe row with an unfiltered
/// dimension whose columns (a name) widen each row sent goes back to the broker;
/// under an aggregate or a top-N in the fragments, or under another join that
/// stays, it stays.
fn join_pays(
    join: &datafusion::physical_plan::joins::HashJoinExec,
    build: &Arc<dyn ExecutionPlan>,
) -> bool {
    use datafusion::common::JoinType;
    matches!(
        join.join_type(),
        JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark
    ) || filters_rows(build)
        || row_width(&join.schema()) <= row_width(&join.right().schema())
}

/// `node` with each distributed scan's topmost join taken back to the broker while
/// it does not pay (see [`join_pays`]).
fn unpush_unpaid(node: Arc<dyn ExecutionPlan>) -> Result<Transformed<Arc<dyn ExecutionPlan>>> {
    let Some(scan) = node.downcast_ref::<DistributedScanExec>() else {
        return Ok(Transformed::no(node));
    };
    match scan.with_top_join_here(join_pays)? {
        // The scan under it may end with a join that does not pay either.
        Some(plan) => Ok(Transformed::yes(plan.transform_up(unpush_unpaid)?.data)),
        None => Ok(Transformed::no(node)),
    }
}

/// A hash join whose build side is small (DataFusion collects it into one hash table,
/// having sized it from statistics) and whose probe side is a distributed scan (through
/// a round-robin repartition) runs in the fragments, with the build side's rows sent
/// along: fact rows never leave the historicals, and what runs above the join may
/// move there too. Only joins whose answer is per probe row
/// ([`broadcast_join`](super::admit::broadcast_join)) and only while the session
/// lets build sides travel (`grove.broadcast_bytes` above 0). One that ends up not
/// paying goes back to the broker ([`unpush_unpaid`]).
fn push_broadcast_join(
    node: Arc<dyn ExecutionPlan>,
    broadcasts: bool,
) -> Result<Transformed<Arc<dyn ExecutionPlan>>> {
    use datafusion::physical_plan::joins::HashJoinExec;
    let Some(join) = node.downcast_ref::<HashJoinExec>() else {
        return Ok(Transformed::no(node));
    };
    if !broadcasts || !broadcast_join(join) {
        return Ok(Transformed::no(node));
    }
    let pushed = onto_open_scan(join.right(), |scan| {
        scan.with_broadcast_join(node.clone(), join.left().clone())
    })?;
    Ok(match pushed {
        Some(replaced) => Transformed::yes(replaced),
        None => Transformed::no(node),
    })
}

/// Moves what can run next to the data into the distributed scan below it: first
/// filters, projections and joins with a small build side (`push_row_local`,
/// `push_broadcast_join`), from the scans up, then the Partial half of a split
/// aggregate, so historicals send partial aggregate rows instead of raw rows. Only
/// repartitions may stand between an aggregate and the scan; anything else stays on
/// the broker. Top-N sorts are pushed the same way (see `push_top_k`).
#[derive(Debug, Default)]
pub struct PushPartialAggregate;

impl datafusion::physical_optimizer::PhysicalOptimizerRule for PushPartialAggregate {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &datafusion::config::ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
        use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
        use datafusion::physical_plan::coop::CooperativeExec;
        use datafusion::physical_plan::repartition::RepartitionExec;
        let broadcasts = config
            .extensions
            .get::<GroveSettings>()
            .is_none_or(|s| s.broadcast_bytes > 0);
        let plan = plan
            .transform_up(|node| {
                let pushed = push_row_local(node)?;
                if pushed.transformed {
                    return Ok(pushed);
                }
                push_broadcast_join(pushed.data, broadcasts)
            })?
            .data;
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
        .and_then(|t| t.data.transform_up(unpush_unpaid))
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "push_partial_aggregate"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
