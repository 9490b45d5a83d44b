//! The physical optimizer rules that move work next to the data: operators above a
//! [`DistributedScanExec`] that can run on the historicals become part of its
//! fragment ([`PushPartialAggregate`]), and joins of two large sides run on the
//! historicals as shuffle stages ([`PlanStages`], see `stage`).

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::Result;

use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::{
    Distribution, ExecutionPlan, ExecutionPlanProperties, Partitioning,
};

use super::admit::{broadcast_join, fetch_allowed};
use super::scan::{DistributedScanExec, is_row_local};
use super::stage::{StageExec, leaf};
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

/// A join that needs from its probe side only the rows that match its build side (a
/// left, left semi, left anti or left mark join, not null-aware, that collects a small
/// build side; or one of those or an inner join with both sides hash-partitioned) over
/// a distributed scan: the fragments keep only those rows, by a right semi join with
/// the build side's rows sent along, and the broker's join reads the build side from
/// that same run (partitioned again for a partitioned join). A build side over
/// `grove.broadcast_bytes` is not sent, and the probe rows all cross as before. The
/// scan may lie under projections, repartitions and the final half of an aggregate
/// whose group columns the join keys are: the fragments then keep the rows of the
/// matching groups, under their Partial aggregate.
fn push_reduction(
    node: Arc<dyn ExecutionPlan>,
    broadcasts: bool,
) -> Result<Transformed<Arc<dyn ExecutionPlan>>> {
    use datafusion::common::JoinType;
    use datafusion::physical_plan::repartition::RepartitionExec;
    let Some(join) = node.downcast_ref::<HashJoinExec>() else {
        return Ok(Transformed::no(node));
    };
    let left_preserving = matches!(
        join.join_type(),
        JoinType::Left | JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark
    );
    // The build side's plan, and the partitioning the join reads the rows it collected
    // in: as they are when it collects its build side, hash-partitioned again when
    // both sides are (an inner join too: DataFusion planned it so by estimates, and
    // the build side may turn out small).
    let (build, partitioning) = match join.partition_mode() {
        PartitionMode::CollectLeft if left_preserving => (join.left().clone(), None),
        PartitionMode::Partitioned if left_preserving || *join.join_type() == JoinType::Inner => {
            let partitioning = join.left().properties().partitioning.clone();
            if !matches!(partitioning, Partitioning::Hash(..)) {
                return Ok(Transformed::no(node));
            }
            // What a repartition reads, or the hash-partitioned side itself.
            let build = match join.left().downcast_ref::<RepartitionExec>() {
                Some(repartition) => repartition.input().clone(),
                None => join.left().clone(),
            };
            (build, Some(partitioning))
        }
        _ => return Ok(Transformed::no(node)),
    };
    if !broadcasts || join.null_aware || join.fetch().is_some() {
        return Ok(Transformed::no(node));
    }
    let (build_keys, keys): (Vec<_>, Vec<_>) = join.on().iter().cloned().unzip();
    // Only worth it: a reduction that cannot be made leaves the join as it was.
    let reduced = reduce_probe(join.right(), keys, &|scan, keys| {
        scan.reduced_by(
            build.clone(),
            build_keys.clone(),
            keys,
            join.null_equality(),
        )
    })
    .ok()
    .flatten();
    match reduced {
        Some((probe, rows)) => {
            let build = match partitioning {
                Some(partitioning) => Arc::new(RepartitionExec::try_new(rows, partitioning)?),
                None => rows,
            };
            Ok(Transformed::yes(
                datafusion::physical_plan::execution_plan::replace_children_if_necessary(
                    node,
                    vec![build, probe],
                )?,
            ))
        }
        None => Ok(Transformed::no(node)),
    }
}

/// The reducing scan's answer: the new scan and the leaf yielding the build rows.
type Reduced = (DistributedScanExec, Arc<dyn ExecutionPlan>);

/// How a scan is reduced, given the keys over its output.
type Reduce<'a> =
    &'a dyn Fn(&DistributedScanExec, Vec<Arc<dyn PhysicalExpr>>) -> Result<Option<Reduced>>;

/// A reduced probe side, and the leaf yielding the build rows.
type ReducedProbe = (Arc<dyn ExecutionPlan>, Arc<dyn ExecutionPlan>);

/// `probe` with the distributed scan it reads reduced by `reduce(scan, keys)`, `keys`
/// followed down to it through projections (of columns), repartitions and the
/// final half of an aggregate (group columns); with the leaf of build rows.
fn reduce_probe(
    probe: &Arc<dyn ExecutionPlan>,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    reduce: Reduce,
) -> Result<Option<ReducedProbe>> {
    use datafusion::physical_expr::expressions::Column;
    use datafusion::physical_plan::repartition::RepartitionExec;
    if let Some(scan) = probe.downcast_ref::<DistributedScanExec>() {
        return Ok(reduce(scan, keys)?
            .map(|(scan, build)| (Arc::new(scan) as Arc<dyn ExecutionPlan>, build)));
    }
    let column = |e: &Arc<dyn PhysicalExpr>| e.downcast_ref::<Column>().map(Column::index);
    let below: Option<Vec<Arc<dyn PhysicalExpr>>> =
        if let Some(projection) = probe.downcast_ref::<ProjectionExec>() {
            keys.iter()
                .map(|k| {
                    let e = &projection.expr().get(column(k)?)?.expr;
                    column(e).map(|_| e.clone())
                })
                .collect()
        } else if let Some(aggregate) = probe.downcast_ref::<AggregateExec>() {
            let finishing = matches!(
                aggregate.mode(),
                AggregateMode::Final | AggregateMode::FinalPartitioned
            ) && aggregate.group_expr().is_single()
                && aggregate.limit_options().is_none();
            let groups = aggregate.group_expr().expr();
            finishing
                .then(|| {
                    keys.iter()
                        .map(|k| {
                            let (e, _) = groups.get(column(k)?)?;
                            column(e).map(|_| e.clone())
                        })
                        .collect()
                })
                .flatten()
        } else if probe.downcast_ref::<RepartitionExec>().is_some()
            || probe.downcast_ref::<CooperativeExec>().is_some()
        {
            Some(keys)
        } else {
            None
        };
    let Some(below) = below else {
        return Ok(None);
    };
    let Some((input, build)) = reduce_probe(probe.children()[0], below, reduce)? else {
        return Ok(None);
    };
    let probe = datafusion::physical_plan::execution_plan::replace_children_if_necessary(
        probe.clone(),
        vec![input],
    )?;
    Ok(Some((probe, build)))
}

/// `node` moved into the distributed scan below it if it is a filter or projection
/// ([`push_row_local`]) or a join with a small build side ([`push_broadcast_join`]).
fn push_next_to_data(
    node: Arc<dyn ExecutionPlan>,
    broadcasts: bool,
) -> Result<Transformed<Arc<dyn ExecutionPlan>>> {
    let pushed = push_row_local(node)?;
    if pushed.transformed {
        return Ok(pushed);
    }
    push_broadcast_join(pushed.data, broadcasts)
}

/// Whether the session lets build sides travel to the historicals
/// (`grove.broadcast_bytes` above 0).
fn sends_build_sides(config: &datafusion::config::ConfigOptions) -> bool {
    GroveSettings::of(config).broadcast_bytes > 0
}

/// Reduces the probe sides of joins that need only their matching rows (see
/// [`push_reduction`]), once every other rule has run: the join's build side and the
/// probe scan then share one run of it, and a later rewrite of that build side would
/// give the scan a run of its own.
#[derive(Debug, Default)]
pub struct ReduceProbes;

impl datafusion::physical_optimizer::PhysicalOptimizerRule for ReduceProbes {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &datafusion::config::ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        use datafusion::physical_plan::work_table::WorkTableExec;
        // A recursive query's term runs again with its plan's state reset, which
        // would part a join's build side from the scan it reduces.
        if plan.exists(|node| Ok(node.downcast_ref::<WorkTableExec>().is_some()))? {
            return Ok(plan);
        }
        reduce_below(plan, sends_build_sides(config))
    }

    fn name(&self) -> &str {
        "reduce_probes"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `plan` with the joins in it reduced ([`push_reduction`]), from the bottom up, but
/// none inside a shuffle stage: its plan runs on the historicals, over its peers'
/// fragments, where no build rows come from the broker.
fn reduce_below(plan: Arc<dyn ExecutionPlan>, broadcasts: bool) -> Result<Arc<dyn ExecutionPlan>> {
    if plan.downcast_ref::<StageExec>().is_some() {
        return Ok(plan);
    }
    let children = plan
        .children()
        .into_iter()
        .map(|child| reduce_below(child.clone(), broadcasts))
        .collect::<Result<_>>()?;
    let plan =
        datafusion::physical_plan::execution_plan::replace_children_if_necessary(plan, children)?;
    Ok(push_reduction(plan, broadcasts)?.data)
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
        let broadcasts = sends_build_sides(config);
        let plan = plan
            .transform_up(|node| push_next_to_data(node, broadcasts))?
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

/// Whether `plan` can run as a stage and gains by it: every path down from it ends
/// at a leaf whose keys are not volatile, through partitioned hash joins,
/// aggregates that work per hash partition, filters and projections only; it joins,
/// and it ends in an aggregate, so what its historicals send the broker is grouped
/// rather than the joined rows. (Joined rows would cross twice: from the historical
/// holding them to the slice's, then to the broker. An aggregate alone gains
/// nothing either: its partial halves already run in the fragments.)
fn stageable(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let mut top = plan.clone();
    while top.downcast_ref::<ProjectionExec>().is_some()
        || top.downcast_ref::<FilterExec>().is_some()
        || top.downcast_ref::<CooperativeExec>().is_some()
    {
        top = top.children()[0].clone();
    }
    if top.downcast_ref::<AggregateExec>().is_none() {
        return false;
    }
    let (mut allowed, mut joins) = (true, false);
    let _ = plan.apply(|node| {
        if let Some((keys, _)) = leaf(node) {
            allowed &= !keys
                .iter()
                .any(datafusion::physical_expr_common::physical_expr::is_volatile);
            return Ok(TreeNodeRecursion::Jump);
        }
        if let Some(join) = node.downcast_ref::<HashJoinExec>() {
            allowed &=
                *join.partition_mode() == PartitionMode::Partitioned && join.fetch().is_none();
            joins = true;
        } else if let Some(aggregate) = node.downcast_ref::<AggregateExec>() {
            allowed &= matches!(
                aggregate.mode(),
                AggregateMode::Partial
                    | AggregateMode::FinalPartitioned
                    | AggregateMode::SinglePartitioned
            );
            allowed &= aggregate.limit_options().is_none();
        } else {
            allowed &= node.downcast_ref::<FilterExec>().is_some()
                || node.downcast_ref::<ProjectionExec>().is_some()
                || node.downcast_ref::<CooperativeExec>().is_some();
        }
        Ok(if allowed {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    allowed && joins
}

/// Plans shuffle stages (see `stage`) where a subtree qualifies and nothing above it
/// relies on how its rows are partitioned or ordered, while the session has
/// `grove.shuffle` on. A plan whose requirements no longer hold with its stages
/// (which nothing should make) is kept as it was.
#[derive(Debug, Default)]
pub struct PlanStages;

impl datafusion::physical_optimizer::PhysicalOptimizerRule for PlanStages {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &datafusion::config::ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        use datafusion::physical_optimizer::sanity_checker::SanityCheckPlan;
        if !GroveSettings::of(config).shuffle {
            return Ok(plan);
        }
        let staged = match as_stage(&plan)? {
            Some(stage) => stage,
            None => place_below(plan.clone(), false)?,
        };
        if Arc::ptr_eq(&staged, &plan) {
            return Ok(plan);
        }
        match SanityCheckPlan::new().optimize(staged, config) {
            Ok(staged) => Ok(staged),
            Err(e) => {
                tracing::warn!("shuffle stages left out: {e}");
                Ok(plan)
            }
        }
    }

    fn name(&self) -> &str {
        "plan_stages"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `plan` as a stage, if it qualifies once its leaves' inputs take what runs above
/// their scans into the fragments (a join with a build side whose rows would only
/// widen the rows sent to the broker is worth it when they go to a historical of
/// the stage instead).
fn as_stage(plan: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    use datafusion::physical_plan::repartition::RepartitionExec;
    if !plan.exists(|node| Ok(node.downcast_ref::<HashJoinExec>().is_some()))? {
        return Ok(None);
    }
    let absorbed = plan
        .clone()
        .transform_down(|node| {
            let Some(repartition) = node.downcast_ref::<RepartitionExec>() else {
                return Ok(Transformed::no(node));
            };
            if !matches!(repartition.partitioning(), Partitioning::Hash(..))
                || leaf(&node).is_some()
            {
                return Ok(Transformed::no(node));
            }
            let input = repartition
                .input()
                .clone()
                .transform_up(|below| push_next_to_data(below, true))?;
            if !input.transformed {
                return Ok(Transformed::no(node));
            }
            let node = datafusion::physical_plan::execution_plan::replace_children_if_necessary(
                node,
                vec![input.data],
            )?;
            Ok(Transformed::new(node, true, TreeNodeRecursion::Jump))
        })?
        .data;
    if !stageable(&absorbed) {
        return Ok(None);
    }
    Ok(StageExec::try_new(absorbed).map(|stage| Arc::new(stage) as Arc<dyn ExecutionPlan>))
}

/// `node` with stages for those of its children that qualify, and below the others.
/// `relied`: whether something above relies on how `node`'s rows are partitioned. A
/// child's partitioning is relied on when `node` requires a distribution of it, or
/// when `node` passes it on (hash-partitioned as many ways as its child, not by
/// repartitioning) and is relied on itself: a projection over a join under a
/// partitioned join, a union under an aggregate.
fn place_below(node: Arc<dyn ExecutionPlan>, relied: bool) -> Result<Arc<dyn ExecutionPlan>> {
    use datafusion::physical_plan::repartition::RepartitionExec;
    let distributions = node.input_distribution_requirements().into_per_child();
    let orderings = node.required_input_ordering();
    let partitions = node.output_partitioning().partition_count();
    // What repartitions or merges its input does not pass on its partitioning, nor
    // does what has no hash partitioning to rely on.
    let passes_on = matches!(node.output_partitioning(), Partitioning::Hash(..))
        && node.downcast_ref::<RepartitionExec>().is_none();
    let mut changed = false;
    let mut children = Vec::new();
    for (k, child) in node.children().into_iter().enumerate() {
        let child_relied = !matches!(
            distributions.get(k),
            None | Some(Distribution::UnspecifiedDistribution)
        ) || (relied
            && passes_on
            && child.output_partitioning().partition_count() == partitions);
        let free = !child_relied && orderings.get(k).is_none_or(Option::is_none);
        let stage = if free { as_stage(child)? } else { None };
        let new = match stage {
            Some(stage) => stage,
            None => place_below(child.clone(), child_relied)?,
        };
        changed |= !Arc::ptr_eq(&new, child);
        children.push(new);
    }
    if changed {
        datafusion::physical_plan::execution_plan::replace_children_if_necessary(node, children)
    } else {
        Ok(node)
    }
}
