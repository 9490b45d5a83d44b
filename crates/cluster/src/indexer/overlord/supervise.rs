//! The streaming supervisors, run by the leading overlord (Druid's
//! `KafkaSupervisor`): for each datasource with a Kafka supervisor, every
//! [`SUPERVISE_EVERY`], it
//! - finds the partitions of its topic (or of every topic its `topicPattern` matches
//!   as a whole) and their high watermarks (`latestOffsets`);
//! - keeps one *reading* task group per `taskGroupId` (Druid's assignment: partition
//!   `p` of one topic belongs to group `p % taskCount`; see
//!   [`TopicPartition::task_group`]), of `replicas` tasks that share a sequence: a new
//!   group starts where the group publishing before it ends, or else at the stored
//!   offsets, or else (for a partition never read) at the earliest or latest offset as
//!   `useEarliestOffset` says, but at the earliest for a partition that appeared while
//!   the supervisor ran;
//! - ends a reading group early when its partitions grew, so the next group reads the
//!   new ones;
//! - stops a reading group whose start no longer follows from the stored offsets (a
//!   group before it failed): it could never publish;
//! - ends reading groups gracefully (their tasks publish what they read) at
//!   `taskDuration`, and when the supervisor is suspended, terminated, or its spec
//!   replaced;
//! - stops the tasks of a group that has not published within `completionTimeout`
//!   of when it began ending (a task that hangs, or cannot publish): the next group
//!   reads their messages again from the stored offsets;
//! - forgets groups whose tasks have all ended, counting groups that published
//!   nothing as failures.
//!
//! What it saw is kept for the supervisor API ([`SupervisorStatus`]). All decisions
//! rest on the store (task records, group states, stored offsets), so a new leader
//! carries on where the last one stopped.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;

use grove_segment::Interval;
use grove_segment::spec::{KafkaSupervisorSpec, KafkaTopic};

use super::Overlord;
use super::streams::{GROUPS_PREFIX, GroupState, edit_group, forget_group, group_key};
use crate::error::{Error, Result};
use crate::indexer::realtime::{KAFKA_TASK_TYPE, StreamTask};
use crate::indexer::{self, decode, encode};
use crate::kafka::KafkaReader;
use crate::metastore::Txn;
use crate::stream_offsets::{self, Offsets, TopicPartition};
use crate::supervisors::{self, SupervisorRecord, SupervisorState};
use crate::task_status::{self, RowStats, TaskRecord, TaskState};

/// Time between two passes over the supervisors.
pub const SUPERVISE_EVERY: Duration = Duration::from_millis(500);
/// The longest a supervisor waits on Kafka in one pass.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(5);
/// Groups in a row that end without publishing before a supervisor is
/// `UNHEALTHY_TASKS` (Druid's `unhealthinessThreshold`).
const UNHEALTHY_AFTER: u32 = 3;
/// Errors a status keeps.
const RECENT_ERRORS: usize = 10;

/// A supervisor as its status shows it.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SupervisorStatus {
    pub id: String,
    pub topic: String,
    /// Druid's `state`: PENDING, RUNNING, SUSPENDED, STOPPING, UNHEALTHY_SUPERVISOR,
    /// UNHEALTHY_TASKS.
    pub state: String,
    pub healthy: bool,
    pub suspended: bool,
    pub partitions: Vec<TopicPartition>,
    pub task_count: u32,
    pub replicas: u32,
    pub duration_seconds: i64,
    /// High watermark per partition.
    pub latest_offsets: Offsets,
    /// Where reading stands per partition: the furthest a reading task is, else the
    /// stored offset.
    pub current_offsets: Offsets,
    pub lag: Offsets,
    pub aggregate_lag: i64,
    pub offsets_last_updated: Option<String>,
    pub active_tasks: Vec<GroupTask>,
    pub publishing_tasks: Vec<GroupTask>,
    /// Newest first: `(ISO time, message)`.
    pub recent_errors: Vec<(String, String)>,
    /// Row counts of the tasks running now, per task group then task.
    pub stats: BTreeMap<u32, BTreeMap<String, RowStats>>,
}

/// A task of a group, as the status lists it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupTask {
    pub id: String,
    pub task_group: u32,
    pub starting_offsets: Offsets,
    pub current_offsets: Offsets,
    /// When it started (ISO-8601).
    pub start_time: Option<String>,
}

/// What the leader keeps between passes for one supervisor.
#[derive(Default)]
pub(super) struct Runner {
    reader: Option<(String, KafkaReader)>,
    status: SupervisorStatus,
    consecutive_failures: u32,
    kafka_error: Option<String>,
    /// The partitions Kafka had when this leader first asked.
    seen: Option<BTreeSet<TopicPartition>>,
    /// Partitions that appeared later (a new topic matching the pattern, or partitions
    /// added to a topic): read from their earliest offset whatever `useEarliestOffset`
    /// says, since their messages came after the supervisor started.
    discovered: BTreeSet<TopicPartition>,
    /// The state last written to the store.
    written: Option<SupervisorState>,
}

impl Runner {
    fn error(&mut self, message: String) {
        tracing::warn!("supervisor {}: {message}", self.status.id);
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let errors = &mut self.status.recent_errors;
        if errors.first().is_none_or(|(_, m)| *m != message) {
            errors.insert(0, (now, message));
            errors.truncate(RECENT_ERRORS);
        }
    }
}

/// A task group as the store has it: its state and its tasks' records.
struct Group {
    sequence: String,
    state: GroupState,
    task_group: u32,
    start: Offsets,
    tasks: Vec<TaskRecord>,
}

impl Group {
    fn running(&self) -> bool {
        self.tasks.iter().any(|t| !t.state.is_complete())
    }

    fn reading(&self) -> bool {
        self.state.end.is_none() && self.running()
    }
}

impl Overlord {
    /// Runs the supervisors while this node leads.
    pub(super) async fn supervise_forever(&self, guard: &Txn) {
        let mut runners: BTreeMap<String, Runner> = BTreeMap::new();
        loop {
            if let Err(e) = self.supervise(guard, &mut runners).await {
                tracing::warn!("overlord: supervising streams: {e}");
            }
            let statuses = runners
                .iter()
                .map(|(id, r)| (id.clone(), r.status.clone()))
                .collect();
            *self.supervisor_statuses() = statuses;
            tokio::time::sleep(SUPERVISE_EVERY).await;
        }
    }

    /// One pass over every supervisor.
    async fn supervise(&self, guard: &Txn, runners: &mut BTreeMap<String, Runner>) -> Result<()> {
        let records = supervisors::list(self.store.as_ref()).await?;
        let mut kept = BTreeSet::new();
        for record in &records {
            let runner = runners.entry(record.id.clone()).or_default();
            match self.supervise_one(guard, record, runner).await {
                Ok(alive) => {
                    if alive {
                        kept.insert(record.id.clone());
                    }
                }
                Err(e) => {
                    runner.error(e.to_string());
                    runner.status.state = "UNHEALTHY_SUPERVISOR".into();
                    runner.status.healthy = false;
                    kept.insert(record.id.clone());
                }
            }
            let state = SupervisorState {
                state: runner.status.state.clone(),
                detailed_state: runner.status.state.clone(),
                healthy: runner.status.healthy,
            };
            if runner.written.as_ref() != Some(&state) {
                supervisors::set_state(self.store.as_ref(), guard, &record.id, &state).await?;
                runner.written = Some(state);
            }
        }
        runners.retain(|id, _| kept.contains(id));
        Ok(())
    }

    /// One pass over one supervisor; false once a terminated one has nothing left.
    async fn supervise_one(
        &self,
        guard: &Txn,
        record: &SupervisorRecord,
        runner: &mut Runner,
    ) -> Result<bool> {
        let spec = record.parsed()?;
        let ds = &record.id;
        let mut groups = self.groups(ds).await?;
        // Groups whose tasks all ended are forgotten; one that published nothing
        // counts as a failure.
        for group in groups.iter().filter(|g| !g.running()) {
            let published = group.tasks.iter().any(|t| t.state == TaskState::Success);
            if published {
                runner.consecutive_failures = 0;
            } else if !group.tasks.is_empty() {
                runner.consecutive_failures += 1;
                let why = group
                    .tasks
                    .iter()
                    .find_map(|t| t.error_msg.clone())
                    .unwrap_or_else(|| "its tasks failed".into());
                runner.error(format!("task group {} failed: {why}", group.task_group));
            }
            forget_group(self.store.as_ref(), guard, ds, &group.sequence).await?;
            self.stream_positions().remove(&group.sequence);
        }
        groups.retain(Group::running);

        // A group that has not published within completionTimeout of when it began
        // ending (a task that hangs, or cannot publish) fails: its tasks stop, and the
        // messages are read again from the stored offsets.
        let now = chrono::Utc::now().timestamp_millis();
        for group in &groups {
            let late = group
                .state
                .ending_since
                .is_some_and(|at| now - at > spec.completion_timeout_ms);
            let waiting = group
                .tasks
                .iter()
                .any(|t| !t.state.is_complete() && t.published.is_empty());
            if late && waiting {
                let message = format!(
                    "task group {} did not publish within completionTimeout ({} ms): stopping it",
                    group.task_group, spec.completion_timeout_ms
                );
                runner.error(message);
                // One that published only waits for hand-off, which its own timeout
                // bounds.
                let unpublished = group
                    .tasks
                    .iter()
                    .filter(|t| !t.state.is_complete() && t.published.is_empty());
                for task in unpublished {
                    self.shutdown(&task.id).await?;
                }
            }
        }
        let stopping = record.suspended || record.terminated;
        for group in groups.iter().filter(|g| g.reading()) {
            let stale = group
                .tasks
                .first()
                .and_then(|t| t.payload.get("supervisorVersion"))
                .and_then(|v| v.as_str())
                .is_some_and(|v| v != record.version);
            // Ended at taskDuration whether or not its tasks ask to (one that hangs
            // never would), as Druid's supervisor ends them.
            let overdue = group
                .tasks
                .iter()
                .filter_map(|t| t.started)
                .min()
                .is_some_and(|at| now - at >= spec.task_duration_ms);
            if stopping || stale || overdue {
                self.end_group(guard, ds, &group.sequence).await?;
            }
        }
        if record.terminated && groups.is_empty() {
            return Ok(false);
        }

        let stored = stream_offsets::read(self.store.as_ref(), ds).await?.0;
        let stored: Offsets = stored
            .filter(|s| s.stream == spec.topic.stream())
            .map(|s| s.partitions)
            .unwrap_or_default();
        let kafka = self.refresh_kafka(runner, &spec).await;
        self.fill_status(runner, record, &spec, &groups, &stored);
        let bounds = match kafka {
            Ok(found) => found,
            Err(e) => {
                runner.kafka_error = Some(e.to_string());
                runner.error(e.to_string());
                runner.status.state = "UNHEALTHY_SUPERVISOR".into();
                runner.status.healthy = false;
                return Ok(true);
            }
        };
        runner.kafka_error = None;
        if stopping {
            return Ok(true);
        }
        for g in 0..spec.task_count {
            let mine: Vec<&TopicPartition> = bounds
                .keys()
                .filter(|p| p.task_group(&spec.topic, spec.task_count) == g)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let publishing_end: Offsets = groups
                .iter()
                .filter(|x| x.task_group == g && !x.reading())
                .filter_map(|x| x.state.end.clone())
                .fold(Offsets::new(), |mut all, end| {
                    for (p, o) in end {
                        let e = all.entry(p).or_insert(o);
                        *e = (*e).max(o);
                    }
                    all
                });
            let mut reading = false;
            for group in groups.iter().filter(|x| x.task_group == g && x.reading()) {
                let follows = group.start.iter().all(|(p, o)| {
                    publishing_end.get(p) == Some(o) || stored.get(p).is_none_or(|s| s == o)
                });
                if follows {
                    reading = true;
                    // A partition that appeared since it started is read by the
                    // group after it: this one ends now rather than at taskDuration.
                    let added = mine.iter().any(|p| !group.start.contains_key(*p));
                    if added && !group.state.ending {
                        tracing::info!(
                            "supervisor {ds}: task group {g} has new partitions; \
                             ending its tasks so that the next ones read them"
                        );
                        self.end_group(guard, ds, &group.sequence).await?;
                    }
                } else {
                    let message = format!(
                        "task group {g} started at {:?}, which no longer follows the stored \
                         offsets {stored:?}: stopping it",
                        group.start
                    );
                    runner.error(message);
                    for task in &group.tasks {
                        self.shutdown(&task.id).await?;
                    }
                }
            }
            if reading {
                continue;
            }
            let start: Offsets = mine
                .iter()
                .map(|p| {
                    let at = publishing_end
                        .get(*p)
                        .or_else(|| stored.get(*p))
                        .copied()
                        .unwrap_or_else(|| {
                            let (first, latest) = bounds.get(*p).copied().unwrap_or((0, 0));
                            if spec.use_earliest_offset || runner.discovered.contains(*p) {
                                first
                            } else {
                                latest
                            }
                        });
                    ((*p).clone(), at)
                })
                .collect();
            self.start_group(guard, record, &spec, g, start).await?;
        }
        runner.status.state = if runner.consecutive_failures >= UNHEALTHY_AFTER {
            "UNHEALTHY_TASKS".into()
        } else {
            "RUNNING".into()
        };
        runner.status.healthy = runner.consecutive_failures < UNHEALTHY_AFTER;
        Ok(true)
    }

    /// The datasource's task groups with their tasks' records.
    async fn groups(&self, datasource: &str) -> Result<Vec<Group>> {
        let prefix = format!("{GROUPS_PREFIX}{datasource}/");
        let mut groups = Vec::new();
        for kv in self.store.range(&prefix).await? {
            let state: GroupState = decode(&kv.key, &kv.value)?;
            let sequence = kv.key[prefix.len()..].to_string();
            let mut tasks = Vec::new();
            for id in &state.tasks {
                let Some((mut r, _)) = task_status::get(self.store.as_ref(), id).await? else {
                    continue;
                };
                // A running task's progress is in its worker's report.
                if let (TaskState::Running, Some(worker)) = (r.state, &r.worker)
                    && let Some(runner) =
                        indexer::runner_report(self.store.as_ref(), worker, id).await?
                {
                    r.report = runner.report;
                }
                tasks.push(r);
            }
            let parsed = tasks
                .first()
                .map(|t| StreamTask::from_payload(&t.payload))
                .transpose()?;
            let (task_group, start) = parsed.map(|t| (t.task_group, t.start)).unwrap_or_default();
            groups.push(Group {
                sequence,
                state,
                task_group,
                start,
                tasks,
            });
        }
        Ok(groups)
    }

    /// Tells a group's replicas to end: they pause, agree on an end, and publish.
    async fn end_group(&self, guard: &Txn, datasource: &str, sequence: &str) -> Result<()> {
        let key = group_key(datasource, sequence);
        edit_group(
            self.store.as_ref(),
            guard,
            &key,
            false,
            GroupState::begin_ending,
        )
        .await?;
        Ok(())
    }

    /// Starts `replicas` tasks of group `g` reading from `start`.
    async fn start_group(
        &self,
        guard: &Txn,
        record: &SupervisorRecord,
        spec: &KafkaSupervisorSpec,
        g: u32,
        start: Offsets,
    ) -> Result<()> {
        let ds = &record.id;
        let nonce: u32 = rand::Rng::random(&mut rand::rng());
        let sequence = format!("index_kafka_{ds}_{g}_{nonce:08x}");
        let now = chrono::Utc::now().timestamp_millis();
        let window = match (
            spec.late_message_rejection_period_ms,
            spec.early_message_rejection_period_ms,
        ) {
            (None, None) => None,
            (late, early) => {
                let min = late.map_or(Interval::ETERNITY.start, |l| now - l);
                let max = early.map_or(Interval::ETERNITY.end, |e| now + spec.task_duration_ms + e);
                Some(Interval::new(min, max).map_err(|e| Error::Invalid(e.to_string()))?)
            }
        };
        let ids: Vec<String> = (0..spec.replicas)
            .map(|r| format!("{sequence}_{r}"))
            .collect();
        let state = GroupState {
            tasks: ids.clone(),
            ..GroupState::default()
        };
        let key = group_key(ds, &sequence);
        let created = self
            .store
            .txn(
                guard
                    .compares_only()
                    .when_revision(key.clone(), 0)
                    .put(key, encode("a stream group", &state)?),
            )
            .await?;
        if !created {
            return Err(Error::Busy(format!("task group {sequence} exists already")));
        }
        tracing::info!(
            "supervisor {ds}: starting task group {g} ({} replicas) at {start:?}",
            spec.replicas
        );
        for id in ids {
            let task = StreamTask {
                id: id.clone(),
                spec: spec.clone(),
                task_group: g,
                sequence: sequence.clone(),
                start: start.clone(),
                window,
            };
            let mut payload = task.payload(&record.spec, &sequence);
            payload["supervisorVersion"] = record.version.clone().into();
            self.submit(payload).await?;
        }
        Ok(())
    }

    /// The partitions of the topics read, with their earliest offsets and high
    /// watermarks. The one topic of a spec must exist; a pattern may match none.
    async fn refresh_kafka(
        &self,
        runner: &mut Runner,
        spec: &KafkaSupervisorSpec,
    ) -> Result<BTreeMap<TopicPartition, (i64, i64)>> {
        let bootstrap = &spec.bootstrap_servers;
        let timed_out = || Error::Busy(format!("Kafka at {bootstrap} did not answer in time"));
        if runner.reader.as_ref().is_none_or(|(b, _)| b != bootstrap) {
            let reader = tokio::time::timeout(KAFKA_TIMEOUT, KafkaReader::connect(bootstrap))
                .await
                .map_err(|_| timed_out())??;
            runner.reader = Some((bootstrap.clone(), reader));
        }
        let Some((_, reader)) = &runner.reader else {
            return Err(timed_out());
        };
        let found = tokio::time::timeout(KAFKA_TIMEOUT, async {
            let topics = reader.topics().await?;
            let names = spec.topic.select(topics.keys().map(String::as_str));
            if let KafkaTopic::Name(name) = &spec.topic
                && names.is_empty()
            {
                return Err(Error::Invalid(format!("topic {name:?} does not exist")));
            }
            let mut bounds = BTreeMap::new();
            for name in names {
                for p in topics.get(name).into_iter().flatten() {
                    let bound = reader.bounds(name, *p).await?;
                    bounds.insert(TopicPartition::new(name, *p), bound);
                }
            }
            Ok::<_, Error>(bounds)
        })
        .await
        .map_err(|_| timed_out())
        .and_then(|r| r);
        match found {
            Ok(bounds) => {
                let now: BTreeSet<TopicPartition> = bounds.keys().cloned().collect();
                if let Some(seen) = &runner.seen {
                    runner.discovered.extend(now.difference(seen).cloned());
                }
                runner.seen = Some(now);
                runner.status.partitions = bounds.keys().cloned().collect();
                runner.status.latest_offsets =
                    bounds.iter().map(|(p, b)| (p.clone(), b.1)).collect();
                runner.status.offsets_last_updated =
                    Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
                Ok(bounds)
            }
            Err(e) => {
                // Connect again next time: the broker may have moved or restarted.
                runner.reader = None;
                Err(e)
            }
        }
    }

    /// What the status shows: tasks, offsets, lag, row counts.
    fn fill_status(
        &self,
        runner: &mut Runner,
        record: &SupervisorRecord,
        spec: &KafkaSupervisorSpec,
        groups: &[Group],
        stored: &Offsets,
    ) {
        let status = &mut runner.status;
        status.id = record.id.clone();
        status.topic = spec.topic.stream().to_string();
        status.suspended = record.suspended;
        status.task_count = spec.task_count;
        status.replicas = spec.replicas;
        status.duration_seconds = spec.task_duration_ms / 1000;
        status.active_tasks.clear();
        status.publishing_tasks.clear();
        status.stats.clear();
        let mut current = stored.clone();
        for group in groups {
            for task in group.tasks.iter().filter(|t| !t.state.is_complete()) {
                let at = task
                    .report
                    .stream
                    .as_ref()
                    .map(|s| s.current.clone())
                    .unwrap_or_else(|| group.start.clone());
                for (p, o) in &at {
                    let c = current.entry(p.clone()).or_insert(*o);
                    *c = (*c).max(*o);
                }
                let listed = GroupTask {
                    id: task.id.clone(),
                    task_group: group.task_group,
                    starting_offsets: group.start.clone(),
                    current_offsets: at,
                    start_time: task.started.map(grove_segment::id::format_millis),
                };
                if group.reading() {
                    status.active_tasks.push(listed);
                } else {
                    status.publishing_tasks.push(listed);
                }
                status
                    .stats
                    .entry(group.task_group)
                    .or_default()
                    .insert(task.id.clone(), task.report.build_segments);
            }
        }
        status.lag = status
            .latest_offsets
            .iter()
            .map(|(p, latest)| {
                let lag = latest - current.get(p).copied().unwrap_or(0);
                (p.clone(), lag.max(0))
            })
            .collect();
        status.aggregate_lag = status.lag.values().sum();
        status.current_offsets = current;
        if record.terminated {
            status.state = "STOPPING".into();
        } else if record.suspended {
            status.state = "SUSPENDED".into();
        } else if status.state.is_empty() {
            status.state = "PENDING".into();
        }
        status.healthy =
            runner.kafka_error.is_none() && runner.consecutive_failures < UNHEALTHY_AFTER;
    }

    /// `POST /druid/indexer/v1/supervisor/{id}/reset`: forgets the stored offsets and
    /// stops the supervisor's tasks; reading starts again as `useEarliestOffset` says.
    pub async fn reset_supervisor(&self, id: &str) -> Result<()> {
        let guard = self.guard()?;
        if supervisors::get(self.store.as_ref(), id).await?.is_none() {
            return Err(Error::Invalid(format!("supervisor {id} does not exist")));
        }
        let tasks: Vec<TaskRecord> = self
            .active_records()
            .await?
            .into_iter()
            .filter(|r| r.task_type == KAFKA_TASK_TYPE && r.datasource == id)
            .collect();
        for task in &tasks {
            self.shutdown(&task.id).await?;
        }
        let txn = guard.compares_only().delete(stream_offsets::key(id));
        if !self.store.txn(txn).await? {
            return Err(crate::metastore::guard_lost());
        }
        tracing::info!(
            "supervisor {id}: offsets reset, {} task(s) stopped",
            tasks.len()
        );
        Ok(())
    }

    /// The status of a supervisor, as the last pass saw it.
    pub fn supervisor_status(&self, id: &str) -> Option<SupervisorStatus> {
        self.supervisor_statuses().get(id).cloned()
    }

    /// `POST /druid/indexer/v1/supervisor`: stores the spec (replacing the
    /// datasource's supervisor, whose reading tasks then end gracefully). Returns the
    /// supervisor's id, its datasource.
    pub async fn submit_supervisor(&self, spec: serde_json::Value) -> Result<String> {
        let guard = self.guard()?;
        KafkaSupervisorSpec::from_json(&spec.to_string())?;
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let id = supervisors::submit(self.store.as_ref(), &guard, spec, &now).await?;
        tracing::info!("supervisor {id}: spec submitted");
        Ok(id)
    }

    /// Suspends (its reading tasks publish what they read) or resumes a supervisor.
    pub async fn suspend_supervisor(&self, id: &str, suspended: bool) -> Result<SupervisorRecord> {
        let guard = self.guard()?;
        supervisors::set_suspended(self.store.as_ref(), &guard, id, suspended).await
    }

    /// Terminates a supervisor: its reading tasks publish what they read, and it runs
    /// no more; its record stays for its history.
    pub async fn terminate_supervisor(&self, id: &str) -> Result<SupervisorRecord> {
        let guard = self.guard()?;
        supervisors::terminate(self.store.as_ref(), &guard, id).await
    }
}
