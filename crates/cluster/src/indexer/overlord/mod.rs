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
//!
//! # Layout
//! - [`api`]: submitting and shutting down tasks.
//! - [`task_actions`]: what running tasks ask: segment allocation, publishing,
//!   sub-tasks.
//! - [`schedule`]: the leader's pass over the tasks that have not ended.

mod api;
mod schedule;
mod streams;
mod supervise;
mod task_actions;

pub use supervise::{GroupTask, SUPERVISE_EVERY, SupervisorStatus};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Notify, watch};

use grove_segment::Interval;
use grove_segment::spec::IngestionSpec;

use super::SUB_TASK_TYPE;
use super::actions::{ActionRequest, ActionSink};
use super::realtime::{KAFKA_TASK_TYPE, StreamTask};
use crate::election::{CAMPAIGN_EVERY, Election, LEADER_LEASE_TTL};
use crate::error::{Error, Result};
use crate::locks::{BATCH_PRIORITY, REALTIME_PRIORITY};
use crate::metastore::{MetaStore, Txn};
use crate::nodes::{self, NodeInfo, Role};
use crate::session::{Session, SessionWork, keep_session};
use crate::stream_offsets::Offsets;

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
    /// What the supervisors' last pass saw, by datasource.
    statuses: Mutex<BTreeMap<String, SupervisorStatus>>,
    /// Where each replica of each streaming task group last said it had read, by
    /// sequence then task: kept in memory only (a new leader hears from every live
    /// replica within a checkpoint).
    positions: Mutex<HashMap<String, Positions>>,
}

/// Where each replica of one task group is, by task.
type Positions = BTreeMap<String, ReplicaAt>;

/// Where a replica of a streaming task group is, as its last checkpoint said.
#[derive(Debug, Clone, Default)]
pub(super) struct ReplicaAt {
    /// The next offset it fetches, per partition.
    pub fetched: Offsets,
    /// What it serves: messages below these are in its queryable pieces.
    pub exposed: Offsets,
    /// The segments it announces.
    pub announced: BTreeSet<String>,
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
            statuses: Mutex::new(BTreeMap::new()),
            positions: Mutex::new(HashMap::new()),
        }
    }

    fn active(&self) -> std::sync::MutexGuard<'_, Active> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stream_positions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Positions>> {
        self.positions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn supervisor_statuses(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, SupervisorStatus>> {
        self.statuses.lock().unwrap_or_else(|e| e.into_inner())
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

    pub(super) async fn serve(&self, session: &Session) {
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

    pub(super) fn step_down(&self) {
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

    pub(super) async fn lead(&self, session: &Session, fence: u64) {
        let guard = self.election.guard(fence);
        tokio::select! {
            () = self.schedule_forever(session, &guard) => {}
            () = self.supervise_forever(&guard) => {}
        }
        self.supervisor_statuses().clear();
    }

    /// Scheduling passes until the leadership or the session is lost.
    async fn schedule_forever(&self, session: &Session, guard: &Txn) {
        let guard = guard.clone();
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
    if task_type == KAFKA_TASK_TYPE {
        let task = StreamTask::from_payload(payload)?;
        return Ok(TaskSpec {
            spec: task.spec.ingestion_spec(task.window),
            priority: REALTIME_PRIORITY,
            category: None,
        });
    }
    if !matches!(task_type, "index_parallel" | "index" | SUB_TASK_TYPE) {
        return Err(Error::Invalid(format!(
            "unsupported task type {task_type:?}: expected \"index_parallel\", \"index\" or \"{KAFKA_TASK_TYPE}\""
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

/// 128 random bits, hex.
fn new_token() -> String {
    use rand::Rng;
    let bits: u128 = rand::rng().random();
    format!("{bits:032x}")
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
