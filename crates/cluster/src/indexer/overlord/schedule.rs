//! The leader's scheduling pass: locks for waiting tasks, workers for pending ones,
//! and the end of running ones.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use grove_segment::Interval;
use grove_segment::spec::IngestionSpec;

use super::{Overlord, new_token, task_spec};
use crate::assignments;
use crate::error::Result;
use crate::indexer::{self, Assignment, RunnerReport, assignment_key, encode};
use crate::locks::{self, Grant, LockKind, LockRequest, MAX_LOCKS_PER_TASK};
use crate::metastore::Txn;
use crate::nodes::{self, NodeInfo, Role};
use crate::task_status::{self, IngestionState, TaskLocation, TaskRecord, TaskState};

impl Overlord {
    /// The records of the tasks that have not ended.
    pub(super) async fn active_records(&self) -> Result<Vec<TaskRecord>> {
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
        let assigned = indexer::assignments(store).await?;
        let reports: HashMap<(String, String), RunnerReport> = indexer::runner_reports(store)
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

        // Where each group's tasks run: replicas go to different workers when they can.
        let mut placed: HashMap<String, BTreeSet<String>> = HashMap::new();
        for r in &records {
            if let (TaskState::Running, Some(worker)) = (r.state, &r.worker) {
                placed
                    .entry(r.group_id.clone())
                    .or_default()
                    .insert(worker.clone());
            }
        }
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
                TaskState::Pending => {
                    self.try_assign(guard, &record, &workers, &mut busy, &mut placed)
                        .await
                }
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
    pub(super) async fn try_lock(&self, guard: &Txn, record: &TaskRecord) -> Result<()> {
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

    /// Pending: to the live worker (of the task's category) with the most free slots,
    /// preferring one that runs no other task of the task's group (the replicas of a
    /// streaming task group each on its own worker).
    pub(super) async fn try_assign(
        &self,
        guard: &Txn,
        record: &TaskRecord,
        workers: &BTreeMap<String, NodeInfo>,
        busy: &mut HashMap<String, u32>,
        placed: &mut HashMap<String, BTreeSet<String>>,
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
            .max_by_key(|w| {
                let apart = placed
                    .get(&record.group_id)
                    .is_none_or(|p| !p.contains(&w.id));
                (apart, free(w), std::cmp::Reverse(w.id.clone()))
            })
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
        placed
            .entry(record.group_id.clone())
            .or_default()
            .insert(worker.id.clone());
        tracing::info!("task {} assigned to worker {}", record.id, worker.id);
        Ok(())
    }

    /// Running: ends the task when its worker says it ended or is gone; after a
    /// publication, waits for its segments to be served if the spec asks to.
    pub(super) async fn check_running(
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
    pub(super) async fn await_availability(
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
    pub(super) async fn finish(
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

    pub(super) async fn unassign(&self, guard: &Txn, worker: &str, task: &str) -> Result<()> {
        let txn = guard.compares_only().delete(assignment_key(worker, task));
        if !self.store.txn(txn).await? {
            return Err(crate::metastore::guard_lost());
        }
        Ok(())
    }

    /// Locks whose task ended or is unknown (left by a leader that died between
    /// ending a task and releasing them).
    pub(super) async fn release_stale_locks(
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

fn location_of(worker: &NodeInfo) -> Option<TaskLocation> {
    let (host, port) = worker.http_address.rsplit_once(':')?;
    Some(TaskLocation {
        host: host.trim_matches(['[', ']']).to_string(),
        port: port.parse().ok()?,
        tls_port: None,
    })
}
