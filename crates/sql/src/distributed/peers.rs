//! What a shuffle stage reads on the historical that runs it: [`PeerFragmentsExec`],
//! a leaf with one partition per fragment of another historical (or of this one),
//! each a ticket the broker made, fetched over Flight as the broker would fetch it
//! (or in process), and [`PeerClient`], the historicals a stage may fetch from.
//!
//! On the wire the leaf is
//! `b"GROVEPRS" | version: u8 = 1 | header length: u32 LE | header: JSON | tickets`,
//! the header naming the schema and, per fragment, its node, Flight address and the
//! length of its ticket; the tickets follow one after another. A decoder refuses it
//! outside a stage's ticket, a fragment for an address that is not a historical (or
//! streaming task) of the cluster, and a fragment that is a stage itself: a forged
//! stage can make a historical ask only its peers, and only for what they would
//! answer a broker.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use super::leaf;
use super::refusal::Refused;
use super::ticket::Ticket;
use super::wire::{FieldNode, decode_schema, encode_schema, invalid};

const MAGIC: &[u8; 8] = b"GROVEPRS";
const VERSION: u8 = 1;

/// The most fragments a stage may read, over all its leaves: one per historical and
/// scan it joins.
pub const MAX_PEER_FRAGMENTS: usize = 1024;

/// The historicals a stage on this one may read from, and how it reads them.
pub trait PeerClient: Send + Sync + fmt::Debug {
    /// Whether `address` is the Flight address of a historical or streaming task of
    /// the cluster.
    fn knows(&self, address: &str) -> bool;

    /// Starts `ticket` at `address`: its batches as they come.
    fn open(&self, address: String, ticket: Ticket) -> BoxFuture<'static, Result<PeerStream>>;
}

/// A fragment's answer as a stage reads it.
pub type PeerStream = BoxStream<'static, Result<RecordBatch>>;

/// One fragment a stage reads.
#[derive(Debug, Clone)]
pub struct PeerFragment {
    pub node: String,
    pub address: String,
    pub ticket: Ticket,
}

#[derive(Serialize, Deserialize)]
struct Header {
    schema: Vec<FieldNode>,
    fragments: Vec<FragmentHeader>,
}

#[derive(Serialize, Deserialize)]
struct FragmentHeader {
    node: String,
    address: String,
    /// The length of its encoded ticket.
    bytes: usize,
}

/// The leaf of a shuffle stage: partition `p` is fragment `p`'s answer.
#[derive(Debug)]
pub struct PeerFragmentsExec {
    fragments: Vec<PeerFragment>,
    /// Where they are fetched from: absent where the leaf is only made and sent.
    peers: Option<Arc<dyn PeerClient>>,
    properties: Arc<PlanProperties>,
}

impl PeerFragmentsExec {
    /// The leaf a broker sends.
    pub fn new(schema: SchemaRef, fragments: Vec<PeerFragment>) -> Self {
        let properties = leaf::properties(schema, fragments.len());
        PeerFragmentsExec {
            fragments,
            peers: None,
            properties,
        }
    }

    pub fn fragments(&self) -> &[PeerFragment] {
        &self.fragments
    }

    pub fn is_encoding(buf: &[u8]) -> bool {
        buf.starts_with(MAGIC)
    }

    pub fn encode(&self, buf: &mut Vec<u8>) -> Result<()> {
        let tickets: Vec<Vec<u8>> = self.fragments.iter().map(|f| f.ticket.encode()).collect();
        let header = Header {
            schema: encode_schema(&self.schema()),
            fragments: self
                .fragments
                .iter()
                .zip(&tickets)
                .map(|(f, t)| FragmentHeader {
                    node: f.node.clone(),
                    address: f.address.clone(),
                    bytes: t.len(),
                })
                .collect(),
        };
        let header = serde_json::to_vec(&header).map_err(|e| invalid(e.to_string()))?;
        buf.extend_from_slice(MAGIC);
        buf.push(VERSION);
        buf.extend_from_slice(&(header.len() as u32).to_le_bytes());
        buf.extend_from_slice(&header);
        for ticket in tickets {
            buf.extend_from_slice(&ticket);
        }
        Ok(())
    }

    /// Decodes the leaf of a stage that runs here, reading from `peers` (see the
    /// module documentation for what is refused).
    pub fn decode(buf: &[u8], peers: &Arc<dyn PeerClient>) -> Result<PeerFragmentsExec> {
        let rest = buf
            .strip_prefix(MAGIC.as_slice())
            .ok_or_else(|| invalid("not peer fragments"))?;
        let (&version, rest) = rest.split_first().ok_or_else(|| invalid("truncated"))?;
        if version != VERSION {
            return Err(invalid(format!(
                "peer fragments version {version} (this build reads {VERSION})"
            )));
        }
        let length: [u8; 4] = rest
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| invalid("truncated"))?;
        let rest = &rest[4..];
        let length = u32::from_le_bytes(length) as usize;
        let header = rest.get(..length).ok_or_else(|| invalid("truncated"))?;
        let header: Header = serde_json::from_slice(header).map_err(invalid)?;
        let mut rest = &rest[length..];
        if header.fragments.is_empty() || header.fragments.len() > MAX_PEER_FRAGMENTS {
            return Err(invalid(format!(
                "{} fragments (1 to {MAX_PEER_FRAGMENTS})",
                header.fragments.len()
            )));
        }
        let schema = decode_schema(&header.schema)?;
        let mut fragments = Vec::with_capacity(header.fragments.len());
        let mut addresses = std::collections::HashSet::new();
        for f in header.fragments {
            // A stage reads each historical's fragment of a scan once.
            if !addresses.insert(f.address.clone()) {
                return Err(Refused(format!("two fragments for {}", f.address)).into_error());
            }
            if !peers.knows(&f.address) {
                return Err(Refused(format!(
                    "a fragment for {}, which is not a historical of this cluster",
                    f.address
                ))
                .into_error());
            }
            let bytes = rest.get(..f.bytes).ok_or_else(|| invalid("truncated"))?;
            rest = &rest[f.bytes..];
            let ticket = Ticket::decode(bytes).map_err(invalid)?;
            if ticket.stage {
                return Err(
                    Refused("a stage's fragment that is a stage itself".into()).into_error()
                );
            }
            fragments.push(PeerFragment {
                node: f.node,
                address: f.address,
                ticket,
            });
        }
        if !rest.is_empty() {
            return Err(invalid("bytes after the last ticket"));
        }
        let mut leaf = PeerFragmentsExec::new(schema, fragments);
        leaf.peers = Some(peers.clone());
        Ok(leaf)
    }
}

impl DisplayAs for PeerFragmentsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let nodes: Vec<&str> = self.fragments.iter().map(|f| f.node.as_str()).collect();
        write!(f, "PeerFragmentsExec: fragments=[{}]", nodes.join(", "))
    }
}

impl ExecutionPlan for PeerFragmentsExec {
    fn name(&self) -> &str {
        "PeerFragmentsExec"
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
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let Some(peers) = self.peers.clone() else {
            return Err(DataFusionError::Internal(
                "peer fragments are read by the historical that runs the stage".into(),
            ));
        };
        let fragment =
            self.fragments.get(partition).cloned().ok_or_else(|| {
                DataFusionError::Internal(format!("no peer fragment {partition}"))
            })?;
        let schema = self.schema();
        let mut answer = RecordBatchReceiverStreamBuilder::new(schema.clone(), 2);
        let sender = answer.tx();
        answer.spawn(async move {
            let failed = |e: &dyn fmt::Display| {
                DataFusionError::Execution(format!(
                    "shuffle stage: the fragment of {} ({}) failed: {e}",
                    fragment.node, fragment.address
                ))
            };
            let mut stream = peers
                .open(fragment.address.clone(), fragment.ticket.clone())
                .await
                .map_err(|e| failed(&e))?;
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(|e| failed(&e))?;
                // The operators above take the declared types for granted.
                let types = |fields: &datafusion::arrow::datatypes::Fields| {
                    fields
                        .iter()
                        .map(|f| f.data_type().clone())
                        .collect::<Vec<_>>()
                };
                if types(batch.schema().fields()) != types(schema.fields()) {
                    return Err(failed(&format!(
                        "it answered columns of types {:?}, not the {:?} the stage declares",
                        types(batch.schema().fields()),
                        types(schema.fields())
                    )));
                }
                if sender.send(Ok(batch)).await.is_err() {
                    // The stage stopped reading.
                    break;
                }
            }
            Ok(())
        });
        Ok(answer.build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    /// Peers that know one address and answer nothing.
    #[derive(Debug)]
    struct OnePeer;

    impl PeerClient for OnePeer {
        fn knows(&self, address: &str) -> bool {
            address == "known:1"
        }

        fn open(
            &self,
            _address: String,
            _ticket: Ticket,
        ) -> BoxFuture<'static, Result<PeerStream>> {
            Box::pin(async { Ok(Box::pin(futures::stream::empty()) as PeerStream) })
        }
    }

    fn ticket() -> Ticket {
        Ticket {
            query_id: "q".into(),
            segments: vec!["s".into()],
            batch_size: None,
            stage: false,
            plan: vec![1, 2, 3],
        }
    }

    fn encoded(fragments: Vec<PeerFragment>) -> Vec<u8> {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        let mut buf = Vec::new();
        PeerFragmentsExec::new(schema, fragments)
            .encode(&mut buf)
            .unwrap();
        buf
    }

    fn fragment(address: &str, ticket: Ticket) -> PeerFragment {
        PeerFragment {
            node: "h".into(),
            address: address.into(),
            ticket,
        }
    }

    /// What a forged leaf may not be, each an error that says what it is; a good one
    /// decodes to the same fragments.
    #[test]
    fn damaged_or_forged_leaves_do_not_decode() {
        let peers: Arc<dyn PeerClient> = Arc::new(OnePeer);
        let good = encoded(vec![fragment("known:1", ticket())]);
        let decoded = PeerFragmentsExec::decode(&good, &peers).unwrap();
        assert_eq!(decoded.fragments()[0].ticket, ticket());
        assert_eq!(decoded.fragments()[0].address, "known:1");

        let mut trailing = good.clone();
        trailing.push(0);
        let stage = ticket().as_stage();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (good[..good.len() - 1].to_vec(), "truncated"),
            (good[..11].to_vec(), "truncated"),
            (trailing, "bytes after the last ticket"),
            (b"GROVEPRS\x02".to_vec(), "version 2"),
            (b"GROVEBRD".to_vec(), "not peer fragments"),
            (encoded(Vec::new()), "0 fragments"),
            (
                encoded(vec![fragment("elsewhere:1", ticket())]),
                "not a historical of this cluster",
            ),
            (
                encoded(vec![
                    fragment("known:1", ticket()),
                    fragment("known:1", ticket()),
                ]),
                "two fragments for known:1",
            ),
            (encoded(vec![fragment("known:1", stage)]), "a stage itself"),
        ];
        for (buf, named) in cases {
            let e = PeerFragmentsExec::decode(&buf, &peers)
                .unwrap_err()
                .to_string();
            assert!(e.contains(named), "{named}: {e}");
        }
    }
}
