//! A peon: the process a worker starts for one task. It builds the task's segments,
//! stores them in deep storage, and asks the overlord to publish them.
//!
//! A peon talks only to its worker, over its standard input and output, one JSON
//! document per line: it writes [`PeonMessage`]s (an action, progress, its end) and
//! reads one [`ActionReply`] per action. The worker carries actions to the leading
//! overlord, adding the task's token, so a peon needs neither the overlord's address
//! nor any secret. When its standard input closes (the worker died or gave the task
//! up) the peon exits at once.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use grove_segment::Interval;
use grove_segment::ingest::{Allocator, Progress};
use grove_segment::spec::IngestionSpec;

use super::RunnerReport;
use super::actions::{Allocation, TaskAction};
use crate::deep_storage::DeepStorage;
use crate::error::{Error, Result};
use crate::task::{self, TaskChunks};
use crate::task_status::{IngestionReport, IngestionState, RowStats, TaskState};

/// The least time between two progress messages.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// What a peon tells its worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PeonMessage {
    Action(TaskAction),
    Progress(IngestionReport),
    Done(RunnerReport),
}

/// The worker's answer to one action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ActionReply {
    Ok(Value),
    /// `definite`: the action surely did not happen. A publication whose outcome is
    /// unknown (the overlord died while committing it) is not definite, and its files
    /// must stay.
    Err {
        message: String,
        definite: bool,
    },
}

/// How a peon reaches its worker.
pub trait PeonLink: Send + Sync {
    fn send(&self, message: &PeonMessage) -> Result<()>;
    /// Sends an action and waits for its reply.
    fn call(&self, action: TaskAction) -> Result<ActionReply>;
}

/// The link over this process's standard input and output.
pub struct StdioLink {
    out: Mutex<std::io::Stdout>,
    replies: Mutex<Receiver<ActionReply>>,
}

impl StdioLink {
    /// Starts reading replies from standard input; the process exits when it closes.
    pub fn start() -> StdioLink {
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let stdin = std::io::stdin();
            for line in stdin.lock().lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<ActionReply>(&line) {
                    Ok(reply) => {
                        if tx.send(reply).is_err() {
                            break;
                        }
                    }
                    Err(e) => tracing::warn!("unreadable reply from the worker: {e}"),
                }
            }
            tracing::error!("the worker closed this task's input: stopping");
            std::process::exit(3);
        });
        StdioLink {
            out: Mutex::new(std::io::stdout()),
            replies: Mutex::new(rx),
        }
    }
}

impl PeonLink for StdioLink {
    fn send(&self, message: &PeonMessage) -> Result<()> {
        let mut line = serde_json::to_vec(message).map_err(|e| Error::Store(e.to_string()))?;
        line.push(b'\n');
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        out.write_all(&line)
            .and_then(|()| out.flush())
            .map_err(|e| Error::io("writing to the worker", e))
    }

    fn call(&self, action: TaskAction) -> Result<ActionReply> {
        // One call at a time, so each reply answers the call that waits for it.
        let replies = self.replies.lock().unwrap_or_else(|e| e.into_inner());
        self.send(&PeonMessage::Action(action))?;
        replies
            .recv()
            .map_err(|_| Error::Busy("the worker stopped answering".into()))
    }
}

/// Runs the task in `payload` to its end; the report says how it ended. `dir` is the
/// task's scratch space.
pub async fn run_task(
    payload: &Value,
    deep: &DeepStorage,
    dir: &Path,
    link: &dyn PeonLink,
) -> RunnerReport {
    let mut report = IngestionReport {
        state: IngestionState::BuildSegments,
        ..IngestionReport::default()
    };
    match run(payload, deep, dir, link, &mut report).await {
        Ok(()) => {
            report.state = IngestionState::Completed;
            RunnerReport {
                state: TaskState::Success,
                report,
                error_msg: None,
            }
        }
        Err(e) => {
            let message = e.to_string();
            tracing::error!("task failed: {message}");
            report.error_msg = Some(message.clone());
            RunnerReport {
                state: TaskState::Failed,
                report,
                error_msg: Some(message),
            }
        }
    }
}

async fn run(
    payload: &Value,
    deep: &DeepStorage,
    dir: &Path,
    link: &dyn PeonLink,
    report: &mut IngestionReport,
) -> Result<()> {
    let task_id = payload
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::Invalid("the task has no id".into()))?
        .to_string();
    let text = super::ingestion_spec_of(payload).to_string();
    // Relative paths are relative to where the worker runs.
    let spec = IngestionSpec::from_json(&text, Path::new(""))?;
    tracing::info!("task {task_id}: ingesting into {}", spec.datasource);
    let mut allocator = ActionAllocator {
        link,
        appended: BTreeMap::new(),
    };
    let mut last_sent = Instant::now();
    let mut on_progress = |p: &Progress| {
        report.build_segments = row_stats(p);
        if last_sent.elapsed() >= PROGRESS_EVERY {
            last_sent = Instant::now();
            let _ = link.send(&PeonMessage::Progress(report.clone()));
        }
    };
    let stored = task::build_and_store(
        &spec,
        deep,
        &dir.join("staging"),
        &task_id,
        &mut allocator,
        &mut on_progress,
    )
    .await?;
    report.build_segments = row_stats(&stored.progress);
    tracing::info!(
        "task {task_id}: {} rows in {} segment(s) stored; publishing",
        stored.progress.rows_written,
        stored.descriptors.len()
    );
    let action = TaskAction::SegmentTransactionalInsert {
        segments: stored.descriptors.clone(),
    };
    match tokio::task::block_in_place(|| link.call(action))? {
        ActionReply::Ok(_) => Ok(()),
        ActionReply::Err { message, definite } => {
            if definite {
                task::discard(deep, &stored.descriptors).await;
            }
            Err(Error::Busy(format!("publishing: {message}")))
        }
    }
}

/// Druid's row counts from the build's.
pub fn row_stats(p: &Progress) -> RowStats {
    let thrown_away = p.rows_filtered + p.rows_thrown_away;
    RowStats {
        processed: p
            .rows_read
            .saturating_sub(thrown_away)
            .saturating_sub(p.parse_exceptions),
        processed_bytes: 0,
        processed_with_error: 0,
        thrown_away,
        unparseable: p.parse_exceptions,
    }
}

/// Asks the overlord for each time chunk's version and partitions.
struct ActionAllocator<'a> {
    link: &'a dyn PeonLink,
    appended: BTreeMap<(Interval, String), u32>,
}

impl Allocator for ActionAllocator<'_> {
    fn allocate(&mut self, chunk: Interval) -> grove_segment::Result<(String, u32)> {
        let failed = |message: String| grove_segment::Error::invalid(message);
        let reply = self
            .link
            .call(TaskAction::SegmentAllocate { interval: chunk })
            .map_err(|e| failed(format!("allocating {chunk}: {e}")))?;
        let value = match reply {
            ActionReply::Ok(value) => value,
            ActionReply::Err { message, .. } => {
                return Err(failed(format!("allocating {chunk}: {message}")));
            }
        };
        let allocation: Allocation = serde_json::from_value(value)
            .map_err(|e| failed(format!("allocating {chunk}: unreadable answer: {e}")))?;
        if let Some(core) = allocation.core_partitions {
            self.appended
                .insert((chunk, allocation.version.clone()), core);
        }
        Ok((allocation.version, allocation.partition))
    }
}

impl TaskChunks for ActionAllocator<'_> {
    fn appended_core(&self, chunk: &(Interval, String)) -> Option<u32> {
        self.appended.get(chunk).copied()
    }
}
