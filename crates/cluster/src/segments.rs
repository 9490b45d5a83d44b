//! Segment descriptors: what the metadata store knows about each published segment,
//! under `/grove/segments/{datasource}/{segment_id}`.

use std::collections::BTreeSet;

use grove_segment::SegmentId;
use grove_segment::format::{ColumnKind, ColumnRole, Segment, Stat};
use grove_segment::scan::stats::ColumnFacts;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::metastore::MetaStore;

pub const SEGMENTS_PREFIX: &str = "/grove/segments/";
pub const TASKS_PREFIX: &str = "/grove/tasks/";

/// The key that commits a task that published in several transactions.
pub fn commit_key(task: &str) -> String {
    format!("{TASKS_PREFIX}{task}")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnSchema {
    pub name: String,
    pub kind: ColumnKind,
    /// What the segment's footer records of the column, for a broker's planner
    /// (absent in descriptors written before they were kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub null_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<Stat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Stat>,
    /// Distinct values of a string column (its dictionary's size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distinct: Option<u64>,
    /// Whether it is the time, a dimension or a metric (absent in descriptors written
    /// before roles were kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<ColumnRole>,
}

impl ColumnSchema {
    /// What the planner learns of the column; `None` when the descriptor predates
    /// column statistics.
    pub fn facts(&self) -> Option<ColumnFacts<'_>> {
        Some(ColumnFacts {
            kind: self.kind,
            null_count: self.null_count?,
            min: self.min.as_ref(),
            max: self.max.as_ref(),
            distinct: self.distinct,
        })
    }
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
    /// Set when the task published in several transactions: the segment exists only
    /// once that task's commit key (`/grove/tasks/{task}`) does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
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
            .map(|c| {
                let facts = ColumnFacts::of(c);
                ColumnSchema {
                    name: c.name.clone(),
                    kind: c.kind,
                    null_count: Some(facts.null_count),
                    min: facts.min.cloned(),
                    max: facts.max.cloned(),
                    distinct: facts.distinct,
                    role: Some(c.role),
                }
            })
            .collect()
    }
}

pub fn key(id: &SegmentId) -> String {
    format!("{SEGMENTS_PREFIX}{}/{id}", id.datasource)
}

/// Every published descriptor in the store, or of one datasource (descriptors of
/// tasks that never committed are left out).
pub async fn load(
    store: &dyn MetaStore,
    datasource: Option<&str>,
) -> Result<Vec<SegmentDescriptor>> {
    let prefix = match datasource {
        Some(ds) => format!("{SEGMENTS_PREFIX}{ds}/"),
        None => SEGMENTS_PREFIX.to_string(),
    };
    let all: Vec<SegmentDescriptor> = store
        .range(&prefix)
        .await?
        .iter()
        .map(|kv| decode(&kv.key, &kv.value))
        .collect::<Result<_>>()?;
    let committed = if all.iter().any(|d| d.commit.is_some()) {
        committed_tasks(store).await?
    } else {
        BTreeSet::new()
    };
    Ok(all
        .into_iter()
        .filter(|d| is_published(d, &committed))
        .collect())
}

pub fn decode(key: &str, value: &[u8]) -> Result<SegmentDescriptor> {
    serde_json::from_slice(value)
        .map_err(|e| Error::Store(format!("descriptor {key} is unreadable: {e}")))
}

/// Tasks whose commit key exists.
pub async fn committed_tasks(store: &dyn MetaStore) -> Result<BTreeSet<String>> {
    Ok(store
        .range(TASKS_PREFIX)
        .await?
        .into_iter()
        .filter_map(|kv| kv.key.strip_prefix(TASKS_PREFIX).map(String::from))
        .collect())
}

/// Whether a descriptor is part of the published data, given the committed tasks.
pub fn is_published(descriptor: &SegmentDescriptor, committed: &BTreeSet<String>) -> bool {
    descriptor
        .commit
        .as_ref()
        .is_none_or(|task| committed.contains(task))
}
