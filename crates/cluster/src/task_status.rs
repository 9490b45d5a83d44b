//! A task as the indexing service tracks it, from submission to its end, and the JSON
//! Druid's task API shows for it (`TaskStatusPlus`, the shape the web console, pydruid
//! and `sys.tasks` read).
//!
//! Druid reports two codes. `statusCode` is the task's own: `RUNNING` until it ends
//! `SUCCESS` or `FAILED`. `runnerStatusCode` says where the runner has it while it
//! lasts: `WAITING` for its locks, `PENDING` for a worker slot, `RUNNING` on a worker,
//! and `NONE` once it has ended. A [`TaskState`] holds both at once.
//!
//! Records live under `/grove/indexer/tasks/{task_id}` from submission on, so that
//! tasks and their history survive restarts and a change of overlord. Every write is a
//! compare-and-swap on the record's revision inside the caller's guard transaction
//! (an overlord passes its election fence), so no update is lost and a deposed leader
//! changes nothing.

use rand::Rng;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use grove_segment::id::format_millis;

use crate::error::{Error, Result};
use crate::metastore::{MetaStore, Txn, compare_and_swap, guard_lost};
use crate::segments::SegmentDescriptor;
use crate::stream_offsets::Offsets;

pub const TASKS_PREFIX: &str = "/grove/indexer/tasks/";

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskState {
    /// Submitted; waiting for its time-chunk locks.
    Waiting,
    /// Holds its locks; waiting for a worker slot.
    Pending,
    /// Running on a worker.
    Running,
    Success,
    Failed,
}

impl TaskState {
    /// Druid's `statusCode`.
    pub fn status_code(self) -> &'static str {
        match self {
            TaskState::Waiting | TaskState::Pending | TaskState::Running => "RUNNING",
            TaskState::Success => "SUCCESS",
            TaskState::Failed => "FAILED",
        }
    }

    /// Druid's `runnerStatusCode`.
    pub fn runner_status_code(self) -> &'static str {
        match self {
            TaskState::Waiting => "WAITING",
            TaskState::Pending => "PENDING",
            TaskState::Running => "RUNNING",
            TaskState::Success | TaskState::Failed => "NONE",
        }
    }

    pub fn is_complete(self) -> bool {
        matches!(self, TaskState::Success | TaskState::Failed)
    }
}

/// Where a task runs: its worker's host and the port it answers on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskLocation {
    pub host: String,
    pub port: u16,
    pub tls_port: Option<u16>,
}

/// A task as stored by the indexing service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub id: String,
    pub group_id: String,
    /// Druid's task type: `index_parallel`, `kill`, `compact`, ...
    pub task_type: String,
    pub datasource: String,
    /// The task as submitted, with its `id` and `groupId` filled in.
    pub payload: Value,
    /// Milliseconds since the epoch.
    pub created_time: i64,
    /// When the task entered the queue (Druid shows the epoch for tasks it has not
    /// queued yet).
    pub queue_insertion_time: i64,
    pub state: TaskState,
    pub location: Option<TaskLocation>,
    /// The worker it was assigned to (its node id).
    #[serde(default)]
    pub worker: Option<String>,
    /// When it started running and when it ended, for its `duration`.
    pub started: Option<i64>,
    pub ended: Option<i64>,
    pub error_msg: Option<String>,
    /// The ingestion's progress, as its task last reported it.
    pub report: IngestionReport,
    /// The ids of the segments it published.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub published: Vec<String>,
    /// A sub-task: the parallel task it works for, which publishes what it stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor: Option<String>,
    /// A sub-task: the segments it stored in deep storage, for its supervisor.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pushed: Vec<SegmentDescriptor>,
    /// A parallel task: the ids of the sub-tasks it started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sub_tasks: Vec<String>,
}

impl TaskRecord {
    /// A task just submitted at `now` (milliseconds): waiting for its locks.
    pub fn submitted(
        id: &str,
        group_id: &str,
        task_type: &str,
        datasource: &str,
        payload: Value,
        now: i64,
    ) -> TaskRecord {
        TaskRecord {
            id: id.into(),
            group_id: group_id.into(),
            task_type: task_type.into(),
            datasource: datasource.into(),
            payload,
            created_time: now,
            queue_insertion_time: now,
            state: TaskState::Waiting,
            location: None,
            worker: None,
            started: None,
            ended: None,
            error_msg: None,
            report: IngestionReport::default(),
            published: Vec::new(),
            supervisor: None,
            pushed: Vec::new(),
            sub_tasks: Vec::new(),
        }
    }

    /// Druid's `TaskStatusPlus` for this task. `duration` is the run time in
    /// milliseconds once the task has ended, -1 before.
    pub fn status_plus(&self) -> Value {
        let duration = match (self.state.is_complete(), self.started, self.ended) {
            (true, Some(started), Some(ended)) => ended - started,
            (true, None, Some(ended)) => ended - self.created_time,
            _ => -1,
        };
        let location = match &self.location {
            Some(at) => json!({
                "host": at.host,
                "port": at.port,
                "tlsPort": at.tls_port.map_or(-1, i64::from),
            }),
            None => json!({ "host": null, "port": -1, "tlsPort": -1 }),
        };
        json!({
            "id": self.id,
            "groupId": self.group_id,
            "type": self.task_type,
            "createdTime": format_millis(self.created_time),
            "queueInsertionTime": format_millis(self.queue_insertion_time),
            "statusCode": self.state.status_code(),
            "status": self.state.status_code(),
            "runnerStatusCode": self.state.runner_status_code(),
            "duration": duration,
            "location": location,
            "dataSource": self.datasource,
            "errorMsg": self.error_msg,
        })
    }

    /// `GET /druid/indexer/v1/task/{id}/status`: `{"task": id, "status": TaskStatusPlus}`.
    pub fn status_response(&self) -> Value {
        json!({ "task": self.id, "status": self.status_plus() })
    }

    /// `GET /druid/indexer/v1/task/{id}`: `{"task": id, "payload": the task}`.
    pub fn payload_response(&self) -> Value {
        json!({ "task": self.id, "payload": self.payload })
    }
}

/// How far an ingestion task has come (Druid's `ingestionState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IngestionState {
    #[default]
    NotStarted,
    BuildSegments,
    SegmentAvailabilityWait,
    Completed,
}

/// Counts of the rows a task read (Druid's `rowStats` phases).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RowStats {
    pub processed: u64,
    pub processed_bytes: u64,
    pub processed_with_error: u64,
    /// Rows filtered out or outside the spec's intervals.
    pub thrown_away: u64,
    pub unparseable: u64,
}

/// What `GET /druid/indexer/v1/task/{id}/reports` tells of an ingestion task, while
/// it runs and after.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IngestionReport {
    pub state: IngestionState,
    pub build_segments: RowStats,
    pub error_msg: Option<String>,
    /// The published segments were seen served before the task reported success.
    pub segment_availability_confirmed: bool,
    pub segment_availability_wait_time_ms: u64,
    /// A streaming task: where it stands in its partitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamProgress>,
}

/// Where a streaming task stands, as it last reported.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamProgress {
    /// The next offset it reads, per partition.
    pub current: Offsets,
    /// Each partition's high watermark when last fetched.
    pub latest: Offsets,
    /// Where it stops, once its supervisor said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<Offsets>,
    pub paused: bool,
    /// Why its last fetch failed, if it did (the broker is down, the topic is gone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl IngestionReport {
    /// Druid's report document: `{"ingestionStatsAndErrors": {...}}`. Grove does not
    /// determine partitions in a phase of its own, so that phase counts nothing.
    pub fn response(&self, task_id: &str) -> Value {
        json!({
            "ingestionStatsAndErrors": {
                "type": "ingestionStatsAndErrors",
                "taskId": task_id,
                "payload": {
                    "ingestionState": self.state,
                    "unparseableEvents": {},
                    "rowStats": {
                        "determinePartitions": RowStats::default(),
                        "buildSegments": self.build_segments,
                    },
                    "errorMsg": self.error_msg,
                    "segmentAvailabilityConfirmed": self.segment_availability_confirmed,
                    "segmentAvailabilityWaitTimeMs": self.segment_availability_wait_time_ms,
                }
            }
        })
    }
}

pub fn task_key(id: &str) -> String {
    format!("{TASKS_PREFIX}{id}")
}

fn encode(record: &TaskRecord) -> Result<Vec<u8>> {
    serde_json::to_vec(record)
        .map_err(|e| Error::Store(format!("encoding task {}: {e}", record.id)))
}

fn decode(key: &str, value: &[u8]) -> Result<TaskRecord> {
    serde_json::from_slice(value).map_err(|e| Error::Store(format!("task record {key}: {e}")))
}

/// Stores a newly submitted task, if `guard`'s compares hold; a task with the same id
/// is an error.
pub async fn create(store: &dyn MetaStore, guard: &Txn, record: &TaskRecord) -> Result<()> {
    let key = task_key(&record.id);
    let txn = guard.compares_only().create(key.clone(), encode(record)?);
    if store.txn(txn).await? {
        return Ok(());
    }
    if !store.txn(guard.compares_only()).await? {
        return Err(guard_lost());
    }
    Err(Error::Invalid(format!(
        "a task with id {} exists",
        record.id
    )))
}

/// The stored task and its revision.
pub async fn get(store: &dyn MetaStore, id: &str) -> Result<Option<(TaskRecord, u64)>> {
    let key = task_key(id);
    match store.get(&key).await? {
        Some(kv) => Ok(Some((decode(&key, &kv.value)?, kv.mod_revision))),
        None => Ok(None),
    }
}

/// Every stored task, in id order.
pub async fn list(store: &dyn MetaStore) -> Result<Vec<TaskRecord>> {
    store
        .range(TASKS_PREFIX)
        .await?
        .iter()
        .map(|kv| decode(&kv.key, &kv.value))
        .collect()
}

/// Applies `change` to the stored task and writes it back if neither the record nor
/// `guard`'s compares changed meanwhile; on a lost race, applies it again to a fresh
/// read. Returns the record as written.
pub async fn update(
    store: &dyn MetaStore,
    guard: &Txn,
    id: &str,
    mut change: impl FnMut(&mut TaskRecord) -> Result<()>,
) -> Result<TaskRecord> {
    let key = task_key(id);
    compare_and_swap(store, guard, &key, &format!("task {id}"), |current| {
        let Some(kv) = current else {
            return Err(Error::Invalid(format!("no task {id}")));
        };
        let mut record = decode(&key, &kv.value)?;
        change(&mut record)?;
        let ops = Txn::default().put(key.clone(), encode(&record)?).ops;
        Ok((ops, record))
    })
    .await
}

/// A new task id in Druid's form: `{type}_{datasource}_{8 random letters}_{created
/// time}`, e.g. `index_parallel_wikipedia_biahcbmf_2023-06-26T21:08:05.216Z`.
pub fn new_task_id(
    task_type: &str,
    datasource: &str,
    created_time: i64,
    rng: &mut impl Rng,
) -> String {
    let letters: String = (0..8)
        .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
        .collect();
    format!(
        "{task_type}_{datasource}_{letters}_{}",
        format_millis(created_time)
    )
}

#[cfg(test)]
mod tests {
    use grove_segment::id::parse_instant;

    use super::*;

    fn millis(iso: &str) -> i64 {
        parse_instant(iso).unwrap()
    }

    /// The first waiting task of the `waitingTasks` example in Druid's tasks API
    /// documentation (docs/api-reference/tasks-api.md).
    #[test]
    fn a_waiting_task_is_shown_as_druids_documentation_shows_it() {
        let id = "index_parallel_wikipedia_auto_biahcbmf_2023-06-26T21:08:05.216Z";
        let record = TaskRecord {
            datasource: "wikipedia_auto".into(),
            created_time: millis("2023-06-26T21:08:05.217Z"),
            queue_insertion_time: 0,
            ..waiting(id)
        };
        let documented: Value = serde_json::from_str(
            r#"{
                "id": "index_parallel_wikipedia_auto_biahcbmf_2023-06-26T21:08:05.216Z",
                "groupId": "index_parallel_wikipedia_auto_biahcbmf_2023-06-26T21:08:05.216Z",
                "type": "index_parallel",
                "createdTime": "2023-06-26T21:08:05.217Z",
                "queueInsertionTime": "1970-01-01T00:00:00.000Z",
                "statusCode": "RUNNING",
                "status": "RUNNING",
                "runnerStatusCode": "WAITING",
                "duration": -1,
                "location": { "host": null, "port": -1, "tlsPort": -1 },
                "dataSource": "wikipedia_auto",
                "errorMsg": null
            }"#,
        )
        .unwrap();
        assert_eq!(record.status_plus(), documented);
    }

    /// The first task of the `completeTasks` example in the same page: it ran 17897 ms
    /// on localhost:8101.
    #[test]
    fn a_complete_task_is_shown_as_druids_documentation_shows_it() {
        let created = millis("2023-06-22T22:11:37.012Z");
        let record = TaskRecord {
            group_id: "query-223549f8-b993-4483-b028-1b0d54713cad".into(),
            task_type: "query_worker".into(),
            datasource: "wikipedia_api".into(),
            created_time: created,
            queue_insertion_time: 0,
            state: TaskState::Success,
            location: Some(TaskLocation {
                host: "localhost".into(),
                port: 8101,
                tls_port: None,
            }),
            started: Some(created + 100),
            ended: Some(created + 100 + 17897),
            ..waiting("query-223549f8-b993-4483-b028-1b0d54713cad-worker0_0")
        };
        let documented: Value = serde_json::from_str(
            r#"{
                "id": "query-223549f8-b993-4483-b028-1b0d54713cad-worker0_0",
                "groupId": "query-223549f8-b993-4483-b028-1b0d54713cad",
                "type": "query_worker",
                "createdTime": "2023-06-22T22:11:37.012Z",
                "queueInsertionTime": "1970-01-01T00:00:00.000Z",
                "statusCode": "SUCCESS",
                "status": "SUCCESS",
                "runnerStatusCode": "NONE",
                "duration": 17897,
                "location": { "host": "localhost", "port": 8101, "tlsPort": -1 },
                "dataSource": "wikipedia_api",
                "errorMsg": null
            }"#,
        )
        .unwrap();
        assert_eq!(record.status_plus(), documented);
        let response = record.status_response();
        assert_eq!(response["task"], json!(record.id));
        assert_eq!(response["status"], documented);
    }

    /// The completion report example of the same page.
    #[test]
    fn a_report_is_shown_as_druids_documentation_shows_it() {
        let report = IngestionReport {
            state: IngestionState::Completed,
            build_segments: RowStats {
                processed: 39244,
                processed_bytes: 17106256,
                ..RowStats::default()
            },
            error_msg: None,
            segment_availability_confirmed: false,
            segment_availability_wait_time_ms: 0,
            stream: None,
        };
        let documented: Value = serde_json::from_str(
            r#"{
                "ingestionStatsAndErrors": {
                    "type": "ingestionStatsAndErrors",
                    "taskId": "query-52a8aafe-7265-4427-89fe-dc51275cc470",
                    "payload": {
                        "ingestionState": "COMPLETED",
                        "unparseableEvents": {},
                        "rowStats": {
                            "determinePartitions": {
                                "processed": 0, "processedBytes": 0, "processedWithError": 0,
                                "thrownAway": 0, "unparseable": 0
                            },
                            "buildSegments": {
                                "processed": 39244, "processedBytes": 17106256,
                                "processedWithError": 0, "thrownAway": 0, "unparseable": 0
                            }
                        },
                        "errorMsg": null,
                        "segmentAvailabilityConfirmed": false,
                        "segmentAvailabilityWaitTimeMs": 0
                    }
                }
            }"#,
        )
        .unwrap();
        assert_eq!(
            report.response("query-52a8aafe-7265-4427-89fe-dc51275cc470"),
            documented
        );
    }

    fn waiting(id: &str) -> TaskRecord {
        let payload = json!({"type": "index_parallel", "id": id});
        TaskRecord::submitted(id, id, "index_parallel", "events", payload, 1_000)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_are_created_once_updated_without_lost_writes_and_fenced() {
        use crate::metastore::EmbeddedStore;

        let store = std::sync::Arc::new(EmbeddedStore::in_memory());
        let open = Txn::default();
        create(store.as_ref(), &open, &waiting("t1")).await.unwrap();
        let again = create(store.as_ref(), &open, &waiting("t1"))
            .await
            .unwrap_err();
        assert!(again.to_string().contains("exists"), "{again}");
        create(store.as_ref(), &open, &waiting("t0")).await.unwrap();

        // Two writers on two threads counting rows at once: every increment lands.
        let writers: Vec<_> = (0..2)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    for _ in 0..200 {
                        update(store.as_ref(), &Txn::default(), "t1", |r| {
                            r.report.build_segments.processed += 1;
                            Ok(())
                        })
                        .await
                        .unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
        let (record, _) = get(store.as_ref(), "t1").await.unwrap().unwrap();
        assert_eq!(record.report.build_segments.processed, 400);

        // A writer whose guard no longer holds changes nothing.
        store.put("/leader", b"me".to_vec()).await.unwrap();
        let stale = Txn::default().when_revision("/leader", 1);
        let err = update(store.as_ref(), &stale, "t1", |r| {
            r.state = TaskState::Failed;
            Ok(())
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("guard"), "{err}");
        assert!(
            create(store.as_ref(), &stale, &waiting("t2"))
                .await
                .is_err()
        );
        let ids: Vec<String> = list(store.as_ref())
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, ["t0", "t1"]);
        assert_eq!(
            get(store.as_ref(), "t1").await.unwrap().unwrap().0.state,
            TaskState::Waiting
        );
        assert!(get(store.as_ref(), "t9").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn records_survive_reopening_the_embedded_store() {
        use crate::metastore::EmbeddedStore;

        let dir = tempfile::tempdir().unwrap();
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            create(&store, &Txn::default(), &waiting("t1"))
                .await
                .unwrap();
            update(&store, &Txn::default(), "t1", |r| {
                r.state = TaskState::Success;
                r.ended = Some(5_000);
                Ok(())
            })
            .await
            .unwrap();
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let (record, _) = get(&store, "t1").await.unwrap().unwrap();
        assert_eq!(record.state, TaskState::Success);
        assert_eq!(record.status_plus()["duration"], json!(4_000));
    }

    #[test]
    fn every_state_maps_to_druids_two_codes() {
        let codes: Vec<(&str, &str)> = [
            TaskState::Waiting,
            TaskState::Pending,
            TaskState::Running,
            TaskState::Success,
            TaskState::Failed,
        ]
        .into_iter()
        .map(|s| (s.status_code(), s.runner_status_code()))
        .collect();
        assert_eq!(
            codes,
            [
                ("RUNNING", "WAITING"),
                ("RUNNING", "PENDING"),
                ("RUNNING", "RUNNING"),
                ("SUCCESS", "NONE"),
                ("FAILED", "NONE"),
            ]
        );
    }

    #[test]
    fn task_ids_take_druids_form() {
        let mut rng = rand::rng();
        let created = millis("2023-06-26T21:08:05.216Z");
        let id = new_task_id("index_parallel", "wikipedia", created, &mut rng);
        let (head, time) = id.rsplit_once('_').unwrap();
        assert_eq!(time, "2023-06-26T21:08:05.216Z");
        let (prefix, letters) = head.rsplit_once('_').unwrap();
        assert_eq!(prefix, "index_parallel_wikipedia");
        assert_eq!(letters.len(), 8);
        assert!(letters.chars().all(|c| c.is_ascii_lowercase()), "{letters}");
        assert_ne!(
            id,
            new_task_id("index_parallel", "wikipedia", created, &mut rng)
        );
    }
}
