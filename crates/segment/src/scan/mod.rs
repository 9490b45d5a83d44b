//! Scanning segments inside DataFusion: [`SegmentScanExec`] and the filters it applies
//! itself ([`filter`]), the column statistics both it and a broker report
//! ([`stats`]), and grouping by a string dimension on its dictionary's keys
//! ([`segment_group`]).

pub mod exec;
pub mod filter;
pub mod segment_group;
pub mod stats;

pub use exec::{ScanSegment, SegmentScanExec, compact_dictionary};
pub use filter::{IndexFilter, Pushed, classify};
pub use segment_group::SegmentGroupBy;
