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
use serde_json::{Value, json};

use grove_segment::Interval;
use grove_segment::ingest::{Allocator, Progress};
use grove_segment::spec::{IngestionSpec, InputSource};

use super::actions::{Allocation, SubTaskState, TaskAction};
use super::{RunnerReport, SUB_TASK_TYPE};
use crate::deep_storage::DeepStorage;
use crate::error::{Error, Result};
use crate::segments::SegmentDescriptor;
use crate::stream_offsets::OffsetCommit;
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
    /// A streaming task serves these segments in progress (all of them: an empty
    /// list stops serving) from its Flight endpoint: the worker announces them.
    Serving {
        flight_address: String,
        segments: Vec<SegmentDescriptor>,
    },
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
        Ok(pushed) => {
            report.state = IngestionState::Completed;
            RunnerReport {
                state: TaskState::Success,
                report,
                error_msg: None,
                pushed,
            }
        }
        Err(e) => {
            let message = e.to_string();
            tracing::error!("task failed: {message}");
            RunnerReport::failed(message, report)
        }
    }
}

/// Runs the task; a sub-task returns the segments it stored for its supervisor.
async fn run(
    payload: &Value,
    deep: &DeepStorage,
    dir: &Path,
    link: &dyn PeonLink,
    report: &mut IngestionReport,
) -> Result<Vec<SegmentDescriptor>> {
    let task_id = payload
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::Invalid("the task has no id".into()))?
        .to_string();
    let spec_json = super::ingestion_spec_of(payload);
    // Relative paths are relative to where the worker runs.
    let spec = IngestionSpec::from_json(&spec_json.to_string(), Path::new(""))?;
    let sub_task = payload.get("type").and_then(Value::as_str) == Some(SUB_TASK_TYPE);
    if !sub_task
        && spec.max_num_concurrent_sub_tasks > 1
        && let Some(parts) = split_input(&spec_json, &spec)
    {
        return run_parallel(&task_id, &spec, &spec_json, parts, deep, link, report)
            .await
            .map(|()| Vec::new());
    }
    tracing::info!("task {task_id}: ingesting into {}", spec.datasource);
    let mut allocator = ActionAllocator::new(link, None);
    // The first rows are reported at once, then at most every PROGRESS_EVERY.
    let mut last_sent: Option<Instant> = None;
    let mut on_progress = |p: &Progress| {
        report.build_segments = row_stats(p);
        if last_sent.is_none_or(|at| at.elapsed() >= PROGRESS_EVERY) {
            last_sent = Some(Instant::now());
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
        "task {task_id}: {} rows in {} segment(s) stored",
        stored.progress.rows_written,
        stored.descriptors.len()
    );
    if sub_task {
        // Its supervisor publishes them with the other sub-tasks' segments.
        return Ok(stored.descriptors);
    }
    publish(deep, link, stored.descriptors, None).await?;
    Ok(Vec::new())
}

/// Asks the overlord to publish `segments` (with a stream's `offsets`); deletes their
/// files if it surely did not.
pub(super) async fn publish(
    deep: &DeepStorage,
    link: &dyn PeonLink,
    segments: Vec<SegmentDescriptor>,
    offsets: Option<OffsetCommit>,
) -> Result<()> {
    let action = TaskAction::SegmentTransactionalInsert {
        segments: segments.clone(),
        offsets,
    };
    match tokio::task::block_in_place(|| link.call(action))? {
        ActionReply::Ok(answer) => {
            if answer.get("published") == Some(&Value::Bool(false)) {
                // A replica's segments of the same rows were published: these files
                // are never referenced.
                task::discard(deep, &segments).await;
            }
            Ok(())
        }
        ActionReply::Err { message, definite } => {
            if definite {
                task::discard(deep, &segments).await;
            }
            Err(Error::Busy(format!("publishing: {message}")))
        }
    }
}

/// Calls an action and decodes its answer.
pub(super) fn call<T: for<'de> Deserialize<'de>>(
    link: &dyn PeonLink,
    action: TaskAction,
) -> Result<T> {
    let name = action.name();
    match tokio::task::block_in_place(|| link.call(action))? {
        ActionReply::Ok(value) => serde_json::from_value(value)
            .map_err(|e| Error::Invalid(format!("{name}: unreadable answer: {e}"))),
        ActionReply::Err { message, .. } => Err(Error::Invalid(format!("{name}: {message}"))),
    }
}

/// The input source of each sub-task: the spec's files (or URIs, or S3 objects and
/// prefixes) dealt out in turn over at most `maxNumConcurrentSubTasks` parts; `None`
/// when there is only one part to make (or inline data, which is not split).
fn split_input(spec_json: &Value, spec: &IngestionSpec) -> Option<Vec<Value>> {
    let source = spec_json.pointer("/spec/ioConfig/inputSource")?;
    let units: Vec<Value> = match &spec.input {
        InputSource::Local { files } => files
            .iter()
            .map(|f| json!({"type": "local", "files": [f]}))
            .collect(),
        InputSource::Http { uris, .. } => uris
            .iter()
            .map(|u| {
                let mut part = source.clone();
                part["uris"] = json!([u]);
                part
            })
            .collect(),
        InputSource::S3 { uris, prefixes, .. } => {
            let mut part = source.clone();
            if let Some(object) = part.as_object_mut() {
                object.remove("objects");
                object.remove("uris");
                object.remove("prefixes");
            }
            uris.iter()
                .map(|u| {
                    let mut p = part.clone();
                    p["uris"] = json!([u]);
                    p
                })
                .chain(prefixes.iter().map(|prefix| {
                    let mut p = part.clone();
                    p["prefixes"] = json!([prefix]);
                    p
                }))
                .collect()
        }
        InputSource::Inline { .. } => return None,
    };
    let parts = spec.max_num_concurrent_sub_tasks.min(units.len());
    if parts < 2 {
        return None;
    }
    let mut merged: Vec<Value> = Vec::with_capacity(parts);
    for (i, unit) in units.into_iter().enumerate() {
        if i < parts {
            merged.push(unit);
            continue;
        }
        let target = &mut merged[i % parts];
        for list in ["files", "uris", "prefixes"] {
            if let Some(more) = unit.get(list).and_then(Value::as_array).cloned() {
                match target.get_mut(list).and_then(Value::as_array_mut) {
                    Some(existing) => existing.extend(more),
                    None => target[list] = Value::Array(more),
                }
            }
        }
    }
    Some(merged)
}

/// The supervisor of a parallel ingestion: starts one sub-task per part of the input,
/// follows them, and publishes all their segments in one transaction once every one
/// has succeeded. One failure fails the whole task, and nothing is published.
async fn run_parallel(
    task_id: &str,
    spec: &IngestionSpec,
    spec_json: &Value,
    parts: Vec<Value>,
    deep: &DeepStorage,
    link: &dyn PeonLink,
    report: &mut IngestionReport,
) -> Result<()> {
    tracing::info!(
        "task {task_id}: ingesting into {} with {} sub-tasks",
        spec.datasource,
        parts.len()
    );
    for (index, part) in parts.into_iter().enumerate() {
        let mut sub_spec = spec_json["spec"].clone();
        sub_spec["ioConfig"]["inputSource"] = part;
        if let Some(tuning) = sub_spec
            .get_mut("tuningConfig")
            .and_then(Value::as_object_mut)
        {
            tuning.insert("maxNumConcurrentSubTasks".into(), json!(1));
        }
        let action = TaskAction::SubTaskSubmit {
            index,
            spec: sub_spec,
        };
        let answer: Value = call(link, action)?;
        tracing::info!("task {task_id}: started sub-task {}", answer["task"]);
    }
    let states = loop {
        tokio::time::sleep(SUB_TASK_POLL).await;
        let states: Vec<SubTaskState> = call(link, TaskAction::SubTaskStatuses)?;
        report.build_segments = states.iter().fold(RowStats::default(), |sum, s| RowStats {
            processed: sum.processed + s.row_stats.processed,
            processed_bytes: sum.processed_bytes + s.row_stats.processed_bytes,
            processed_with_error: sum.processed_with_error + s.row_stats.processed_with_error,
            thrown_away: sum.thrown_away + s.row_stats.thrown_away,
            unparseable: sum.unparseable + s.row_stats.unparseable,
        });
        let _ = link.send(&PeonMessage::Progress(report.clone()));
        if let Some(failed) = states.iter().find(|s| s.status_code == "FAILED") {
            for done in &states {
                task::discard(deep, &done.pushed).await;
            }
            return Err(Error::Invalid(format!(
                "sub-task {} failed: {}",
                failed.id,
                failed.error_msg.as_deref().unwrap_or("no reason given")
            )));
        }
        if states.iter().all(|s| s.status_code == "SUCCESS") {
            break states;
        }
    };
    let mut segments: Vec<SegmentDescriptor> = states.into_iter().flat_map(|s| s.pushed).collect();
    if !spec.append_to_existing {
        set_core_partitions(&mut segments)?;
    }
    tracing::info!(
        "task {task_id}: publishing the {} segment(s) of its sub-tasks",
        segments.len()
    );
    publish(deep, link, segments, None).await
}

/// How often a parallel task looks at its sub-tasks.
const SUB_TASK_POLL: Duration = Duration::from_millis(500);

/// The sub-tasks of a replacing task write one new version of each time chunk, their
/// partitions numbered from one counter: published together, they are the chunk's core
/// partitions, `0..n` with none missing.
fn set_core_partitions(segments: &mut [SegmentDescriptor]) -> Result<()> {
    let mut chunks: BTreeMap<(Interval, String), Vec<usize>> = BTreeMap::new();
    for (i, d) in segments.iter().enumerate() {
        chunks
            .entry((d.id.interval, d.id.version.clone()))
            .or_default()
            .push(i);
    }
    for ((interval, version), members) in chunks {
        let mut partitions: Vec<u32> = members.iter().map(|&i| segments[i].id.partition).collect();
        partitions.sort_unstable();
        let core = members.len() as u32;
        if partitions != (0..core).collect::<Vec<u32>>() {
            return Err(Error::Invalid(format!(
                "the sub-tasks wrote partitions {partitions:?} of {interval} at {version}: \
                 some are missing"
            )));
        }
        for i in members {
            segments[i].core_partitions = core;
        }
    }
    Ok(())
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
pub(super) struct ActionAllocator<'a> {
    link: &'a dyn PeonLink,
    /// A streaming task's sequence, which its replicas share.
    sequence: Option<String>,
    appended: BTreeMap<(Interval, String), u32>,
}

impl<'a> ActionAllocator<'a> {
    pub(super) fn new(link: &'a dyn PeonLink, sequence: Option<String>) -> Self {
        ActionAllocator {
            link,
            sequence,
            appended: BTreeMap::new(),
        }
    }
}

impl Allocator for ActionAllocator<'_> {
    fn allocate(&mut self, chunk: Interval) -> grove_segment::Result<(String, u32)> {
        let failed = |message: String| grove_segment::Error::invalid(message);
        let action = TaskAction::SegmentAllocate {
            interval: chunk,
            sequence: self.sequence.clone(),
        };
        let reply = tokio::task::block_in_place(|| self.link.call(action))
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
