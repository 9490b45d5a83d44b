//! Shuffle stages: a join of two large sides (or an aggregate's final half) run on
//! the historicals rather than on the broker.
//!
//! DataFusion joins two large sides by hash-repartitioning both on the join keys and
//! joining partition by partition. When every input of such a subtree is a hash
//! repartition of a distributed scan, `PlanStages` (in `pushdown`) runs the whole subtree as a
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
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc::Sender;

use super::codec::GroveCodec;
use super::peers::PeerFragmentsExec;
use super::remote::{FragmentClient, FragmentError};
use super::scan::{DistributedScanExec, RunOnce};
use super::ticket::{MAX_MESSAGE, Ticket};

/// A hash repartition's keys, and the distributed scan under it.
type LeafOf<'a> = (&'a [Arc<dyn PhysicalExpr>], &'a Arc<dyn ExecutionPlan>);

/// A stage's input as the leaves see it: a hash repartition's keys and the
/// distributed scan under it (through the wrapper that makes a leaf yield).
pub(super) fn leaf(node: &Arc<dyn ExecutionPlan>) -> Option<LeafOf<'_>> {
    let repartition = node.downcast_ref::<RepartitionExec>()?;
    let Partitioning::Hash(keys, _) = repartition.partitioning() else {
        return None;
    };
    let mut below = repartition.input();
    if let Some(wrapper) = below.downcast_ref::<CooperativeExec>() {
        below = wrapper.input();
    }
    below.downcast_ref::<DistributedScanExec>()?;
    Some((keys, below))
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
        let Some(scan) = scan.downcast_ref::<DistributedScanExec>() else {
            return Ok(Transformed::no(node));
        };
        let mut below = by(scan, keys)?;
        let wrapper = node.children()[0].clone();
        if wrapper.downcast_ref::<CooperativeExec>().is_some() {
            below = replace_children_if_necessary(wrapper, vec![below])?;
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
        let Some((keys, scan)) = leaf(node) else {
            return Ok(TreeNodeRecursion::Continue);
        };
        found.push((scan.clone(), keys.to_vec()));
        Ok(TreeNodeRecursion::Jump)
    });
    found
}

/// The slices' tickets, one per slice, or none: the stage runs on the broker.
type Tickets = Arc<Option<Vec<Ticket>>>;

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
    tickets: RunOnce<Tickets>,
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
                tickets: RunOnce::new(),
            }),
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl Slices {
    /// The slices' tickets, made by the first slice to start.
    async fn tickets(&self, context: &Arc<TaskContext>) -> Result<Tickets> {
        let (input, slices) = (self.input.clone(), self.workers.len());
        self.tickets
            .get(|| make_tickets(input, slices, context.clone()).boxed())
            .await
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

    /// Slice `slice` of a stage that runs on the broker: the partitions of its input
    /// `p` with `p % slices == slice`, each run once (together they are the input's).
    async fn all_here(
        &self,
        slice: usize,
        context: Arc<TaskContext>,
        out: &Sender<Result<RecordBatch>>,
    ) -> Result<()> {
        let partitions = self.input.output_partitioning().partition_count();
        let streams = (slice..partitions)
            .step_by(self.workers.len())
            .map(|p| self.input.execute(p, context.clone()))
            .collect::<Result<Vec<_>>>()?;
        let mut merged = futures::stream::select_all(streams);
        while let Some(batch) = merged.next().await {
            if out.send(batch).await.is_err() {
                break;
            }
        }
        Ok(())
    }

    /// Runs slice `slice` on its historical, passing its batches to `out`; all
    /// slices on the broker if there are no tickets, and this one if its historical
    /// fails before sending anything.
    async fn run(
        &self,
        slice: usize,
        context: Arc<TaskContext>,
        counters: Counters,
        out: &Sender<Result<RecordBatch>>,
    ) -> Result<()> {
        let tickets = self.tickets(&context).await?;
        let (node, address) = &self.workers[slice];
        let Some(ticket) = tickets.as_ref().as_ref().map(|t| &t[slice]) else {
            counters.here.add(1);
            return self.all_here(slice, context, out).await;
        };
        let mut passed = false;
        let failed = match self.client.open(address, ticket).await {
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
/// its fragments. None when a scan's build sides are too large to send, or a ticket
/// too large: then the stage runs on the broker.
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
            None => return Ok(Arc::new(None)),
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
        if ticket.plan.len() > MAX_MESSAGE / 2 {
            return Ok(Arc::new(None));
        }
        tickets.push(ticket);
    }
    Ok(Arc::new(Some(tickets)))
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
