//! [`DistributedScanExec`]: a broker's scan of a datasource, run on the historicals.
//!
//! At planning, one replica is chosen per segment (spreading segments evenly over the
//! historicals that serve them) and segments are grouped per historical: one output
//! partition per group. Executing a partition sends its group's fragment (projection,
//! index filter, time intervals, limit) to the historical over Flight. When the
//! historical is unreachable, or answers that it does not serve some segments, those
//! segments are tried on their other replicas within the same query; the query fails
//! only when a segment has no replica left, naming the segments.
//!
//! A fragment's batches are passed on as they arrive, with bounded memory: a few
//! batches per partition, each fragment on a Flight connection of its own. Its first
//! 8 MiB are held back, so a fragment that fails before it has passed anything on
//! (every small answer, such as a partial aggregate's) is retried elsewhere, and one
//! that fails after fails the query rather than count a row twice.
//!
//! A join whose build side is small runs in the fragments (see `pushdown`): the build
//! side is a child of the scan, run once on the broker, and its rows travel in every
//! ticket. A build side larger than `grove.broadcast_bytes` is joined on the broker
//! instead, with the fragments sending rows.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::Field;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{ColumnStatistics, Statistics};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType, SchedulingType};
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::{
    RecordBatchReceiverStreamBuilder, RecordBatchStreamAdapter,
};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties, StatisticsArgs,
};
use futures::{FutureExt, StreamExt};
use grove_cluster::segments::ColumnSchema;
use grove_segment::Interval;
use grove_segment::scan::IndexFilter;
use grove_segment::scan::stats::column_statistics;
use tokio::sync::mpsc::Sender;

use super::admit::{MAX_PARTITIONS, broadcast_join};
use super::broadcast::{BroadcastRowsExec, compact_dictionaries};
use super::cache::ResultCache;
use super::codec::GroveCodec;
use super::peers::PeerFragment;
use super::refs::{BroadcastRefsExec, ScanRequest, SegmentRefsExec};
use super::remote::{FragmentClient, FragmentError};
use super::slice::only_slice;
use super::ticket::{MAX_MESSAGE, Ticket};
use crate::metadata::{REALTIME_REPLICA_PRIORITY, Replica};
use crate::settings::GroveSettings;

/// Chooses one replica per segment: the highest priority first (Druid's
/// `highestPriority`), then the least outstanding work: segments `outstanding` from
/// other queries (per Flight address) plus those this scan gave it so far. Each
/// segment's replicas are left in that order, for failover.
fn place(
    segments: Vec<RemoteSegment>,
    outstanding: &HashMap<String, usize>,
) -> Vec<(String, Vec<RemoteSegment>)> {
    let mut load: HashMap<String, usize> = HashMap::new();
    let mut groups: BTreeMap<String, Vec<RemoteSegment>> = BTreeMap::new();
    for mut segment in segments {
        segment.replicas.sort_by_key(|r| {
            // Streaming tasks' copies are chosen by name alone: successive queries read
            // the same task's copy, never one that is a few messages behind it.
            if r.priority == REALTIME_REPLICA_PRIORITY {
                return (std::cmp::Reverse(r.priority), 0, r.node.clone());
            }
            let elsewhere = r
                .flight_address
                .as_ref()
                .and_then(|a| outstanding.get(a))
                .copied()
                .unwrap_or(0);
            (
                std::cmp::Reverse(r.priority),
                elsewhere + load.get(&r.node).copied().unwrap_or(0),
                r.node.clone(),
            )
        });
        let chosen = segment.replicas[0].node.clone();
        *load.entry(chosen.clone()).or_default() += 1;
        groups.entry(chosen).or_default().push(segment);
    }
    groups.into_iter().collect()
}

/// DataFusion's selectivity for a predicate it knows nothing of.
const UNKNOWN_SELECTIVITY: f64 = 0.2;

/// The share of `segment`'s rows an index filter is estimated to keep, from what its
/// descriptor records: `column = v` keeps one of the column's distinct values,
/// `IN` as many as it lists, `IS NULL` the column's nulls; a column the segment lacks
/// is NULL in every row. The planner sizes join sides by it: a dimension filtered by
/// its indexes is small enough to collect (and broadcast) when its share is.
fn selectivity(filter: &IndexFilter, segment: &RemoteSegment) -> f64 {
    let column = |name: &str| segment.columns.iter().find(|c| c.name == name);
    let of_distinct = |name: &str, values: usize| match column(name) {
        None => 0.0,
        Some(c) => match c.distinct {
            Some(distinct) if distinct > 0 => (values as f64 / distinct as f64).min(1.0),
            _ => UNKNOWN_SELECTIVITY,
        },
    };
    match filter {
        IndexFilter::Eq { column, .. } => of_distinct(column, 1),
        IndexFilter::In { column, values } => of_distinct(column, values.len()),
        IndexFilter::IsNull { column: name } => match column(name) {
            None => 1.0,
            Some(c) => match (c.null_count, segment.rows) {
                (Some(nulls), rows) if rows > 0 => (nulls as f64 / rows as f64).min(1.0),
                _ => UNKNOWN_SELECTIVITY,
            },
        },
        IndexFilter::Not(inner) => 1.0 - selectivity(inner, segment),
        IndexFilter::And(all) => all.iter().map(|f| selectivity(f, segment)).product(),
        IndexFilter::Or(any) => {
            1.0 - any
                .iter()
                .map(|f| 1.0 - selectivity(f, segment))
                .product::<f64>()
        }
    }
}

/// The statistics of `field` over `segments`, if every descriptor records them.
fn column_statistics_of(
    segments: &[&RemoteSegment],
    field: &Field,
    whole: bool,
) -> Option<ColumnStatistics> {
    let mut facts = Vec::with_capacity(segments.len());
    for segment in segments {
        match segment.columns.iter().find(|c| c.name == *field.name()) {
            // Lacking the column, the segment reads as NULL there.
            None => facts.push((segment.rows, None)),
            Some(column) => facts.push((segment.rows, Some(column.facts()?))),
        }
    }
    Some(column_statistics(field, whole, facts))
}

/// A distributed scan's plan properties: `groups` partitions (at least one), whose
/// batches come as fragments send them, from a channel that yields to the scheduler
/// when its task's budget is spent (so no wrapper makes it cooperative, and the
/// operators above it stay next to it for pushing down).
fn properties(schema: SchemaRef, groups: usize) -> PlanProperties {
    PlanProperties::new(
        EquivalenceProperties::new(schema),
        Partitioning::UnknownPartitioning(groups.max(1)),
        EmissionType::Incremental,
        Boundedness::Bounded,
    )
    .with_scheduling_type(SchedulingType::Cooperative)
}

/// How many fragments one partition has in flight at once.
const CONCURRENT_FRAGMENTS: usize = 8;

/// Bytes of a fragment's answer held back before any is passed on (see
/// [`Run::fragment`]).
const HELD_BACK: usize = 8 << 20;

/// One segment to read remotely.
#[derive(Debug, Clone)]
pub struct RemoteSegment {
    pub id: String,
    /// The segment's own interval.
    pub interval: Interval,
    /// The rows its descriptor counts.
    pub rows: usize,
    /// Its columns, with what its descriptor records of them.
    pub columns: Vec<ColumnSchema>,
    /// Where it is visible (parts of `interval`).
    pub intervals: Vec<Interval>,
    /// Replicas that take fragments, in the order to try them after the chosen one.
    pub replicas: Vec<Replica>,
    /// Served by streaming tasks only: its rows may change, its results are not cached.
    pub realtime: bool,
}

#[derive(Debug)]
pub struct DistributedScanExec {
    table_schema: SchemaRef,
    projection: Vec<usize>,
    filter: Option<IndexFilter>,
    limit: Option<usize>,
    /// Per output partition: the chosen historical and its segments.
    groups: Vec<(String, Vec<RemoteSegment>)>,
    client: Arc<FragmentClient>,
    /// What runs on the historicals above the scan (a Partial aggregate), its leaf a
    /// `SegmentRefsExec` that each fragment replaces with its own segments.
    top: Option<Arc<dyn ExecutionPlan>>,
    /// The build sides of joins in `top`, in the order of their `BroadcastRefsExec`
    /// indexes: the scan's children, run here.
    broadcasts: Vec<Arc<Broadcast>>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

/// A join's build side: a plan run on the broker whose rows go to the historicals.
#[derive(Debug)]
struct Broadcast {
    plan: Arc<dyn ExecutionPlan>,
    /// Whether the fragments may do without it: a reduction's (see
    /// [`DistributedScanExec::reduced_by`]), dropped when the build sides are too
    /// large to send.
    optional: bool,
    /// Its rows, run once for all partitions: started by the first partition that
    /// needs them, and carried on by the others if that one stops reading.
    rows: RunOnce<Arc<BroadcastRowsExec>>,
}

/// Work done once for all who await it: started by the first, and carried on by the
/// others if that one stops awaiting; its error is everyone's.
pub(super) struct RunOnce<T>(std::sync::Mutex<Option<Running<T>>>);

/// The work of a [`RunOnce`], as everyone awaits it.
type Running<T> = futures::future::Shared<
    futures::future::BoxFuture<'static, std::result::Result<T, Arc<DataFusionError>>>,
>;

impl<T: Clone + Send + Sync + 'static> RunOnce<T> {
    pub(super) fn new() -> Self {
        RunOnce(std::sync::Mutex::new(None))
    }

    /// The work's result, `start`ed here if no one has started it.
    pub(super) async fn get(
        &self,
        start: impl FnOnce() -> futures::future::BoxFuture<'static, Result<T>>,
    ) -> Result<T> {
        let shared = {
            let mut once = self.0.lock().unwrap_or_else(|e| e.into_inner());
            once.get_or_insert_with(|| start().map(|r| r.map_err(Arc::new)).boxed().shared())
                .clone()
        };
        shared.await.map_err(DataFusionError::Shared)
    }
}

impl<T> fmt::Debug for RunOnce<T> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("RunOnce")
    }
}

impl Broadcast {
    fn new(plan: Arc<dyn ExecutionPlan>) -> Arc<Broadcast> {
        Arc::new(Broadcast {
            plan,
            optional: false,
            rows: RunOnce::new(),
        })
    }

    /// A build side that a reduction's semi join takes.
    fn optional(plan: Arc<dyn ExecutionPlan>) -> Arc<Broadcast> {
        Arc::new(Broadcast {
            plan,
            optional: true,
            rows: RunOnce::new(),
        })
    }

    /// The same build side over `plan`, yet to be run.
    fn anew(&self, plan: Arc<dyn ExecutionPlan>) -> Arc<Broadcast> {
        if self.optional {
            Broadcast::optional(plan)
        } else {
            Broadcast::new(plan)
        }
    }

    async fn rows(&self, context: &Arc<TaskContext>) -> Result<Arc<BroadcastRowsExec>> {
        self.rows
            .get(|| Self::run(self.plan.clone(), context.clone()).boxed())
            .await
    }

    async fn run(
        plan: Arc<dyn ExecutionPlan>,
        context: Arc<TaskContext>,
    ) -> Result<Arc<BroadcastRowsExec>> {
        let schema = plan.schema();
        let mut stream = datafusion::physical_plan::execute_stream(plan, context)?;
        let mut batches = Vec::new();
        while let Some(batch) = stream.next().await {
            batches.push(compact_dictionaries(batch?)?);
        }
        Ok(Arc::new(BroadcastRowsExec::new(schema, batches)))
    }
}

/// The rows of a build side a scan sends along (see
/// [`DistributedScanExec::reduced_by`]), for a join on the broker: from the same run,
/// never a second one.
#[derive(Debug)]
struct BuildRowsExec {
    broadcast: Arc<Broadcast>,
    properties: Arc<PlanProperties>,
}

impl DisplayAs for BuildRowsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "BuildRowsExec: the rows a scan below sends along")
    }
}

impl ExecutionPlan for BuildRowsExec {
    fn name(&self) -> &str {
        "BuildRowsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        crate::distributed::leaf::childless(self, children)
    }

    fn execute(
        &self,
        _partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        use futures::TryStreamExt;
        let broadcast = self.broadcast.clone();
        let rows = futures::stream::once(async move {
            let rows = broadcast.rows(&context).await?;
            rows.execute(0, context)
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema(), rows)))
    }
}

/// What one partition counts: rows and bytes received from historicals, fragments
/// sent, and fragments retried elsewhere; the bytes of build sides sent along, or
/// joined here instead.
struct Counters {
    rows: Count,
    bytes: Count,
    fragments: Count,
    retries: Count,
    cache_hits: Count,
    broadcast_bytes: Count,
    joined_here_bytes: Count,
}

impl DistributedScanExec {
    pub fn new(
        table_schema: SchemaRef,
        projection: Vec<usize>,
        segments: Vec<RemoteSegment>,
        filter: Option<IndexFilter>,
        limit: Option<usize>,
        client: Arc<FragmentClient>,
    ) -> Result<Self> {
        let missing: Vec<&str> = segments
            .iter()
            .filter(|s| s.replicas.is_empty())
            .map(|s| s.id.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(DataFusionError::Execution(format!(
                "no historical serves these segments: {}",
                missing.join(", ")
            )));
        }
        let groups = place(segments, &client.outstanding());
        let schema = Arc::new(table_schema.project(&projection)?);
        let properties = properties(schema, groups.len());
        Ok(DistributedScanExec {
            table_schema,
            projection,
            filter,
            limit,
            groups,
            client,
            top: None,
            broadcasts: Vec::new(),
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    /// The same scan, with `top(scan)` running on the historicals: `top` is given
    /// the scan's segment references as its input and must not change partitioning
    /// assumptions above it (a Partial aggregate).
    pub fn with_top(
        &self,
        above: impl FnOnce(Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>>,
    ) -> Result<DistributedScanExec> {
        let below = match &self.top {
            Some(top) => top.clone(),
            None => {
                let all: Vec<&RemoteSegment> = self.groups.iter().flat_map(|(_, s)| s).collect();
                Arc::new(SegmentRefsExec::new(self.request(&all))?)
            }
        };
        let top = above(below)?;
        let properties = properties(top.schema(), self.groups.len());
        Ok(self.with_parts(Some(top), self.broadcasts.clone(), Arc::new(properties)))
    }

    /// The same segments and scan, with these operators above them, build sides and
    /// properties.
    fn with_parts(
        &self,
        top: Option<Arc<dyn ExecutionPlan>>,
        broadcasts: Vec<Arc<Broadcast>>,
        properties: Arc<PlanProperties>,
    ) -> DistributedScanExec {
        DistributedScanExec {
            table_schema: self.table_schema.clone(),
            projection: self.projection.clone(),
            filter: self.filter.clone(),
            limit: self.limit,
            groups: self.groups.clone(),
            client: self.client.clone(),
            top,
            broadcasts,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// The same scan with `join` above it on the historicals: the scan is its probe
    /// side, and `build` (run here) its build side, whose rows each ticket carries.
    /// `join` must be a [`broadcast_join`](super::admit::broadcast_join).
    pub fn with_broadcast_join(
        &self,
        join: Arc<dyn ExecutionPlan>,
        build: Arc<dyn ExecutionPlan>,
    ) -> Result<DistributedScanExec> {
        let refs: Arc<dyn ExecutionPlan> = Arc::new(BroadcastRefsExec::new(
            self.broadcasts.len(),
            build.schema(),
        ));
        let mut pushed = self.with_top(|probe| {
            datafusion::physical_plan::execution_plan::replace_children_if_necessary(
                join,
                vec![refs, probe],
            )
        })?;
        pushed.broadcasts.push(Broadcast::new(build));
        Ok(pushed)
    }

    /// The same scan keeping only the rows whose `keys` match a row of `build` on
    /// `build_keys` (a right semi join in its fragments, `build`'s rows sent along),
    /// and a leaf yielding `build`'s rows from the same run, for the join above that
    /// needs no other probe rows (a left, left semi, anti or mark join collecting
    /// `build`). The keys are over the scan's output: its rows when it still sends
    /// rows, or the group columns of the Partial aggregate it ends with, whose input
    /// rows are then kept (only the matching groups are needed). `None` otherwise.
    pub fn reduced_by(
        &self,
        build: Arc<dyn ExecutionPlan>,
        build_keys: Vec<Arc<dyn PhysicalExpr>>,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        null_equality: datafusion::common::NullEquality,
    ) -> Result<Option<(DistributedScanExec, Arc<dyn ExecutionPlan>)>> {
        use datafusion::common::JoinType;
        use datafusion::physical_expr::expressions::Column;
        use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
        use datafusion::physical_plan::joins::PartitionMode;
        let refs: Arc<dyn ExecutionPlan> = Arc::new(BroadcastRefsExec::new(
            self.broadcasts.len(),
            build.schema(),
        ));
        let semi = |probe: Arc<dyn ExecutionPlan>, keys: Vec<Arc<dyn PhysicalExpr>>| {
            let on = build_keys.iter().cloned().zip(keys).collect();
            let join = HashJoinExec::try_new(
                refs.clone(),
                probe,
                on,
                None,
                &JoinType::RightSemi,
                None,
                PartitionMode::CollectLeft,
                null_equality,
                false,
            )?;
            Ok::<_, DataFusionError>(Arc::new(join) as Arc<dyn ExecutionPlan>)
        };
        let columns = keys.iter().all(|k| k.downcast_ref::<Column>().is_some());
        let mut reduced = if self.is_open() && columns {
            self.with_top(|probe| semi(probe, keys))?
        } else {
            let Some(top) = &self.top else {
                return Ok(None);
            };
            let Some(partial) = top.downcast_ref::<AggregateExec>() else {
                return Ok(None);
            };
            if *partial.mode() != AggregateMode::Partial || !partial.group_expr().is_single() {
                return Ok(None);
            }
            let groups = partial.group_expr().expr();
            let mut below = Vec::with_capacity(keys.len());
            for key in &keys {
                let input = key
                    .downcast_ref::<Column>()
                    .and_then(|c| groups.get(c.index()))
                    .filter(|(e, _)| e.downcast_ref::<Column>().is_some());
                match input {
                    Some((e, _)) => below.push(e.clone()),
                    None => return Ok(None),
                }
            }
            let kept = semi(partial.input().clone(), below)?;
            let top = datafusion::physical_plan::execution_plan::replace_children_if_necessary(
                top.clone(),
                vec![kept],
            )?;
            self.with_parts(Some(top), self.broadcasts.clone(), self.properties.clone())
        };
        let broadcast = Broadcast::optional(build);
        reduced.broadcasts.push(broadcast.clone());
        let rows = BuildRowsExec {
            properties: crate::distributed::leaf::properties(broadcast.plan.schema(), 1),
            broadcast,
        };
        Ok(Some((reduced, Arc::new(rows))))
    }

    /// This scan with the topmost join of its fragments run on the broker instead,
    /// when only filters and projections run above that join and `stays(join, its
    /// build side)` says no: the join over the scan of what ran below it, then those
    /// filters and projections. `None` when there is no such join or it stays.
    pub fn with_top_join_here(
        &self,
        stays: impl Fn(&HashJoinExec, &Arc<dyn ExecutionPlan>) -> bool,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
        let Some(top) = &self.top else {
            return Ok(None);
        };
        let mut above = Vec::new();
        let mut node = top.clone();
        while is_row_local(&node) {
            above.push(node.clone());
            node = node.children()[0].clone();
        }
        let Some(join) = node.downcast_ref::<HashJoinExec>() else {
            return Ok(None);
        };
        // Joins go into fragments from the bottom up: the topmost has the last build
        // side.
        let last = self.broadcasts.len().checked_sub(1);
        let refs = join.left().downcast_ref::<BroadcastRefsExec>();
        let (Some(last), Some(refs)) = (last, refs) else {
            return Ok(None);
        };
        let build = self.broadcasts[last].plan.clone();
        if refs.index() != last || stays(join, &build) {
            return Ok(None);
        }
        let probe = join.right().clone();
        let below = probe
            .downcast_ref::<SegmentRefsExec>()
            .is_none()
            .then_some(probe.clone());
        let scan = self.with_parts(
            below,
            self.broadcasts[..last].to_vec(),
            Arc::new(properties(probe.schema(), self.groups.len())),
        );
        let mut plan = replace_children_if_necessary(node.clone(), vec![build, Arc::new(scan)])?;
        for operator in above.into_iter().rev() {
            plan = replace_children_if_necessary(operator, vec![plan])?;
        }
        Ok(Some(plan))
    }

    /// The fragments a shuffle stage reads of this scan: per slice of `slices` by
    /// `keys` (over the scan's output), one per historical it was placed on, each
    /// keeping only that slice's rows. The build sides run first; `None` when their
    /// rows are more than the session sends along.
    pub async fn sliced(
        &self,
        keys: &[Arc<dyn PhysicalExpr>],
        slices: usize,
        context: &Arc<TaskContext>,
    ) -> Result<Option<Vec<Vec<PeerFragment>>>> {
        let mut rows = Vec::with_capacity(self.broadcasts.len());
        for broadcast in &self.broadcasts {
            rows.push(broadcast.rows(context).await?);
        }
        let settings = GroveSettings::of(context.session_config().options());
        // Each slice's ticket carries the build sides once per historical.
        let bytes: usize = rows.iter().map(|r| r.bytes()).sum();
        if bytes > settings.broadcast_bytes.min(MAX_MESSAGE / 2)
            || bytes.saturating_mul(self.groups.len()) > MAX_MESSAGE / 2
        {
            return Ok(None);
        }
        let config = context.session_config();
        let mut out = vec![Vec::new(); slices];
        for (node, segments) in &self.groups {
            let address = flight_address(node, segments).ok_or_else(|| {
                DataFusionError::Execution(format!("{node} has no Flight address"))
            })?;
            let refs: Vec<&RemoteSegment> = segments.iter().collect();
            let mut scan = self.request(&refs);
            scan.partitions = config.target_partitions().clamp(1, MAX_PARTITIONS);
            let ids: Vec<String> = segments.iter().map(|s| s.id.clone()).collect();
            let leaf: Arc<dyn ExecutionPlan> = Arc::new(SegmentRefsExec::new(scan)?);
            // Sliced as the segments are read when the keys are columns read from
            // them, so what runs above them (a join with a build side) runs on the
            // slice's rows only.
            let at_leaf = self.top.as_ref().and_then(|top| keys_at_leaf(top, keys));
            let fragment = above(self.top.as_ref(), leaf.clone(), &rows)?;
            for (slice, fragments) in out.iter_mut().enumerate() {
                let plan = match &at_leaf {
                    Some(leaf_keys) => above(
                        self.top.as_ref(),
                        only_slice(leaf.clone(), leaf_keys, slice, slices)?,
                        &rows,
                    )?,
                    None => only_slice(fragment.clone(), keys, slice, slices)?,
                };
                let ticket = Ticket::new("", ids.clone(), plan, &GroveCodec::for_encoding())?
                    .with_batch_size(config.batch_size());
                fragments.push(PeerFragment {
                    node: node.clone(),
                    address: address.clone(),
                    ticket,
                });
            }
        }
        Ok(Some(out))
    }

    /// The same scan keeping only slice `slice` of `slices` by `keys`, run from here:
    /// what a shuffle stage's slice reads when the broker runs it itself.
    pub fn keeping_slice(
        &self,
        keys: &[Arc<dyn PhysicalExpr>],
        slice: usize,
        slices: usize,
    ) -> Result<DistributedScanExec> {
        self.with_top(|top| only_slice(top, keys, slice, slices))
    }

    /// The historicals its partitions read from, with their Flight addresses: not
    /// the streaming tasks that serve only segments in progress.
    pub fn historicals(&self) -> Vec<(String, Option<String>)> {
        self.groups
            .iter()
            .filter(|(_, segments)| segments.iter().any(|s| !s.realtime))
            .map(|(node, segments)| (node.clone(), flight_address(node, segments)))
            .collect()
    }

    pub fn client(&self) -> &Arc<FragmentClient> {
        &self.client
    }

    /// Whether more may run above the fragments: only row-by-row operators (filters,
    /// projections, joins with a broadcast build side) run there so far, so a
    /// fragment still sends rows.
    pub fn is_open(&self) -> bool {
        let Some(top) = &self.top else {
            return true;
        };
        let mut open = true;
        let _ = top.apply(|node| {
            open &= node.downcast_ref::<SegmentRefsExec>().is_some()
                || node.downcast_ref::<BroadcastRefsExec>().is_some()
                || node
                    .downcast_ref::<HashJoinExec>()
                    .is_some_and(broadcast_join)
                || is_row_local(node);
            Ok(if open {
                TreeNodeRecursion::Continue
            } else {
                TreeNodeRecursion::Stop
            })
        });
        open
    }

    /// Whether the scan keeps fewer rows than its segments hold: an index filter, a
    /// limit, or a filter, aggregate, top-N or join running in its fragments.
    pub fn filters(&self) -> bool {
        self.filter.is_some()
            || self.limit.is_some()
            || self.top.as_ref().is_some_and(|top| {
                top.exists(|node| {
                    Ok(node.downcast_ref::<SegmentRefsExec>().is_none()
                        && node.downcast_ref::<BroadcastRefsExec>().is_none()
                        && node
                            .downcast_ref::<datafusion::physical_plan::projection::ProjectionExec>()
                            .is_none())
                })
                .unwrap_or(true)
            })
    }

    /// Whether the fragments send something smaller than rows (partial aggregates, a
    /// top-N): what the result cache keeps. Not with a broadcast build side: a
    /// query's rows are not the next one's.
    fn reduces(&self) -> bool {
        !self.is_open() && self.broadcasts.is_empty()
    }

    /// Row counts and column statistics from the segments' descriptors. Column
    /// statistics are exact when whole published segments are read unfiltered,
    /// unlimited and with nothing above the scan, estimates (bounds) otherwise; row
    /// counts are always estimates. The join planner sizes its sides by them.
    fn statistics_of(&self, partition: Option<usize>) -> Statistics {
        let segments: Vec<&RemoteSegment> = match partition {
            Some(p) => self.groups.get(p).map(|(_, s)| s.iter().collect()),
            None => Some(self.groups.iter().flat_map(|(_, s)| s).collect()),
        }
        .unwrap_or_default();
        let whole = self.filter.is_none()
            && self.limit.is_none()
            && self.top.is_none()
            && segments
                .iter()
                .all(|s| !s.realtime && s.intervals.iter().any(|iv| iv.covers(&s.interval)));
        let rows = segments
            .iter()
            .map(|s| match &self.filter {
                None => s.rows,
                Some(filter) => (s.rows as f64 * selectivity(filter, s)).round() as usize,
            })
            .sum::<usize>()
            .min(self.limit.unwrap_or(usize::MAX));
        let mut stats = Statistics::new_unknown(&self.schema());
        // An estimate even when exact: DataFusion runs an input it knows to be small
        // in one partition, without the repartitions whose tasks and channels let a
        // cancel or a timeout stop a query that loops without reading (a cross join).
        stats.num_rows = Precision::Inexact(rows);
        if self.top.is_none() {
            let fields = self.projection.iter().map(|&i| self.table_schema.field(i));
            for (out, field) in stats.column_statistics.iter_mut().zip(fields) {
                if let Some(column) = column_statistics_of(&segments, field, whole) {
                    *out = column;
                }
            }
        }
        stats
    }

    fn request(&self, segments: &[&RemoteSegment]) -> ScanRequest {
        ScanRequest {
            table_schema: self.table_schema.clone(),
            projection: self.projection.clone(),
            segments: segment_refs(segments),
            filter: self.filter.clone(),
            limit: self.limit,
            partitions: 2,
        }
    }
}

impl DisplayAs for DistributedScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let columns: Vec<_> = self
            .projection
            .iter()
            .map(|i| self.table_schema.field(*i).name().clone())
            .collect();
        let placed: Vec<String> = self
            .groups
            .iter()
            .map(|(node, s)| format!("{node}:{}", s.len()))
            .collect();
        write!(
            f,
            "DistributedScanExec: historicals=[{}], projection=[{}]",
            placed.join(", "),
            columns.join(", ")
        )?;
        if let Some(filter) = &self.filter {
            write!(f, ", index_filter={filter:?}")?;
        }
        if let Some(limit) = self.limit {
            write!(f, ", limit={limit}")?;
        }
        if let Some(top) = &self.top {
            // What each fragment runs above its scan, from the top down.
            let mut remote = Vec::new();
            let _ = top.apply(|node| {
                if node.downcast_ref::<SegmentRefsExec>().is_none() {
                    let line = datafusion::physical_plan::displayable(node.as_ref()).one_line();
                    remote.push(line.to_string().trim_end().to_string());
                }
                Ok(TreeNodeRecursion::Continue)
            });
            write!(f, ", remote=[{}]", remote.join(" | "))?;
        }
        Ok(())
    }
}

impl ExecutionPlan for DistributedScanExec {
    fn name(&self) -> &str {
        "DistributedScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        self.broadcasts.iter().map(|b| &b.plan).collect()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != self.broadcasts.len() {
            return Err(DataFusionError::Internal(format!(
                "DistributedScanExec has {} children, not {}",
                self.broadcasts.len(),
                children.len()
            )));
        }
        if children.is_empty() {
            return Ok(self);
        }
        // New build sides, whose rows are yet to be run; an unchanged one keeps its
        // run (a join above may read the same rows, see `reduced_by`).
        let broadcasts = children
            .into_iter()
            .zip(&self.broadcasts)
            .map(|(child, old)| {
                if Arc::ptr_eq(&child, &old.plan) {
                    old.clone()
                } else {
                    old.anew(child)
                }
            })
            .collect();
        Ok(Arc::new(self.with_parts(
            self.top.clone(),
            broadcasts,
            self.properties.clone(),
        )))
    }

    /// Build sides yet to be run, whatever the children: a plan run again (a
    /// recursive query's term) reads its build sides again.
    fn reset_state(self: Arc<Self>) -> Result<Arc<dyn ExecutionPlan>> {
        let broadcasts = self
            .broadcasts
            .iter()
            .map(|b| b.anew(b.plan.clone()))
            .collect();
        Ok(Arc::new(self.with_parts(
            self.top.clone(),
            broadcasts,
            self.properties.clone(),
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn statistics_from_inputs(
        &self,
        _inputs: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        Ok(Arc::new(self.statistics_of(args.partition())))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let schema = self.schema();
        let Some((node, segments)) = self.groups.get(partition).cloned() else {
            // No segments at all: one empty partition.
            return Ok(Box::pin(RecordBatchStreamAdapter::new(
                schema,
                futures::stream::empty(),
            )));
        };
        let counters = Counters {
            rows: MetricBuilder::new(&self.metrics).counter("rows_received", partition),
            bytes: MetricBuilder::new(&self.metrics).counter("bytes_received", partition),
            fragments: MetricBuilder::new(&self.metrics).counter("fragments", partition),
            retries: MetricBuilder::new(&self.metrics).counter("fragments_retried", partition),
            cache_hits: MetricBuilder::new(&self.metrics).counter("segments_from_cache", partition),
            broadcast_bytes: MetricBuilder::new(&self.metrics)
                .counter("broadcast_bytes", partition),
            joined_here_bytes: MetricBuilder::new(&self.metrics)
                .counter("build_bytes_joined_here", partition),
        };
        let settings = GroveSettings::of(context.session_config().options());
        // Historicals run the fragment as this session would: its rows per batch, and
        // as many partitions as it plans with.
        let config = context.session_config();
        let mut scan = self.request(&[]);
        scan.partitions = config.target_partitions().clamp(1, MAX_PARTITIONS);
        let run = Run {
            counters,
            settings,
            batch_size: config.batch_size(),
            scan,
            top: self.top.clone(),
            broadcasts: self.broadcasts.clone(),
            rows: Vec::new(),
            context,
            reduces: self.reduces(),
            client: self.client.clone(),
            first: node,
            segments,
        };
        let mut answer = RecordBatchReceiverStreamBuilder::new(schema, 2);
        let sender = answer.tx();
        answer.spawn(run.all(sender));
        Ok(answer.build())
    }
}

/// The build sides `top` sends along, by index.
fn sent(top: Option<&Arc<dyn ExecutionPlan>>) -> BTreeSet<usize> {
    let mut indexes = BTreeSet::new();
    if let Some(top) = top {
        let _ = top.apply(|node| {
            if let Some(refs) = node.downcast_ref::<BroadcastRefsExec>() {
                indexes.insert(refs.index());
            }
            Ok(TreeNodeRecursion::Continue)
        });
    }
    indexes
}

/// `top` without the semi joins of reductions (`broadcasts`' optional ones): each
/// replaced by its probe side.
fn without_reductions(
    top: Arc<dyn ExecutionPlan>,
    broadcasts: &[Arc<Broadcast>],
) -> Result<Arc<dyn ExecutionPlan>> {
    let stripped = top.transform_up(|node| {
        let reduction = node.downcast_ref::<HashJoinExec>().and_then(|join| {
            let refs = join.left().downcast_ref::<BroadcastRefsExec>()?;
            broadcasts
                .get(refs.index())
                .is_some_and(|b| b.optional)
                .then(|| join.right().clone())
        });
        Ok(match reduction {
            Some(probe) => Transformed::yes(probe),
            None => Transformed::no(node),
        })
    })?;
    Ok(stripped.data)
}

/// The Flight address of `node`, as its replicas of `segments` name it.
fn flight_address(node: &str, segments: &[RemoteSegment]) -> Option<String> {
    segments
        .iter()
        .flat_map(|s| &s.replicas)
        .find(|r| r.node == node)
        .and_then(|r| r.flight_address.clone())
}

/// `keys` (over `top`'s output) as columns of the segments `top` reads, if each is
/// a column that every operator in between passes on unchanged: a projection's
/// column, a filter's, a join's from its probe side (each row of a broadcast join
/// comes from one probe row, with its values), a partial aggregate's group column.
/// Keeping a slice of the segments' rows by them then keeps that slice of `top`'s.
fn keys_at_leaf(
    top: &Arc<dyn ExecutionPlan>,
    keys: &[Arc<dyn PhysicalExpr>],
) -> Option<Vec<Arc<dyn PhysicalExpr>>> {
    use datafusion::physical_expr::expressions::Column;
    use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
    use datafusion::physical_plan::coop::CooperativeExec;
    use datafusion::physical_plan::filter::FilterExec;
    use datafusion::physical_plan::projection::ProjectionExec;
    let column = |e: &Arc<dyn PhysicalExpr>| e.downcast_ref::<Column>().map(Column::index);
    let mut indexes: Vec<usize> = keys.iter().map(column).collect::<Option<_>>()?;
    let mut node = top.clone();
    while node.downcast_ref::<SegmentRefsExec>().is_none() {
        let (below, through): (_, Box<dyn Fn(usize) -> Option<usize>>) =
            if let Some(p) = node.downcast_ref::<ProjectionExec>() {
                let exprs = p.expr().to_vec();
                (
                    p.input().clone(),
                    Box::new(move |i| exprs.get(i).and_then(|e| column(&e.expr))),
                )
            } else if let Some(f) = node.downcast_ref::<FilterExec>() {
                let projection = f.projection().as_ref().map(|p| p.to_vec());
                (
                    f.input().clone(),
                    Box::new(move |i| match &projection {
                        Some(p) => p.get(i).copied(),
                        None => Some(i),
                    }),
                )
            } else if let Some(c) = node.downcast_ref::<CooperativeExec>() {
                (c.input().clone(), Box::new(Some))
            } else if let Some(join) = node.downcast_ref::<HashJoinExec>()
                && broadcast_join(join)
                && matches!(
                    join.join_type(),
                    datafusion::common::JoinType::Inner | datafusion::common::JoinType::Right
                )
            {
                let projection = join.projection.as_ref().map(|p| p.to_vec());
                let left = join.left().schema().fields().len();
                (
                    join.right().clone(),
                    Box::new(move |i| {
                        let j = match &projection {
                            Some(p) => *p.get(i)?,
                            None => i,
                        };
                        j.checked_sub(left)
                    }),
                )
            } else if let Some(a) = node.downcast_ref::<AggregateExec>()
                && *a.mode() == AggregateMode::Partial
                && a.group_expr().is_single()
            {
                let groups: Vec<_> = a
                    .group_expr()
                    .expr()
                    .iter()
                    .map(|(e, _)| e.clone())
                    .collect();
                (
                    a.input().clone(),
                    Box::new(move |i| groups.get(i).and_then(column)),
                )
            } else {
                return None;
            };
        for index in &mut indexes {
            *index = through(*index)?;
        }
        node = below;
    }
    let schema = node.schema();
    Some(
        indexes
            .into_iter()
            .map(|i| Arc::new(Column::new(schema.field(i).name(), i)) as Arc<dyn PhysicalExpr>)
            .collect(),
    )
}

/// `top` over `leaf`, each build side `rows`.
fn above(
    top: Option<&Arc<dyn ExecutionPlan>>,
    leaf: Arc<dyn ExecutionPlan>,
    rows: &[Arc<BroadcastRowsExec>],
) -> Result<Arc<dyn ExecutionPlan>> {
    let Some(top) = top else {
        return Ok(leaf);
    };
    let plan = top.clone().transform_up(|node| {
        if node.downcast_ref::<SegmentRefsExec>().is_some() {
            return Ok(Transformed::yes(leaf.clone()));
        }
        match node.downcast_ref::<BroadcastRefsExec>() {
            Some(refs) => {
                let rows = rows.get(refs.index()).ok_or_else(|| {
                    DataFusionError::Internal(format!("no build side {}", refs.index()))
                })?;
                Ok(Transformed::yes(rows.clone() as Arc<dyn ExecutionPlan>))
            }
            None => Ok(Transformed::no(node)),
        }
    })?;
    Ok(plan.data)
}

/// One partition's work: its segments, on their chosen historical first.
struct Run {
    counters: Counters,
    settings: GroveSettings,
    batch_size: usize,
    scan: ScanRequest,
    top: Option<Arc<dyn ExecutionPlan>>,
    broadcasts: Vec<Arc<Broadcast>>,
    /// The broadcasts' rows, once run.
    rows: Vec<Arc<BroadcastRowsExec>>,
    context: Arc<TaskContext>,
    /// Whether `top` sends less than rows (see [`DistributedScanExec::reduces`]).
    reduces: bool,
    client: Arc<FragmentClient>,
    first: String,
    segments: Vec<RemoteSegment>,
}

impl Run {
    /// The ticket for `segments`, with whatever runs above the scan.
    fn ticket(&self, segments: &[RemoteSegment]) -> Result<Ticket> {
        let refs: Vec<&RemoteSegment> = segments.iter().collect();
        let mut scan = self.scan.clone();
        scan.segments = segment_refs(&refs);
        let ids: Vec<String> = segments.iter().map(|s| s.id.clone()).collect();
        let leaf: Arc<dyn ExecutionPlan> = Arc::new(SegmentRefsExec::new(scan)?);
        let plan = self.above(leaf)?;
        Ok(Ticket::new("", ids, plan, &GroveCodec::for_encoding())?
            .with_batch_size(self.batch_size))
    }

    /// `top` over `leaf`, each build side its rows (run before any ticket is made).
    fn above(&self, leaf: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
        above(self.top.as_ref(), leaf, &self.rows)
    }

    /// Runs the partition's fragments, passing their batches to `out` as they come;
    /// first the build sides of joins in them, once for all partitions.
    async fn all(mut self, out: Sender<Result<RecordBatch>>) -> Result<()> {
        let out = &out;
        for broadcast in &self.broadcasts {
            self.rows.push(broadcast.rows(&self.context).await?);
        }
        // Whatever the session says, a ticket must stay under the message limit.
        let limit = self.settings.broadcast_bytes.min(MAX_MESSAGE / 2);
        let all: usize = self.rows.iter().map(|r| r.bytes()).sum();
        if all > limit && self.broadcasts.iter().any(|b| b.optional) {
            // Reductions are only worth it: the fragments do without them first.
            self.top = self
                .top
                .take()
                .map(|top| without_reductions(top, &self.broadcasts))
                .transpose()?;
        }
        let bytes: usize = sent(self.top.as_ref())
            .into_iter()
            .map(|i| self.rows.get(i).map_or(0, |r| r.bytes()))
            .sum();
        if bytes > limit {
            self.counters.joined_here_bytes.add(bytes);
            return self.joined_here(out).await;
        }
        self.counters.broadcast_bytes.add(bytes);
        let mut pending: Vec<RemoteSegment> = self.segments.clone();
        // Results above the scan (partial aggregates, top-N) are small: they are
        // fetched and cached per segment, unless the query says otherwise. Rows
        // (filtered or not) are not cached.
        let cache = self.client.cache().filter(|_| self.reduces);
        let lookup = cache.filter(|_| self.settings.use_cache);
        let populate = cache.filter(|_| self.settings.populate_cache);
        // The per-segment tickets of cache misses, kept for sending (and resending).
        let mut prepared: HashMap<String, Ticket> = HashMap::new();
        if let Some(cache) = lookup {
            let mut missed = Vec::new();
            for segment in pending.drain(..) {
                if segment.realtime {
                    missed.push(segment);
                    continue;
                }
                let ticket = self.ticket(std::slice::from_ref(&segment))?;
                match cache.get(&ticket.plan) {
                    Some(batches) => {
                        self.counters.cache_hits.add(1);
                        for batch in batches {
                            pass(out, batch).await?;
                        }
                    }
                    None => {
                        prepared.insert(segment.id.clone(), ticket);
                        missed.push(segment);
                    }
                }
            }
            pending = missed;
        }
        // Per segment id: the nodes it must not be asked of again.
        let mut excluded: HashMap<String, BTreeSet<String>> = HashMap::new();
        let mut errors: Vec<String> = Vec::new();
        while !pending.is_empty() {
            // One fragment per node, or per segment when results are to be cached.
            let mut fragments: BTreeMap<(String, String), (String, Vec<RemoteSegment>)> =
                BTreeMap::new();
            let mut stranded = Vec::new();
            for segment in pending.drain(..) {
                let skip = excluded.get(&segment.id);
                let usable = |r: &&Replica| {
                    r.flight_address.is_some() && skip.is_none_or(|s| !s.contains(&r.node))
                };
                let replica = segment
                    .replicas
                    .iter()
                    .filter(usable)
                    .find(|r| r.node == self.first)
                    .or_else(|| segment.replicas.iter().find(usable))
                    .cloned();
                match replica {
                    Some(r) => {
                        let address = r.flight_address.clone().unwrap_or_default();
                        let unit = if populate.is_some() && !segment.realtime {
                            segment.id.clone()
                        } else {
                            String::new()
                        };
                        fragments
                            .entry((r.node, unit))
                            .or_insert_with(|| (address, Vec::new()))
                            .1
                            .push(segment);
                    }
                    None => stranded.push(segment.id),
                }
            }
            if !stranded.is_empty() {
                return Err(DataFusionError::Execution(format!(
                    "no replica left for segments {} ({})",
                    stranded.join(", "),
                    errors.join("; ")
                )));
            }
            // Fragments to different historicals (or per segment) run side by side.
            let this = &self;
            let prepared = &prepared;
            let calls = fragments
                .into_iter()
                .map(|((node, _), (address, segments))| async move {
                    let ready = match segments.as_slice() {
                        [one] => prepared.get(&one.id).cloned(),
                        _ => None,
                    };
                    let ticket = match ready {
                        Some(ticket) => ticket,
                        None => this.ticket(&segments)?,
                    };
                    this.counters.fragments.add(1);
                    let cacheable = populate.filter(|_| segments.iter().all(|s| !s.realtime));
                    let failed = this.fragment(&address, &ticket, cacheable, out).await?;
                    Ok::<_, DataFusionError>((node, segments, ticket, failed))
                });
            let answers: Vec<Result<_>> = futures::stream::iter(calls)
                .buffer_unordered(CONCURRENT_FRAGMENTS)
                .collect()
                .await;
            for answer in answers {
                let (node, segments, ticket, failed) = answer?;
                match failed {
                    None => {}
                    Some(FragmentError::Missing(missing)) => {
                        self.counters.retries.add(1);
                        errors.push(format!("{node} does not serve {}", missing.join(", ")));
                        for id in &missing {
                            excluded.entry(id.clone()).or_default().insert(node.clone());
                        }
                        // Only the missing ones go elsewhere; the rest is asked again.
                        pending.extend(segments);
                    }
                    Some(FragmentError::Unavailable(why)) => {
                        self.counters.retries.add(1);
                        errors.push(format!("{node}: {why}"));
                        for id in &ticket.segments {
                            excluded.entry(id.clone()).or_default().insert(node.clone());
                        }
                        pending.extend(segments);
                    }
                    Some(e @ FragmentError::Rejected(_)) => {
                        return Err(DataFusionError::External(Box::new(e)));
                    }
                }
            }
        }
        Ok(())
    }

    /// Runs what the fragments would, but here, over their segments' rows: for build
    /// sides too large to send along.
    async fn joined_here(self, out: &Sender<Result<RecordBatch>>) -> Result<()> {
        let rows: Arc<dyn ExecutionPlan> = Arc::new(DistributedScanExec::new(
            self.scan.table_schema.clone(),
            self.scan.projection.clone(),
            self.segments.clone(),
            self.scan.filter.clone(),
            self.scan.limit,
            self.client.clone(),
        )?);
        // `top`'s operators as new (a join keeps its hash table across copies of it).
        let plan = datafusion::physical_plan::execution_plan::reset_plan_states(self.above(rows)?)?;
        let mut stream = datafusion::physical_plan::execute_stream(plan, self.context.clone())?;
        while let Some(batch) = stream.next().await {
            pass(out, batch?).await?;
        }
        Ok(())
    }

    /// Runs one fragment, passing its batches to `out`. The first [`HELD_BACK`]
    /// bytes are held back: a fragment that fails before it has passed anything on
    /// is returned, to be retried elsewhere; one that fails after is the query's
    /// error, since a retry would count its rows twice. A fragment that ends within
    /// them is put in `cache`.
    async fn fragment(
        &self,
        address: &str,
        ticket: &Ticket,
        cache: Option<&ResultCache>,
        out: &Sender<Result<RecordBatch>>,
    ) -> Result<Option<FragmentError>> {
        let mut answer = match self.client.open(address, ticket).await {
            Ok(answer) => answer,
            Err(e) => return Ok(Some(e)),
        };
        let mut held = Vec::new();
        let mut held_bytes = 0;
        let mut passing = false;
        while let Some(batch) = answer.next().await {
            let batch = match batch {
                Ok(batch) => batch,
                Err(e) if !passing => return Ok(Some(e)),
                Err(e) => {
                    return Err(DataFusionError::Execution(format!(
                        "fragment of segments {} failed after sending rows, so it is not \
                         retried (its rows would count twice): {e}",
                        ticket.segments.join(", ")
                    )));
                }
            };
            let bytes = batch.get_array_memory_size();
            self.counters.rows.add(batch.num_rows());
            self.counters.bytes.add(bytes);
            if passing {
                pass(out, batch).await?;
                continue;
            }
            held_bytes += bytes;
            held.push(batch);
            if held_bytes > HELD_BACK {
                passing = true;
                for batch in held.drain(..) {
                    pass(out, batch).await?;
                }
            }
        }
        if let Some(cache) = cache
            && !passing
        {
            cache.put(ticket.plan.clone(), held.clone());
        }
        for batch in held {
            pass(out, batch).await?;
        }
        Ok(None)
    }
}

/// Sends `batch` on; fails once the query has stopped reading.
async fn pass(out: &Sender<Result<RecordBatch>>, batch: RecordBatch) -> Result<()> {
    out.send(Ok(batch))
        .await
        .map_err(|_| DataFusionError::Execution("the query stopped reading".into()))
}

/// Segment ids with the intervals to read, as a scan request lists them.
fn segment_refs(segments: &[&RemoteSegment]) -> Vec<(String, Vec<Interval>)> {
    segments
        .iter()
        .map(|s| (s.id.clone(), s.intervals.clone()))
        .collect()
}

/// Operators that work row by row and so may run in the fragments: filters that the
/// scan does not answer itself, and projections, unless an expression needs the
/// broker (a scalar subquery's value, computed by the plan around it).
pub(super) fn is_row_local(node: &Arc<dyn ExecutionPlan>) -> bool {
    use datafusion::physical_expr::scalar_subquery::ScalarSubqueryExpr;
    use datafusion::physical_plan::filter::FilterExec;
    use datafusion::physical_plan::projection::ProjectionExec;
    let expressions: Vec<Arc<dyn PhysicalExpr>> =
        if let Some(filter) = node.downcast_ref::<FilterExec>() {
            vec![filter.predicate().clone()]
        } else if let Some(projection) = node.downcast_ref::<ProjectionExec>() {
            projection.expr().iter().map(|e| e.expr.clone()).collect()
        } else {
            return false;
        };
    expressions.iter().all(|expr| {
        !expr
            .exists(|e| Ok(e.downcast_ref::<ScalarSubqueryExpr>().is_some()))
            .unwrap_or(true)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A build side runs once however its partitions stop: when the partition that
    /// started it stops reading (an empty join above drops it), another carries on
    /// with the same run. (Running it again would execute a repartition's output
    /// twice, which panics.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_build_side_runs_once_when_the_partition_that_started_it_stops() {
        use datafusion::arrow::array::Int64Array;
        use datafusion::arrow::datatypes::{DataType, Schema};
        use datafusion::datasource::memory::MemorySourceConfig;
        use datafusion::physical_plan::repartition::RepartitionExec;
        use datafusion::prelude::SessionContext;

        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        let batches: Vec<RecordBatch> = (0..64)
            .map(|i| {
                let values = Int64Array::from_iter_values(i * 1000..(i + 1) * 1000);
                RecordBatch::try_new(schema.clone(), vec![Arc::new(values)]).unwrap()
            })
            .collect();
        let source = MemorySourceConfig::try_new_exec(&[batches], schema.clone(), None).unwrap();
        let plan =
            Arc::new(RepartitionExec::try_new(source, Partitioning::RoundRobinBatch(1)).unwrap());
        let broadcast = Broadcast::new(plan);
        let context = SessionContext::new().task_ctx();

        let mut first = Box::pin(broadcast.rows(&context));
        assert!(
            futures::poll!(first.as_mut()).is_pending(),
            "the build side must still be running for this test to mean anything"
        );
        drop(first);
        let rows = broadcast.rows(&context).await.unwrap();
        let mut buf = Vec::new();
        rows.encode(&mut buf).unwrap();
        let decoded = BroadcastRowsExec::decode(&buf).unwrap();
        let mut stream = decoded.execute(0, context.clone()).unwrap();
        let mut sum = 0;
        while let Some(batch) = stream.next().await {
            let batch = batch.unwrap();
            let column = batch
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            sum += column.values().iter().sum::<i64>();
        }
        assert_eq!(sum, (0..64_000).sum::<i64>());
    }

    fn replica(node: &str, priority: i32) -> Replica {
        Replica {
            node: node.into(),
            tier: "t".into(),
            priority,
            flight_address: Some(format!("{node}:1")),
        }
    }

    #[test]
    fn a_historical_copy_is_preferred_and_streaming_copies_are_chosen_by_name() {
        let streaming = |node| replica(node, REALTIME_REPLICA_PRIORITY);
        let segments: Vec<RemoteSegment> = (0..4)
            .map(|i| RemoteSegment {
                id: format!("s{i}"),
                interval: Interval::ETERNITY,
                rows: 1,
                columns: Vec::new(),
                intervals: Vec::new(),
                replicas: if i == 0 {
                    vec![streaming("task-a"), replica("historical-1", 0)]
                } else {
                    vec![streaming("task-b"), streaming("task-a")]
                },
                realtime: i != 0,
            })
            .collect();
        // Other queries keep task-a busy: streaming copies are still read on task-a.
        let busy = HashMap::from([("task-a:1".to_string(), 100)]);
        let groups = place(segments, &busy);
        let chosen: Vec<(&str, Vec<&str>)> = groups
            .iter()
            .map(|(n, s)| (n.as_str(), s.iter().map(|s| s.id.as_str()).collect()))
            .collect();
        assert_eq!(
            chosen,
            [
                ("historical-1", vec!["s0"]),
                ("task-a", vec!["s1", "s2", "s3"])
            ]
        );
    }

    #[test]
    fn statistics_come_from_descriptors_exact_only_for_whole_unfiltered_segments() {
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]));
        let hour = Interval::new(0, 3_600_000).unwrap();
        let segment = |id: &str, rows: usize, visible: Interval| RemoteSegment {
            id: id.into(),
            interval: hour,
            rows,
            columns: Vec::new(),
            intervals: vec![visible],
            replicas: vec![replica(if id == "a" { "h-1" } else { "h-2" }, 0)],
            realtime: false,
        };
        let client = Arc::new(FragmentClient::new(
            std::time::Duration::from_secs(1),
            crate::auth::ClusterSecret::generate(),
        ));
        let scan = |segments, filter, limit| {
            DistributedScanExec::new(
                schema.clone(),
                vec![0],
                segments,
                filter,
                limit,
                client.clone(),
            )
            .unwrap()
        };
        let whole = scan(
            vec![segment("a", 700, hour), segment("b", 300, hour)],
            None,
            None,
        );
        assert_eq!(whole.statistics_of(None).num_rows, Precision::Inexact(1000));
        // Per partition: each historical's segments.
        assert_eq!(
            whole.statistics_of(Some(1)).num_rows,
            Precision::Inexact(300)
        );
        // Part of a segment visible (overshadowed), a filter, a limit: upper bounds.
        let part = Interval::new(0, 60_000).unwrap();
        let partial = scan(vec![segment("a", 700, part)], None, None);
        assert_eq!(
            partial.statistics_of(None).num_rows,
            Precision::Inexact(700)
        );
        // An index filter keeps the share its descriptors' distinct values say.
        let keyed = |distinct: Option<u64>, nulls: Option<u64>| {
            let mut s = segment("a", 700, hour);
            s.columns = vec![grove_cluster::segments::ColumnSchema {
                name: "k".into(),
                kind: grove_segment::format::ColumnKind::String,
                null_count: nulls,
                min: None,
                max: None,
                distinct,
                role: None,
            }];
            s
        };
        let eq = |value: &str| IndexFilter::Eq {
            column: "k".into(),
            value: value.into(),
        };
        let rows = |segment: RemoteSegment, filter: IndexFilter| {
            scan(vec![segment], Some(filter), None)
                .statistics_of(None)
                .num_rows
        };
        assert_eq!(rows(keyed(Some(7), None), eq("x")), Precision::Inexact(100));
        let listed = IndexFilter::In {
            column: "k".into(),
            values: vec!["x".into(), "y".into()],
        };
        assert_eq!(rows(keyed(Some(7), None), listed), Precision::Inexact(200));
        let not = IndexFilter::Not(Box::new(eq("x")));
        assert_eq!(rows(keyed(Some(7), None), not), Precision::Inexact(600));
        let both = IndexFilter::And(vec![eq("x"), eq("y")]);
        assert_eq!(rows(keyed(Some(7), None), both), Precision::Inexact(14));
        let either = IndexFilter::Or(vec![eq("x"), eq("y")]);
        assert_eq!(rows(keyed(Some(7), None), either), Precision::Inexact(186));
        let nulls = IndexFilter::IsNull { column: "k".into() };
        assert_eq!(
            rows(keyed(Some(7), Some(70)), nulls),
            Precision::Inexact(70)
        );
        // Unknown distinct values: DataFusion's default share; a column the segment
        // lacks is NULL in every row, so no row equals a value.
        assert_eq!(rows(keyed(None, None), eq("x")), Precision::Inexact(140));
        assert_eq!(
            rows(segment("a", 700, hour), eq("x")),
            Precision::Inexact(0)
        );
        let limited = scan(vec![segment("a", 700, hour)], None, Some(10));
        assert_eq!(limited.statistics_of(None).num_rows, Precision::Inexact(10));

        // Column statistics merge what each descriptor records.
        use grove_cluster::segments::ColumnSchema;
        use grove_segment::format::{ColumnKind, Stat};
        let column = |nulls: Option<u64>, min: i64, max: i64| ColumnSchema {
            name: "v".into(),
            kind: ColumnKind::Long,
            null_count: nulls,
            min: Some(Stat::Int(min)),
            max: Some(Stat::Int(max)),
            distinct: None,
            role: None,
        };
        let with = |id: &str, rows, c: Option<ColumnSchema>| RemoteSegment {
            columns: c.into_iter().collect(),
            ..segment(id, rows, hour)
        };
        let both = scan(
            vec![
                with("a", 700, Some(column(Some(0), 1, 5))),
                with("b", 300, Some(column(Some(10), -3, 2))),
            ],
            None,
            None,
        );
        let v = &both.statistics_of(None).column_statistics[0];
        assert_eq!(
            v.min_value,
            Precision::Exact(datafusion::common::ScalarValue::Int64(Some(-3)))
        );
        assert_eq!(
            v.max_value,
            Precision::Exact(datafusion::common::ScalarValue::Int64(Some(5)))
        );
        assert_eq!(v.null_count, Precision::Exact(10));
        // Part of a segment visible: bounds, no longer exact.
        let part_of = scan(
            vec![RemoteSegment {
                intervals: vec![part],
                ..with("a", 700, Some(column(Some(0), 1, 5)))
            }],
            None,
            None,
        );
        let v = &part_of.statistics_of(None).column_statistics[0];
        assert_eq!(
            v.max_value,
            Precision::Inexact(datafusion::common::ScalarValue::Int64(Some(5)))
        );
        // A segment without the column: NULL in all its rows.
        let lacking = scan(
            vec![
                with("a", 700, Some(column(Some(0), 1, 5))),
                with("b", 300, None),
            ],
            None,
            None,
        );
        let v = &lacking.statistics_of(None).column_statistics[0];
        assert_eq!(v.null_count, Precision::Exact(300));
        // A descriptor that records nothing of it: unknown.
        let older = scan(vec![with("a", 700, Some(column(None, 1, 5)))], None, None);
        let v = &older.statistics_of(None).column_statistics[0];
        assert_eq!(v.min_value, Precision::Absent);
        assert_eq!(v.null_count, Precision::Absent);
    }

    #[test]
    fn replicas_are_chosen_by_priority_then_least_outstanding_work() {
        let segments: Vec<RemoteSegment> = (0..6)
            .map(|i| RemoteSegment {
                id: format!("s{i}"),
                interval: Interval::ETERNITY,
                rows: 1,
                columns: Vec::new(),
                intervals: Vec::new(),
                replicas: vec![
                    replica("cold-1", 0),
                    replica("hot-1", 10),
                    replica("hot-2", 10),
                ],
                realtime: false,
            })
            .collect();
        let groups = place(segments.clone(), &HashMap::new());
        let sizes: Vec<(String, usize)> =
            groups.iter().map(|(n, s)| (n.clone(), s.len())).collect();
        assert_eq!(sizes, [("hot-1".to_string(), 3), ("hot-2".to_string(), 3)]);
        // The cold replica is the last resort for every segment.
        for (_, segments) in &groups {
            assert!(segments.iter().all(|s| s.replicas[2].node == "cold-1"));
        }
        // Where only the cold tier has a segment, it is read there.
        let only_cold = place(
            vec![RemoteSegment {
                id: "s".into(),
                interval: Interval::ETERNITY,
                rows: 1,
                columns: Vec::new(),
                intervals: Vec::new(),
                replicas: vec![replica("cold-1", 0)],
                realtime: false,
            }],
            &HashMap::new(),
        );
        assert_eq!(only_cold[0].0, "cold-1");
        // hot-1 is busy with 4 segments of other queries: hot-2 takes 5 of the 6, and
        // hot-1 one once hot-2 has as much to do.
        let busy = HashMap::from([("hot-1:1".to_string(), 4)]);
        let groups = place(segments, &busy);
        let sizes: Vec<(String, usize)> =
            groups.iter().map(|(n, s)| (n.clone(), s.len())).collect();
        assert_eq!(sizes, [("hot-1".to_string(), 1), ("hot-2".to_string(), 5)]);
    }
}
