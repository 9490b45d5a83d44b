//! The overlord: one leader at a time, elected on the metadata store, takes tasks,
//! locks their time chunks, assigns them to workers, answers their actions, and ends
//! them. Every write it makes carries its election fence, so a deposed leader changes
//! nothing; everything it knows is in the store, so a new leader reads it back and
//! carries on (see the [module](super) documentation for the keys).
//!
//! A task's life, one step per [`Overlord::tick`]:
//! - **Waiting**: a task that replaces given `intervals` takes an exclusive lock on
//!   them, all or none. A task without intervals (or appending) locks each time chunk
//!   when it allocates it, while it runs.
//! - **Pending**: assigned to the live worker with the most free slots (of its
//!   category, if the task's context names one).
//! - **Running**: ends when its worker reports an end, or when the worker's lease
//!   runs out. After publishing, a task whose spec says
//!   `awaitSegmentAvailabilityTimeoutMillis` stays running until historicals serve
//!   its segments or that time passes.
//! - **Success/Failed**: its locks are released and its assignment removed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};

use grove_segment::spec::IngestionSpec;
use grove_segment::timeline::Timeline;
use grove_segment::{Interval, SegmentId};

use super::actions::{
    ActionRequest, ActionSink, Allocation, SubTaskState, TaskAction, next_partition,
};
use super::{Assignment, RunnerReport, SUB_TASK_TYPE, assignment_key, encode};
use crate::assignments;
use crate::election::{CAMPAIGN_EVERY, Election, LEADER_LEASE_TTL};
use crate::error::{Error, Result};
use crate::locks::{self, BATCH_PRIORITY, Grant, LockKind, LockRequest, MAX_LOCKS_PER_TASK};
use crate::metastore::{MetaStore, Txn};
use crate::nodes::{self, NodeInfo, Role};
use crate::segments::{self, SegmentDescriptor};
use crate::session::{Session, SessionWork, keep_session};
use crate::task;
use crate::task_status::{self, IngestionState, TaskLocation, TaskRecord, TaskState, new_task_id};

/// Druid's message for a task stopped through the API.
pub const SHUTDOWN_MESSAGE: &str = "Shutdown request from user";

#[derive(Debug, Clone)]
pub struct OverlordSettings {
    /// TTL of the overlord's lease: a dead leader is replaced after about this.
    pub lease_ttl: Duration,
    /// Time between scheduling passes (a submission or an action starts one sooner).
    pub tick: Duration,
    /// How long `segmentAllocate` waits for a lock held by others (Druid's
    /// `taskLockTimeout`).
    pub lock_timeout: Duration,
}

impl Default for OverlordSettings {
    fn default() -> Self {
        OverlordSettings {
            lease_ttl: LEADER_LEASE_TTL,
            tick: Duration::from_millis(250),
            lock_timeout: Duration::from_secs(300),
        }
    }
}

/// What `/status` and `/druid/indexer/v1/leader` show.
#[derive(Debug, Default, Clone, Serialize)]
pub struct OverlordStatus {
    pub node_id: String,
    pub is_leader: bool,
    /// The leader's node id, as last seen.
    pub leader: Option<String>,
    pub last_error: Option<String>,
}

pub struct Overlord {
    store: Arc<dyn MetaStore>,
    node: NodeInfo,
    election: Election,
    settings: OverlordSettings,
    status: RwLock<OverlordStatus>,
    /// This node's fence while it leads.
    fence: watch::Sender<Option<u64>>,
    wake: Notify,
    /// One at a time per task: its actions, its shutdown, its end.
    task_turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Each running task's first allocation in each time chunk, so that its later
    /// segments there need neither the chunk's segments nor a version chosen again.
    allocations: Mutex<HashMap<(String, Interval), ChunkAllocation>>,
    /// The tasks that have not ended, as this leader knows them: every record is read
    /// once per term (`loaded`), then its own submissions and ends keep the set true,
    /// so a pass reads the live tasks only, never the whole history.
    active: Mutex<Active>,
}

/// How a task writes one time chunk.
#[derive(Debug, Clone)]
struct ChunkAllocation {
    version: String,
    /// Partitions below this are published.
    published_above: u32,
    /// For an append: the chunk's core partition count.
    core_partitions: Option<u32>,
}

#[derive(Default)]
struct Active {
    loaded: bool,
    ids: BTreeSet<String>,
}

/// The parts of a submitted task the overlord acts on.
struct TaskSpec {
    spec: IngestionSpec,
    priority: i32,
    category: Option<String>,
}

impl Overlord {
    pub fn new(store: Arc<dyn MetaStore>, node: NodeInfo, settings: OverlordSettings) -> Self {
        Overlord {
            election: Election::new(store.clone(), "overlord", &node.id),
            status: RwLock::new(OverlordStatus {
                node_id: node.id.clone(),
                ..OverlordStatus::default()
            }),
            store,
            node,
            settings,
            fence: watch::channel(None).0,
            wake: Notify::new(),
            task_turns: Mutex::new(HashMap::new()),
            allocations: Mutex::new(HashMap::new()),
            active: Mutex::new(Active::default()),
        }
    }

    fn active(&self) -> std::sync::MutexGuard<'_, Active> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn store(&self) -> &Arc<dyn MetaStore> {
        &self.store
    }

    pub fn status(&self) -> OverlordStatus {
        self.status.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// The leader's HTTP address, as registered (this node's own while it leads).
    pub async fn leader_address(&self) -> Result<Option<String>> {
        let Some(leader) = self.status().leader else {
            return Ok(None);
        };
        Ok(nodes::live(self.store.as_ref())
            .await?
            .into_iter()
            .find(|n| n.role == Role::Overlord && n.id == leader)
            .map(|n| n.http_address))
    }

    fn update(&self, f: impl FnOnce(&mut OverlordStatus)) {
        if let Ok(mut s) = self.status.write() {
            f(&mut s);
        }
    }

    /// The guard of this node's writes, while it leads.
    fn guard(&self) -> Result<Txn> {
        match *self.fence.borrow() {
            Some(fence) => Ok(self.election.guard(fence)),
            None => Err(Error::Busy(format!(
                "overlord {} is not the leader; ask the leader ({})",
                self.node.id,
                self.status()
                    .leader
                    .as_deref()
                    .unwrap_or("none elected yet")
            ))),
        }
    }

    fn turn(&self, task: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = self.task_turns.lock().unwrap_or_else(|e| e.into_inner());
        turns.entry(task.to_string()).or_default().clone()
    }

    fn forget_turn(&self, task: &str) {
        let mut turns = self.task_turns.lock().unwrap_or_else(|e| e.into_inner());
        turns.remove(task);
    }

    // -----------------------------------------------------------------------------
    // The task API
    // -----------------------------------------------------------------------------

    /// `POST /druid/indexer/v1/task`: checks and stores the task; returns its id.
    pub async fn submit(&self, mut payload: Value) -> Result<String> {
        let guard = self.guard()?;
        let Some(object) = payload.as_object_mut() else {
            return Err(Error::Invalid("a task must be a JSON object".into()));
        };
        let task_type = match object.get("type") {
            Some(Value::String(t)) => t.clone(),
            Some(_) => return Err(Error::Invalid("task.type must be a string".into())),
            None => return Err(Error::Invalid("task.type is missing".into())),
        };
        if task_type == SUB_TASK_TYPE {
            return Err(Error::Invalid(format!(
                "{SUB_TASK_TYPE} tasks are started by their index_parallel task only"
            )));
        }
        let parsed = task_spec(&Value::Object(object.clone()))?;
        let now = chrono::Utc::now().timestamp_millis();
        let id = match object.get("id") {
            None | Some(Value::Null) => {
                new_task_id(&task_type, &parsed.spec.datasource, now, &mut rand::rng())
            }
            Some(Value::String(id)) => check_task_id(id)?,
            Some(_) => return Err(Error::Invalid("task.id must be a string".into())),
        };
        let group_id = match object.get("groupId") {
            None | Some(Value::Null) => id.clone(),
            Some(Value::String(g)) => check_task_id(g)?,
            Some(_) => return Err(Error::Invalid("task.groupId must be a string".into())),
        };
        object.insert("id".into(), id.clone().into());
        object.insert("groupId".into(), group_id.clone().into());
        let record = TaskRecord::submitted(
            &id,
            &group_id,
            &task_type,
            &parsed.spec.datasource,
            payload,
            now,
        );
        match task_status::create(self.store.as_ref(), &guard, &record).await {
            Err(Error::Invalid(_)) => {
                return Err(Error::Invalid(format!("Task [{id}] already exists!")));
            }
            other => other?,
        }
        tracing::info!("task {id} submitted");
        self.active().ids.insert(id.clone());
        self.wake.notify_one();
        Ok(id)
    }

    /// `POST /druid/indexer/v1/task/{id}/shutdown`: a task that has not ended fails
    /// now, publishes nothing, and its worker stops its process.
    pub async fn shutdown(&self, id: &str) -> Result<()> {
        let guard = self.guard()?;
        let turn = self.turn(id);
        let _turn = turn.lock().await;
        let Some((record, _)) = task_status::get(self.store.as_ref(), id).await? else {
            return Err(Error::Invalid(format!(
                "Cannot find any task with id: [{id}]"
            )));
        };
        if record.state.is_complete() {
            return Ok(());
        }
        tracing::info!("task {id}: shutdown requested");
        self.finish(
            &guard,
            &record,
            TaskState::Failed,
            Some(SHUTDOWN_MESSAGE.into()),
            None,
        )
        .await?;
        self.wake.notify_one();
        Ok(())
    }

    // -----------------------------------------------------------------------------
    // Task actions
    // -----------------------------------------------------------------------------

    /// Performs a running task's action, once the request proves it comes from the
    /// process its worker started for it.
    pub async fn perform(&self, request: &ActionRequest) -> Result<Value> {
        let guard = self.guard()?;
        let turn = self.turn(&request.task);
        let _turn = turn.lock().await;
        let record = self.running_task(request).await?;
        let spec = task_spec(&record.payload)?;
        let answer = match &request.action {
            TaskAction::SegmentAllocate { interval } => {
                let allocation = self.allocate(&guard, &record, &spec, *interval).await?;
                serde_json::to_value(allocation).map_err(|e| Error::Store(e.to_string()))?
            }
            TaskAction::SegmentTransactionalInsert { segments } => {
                self.publish(&guard, &record, segments.clone()).await?;
                json!({ "success": true })
            }
            TaskAction::SubTaskSubmit { index, spec } => {
                let id = self
                    .submit_sub_task(&guard, &record, *index, spec.clone())
                    .await?;
                json!({ "task": id })
            }
            TaskAction::SubTaskStatuses => {
                let states = self.sub_task_states(&record).await?;
                serde_json::to_value(states).map_err(|e| Error::Store(e.to_string()))?
            }
        };
        Ok(answer)
    }

    /// Stores a sub-task of the parallel task `supervisor` reading its share of the
    /// input (`spec`); it shares the supervisor's group, and so its locks and versions.
    async fn submit_sub_task(
        &self,
        guard: &Txn,
        supervisor: &TaskRecord,
        index: usize,
        spec: Value,
    ) -> Result<String> {
        if supervisor.supervisor.is_some() {
            return Err(Error::Invalid("a sub-task cannot start sub-tasks".into()));
        }
        match supervisor.sub_tasks.get(index) {
            Some(started) => return Ok(started.clone()),
            None if index != supervisor.sub_tasks.len() => {
                return Err(Error::Invalid(format!(
                    "sub-task {index} of {} cannot start before sub-task {}",
                    supervisor.id,
                    supervisor.sub_tasks.len()
                )));
            }
            None => {}
        }
        let now = chrono::Utc::now().timestamp_millis();
        let id = new_task_id(SUB_TASK_TYPE, &supervisor.datasource, now, &mut rand::rng());
        let mut payload = json!({
            "type": SUB_TASK_TYPE,
            "id": id,
            "groupId": supervisor.group_id,
            "supervisorTaskId": supervisor.id,
            "spec": spec,
        });
        if let Some(context) = supervisor.payload.get("context") {
            payload["context"] = context.clone();
        }
        let parsed = task_spec(&payload)?;
        if parsed.spec.datasource != supervisor.datasource {
            return Err(Error::Invalid(format!(
                "a sub-task of {} must ingest into {}, not {}",
                supervisor.id, supervisor.datasource, parsed.spec.datasource
            )));
        }
        task_status::update(self.store.as_ref(), guard, &supervisor.id, |r| {
            r.sub_tasks.push(id.clone());
            Ok(())
        })
        .await?;
        let record = TaskRecord {
            supervisor: Some(supervisor.id.clone()),
            ..TaskRecord::submitted(
                &id,
                &supervisor.group_id,
                SUB_TASK_TYPE,
                &supervisor.datasource,
                payload,
                now,
            )
        };
        task_status::create(self.store.as_ref(), guard, &record).await?;
        tracing::info!("task {id} submitted by {}", supervisor.id);
        self.active().ids.insert(id.clone());
        self.wake.notify_one();
        Ok(id)
    }

    /// How the sub-tasks of `supervisor` fare.
    async fn sub_task_states(&self, supervisor: &TaskRecord) -> Result<Vec<SubTaskState>> {
        let mut states = Vec::new();
        for id in &supervisor.sub_tasks {
            let Some((sub, _)) = task_status::get(self.store.as_ref(), id).await? else {
                continue;
            };
            let live = match (&sub.worker, sub.state) {
                (Some(worker), TaskState::Running) => {
                    super::runner_report(self.store.as_ref(), worker, id).await?
                }
                _ => None,
            };
            let row_stats = live.map_or(sub.report.build_segments, |r| r.report.build_segments);
            states.push(SubTaskState {
                id: sub.id.clone(),
                status_code: sub.state.status_code().to_string(),
                error_msg: sub.error_msg.clone(),
                row_stats,
                pushed: sub.pushed.clone(),
            });
        }
        Ok(states)
    }

    /// The task's record, if it runs and `request` carries its assignment's token.
    async fn running_task(&self, request: &ActionRequest) -> Result<TaskRecord> {
        let refused = || {
            Error::Invalid(format!(
                "action {} refused: task {} is not running under this token",
                request.action.name(),
                request.task
            ))
        };
        let record = match task_status::get(self.store.as_ref(), &request.task).await? {
            Some((record, _)) if record.state == TaskState::Running => record,
            _ => return Err(refused()),
        };
        let Some(worker) = &record.worker else {
            return Err(refused());
        };
        let key = assignment_key(worker, &record.id);
        let assignment: Assignment = match self.store.get(&key).await? {
            Some(kv) => super::decode(&key, &kv.value)?,
            None => return Err(refused()),
        };
        if !constant_time_eq(assignment.token.as_bytes(), request.token.as_bytes()) {
            tracing::warn!("task {}: action with a wrong token refused", request.task);
            return Err(refused());
        }
        Ok(record)
    }

    /// The version and partition of the task's next segment of `chunk`. The first
    /// time, the chunk is locked for the task (or its supervisor), waiting up to the
    /// lock timeout for others to let go, and its version chosen; later segments of the
    /// chunk take the next partitions of that version while the lock holds.
    async fn allocate(
        &self,
        guard: &Txn,
        record: &TaskRecord,
        task: &TaskSpec,
        chunk: Interval,
    ) -> Result<Allocation> {
        let spec = &task.spec;
        if spec.segment_granularity.bucket(chunk.start) != chunk {
            return Err(Error::Invalid(format!(
                "{chunk} is not a {:?} time chunk",
                spec.segment_granularity
            )));
        }
        // A sub-task locks for its supervisor, which publishes.
        let owner = match &record.supervisor {
            Some(supervisor) => match task_status::get(self.store.as_ref(), supervisor).await? {
                Some((owner, _)) if owner.state == TaskState::Running => owner,
                _ => {
                    return Err(Error::Invalid(format!(
                        "the supervisor task {supervisor} is not running"
                    )));
                }
            },
            None => record.clone(),
        };
        let append = spec.append_to_existing;
        let cached = self
            .chunk_allocations()
            .get(&(record.id.clone(), chunk))
            .cloned();
        let first = match cached {
            Some(first) => {
                // The lock must still be the task's.
                let lock = self
                    .lock_chunk(guard, &owner, task, chunk, append, &first.version)
                    .await?;
                if lock.version != first.version {
                    return Err(revoked(&owner.id, chunk));
                }
                ChunkAllocation {
                    published_above: 0,
                    ..first
                }
            }
            None => {
                let first = self.first_allocation(guard, &owner, task, chunk).await?;
                self.chunk_allocations()
                    .insert((record.id.clone(), chunk), first.clone());
                first
            }
        };
        let partition = next_partition(
            self.store.as_ref(),
            guard,
            &spec.datasource,
            chunk,
            &first.version,
            first.published_above,
        )
        .await?;
        Ok(Allocation {
            version: first.version,
            partition,
            core_partitions: first.core_partitions,
        })
    }

    /// Locks `chunk` for `owner` and chooses the version its segments there take: a
    /// new one (newer than any there) for a replace, the chunk's own for an append.
    async fn first_allocation(
        &self,
        guard: &Txn,
        owner: &TaskRecord,
        task: &TaskSpec,
        chunk: Interval,
    ) -> Result<ChunkAllocation> {
        let spec = &task.spec;
        let existing = visible_chunks(self.store.as_ref(), &spec.datasource, chunk).await?;
        let append = spec.append_to_existing;
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let version = match (append, existing.as_slice()) {
            (true, [only]) if only.0 == chunk => only.1.clone(),
            (true, []) | (false, _) => now,
            (true, _) => {
                return Err(Error::Invalid(format!(
                    "cannot append to {chunk}: existing segments there use other intervals; \
                     use the segmentGranularity they were ingested with"
                )));
            }
        };
        let lock = self
            .lock_chunk(guard, owner, task, chunk, append, &version)
            .await?;
        if !append {
            if let Some((interval, newer, _, _)) =
                existing.iter().find(|(_, v, _, _)| *v >= lock.version)
            {
                return Err(Error::Invalid(format!(
                    "version {newer} of {interval} is not older than this task's lock version {}",
                    lock.version
                )));
            }
            return Ok(ChunkAllocation {
                version: lock.version,
                published_above: 0,
                core_partitions: None,
            });
        }
        let (published_above, core) = match existing.first() {
            Some((_, v, above, core)) if *v == lock.version => (*above, *core),
            _ => (0, 0),
        };
        Ok(ChunkAllocation {
            version: lock.version,
            published_above,
            core_partitions: Some(core),
        })
    }

    fn chunk_allocations(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(String, Interval), ChunkAllocation>> {
        self.allocations.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The task's lock on `chunk`: one it holds already that covers it, or a new one
    /// (exclusive, or shared with other appenders), waiting for others to let go.
    async fn lock_chunk(
        &self,
        guard: &Txn,
        record: &TaskRecord,
        task: &TaskSpec,
        chunk: Interval,
        append: bool,
        version: &str,
    ) -> Result<locks::TaskLock> {
        let held = locks::list(self.store.as_ref(), Some(&record.datasource)).await?;
        let mine: Vec<_> = held
            .iter()
            .filter(|l| l.lock.task_id == record.id)
            .collect();
        if let Some(l) = mine.iter().find(|l| l.lock.interval.covers(&chunk)) {
            if l.lock.revoked {
                return Err(revoked(&record.id, chunk));
            }
            return Ok(l.lock.clone());
        }
        if mine.len() >= MAX_LOCKS_PER_TASK {
            return Err(Error::Invalid(format!(
                "task {} would hold more than {MAX_LOCKS_PER_TASK} time chunk locks; \
                 give granularitySpec.intervals, or a coarser segmentGranularity",
                record.id
            )));
        }
        let request = LockRequest {
            task_id: record.id.clone(),
            group_id: record.group_id.clone(),
            datasource: record.datasource.clone(),
            interval: chunk,
            kind: if append {
                LockKind::Append
            } else {
                LockKind::Exclusive
            },
            priority: task.priority,
            version: version.to_string(),
        };
        let deadline = tokio::time::Instant::now() + self.settings.lock_timeout;
        loop {
            match locks::acquire(self.store.as_ref(), guard, &request).await? {
                Grant::Granted(lock) => return Ok(lock),
                Grant::Waiting { blockers } => {
                    if tokio::time::Instant::now() >= deadline {
                        let by: Vec<&str> = blockers.iter().map(|b| b.task_id.as_str()).collect();
                        return Err(Error::Busy(format!(
                            "timed out after {:?} waiting for a lock on {chunk}, held by {}",
                            self.settings.lock_timeout,
                            by.join(", ")
                        )));
                    }
                }
            }
            tokio::time::sleep(self.settings.tick).await;
        }
    }

    /// Publishes the task's segments in one transaction guarded by its locks.
    async fn publish(
        &self,
        guard: &Txn,
        record: &TaskRecord,
        mut segments: Vec<SegmentDescriptor>,
    ) -> Result<()> {
        if segments.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = segments.iter().map(|d| d.id.to_string()).collect();
        if published_by(self.store.as_ref(), &record.id, &segments).await? {
            // Asked again after an answer was lost: it happened.
            return self.mark_published(guard, record, ids).await;
        }
        let held =
            locks::begin_publishing(self.store.as_ref(), guard, &record.datasource, &record.id)
                .await?;
        let prefixes: Vec<String> = std::iter::once(&record.id)
            .chain(&record.sub_tasks)
            .map(|task| format!("{}/{task}/", record.datasource))
            .collect();
        for d in &segments {
            let covered = held.locks().any(|l| {
                l.interval.covers(&d.id.interval) && l.version == d.id.version && !l.revoked
            });
            let own_file = prefixes.iter().any(|p| d.path.starts_with(p.as_str()));
            if d.id.datasource != record.datasource || !covered || !own_file {
                return Err(Error::Invalid(format!(
                    "task {} may not publish {} at {}: it holds no lock of that version \
                     on that interval, or the file is not the task's",
                    record.id, d.id, d.path
                )));
            }
        }
        task::publish(
            self.store.as_ref(),
            &held.guard(guard.compares_only()),
            &mut segments,
            &record.id,
        )
        .await?;
        tracing::info!("task {} published {} segment(s)", record.id, ids.len());
        self.mark_published(guard, record, ids).await
    }

    async fn mark_published(
        &self,
        guard: &Txn,
        record: &TaskRecord,
        ids: Vec<String>,
    ) -> Result<()> {
        task_status::update(self.store.as_ref(), guard, &record.id, |r| {
            r.report.state = IngestionState::SegmentAvailabilityWait;
            r.published = ids.clone();
            Ok(())
        })
        .await?;
        Ok(())
    }

    // -----------------------------------------------------------------------------
    // Leading
    // -----------------------------------------------------------------------------

    /// Registers, campaigns and leads until `shutdown` turns true; survives the store
    /// going away and coming back.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let name = format!("overlord {}", self.node.id);
        let mut work = Campaign {
            overlord: self.clone(),
        };
        keep_session(
            self.store.clone(),
            self.settings.lease_ttl,
            &name,
            &mut shutdown,
            &mut work,
        )
        .await;
        self.step_down();
    }

    async fn serve(&self, session: &Session) {
        loop {
            if session.is_lost() {
                return;
            }
            match self.election.campaign(session).await {
                Ok(campaign) => {
                    self.update(|s| s.leader = campaign.leader.clone());
                    if let Some(fence) = campaign.fence {
                        tracing::info!("overlord {} is the leader", self.node.id);
                        // Read everything again: another leader came between.
                        *self.active() = Active::default();
                        self.update(|s| s.is_leader = true);
                        self.fence.send_replace(Some(fence));
                        self.lead(session, fence).await;
                        self.step_down();
                    }
                }
                Err(e) => self.update(|s| s.last_error = Some(e.to_string())),
            }
            tokio::time::sleep(CAMPAIGN_EVERY).await;
        }
    }

    fn step_down(&self) {
        self.fence.send_replace(None);
        let was_leader = self
            .status
            .write()
            .map(|mut s| std::mem::replace(&mut s.is_leader, false))
            .unwrap_or(false);
        if was_leader {
            tracing::info!("overlord {} stepped down", self.node.id);
        }
    }

    async fn lead(&self, session: &Session, fence: u64) {
        let guard = self.election.guard(fence);
        loop {
            match self.store.txn(guard.compares_only()).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => tracing::debug!("overlord: checking leadership: {e}"),
            }
            if let Err(e) = self.tick(&guard).await {
                tracing::warn!("overlord: {e}");
                self.update(|s| s.last_error = Some(e.to_string()));
            }
            tokio::select! {
                _ = tokio::time::sleep(self.settings.tick) => {}
                _ = self.wake.notified() => {}
                _ = session.lost() => return,
            }
        }
    }

    /// The records of the tasks that have not ended.
    async fn active_records(&self) -> Result<Vec<TaskRecord>> {
        let store = self.store.as_ref();
        if !self.active().loaded {
            let live: Vec<String> = task_status::list(store)
                .await?
                .into_iter()
                .filter(|r| !r.state.is_complete())
                .map(|r| r.id)
                .collect();
            let mut active = self.active();
            active.ids.extend(live);
            active.loaded = true;
        }
        let ids: Vec<String> = self.active().ids.iter().cloned().collect();
        let mut records = Vec::new();
        for id in ids {
            match task_status::get(store, &id).await? {
                Some((record, _)) if !record.state.is_complete() => records.push(record),
                _ => {
                    self.active().ids.remove(&id);
                }
            }
        }
        Ok(records)
    }

    /// One scheduling pass over every task that has not ended.
    pub async fn tick(&self, guard: &Txn) -> Result<()> {
        let store = self.store.as_ref();
        let records = self.active_records().await?;
        let workers: BTreeMap<String, NodeInfo> = nodes::live(store)
            .await?
            .into_iter()
            .filter(|n| n.role == Role::Worker)
            .map(|n| (n.id.clone(), n))
            .collect();
        let assigned = super::assignments(store).await?;
        let reports: HashMap<(String, String), RunnerReport> = super::runner_reports(store)
            .await?
            .into_iter()
            .map(|(w, t, r)| ((w, t), r))
            .collect();

        let by_id: HashMap<&str, &TaskRecord> =
            records.iter().map(|r| (r.id.as_str(), r)).collect();
        let mut busy: HashMap<String, u32> = HashMap::new();
        for (worker, a, _) in &assigned {
            let current = by_id.get(a.task_id.as_str()).is_some_and(|r| {
                r.state == TaskState::Running && r.worker.as_deref() == Some(worker)
            });
            if current {
                *busy.entry(worker.clone()).or_default() += 1;
            } else {
                // Left over from a task that ended, or from an assignment whose
                // record update never happened.
                self.unassign(guard, worker, &a.task_id).await?;
            }
        }
        self.release_stale_locks(guard, &by_id).await?;

        let mut active: Vec<&TaskRecord> =
            records.iter().filter(|r| !r.state.is_complete()).collect();
        active.sort_by_key(|r| (r.created_time, r.id.clone()));
        for record in active {
            let turn = self.turn(&record.id);
            let Ok(_turn) = turn.try_lock() else {
                continue; // an action or a shutdown has it now
            };
            // The record may have changed since the list was read.
            let Some((record, _)) = task_status::get(store, &record.id).await? else {
                continue;
            };
            let outcome = match record.state {
                TaskState::Waiting => self.try_lock(guard, &record).await,
                TaskState::Pending => self.try_assign(guard, &record, &workers, &mut busy).await,
                TaskState::Running => self.check_running(guard, &record, &workers, &reports).await,
                TaskState::Success | TaskState::Failed => Ok(()),
            };
            if let Err(e) = outcome {
                tracing::warn!("task {}: {e}", record.id);
            }
        }
        Ok(())
    }

    /// Waiting: a replacing task with intervals takes its locks, all or none.
    async fn try_lock(&self, guard: &Txn, record: &TaskRecord) -> Result<()> {
        if record.supervisor.is_some() {
            // Its supervisor holds (or takes, as its sub-tasks allocate) the locks.
            task_status::update(self.store.as_ref(), guard, &record.id, |r| {
                r.state = TaskState::Pending;
                Ok(())
            })
            .await?;
            return Ok(());
        }
        let task = match task_spec(&record.payload) {
            Ok(t) => t,
            Err(e) => {
                let message = e.to_string();
                return self
                    .finish(guard, record, TaskState::Failed, Some(message), None)
                    .await;
            }
        };
        let intervals = if task.spec.append_to_existing {
            Vec::new()
        } else {
            lock_intervals(&task.spec)
        };
        if intervals.len() > MAX_LOCKS_PER_TASK {
            let message = format!(
                "granularitySpec.intervals need {} time chunk locks; at most \
                 {MAX_LOCKS_PER_TASK} are allowed",
                intervals.len()
            );
            return self
                .finish(guard, record, TaskState::Failed, Some(message), None)
                .await;
        }
        let version = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        for interval in intervals {
            let request = LockRequest {
                task_id: record.id.clone(),
                group_id: record.group_id.clone(),
                datasource: record.datasource.clone(),
                interval,
                kind: LockKind::Exclusive,
                priority: task.priority,
                version: version.clone(),
            };
            if let Grant::Waiting { blockers } =
                locks::acquire(self.store.as_ref(), guard, &request).await?
            {
                tracing::debug!(
                    "task {} waits for {interval}, locked by {:?}",
                    record.id,
                    blockers.iter().map(|b| &b.task_id).collect::<Vec<_>>()
                );
                // None held while waiting: two tasks waiting for each other's
                // chunks would wait forever.
                locks::release(self.store.as_ref(), guard, &record.datasource, &record.id).await?;
                return Ok(());
            }
        }
        task_status::update(self.store.as_ref(), guard, &record.id, |r| {
            r.state = TaskState::Pending;
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// Pending: to the live worker (of the task's category) with the most free slots.
    async fn try_assign(
        &self,
        guard: &Txn,
        record: &TaskRecord,
        workers: &BTreeMap<String, NodeInfo>,
        busy: &mut HashMap<String, u32>,
    ) -> Result<()> {
        let category = task_spec(&record.payload).ok().and_then(|t| t.category);
        let free = |w: &NodeInfo| {
            w.task_slots
                .unwrap_or(0)
                .saturating_sub(busy.get(&w.id).copied().unwrap_or(0))
        };
        let Some(worker) = workers
            .values()
            .filter(|w| category.is_none() || w.category == category)
            .filter(|w| free(w) > 0)
            .max_by_key(|w| (free(w), std::cmp::Reverse(w.id.clone())))
        else {
            return Ok(());
        };
        let assignment = Assignment {
            task_id: record.id.clone(),
            token: new_token(),
            payload: record.payload.clone(),
        };
        let key = assignment_key(&worker.id, &record.id);
        let txn = guard
            .compares_only()
            .put(key, encode("an assignment", &assignment)?);
        if !self.store.txn(txn).await? {
            return Err(crate::metastore::guard_lost());
        }
        let location = location_of(worker);
        let now = chrono::Utc::now().timestamp_millis();
        task_status::update(self.store.as_ref(), guard, &record.id, |r| {
            r.state = TaskState::Running;
            r.worker = Some(worker.id.clone());
            r.location = location.clone();
            r.started = Some(now);
            r.report.state = IngestionState::NotStarted;
            Ok(())
        })
        .await?;
        *busy.entry(worker.id.clone()).or_default() += 1;
        tracing::info!("task {} assigned to worker {}", record.id, worker.id);
        Ok(())
    }

    /// Running: ends the task when its worker says it ended or is gone; after a
    /// publication, waits for its segments to be served if the spec asks to.
    async fn check_running(
        &self,
        guard: &Txn,
        record: &TaskRecord,
        workers: &BTreeMap<String, NodeInfo>,
        reports: &HashMap<(String, String), RunnerReport>,
    ) -> Result<()> {
        let worker = record.worker.clone().unwrap_or_default();
        let report = reports.get(&(worker.clone(), record.id.clone()));
        match report {
            Some(r) if r.state == TaskState::Success && record.supervisor.is_some() => {
                // Its segments wait in deep storage for its supervisor to publish.
                task_status::update(self.store.as_ref(), guard, &record.id, |rec| {
                    rec.pushed = r.pushed.clone();
                    Ok(())
                })
                .await?;
                let mut report = r.report.clone();
                report.state = IngestionState::Completed;
                self.finish(guard, record, TaskState::Success, None, Some(report))
                    .await
            }
            Some(r) if r.state == TaskState::Success => {
                self.await_availability(guard, record, r).await
            }
            Some(r) if r.state.is_complete() => {
                let mut report = r.report.clone();
                report.error_msg = r.error_msg.clone();
                self.finish(guard, record, r.state, r.error_msg.clone(), Some(report))
                    .await
            }
            Some(_) => Ok(()),
            None if workers.contains_key(&worker) => Ok(()),
            None if record.report.state == IngestionState::SegmentAvailabilityWait => {
                // Published before its worker went: its data is in.
                self.finish(guard, record, TaskState::Success, None, None)
                    .await
            }
            None => {
                let message =
                    format!("worker {worker} went away (its lease expired) while the task ran");
                tracing::warn!("task {}: {message}", record.id);
                self.finish(guard, record, TaskState::Failed, Some(message), None)
                    .await
            }
        }
    }

    /// A task that reported success: done at once, or once historicals serve what it
    /// published (or the spec's wait runs out).
    async fn await_availability(
        &self,
        guard: &Txn,
        record: &TaskRecord,
        runner: &RunnerReport,
    ) -> Result<()> {
        let timeout = task_spec(&record.payload)
            .map(|t| t.spec.await_segment_availability_timeout_millis)
            .unwrap_or(0);
        let mut report = runner.report.clone();
        // Counted from the task's start: the wait is bounded, never exact.
        let waited = chrono::Utc::now().timestamp_millis() - record.started.unwrap_or(0);
        if record.published.is_empty() || timeout == 0 {
            report.state = IngestionState::Completed;
            return self
                .finish(guard, record, TaskState::Success, None, Some(report))
                .await;
        }
        let served: BTreeSet<String> = assignments::served(self.store.as_ref())
            .await?
            .into_values()
            .flat_map(|s| s.into_keys())
            .collect();
        let available = record.published.iter().all(|id| served.contains(id));
        let waited = waited.max(0) as u64;
        if !available && waited < timeout {
            return Ok(());
        }
        report.state = IngestionState::Completed;
        report.segment_availability_confirmed = available;
        report.segment_availability_wait_time_ms = waited;
        self.finish(guard, record, TaskState::Success, None, Some(report))
            .await
    }

    /// Ends a task: the record says how, its locks go, its worker lets go of it.
    async fn finish(
        &self,
        guard: &Txn,
        record: &TaskRecord,
        state: TaskState,
        error_msg: Option<String>,
        report: Option<task_status::IngestionReport>,
    ) -> Result<()> {
        let ended = self
            .finish_one(guard, record, state, error_msg, report)
            .await?;
        // A parallel task's sub-tasks end with it.
        for id in &ended.sub_tasks {
            if let Some((sub, _)) = task_status::get(self.store.as_ref(), id).await?
                && !sub.state.is_complete()
            {
                let message = format!("its parallel task {} ended", record.id);
                self.finish_one(guard, &sub, TaskState::Failed, Some(message), None)
                    .await?;
            }
        }
        Ok(())
    }

    async fn finish_one(
        &self,
        guard: &Txn,
        record: &TaskRecord,
        state: TaskState,
        error_msg: Option<String>,
        report: Option<task_status::IngestionReport>,
    ) -> Result<TaskRecord> {
        let now = chrono::Utc::now().timestamp_millis();
        let ended = task_status::update(self.store.as_ref(), guard, &record.id, |r| {
            if r.state.is_complete() {
                return Ok(());
            }
            r.state = state;
            r.ended = Some(now);
            r.error_msg = error_msg.clone();
            if let Some(report) = &report {
                r.report = report.clone();
            }
            if state == TaskState::Failed {
                r.report.error_msg = error_msg.clone();
            }
            Ok(())
        })
        .await?;
        locks::release(self.store.as_ref(), guard, &record.datasource, &record.id).await?;
        if let Some(worker) = &record.worker {
            self.unassign(guard, worker, &record.id).await?;
        }
        self.forget_turn(&record.id);
        self.chunk_allocations()
            .retain(|(task, _), _| *task != record.id);
        tracing::info!(
            "task {} ended {}{}",
            record.id,
            ended.state.status_code(),
            ended
                .error_msg
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        );
        Ok(ended)
    }

    async fn unassign(&self, guard: &Txn, worker: &str, task: &str) -> Result<()> {
        let txn = guard.compares_only().delete(assignment_key(worker, task));
        if !self.store.txn(txn).await? {
            return Err(crate::metastore::guard_lost());
        }
        Ok(())
    }

    /// Locks whose task ended or is unknown (left by a leader that died between
    /// ending a task and releasing them).
    async fn release_stale_locks(
        &self,
        guard: &Txn,
        tasks: &HashMap<&str, &TaskRecord>,
    ) -> Result<()> {
        let stale: BTreeSet<(String, String)> = locks::list(self.store.as_ref(), None)
            .await?
            .into_iter()
            .filter(|l| {
                tasks
                    .get(l.lock.task_id.as_str())
                    .is_none_or(|r| r.state.is_complete())
            })
            .map(|l| (l.lock.datasource, l.lock.task_id))
            .collect();
        for (datasource, task) in stale {
            locks::release(self.store.as_ref(), guard, &datasource, &task).await?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ActionSink for Overlord {
    async fn perform(&self, request: &ActionRequest) -> Result<Value> {
        let answer = Overlord::perform(self, request).await;
        self.wake.notify_one();
        answer
    }
}

/// An overlord's life in one session: register, then campaign and lead.
struct Campaign {
    overlord: Arc<Overlord>,
}

#[async_trait::async_trait]
impl SessionWork for Campaign {
    async fn join(&mut self, session: &Session) -> Result<()> {
        let o = &self.overlord;
        nodes::register(o.store.as_ref(), session, &o.node).await
    }

    async fn work(&mut self, session: &Session) {
        self.overlord.serve(session).await;
    }

    fn ended(&mut self) {
        self.overlord.step_down();
    }
}

/// The spec of a submitted task, with what its context says.
fn task_spec(payload: &Value) -> Result<TaskSpec> {
    let task_type = payload.get("type").and_then(Value::as_str).unwrap_or("");
    if !matches!(task_type, "index_parallel" | "index" | SUB_TASK_TYPE) {
        return Err(Error::Invalid(format!(
            "unsupported task type {task_type:?}: expected \"index_parallel\" or \"index\""
        )));
    }
    let spec = IngestionSpec::check_json(&super::ingestion_spec_of(payload).to_string())?;
    let context = payload.get("context");
    let priority = match context.and_then(|c| c.get("priority")) {
        None | Some(Value::Null) => BATCH_PRIORITY,
        Some(p) => p
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| Error::Invalid("context.priority must be an integer".into()))?,
    };
    let category = context
        .and_then(|c| c.get("category"))
        .and_then(Value::as_str)
        .map(String::from);
    Ok(TaskSpec {
        spec,
        priority,
        category,
    })
}

/// A task id (or group id) given by the submitter: it becomes part of keys and paths.
fn check_task_id(id: &str) -> Result<String> {
    let fine = !id.is_empty()
        && id.len() <= 255
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:+".contains(c));
    if fine {
        Ok(id.to_string())
    } else {
        Err(Error::Invalid(format!(
            "task id {id:?} must be 1 to 255 letters, digits and -_.:+, not starting with ."
        )))
    }
}

/// The chunks a replacing task locks before it runs: its intervals, rounded out to
/// whole time chunks, overlapping or touching ones merged.
fn lock_intervals(spec: &IngestionSpec) -> Vec<Interval> {
    let Some(intervals) = &spec.intervals else {
        return Vec::new();
    };
    let granularity = spec.segment_granularity;
    let mut rounded: Vec<Interval> = intervals
        .iter()
        .filter(|i| !i.is_empty())
        .map(|i| Interval {
            start: granularity.truncate(i.start),
            end: granularity.bucket(i.end - 1).end,
        })
        .collect();
    rounded.sort();
    let mut merged: Vec<Interval> = Vec::new();
    for i in rounded {
        match merged.last_mut() {
            Some(last) if i.start <= last.end => last.end = last.end.max(i.end),
            _ => merged.push(i),
        }
    }
    merged
}

/// The visible chunks overlapping `chunk`: `(interval, version, one past the highest
/// partition, core partitions)`.
async fn visible_chunks(
    store: &dyn MetaStore,
    datasource: &str,
    chunk: Interval,
) -> Result<Vec<(Interval, String, u32, u32)>> {
    let mut timeline = Timeline::new();
    for d in segments::load(store, Some(datasource)).await? {
        if d.used {
            timeline.add(d.id.clone(), d.core_partitions, d.core_partitions)?;
        }
    }
    Ok(timeline
        .lookup(chunk)
        .into_iter()
        .map(|v| {
            let above = v
                .segments
                .iter()
                .map(|(id, _): &(SegmentId, u32)| id.partition + 1)
                .max()
                .unwrap_or(0);
            let core = v.segments.first().map_or(0, |(_, core)| *core);
            (v.chunk_interval, v.version.clone(), above, core)
        })
        .collect())
}

/// Whether `task` published exactly these segments already (all of them, as one
/// publication: with the commit key when it took several transactions).
async fn published_by(
    store: &dyn MetaStore,
    task: &str,
    segments: &[SegmentDescriptor],
) -> Result<bool> {
    if segments.len() > task::SEGMENTS_PER_TXN {
        return Ok(store.get(&segments::commit_key(task)).await?.is_some());
    }
    for d in segments {
        let Some(kv) = store.get(&d.key()).await? else {
            return Ok(false);
        };
        let stored: SegmentDescriptor = super::decode(&d.key(), &kv.value)?;
        if stored.path != d.path {
            return Ok(false);
        }
    }
    Ok(true)
}

fn revoked(task: &str, chunk: Interval) -> Error {
    Error::Busy(format!(
        "task {task}'s lock on {chunk} was revoked by a task of higher priority"
    ))
}

fn location_of(worker: &NodeInfo) -> Option<TaskLocation> {
    let (host, port) = worker.http_address.rsplit_once(':')?;
    Some(TaskLocation {
        host: host.trim_matches(['[', ']']).to_string(),
        port: port.parse().ok()?,
        tls_port: None,
    })
}

/// 128 random bits, hex.
fn new_token() -> String {
    use rand::Rng;
    let bits: u128 = rand::rng().random();
    format!("{bits:032x}")
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
