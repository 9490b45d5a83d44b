//! The on-disk segment format, version 1 (specified in `docs/segment-format.md`).
//!
//! ```text
//! 0        8        12       16                                   len-16   len-8  len-4  len
//! | magic  | version| 0      | column regions, 64-byte aligned... | footer | f_len  | f_crc | tail |
//! ```
//!
//! The footer is JSON ([`Footer`]): segment id, row count, and per column its type,
//! role, buffer locations, null count, min/max and the CRC-32 of its region. Columns
//! are verified (checksum and structure) the first time they are read, so opening a
//! segment touches only its footer.

mod footer;
mod reader;
mod writer;

pub use footer::{BufferRef, ColumnKind, ColumnLayout, ColumnMeta, ColumnRole, Footer, Stat};
pub use reader::{Segment, StringIndex};
pub use writer::{WrittenSegment, write_segment};

/// First bytes of every segment file.
pub const MAGIC: &[u8; 8] = b"GROVESEG";
/// Last bytes of every segment file: a file cut short loses them.
pub const TAIL_MAGIC: &[u8; 4] = b"GSEG";
/// The format version this build writes and the only one it reads.
pub const FORMAT_VERSION: u32 = 1;
/// Every buffer starts on this boundary so it can be viewed as an Arrow buffer in place.
pub const ALIGNMENT: u64 = 64;
const HEADER_LEN: u64 = 16;
/// footer length (u64) + footer CRC-32 (u32) + tail magic.
const TRAILER_LEN: u64 = 16;

/// The name of the time column every segment has.
pub const TIME_COLUMN: &str = "__time";

#[cfg(test)]
mod tests;
