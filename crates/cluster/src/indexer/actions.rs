//! What a running task asks of the overlord (Druid's task actions), and the
//! bookkeeping of appended partitions behind `segmentAllocate`.
//!
//! A task never picks versions or partition numbers itself: it asks
//! [`TaskAction::SegmentAllocate`] once per time chunk it writes, and the overlord
//! takes the chunk's lock for it and answers with the version and the first partition
//! number its segments of that chunk use. A task that replaces data writes a new
//! version from partition 0. A task that appends adds partitions to the version the
//! chunk has; several may append to one chunk at once, so each is given its own block
//! of [`APPEND_BLOCK`] partition numbers, counted in the metadata store, and no two
//! ever write the same segment id (appended partitions are not core partitions:
//! gaps between blocks are harmless).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use grove_segment::Interval;
use grove_segment::id::format_millis;

use super::{decode, encode};
use crate::error::{Error, Result};
use crate::metastore::{MetaStore, Txn, before_attempt, guard_lost};
use crate::segments::SegmentDescriptor;

/// How many partition numbers one appending task may use in one time chunk.
pub const APPEND_BLOCK: u32 = 10_000;

const ALLOCATIONS_PREFIX: &str = "/grove/indexer/allocations/";

/// How often an allocation is tried again after losing a race to another.
const ATTEMPTS: usize = 16;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum TaskAction {
    /// Lock the time chunk `interval` and give the version and first partition the
    /// task's segments of it take.
    SegmentAllocate { interval: Interval },
    /// Publish these segments (stored in deep storage already) in one transaction
    /// that also checks the task still holds its locks.
    SegmentTransactionalInsert { segments: Vec<SegmentDescriptor> },
}

impl TaskAction {
    /// Druid's name of the action, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            TaskAction::SegmentAllocate { .. } => "segmentAllocate",
            TaskAction::SegmentTransactionalInsert { .. } => "segmentTransactionalInsert",
        }
    }
}

/// The answer to [`TaskAction::SegmentAllocate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    pub version: String,
    /// The first partition number; the task numbers its further segments of the chunk
    /// upwards from it.
    pub partition: u32,
    /// For an append: the chunk's core partition count, which appended segments
    /// declare. `None`: the task writes the version itself, and its segments of the
    /// chunk are its core.
    pub core_partitions: Option<u32>,
}

/// A task's request as it travels to the overlord.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRequest {
    pub task: String,
    pub token: String,
    pub action: TaskAction,
}

/// Carries tasks' actions to the leading overlord: in process, or over HTTP.
#[async_trait::async_trait]
pub trait ActionSink: Send + Sync {
    async fn perform(&self, request: &ActionRequest) -> Result<Value>;
}

fn allocation_key(datasource: &str, chunk: Interval, version: &str) -> String {
    format!(
        "{ALLOCATIONS_PREFIX}{datasource}/{}_{}_{version}",
        format_millis(chunk.start),
        format_millis(chunk.end)
    )
}

/// Reserves a block of [`APPEND_BLOCK`] appended partitions of `chunk` at `version`,
/// above `published_above` (one past the highest partition published there) and above
/// every block reserved before; returns its first partition. Applies only while
/// `guard`'s compares hold.
pub async fn reserve_append_block(
    store: &dyn MetaStore,
    guard: &Txn,
    datasource: &str,
    chunk: Interval,
    version: &str,
    published_above: u32,
) -> Result<u32> {
    let key = allocation_key(datasource, chunk, version);
    for attempt in 0..ATTEMPTS {
        before_attempt(attempt).await;
        let current = store.get(&key).await?;
        let (next, revision): (u32, u64) = match &current {
            Some(kv) => (decode(&key, &kv.value)?, kv.mod_revision),
            None => (0, 0),
        };
        let first = next.max(published_above);
        let end = first.checked_add(APPEND_BLOCK).ok_or_else(|| {
            Error::Invalid(format!(
                "time chunk {chunk} of {datasource} has no partition numbers left to append"
            ))
        })?;
        let txn = guard
            .compares_only()
            .when_revision(key.clone(), revision)
            .put(key.clone(), encode("an allocation", &end)?);
        if store.txn(txn).await? {
            return Ok(first);
        }
        if !store.txn(guard.compares_only()).await? {
            return Err(guard_lost());
        }
    }
    Err(Error::Busy(format!(
        "allocating partitions of {chunk} in {datasource} kept racing; try again"
    )))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::metastore::EmbeddedStore;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appenders_get_disjoint_blocks_above_what_is_published() {
        let store: Arc<dyn MetaStore> = Arc::new(EmbeddedStore::in_memory());
        let chunk = Interval::new(0, 3_600_000).unwrap();
        let tasks = (0..8).map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                reserve_append_block(store.as_ref(), &Txn::default(), "ds", chunk, "v1", 3).await
            })
        });
        let mut firsts = Vec::new();
        for task in tasks {
            firsts.push(task.await.unwrap().unwrap());
        }
        firsts.sort();
        let expected: Vec<u32> = (0..8).map(|i| 3 + i * APPEND_BLOCK).collect();
        assert_eq!(firsts, expected);

        // Another version of the chunk counts on its own; published partitions above
        // the reserved ones move the next block up.
        let none = Txn::default();
        let other = reserve_append_block(store.as_ref(), &none, "ds", chunk, "v2", 0);
        assert_eq!(other.await.unwrap(), 0);
        let above = 3 + 8 * APPEND_BLOCK + 5;
        let next = reserve_append_block(store.as_ref(), &none, "ds", chunk, "v1", above);
        assert_eq!(next.await.unwrap(), above);
    }

    #[tokio::test]
    async fn a_lost_guard_reserves_nothing() {
        let store = EmbeddedStore::in_memory();
        let chunk = Interval::new(0, 1000).unwrap();
        let stale = Txn::default().when_revision("/grove/election/overlord", 42);
        let refused = reserve_append_block(&store, &stale, "ds", chunk, "v", 0).await;
        assert!(refused.is_err());
        assert!(store.range(ALLOCATIONS_PREFIX).await.unwrap().is_empty());
    }
}
