//! Scanning segments inside DataFusion: [`SegmentScanExec`] and the filters it applies
//! itself ([`filter`]), and the column statistics both it and a broker report
//! ([`stats`]).

pub mod exec;
pub mod filter;
pub mod stats;

pub use exec::{ScanSegment, SegmentScanExec};
pub use filter::{IndexFilter, Pushed, classify};
