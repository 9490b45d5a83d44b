//! # grove-sql
//!
//! SQL over Grove's segments, on DataFusion.
//!
//! # Layout
//! - [`table`]: [`table::DatasourceTable`], one DataFusion table per datasource, which
//!   turns a scan into the visible segments and a `SegmentScanExec`.
//! - [`catalog`]: reads segment descriptors from the metadata store into per-datasource
//!   timelines, opens segment files on demand, and serves `sys.segments`.
//! - [`engine`]: the session: refreshes the catalog and runs statements.
//! - [`output`]: renders results as a table, CSV or JSON.
//! - [`repl`]: the interactive `grove sql` shell.

pub mod catalog;
pub mod engine;
pub mod output;
pub mod repl;
pub mod table;

pub use engine::Engine;
