//! [`SegmentRefsExec`], the leaf of a fragment the broker builds without having any
//! segment: it names them by id, with the [`ScanRequest`] of what to read, and
//! encodes exactly like the `SegmentScanExec` a historical decodes it into; and
//! [`BroadcastRefsExec`], where a join's build side goes, replaced by its rows when a
//! ticket is made.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use grove_segment::Interval;
use grove_segment::scan::{IndexFilter, SegmentScanExec};

use super::leaf;

/// A scan of segments named by id: what a fragment's leaf asks a historical to read.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanRequest {
    /// The datasource's schema; `projection` indexes it.
    pub table_schema: SchemaRef,
    pub projection: Vec<usize>,
    /// Segment ids with the parts of their intervals to read.
    pub segments: Vec<(String, Vec<Interval>)>,
    pub filter: Option<IndexFilter>,
    pub limit: Option<usize>,
    /// Parallelism on the historical.
    pub partitions: usize,
}

impl ScanRequest {
    /// What `scan` reads, by segment id.
    pub fn of(scan: &SegmentScanExec) -> ScanRequest {
        ScanRequest {
            table_schema: scan.table_schema().clone(),
            projection: scan.projection().to_vec(),
            segments: scan
                .segments()
                .iter()
                .map(|s| (s.segment.id().to_string(), s.intervals.clone()))
                .collect(),
            filter: scan.filter().cloned(),
            limit: scan.limit(),
            partitions: scan.partition_count(),
        }
    }
}

/// The broker-side stand-in for a historical's `SegmentScanExec`: it only travels.
#[derive(Debug)]
pub struct SegmentRefsExec {
    request: ScanRequest,
    properties: Arc<PlanProperties>,
}

impl SegmentRefsExec {
    pub fn new(request: ScanRequest) -> Result<Self> {
        let schema = Arc::new(request.table_schema.project(&request.projection)?);
        let properties = leaf::properties(schema, request.partitions);
        Ok(SegmentRefsExec {
            request,
            properties,
        })
    }

    pub fn request(&self) -> &ScanRequest {
        &self.request
    }
}

impl DisplayAs for SegmentRefsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "SegmentRefsExec: segments={}",
            self.request.segments.len()
        )
    }
}

impl ExecutionPlan for SegmentRefsExec {
    fn name(&self) -> &str {
        "SegmentRefsExec"
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
        leaf::childless(self, children)
    }

    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        Err(DataFusionError::Internal(
            "segment references are executed by historicals, not here".into(),
        ))
    }
}

/// The broker-side stand-in for a join's build side in a fragment: the `index`th
/// broadcast input of its distributed scan, whose rows replace it in each ticket.
#[derive(Debug)]
pub struct BroadcastRefsExec {
    index: usize,
    properties: Arc<PlanProperties>,
}

impl BroadcastRefsExec {
    pub fn new(index: usize, schema: SchemaRef) -> Self {
        BroadcastRefsExec {
            index,
            properties: leaf::properties(schema, 1),
        }
    }

    pub fn index(&self) -> usize {
        self.index
    }
}

impl DisplayAs for BroadcastRefsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "BroadcastRefsExec: input={}", self.index)
    }
}

impl ExecutionPlan for BroadcastRefsExec {
    fn name(&self) -> &str {
        "BroadcastRefsExec"
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
        leaf::childless(self, children)
    }

    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        Err(DataFusionError::Internal(
            "a broadcast build side is replaced by its rows before it runs".into(),
        ))
    }
}
