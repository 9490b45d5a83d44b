//! The actions of running tasks: allocating segments under time-chunk locks,
//! publishing under those locks, and a parallel task starting and following its
//! sub-tasks.

use std::collections::HashMap;

use serde_json::{Value, json};

use grove_segment::timeline::Timeline;
use grove_segment::{Interval, SegmentId};

use super::{ChunkAllocation, Overlord, ReplicaAt, TaskSpec, constant_time_eq, task_spec};
use crate::error::{Error, Result};
use crate::indexer::actions::{
    ActionRequest, Allocation, SubTaskState, TaskAction, next_partition,
};
use crate::indexer::{self, Assignment, SUB_TASK_TYPE, assignment_key};
use crate::locks::{self, Grant, LockKind, LockRequest, MAX_LOCKS_PER_TASK};
use crate::metastore::{MetaStore, Txn};
use crate::segments::{self, SegmentDescriptor};
use crate::stream_offsets::OffsetCommit;
use crate::task;
use crate::task_status::{self, IngestionState, TaskRecord, TaskState, new_task_id};

impl Overlord {
    /// Performs a running task's action, once the request proves it comes from the
    /// process its worker started for it.
    pub async fn perform(&self, request: &ActionRequest) -> Result<Value> {
        let guard = self.guard()?;
        let turn = self.turn(&request.task);
        let _turn = turn.lock().await;
        let record = self.running_task(request).await?;
        let spec = task_spec(&record.payload)?;
        let answer = match &request.action {
            TaskAction::SegmentAllocate { interval, sequence } => {
                let allocation = match sequence {
                    Some(sequence) => {
                        self.allocate_in_sequence(&guard, &record, &spec, *interval, sequence)
                            .await?
                    }
                    None => self.allocate(&guard, &record, &spec, *interval).await?,
                };
                serde_json::to_value(allocation).map_err(|e| Error::Store(e.to_string()))?
            }
            TaskAction::SegmentTransactionalInsert { segments, offsets } => {
                if let Some(commit) = offsets {
                    Overlord::check_commit(&record, commit)?;
                    if self.replica_published(commit, segments).await? {
                        // A replica of the task published the same rows first.
                        let ids = segments.iter().map(|d| d.id.to_string()).collect();
                        self.mark_published(&guard, &record, ids).await?;
                        return Ok(json!({ "success": true, "published": false }));
                    }
                }
                self.publish(&guard, &record, segments.clone(), offsets.as_ref())
                    .await?;
                json!({ "success": true, "published": true })
            }
            TaskAction::StreamCheckpoint {
                offsets,
                exposed,
                announced,
                paused,
                want_end,
            } => {
                let at = ReplicaAt {
                    fetched: offsets.clone(),
                    exposed: exposed.clone(),
                    announced: announced.iter().cloned().collect(),
                };
                let control = self
                    .stream_checkpoint(&guard, &record, at, *paused, *want_end)
                    .await?;
                serde_json::to_value(control).map_err(|e| Error::Store(e.to_string()))?
            }
            TaskAction::SegmentsServed { ids } => {
                json!(self.segments_served(&record.datasource, ids).await?)
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
    pub(super) async fn submit_sub_task(
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
    pub(super) async fn sub_task_states(
        &self,
        supervisor: &TaskRecord,
    ) -> Result<Vec<SubTaskState>> {
        let mut states = Vec::new();
        for id in &supervisor.sub_tasks {
            let Some((sub, _)) = task_status::get(self.store.as_ref(), id).await? else {
                continue;
            };
            let live = match (&sub.worker, sub.state) {
                (Some(worker), TaskState::Running) => {
                    indexer::runner_report(self.store.as_ref(), worker, id).await?
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
    pub(super) async fn running_task(&self, request: &ActionRequest) -> Result<TaskRecord> {
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
            Some(kv) => indexer::decode(&key, &kv.value)?,
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
    pub(super) async fn allocate(
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
    pub(super) async fn first_allocation(
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

    pub(super) fn chunk_allocations(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(String, Interval), ChunkAllocation>> {
        self.allocations.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The task's lock on `chunk`: one it holds already that covers it, or a new one
    /// (exclusive, or shared with other appenders), waiting for others to let go.
    pub(super) async fn lock_chunk(
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

    /// Publishes the task's segments in one transaction guarded by its locks, moving
    /// the stream's offsets as `offsets` says.
    pub(super) async fn publish(
        &self,
        guard: &Txn,
        record: &TaskRecord,
        mut segments: Vec<SegmentDescriptor>,
        offsets: Option<&OffsetCommit>,
    ) -> Result<()> {
        if segments.is_empty() && offsets.is_none() {
            return Ok(());
        }
        let ids: Vec<String> = segments.iter().map(|d| d.id.to_string()).collect();
        if !segments.is_empty() && published_by(self.store.as_ref(), &record.id, &segments).await? {
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
            offsets,
        )
        .await?;
        tracing::info!("task {} published {} segment(s)", record.id, ids.len());
        self.mark_published(guard, record, ids).await
    }

    pub(super) async fn mark_published(
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
        let stored: SegmentDescriptor = indexer::decode(&d.key(), &kv.value)?;
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
