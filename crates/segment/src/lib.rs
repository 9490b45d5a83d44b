//! # grove-segment
//!
//! Immutable, time-partitioned, columnar segments and everything that makes or reads
//! them without knowing about a cluster.
//!
//! # Layout
//! - [`id`]: [`Interval`] and [`SegmentId`], the names of things.
//! - [`granularity`]: how time is cut into segment chunks and rollup buckets.
//! - [`period`]: ISO-8601 periods, as rules and streaming specs write durations.
//! - [`calendar`]: periods laid on a time zone's calendar from an origin: Druid's
//!   period granularities and time functions.
//! - [`format`]: the segment file: [`format::write_segment`] and the memory-mapped
//!   [`format::Segment`] reader with its bitmap indexes.
//! - [`timeline`]: Druid's versioned timeline, deciding which segments are visible.
//! - [`spec`]: Druid's native batch ingestion spec, parsed and checked.
//! - [`ingest`]: input files -> rows with their time -> time chunks -> segment files.
//! - [`scan`]: [`scan::SegmentScanExec`], the DataFusion leaf that reads segments,
//!   with the time ranges and bitmap-index filters it applies itself.
//!
//! Rows flow [`spec`] -> [`ingest`] -> [`format::write_segment`]; queries flow
//! [`timeline`] -> [`format::Segment`] -> [`scan`].

pub mod calendar;
pub mod error;
pub mod format;
pub mod granularity;
pub mod id;
pub mod ingest;
pub mod period;
pub mod scan;
pub mod spec;
pub mod sum;
pub mod timeline;

pub use error::{Error, Result};
pub use id::{Interval, SegmentId};
