//! What a running task asks of the overlord (Druid's task actions), and the
//! bookkeeping of appended partitions behind `segmentAllocate`.
//!
//! A task never picks versions or partition numbers itself: it asks
//! [`TaskAction::SegmentAllocate`] for every segment it writes, and the overlord takes
//! the time chunk's lock for it (on the first) and answers with the version and the
//! partition number. A task that replaces data writes a new version; one that appends
//! adds partitions to the version the chunk has. Either way the partition numbers of
//! a chunk's version come from one counter in the metadata store, so tasks appending
//! to one chunk at once, and the sub-tasks of one parallel task writing one new
//! version, never take the same segment id, and a version's partitions are numbered
//! densely from 0 (from above the published ones, for an append).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use grove_segment::Interval;
use grove_segment::id::format_millis;

use super::{decode, encode};
use crate::error::{Error, Result};
use crate::metastore::{MetaStore, Txn, compare_and_swap};
use crate::segments::SegmentDescriptor;
use crate::stream_offsets::{OffsetCommit, Offsets};

const ALLOCATIONS_PREFIX: &str = "/grove/indexer/allocations/";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum TaskAction {
    /// The version and partition number of the task's next segment of the time chunk
    /// `interval`, which the task locks (the first time). With a `sequence` (the
    /// replicas of a streaming task share one), the first allocation of a chunk is
    /// stored under the sequence, and every later one of that chunk answers it again:
    /// replicas build segments of the same ids.
    SegmentAllocate {
        interval: Interval,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sequence: Option<String>,
    },
    /// Publish these segments (stored in deep storage already) in one transaction
    /// that also checks the task still holds its locks, and with `offsets` moves the
    /// datasource's stream offsets from their start to their end (only if they stand
    /// at the start).
    SegmentTransactionalInsert {
        segments: Vec<SegmentDescriptor>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offsets: Option<OffsetCommit>,
    },
    /// A streaming task says where it is (`offsets`: the next to read per partition),
    /// whether it is paused, and whether it wants to hand off (it has read enough);
    /// the answer is a [`StreamControl`].
    StreamCheckpoint {
        offsets: Offsets,
        /// What it serves: the messages below these are in its queryable pieces.
        #[serde(default)]
        exposed: Offsets,
        /// The segments it announces.
        #[serde(default)]
        announced: Vec<String>,
        paused: bool,
        want_end: bool,
    },
    /// Whether historicals serve every one of these segments: a streaming task hands
    /// them off once they do. Answers a boolean.
    SegmentsServed { ids: Vec<String> },
    /// A parallel task starts its sub-task number `index` (from 0) on part of its
    /// input: `spec` is the sub-task's ingestion spec. Answers `{"task": id}`; asked
    /// again for the same index (an answer lost on the way), it answers the same id.
    SubTaskSubmit { index: usize, spec: Value },
    /// A parallel task asks how its sub-tasks fare: a list of [`SubTaskState`].
    SubTaskStatuses,
}

/// How a sub-task fares, as its supervisor sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubTaskState {
    pub id: String,
    /// Druid's `statusCode`: RUNNING, SUCCESS or FAILED.
    pub status_code: String,
    pub error_msg: Option<String>,
    pub row_stats: crate::task_status::RowStats,
    /// The segments it stored, once it succeeded.
    pub pushed: Vec<SegmentDescriptor>,
}

impl TaskAction {
    /// Druid's name of the action, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            TaskAction::SegmentAllocate { .. } => "segmentAllocate",
            TaskAction::SegmentTransactionalInsert { .. } => "segmentTransactionalInsert",
            TaskAction::SubTaskSubmit { .. } => "subTaskSubmit",
            TaskAction::SubTaskStatuses => "subTaskStatuses",
            TaskAction::StreamCheckpoint { .. } => "checkPointDataSourceMetadata",
            TaskAction::SegmentsServed { .. } => "segmentHandoffStatus",
        }
    }
}

/// What the supervisor tells a streaming task at a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "control", rename_all = "camelCase")]
pub enum StreamControl {
    /// Read on; rows of messages below `visible` (per partition) may be served.
    /// Replicas serve in the reverse of the order brokers ask them in (by task id):
    /// the last replica serves what every live replica has fetched, each other one
    /// only what every replica after it serves already, so the replica a query reads
    /// never serves more than the one a query falls back to. Empty: unchanged.
    Continue {
        #[serde(default)]
        visible: Offsets,
        /// The segments it may announce besides those it does: those every replica
        /// before it announces already (brokers ask the first one first, so a segment
        /// appears with the replica that serves least). `None`: any.
        #[serde(default)]
        announce: Option<Vec<String>>,
    },
    /// Stop reading and report where you stopped: the task group is ending, and its
    /// end is the furthest any replica has read.
    Pause,
    /// Read up to (not including) these offsets, then publish and hand off; serve
    /// what is below `visible` (as in `Continue`) meanwhile.
    End {
        offsets: Offsets,
        #[serde(default)]
        visible: Offsets,
        #[serde(default)]
        announce: Option<Vec<String>>,
    },
}

/// The answer to [`TaskAction::SegmentAllocate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    pub version: String,
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

/// Takes the next free partition number of `chunk` at `version`: at least `at_least`
/// (one past the highest partition published there) and above every number taken
/// before. Applies only while `guard`'s compares hold.
pub async fn next_partition(
    store: &dyn MetaStore,
    guard: &Txn,
    datasource: &str,
    chunk: Interval,
    version: &str,
    at_least: u32,
) -> Result<u32> {
    let key = allocation_key(datasource, chunk, version);
    let what = format!("the partitions of {chunk} in {datasource}");
    compare_and_swap(store, guard, &key, &what, |current| {
        let next: u32 = match current {
            Some(kv) => decode(&key, &kv.value)?,
            None => 0,
        };
        let taken = next.max(at_least);
        let after = taken.checked_add(1).ok_or_else(|| {
            Error::Invalid(format!(
                "time chunk {chunk} of {datasource} has no partition numbers left"
            ))
        })?;
        let ops = Txn::default()
            .put(key.clone(), encode("an allocation", &after)?)
            .ops;
        Ok((ops, taken))
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::stream_offsets::TopicPartition;

    /// Internally tagged enums buffer what they read, which leaves JSON keys as
    /// strings: offsets by partition must read back all the same.
    #[test]
    fn stream_actions_and_answers_read_back_what_was_written() {
        let at = |offsets: &[(&str, i32, i64)]| -> Offsets {
            offsets
                .iter()
                .map(|(t, p, o)| (TopicPartition::new(t, *p), *o))
                .collect()
        };
        let offsets = at(&[("t-1", 0, 5), ("t-2", 3, 7)]);
        let commit = OffsetCommit {
            datasource: "ds".into(),
            stream: "t-.*".into(),
            start: offsets.clone(),
            end: at(&[("t-1", 0, 6), ("t-2", 3, 9)]),
        };
        let actions = [
            TaskAction::StreamCheckpoint {
                offsets: offsets.clone(),
                exposed: at(&[("t-1", 0, 4)]),
                announced: vec!["s".into()],
                paused: true,
                want_end: false,
            },
            TaskAction::SegmentTransactionalInsert {
                segments: Vec::new(),
                offsets: Some(commit),
            },
        ];
        for action in actions {
            let text = serde_json::to_string(&action).unwrap();
            assert_eq!(
                serde_json::from_str::<TaskAction>(&text).unwrap(),
                action,
                "{text}"
            );
        }
        let end = StreamControl::End {
            visible: offsets.clone(),
            offsets,
            announce: Some(vec!["s".into()]),
        };
        let value = serde_json::to_value(&end).unwrap();
        assert_eq!(serde_json::from_value::<StreamControl>(value).unwrap(), end);
    }
    use crate::metastore::EmbeddedStore;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_take_distinct_dense_partitions_above_what_is_published() {
        let store: Arc<dyn MetaStore> = Arc::new(EmbeddedStore::in_memory());
        let chunk = Interval::new(0, 3_600_000).unwrap();
        let tasks = (0..8).map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                next_partition(store.as_ref(), &Txn::default(), "ds", chunk, "v1", 3).await
            })
        });
        let mut taken = Vec::new();
        for task in tasks {
            taken.push(task.await.unwrap().unwrap());
        }
        taken.sort();
        assert_eq!(taken, (3..11).collect::<Vec<u32>>());

        // Another version of the chunk counts on its own; partitions published above
        // the counter move it up.
        let none = Txn::default();
        let other = next_partition(store.as_ref(), &none, "ds", chunk, "v2", 0);
        assert_eq!(other.await.unwrap(), 0);
        let next = next_partition(store.as_ref(), &none, "ds", chunk, "v1", 20);
        assert_eq!(next.await.unwrap(), 20);
        let after = next_partition(store.as_ref(), &none, "ds", chunk, "v1", 0);
        assert_eq!(after.await.unwrap(), 21);
    }

    #[tokio::test]
    async fn a_lost_guard_reserves_nothing() {
        let store = EmbeddedStore::in_memory();
        let chunk = Interval::new(0, 1000).unwrap();
        let stale = Txn::default().when_revision("/grove/election/overlord", 42);
        let refused = next_partition(&store, &stale, "ds", chunk, "v", 0).await;
        assert!(refused.is_err());
        assert!(store.range(ALLOCATIONS_PREFIX).await.unwrap().is_empty());
    }
}
