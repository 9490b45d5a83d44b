//! One run of the coordinator's duties as a pure function: from what the cluster
//! looks like now, what to assign, unassign and mark unused, and what to report.
//! Kept free of I/O so that every rule and corner is tested directly.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use grove_segment::timeline::Timeline;
use grove_segment::{Interval, SegmentId};
use serde::Serialize;

use crate::nodes::NodeInfo;
use crate::rules::{self, Decision, Rule};
use crate::segments::SegmentDescriptor;

/// The cluster as one run sees it.
#[derive(Debug, Default)]
pub struct ClusterState {
    /// Used, published segments.
    pub segments: Vec<SegmentDescriptor>,
    pub rules: BTreeMap<String, Vec<Rule>>,
    /// Live historicals.
    pub historicals: Vec<NodeInfo>,
    /// What each node (live or not) is assigned: segment id -> size.
    pub assigned: BTreeMap<String, BTreeMap<String, u64>>,
    /// What each live node serves.
    pub served: BTreeMap<String, BTreeSet<String>>,
}

/// What the coordinator remembers between runs (and loses on failover).
#[derive(Debug, Default)]
pub struct Memory {
    /// Historicals seen alive, by id: a vanished node's tier is still known.
    known: HashMap<String, NodeInfo>,
    /// When (ms) each vanished node was first missed.
    gone_since: HashMap<String, i64>,
}

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How long (ms) a vanished historical keeps its assignments before they are
    /// placed elsewhere.
    pub replicant_lifetime_ms: i64,
    /// How many segments the balancer may start moving per run.
    pub max_segments_to_move: usize,
}

#[derive(Debug, Default)]
pub struct Plan {
    pub assign: Vec<(String, SegmentDescriptor)>,
    pub unassign: Vec<(String, String)>,
    pub mark_unused: Vec<SegmentDescriptor>,
    pub report: Report,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Report {
    /// Per datasource, visible segments no historical serves.
    pub unavailable: BTreeMap<String, usize>,
    /// Per live historical: what it still has to load and drop.
    pub load_queues: BTreeMap<String, LoadQueue>,
    /// Replicas the rules want that no historical can take, with the reason.
    pub unplaceable: Vec<String>,
    /// Segments no rule matches (left as they are).
    pub without_rule: usize,
    /// Vanished historicals whose segments are kept for now, with ms left.
    pub waiting_for: BTreeMap<String, i64>,
    pub moves_started: usize,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct LoadQueue {
    pub segments_to_load: usize,
    pub bytes_to_load: u64,
    pub segments_to_drop: usize,
    pub assigned_bytes: u64,
    pub capacity: u64,
}

/// How many unplaceable replicas are described one by one.
const REPORTED: usize = 20;

struct Work<'a> {
    state: &'a ClusterState,
    live: BTreeMap<&'a str, &'a NodeInfo>,
    /// Bytes assigned per live node, as this run changes them.
    load: BTreeMap<String, u64>,
    /// Holders of each segment, as this run changes them.
    holders: BTreeMap<String, BTreeSet<String>>,
    /// The tier of every historical seen alive, gone ones included.
    known_tiers: BTreeMap<String, String>,
    /// Segments a load rule governs: the only ones the balancer may move (their
    /// extra replica is dropped again by the same rule).
    loaded_by_rule: BTreeSet<String>,
    plan: Plan,
    unplaceable: usize,
}

pub fn plan(state: &ClusterState, memory: &mut Memory, settings: Settings, now: i64) -> Plan {
    let live: BTreeMap<&str, &NodeInfo> = state
        .historicals
        .iter()
        .map(|n| (n.id.as_str(), n))
        .collect();
    for node in &state.historicals {
        memory.known.insert(node.id.clone(), node.clone());
        memory.gone_since.remove(&node.id);
    }
    let mut work = Work {
        state,
        load: live.keys().map(|id| (id.to_string(), 0)).collect(),
        live,
        holders: BTreeMap::new(),
        known_tiers: memory
            .known
            .iter()
            .map(|(id, n)| (id.clone(), n.tier().to_string()))
            .collect(),
        loaded_by_rule: BTreeSet::new(),
        plan: Plan::default(),
        unplaceable: 0,
    };
    let used: BTreeMap<String, &SegmentDescriptor> = state
        .segments
        .iter()
        .map(|d| (d.id.to_string(), d))
        .collect();

    // Assignments: forget those of nodes gone too long and of segments not used any more.
    for (node, segments) in &state.assigned {
        let live = work.live.contains_key(node.as_str());
        if !live {
            let since = *memory.gone_since.entry(node.clone()).or_insert(now);
            let left = since + settings.replicant_lifetime_ms - now;
            if left <= 0 {
                for id in segments.keys() {
                    work.plan.unassign.push((node.clone(), id.clone()));
                }
                continue;
            }
            work.plan.report.waiting_for.insert(node.clone(), left);
        }
        for (id, size) in segments {
            if !used.contains_key(id) {
                work.plan.unassign.push((node.clone(), id.clone()));
                continue;
            }
            work.holders
                .entry(id.clone())
                .or_default()
                .insert(node.clone());
            if let Some(load) = work.load.get_mut(node) {
                *load += size;
            }
        }
    }
    memory
        .gone_since
        .retain(|node, _| state.assigned.contains_key(node));

    let droppable = overshadowed_by_served(state, &work.live);
    let mut segments: Vec<&SegmentDescriptor> = state.segments.iter().collect();
    // Newest data first: when room runs out, recent data wins.
    segments.sort_by(|a, b| {
        b.id.interval
            .end
            .cmp(&a.id.interval.end)
            .then_with(|| a.id.to_string().cmp(&b.id.to_string()))
    });
    for d in segments {
        let id = d.id.to_string();
        if droppable.contains(&d.id) {
            work.drop_everywhere(&id);
            work.plan.mark_unused.push(SegmentDescriptor {
                used: false,
                ..d.clone()
            });
            continue;
        }
        let matched = rules::effective(&state.rules, &d.id.datasource)
            .into_iter()
            .find(|r| r.applies(&d.id.interval, now));
        match matched.map(Rule::decision) {
            None => work.plan.report.without_rule += 1,
            Some(Decision::Drop) => work.drop_everywhere(&id),
            Some(Decision::Load(tiers)) => {
                work.loaded_by_rule.insert(id.clone());
                work.load_tiers(d, tiers);
            }
            Some(Decision::Broadcast) => work.broadcast(d),
        }
        if !work.is_served(&id) && matched.is_some_and(|r| r.decision() != Decision::Drop) {
            *work
                .plan
                .report
                .unavailable
                .entry(d.id.datasource.clone())
                .or_default() += 1;
        }
    }
    work.balance(&used, settings.max_segments_to_move);
    work.finish(&used)
}

impl Work<'_> {
    fn tier_of(&self, node: &str) -> Option<String> {
        self.live
            .get(node)
            .map(|n| n.tier().to_string())
            .or_else(|| self.known_tiers.get(node).cloned())
    }

    fn serves(&self, node: &str, id: &str) -> bool {
        self.live.contains_key(node) && self.state.served.get(node).is_some_and(|s| s.contains(id))
    }

    fn is_served(&self, id: &str) -> bool {
        self.state
            .served
            .iter()
            .any(|(node, ids)| self.live.contains_key(node.as_str()) && ids.contains(id))
    }

    fn room(&self, node: &NodeInfo) -> u64 {
        let load = self.load.get(&node.id).copied().unwrap_or(0);
        node.capacity.unwrap_or(u64::MAX).saturating_sub(load)
    }

    fn assign(&mut self, node: &str, d: &SegmentDescriptor) {
        let id = d.id.to_string();
        self.plan.assign.push((node.to_string(), d.clone()));
        self.holders.entry(id).or_default().insert(node.to_string());
        *self.load.entry(node.to_string()).or_default() += d.size;
    }

    fn unassign(&mut self, node: &str, id: &str, size: u64) {
        self.plan.unassign.push((node.to_string(), id.to_string()));
        if let Some(h) = self.holders.get_mut(id) {
            h.remove(node);
        }
        if let Some(load) = self.load.get_mut(node) {
            *load = load.saturating_sub(size);
        }
    }

    fn holders_of(&self, id: &str) -> Vec<String> {
        self.holders
            .get(id)
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn drop_everywhere(&mut self, id: &str) {
        for node in self.holders_of(id) {
            let size = self.state.assigned[&node].get(id).copied().unwrap_or(0);
            self.unassign(&node, id, size);
        }
    }

    fn unplaceable(&mut self, message: String) {
        self.unplaceable += 1;
        if self.plan.report.unplaceable.len() < REPORTED {
            self.plan.report.unplaceable.push(message);
        }
    }

    /// Adds replicas on the least-loaded live nodes of `tier` with room.
    fn add_replicas(&mut self, d: &SegmentDescriptor, tier: &str, missing: usize) {
        let id = d.id.to_string();
        let holders: BTreeSet<String> = self.holders_of(&id).into_iter().collect();
        let mut candidates: Vec<&NodeInfo> = self
            .live
            .values()
            .copied()
            .filter(|n| n.tier() == tier && !holders.contains(&n.id))
            .collect();
        let free = candidates.len();
        candidates.retain(|n| self.room(n) >= d.size);
        candidates.sort_by_key(|n| (self.load.get(&n.id).copied().unwrap_or(0), n.id.clone()));
        let placed = candidates.len().min(missing);
        let chosen: Vec<String> = candidates[..placed].iter().map(|n| n.id.clone()).collect();
        for node in chosen {
            self.assign(&node, d);
        }
        if placed < missing {
            let in_tier = self.live.values().filter(|n| n.tier() == tier).count();
            let why = if in_tier == 0 {
                format!("no live historical in tier {tier}")
            } else {
                format!(
                    "tier {tier} has {in_tier} live historical(s): {} hold it already, \
                     {} lack room for its {} bytes",
                    in_tier - free,
                    free - candidates.len(),
                    d.size
                )
            };
            self.unplaceable(format!(
                "{}: {} replica(s) not placed: {why}",
                d.id,
                missing - placed
            ));
        }
    }

    /// Removes `excess` replicas from the holders in `nodes`, never taking the number
    /// of serving replicas below `keep_serving`, and waiting while a replica is
    /// still loading.
    fn remove_replicas(
        &mut self,
        id: &str,
        nodes: Vec<String>,
        excess: usize,
        keep_serving: usize,
    ) {
        if nodes
            .iter()
            .any(|n| self.live.contains_key(n.as_str()) && !self.serves(n, id))
        {
            return;
        }
        let mut serving = nodes.iter().filter(|n| self.serves(n, id)).count();
        let mut order: Vec<(bool, std::cmp::Reverse<u64>, String)> = nodes
            .into_iter()
            .map(|n| {
                let load = self.load.get(&n).copied().unwrap_or(0);
                (
                    self.live.contains_key(n.as_str()),
                    std::cmp::Reverse(load),
                    n,
                )
            })
            .collect();
        // Vanished nodes first, then the most loaded.
        order.sort();
        let mut left = excess;
        for (_, _, node) in order {
            if left == 0 {
                break;
            }
            let serves = self.serves(&node, id);
            if serves && serving <= keep_serving {
                continue;
            }
            let size = self
                .state
                .assigned
                .get(&node)
                .and_then(|a| a.get(id))
                .copied();
            self.unassign(&node, id, size.unwrap_or(0));
            serving -= usize::from(serves);
            left -= 1;
        }
    }

    fn load_tiers(&mut self, d: &SegmentDescriptor, tiers: &rules::TieredReplicants) {
        let id = d.id.to_string();
        let mut by_tier: BTreeMap<Option<String>, Vec<String>> = BTreeMap::new();
        for node in self.holders_of(&id) {
            by_tier.entry(self.tier_of(&node)).or_default().push(node);
        }
        for (tier, wanted) in tiers {
            let wanted = *wanted as usize;
            let have = by_tier.remove(&Some(tier.clone())).unwrap_or_default();
            if have.len() < wanted {
                self.add_replicas(d, tier, wanted - have.len());
            } else if have.len() > wanted {
                self.remove_replicas(&id, have.clone(), have.len() - wanted, wanted);
            }
        }
        // Replicas in tiers the rule does not name go once the wanted ones serve.
        let served_where_wanted = tiers.keys().any(|tier| {
            self.holders_of(&id).iter().any(|n| {
                self.live
                    .get(n.as_str())
                    .is_some_and(|info| info.tier() == tier)
                    && self.serves(n, &id)
            })
        });
        for (tier, nodes) in by_tier {
            // A vanished node never seen alive by this leader: its tier is unknown,
            // and its replicas stay until its lifetime is over.
            if tier.is_none() {
                continue;
            }
            let count = nodes.len();
            let keep = if served_where_wanted { 0 } else { count };
            self.remove_replicas(&id, nodes, count, keep);
        }
    }

    fn broadcast(&mut self, d: &SegmentDescriptor) {
        let id = d.id.to_string();
        let holders: BTreeSet<String> = self.holders_of(&id).into_iter().collect();
        let lacking: Vec<NodeInfo> = self
            .live
            .values()
            .filter(|n| !holders.contains(&n.id))
            .map(|n| (*n).clone())
            .collect();
        for node in lacking {
            if self.room(&node) >= d.size {
                self.assign(&node.id, d);
            } else {
                self.unplaceable(format!(
                    "{id}: broadcast to {}: not enough free capacity",
                    node.id
                ));
            }
        }
    }

    /// Starts moving segments from the most to the least loaded node of each tier,
    /// where that narrows the gap. The extra replica is dropped from the source by
    /// a later run, once the target serves it.
    fn balance(&mut self, used: &BTreeMap<String, &SegmentDescriptor>, max_moves: usize) {
        let touched: BTreeSet<String> = self
            .plan
            .assign
            .iter()
            .map(|(_, d)| d.id.to_string())
            .chain(self.plan.unassign.iter().map(|(_, id)| id.clone()))
            .collect();
        let tiers: BTreeSet<String> = self.live.values().map(|n| n.tier().to_string()).collect();
        for tier in tiers {
            while self.plan.report.moves_started < max_moves {
                let mut nodes: Vec<(u64, String)> = self
                    .live
                    .values()
                    .filter(|n| n.tier() == tier)
                    .map(|n| (self.load.get(&n.id).copied().unwrap_or(0), n.id.clone()))
                    .collect();
                nodes.sort();
                let (Some((low, to)), Some((high, from))) = (nodes.first(), nodes.last()) else {
                    break;
                };
                let (low, high, to, from) = (*low, *high, to.clone(), from.clone());
                let target = self.live[to.as_str()];
                let room = self.room(target);
                let candidate = self.state.served.get(&from).and_then(|served| {
                    served
                        .iter()
                        .filter(|id| !touched.contains(*id) && self.loaded_by_rule.contains(*id))
                        .filter_map(|id| used.get(id).copied())
                        .filter(|d| {
                            let holders = self.holders.get(&d.id.to_string());
                            holders.is_some_and(|h| h.contains(&from) && !h.contains(&to))
                                && d.size <= room
                                && low + 2 * d.size <= high
                                && self
                                    .holders_of(&d.id.to_string())
                                    .iter()
                                    .all(|n| self.serves(n, &d.id.to_string()))
                        })
                        .max_by_key(|d| d.size)
                        .cloned()
                });
                let Some(d) = candidate else { break };
                self.assign(&to, &d);
                // Counted as gone from the source for the rest of this run's balancing.
                if let Some(load) = self.load.get_mut(&from) {
                    *load = load.saturating_sub(d.size);
                }
                self.plan.report.moves_started += 1;
            }
        }
    }

    fn finish(mut self, used: &BTreeMap<String, &SegmentDescriptor>) -> Plan {
        if self.unplaceable > self.plan.report.unplaceable.len() {
            let more = self.unplaceable - self.plan.report.unplaceable.len();
            self.plan
                .report
                .unplaceable
                .push(format!("... and {more} more"));
        }
        let mut queues: BTreeMap<String, LoadQueue> = BTreeMap::new();
        for node in self.live.values() {
            let assigned: BTreeMap<&str, u64> = self
                .holders
                .iter()
                .filter(|(_, h)| h.contains(&node.id))
                .map(|(id, _)| (id.as_str(), 0))
                .collect();
            let served = self.state.served.get(&node.id);
            let mut queue = LoadQueue {
                capacity: node.capacity.unwrap_or(u64::MAX),
                assigned_bytes: self.load.get(&node.id).copied().unwrap_or(0),
                ..LoadQueue::default()
            };
            for id in assigned.keys() {
                if !served.is_some_and(|s| s.contains(*id)) {
                    queue.segments_to_load += 1;
                    queue.bytes_to_load += used.get(*id).map_or(0, |d| d.size);
                }
            }
            queue.segments_to_drop = served
                .map(|s| {
                    s.iter()
                        .filter(|id| !assigned.contains_key(id.as_str()))
                        .count()
                })
                .unwrap_or(0);
            queues.insert(node.id.clone(), queue);
        }
        self.plan.report.load_queues = queues;
        self.plan
    }
}

/// Used segments that newer versions, served in full by live nodes, cover entirely:
/// safe to drop without any query losing data.
fn overshadowed_by_served(
    state: &ClusterState,
    live: &BTreeMap<&str, &NodeInfo>,
) -> BTreeSet<SegmentId> {
    let mut all: BTreeMap<&str, Timeline<()>> = BTreeMap::new();
    for d in &state.segments {
        let _ = all.entry(d.id.datasource.as_str()).or_default().add(
            d.id.clone(),
            d.core_partitions,
            (),
        );
    }
    let served: BTreeSet<&String> = state
        .served
        .iter()
        .filter(|(node, _)| live.contains_key(node.as_str()))
        .flat_map(|(_, ids)| ids)
        .collect();
    let mut out = BTreeSet::new();
    for (datasource, timeline) in all {
        let candidates = timeline.overshadowed();
        if candidates.is_empty() {
            continue;
        }
        let mut serving: Timeline<()> = Timeline::new();
        for d in state
            .segments
            .iter()
            .filter(|d| d.id.datasource == datasource)
        {
            if served.contains(&d.id.to_string()) {
                let _ = serving.add(d.id.clone(), d.core_partitions, ());
            }
        }
        for id in candidates {
            if covered_by_newer(&serving, id.interval, &id.version) {
                out.insert(id);
            }
        }
    }
    out
}

fn covered_by_newer(timeline: &Timeline<()>, interval: Interval, version: &str) -> bool {
    let mut at = interval.start;
    for chunk in timeline.lookup(interval) {
        if chunk.version.as_str() <= version || chunk.interval.start > at {
            return false;
        }
        at = chunk.interval.end;
    }
    at >= interval.end
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodes::Role;
    use crate::rules::parse;

    const DAY: i64 = 86_400_000;
    const NOW: i64 = 1_718_000_000_000;
    const SETTINGS: Settings = Settings {
        replicant_lifetime_ms: 60_000,
        max_segments_to_move: 5,
    };

    fn segment(day: i64, version: &str, partition: u32, size: u64) -> SegmentDescriptor {
        let interval = Interval::new(day * DAY, (day + 1) * DAY).unwrap();
        SegmentDescriptor {
            id: SegmentId {
                datasource: "events".into(),
                interval,
                version: version.into(),
                partition,
            },
            core_partitions: 1,
            size,
            num_rows: 10,
            crc32: 0,
            path: format!("events/{day}-{version}-{partition}.grove"),
            columns: Vec::new(),
            created: String::new(),
            used: true,
            commit: None,
        }
    }

    fn historical(id: &str, tier: &str, capacity: Option<u64>) -> NodeInfo {
        NodeInfo {
            tier: Some(tier.into()),
            capacity,
            ..NodeInfo::new(id, Role::Historical, "")
        }
    }

    fn state(segments: Vec<SegmentDescriptor>, nodes: Vec<NodeInfo>, rules: &str) -> ClusterState {
        ClusterState {
            segments,
            rules: BTreeMap::from([(
                rules::DEFAULT_RULES.to_string(),
                parse(rules.as_bytes()).unwrap(),
            )]),
            historicals: nodes,
            ..ClusterState::default()
        }
    }

    /// Applies a plan as the cluster would: assignments change, and every assigned
    /// live node serves what it is assigned.
    fn apply(state: &mut ClusterState, plan: &Plan, serve: bool) {
        for (node, id) in &plan.unassign {
            if let Some(a) = state.assigned.get_mut(node) {
                a.remove(id);
            }
            if let Some(s) = state.served.get_mut(node) {
                s.remove(id);
            }
        }
        for (node, d) in &plan.assign {
            state
                .assigned
                .entry(node.clone())
                .or_default()
                .insert(d.id.to_string(), d.size);
        }
        for d in &plan.mark_unused {
            state.segments.retain(|s| s.id != d.id);
        }
        if serve {
            for node in &state.historicals {
                let assigned = state.assigned.get(&node.id).cloned().unwrap_or_default();
                state
                    .served
                    .insert(node.id.clone(), assigned.into_keys().collect());
            }
        }
    }

    fn holders(state: &ClusterState, id: &SegmentId) -> BTreeSet<String> {
        state
            .assigned
            .iter()
            .filter(|(_, a)| a.contains_key(&id.to_string()))
            .map(|(n, _)| n.clone())
            .collect()
    }

    #[test]
    fn tiered_replicants_are_placed_on_their_tiers_one_per_node() {
        let nodes = vec![
            historical("hot-1", "hot", None),
            historical("hot-2", "hot", None),
            historical("hot-3", "hot", None),
            historical("cold-1", "_default_tier", None),
            historical("cold-2", "_default_tier", None),
        ];
        let segments: Vec<_> = (0..4).map(|d| segment(19_000 + d, "v1", 0, 100)).collect();
        let mut s = state(
            segments.clone(),
            nodes,
            r#"[{"type":"loadForever","tieredReplicants":{"hot":2,"_default_tier":1}}]"#,
        );
        let mut memory = Memory::default();
        let plan = plan(&s, &mut memory, SETTINGS, NOW);
        assert_eq!(plan.assign.len(), 4 * 3);
        apply(&mut s, &plan, true);
        for d in &segments {
            let h = holders(&s, &d.id);
            assert_eq!(
                h.iter().filter(|n| n.starts_with("hot")).count(),
                2,
                "{h:?}"
            );
            assert_eq!(
                h.iter().filter(|n| n.starts_with("cold")).count(),
                1,
                "{h:?}"
            );
        }
        // Spread by load: 8 hot replicas over 3 nodes, 4 cold over 2.
        let hot: Vec<usize> = ["hot-1", "hot-2", "hot-3"]
            .iter()
            .map(|n| s.assigned.get(*n).map_or(0, |a| a.len()))
            .collect();
        assert!(hot.iter().all(|c| (2..=3).contains(c)), "{hot:?}");
        // A settled cluster is left alone.
        let again = super::plan(&s, &mut memory, SETTINGS, NOW);
        assert!(
            again.assign.is_empty() && again.unassign.is_empty(),
            "{again:?}"
        );
        assert!(again.report.unavailable.is_empty());
    }

    #[test]
    fn what_does_not_fit_is_reported_not_retried_forever() {
        let nodes = vec![
            historical("a", "_default_tier", Some(250)),
            historical("b", "_default_tier", Some(250)),
        ];
        let segments: Vec<_> = (0..3).map(|d| segment(19_000 + d, "v1", 0, 100)).collect();
        let rules = r#"[{"type":"loadForever","tieredReplicants":{"_default_tier":2}}]"#;
        let mut s = state(segments, nodes, rules);
        let mut memory = Memory::default();
        let first = plan(&s, &mut memory, SETTINGS, NOW);
        // 250 bytes hold two 100-byte segments per node.
        assert_eq!(first.assign.len(), 4);
        assert_eq!(first.report.unplaceable.len(), 1, "{:?}", first.report);
        assert!(
            first.report.unplaceable[0].contains("2 lack room for its 100 bytes"),
            "{:?}",
            first.report
        );
        apply(&mut s, &first, true);
        let second = plan(&s, &mut memory, SETTINGS, NOW);
        assert!(second.assign.is_empty() && second.unassign.is_empty());
        assert_eq!(second.report.unplaceable.len(), 1);
        assert_eq!(second.report.unavailable.get("events"), Some(&1));
        for (node, assigned) in &s.assigned {
            assert!(
                assigned.values().sum::<u64>() <= 250,
                "{node} over capacity"
            );
        }
    }

    #[test]
    fn a_vanished_historical_keeps_its_segments_for_its_lifetime() {
        let nodes = vec![
            historical("a", "_default_tier", None),
            historical("b", "_default_tier", None),
            historical("c", "_default_tier", None),
        ];
        let d = segment(19_000, "v1", 0, 100);
        let rules = r#"[{"type":"loadForever","tieredReplicants":{"_default_tier":2}}]"#;
        let mut s = state(vec![d.clone()], nodes, rules);
        let mut memory = Memory::default();
        let p = plan(&s, &mut memory, SETTINGS, NOW);
        apply(&mut s, &p, true);
        let before = holders(&s, &d.id);
        let gone = before.iter().next().unwrap().clone();
        s.historicals.retain(|n| n.id != gone);
        s.served.remove(&gone);
        // Within the lifetime: nothing moves.
        let p = plan(&s, &mut memory, SETTINGS, NOW + 1_000);
        assert!(p.assign.is_empty() && p.unassign.is_empty(), "{p:?}");
        assert!(p.report.waiting_for.contains_key(&gone));
        let p = plan(&s, &mut memory, SETTINGS, NOW + 59_000);
        assert!(p.assign.is_empty());
        // After it: the replica is re-created on the node that had none.
        let p = plan(&s, &mut memory, SETTINGS, NOW + 61_001);
        assert_eq!(p.unassign, vec![(gone.clone(), d.id.to_string())]);
        assert_eq!(p.assign.len(), 1);
        assert!(!before.contains(&p.assign[0].0), "a new node gets it");
    }

    #[test]
    fn a_new_leader_keeps_replicas_of_nodes_it_never_saw() {
        let d = segment(19_000, "v1", 0, 100);
        let rules = r#"[{"type":"loadForever","tieredReplicants":{"_default_tier":1}}]"#;
        let mut s = state(vec![d.clone()], vec![], rules);
        s.assigned.insert(
            "restarting".into(),
            BTreeMap::from([(d.id.to_string(), 100)]),
        );
        let p = plan(&s, &mut Memory::default(), SETTINGS, NOW);
        assert!(p.unassign.is_empty(), "{p:?}");
    }

    #[test]
    fn an_old_version_is_dropped_only_once_the_new_one_is_served_in_full() {
        let nodes = vec![historical("a", "_default_tier", None)];
        let old = segment(19_000, "v1", 0, 100);
        let new: Vec<_> = (0..2)
            .map(|p| SegmentDescriptor {
                core_partitions: 2,
                ..segment(19_000, "v2", p, 100)
            })
            .collect();
        let rules = r#"[{"type":"loadForever","tieredReplicants":{"_default_tier":1}}]"#;
        let mut s = state(vec![old.clone()], nodes, rules);
        let mut memory = Memory::default();
        let p = plan(&s, &mut memory, SETTINGS, NOW);
        apply(&mut s, &p, true);
        s.segments.extend(new.clone());
        let p = plan(&s, &mut memory, SETTINGS, NOW);
        assert!(p.mark_unused.is_empty(), "v2 is not served yet");
        assert_eq!(p.assign.len(), 2);
        apply(&mut s, &p, false);
        // One partition of two served: still incomplete, v1 stays.
        s.served.get_mut("a").unwrap().insert(new[0].id.to_string());
        let p = plan(&s, &mut memory, SETTINGS, NOW);
        assert!(p.mark_unused.is_empty());
        s.served.get_mut("a").unwrap().insert(new[1].id.to_string());
        let p = plan(&s, &mut memory, SETTINGS, NOW);
        assert_eq!(p.mark_unused.len(), 1);
        assert_eq!(p.mark_unused[0].id, old.id);
        assert_eq!(p.unassign, vec![("a".to_string(), old.id.to_string())]);
    }

    #[test]
    fn drop_rules_unassign_and_first_match_wins() {
        let nodes = vec![historical("a", "_default_tier", None)];
        let recent = segment(NOW / DAY - 1, "v1", 0, 100);
        let old = segment(NOW / DAY - 100, "v1", 0, 100);
        let rules = r#"[{"type":"loadByPeriod","period":"P30D","tieredReplicants":{"_default_tier":1}},
                        {"type":"dropForever"}]"#;
        let mut s = state(vec![recent.clone(), old.clone()], nodes, rules);
        s.assigned
            .insert("a".into(), BTreeMap::from([(old.id.to_string(), 100)]));
        s.served
            .insert("a".into(), BTreeSet::from([old.id.to_string()]));
        let p = plan(&s, &mut Memory::default(), SETTINGS, NOW);
        assert_eq!(p.unassign, vec![("a".to_string(), old.id.to_string())]);
        assert_eq!(p.assign.len(), 1);
        assert_eq!(p.assign[0].1.id, recent.id);
        assert!(p.report.unavailable.get("events").is_some_and(|n| *n == 1));
    }

    #[test]
    fn broadcast_puts_a_replica_on_every_historical_of_every_tier() {
        let nodes = vec![
            historical("a", "hot", None),
            historical("b", "_default_tier", None),
            historical("c", "_default_tier", Some(50)),
        ];
        let d = segment(19_000, "v1", 0, 100);
        let mut s = state(vec![d.clone()], nodes, r#"[{"type":"broadcastForever"}]"#);
        let p = plan(&s, &mut Memory::default(), SETTINGS, NOW);
        apply(&mut s, &p, true);
        assert_eq!(holders(&s, &d.id), BTreeSet::from(["a".into(), "b".into()]));
        assert_eq!(
            p.report.unplaceable.len(),
            1,
            "c has no room: {:?}",
            p.report
        );
    }

    #[test]
    fn segments_no_rule_matches_are_left_where_they_are() {
        let nodes = vec![
            historical("a", "_default_tier", None),
            historical("b", "_default_tier", None),
        ];
        let segments: Vec<_> = (0..4).map(|d| segment(19_000 + d, "v1", 0, 100)).collect();
        let rules = r#"[{"type":"loadByInterval","interval":"2000-01-01/2000-01-02",
                         "tieredReplicants":{"_default_tier":1}}]"#;
        let mut s = state(segments.clone(), nodes, rules);
        let all_on_a: BTreeMap<String, u64> = segments
            .iter()
            .map(|d| (d.id.to_string(), d.size))
            .collect();
        s.served
            .insert("a".into(), all_on_a.keys().cloned().collect());
        s.assigned.insert("a".into(), all_on_a);
        let p = plan(&s, &mut Memory::default(), SETTINGS, NOW);
        assert!(
            p.assign.is_empty() && p.unassign.is_empty(),
            "not balanced: {p:?}"
        );
        assert_eq!(p.report.without_rule, 4);
    }

    #[test]
    fn balancing_moves_segments_to_an_empty_node_then_drops_the_source_copy() {
        let mut nodes = vec![historical("a", "_default_tier", None)];
        let segments: Vec<_> = (0..6).map(|d| segment(19_000 + d, "v1", 0, 100)).collect();
        let rules = r#"[{"type":"loadForever","tieredReplicants":{"_default_tier":1}}]"#;
        let mut s = state(segments, nodes.clone(), rules);
        let mut memory = Memory::default();
        let p = plan(&s, &mut memory, SETTINGS, NOW);
        apply(&mut s, &p, true);
        nodes.push(historical("b", "_default_tier", None));
        s.historicals = nodes;
        for _ in 0..4 {
            let p = plan(&s, &mut memory, SETTINGS, NOW);
            apply(&mut s, &p, true);
        }
        let count = |n: &str| s.assigned.get(n).map_or(0, |a| a.len());
        assert_eq!((count("a"), count("b")), (3, 3));
        let p = plan(&s, &mut memory, SETTINGS, NOW);
        assert!(
            p.assign.is_empty() && p.unassign.is_empty(),
            "balanced: {p:?}"
        );
    }
}
