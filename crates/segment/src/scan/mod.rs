//! Scanning segments inside DataFusion: [`SegmentScanExec`] and the filters it applies
//! itself ([`filter`]), the column statistics both it and a broker report
//! ([`stats`]), and grouping by a string dimension on its dictionary's keys
//! ([`dictionary_group`]).

pub mod dictionary_group;
pub mod exec;
pub mod filter;
pub mod stats;

pub use dictionary_group::DictionaryGroupBy;
pub use exec::{ScanSegment, SegmentScanExec, compact_dictionary};
pub use filter::{IndexFilter, Pushed, classify};
