//! Segment descriptors: what the metadata store knows about each published segment,
//! under `/grove/segments/{datasource}/{segment_id}`.

use grove_segment::SegmentId;
use grove_segment::format::{ColumnKind, Segment};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::metastore::MetaStore;

pub const SEGMENTS_PREFIX: &str = "/grove/segments/";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnSchema {
    pub name: String,
    pub kind: ColumnKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentDescriptor {
    pub id: SegmentId,
    /// How many partitions (0..n) make this segment's time chunk complete; appended
    /// partitions are numbered from n up and do not count.
    pub core_partitions: u32,
    pub size: u64,
    pub num_rows: u64,
    /// CRC-32 of the whole file, checked by whoever copies it.
    pub crc32: u32,
    /// Path of the file relative to the deep storage root.
    pub path: String,
    pub columns: Vec<ColumnSchema>,
    /// When it was published (ISO-8601).
    pub created: String,
    /// Unused segments are kept for reference but never queried.
    pub used: bool,
}

impl SegmentDescriptor {
    pub fn key(&self) -> String {
        key(&self.id)
    }

    /// The column list of an open segment, as a descriptor records it.
    pub fn columns_of(segment: &Segment) -> Vec<ColumnSchema> {
        segment
            .footer()
            .columns
            .iter()
            .map(|c| ColumnSchema {
                name: c.name.clone(),
                kind: c.kind,
            })
            .collect()
    }
}

pub fn key(id: &SegmentId) -> String {
    format!("{SEGMENTS_PREFIX}{}/{id}", id.datasource)
}

/// Every descriptor in the store, or of one datasource.
pub async fn load(
    store: &dyn MetaStore,
    datasource: Option<&str>,
) -> Result<Vec<SegmentDescriptor>> {
    let prefix = match datasource {
        Some(ds) => format!("{SEGMENTS_PREFIX}{ds}/"),
        None => SEGMENTS_PREFIX.to_string(),
    };
    store
        .range(&prefix)
        .await?
        .into_iter()
        .map(|kv| {
            serde_json::from_slice(&kv.value)
                .map_err(|e| Error::Store(format!("descriptor {} is unreadable: {e}", kv.key)))
        })
        .collect()
}
