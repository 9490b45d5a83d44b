//! The actions of streaming tasks: allocating under a sequence (so that the replicas of
//! a task group build segments of the same ids), the checkpoints by which replicas
//! agree on where they end, and the question of hand-off.
//!
//! Keys:
//! - `/grove/indexer/sequences/{datasource}/{sequence}/{start}_{end}`: the first
//!   [`Allocation`] of a time chunk under a sequence;
//! - `/grove/indexer/stream-groups/{datasource}/{sequence}`: a group's [`GroupState`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use grove_segment::Interval;
use grove_segment::id::format_millis;

use super::{Overlord, ReplicaAt, TaskSpec};
use crate::assignments;
use crate::error::{Error, Result};
use crate::indexer::actions::{Allocation, StreamControl};
use crate::indexer::realtime::StreamTask;
use crate::indexer::{decode, encode};
use crate::metastore::{MetaStore, Txn, compare_and_swap};
use crate::nodes::{self, Role};
use crate::rules;
use crate::stream_offsets::{OffsetCommit, Offsets};
use crate::task_status::{self, TaskRecord, TaskState};

const SEQUENCES_PREFIX: &str = "/grove/indexer/sequences/";
pub(crate) const GROUPS_PREFIX: &str = "/grove/indexer/stream-groups/";

/// How the replicas of one task group (one sequence) come to one end.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupState {
    /// The group's tasks: its replicas, as its supervisor started them.
    pub tasks: Vec<String>,
    /// A replica asked to end (or the supervisor ends the group): replicas pause.
    pub ending: bool,
    /// When it began ending (ms): its tasks must have published within the
    /// supervisor's `completionTimeout` of it.
    #[serde(default)]
    pub ending_since: Option<i64>,
    /// Where each paused replica stopped.
    pub paused: BTreeMap<String, Offsets>,
    /// The end, once every live replica has paused: the furthest any of them read.
    pub end: Option<Offsets>,
}

impl GroupState {
    /// Has the group's replicas pause to end.
    pub(crate) fn begin_ending(&mut self) {
        if !self.ending {
            self.ending = true;
            self.ending_since = Some(chrono::Utc::now().timestamp_millis());
        }
    }
}

pub(crate) fn group_key(datasource: &str, sequence: &str) -> String {
    format!("{GROUPS_PREFIX}{datasource}/{sequence}")
}

fn sequence_prefix(datasource: &str, sequence: &str) -> String {
    format!("{SEQUENCES_PREFIX}{datasource}/{sequence}/")
}

/// A group's state, if it has one.
pub(crate) async fn read_group(
    store: &dyn MetaStore,
    datasource: &str,
    sequence: &str,
) -> Result<Option<GroupState>> {
    let key = group_key(datasource, sequence);
    match store.get(&key).await? {
        Some(kv) => Ok(Some(decode(&key, &kv.value)?)),
        None => Ok(None),
    }
}

/// Edits the state of the group at `key` with a compare-and-swap inside `guard`,
/// writing it only when `edit` changed it. A group with no state yet starts from the
/// default when `create`; otherwise it is left alone and the answer is `None`.
pub(crate) async fn edit_group<T>(
    store: &dyn MetaStore,
    guard: &Txn,
    key: &str,
    create: bool,
    mut edit: impl FnMut(&mut GroupState) -> T,
) -> Result<Option<T>> {
    compare_and_swap(store, guard, key, "a stream group", |current| {
        let before: GroupState = match current {
            Some(kv) => decode(key, &kv.value)?,
            None if create => GroupState::default(),
            None => return Ok((Vec::new(), None)),
        };
        let mut state = before.clone();
        let answer = edit(&mut state);
        let ops = if state == before {
            Vec::new()
        } else {
            Txn::default()
                .put(key.to_string(), encode("a stream group", &state)?)
                .ops
        };
        Ok((ops, Some(answer)))
    })
    .await
}

/// Forgets a group and its sequence's allocations: it has ended.
pub(crate) async fn forget_group(
    store: &dyn MetaStore,
    guard: &Txn,
    datasource: &str,
    sequence: &str,
) -> Result<()> {
    let mut txn = guard
        .compares_only()
        .delete(group_key(datasource, sequence));
    for kv in store.range(&sequence_prefix(datasource, sequence)).await? {
        txn = txn.delete(kv.key);
    }
    store.txn(txn).await?;
    Ok(())
}

/// The least offset of each partition over `all` (empty when `all` is).
fn least<'a>(all: impl Iterator<Item = &'a Offsets>) -> Offsets {
    let mut out = Offsets::new();
    for at in all {
        for (p, o) in at {
            let v = out.entry(p.clone()).or_insert(*o);
            *v = (*v).min(*o);
        }
    }
    out
}

impl Overlord {
    /// The allocation of `chunk` under `sequence`: the one stored there, or a new one
    /// stored for the group's other replicas. Either way the chunk is locked for this
    /// task at that version.
    pub(super) async fn allocate_in_sequence(
        &self,
        guard: &Txn,
        record: &TaskRecord,
        task: &TaskSpec,
        chunk: Interval,
        sequence: &str,
    ) -> Result<Allocation> {
        let key = format!(
            "{}{}_{}",
            sequence_prefix(&record.datasource, sequence),
            format_millis(chunk.start),
            format_millis(chunk.end)
        );
        if let Some(kv) = self.store.get(&key).await? {
            let stored: Allocation = decode(&key, &kv.value)?;
            return self
                .join_allocation(guard, record, task, chunk, stored)
                .await;
        }
        let allocation = self.allocate(guard, record, task, chunk).await?;
        let txn = guard
            .compares_only()
            .when_revision(key.clone(), 0)
            .put(key.clone(), encode("an allocation", &allocation)?);
        if self.store.txn(txn).await? {
            return Ok(allocation);
        }
        // A replica stored its allocation first: the group takes that one.
        match self.store.get(&key).await? {
            Some(kv) => {
                let stored: Allocation = decode(&key, &kv.value)?;
                self.join_allocation(guard, record, task, chunk, stored)
                    .await
            }
            None => Err(Error::Busy(format!(
                "the allocation of {chunk} under {sequence} changed; try again"
            ))),
        }
    }

    /// Locks `chunk` for this replica at the version its group allocated.
    async fn join_allocation(
        &self,
        guard: &Txn,
        record: &TaskRecord,
        task: &TaskSpec,
        chunk: Interval,
        stored: Allocation,
    ) -> Result<Allocation> {
        let lock = self
            .lock_chunk(guard, record, task, chunk, true, &stored.version)
            .await?;
        if lock.version != stored.version {
            return Err(Error::Busy(format!(
                "task {} cannot lock {chunk} at its group's version {} (the chunk is at {})",
                record.id, stored.version, lock.version
            )));
        }
        Ok(stored)
    }

    /// A streaming task's checkpoint: where it is, whether it is paused, whether it
    /// wants to end. Answers whether it reads on, pauses, or where it ends.
    pub(super) async fn stream_checkpoint(
        &self,
        guard: &Txn,
        record: &TaskRecord,
        at: ReplicaAt,
        paused: bool,
        want_end: bool,
    ) -> Result<StreamControl> {
        let offsets = &at.fetched.clone();
        let task = StreamTask::from_payload(&record.payload)?;
        let key = group_key(&record.datasource, &task.sequence);
        let members =
            match read_group(self.store.as_ref(), &record.datasource, &task.sequence).await? {
                Some(state) => state.tasks,
                None => Vec::new(),
            };
        // The replicas still running decide the end; one that died does not hold it up.
        let mut live = BTreeSet::from([record.id.clone()]);
        for member in &members {
            if let Some((r, _)) = task_status::get(self.store.as_ref(), member).await?
                && r.state == TaskState::Running
            {
                live.insert(member.clone());
            }
        }
        // What this replica may serve: the replica brokers ask first (the least task
        // id) serves last. The last replica in that order may serve what every live
        // replica has fetched; every other one what all replicas after it serve.
        let (visible, last, announce) = {
            let mut positions = self.stream_positions();
            let group = positions.entry(task.sequence.clone()).or_default();
            group.insert(record.id.clone(), at);
            group.retain(|t, _| live.contains(t));
            let later: Vec<&String> = live.iter().filter(|t| **t > record.id).collect();
            let visible = if !live.iter().all(|t| group.contains_key(t)) {
                BTreeMap::new()
            } else if later.is_empty() {
                least(group.values().map(|r| &r.fetched))
            } else {
                least(
                    later
                        .iter()
                        .filter_map(|t| group.get(*t))
                        .map(|r| &r.exposed),
                )
            };
            // A segment appears first with the replica brokers ask first.
            let earlier: Vec<&String> = live.iter().filter(|t| **t < record.id).collect();
            let announce = if earlier.is_empty() {
                None
            } else {
                let mut sets = earlier.iter().map(|t| group.get(*t).map(|r| &r.announced));
                let first = sets.next().flatten().cloned().unwrap_or_default();
                let common = sets.fold(first, |all, s| match s {
                    Some(s) => all.intersection(s).cloned().collect(),
                    None => BTreeSet::new(),
                });
                Some(common.into_iter().collect::<Vec<String>>())
            };
            (visible, later.is_empty(), announce)
        };
        let answer = edit_group(self.store.as_ref(), guard, &key, true, |state| {
            if !state.tasks.contains(&record.id) {
                state.tasks.push(record.id.clone());
            }
            // At the end the last replica serves all it reads.
            let at_end = |end: &Offsets| {
                let visible = if last { end.clone() } else { visible.clone() };
                StreamControl::End {
                    offsets: end.clone(),
                    visible,
                    announce: announce.clone(),
                }
            };
            if let Some(end) = &state.end {
                at_end(end)
            } else {
                if want_end {
                    state.begin_ending();
                }
                if state.ending && paused {
                    state.paused.insert(record.id.clone(), offsets.clone());
                }
                if state.ending && live.iter().all(|t| state.paused.contains_key(t)) {
                    let mut end = Offsets::new();
                    for (task, at) in &state.paused {
                        if !live.contains(task) {
                            continue;
                        }
                        for (p, o) in at {
                            let e = end.entry(p.clone()).or_insert(*o);
                            *e = (*e).max(*o);
                        }
                    }
                    let answer = at_end(&end);
                    state.end = Some(end);
                    answer
                } else if state.ending {
                    StreamControl::Pause
                } else {
                    StreamControl::Continue {
                        visible: visible.clone(),
                        announce: announce.clone(),
                    }
                }
            }
        })
        .await?;
        answer.ok_or_else(|| Error::Store(format!("{key} was not created")))
    }

    /// Whether a publication's offsets are the task's own: its datasource, its
    /// stream, its start.
    pub(super) fn check_commit(record: &TaskRecord, commit: &OffsetCommit) -> Result<()> {
        let task = StreamTask::from_payload(&record.payload)?;
        let stream = task.spec.topic.stream();
        if commit.datasource != record.datasource
            || commit.stream != stream
            || commit.start != task.start
        {
            return Err(Error::Invalid(format!(
                "task {} may only commit offsets of {} in {stream:?} from {:?}",
                record.id, record.datasource, task.start
            )));
        }
        Ok(())
    }

    /// Whether a replica published this commit already: the stored offsets stand at
    /// its end, past its start, and segments of the same ids are published.
    pub(super) async fn replica_published(
        &self,
        commit: &OffsetCommit,
        segments: &[crate::segments::SegmentDescriptor],
    ) -> Result<bool> {
        if commit.start == commit.end {
            return Ok(false);
        }
        let (stored, _) =
            crate::stream_offsets::read(self.store.as_ref(), &commit.datasource).await?;
        let Some(stored) = stored else {
            return Ok(false);
        };
        let at_end = stored.stream == commit.stream
            && commit
                .end
                .iter()
                .all(|(p, o)| stored.partitions.get(p) == Some(o));
        if !at_end {
            return Ok(false);
        }
        for d in segments {
            if self.store.get(&d.key()).await?.is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether live historicals serve every one of `ids` (segments of `datasource`) as
    /// fully as the rules ask and the live historicals allow: a task stops serving a
    /// segment only when losing one historical would not lose it.
    pub(super) async fn segments_served(&self, datasource: &str, ids: &[String]) -> Result<bool> {
        let store = self.store.as_ref();
        let historicals: BTreeMap<String, String> = nodes::live(store)
            .await?
            .into_iter()
            .filter(|n| n.role == Role::Historical)
            .map(|n| (n.id.clone(), n.tier().to_string()))
            .collect();
        let served = assignments::served(store).await?;
        let descriptors: BTreeMap<String, crate::segments::SegmentDescriptor> =
            crate::segments::load(store, Some(datasource))
                .await?
                .into_iter()
                .map(|d| (d.id.to_string(), d))
                .collect();
        let all_rules = rules::all(store).await?;
        let builtin = rules::builtin_default();
        let mut in_force = rules::effective(&all_rules, datasource);
        if in_force.is_empty() {
            in_force = builtin.iter().collect();
        }
        let now = chrono::Utc::now().timestamp_millis();
        for id in ids {
            let Some(d) = descriptors.get(id) else {
                return Ok(false);
            };
            // Tier -> live historicals of it serving the segment.
            let mut serving: BTreeMap<&str, usize> = BTreeMap::new();
            for (node, segments) in &served {
                if let Some(tier) = historicals.get(node)
                    && segments.contains_key(id)
                {
                    *serving.entry(tier.as_str()).or_default() += 1;
                }
            }
            let live_in = |tier: &str| historicals.values().filter(|t| *t == tier).count();
            let wanted: Vec<(String, usize)> =
                match in_force.iter().find(|r| r.applies(&d.id.interval, now)) {
                    Some(rule) => match rule.decision() {
                        rules::Decision::Load(tiers) => tiers
                            .iter()
                            .map(|(tier, n)| (tier.clone(), (*n as usize).min(live_in(tier))))
                            .collect(),
                        rules::Decision::Broadcast => {
                            let tiers: BTreeSet<&String> = historicals.values().collect();
                            tiers.into_iter().map(|t| (t.clone(), live_in(t))).collect()
                        }
                        // Dropped at once: there is nothing to wait for.
                        rules::Decision::Drop => continue,
                    },
                    None => continue,
                };
            let total: usize = serving.values().sum();
            let enough = wanted
                .iter()
                .all(|(tier, n)| serving.get(tier.as_str()).copied().unwrap_or(0) >= *n);
            if total == 0 || !enough {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
