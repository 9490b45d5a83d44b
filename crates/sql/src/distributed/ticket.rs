//! The [`Ticket`] a broker sends a historical: which segments a fragment reads, and
//! the fragment.
//!
//! Format, version 1 (`docs/architecture.md`):
//!
//! ```text
//! b"GROVEFRG" | version: u8 = 1 | header length: u32 LE | header: JSON | plan
//! header = {"query_id": "...", "segments": ["segment id", ...], "batch_size": n?,
//!           "stage": true?}
//! plan   = a datafusion-proto PhysicalPlanNode, Grove's nodes via `GroveCodec`
//! ```

use std::sync::Arc;

use datafusion_proto::bytes::physical_plan_to_bytes_with_extension_codec;
use serde::{Deserialize, Serialize};

use datafusion_proto::physical_plan::PhysicalExtensionCodec;

const MAGIC: &[u8; 8] = b"GROVEFRG";
pub const TICKET_VERSION: u8 = 1;
/// The metadata key listing segments a historical does not serve.
pub const MISSING_SEGMENTS: &str = "grove-missing-segments";

/// What a broker asks a historical to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Ticket {
    pub query_id: String,
    /// The segments the fragment reads: all must be served, or none is read.
    pub segments: Vec<String>,
    /// Rows per batch the fragment's operators make, as in the broker's session;
    /// absent, the historical's default.
    pub batch_size: Option<usize>,
    /// A shuffle stage's ticket: it reads no segments itself, but fragments of other
    /// historicals (see `stage`); a fragment it sends on is never a stage.
    pub stage: bool,
    /// The fragment, serialized with datafusion-proto and [`GroveCodec`].
    pub plan: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    query_id: String,
    segments: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    batch_size: Option<usize>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    stage: bool,
}

impl Ticket {
    /// Serializes `plan`, whose scans name `segments`.
    pub fn new(
        query_id: impl Into<String>,
        segments: Vec<String>,
        plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
        codec: &dyn PhysicalExtensionCodec,
    ) -> datafusion::error::Result<Ticket> {
        Ok(Ticket {
            query_id: query_id.into(),
            segments,
            batch_size: None,
            stage: false,
            plan: physical_plan_to_bytes_with_extension_codec(plan, codec)?.to_vec(),
        })
    }

    /// The ticket with the broker's rows per batch.
    pub fn with_batch_size(mut self, batch_size: usize) -> Ticket {
        self.batch_size = Some(batch_size);
        self
    }

    /// The ticket of a shuffle stage.
    pub fn as_stage(mut self) -> Ticket {
        self.stage = true;
        self
    }

    pub fn encode(&self) -> Vec<u8> {
        let header = serde_json::to_vec(&Header {
            query_id: self.query_id.clone(),
            segments: self.segments.clone(),
            batch_size: self.batch_size,
            stage: self.stage,
        })
        .unwrap_or_default();
        let mut out = Vec::with_capacity(13 + header.len() + self.plan.len());
        out.extend_from_slice(MAGIC);
        out.push(TICKET_VERSION);
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&self.plan);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Ticket, String> {
        let rest = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or("not a Grove fragment ticket (bad magic)")?;
        let (&version, rest) = rest.split_first().ok_or("truncated ticket")?;
        if version != TICKET_VERSION {
            return Err(format!(
                "ticket version {version} (this build reads {TICKET_VERSION})"
            ));
        }
        if rest.len() < 4 {
            return Err("truncated ticket".into());
        }
        let (len, rest) = rest.split_at(4);
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if rest.len() < len {
            return Err("truncated ticket header".into());
        }
        let (header, plan) = rest.split_at(len);
        let header: Header =
            serde_json::from_slice(header).map_err(|e| format!("ticket header: {e}"))?;
        Ok(Ticket {
            query_id: header.query_id,
            segments: header.segments,
            batch_size: header.batch_size,
            stage: header.stage,
            plan: plan.to_vec(),
        })
    }
}

/// The largest Flight message accepted or sent (a batch of wide rows can be large).
pub const MAX_MESSAGE: usize = 256 << 20;
