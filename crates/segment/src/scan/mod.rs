//! Scanning segments inside DataFusion: [`SegmentScanExec`] and the filters it applies
//! itself ([`filter`]).

pub mod exec;
pub mod filter;

pub use exec::{ScanSegment, SegmentScanExec};
pub use filter::{IndexFilter, Pushed, classify};
