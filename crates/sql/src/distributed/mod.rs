//! Queries over segments that live on other nodes: a broker's [`DistributedScanExec`]
//! sends plan fragments ([`Ticket`]s) to the historicals serving the segments, whose
//! [`FragmentService`] admits, runs and streams them back.
//!
//! Each file uses only those listed before it, so there is no import circle:
//!
//! - `leaf`: what Grove's leaves share (properties, no children).
//! - `broadcast`: a join's build side shipped as rows inside fragments (uses `leaf`).
//! - `admit`: what a historical agrees to run (operators, expressions, types, sizes;
//!   uses `broadcast`).
//! - `refs`: the broker's placeholder leaves: segments by id, a join's build side
//!   by position (uses `leaf`).
//! - `cache`: the broker's per-segment result cache.
//! - `codec`: Grove's leaves in datafusion-proto, both ways (uses `admit`,
//!   `broadcast`, `refs`).
//! - `ticket`: the wire format of a fragment request (uses `codec`).
//! - `fragment`: the historical's Flight service (uses `admit`, `codec`, `ticket`).
//! - `remote`: the broker's client, over Flight or in process (uses `cache`,
//!   `fragment`, `ticket`).
//! - `scan`: the broker's distributed scan, with placement and failover (uses
//!   `codec`, `refs`, `remote`, `ticket`).
//! - `pushdown`: the optimizer rule moving operators into fragments (uses `admit`,
//!   `scan`).

pub mod admit;
pub mod broadcast;
pub mod cache;
pub mod codec;
pub mod fragment;
pub mod leaf;
pub mod pushdown;
pub mod refs;
pub mod remote;
pub mod scan;
pub mod ticket;

#[cfg(test)]
mod tests;

pub use codec::{GroveCodec, SegmentSource};
pub use fragment::{FragmentService, LoadedSource, serve};
pub use pushdown::PushPartialAggregate;
pub use remote::{FragmentClient, FragmentError};
pub use scan::{DistributedScanExec, RemoteSegment};
pub use ticket::Ticket;
