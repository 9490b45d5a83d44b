//! Queries over segments that live on other nodes: a broker's [`DistributedScanExec`]
//! sends plan fragments ([`Ticket`]s) to the historicals serving the segments, whose
//! [`FragmentService`] admits, runs and streams them back.
//!
//! Each file uses only those listed before it, so there is no import circle:
//!
//! - `leaf`: what Grove's leaves share (properties, no children).
//! - `refusal`: why a historical will not run a fragment, and the limit on types.
//! - `broadcast`: a join's build side shipped as rows inside fragments (uses `leaf`).
//! - `wire`: Grove nodes' schemas on the wire (uses `refusal`).
//! - `ticket`: the wire format of a fragment request.
//! - `slice`: the hash that splits a shuffle's rows into slices.
//! - `peers`: a shuffle stage's leaf, reading other historicals' fragments (uses
//!   `leaf`, `refusal`, `ticket`, `wire`).
//! - `admit`: what a historical agrees to run (operators, expressions, types, sizes;
//!   uses `broadcast`, `peers`, `refusal`).
//! - `refs`: the broker's placeholder leaves: segments by id, a join's build side
//!   by position (uses `leaf`).
//! - `cache`: the broker's per-segment result cache.
//! - `codec`: Grove's leaves in datafusion-proto, both ways (uses `admit`,
//!   `broadcast`, `peers`, `refs`, `wire`).
//! - `fragment`: the historical's Flight service (uses `admit`, `codec`, `peers`,
//!   `ticket`).
//! - `remote`: the broker's client, over Flight or in process, and a historical's
//!   peers (uses `cache`, `fragment`, `peers`, `ticket`).
//! - `scan`: the broker's distributed scan, with placement and failover, and the
//!   slices of its fragments a stage reads (uses `admit`, `codec`, `peers`, `refs`,
//!   `remote`, `slice`, `ticket`).
//! - `stage`: shuffle stages, joins of two large sides run on the historicals (uses
//!   `codec`, `peers`, `remote`, `scan`, `ticket`).
//! - `pushdown`: the optimizer rules moving operators into fragments, and joins into
//!   stages (uses `admit`, `scan`, `stage`).

pub mod admit;
pub mod broadcast;
pub mod cache;
pub mod codec;
pub mod fragment;
pub mod leaf;
pub mod peers;
pub mod pushdown;
pub mod refs;
pub mod refusal;
pub mod remote;
pub mod scan;
pub mod slice;
pub mod stage;
pub mod ticket;
pub mod wire;

#[cfg(test)]
mod tests;

pub use codec::{GroveCodec, SegmentSource};
pub use fragment::{FragmentService, LoadedSource, serve};
pub use pushdown::{PlanStages, PushPartialAggregate, ReduceProbes};
pub use remote::{FragmentClient, FragmentError, Peers};
pub use scan::{DistributedScanExec, RemoteSegment};
pub use ticket::Ticket;
