//! Plan fragments on the wire: [`GroveCodec`], the `datafusion-proto`
//! `PhysicalExtensionCodec` for Grove's own operators. DataFusion's operators go
//! through datafusion-proto as they are; a `SegmentScanExec` is written as a small
//! versioned JSON node naming its segments by id (never their data), a join's
//! broadcast build side as its rows (`broadcast`), and a decoder
//! finds them in a [`SegmentSource`]: a historical's loaded segments. Segments the
//! source does not have are an error that names them all ([`MissingSegments`]), so
//! the sender can retry them elsewhere instead of getting partial results.

use std::sync::Arc;

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{AggregateUDF, ScalarUDF, WindowUDF};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use grove_segment::Interval;
use grove_segment::format::Segment;
use grove_segment::scan::{IndexFilter, ScanSegment, SegmentScanExec};
use serde::{Deserialize, Serialize};

use super::admit::{MAX_PARTITIONS, Refused, check_type, find_external, unregistered};
use super::broadcast::BroadcastRowsExec;
use super::peers::{PeerClient, PeerFragmentsExec};
use super::refs::{ScanRequest, SegmentRefsExec};
use super::wire::{FieldNode, decode_schema, encode_schema, invalid};

/// The version of the scan node's encoding; a decoder refuses others.
pub const SCAN_NODE_VERSION: u32 = 1;

/// Where decoded scans find their segments.
pub trait SegmentSource: Send + Sync + std::fmt::Debug {
    /// The files holding the segment with this id, if this process serves it: one for
    /// a historical's segment, the pieces persisted so far for a streaming task's
    /// segment in progress. Each is scanned; together they hold each row once.
    fn segment(&self, id: &str) -> Option<Vec<Arc<Segment>>>;
}

/// Segments a fragment needs that the decoding process does not serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingSegments(pub Vec<String>);

impl std::fmt::Display for MissingSegments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "segments not served here: {}", self.0.join(", "))
    }
}

impl std::error::Error for MissingSegments {}

impl MissingSegments {
    /// The missing segments behind `error`, if that is what it is.
    pub fn find(error: &DataFusionError) -> Option<&MissingSegments> {
        find_external(error)
    }
}

#[derive(Debug)]
pub struct GroveCodec {
    source: Arc<dyn SegmentSource>,
    /// Where a shuffle stage's leaves read from, when a stage is being decoded.
    stage: Option<Arc<dyn PeerClient>>,
}

impl GroveCodec {
    pub fn new(source: Arc<dyn SegmentSource>) -> Self {
        GroveCodec {
            source,
            stage: None,
        }
    }

    /// The codec of a shuffle stage's ticket: its leaves read from `peers`.
    pub fn for_stage(mut self, peers: Arc<dyn PeerClient>) -> Self {
        self.stage = Some(peers);
        self
    }

    /// A codec for a process that only sends fragments: it serves no segments.
    pub fn for_encoding() -> Self {
        GroveCodec::new(Arc::new(NoSegments))
    }
}

#[derive(Debug)]
struct NoSegments;

impl SegmentSource for NoSegments {
    fn segment(&self, _id: &str) -> Option<Vec<Arc<Segment>>> {
        None
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct ScanNode {
    version: u32,
    schema: Vec<FieldNode>,
    projection: Vec<usize>,
    segments: Vec<SegmentNode>,
    filter: Option<IndexFilter>,
    limit: Option<usize>,
    partitions: usize,
}

#[derive(Debug, Serialize, Deserialize)]
struct SegmentNode {
    id: String,
    intervals: Vec<Interval>,
}

impl PhysicalExtensionCodec for GroveCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !inputs.is_empty() {
            return Err(invalid("a Grove leaf has no inputs"));
        }
        if BroadcastRowsExec::is_encoding(buf) {
            let rows = BroadcastRowsExec::decode(buf)?;
            for field in rows.schema().fields() {
                check_type(field.data_type()).map_err(Refused::into_error)?;
            }
            return Ok(Arc::new(rows));
        }
        if PeerFragmentsExec::is_encoding(buf) {
            let Some(peers) = &self.stage else {
                return Err(Refused(
                    "fragments of other historicals in a ticket that is not a shuffle stage".into(),
                )
                .into_error());
            };
            return Ok(Arc::new(PeerFragmentsExec::decode(buf, peers)?));
        }
        let node: ScanNode = serde_json::from_slice(buf).map_err(invalid)?;
        if node.version != SCAN_NODE_VERSION {
            return Err(invalid(format!(
                "scan node version {} (this build reads {SCAN_NODE_VERSION})",
                node.version
            )));
        }
        let schema = decode_schema(&node.schema)?;
        if let Some(bad) = node
            .projection
            .iter()
            .find(|i| **i >= schema.fields().len())
        {
            return Err(invalid(format!("projection index {bad} is out of range")));
        }
        let mut missing = Vec::new();
        let mut segments = Vec::with_capacity(node.segments.len());
        for s in node.segments {
            if s.intervals.iter().any(|i| i.is_empty()) {
                return Err(invalid(format!("an empty interval for {}", s.id)));
            }
            match self.source.segment(&s.id) {
                Some(files) => segments.extend(files.into_iter().map(|segment| ScanSegment {
                    segment,
                    intervals: s.intervals.clone(),
                })),
                None => missing.push(s.id),
            }
        }
        if !missing.is_empty() {
            return Err(DataFusionError::External(Box::new(MissingSegments(
                missing,
            ))));
        }
        let scan = SegmentScanExec::new(
            schema,
            node.projection,
            segments,
            node.filter,
            node.limit,
            node.partitions.clamp(1, MAX_PARTITIONS),
        )?;
        Ok(Arc::new(scan))
    }

    // Functions come from the decoding process's own registry, by name; a plan that
    // asks for one it does not have (or brings its own definition) is refused.
    fn try_decode_udf(&self, name: &str, _buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        Err(unregistered("function", name).into_error())
    }

    fn try_decode_udaf(&self, name: &str, _buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        Err(unregistered("aggregate function", name).into_error())
    }

    fn try_decode_udwf(&self, name: &str, _buf: &[u8]) -> Result<Arc<WindowUDF>> {
        Err(unregistered("window function", name).into_error())
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        if let Some(rows) = node.downcast_ref::<BroadcastRowsExec>() {
            return rows.encode(buf);
        }
        if let Some(leaf) = node.downcast_ref::<PeerFragmentsExec>() {
            return leaf.encode(buf);
        }
        let request = if let Some(scan) = node.downcast_ref::<SegmentScanExec>() {
            ScanRequest::of(scan)
        } else if let Some(refs) = node.downcast_ref::<SegmentRefsExec>() {
            refs.request().clone()
        } else {
            return Err(DataFusionError::NotImplemented(format!(
                "no Grove encoding for {}",
                node.name()
            )));
        };
        serde_json::to_writer(buf, &scan_node(request))
            .map_err(|e| DataFusionError::External(Box::new(e)))
    }
}

/// Both scans travel as the same node.
fn scan_node(request: ScanRequest) -> ScanNode {
    ScanNode {
        version: SCAN_NODE_VERSION,
        schema: encode_schema(&request.table_schema),
        projection: request.projection,
        segments: request
            .segments
            .into_iter()
            .map(|(id, intervals)| SegmentNode { id, intervals })
            .collect(),
        filter: request.filter,
        limit: request.limit,
        partitions: request.partitions,
    }
}
