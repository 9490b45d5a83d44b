//! The indexing service (Druid's Overlord, MiddleManager and Peon).
//!
//! - The leading [`overlord::Overlord`] keeps every task's record
//!   ([`crate::task_status`]), grants its time-chunk locks ([`crate::locks`]), assigns
//!   it to a worker with a free slot, answers its [`actions`] (allocate a segment
//!   version and partitions, publish), and ends it when its worker reports an end or
//!   vanishes.
//! - A [`worker::Worker`] (Druid's MiddleManager) registers its slots under its lease,
//!   runs each task assigned to it in a child process, forwards that process's actions
//!   to the overlord, and reports how the task fares under its own lease, so that a
//!   worker's death is seen as the end of its tasks.
//! - A [`peon`] is that child process: it builds the task's segments, stores them in
//!   deep storage, and asks the overlord to publish them.
//!
//! All the state is in the metadata store, so a new overlord leader carries on where
//! the last one stopped:
//! - `/grove/indexer/tasks/{task}`: the records ([`crate::task_status`]);
//! - `/grove/indexer/assignments/{worker}/{task}`: an [`Assignment`], written by the
//!   overlord under its fence;
//! - `/grove/indexer/runners/{worker}/{task}`: a [`RunnerReport`], written by the
//!   worker under its lease;
//! - `/grove/indexer/allocations/{datasource}/{start}_{end}_{version}`: the next free
//!   appended partition of a time chunk ([`actions`]);
//! - locks under `/grove/locks/` ([`crate::locks`]).

pub mod actions;
pub mod overlord;
pub mod peon;
pub mod realtime;
pub mod worker;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::metastore::MetaStore;
use crate::segments::SegmentDescriptor;
use crate::task_status::{IngestionReport, TaskState};

pub const ASSIGNMENTS_PREFIX: &str = "/grove/indexer/assignments/";
pub const RUNNERS_PREFIX: &str = "/grove/indexer/runners/";

/// A task given to a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    pub task_id: String,
    /// The secret the task's actions carry: only the process the worker started for
    /// this assignment knows it.
    pub token: String,
    /// The task as submitted.
    pub payload: Value,
}

/// How a task fares on its worker, as the worker last reported it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunnerReport {
    /// `Running`, then `Success` or `Failed`.
    pub state: TaskState,
    pub report: IngestionReport,
    pub error_msg: Option<String>,
    /// A sub-task's segments, stored for its supervisor to publish.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pushed: Vec<SegmentDescriptor>,
}

impl RunnerReport {
    /// A task that ended FAILED with `message`, `report` saying how far it came.
    pub fn failed(message: String, mut report: IngestionReport) -> RunnerReport {
        report.error_msg = Some(message.clone());
        RunnerReport {
            state: TaskState::Failed,
            report,
            error_msg: Some(message),
            pushed: Vec::new(),
        }
    }
}

pub fn assignment_key(worker: &str, task: &str) -> String {
    format!("{ASSIGNMENTS_PREFIX}{worker}/{task}")
}

pub fn runner_key(worker: &str, task: &str) -> String {
    format!("{RUNNERS_PREFIX}{worker}/{task}")
}

/// The ingestion spec inside a task's payload: the task without the fields Druid adds
/// to every task (`id`, `groupId`, `resource`, `dataSource`).
/// A sub-task's payload is its supervisor's spec, narrowed to its share of the input,
/// with `"type": "single_phase_sub_task"` and `supervisorTaskId` (Druid's names).
pub fn ingestion_spec_of(payload: &Value) -> Value {
    let mut spec = payload.clone();
    if let Some(object) = spec.as_object_mut() {
        for field in [
            "id",
            "groupId",
            "resource",
            "dataSource",
            "supervisorTaskId",
        ] {
            object.remove(field);
        }
        if object.get("type").and_then(Value::as_str) == Some(SUB_TASK_TYPE) {
            object.insert("type".into(), "index_parallel".into());
        }
    }
    spec
}

/// Druid's type of the sub-tasks of a parallel `index_parallel` task.
pub const SUB_TASK_TYPE: &str = "single_phase_sub_task";

/// The `(worker, task)` a key under `prefix` names.
fn split_key<'a>(prefix: &str, key: &'a str) -> Option<(&'a str, &'a str)> {
    key.strip_prefix(prefix)?.split_once('/')
}

pub(crate) fn encode<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::Store(format!("encoding {what}: {e}")))
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(key: &str, value: &[u8]) -> Result<T> {
    serde_json::from_slice(value).map_err(|e| Error::Store(format!("{key} is unreadable: {e}")))
}

/// Every assignment: `(worker, assignment, revision)`.
pub async fn assignments(store: &dyn MetaStore) -> Result<Vec<(String, Assignment, u64)>> {
    let mut all = Vec::new();
    for kv in store.range(ASSIGNMENTS_PREFIX).await? {
        if let Some((worker, _)) = split_key(ASSIGNMENTS_PREFIX, &kv.key) {
            all.push((
                worker.to_string(),
                decode(&kv.key, &kv.value)?,
                kv.mod_revision,
            ));
        }
    }
    Ok(all)
}

/// Every runner report: `(worker, task, report)`.
pub async fn runner_reports(store: &dyn MetaStore) -> Result<Vec<(String, String, RunnerReport)>> {
    let mut all = Vec::new();
    for kv in store.range(RUNNERS_PREFIX).await? {
        if let Some((worker, task)) = split_key(RUNNERS_PREFIX, &kv.key) {
            all.push((
                worker.to_string(),
                task.to_string(),
                decode(&kv.key, &kv.value)?,
            ));
        }
    }
    Ok(all)
}

/// The report a worker keeps for `task`, if any.
pub async fn runner_report(
    store: &dyn MetaStore,
    worker: &str,
    task: &str,
) -> Result<Option<RunnerReport>> {
    let key = runner_key(worker, task);
    match store.get(&key).await? {
        Some(kv) => Ok(Some(decode(&key, &kv.value)?)),
        None => Ok(None),
    }
}
