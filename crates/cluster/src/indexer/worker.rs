//! A worker (Druid's MiddleManager): registers its task slots under its lease, runs
//! each task assigned to it in a child process ([`super::peon`]), carries that
//! process's actions to the overlord, and reports how each task fares under its lease.
//!
//! - A task whose process crashes or is killed ends `FAILED`; the worker goes on.
//! - A task whose assignment disappears (shut down, or ended by the overlord) has its
//!   process killed.
//! - When the worker's session is lost its reports vanish with it and it kills its
//!   processes: the overlord counts its tasks as failed, and so must it.
//! - A task the worker finds assigned to it with a scratch directory already there
//!   was started by an earlier life of this worker: it is reported failed, never run
//!   twice.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Child;
use tokio::sync::{oneshot, watch};

use super::actions::{ActionRequest, ActionSink};
use super::peon::{ActionReply, PeonMessage};
use super::{ASSIGNMENTS_PREFIX, Assignment, RunnerReport, decode, encode, runner_key};
use crate::assignments::{Served, served_key};
use crate::error::{Error, Result};
use crate::metastore::{LeaseId, MetaStore, Txn};
use crate::nodes::{self, NodeInfo, Role};
use crate::segments::SegmentDescriptor;
use crate::session::{Session, SessionWork, keep_session};
use crate::task_status::{IngestionReport, TaskState};

/// Starts task processes.
pub trait Launcher: Send + Sync {
    /// Starts the process for `assignment` with its scratch directory `dir`, standard
    /// input and output piped, and standard error going to `log`.
    fn launch(&self, assignment: &Assignment, dir: &Path, log: std::fs::File) -> Result<Child>;
}

/// How often a worker looks at its assignments unless configured otherwise.
pub const DEFAULT_POLL: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub lease_ttl: Duration,
    /// Where each task gets its scratch directory and keeps its log.
    pub work_dir: PathBuf,
    /// Time between looks at the worker's assignments.
    pub poll: Duration,
}

/// A task process the worker drives.
struct Running {
    /// Sent to kill the process.
    kill: Option<oneshot::Sender<()>>,
}

pub struct Worker {
    store: Arc<dyn MetaStore>,
    node: NodeInfo,
    settings: WorkerSettings,
    launcher: Arc<dyn Launcher>,
    actions: Arc<dyn ActionSink>,
    running: Mutex<HashMap<String, Running>>,
}

impl Worker {
    pub fn new(
        store: Arc<dyn MetaStore>,
        node: NodeInfo,
        settings: WorkerSettings,
        launcher: Arc<dyn Launcher>,
        actions: Arc<dyn ActionSink>,
    ) -> Worker {
        Worker {
            store,
            node,
            settings,
            launcher,
            actions,
            running: Mutex::new(HashMap::new()),
        }
    }

    pub fn node(&self) -> &NodeInfo {
        &self.node
    }

    /// Where a task's log is (or was) written.
    pub fn log_path(&self, task: &str) -> Option<PathBuf> {
        let fine = !task.is_empty() && !task.contains(['/', '\\']) && !task.starts_with('.');
        fine.then(|| self.settings.work_dir.join(task).join("log"))
    }

    /// The ids of the tasks running now.
    pub fn running_tasks(&self) -> Vec<String> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let mut ids: Vec<String> = running.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Registers and runs what is assigned until `shutdown`.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let name = format!("worker {}", self.node.id);
        let mut work = WorkerSession {
            worker: self.clone(),
        };
        keep_session(
            self.store.clone(),
            self.settings.lease_ttl,
            &name,
            &mut shutdown,
            &mut work,
        )
        .await;
        self.kill_all();
    }

    fn kill_all(&self) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        for (_, mut task) in running.drain() {
            if let Some(kill) = task.kill.take() {
                let _ = kill.send(());
            }
        }
    }

    async fn follow(self: &Arc<Self>, session: &Session) {
        loop {
            if let Err(e) = self.follow_once(session).await {
                tracing::warn!("worker {}: {e}", self.node.id);
            }
            tokio::time::sleep(self.settings.poll).await;
        }
    }

    /// Starts what is newly assigned, kills what is no longer.
    async fn follow_once(self: &Arc<Self>, session: &Session) -> Result<()> {
        let prefix = format!("{ASSIGNMENTS_PREFIX}{}/", self.node.id);
        let mut assigned: HashMap<String, Assignment> = HashMap::new();
        for kv in self.store.range(&prefix).await? {
            let a: Assignment = decode(&kv.key, &kv.value)?;
            assigned.insert(a.task_id.clone(), a);
        }
        let (gone, new): (Vec<String>, Vec<Assignment>) = {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            let gone: Vec<String> = running
                .keys()
                .filter(|t| !assigned.contains_key(*t))
                .cloned()
                .collect();
            for task in &gone {
                if let Some(mut r) = running.remove(task)
                    && let Some(kill) = r.kill.take()
                {
                    let _ = kill.send(());
                }
            }
            let new = assigned
                .into_values()
                .filter(|a| !running.contains_key(&a.task_id))
                .collect();
            (gone, new)
        };
        for task in gone {
            tracing::info!("worker {}: task {task} unassigned", self.node.id);
            self.store.delete(&runner_key(&self.node.id, &task)).await?;
        }
        for assignment in new {
            self.start(session.lease(), assignment).await?;
        }
        Ok(())
    }

    async fn start(self: &Arc<Self>, lease: LeaseId, assignment: Assignment) -> Result<()> {
        let task = assignment.task_id.clone();
        let (kill, killed) = oneshot::channel();
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(task.clone(), Running { kill: Some(kill) });
        let Some(log) = self.log_path(&task) else {
            return self
                .report(lease, &task, failed(format!("unusable task id {task:?}")))
                .await;
        };
        let dir = log.parent().map(Path::to_path_buf).unwrap_or_default();
        if dir.exists() {
            let message = format!(
                "worker {} restarted while the task ran; it is not run twice",
                self.node.id
            );
            return self.report(lease, &task, failed(message)).await;
        }
        let launched = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::File::create(&log))
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))
            .and_then(|log| self.launcher.launch(&assignment, &dir, log));
        let child = match launched {
            Ok(child) => child,
            Err(e) => {
                let message = format!("cannot start the task's process: {e}");
                return self.report(lease, &task, failed(message)).await;
            }
        };
        tracing::info!("worker {}: task {task} started", self.node.id);
        self.report(lease, &task, running(IngestionReport::default()))
            .await?;
        let worker = self.clone();
        tokio::spawn(async move {
            // Killed: the assignment is gone, and nobody wants a report.
            let Some(end) = worker.drive(lease, &assignment, child, killed).await else {
                return;
            };
            tracing::info!(
                "worker {}: task {} ended {}",
                worker.node.id,
                assignment.task_id,
                end.state.status_code()
            );
            if let Err(e) = worker.report(lease, &assignment.task_id, end).await {
                tracing::warn!(
                    "worker {}: reporting {}: {e}",
                    worker.node.id,
                    assignment.task_id
                );
            }
        });
        Ok(())
    }

    /// Writes how `task` fares, under the worker's lease.
    async fn report(&self, lease: LeaseId, task: &str, report: RunnerReport) -> Result<()> {
        let txn = Txn::default().put_leased(
            runner_key(&self.node.id, task),
            encode("a runner report", &report)?,
            lease,
        );
        self.store.txn(txn).await?;
        Ok(())
    }

    /// Talks with the task's process until it exits; returns its end, or `None` when
    /// it was killed.
    async fn drive(
        &self,
        lease: LeaseId,
        assignment: &Assignment,
        mut child: Child,
        mut killed: oneshot::Receiver<()>,
    ) -> Option<RunnerReport> {
        let (Some(stdout), Some(mut stdin)) = (child.stdout.take(), child.stdin.take()) else {
            let _ = child.start_kill();
            return Some(failed("the task's process has no pipes".into()));
        };
        let mut lines = BufReader::new(stdout).lines();
        let mut done: Option<RunnerReport> = None;
        let mut last = IngestionReport::default();
        let mut announced = Announced::default();
        loop {
            let line = tokio::select! {
                line = lines.next_line() => line,
                _ = &mut killed => {
                    // Its segments leave brokers' views before its process goes, so
                    // that no query is sent to it dead.
                    self.unannounce(&assignment.task_id, &mut announced).await;
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    return None;
                }
            };
            let line = match line {
                Ok(Some(line)) => line,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("task {}: reading its output: {e}", assignment.task_id);
                    break;
                }
            };
            let message: PeonMessage = match serde_json::from_str(&line) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(
                        "task {}: unreadable message ({e}): {line}",
                        assignment.task_id
                    );
                    continue;
                }
            };
            match message {
                PeonMessage::Action(action) => {
                    let request = ActionRequest {
                        task: assignment.task_id.clone(),
                        token: assignment.token.clone(),
                        action,
                    };
                    let reply = match self.actions.perform(&request).await {
                        Ok(value) => ActionReply::Ok(value),
                        Err(e) => ActionReply::Err {
                            definite: !matches!(e, Error::Indeterminate(_)),
                            message: e.to_string(),
                        },
                    };
                    let mut line = serde_json::to_vec(&reply).unwrap_or_default();
                    line.push(b'\n');
                    if stdin.write_all(&line).await.is_err() {
                        break;
                    }
                }
                PeonMessage::Progress(report) => {
                    if report != last {
                        last = report.clone();
                        let _ = self
                            .report(lease, &assignment.task_id, running(report))
                            .await;
                    }
                }
                PeonMessage::Done(report) => done = Some(report),
                PeonMessage::Serving {
                    flight_address,
                    segments,
                } => {
                    let task = &assignment.task_id;
                    if let Err(e) = self
                        .announce(lease, task, &flight_address, segments, &mut announced)
                        .await
                    {
                        tracing::warn!("task {task}: announcing its segments: {e}");
                    }
                }
            }
        }
        self.unannounce(&assignment.task_id, &mut announced).await;
        let status = child.wait().await;
        Some(match (done, status) {
            (Some(done), _) => done,
            (None, Ok(status)) => failed(format!(
                "the task's process exited ({status}) before it finished; see its log"
            )),
            (None, Err(e)) => failed(format!("waiting for the task's process: {e}")),
        })
    }
}

/// What a worker announced for one streaming task.
#[derive(Default)]
struct Announced {
    node: Option<String>,
    segments: BTreeSet<String>,
}

impl Worker {
    /// Announces, under the worker's lease, that the streaming `task` serves exactly
    /// `segments` (in progress) at `flight_address`: the task as a node of its own
    /// (role `peon`, id the task's), each segment with its descriptor.
    async fn announce(
        &self,
        lease: LeaseId,
        task: &str,
        flight_address: &str,
        segments: Vec<SegmentDescriptor>,
        announced: &mut Announced,
    ) -> Result<()> {
        if segments.is_empty() {
            self.unannounce(task, announced).await;
            return Ok(());
        }
        let mut txn = Txn::default();
        if announced.node.is_none() {
            let node = NodeInfo {
                flight_address: Some(flight_address.to_string()),
                ..NodeInfo::new(task, Role::Peon, self.node.http_address.clone())
            };
            txn = txn.put_leased(node.key(), encode("a node", &node)?, lease);
            announced.node = Some(node.key());
        }
        let keep: BTreeSet<String> = segments.iter().map(|d| d.id.to_string()).collect();
        for gone in announced.segments.difference(&keep) {
            txn = txn.delete(served_key(task, gone));
        }
        for d in segments {
            let id = d.id.to_string();
            let served = Served {
                size: d.size,
                realtime: Some(d),
            };
            txn = txn.put_leased(
                served_key(task, &id),
                encode("an announcement", &served)?,
                lease,
            );
        }
        self.store.txn(txn).await?;
        announced.segments = keep;
        Ok(())
    }

    /// Withdraws everything announced for a streaming task (best effort: the keys go
    /// with the worker's lease anyway).
    async fn unannounce(&self, task: &str, announced: &mut Announced) {
        let mut txn = Txn::default();
        for id in std::mem::take(&mut announced.segments) {
            txn = txn.delete(served_key(task, &id));
        }
        if let Some(node) = announced.node.take() {
            txn = txn.delete(node);
        }
        if !txn.ops.is_empty()
            && let Err(e) = self.store.txn(txn).await
        {
            tracing::warn!("task {task}: withdrawing its announcements: {e}");
        }
    }
}

fn failed(message: String) -> RunnerReport {
    RunnerReport::failed(message, IngestionReport::default())
}

fn running(report: IngestionReport) -> RunnerReport {
    RunnerReport {
        state: TaskState::Running,
        report,
        error_msg: None,
        pushed: Vec::new(),
    }
}

/// A worker's life in one session: register, then follow its assignments.
struct WorkerSession {
    worker: Arc<Worker>,
}

#[async_trait::async_trait]
impl SessionWork for WorkerSession {
    async fn join(&mut self, session: &Session) -> Result<()> {
        let w = &self.worker;
        nodes::register(w.store.as_ref(), session, &w.node).await
    }

    async fn work(&mut self, session: &Session) {
        self.worker.follow(session).await;
    }

    fn ended(&mut self) {
        self.worker.kill_all();
    }
}

/// Standard input and output piped, standard error to `log`: how a [`Launcher`]
/// prepares a task's command.
pub fn pipe_command(command: &mut tokio::process::Command, log: std::fs::File) {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true);
}
