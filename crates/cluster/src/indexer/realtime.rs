//! A streaming task (Druid's `index_kafka`): reads its partitions of a topic from the
//! offsets its supervisor gave it, keeps what it read queryable, and hands it off.
//!
//! - Messages are read by explicit offset ([`KafkaReader`]), parsed with the spec's
//!   input format and conformed with its dataSchema into an incremental index
//!   ([`StreamIngest`]), whose pieces are written to disk at least every
//!   [`PERSIST_EVERY`] and served at once: the peon's Flight endpoint reads them from
//!   [`RealtimeSegments`], and the worker announces them ([`PeonMessage::Serving`]).
//! - Every [`CHECKPOINT_EVERY`] the task tells its supervisor where it is
//!   ([`TaskAction::StreamCheckpoint`]); it asks to end when it has read for
//!   `taskDuration` or holds `maxRowsPerSegment` rows in a segment (or `maxTotalRows`).
//!   The supervisor pauses every replica, takes the furthest offsets any has read as the
//!   group's end, and each replica reads exactly up to that end: replicas build the
//!   same rows.
//! - With replicas, a task reads into its index only the messages the overlord's
//!   checkpoint answers let it serve, and announces a segment only once the replicas
//!   before it do (see [`StreamControl::Continue`]): the replica brokers read first
//!   never serves more than one they fall back to.
//! - Its pieces are listed in a manifest at every persist; a task alone in its group
//!   takes over a dead task's pieces of the same start on its worker.
//! - At its end a task merges its pieces into one file per segment, stores them in
//!   deep storage and publishes them with its offsets moving from start to end, in one
//!   transaction that applies only if the stored offsets still stand at its start
//!   (exactly once). It serves its segments until historicals do, then stops.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use grove_segment::format::Segment;
use grove_segment::ingest::incremental::{StreamIngest, StreamRecord};
use grove_segment::ingest::{Allocator, BuiltSegment};
use grove_segment::spec::KafkaSupervisorSpec;
use grove_segment::{Interval, SegmentId};

use super::RunnerReport;
use super::actions::{StreamControl, TaskAction};
use super::peon::{ActionAllocator, PeonLink, PeonMessage, call, publish, row_stats};
use crate::deep_storage::DeepStorage;
use crate::error::{Error, Result};
use crate::kafka::{KafkaReader, Message};
use crate::segments::SegmentDescriptor;
use crate::stream_offsets::{OffsetCommit, Offsets, TopicPartition};
use crate::task::{self, TaskChunks};
use crate::task_status::{IngestionReport, IngestionState, StreamProgress, TaskState};

/// Druid's type of a Kafka streaming task.
pub const KAFKA_TASK_TYPE: &str = "index_kafka";

/// The longest rows wait in memory before they are written and served.
pub const PERSIST_EVERY: Duration = Duration::from_millis(200);
/// How often a task tells its supervisor where it is.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// How often a paused task asks whether its group's end is decided.
const PAUSED_POLL: Duration = Duration::from_millis(50);
/// How often progress goes to the worker.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// How often the announcements of segments in progress are renewed when their rows
/// grew (`sys.segments.num_rows`, `size`): each renewal is a metadata write.
const SIZES_EVERY: Duration = Duration::from_secs(2);
/// How often a task that published asks whether historicals serve its segments.
const HANDOFF_POLL: Duration = Duration::from_millis(250);
/// The most bytes one fetch asks of a partition.
const FETCH_BYTES: i32 = 4 << 20;
/// How much longer than its poll timeout a fetch may take before the broker counts as
/// unreachable.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The wait before fetching again after a fetch failed.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// The pieces of each segment a streaming task serves, by segment id: what its Flight
/// endpoint reads.
pub type RealtimeSegments = Arc<RwLock<BTreeMap<String, Vec<Arc<Segment>>>>>;

/// Where a streaming task persists its pieces, under its directory.
const PIECES: &str = "pieces";
/// The manifest of the pieces, in that directory.
const MANIFEST: &str = "manifest.json";

/// What a streaming task has persisted: its pieces per segment, and the offsets up to
/// which they hold the rows of its messages. Rewritten (atomically) at every persist.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    datasource: String,
    /// The task's [`StreamTask::fingerprint`].
    spec: String,
    /// The topic, or the topicPattern.
    stream: String,
    start: Offsets,
    ingested: Offsets,
    segments: Vec<ManifestSegment>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ManifestSegment {
    interval: Interval,
    /// Piece file names, in the pieces directory.
    files: Vec<String>,
}

/// Locks a pieces directory (its `LOCK` file): held by the task writing there, so
/// that only a dead task's pieces are taken over. `None` when another holds it.
fn lock_pieces(dir: &Path) -> Option<std::fs::File> {
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("LOCK"))
        .ok()?;
    file.try_lock().ok()?;
    Some(file)
}

impl Manifest {
    fn read(dir: &Path) -> Option<Manifest> {
        let text = std::fs::read(dir.join(MANIFEST)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    fn write(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_vec(self).map_err(|e| Error::Store(e.to_string()))?;
        let temporary = dir.join("manifest.json.tmp");
        std::fs::write(&temporary, text)
            .and_then(|()| std::fs::rename(&temporary, dir.join(MANIFEST)))
            .map_err(|e| Error::io(format!("writing the manifest in {}", dir.display()), e))
    }
}

/// The fields a task's `ioConfig` has beyond its supervisor's.
const TASK_IO_FIELDS: [&str; 6] = [
    "taskGroupId",
    "baseSequenceName",
    "startSequenceNumbers",
    "useTransaction",
    "minimumMessageTime",
    "maximumMessageTime",
];

/// What a streaming task is given.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamTask {
    pub id: String,
    pub spec: KafkaSupervisorSpec,
    pub task_group: u32,
    /// Shared by the replicas of one group: their segments take the same ids.
    pub sequence: String,
    /// The next offset to read per partition: the task reads exactly these partitions.
    pub start: Offsets,
    /// Rows whose time is outside are thrown away (the rejection periods).
    pub window: Option<Interval>,
}

/// The dataSchema, ioConfig and tuningConfig of a supervisor spec, inside `spec` or
/// beside it as older specs have them.
pub fn spec_sections(spec: &Value) -> Value {
    let inner = spec.get("spec").unwrap_or(spec);
    let mut sections = serde_json::Map::new();
    for name in ["dataSchema", "ioConfig", "tuningConfig"] {
        if let Some(section) = inner.get(name) {
            sections.insert(name.into(), section.clone());
        }
    }
    Value::Object(sections)
}

impl StreamTask {
    /// The task's payload, in the shape of Druid's `index_kafka` tasks: the supervisor
    /// spec's sections, with the task's own fields in `ioConfig`.
    pub fn payload(&self, supervisor_spec: &Value, group_id: &str) -> Value {
        let sections = spec_sections(supervisor_spec);
        let mut io = sections
            .get("ioConfig")
            .cloned()
            .unwrap_or_else(|| json!({}));
        let partitions: serde_json::Map<String, Value> = self
            .start
            .iter()
            .map(|(p, o)| (p.druid_key(&self.spec.topic), json!(o)))
            .collect();
        io["taskGroupId"] = json!(self.task_group);
        io["baseSequenceName"] = json!(self.sequence);
        io["startSequenceNumbers"] = json!({
            "type": "start",
            "stream": self.spec.topic.stream(),
            "partitionSequenceNumberMap": partitions,
        });
        io["useTransaction"] = json!(true);
        // An open end of the window is left out, as Druid leaves it out.
        if let Some(window) = self.window {
            if window.start != Interval::ETERNITY.start {
                io["minimumMessageTime"] = json!(grove_segment::id::format_millis(window.start));
            }
            if window.end != Interval::ETERNITY.end {
                io["maximumMessageTime"] = json!(grove_segment::id::format_millis(window.end));
            }
        }
        json!({
            "type": KAFKA_TASK_TYPE,
            "id": self.id,
            "groupId": group_id,
            "dataSource": self.spec.datasource,
            "resource": {"availabilityGroup": group_id, "requiredCapacity": 1},
            "dataSchema": sections.get("dataSchema"),
            "ioConfig": io,
            "tuningConfig": sections.get("tuningConfig").cloned().unwrap_or_else(|| json!({"type": "kafka"})),
            "context": {"priority": crate::locks::REALTIME_PRIORITY},
        })
    }

    /// The parts of a payload that decide what rows its messages make (dataSchema,
    /// input format, tuning), as JSON text: a task takes over only pieces made alike.
    pub fn fingerprint(payload: &Value) -> String {
        json!({
            "dataSchema": payload.get("dataSchema"),
            "inputFormat": payload.pointer("/ioConfig/inputFormat"),
            "tuningConfig": payload.get("tuningConfig"),
        })
        .to_string()
    }

    /// Reads a task's payload back.
    pub fn from_payload(payload: &Value) -> Result<StreamTask> {
        let invalid = |what: &str| Error::Invalid(format!("streaming task payload: {what}"));
        let id = payload
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("no id"))?
            .to_string();
        let mut io = payload
            .get("ioConfig")
            .cloned()
            .ok_or_else(|| invalid("no ioConfig"))?;
        let task_group = io
            .get("taskGroupId")
            .and_then(Value::as_u64)
            .and_then(|g| u32::try_from(g).ok())
            .ok_or_else(|| invalid("no ioConfig.taskGroupId"))?;
        let sequence = io
            .get("baseSequenceName")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("no ioConfig.baseSequenceName"))?
            .to_string();
        let start_map = io
            .pointer("/startSequenceNumbers/partitionSequenceNumberMap")
            .and_then(Value::as_object)
            .cloned()
            .ok_or_else(|| {
                invalid("no ioConfig.startSequenceNumbers.partitionSequenceNumberMap")
            })?;
        let time = |field: &str| -> Result<Option<i64>> {
            match io.get(field).and_then(Value::as_str) {
                None => Ok(None),
                Some(text) => grove_segment::id::parse_instant(text)
                    .map(Some)
                    .map_err(|_| invalid(&format!("ioConfig.{field} is not a time"))),
            }
        };
        let window = match (time("minimumMessageTime")?, time("maximumMessageTime")?) {
            (None, None) => None,
            (min, max) => Some(
                Interval::new(
                    min.unwrap_or(Interval::ETERNITY.start),
                    max.unwrap_or(Interval::ETERNITY.end),
                )
                .map_err(|e| invalid(&e.to_string()))?,
            ),
        };
        if let Some(io) = io.as_object_mut() {
            for field in TASK_IO_FIELDS {
                io.remove(field);
            }
        }
        let supervisor = json!({
            "type": "kafka",
            "spec": {
                "dataSchema": payload.get("dataSchema"),
                "ioConfig": io,
                "tuningConfig": payload.get("tuningConfig"),
            }
        });
        let spec = KafkaSupervisorSpec::from_json(&supervisor.to_string())?;
        let mut start = Offsets::new();
        for (p, o) in start_map {
            let p = TopicPartition::from_druid_key(&p, &spec.topic)
                .map_err(|e| invalid(&e.to_string()))?;
            let o = o
                .as_i64()
                .ok_or_else(|| invalid("an offset is not a number"))?;
            start.insert(p, o);
        }
        Ok(StreamTask {
            id,
            spec,
            task_group,
            sequence,
            start,
            window,
        })
    }
}

/// Runs the streaming task in `payload` to its end. `serving` is what the peon's
/// Flight endpoint at `flight_address` reads.
pub async fn run_stream_task(
    payload: &Value,
    deep: &DeepStorage,
    dir: &Path,
    link: &dyn PeonLink,
    serving: &RealtimeSegments,
    flight_address: &str,
) -> RunnerReport {
    let mut report = IngestionReport {
        state: IngestionState::BuildSegments,
        ..IngestionReport::default()
    };
    let outcome = match StreamTask::from_payload(payload) {
        Ok(task) => {
            let mut run = Run {
                task,
                fingerprint: StreamTask::fingerprint(payload),
                deep,
                dir,
                link,
                serving,
                flight_address,
                report: &mut report,
            };
            run.run().await
        }
        Err(e) => Err(e),
    };
    // Whatever happened, nothing is served any more.
    stop_serving(serving, link, flight_address);
    if outcome.is_ok() {
        // In deep storage and served by historicals: the local copies go. A task that
        // failed keeps its pieces for the next task from its start to take over.
        let _ = std::fs::remove_dir_all(dir.join(PIECES));
        let _ = std::fs::remove_dir_all(dir.join("final"));
    }
    match outcome {
        Ok(()) => {
            report.state = IngestionState::Completed;
            RunnerReport {
                state: TaskState::Success,
                report,
                error_msg: None,
                pushed: Vec::new(),
            }
        }
        Err(e) => {
            let message = e.to_string();
            tracing::error!("task failed: {message}");
            RunnerReport::failed(message, report)
        }
    }
}

fn stop_serving(serving: &RealtimeSegments, link: &dyn PeonLink, flight_address: &str) {
    serving.write().unwrap_or_else(|e| e.into_inner()).clear();
    let _ = link.send(&PeonMessage::Serving {
        flight_address: flight_address.to_string(),
        segments: Vec::new(),
    });
}

struct Run<'a> {
    task: StreamTask,
    /// [`StreamTask::fingerprint`] of its payload.
    fingerprint: String,
    deep: &'a DeepStorage,
    dir: &'a Path,
    link: &'a dyn PeonLink,
    serving: &'a RealtimeSegments,
    flight_address: &'a str,
    report: &'a mut IngestionReport,
}

/// Where reading stands.
struct Position {
    /// The next offset to fetch, per partition.
    next: Offsets,
    latest: Offsets,
    end: Option<Offsets>,
    paused: bool,
    error: Option<String>,
    /// Messages fetched but not read into the index yet: those at or above `visible`.
    held: BTreeMap<TopicPartition, VecDeque<Message>>,
    /// Messages below these offsets may be served: every live replica has fetched them.
    /// A task without replicas serves what it fetches at once.
    visible: Option<Offsets>,
    /// The offset after the last message read into the index, per partition: its
    /// pieces hold the rows of the messages from the start up to these.
    ingested: Offsets,
    /// What its pieces hold, as of the last persist: what it serves.
    exposed: Offsets,
    /// The segments its worker announces for it.
    announced: BTreeSet<String>,
    /// Their rows when last announced, and when that was.
    announced_rows: (u64, Option<Instant>),
    /// The segments it may announce (besides those it does); `None`: any.
    may_announce: Option<BTreeSet<String>>,
}

impl Position {
    fn done(&self) -> bool {
        let read = self.end.as_ref().is_some_and(|end| {
            end.iter()
                .all(|(p, e)| self.next.get(p).is_some_and(|n| n >= e))
        });
        read && self.held.values().all(VecDeque::is_empty)
    }

    /// Widens what it may announce: `None` lets it announce anything.
    fn allow_announcing(&mut self, announce: Option<Vec<String>>) {
        match announce {
            None => self.may_announce = None,
            Some(ids) => {
                if let Some(allowed) = &mut self.may_announce {
                    allowed.extend(ids);
                }
            }
        }
    }

    /// Lets more be served, never less.
    fn raise_visible(&mut self, visible: Offsets) {
        if let Some(mine) = &mut self.visible {
            for (p, o) in visible {
                let v = mine.entry(p).or_insert(o);
                *v = (*v).max(o);
            }
        }
    }

    /// The held messages that may be served now, by partition, in offset order.
    fn release(&mut self) -> Vec<(TopicPartition, Vec<Message>)> {
        let mut out = Vec::new();
        for (p, held) in &mut self.held {
            let limit = match &self.visible {
                None => i64::MAX,
                Some(visible) => visible.get(p).copied().unwrap_or(i64::MIN),
            };
            let n = held.iter().take_while(|m| m.offset < limit).count();
            if n > 0 {
                out.push((p.clone(), held.drain(..n).collect()));
            }
        }
        out
    }

    fn progress(&self) -> StreamProgress {
        StreamProgress {
            current: self.next.clone(),
            latest: self.latest.clone(),
            end: self.end.clone(),
            paused: self.paused,
            error: self.error.clone(),
        }
    }
}

impl Run<'_> {
    async fn run(&mut self) -> Result<()> {
        let task = self.task.clone();
        tracing::info!(
            "task {}: reading {} partitions {:?} into {}",
            task.id,
            task.spec.bootstrap_servers,
            task.start,
            task.spec.datasource
        );
        let spec = task.spec.ingestion_spec(task.window);
        let columns = task.spec.record_columns.clone();
        let mut ingest = StreamIngest::new(&spec, columns, &self.dir.join(PIECES))?;
        // Held while the task lives: no other task takes these pieces over meanwhile.
        let _mine = lock_pieces(&self.dir.join(PIECES))
            .ok_or_else(|| Error::Busy(format!("the pieces of task {} are locked", task.id)))?;
        let mut allocator = ActionAllocator::new(self.link, Some(task.sequence.clone()));
        let mut at = Position {
            next: task.start.clone(),
            latest: BTreeMap::new(),
            end: None,
            paused: false,
            error: None,
            held: BTreeMap::new(),
            visible: (task.spec.replicas > 1).then(|| task.start.clone()),
            ingested: task.start.clone(),
            exposed: task.start.clone(),
            announced: BTreeSet::new(),
            announced_rows: (0, None),
            may_announce: (task.spec.replicas > 1).then(BTreeSet::new),
        };
        // A task alone in its group takes over what a task of the same start that died
        // on this worker persisted, instead of reading it again.
        if task.spec.replicas == 1
            && let Some(ingested) = self.adopt(&mut ingest, &mut allocator)?
        {
            at.next = ingested.clone();
            at.ingested = ingested;
            self.persist(&mut ingest, &allocator, &mut at, true)?;
        }
        let started = Instant::now();
        let duration = Duration::from_millis(task.spec.task_duration_ms.max(0) as u64);
        let poll = Duration::from_millis(task.spec.poll_timeout_ms);
        let mut reader: Option<KafkaReader> = None;
        let mut last_persist = Instant::now();
        let mut last_checkpoint: Option<Instant> = None;
        let mut last_progress: Option<Instant> = None;
        while !at.done() {
            // Checkpoint: where it is, whether it wants to end.
            let due = if at.paused {
                PAUSED_POLL
            } else {
                CHECKPOINT_EVERY
            };
            if last_checkpoint.is_none_or(|t| t.elapsed() >= due) {
                last_checkpoint = Some(Instant::now());
                let full = ingest.index.largest_segment_rows() >= task.spec.max_rows_per_segment
                    || ingest.index.total_rows() as u64 >= task.spec.max_total_rows;
                let want_end = started.elapsed() >= duration || full;
                let checkpoint = TaskAction::StreamCheckpoint {
                    offsets: at.next.clone(),
                    exposed: at.exposed.clone(),
                    announced: at.announced.iter().cloned().collect(),
                    paused: at.paused,
                    want_end,
                };
                // An overlord that cannot answer now (a new leader is being elected)
                // is asked again at the next checkpoint; reading goes on meanwhile.
                let control = call::<StreamControl>(self.link, checkpoint)
                    .inspect_err(|e| tracing::warn!("task {}: checkpoint: {e}", task.id));
                match control {
                    // Unanswered: it goes on as it was, and asks again.
                    Err(_) => {}
                    Ok(StreamControl::Continue { visible, announce }) => {
                        at.paused = false;
                        at.raise_visible(visible);
                        at.allow_announcing(announce);
                    }
                    Ok(StreamControl::Pause) => at.paused = true,
                    Ok(StreamControl::End {
                        offsets,
                        visible,
                        announce,
                    }) => {
                        at.allow_announcing(announce);
                        if at.end.is_none() {
                            tracing::info!("task {}: reading up to {offsets:?}", task.id);
                        }
                        check_end(&at.next, &offsets)?;
                        // Every replica reads exactly this far.
                        at.raise_visible(visible);
                        at.end = Some(offsets);
                        at.paused = false;
                    }
                }
                self.ingest(&mut at, &mut ingest, &mut allocator)?;
                if task.spec.replicas > 1 {
                    // What the other replicas serve already is served here at once:
                    // queries ask this one first.
                    last_persist = Instant::now();
                    self.persist(&mut ingest, &allocator, &mut at, false)?;
                }
                self.announce(&ingest, &allocator, &mut at)?;
                if at.done() {
                    break;
                }
            }
            if at.paused {
                tokio::time::sleep(PAUSED_POLL).await;
            } else {
                self.read(&mut reader, &mut ingest, &mut allocator, &mut at, poll)
                    .await?;
            }
            if last_persist.elapsed() >= PERSIST_EVERY {
                last_persist = Instant::now();
                self.persist(&mut ingest, &allocator, &mut at, false)?;
            }
            if last_progress.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY) {
                last_progress = Some(Instant::now());
                self.progress(&ingest, &at);
            }
        }
        self.persist(&mut ingest, &allocator, &mut at, false)?;
        self.progress(&ingest, &at);
        if task.spec.replicas > 1 {
            // The replicas before this one serve their last rows once it says it
            // serves them (best effort: one that dies stops holding them up anyway).
            let last = TaskAction::StreamCheckpoint {
                offsets: at.next.clone(),
                exposed: at.exposed.clone(),
                announced: at.announced.iter().cloned().collect(),
                paused: false,
                want_end: false,
            };
            let _ = call::<StreamControl>(self.link, last);
        }
        let end = at.end.clone().unwrap_or_default();
        self.hand_off(&mut ingest, &allocator, end).await
    }

    /// One round of fetches, every partition not at its end at once; the messages are
    /// read in partition order.
    async fn read(
        &self,
        reader: &mut Option<KafkaReader>,
        ingest: &mut StreamIngest,
        allocator: &mut ActionAllocator<'_>,
        at: &mut Position,
        poll: Duration,
    ) -> Result<()> {
        let task = &self.task;
        if reader.is_none() {
            match KafkaReader::connect(&task.spec.bootstrap_servers).await {
                Ok(r) => *reader = Some(r),
                Err(e) => {
                    at.error = Some(e.to_string());
                    tokio::time::sleep(RETRY_AFTER).await;
                    return Ok(());
                }
            }
        }
        let Some(kafka) = reader.as_ref() else {
            return Ok(());
        };
        let wanted: Vec<(TopicPartition, i64)> = at
            .next
            .iter()
            .filter(|(p, n)| {
                at.end
                    .as_ref()
                    .is_none_or(|e| e.get(p).is_some_and(|e| *n < e))
            })
            .map(|(p, n)| (p.clone(), *n))
            .collect();
        let fetches = wanted
            .iter()
            .map(|(p, n)| kafka.fetch(&p.topic, p.partition, *n, FETCH_BYTES, poll));
        // A broker that stops answering must not stop the checkpoints.
        let results =
            match tokio::time::timeout(poll + FETCH_TIMEOUT, futures::future::join_all(fetches))
                .await
            {
                Ok(results) => results,
                Err(_) => {
                    at.error = Some(format!(
                        "Kafka at {} did not answer within {:?}",
                        task.spec.bootstrap_servers,
                        poll + FETCH_TIMEOUT
                    ));
                    *reader = None;
                    return Ok(());
                }
            };
        let mut failed = None;
        for ((partition, _), result) in wanted.into_iter().zip(results) {
            let fetched = match result {
                Ok(f) => f,
                Err(e) => {
                    failed = Some(e.to_string());
                    continue;
                }
            };
            at.latest.insert(partition.clone(), fetched.high_watermark);
            let end = at.end.as_ref().and_then(|e| e.get(&partition)).copied();
            let beyond = end.is_some_and(|e| fetched.messages.iter().any(|m| m.offset >= e));
            let empty = fetched.messages.is_empty();
            let within: Vec<Message> = fetched
                .messages
                .into_iter()
                .filter(|m| end.is_none_or(|e| m.offset < e))
                .collect();
            if let Some(last) = within.last() {
                at.next.insert(partition.clone(), last.offset + 1);
            }
            at.held.entry(partition.clone()).or_default().extend(within);
            // Nothing readable is left below the end: the partition is done.
            if let Some(end) = end
                && (beyond || (empty && fetched.high_watermark >= end))
            {
                at.next.insert(partition, end);
            }
        }
        self.ingest(at, ingest, allocator)?;
        match failed {
            Some(e) => {
                tracing::warn!("task {}: {e}", task.id);
                at.error = Some(e);
                // A broker that went away is found again.
                *reader = None;
                tokio::time::sleep(RETRY_AFTER).await;
            }
            None => at.error = None,
        }
        Ok(())
    }

    /// Reads the messages that may be served now into the index.
    fn ingest(
        &self,
        at: &mut Position,
        ingest: &mut StreamIngest,
        allocator: &mut ActionAllocator<'_>,
    ) -> Result<()> {
        for (partition, messages) in at.release() {
            let records: Vec<StreamRecord<'_>> = messages
                .iter()
                .map(|m| StreamRecord {
                    offset: m.offset as u64,
                    value: m.value.as_deref(),
                    key: m.key.as_deref(),
                    timestamp: m.timestamp,
                    headers: &m.headers,
                })
                .collect();
            let source = format!("{} partition {}", partition.topic, partition.partition);
            ingest.read(&records, &partition.topic, &source, allocator)?;
            if let Some(last) = messages.last() {
                at.ingested.insert(partition, last.offset + 1);
            }
        }
        Ok(())
    }

    /// Writes what was read since the last persist (or, `force`d, what the index
    /// holds), serves it, and records it in the manifest.
    fn persist(
        &self,
        ingest: &mut StreamIngest,
        allocator: &ActionAllocator<'_>,
        at: &mut Position,
        force: bool,
    ) -> Result<()> {
        let wrote = ingest.index.persist()?;
        // Whatever was read into the index is in its pieces now, and served.
        at.exposed = at.ingested.clone();
        if !wrote && !force {
            return Ok(());
        }
        let snapshot = ingest.index.snapshot();
        {
            let mut serving = self.serving.write().unwrap_or_else(|e| e.into_inner());
            for (id, pieces) in &snapshot {
                serving.insert(id.to_string(), pieces.clone());
            }
        }
        self.announce(ingest, allocator, at)?;
        let manifest = Manifest {
            datasource: self.task.spec.datasource.clone(),
            spec: self.fingerprint.clone(),
            stream: self.task.spec.topic.stream().to_string(),
            start: self.task.start.clone(),
            ingested: at.ingested.clone(),
            segments: snapshot
                .iter()
                .map(|(id, pieces)| ManifestSegment {
                    interval: id.interval,
                    files: pieces
                        .iter()
                        .filter_map(|p| p.path().file_name())
                        .map(|f| f.to_string_lossy().into_owned())
                        .collect(),
                })
                .collect(),
        };
        manifest.write(&self.dir.join(PIECES))
    }

    /// Has the worker announce the segments it serves that it may announce, when
    /// there are new ones.
    fn announce(
        &self,
        ingest: &StreamIngest,
        allocator: &ActionAllocator<'_>,
        at: &mut Position,
    ) -> Result<()> {
        let snapshot = ingest.index.snapshot();
        let allowed: Vec<&(SegmentId, Vec<Arc<Segment>>)> = snapshot
            .iter()
            .filter(|(id, _)| {
                let id = id.to_string();
                at.announced.contains(&id)
                    || at.may_announce.as_ref().is_none_or(|a| a.contains(&id))
            })
            .collect();
        let segments: Vec<SegmentDescriptor> = allowed
            .iter()
            .map(|(id, pieces)| describe_in_progress(id, pieces, allocator))
            .collect();
        let rows: u64 = segments.iter().map(|d| d.num_rows).sum();
        let same = allowed
            .iter()
            .all(|(id, _)| at.announced.contains(&id.to_string()));
        let (last_rows, last) = at.announced_rows;
        let grown = rows != last_rows && last.is_none_or(|t| t.elapsed() >= SIZES_EVERY);
        if same && !grown {
            return Ok(());
        }
        self.link.send(&PeonMessage::Serving {
            flight_address: self.flight_address.to_string(),
            segments,
        })?;
        at.announced = allowed.iter().map(|(id, _)| id.to_string()).collect();
        at.announced_rows = (rows, Some(Instant::now()));
        Ok(())
    }

    /// Takes over the pieces of a task of this worker that read from the same start
    /// and died: their rows go into this task's index under its own segment ids, and
    /// reading goes on from where they end. Returns where that is, if anything was
    /// taken. The manifest taken is renamed first, so that no other task takes it too.
    fn adopt(
        &self,
        ingest: &mut StreamIngest,
        allocator: &mut ActionAllocator<'_>,
    ) -> Result<Option<Offsets>> {
        let task = &self.task;
        let Some(parent) = self.dir.parent() else {
            return Ok(None);
        };
        let Ok(entries) = std::fs::read_dir(parent) else {
            return Ok(None);
        };
        let mut best: Option<(std::path::PathBuf, Manifest)> = None;
        for entry in entries.flatten() {
            if entry.path() == self.dir {
                continue;
            }
            let pieces = entry.path().join(PIECES);
            let Some(manifest) = Manifest::read(&pieces) else {
                continue;
            };
            // Pieces of a dead task from before this task's start can never be taken
            // over (offsets only move on): they go.
            let stream = task.spec.topic.stream();
            let passed = manifest.datasource == task.spec.datasource
                && manifest.stream == stream
                && manifest.start.keys().eq(task.start.keys())
                && manifest
                    .start
                    .iter()
                    .all(|(p, o)| task.start.get(p).is_some_and(|s| o < s));
            if passed && let Some(_dead) = lock_pieces(&pieces) {
                tracing::info!(
                    "task {}: removing the stale pieces in {}",
                    task.id,
                    pieces.display()
                );
                let _ = std::fs::remove_dir_all(&pieces);
                continue;
            }
            let read: i64 = manifest.ingested.values().sum();
            let fits = manifest.datasource == task.spec.datasource
                && manifest.spec == self.fingerprint
                && manifest.stream == stream
                && manifest.start == task.start
                && manifest.ingested != task.start;
            let better = best
                .as_ref()
                .is_none_or(|(_, b)| read > b.ingested.values().sum::<i64>());
            if fits && better {
                best = Some((pieces, manifest));
            }
        }
        let Some((pieces_dir, manifest)) = best else {
            return Ok(None);
        };
        // Only a dead task's pieces: a live one holds its lock.
        let Some(_theirs) = lock_pieces(&pieces_dir) else {
            return Ok(None);
        };
        let claimed = pieces_dir.join("manifest.adopted");
        if std::fs::rename(pieces_dir.join(MANIFEST), &claimed).is_err() {
            return Ok(None);
        }
        // Every piece must open before any is taken: all or nothing.
        let mut segments = Vec::new();
        for segment in &manifest.segments {
            let mut pieces = Vec::new();
            for file in &segment.files {
                match Segment::open(&pieces_dir.join(file)) {
                    Ok(piece) => pieces.push(piece),
                    Err(e) => {
                        tracing::warn!(
                            "task {}: not taking over {}: {e}",
                            task.id,
                            pieces_dir.display()
                        );
                        return Ok(None);
                    }
                }
            }
            segments.push((segment.interval, pieces));
        }
        let mut rows = 0;
        for (interval, pieces) in segments {
            let (version, partition) = allocator.allocate(interval)?;
            let id = SegmentId {
                datasource: task.spec.datasource.clone(),
                interval,
                version,
                partition,
            };
            rows += ingest.index.adopt(id, &pieces)?;
        }
        tracing::info!(
            "task {}: took over {rows} rows persisted in {}, read up to {:?}",
            task.id,
            pieces_dir.display(),
            manifest.ingested
        );
        // Copied into this task's own pieces: the old ones are not needed any more.
        let _ = std::fs::remove_dir_all(&pieces_dir);
        Ok(Some(manifest.ingested))
    }

    fn progress(&mut self, ingest: &StreamIngest, at: &Position) {
        self.report.build_segments = row_stats(&ingest.progress);
        self.report.stream = Some(at.progress());
        let _ = self.link.send(&PeonMessage::Progress(self.report.clone()));
    }

    /// Merges, stores and publishes the segments with the offsets they were read
    /// from, then serves them until historicals do.
    async fn hand_off(
        &mut self,
        ingest: &mut StreamIngest,
        allocator: &ActionAllocator<'_>,
        end: Offsets,
    ) -> Result<()> {
        let task = &self.task;
        let built = ingest.index.finish(&self.dir.join("final"))?;
        let descriptors = task::describe(&built, allocator, &task.id)?;
        for (i, (b, d)) in built.iter().zip(&descriptors).enumerate() {
            if let Err(e) = self.deep.store(&b.path, &d.path).await {
                task::discard(self.deep, &descriptors[..i]).await;
                return Err(e);
            }
        }
        let commit = OffsetCommit {
            datasource: task.spec.datasource.clone(),
            stream: task.spec.topic.stream().to_string(),
            start: task.start.clone(),
            end,
        };
        let rows: u64 = built
            .iter()
            .map(|b: &BuiltSegment| b.written.num_rows)
            .sum();
        tracing::info!(
            "task {}: publishing {} segment(s) of {rows} rows with offsets {:?} to {:?}",
            task.id,
            descriptors.len(),
            commit.start,
            commit.end
        );
        let ids: Vec<String> = descriptors.iter().map(|d| d.id.to_string()).collect();
        publish(self.deep, self.link, descriptors, Some(commit)).await?;
        // Published: nobody may take these rows over again.
        let _ = std::fs::remove_file(self.dir.join(PIECES).join(MANIFEST));
        self.report.state = IngestionState::SegmentAvailabilityWait;
        let _ = self.link.send(&PeonMessage::Progress(self.report.clone()));
        if ids.is_empty() {
            return Ok(());
        }
        let waited = Instant::now();
        let timeout = Duration::from_millis(task.spec.handoff_condition_timeout_ms);
        loop {
            let asked = call(self.link, TaskAction::SegmentsServed { ids: ids.clone() });
            // Not knowing is not being served: asked again.
            let served = asked.unwrap_or_else(|e| {
                tracing::warn!("task {}: asking about hand-off: {e}", task.id);
                false
            });
            if served {
                self.report.segment_availability_confirmed = true;
                break;
            }
            if !timeout.is_zero() && waited.elapsed() >= timeout {
                tracing::warn!(
                    "task {}: historicals did not serve its segments within {timeout:?}; \
                     it stops serving them",
                    task.id
                );
                break;
            }
            tokio::time::sleep(HANDOFF_POLL).await;
        }
        self.report.segment_availability_wait_time_ms = waited.elapsed().as_millis() as u64;
        Ok(())
    }
}

/// What brokers learn of a segment in progress: its id, its chunk's core partitions
/// and its columns.
fn describe_in_progress(
    id: &SegmentId,
    pieces: &[Arc<Segment>],
    allocator: &ActionAllocator<'_>,
) -> SegmentDescriptor {
    SegmentDescriptor {
        id: id.clone(),
        core_partitions: allocator
            .appended_core(&(id.interval, id.version.clone()))
            .unwrap_or(0),
        size: pieces.iter().map(|p| p.size() as u64).sum(),
        num_rows: pieces.iter().map(|p| p.num_rows() as u64).sum(),
        crc32: 0,
        path: String::new(),
        columns: pieces
            .first()
            .map(|p| SegmentDescriptor::columns_of(p))
            .unwrap_or_default(),
        created: String::new(),
        used: true,
        commit: None,
    }
}

/// An end must not lie behind what the task has read: replicas would differ.
fn check_end(next: &Offsets, end: &Offsets) -> Result<()> {
    for (p, n) in next {
        match end.get(p) {
            Some(e) if e >= n => {}
            _ => {
                return Err(Error::Invalid(format!(
                    "the supervisor ended partition {p} at {:?}, behind offset {n} this task \
                     has read",
                    end.get(p)
                )));
            }
        }
    }
    Ok(())
}
