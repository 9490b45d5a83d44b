//! Shuffle stages: a join of two large sides (or an aggregate's final half) run on
//! the historicals rather than on the broker.
//!
//! DataFusion joins two large sides by hash-repartitioning both on the join keys and
//! joining partition by partition. When every input of such a subtree is a hash
//! repartition of a distributed scan, [`PlanStages`] runs the whole subtree as a
//! [`StageExec`] with one slice per historical the scans read from. Slice `i` runs on
//! historical `i`: the broker sends it the subtree with each scan replaced by the
//! fragments of every historical for that scan, each keeping only the rows whose keys
//! hash to slice `i` (see `slice`). Rows with equal keys thus meet on one historical,
//! which joins (and aggregates) them and sends the broker only what comes out: fact
//! rows cross between historicals, in parallel, never to the broker.
//!
//! Every fragment is read once per slice, so each historical scans its segments once
//! per slice, and nothing is kept between the fragments' answers: no shuffle state to
//! clean up after a query that fails or is cancelled. A slice whose historical
//! fails before it has sent anything runs on the broker instead, over the same
//! slices of the scans, which fail over to other replicas as any scan does; one that
//! fails after fails the query, since running it again would count rows twice. A
//! slice whose build sides are larger than the session sends along also runs here.

use std::fmt;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, ExecutionPlanProperties,
    Partitioning, PlanProperties,
};
use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc::Sender;

use super::codec::GroveCodec;
use super::peers::PeerFragmentsExec;
use super::remote::{FragmentClient, FragmentError};
use super::scan::DistributedScanExec;
use super::ticket::{MAX_MESSAGE, Ticket};
use crate::settings::GroveSettings;

/// A stage's input as the leaves see it: a hash repartition's keys and the
/// distributed scan under it (through the wrapper that makes a leaf yield).
fn leaf(node: &Arc<dyn ExecutionPlan>) -> Option<(&[Arc<dyn PhysicalExpr>], &DistributedScanExec)> {
    let repartition = node.downcast_ref::<RepartitionExec>()?;
    let Partitioning::Hash(keys, _) = repartition.partitioning() else {
        return None;
    };
    let mut below = repartition.input();
    if let Some(wrapper) = below.downcast_ref::<CooperativeExec>() {
        below = wrapper.input();
    }
    Some((keys, below.downcast_ref::<DistributedScanExec>()?))
}

/// `plan` with the scan of each leaf replaced by `by(scan, keys)`, leaves taken
/// from the top down, left to right (the same order every time).
fn replace_leaves(
    plan: &Arc<dyn ExecutionPlan>,
    mut by: impl FnMut(&DistributedScanExec, &[Arc<dyn PhysicalExpr>]) -> Result<Arc<dyn ExecutionPlan>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
    let replaced = plan.clone().transform_down(|node| {
        let Some((keys, scan)) = leaf(&node) else {
            return Ok(Transformed::no(node));
        };
        let mut below = by(scan, keys)?;
        let repartition = node.children()[0].clone();
        if repartition.downcast_ref::<CooperativeExec>().is_some() {
            below = replace_children_if_necessary(repartition, vec![below])?;
        }
        let node = replace_children_if_necessary(node, vec![below])?;
        Ok(Transformed::new(node, true, TreeNodeRecursion::Jump))
    })?;
    Ok(replaced.data)
}

/// A leaf's scan, and the keys its rows are sliced by.
type Leaf = (Arc<dyn ExecutionPlan>, Vec<Arc<dyn PhysicalExpr>>);

/// The leaves' scans and keys, in [`replace_leaves`]' order.
fn leaves(plan: &Arc<dyn ExecutionPlan>) -> Vec<Leaf> {
    let mut found = Vec::new();
    let _ = plan.apply(|node| {
        let Some((keys, _)) = leaf(node) else {
            return Ok(TreeNodeRecursion::Continue);
        };
        let mut scan = node.children()[0].clone();
        if let Some(wrapper) = scan.downcast_ref::<CooperativeExec>() {
            scan = wrapper.input().clone();
        }
        found.push((scan, keys.to_vec()));
        Ok(TreeNodeRecursion::Jump)
    });
    found
}

/// Whether `plan` can run as a stage and gains by it: every path down from it ends
/// at a leaf, through partitioned hash joins, aggregates that work per hash
/// partition, filters and projections only, and it joins. (An aggregate alone gains
/// nothing: its partial halves already run in the fragments, and what they send is
/// small.)
fn stageable(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let (mut allowed, mut gains) = (true, false);
    let _ = plan.apply(|node| {
        if leaf(node).is_some() {
            return Ok(TreeNodeRecursion::Jump);
        }
        if let Some(join) = node.downcast_ref::<HashJoinExec>() {
            allowed &=
                *join.partition_mode() == PartitionMode::Partitioned && join.fetch().is_none();
            gains = true;
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
    allowed && gains
}

/// Plans shuffle stages (see the module documentation) where a subtree qualifies and
/// what is above it asks nothing of how its rows are partitioned or ordered, while
/// the session has `grove.shuffle` on.
#[derive(Debug, Default)]
pub struct PlanStages;

impl datafusion::physical_optimizer::PhysicalOptimizerRule for PlanStages {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &datafusion::config::ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let on = config
            .extensions
            .get::<GroveSettings>()
            .is_none_or(|s| s.shuffle);
        if !on {
            return Ok(plan);
        }
        if stageable(&plan)
            && let Some(stage) = StageExec::try_new(plan.clone())
        {
            return Ok(Arc::new(stage));
        }
        place_below(plan)
    }

    fn name(&self) -> &str {
        "plan_stages"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `node` with stages for those of its children that qualify, and below the others.
fn place_below(node: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    let distributions = node.input_distribution_requirements().into_per_child();
    let orderings = node.required_input_ordering();
    let mut changed = false;
    let mut children = Vec::new();
    for (k, child) in node.children().into_iter().enumerate() {
        let free = matches!(
            distributions.get(k),
            None | Some(Distribution::UnspecifiedDistribution)
        ) && orderings.get(k).is_none_or(Option::is_none);
        let stage = (free && stageable(child))
            .then(|| StageExec::try_new(child.clone()))
            .flatten();
        let new = match stage {
            Some(stage) => Arc::new(stage) as Arc<dyn ExecutionPlan>,
            None => place_below(child.clone())?,
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

/// Per slice, its stage's ticket, or nothing where the slice runs on the broker.
type Tickets = Arc<Vec<Option<Ticket>>>;

type SharedTickets = Shared<BoxFuture<'static, std::result::Result<Tickets, Arc<DataFusionError>>>>;

/// A subtree run on the historicals, one hash slice each (see the module
/// documentation). Its input is shown (and, for slices the broker takes over, run)
/// as planned; its partitions are the slices.
#[derive(Debug)]
pub struct StageExec {
    slices: Arc<Slices>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

/// What every slice of a stage shares.
#[derive(Debug)]
struct Slices {
    input: Arc<dyn ExecutionPlan>,
    /// Per slice: the historical that runs it, and its Flight address.
    workers: Vec<(String, String)>,
    client: Arc<FragmentClient>,
    /// The slices' tickets, made once for all of them by the first to start.
    tickets: Mutex<Option<SharedTickets>>,
}

impl StageExec {
    /// A stage running `input` on the historicals its scans read from; `None` if a
    /// scan reads nothing or from a historical without a Flight address.
    pub fn try_new(input: Arc<dyn ExecutionPlan>) -> Option<StageExec> {
        let mut workers = std::collections::BTreeMap::new();
        let mut client = None;
        for (scan, _) in leaves(&input) {
            let scan = scan.downcast_ref::<DistributedScanExec>()?;
            let historicals = scan.historicals();
            if historicals.is_empty() {
                return None;
            }
            for (node, address) in historicals {
                workers.insert(node, address?);
            }
            client.get_or_insert_with(|| scan.client().clone());
        }
        Some(StageExec::new(
            input,
            workers.into_iter().collect(),
            client?,
        ))
    }

    fn new(
        input: Arc<dyn ExecutionPlan>,
        workers: Vec<(String, String)>,
        client: Arc<FragmentClient>,
    ) -> StageExec {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(input.schema()),
            Partitioning::UnknownPartitioning(workers.len().max(1)),
            input.pipeline_behavior(),
            input.boundedness(),
        );
        StageExec {
            slices: Arc::new(Slices {
                input,
                workers,
                client,
                tickets: Mutex::new(None),
            }),
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl Slices {
    /// The slices' tickets, made by the first slice to start.
    async fn tickets(&self, context: &Arc<TaskContext>) -> Result<Tickets> {
        let tickets = {
            let mut tickets = self.tickets.lock().unwrap_or_else(|e| e.into_inner());
            tickets
                .get_or_insert_with(|| {
                    let (input, slices) = (self.input.clone(), self.workers.len());
                    let context = context.clone();
                    async move { make_tickets(input, slices, context).await.map_err(Arc::new) }
                        .boxed()
                        .shared()
                })
                .clone()
        };
        tickets.await.map_err(DataFusionError::Shared)
    }

    /// Slice `slice` as the broker runs it: the stage's input over that slice of
    /// each scan.
    fn here(&self, slice: usize) -> Result<Arc<dyn ExecutionPlan>> {
        let slices = self.workers.len();
        let plan = replace_leaves(&self.input, |scan, keys| {
            Ok(Arc::new(scan.keeping_slice(keys, slice, slices)?))
        })?;
        // Operators as new: a join keeps its hash table across copies of itself.
        datafusion::physical_plan::execution_plan::reset_plan_states(plan)
    }

    /// Runs slice `slice` on its historical, passing its batches to `out`; on the
    /// broker if it has no ticket, or if its historical fails before sending any.
    async fn run(
        &self,
        slice: usize,
        context: Arc<TaskContext>,
        counters: Counters,
        out: &Sender<Result<RecordBatch>>,
    ) -> Result<()> {
        let tickets = self.tickets(&context).await?;
        let (node, address) = &self.workers[slice];
        let Some(ticket) = tickets.get(slice).cloned().flatten() else {
            counters.here.add(1);
            return run_here(self.here(slice)?, context, out).await;
        };
        let mut passed = false;
        let failed = match self.client.open(address, &ticket).await {
            Err(e) => e,
            Ok(mut stream) => loop {
                match stream.next().await {
                    None => return Ok(()),
                    Some(Ok(batch)) => {
                        passed = true;
                        counters.rows.add(batch.num_rows());
                        if out.send(Ok(batch)).await.is_err() {
                            return Ok(());
                        }
                    }
                    Some(Err(e)) => break e,
                }
            },
        };
        if passed || matches!(failed, FragmentError::Rejected(_)) {
            return Err(DataFusionError::Execution(format!(
                "shuffle stage: slice {slice} on {node}: {failed}"
            )));
        }
        tracing::warn!("shuffle stage: slice {slice} on {node} failed ({failed}); running it here");
        counters.here.add(1);
        run_here(self.here(slice)?, context, out).await
    }
}

/// What one slice counts: rows received from its historical, and whether the broker
/// ran it instead.
struct Counters {
    rows: Count,
    here: Count,
}

/// Each slice's ticket: the stage's input with every scan replaced by that slice of
/// its fragments. All slices run here when a scan's build sides are too large to
/// send, a slice alone when its ticket is.
async fn make_tickets(
    input: Arc<dyn ExecutionPlan>,
    slices: usize,
    context: Arc<TaskContext>,
) -> Result<Tickets> {
    let mut fragments = Vec::new();
    for (scan, keys) in leaves(&input) {
        let Some(scan) = scan.downcast_ref::<DistributedScanExec>() else {
            return Err(DataFusionError::Internal(
                "a stage leaf that is not a scan".into(),
            ));
        };
        match scan.sliced(&keys, slices, &context).await? {
            Some(sliced) => fragments.push(sliced),
            None => return Ok(Arc::new(vec![None; slices])),
        }
    }
    let batch_size = context.session_config().batch_size();
    let mut tickets = Vec::with_capacity(slices);
    for slice in 0..slices {
        let mut per_leaf = fragments.iter();
        let plan = replace_leaves(&input, |scan, _| {
            let sliced = per_leaf
                .next()
                .ok_or_else(|| DataFusionError::Internal("a stage's leaves changed".into()))?;
            Ok(Arc::new(PeerFragmentsExec::new(
                scan.schema(),
                sliced[slice].clone(),
            )))
        })?;
        let ticket = Ticket::new("", Vec::new(), plan, &GroveCodec::for_encoding())?
            .with_batch_size(batch_size)
            .as_stage();
        tickets.push((ticket.plan.len() <= MAX_MESSAGE / 2).then_some(ticket));
    }
    Ok(Arc::new(tickets))
}

impl DisplayAs for StageExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let nodes: Vec<&str> = self
            .slices
            .workers
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        write!(
            f,
            "ShuffleStageExec: slices={}, on=[{}]",
            nodes.len(),
            nodes.join(", ")
        )
    }
}

impl ExecutionPlan for StageExec {
    fn name(&self) -> &str {
        "ShuffleStageExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.slices.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match (children.pop(), children.is_empty()) {
            (Some(input), true) => Ok(Arc::new(StageExec::new(
                input,
                self.slices.workers.clone(),
                self.slices.client.clone(),
            ))),
            _ => Err(DataFusionError::Internal(
                "ShuffleStageExec has one child".into(),
            )),
        }
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition >= self.slices.workers.len() {
            return Err(DataFusionError::Internal(format!(
                "no slice {partition} in a shuffle stage"
            )));
        }
        let counters = Counters {
            rows: MetricBuilder::new(&self.metrics).counter("rows_received", partition),
            here: MetricBuilder::new(&self.metrics).counter("slices_run_here", partition),
        };
        let mut answer = RecordBatchReceiverStreamBuilder::new(self.schema(), 2);
        let out = answer.tx();
        let slices = self.slices.clone();
        answer.spawn(async move { slices.run(partition, context, counters, &out).await });
        Ok(answer.build())
    }
}

/// Runs `plan` here, passing its batches to `out`.
async fn run_here(
    plan: Arc<dyn ExecutionPlan>,
    context: Arc<TaskContext>,
    out: &Sender<Result<RecordBatch>>,
) -> Result<()> {
    let mut stream = datafusion::physical_plan::execute_stream(plan, context)?;
    while let Some(batch) = stream.next().await {
        if out.send(batch).await.is_err() {
            break;
        }
    }
    Ok(())
}
