//! Druid's versioned interval timeline: which segments a query over some interval reads.
//!
//! # Model
//!
//! Segments are grouped into *chunks*: all segments of one (interval, version). Each segment is
//! added with the number of *core* partitions its chunk was published with, and the chunk is
//! *complete* once every partition `0..core` is present, where `core` is the largest count any
//! of its segments declares (so a chunk is never complete while one of its own segments still
//! expects a partition that is missing). Partitions numbered `>= core` were appended later: they
//! are served with the chunk but never needed for completeness. A core count of `0` makes a chunk
//! complete as soon as it holds any partition. Incomplete chunks are ignored by visibility: they
//! hide nothing, so older data stays visible until the new version is whole.
//!
//! At every instant the *visible* chunk is the complete chunk with the highest version (compared
//! as strings) whose interval contains that instant. A newer chunk covering only part of an older
//! one leaves the older one visible over the rest, possibly as two disjoint stretches.
//!
//! Two complete chunks of the *same* version may overlap with unequal intervals (a
//! re-publication at another granularity, say). Druid leaves that case undefined; here the chunk
//! with the later start wins, then the shorter one. A chunk nested inside a same-version chunk
//! therefore always shows through it: the more specific publication is taken as the intended one.
//!
//! A segment is *overshadowed* when its chunk is complete and every instant of its interval is
//! covered by complete chunks of strictly higher versions: it can never be read again and may be
//! dropped. An incomplete chunk is never overshadowed (it is only not yet visible), and neither is
//! a chunk hidden only by the same-version tie-break, since no newer data replaced it.
//!
//! # Complexity
//!
//! Chunks live in a map ordered by interval start. With `n` chunks of which `k` are complete and
//! overlap the lookup interval, `lookup` walks the chunks starting before the interval's end
//! (O(n) at worst) and sweeps the `2k` boundaries of the candidates, keeping the ones alive in an
//! ordered set so the winner at each boundary is its maximum: O(n + k log k) in all.
//! `is_overshadowed` is one such walk, O(n); `overshadowed` repeats it per chunk, O(n²) at worst.
//! `add` and `remove` cost O(log n + p) for a chunk of `p` partitions, as completeness is
//! recomputed on every change.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use crate::error::{Error, Result};
use crate::id::{Interval, SegmentId};

/// The segments of one datasource, indexed for visibility and overshadowing questions.
#[derive(Debug, Clone)]
pub struct Timeline<T> {
    chunks: BTreeMap<ChunkKey, Chunk<T>>,
    /// Segment count, kept so `len` need not walk every chunk.
    len: usize,
}

/// One stretch of time and the chunk visible over it.
#[derive(Debug, Clone, PartialEq)]
pub struct VisibleChunk<T> {
    /// The part of the chunk's interval where it is visible, clipped to the lookup interval.
    pub interval: Interval,
    pub chunk_interval: Interval,
    pub version: String,
    /// Every partition of the chunk (core and appended), sorted by partition number.
    pub segments: Vec<(SegmentId, T)>,
}

/// Names a chunk. Ordered by interval (start, then end), then version: within one datasource
/// that is the order of `SegmentId`s, so walking chunks in key order and partitions in number
/// order yields segments sorted by id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ChunkKey {
    interval: Interval,
    version: String,
}

/// Where two complete chunks overlap, the greater priority is visible: the higher version, then
/// the later start, then the earlier end. Distinct chunks never share a priority.
type Priority<'a> = (&'a str, i64, Reverse<i64>);

impl ChunkKey {
    fn of(id: &SegmentId) -> Self {
        ChunkKey {
            interval: id.interval,
            version: id.version.clone(),
        }
    }

    /// The least key of any chunk starting at `start`, so `..key` spans the chunks starting
    /// before it.
    fn least_starting_at(start: i64) -> Self {
        ChunkKey {
            interval: Interval {
                start,
                end: i64::MIN,
            },
            version: String::new(),
        }
    }

    fn priority(&self) -> Priority<'_> {
        (
            &self.version,
            self.interval.start,
            Reverse(self.interval.end),
        )
    }
}

#[derive(Debug, Clone)]
struct Entry<T> {
    id: SegmentId,
    core_partitions: u32,
    payload: T,
}

#[derive(Debug, Clone)]
struct Chunk<T> {
    partitions: BTreeMap<u32, Entry<T>>,
    /// Cached because every lookup asks it of every candidate; refreshed on each change.
    complete: bool,
}

impl<T> Chunk<T> {
    fn new() -> Self {
        Chunk {
            partitions: BTreeMap::new(),
            complete: false,
        }
    }

    fn insert(&mut self, entry: Entry<T>) -> Option<Entry<T>> {
        let replaced = self.partitions.insert(entry.id.partition, entry);
        self.refresh();
        replaced
    }

    fn remove(&mut self, partition: u32) -> Option<Entry<T>> {
        let removed = self.partitions.remove(&partition);
        self.refresh();
        removed
    }

    fn refresh(&mut self) {
        let core = self
            .partitions
            .values()
            .map(|entry| entry.core_partitions)
            .max()
            .unwrap_or(0);
        // Partition numbers are distinct, so `core` of them below `core` means none is missing.
        let core_present = self.partitions.range(..core).count();
        self.complete = !self.partitions.is_empty() && core_present == core as usize;
    }

    /// The entry for `id`, checking the whole id since chunk keys ignore the datasource.
    fn entry(&self, id: &SegmentId) -> Option<&Entry<T>> {
        self.partitions
            .get(&id.partition)
            .filter(|entry| entry.id == *id)
    }
}

impl<T> Default for Timeline<T> {
    fn default() -> Self {
        Timeline {
            chunks: BTreeMap::new(),
            len: 0,
        }
    }
}

impl<T> Timeline<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a segment. Segments of different datasources must not be mixed, and a
    /// segment must cover some time.
    pub fn add(&mut self, id: SegmentId, core_partitions: u32, payload: T) -> Result<()> {
        self.check_datasource(&id)?;
        if id.interval.is_empty() {
            return Err(Error::invalid(format!(
                "segment {id} has an empty interval and would cover no time"
            )));
        }
        let chunk = self
            .chunks
            .entry(ChunkKey::of(&id))
            .or_insert_with(Chunk::new);
        let entry = Entry {
            id,
            core_partitions,
            payload,
        };
        if chunk.insert(entry).is_none() {
            self.len += 1;
        }
        Ok(())
    }

    /// Removes a segment, returning its payload, or `None` if the timeline does not hold it.
    pub fn remove(&mut self, id: &SegmentId) -> Option<T> {
        let key = ChunkKey::of(id);
        let chunk = self.chunks.get_mut(&key)?;
        chunk.entry(id)?;
        let removed = chunk.remove(id.partition)?;
        // Empty chunks are dropped so every chunk left names the datasource held.
        if chunk.partitions.is_empty() {
            self.chunks.remove(&key);
        }
        self.len -= 1;
        Some(removed.payload)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the timeline holds `id` and every instant of its interval is covered by complete
    /// chunks of higher versions. Segments the timeline does not hold are never overshadowed.
    pub fn is_overshadowed(&self, id: &SegmentId) -> bool {
        let key = ChunkKey::of(id);
        self.chunks
            .get(&key)
            .is_some_and(|chunk| chunk.entry(id).is_some() && self.chunk_overshadowed(&key, chunk))
    }

    /// All overshadowed segment ids, sorted.
    pub fn overshadowed(&self) -> Vec<SegmentId> {
        self.chunks
            .iter()
            .filter(|(key, chunk)| self.chunk_overshadowed(key, chunk))
            .flat_map(|(_, chunk)| chunk.partitions.values().map(|entry| entry.id.clone()))
            .collect()
    }

    /// Every segment with its payload, sorted by id.
    pub fn iter(&self) -> impl Iterator<Item = (&SegmentId, &T)> {
        self.chunks
            .values()
            .flat_map(|chunk| chunk.partitions.values())
            .map(|entry| (&entry.id, &entry.payload))
    }

    fn check_datasource(&self, id: &SegmentId) -> Result<()> {
        match self.datasource() {
            Some(held) if held != id.datasource => Err(Error::invalid(format!(
                "segment {id} belongs to datasource {:?} but this timeline holds datasource \
                 {held:?}; a timeline serves a single datasource",
                id.datasource
            ))),
            _ => Ok(()),
        }
    }

    /// The datasource of the segments held: chunks are never empty and all share it.
    fn datasource(&self) -> Option<&str> {
        let chunk = self.chunks.values().next()?;
        let entry = chunk.partitions.values().next()?;
        Some(&entry.id.datasource)
    }

    /// Complete chunks overlapping `interval`, in key order, hence by start.
    fn complete_overlapping(
        &self,
        interval: Interval,
    ) -> impl Iterator<Item = (&ChunkKey, &Chunk<T>)> {
        self.chunks
            .range(..ChunkKey::least_starting_at(interval.end))
            .filter(move |(key, chunk)| chunk.complete && key.interval.overlaps(&interval))
    }

    fn chunk_overshadowed(&self, key: &ChunkKey, chunk: &Chunk<T>) -> bool {
        chunk.complete && self.covered_by_higher_versions(key)
    }

    /// Whether complete chunks of versions above `key`'s cover every instant of its interval.
    fn covered_by_higher_versions(&self, key: &ChunkKey) -> bool {
        let target = key.interval;
        let mut covered_to = target.start;
        for (other, _) in self.complete_overlapping(target) {
            if other.version <= key.version {
                continue;
            }
            // Candidates come by start, so a gap before this one is a gap no later one fills.
            if other.interval.start > covered_to {
                return false;
            }
            covered_to = covered_to.max(other.interval.end);
            if covered_to >= target.end {
                return true;
            }
        }
        false
    }
}

impl<T: Clone> Timeline<T> {
    /// Visible chunks overlapping `interval`, in time order, adjacent stretches of the same chunk
    /// merged.
    pub fn lookup(&self, interval: Interval) -> Vec<VisibleChunk<T>> {
        // An empty interval holds no instant, though it may still "overlap" a chunk around it.
        if interval.is_empty() {
            return Vec::new();
        }
        let candidates: Vec<(&ChunkKey, &Chunk<T>)> = self.complete_overlapping(interval).collect();
        let keys: Vec<&ChunkKey> = candidates.iter().map(|(key, _)| *key).collect();
        visible_stretches(interval, &keys)
            .into_iter()
            .map(|(stretch, index)| {
                let (key, chunk) = candidates[index];
                VisibleChunk {
                    interval: stretch,
                    chunk_interval: key.interval,
                    version: key.version.clone(),
                    segments: chunk
                        .partitions
                        .values()
                        .map(|entry| (entry.id.clone(), entry.payload.clone()))
                        .collect(),
                }
            })
            .collect()
    }
}

/// A chunk entering or leaving the sweep.
struct Event {
    at: i64,
    enters: bool,
    chunk: usize,
}

/// Which of `chunks` (all complete) is visible where within `within`: `(stretch, index)` pairs
/// in time order, adjacent stretches of one chunk merged.
///
/// Sweeps the clipped chunk boundaries in order; between two consecutive boundaries the set of
/// chunks alive is fixed, so the winner is the greatest priority alive.
fn visible_stretches(within: Interval, chunks: &[&ChunkKey]) -> Vec<(Interval, usize)> {
    let mut events = Vec::with_capacity(2 * chunks.len());
    for (index, key) in chunks.iter().enumerate() {
        let Some(clipped) = key.interval.intersect(&within) else {
            continue;
        };
        events.push(Event {
            at: clipped.start,
            enters: true,
            chunk: index,
        });
        events.push(Event {
            at: clipped.end,
            enters: false,
            chunk: index,
        });
    }
    events.sort_unstable_by_key(|event| event.at);

    let mut alive: BTreeSet<(Priority<'_>, usize)> = BTreeSet::new();
    let mut stretches = Vec::new();
    // All events at one instant are applied before asking who wins from there on.
    let mut instants = events.chunk_by(|a, b| a.at == b.at).peekable();
    while let Some(group) = instants.next() {
        for event in group {
            let member = (chunks[event.chunk].priority(), event.chunk);
            if event.enters {
                alive.insert(member);
            } else {
                alive.remove(&member);
            }
        }
        let (Some(next), Some(&(_, winner))) = (instants.peek(), alive.last()) else {
            continue;
        };
        let stretch = Interval {
            start: group[0].at,
            end: next[0].at,
        };
        push_stretch(&mut stretches, stretch, winner);
    }
    stretches
}

/// Appends a stretch, or extends the last one when it is the same chunk and they touch: a
/// boundary of a losing chunk must not split the winner's stretch.
fn push_stretch(stretches: &mut Vec<(Interval, usize)>, stretch: Interval, chunk: usize) {
    match stretches.last_mut() {
        Some((last, last_chunk)) if *last_chunk == chunk && last.end == stretch.start => {
            last.end = stretch.end;
        }
        _ => stretches.push((stretch, chunk)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::id::{format_millis, parse_instant};

    fn iv(text: &str) -> Interval {
        Interval::parse(text).unwrap()
    }

    fn seg_of(datasource: &str, interval: &str, version: &str, partition: u32) -> SegmentId {
        SegmentId {
            datasource: datasource.into(),
            interval: iv(interval),
            version: version.into(),
            partition,
        }
    }

    fn seg(interval: &str, version: &str, partition: u32) -> SegmentId {
        seg_of("wiki", interval, version, partition)
    }

    /// The payload each test segment carries: enough to tell segments apart.
    fn payload(id: &SegmentId) -> String {
        format!("{}#{}", id.version, id.partition)
    }

    fn add(
        timeline: &mut Timeline<String>,
        interval: &str,
        version: &str,
        partition: u32,
        core: u32,
    ) {
        let id = seg(interval, version, partition);
        let payload = payload(&id);
        timeline.add(id, core, payload).unwrap();
    }

    /// A visible stretch as tests state it: where, which version, which partitions.
    fn stretch(interval: &str, version: &str, partitions: &[u32]) -> (Interval, String, Vec<u32>) {
        (iv(interval), version.into(), partitions.to_vec())
    }

    fn visible(timeline: &Timeline<String>, interval: &str) -> Vec<(Interval, String, Vec<u32>)> {
        timeline
            .lookup(iv(interval))
            .into_iter()
            .map(|chunk| {
                let partitions = chunk.segments.iter().map(|(id, _)| id.partition).collect();
                (chunk.interval, chunk.version, partitions)
            })
            .collect()
    }

    const DAY: &str = "2024-01-01/2024-01-02";

    #[test]
    fn single_chunk_is_visible_over_its_interval() {
        let mut timeline = Timeline::new();
        add(&mut timeline, DAY, "v1", 1, 2);
        add(&mut timeline, DAY, "v1", 0, 2);

        let found = timeline.lookup(iv(DAY));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].interval, iv(DAY));
        assert_eq!(found[0].chunk_interval, iv(DAY));
        assert_eq!(found[0].version, "v1");
        let expected = vec![
            (seg(DAY, "v1", 0), "v1#0".to_string()),
            (seg(DAY, "v1", 1), "v1#1".to_string()),
        ];
        assert_eq!(found[0].segments, expected);
        assert_eq!(timeline.len(), 2);
        assert!(timeline.overshadowed().is_empty());
    }

    #[test]
    fn newer_version_fully_overshadows_older() {
        let mut timeline = Timeline::new();
        add(&mut timeline, DAY, "v1", 0, 1);
        add(&mut timeline, DAY, "v2", 0, 2);
        add(&mut timeline, DAY, "v2", 1, 2);

        assert_eq!(visible(&timeline, DAY), vec![stretch(DAY, "v2", &[0, 1])]);
        assert!(timeline.is_overshadowed(&seg(DAY, "v1", 0)));
        assert!(!timeline.is_overshadowed(&seg(DAY, "v2", 0)));
        assert_eq!(timeline.overshadowed(), vec![seg(DAY, "v1", 0)]);
    }

    #[test]
    fn incomplete_newer_version_hides_nothing_until_its_last_partition_arrives() {
        let mut timeline = Timeline::new();
        add(&mut timeline, DAY, "v1", 0, 1);
        add(&mut timeline, DAY, "v2", 0, 2);

        assert_eq!(visible(&timeline, DAY), vec![stretch(DAY, "v1", &[0])]);
        assert!(!timeline.is_overshadowed(&seg(DAY, "v1", 0)));
        assert!(!timeline.is_overshadowed(&seg(DAY, "v2", 0)));

        add(&mut timeline, DAY, "v2", 1, 2);
        assert_eq!(visible(&timeline, DAY), vec![stretch(DAY, "v2", &[0, 1])]);
        assert!(timeline.is_overshadowed(&seg(DAY, "v1", 0)));
    }

    #[test]
    fn incomplete_chunk_is_not_overshadowed_even_when_covered() {
        let mut timeline = Timeline::new();
        add(&mut timeline, DAY, "v1", 1, 2);
        add(&mut timeline, DAY, "v2", 0, 1);

        assert!(!timeline.is_overshadowed(&seg(DAY, "v1", 1)));
        assert!(timeline.overshadowed().is_empty());
    }

    #[test]
    fn appended_partitions_are_served_but_not_needed_for_completeness() {
        let mut timeline = Timeline::new();
        add(&mut timeline, DAY, "v1", 0, 2);
        add(&mut timeline, DAY, "v1", 5, 2);
        // Core partition 1 is missing: the appended partition 5 does not stand in for it.
        assert!(visible(&timeline, DAY).is_empty());

        add(&mut timeline, DAY, "v1", 1, 2);
        assert_eq!(
            visible(&timeline, DAY),
            vec![stretch(DAY, "v1", &[0, 1, 5])]
        );

        // A chunk missing only an appended partition is complete.
        add(&mut timeline, DAY, "v2", 0, 1);
        add(&mut timeline, DAY, "v2", 3, 1);
        assert_eq!(visible(&timeline, DAY), vec![stretch(DAY, "v2", &[0, 3])]);
    }

    #[test]
    fn partial_overlap_splits_the_older_chunk_around_the_newer() {
        let mut timeline = Timeline::new();
        add(&mut timeline, DAY, "v1", 0, 1);
        add(
            &mut timeline,
            "2024-01-01T10:00/2024-01-01T11:00",
            "v2",
            0,
            1,
        );

        let found = timeline.lookup(iv(DAY));
        let stretches: Vec<_> = found
            .iter()
            .map(|chunk| (chunk.interval, chunk.chunk_interval, chunk.version.as_str()))
            .collect();
        let middle = iv("2024-01-01T10:00/2024-01-01T11:00");
        assert_eq!(
            stretches,
            vec![
                (iv("2024-01-01/2024-01-01T10:00"), iv(DAY), "v1"),
                (middle, middle, "v2"),
                (iv("2024-01-01T11:00/2024-01-02"), iv(DAY), "v1"),
            ]
        );
        assert!(!timeline.is_overshadowed(&seg(DAY, "v1", 0)));
        assert!(timeline.overshadowed().is_empty());
    }

    #[test]
    fn newer_chunks_together_covering_an_older_one_overshadow_it() {
        let mut timeline = Timeline::new();
        add(&mut timeline, "2024-01-01/2024-01-03", "v1", 0, 1);
        add(&mut timeline, "2024-01-01/2024-01-02", "v2", 0, 1);
        add(&mut timeline, "2024-01-02/2024-01-03", "v2", 0, 1);

        assert_eq!(
            visible(&timeline, "2024-01-01/2024-01-03"),
            vec![
                stretch("2024-01-01/2024-01-02", "v2", &[0]),
                stretch("2024-01-02/2024-01-03", "v2", &[0]),
            ]
        );
        assert!(timeline.is_overshadowed(&seg("2024-01-01/2024-01-03", "v1", 0)));
    }

    #[test]
    fn a_gap_between_newer_chunks_keeps_the_older_one() {
        let mut timeline = Timeline::new();
        add(&mut timeline, "2024-01-01/2024-01-04", "v1", 0, 1);
        add(&mut timeline, "2024-01-01/2024-01-02", "v2", 0, 1);
        add(&mut timeline, "2024-01-03/2024-01-04", "v3", 0, 1);

        assert!(!timeline.is_overshadowed(&seg("2024-01-01/2024-01-04", "v1", 0)));
        assert_eq!(
            visible(&timeline, "2024-01-01/2024-01-04"),
            vec![
                stretch("2024-01-01/2024-01-02", "v2", &[0]),
                stretch("2024-01-02/2024-01-03", "v1", &[0]),
                stretch("2024-01-03/2024-01-04", "v3", &[0]),
            ]
        );
    }

    #[test]
    fn lookup_clips_to_the_query_interval() {
        let mut timeline = Timeline::new();
        add(&mut timeline, DAY, "v1", 0, 1);
        add(&mut timeline, "2024-01-03/2024-01-04", "v1", 0, 1);

        let found = timeline.lookup(iv("2024-01-01T06:00/2024-01-01T08:00"));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].interval, iv("2024-01-01T06:00/2024-01-01T08:00"));
        assert_eq!(found[0].chunk_interval, iv(DAY));

        // The gap between the two days is simply absent.
        assert_eq!(
            visible(&timeline, "2024-01-01T12:00/2024-01-03T12:00"),
            vec![
                stretch("2024-01-01T12:00/2024-01-02", "v1", &[0]),
                stretch("2024-01-03/2024-01-03T12:00", "v1", &[0]),
            ]
        );
        assert!(visible(&timeline, "2024-01-02/2024-01-03").is_empty());
        assert!(visible(&timeline, "2023-12-31/2024-01-01").is_empty());
        assert!(visible(&timeline, "2024-01-01T06:00/2024-01-01T06:00").is_empty());
    }

    #[test]
    fn a_losing_chunk_boundary_does_not_split_the_winner() {
        let mut timeline = Timeline::new();
        add(&mut timeline, DAY, "v2", 0, 1);
        add(
            &mut timeline,
            "2024-01-01T06:00/2024-01-01T08:00",
            "v1",
            0,
            1,
        );

        assert_eq!(visible(&timeline, DAY), vec![stretch(DAY, "v2", &[0])]);
    }

    #[test]
    fn removing_the_newer_version_restores_the_older() {
        let mut timeline = Timeline::new();
        add(&mut timeline, DAY, "v1", 0, 1);
        add(&mut timeline, DAY, "v2", 0, 1);
        assert!(timeline.is_overshadowed(&seg(DAY, "v1", 0)));

        assert_eq!(
            timeline.remove(&seg(DAY, "v2", 0)),
            Some("v2#0".to_string())
        );
        assert_eq!(visible(&timeline, DAY), vec![stretch(DAY, "v1", &[0])]);
        assert!(!timeline.is_overshadowed(&seg(DAY, "v1", 0)));
        assert_eq!(timeline.len(), 1);

        assert_eq!(timeline.remove(&seg(DAY, "v2", 0)), None);
        assert_eq!(timeline.remove(&seg_of("other", DAY, "v1", 0)), None);
        assert_eq!(timeline.len(), 1);
    }

    #[test]
    fn removing_a_core_partition_makes_the_chunk_incomplete_again() {
        let mut timeline = Timeline::new();
        add(&mut timeline, DAY, "v1", 0, 1);
        add(&mut timeline, DAY, "v2", 0, 2);
        add(&mut timeline, DAY, "v2", 1, 2);

        timeline.remove(&seg(DAY, "v2", 1));
        assert_eq!(visible(&timeline, DAY), vec![stretch(DAY, "v1", &[0])]);
    }

    #[test]
    fn adding_an_existing_segment_replaces_it() {
        let mut timeline = Timeline::new();
        timeline
            .add(seg(DAY, "v1", 0), 1, "old".to_string())
            .unwrap();
        timeline
            .add(seg(DAY, "v1", 0), 1, "new".to_string())
            .unwrap();

        assert_eq!(timeline.len(), 1);
        let all: Vec<_> = timeline
            .iter()
            .map(|(_, payload)| payload.as_str())
            .collect();
        assert_eq!(all, vec!["new"]);
    }

    #[test]
    fn mixing_datasources_is_an_error() {
        let mut timeline = Timeline::new();
        add(&mut timeline, DAY, "v1", 0, 1);

        let other = seg_of("clicks", DAY, "v2", 0);
        let err = timeline.add(other.clone(), 1, "x".to_string()).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("\"wiki\"") && message.contains("\"clicks\""),
            "{message}"
        );
        assert_eq!(timeline.len(), 1);
        assert!(!timeline.is_overshadowed(&seg(DAY, "v1", 0)));

        // Once empty, the timeline may take up another datasource.
        timeline.remove(&seg(DAY, "v1", 0));
        timeline.add(other, 1, "x".to_string()).unwrap();
    }

    #[test]
    fn empty_interval_is_rejected() {
        let mut timeline = Timeline::new();
        let id = seg("2024-01-01/2024-01-01", "v1", 0);
        let err = timeline.add(id, 1, String::new()).unwrap_err();
        assert!(err.to_string().contains("empty interval"), "{err}");
        assert!(timeline.is_empty());
    }

    #[test]
    fn zero_core_partitions_is_complete_with_any_partition() {
        let mut timeline = Timeline::new();
        add(&mut timeline, DAY, "v1", 0, 1);
        add(&mut timeline, DAY, "v2", 3, 0);

        assert_eq!(visible(&timeline, DAY), vec![stretch(DAY, "v2", &[3])]);
        assert!(timeline.is_overshadowed(&seg(DAY, "v1", 0)));
    }

    #[test]
    fn the_largest_declared_core_count_decides_completeness() {
        let mut timeline = Timeline::new();
        add(&mut timeline, DAY, "v1", 0, 0);
        add(&mut timeline, DAY, "v1", 2, 3);
        assert!(visible(&timeline, DAY).is_empty());

        add(&mut timeline, DAY, "v1", 1, 0);
        assert_eq!(
            visible(&timeline, DAY),
            vec![stretch(DAY, "v1", &[0, 1, 2])]
        );
    }

    #[test]
    fn same_version_tie_break_prefers_later_start_then_shorter() {
        // Later start wins: the nested hour shows through the day.
        let mut nested = Timeline::new();
        add(&mut nested, DAY, "v1", 0, 1);
        add(&mut nested, "2024-01-01T10:00/2024-01-01T11:00", "v1", 0, 1);
        assert_eq!(
            visible(&nested, DAY),
            vec![
                stretch("2024-01-01/2024-01-01T10:00", "v1", &[0]),
                stretch("2024-01-01T10:00/2024-01-01T11:00", "v1", &[0]),
                stretch("2024-01-01T11:00/2024-01-02", "v1", &[0]),
            ]
        );
        let chunk_intervals: Vec<_> = nested
            .lookup(iv(DAY))
            .into_iter()
            .map(|chunk| chunk.chunk_interval)
            .collect();
        assert_eq!(
            chunk_intervals,
            vec![iv(DAY), iv("2024-01-01T10:00/2024-01-01T11:00"), iv(DAY)]
        );
        // A same-version loser was not replaced by newer data, so it is not overshadowed.
        assert!(nested.overshadowed().is_empty());

        // Same start: the shorter chunk wins where both exist.
        let mut same_start = Timeline::new();
        add(&mut same_start, DAY, "v1", 0, 1);
        add(&mut same_start, "2024-01-01/2024-01-01T12:00", "v1", 0, 1);
        let found = same_start.lookup(iv(DAY));
        let stretches: Vec<_> = found
            .iter()
            .map(|chunk| (chunk.interval, chunk.chunk_interval))
            .collect();
        assert_eq!(
            stretches,
            vec![
                (
                    iv("2024-01-01/2024-01-01T12:00"),
                    iv("2024-01-01/2024-01-01T12:00")
                ),
                (iv("2024-01-01T12:00/2024-01-02"), iv(DAY)),
            ]
        );
    }

    #[test]
    fn versions_compare_as_strings() {
        let mut timeline = Timeline::new();
        add(&mut timeline, DAY, "2024-05-01T00:00:00.000Z", 0, 1);
        add(&mut timeline, DAY, "2024-04-30T23:59:59.999Z", 0, 1);

        let found = visible(&timeline, DAY);
        assert_eq!(found, vec![stretch(DAY, "2024-05-01T00:00:00.000Z", &[0])]);
    }

    #[test]
    fn iter_and_overshadowed_are_sorted_by_id() {
        let mut timeline = Timeline::new();
        add(&mut timeline, "2024-01-02/2024-01-03", "v1", 1, 2);
        add(&mut timeline, "2024-01-02/2024-01-03", "v1", 0, 2);
        add(&mut timeline, DAY, "v2", 0, 1);
        add(&mut timeline, DAY, "v1", 0, 1);
        add(&mut timeline, "2024-01-01/2024-01-03", "v0", 0, 1);
        add(&mut timeline, "2024-01-02/2024-01-03", "v2", 0, 1);

        let ids: Vec<SegmentId> = timeline.iter().map(|(id, _)| id.clone()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        assert_eq!(ids.len(), timeline.len());

        assert_eq!(
            timeline.overshadowed(),
            vec![
                seg(DAY, "v1", 0),
                seg("2024-01-01/2024-01-03", "v0", 0),
                seg("2024-01-02/2024-01-03", "v1", 0),
                seg("2024-01-02/2024-01-03", "v1", 1),
            ]
        );
    }

    /// A small deterministic generator, so the randomized check needs no extra dependency.
    struct XorShift(u64);

    impl XorShift {
        fn below(&mut self, bound: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % bound
        }
    }

    /// The visible chunk at `t` straight from the definition: every complete chunk, checked one
    /// by one.
    fn winner_at(chunks: &BTreeMap<ChunkKey, bool>, t: i64) -> Option<&ChunkKey> {
        chunks
            .iter()
            .filter(|(key, complete)| **complete && key.interval.contains(t))
            .map(|(key, _)| key)
            .max_by_key(|key| key.priority())
    }

    /// Completeness of every chunk, recomputed from the segments alone.
    fn chunk_completeness(segments: &[(SegmentId, u32)]) -> BTreeMap<ChunkKey, bool> {
        let mut partitions: BTreeMap<ChunkKey, (Vec<u32>, u32)> = BTreeMap::new();
        for (id, core) in segments {
            let (present, max_core) = partitions.entry(ChunkKey::of(id)).or_default();
            present.push(id.partition);
            *max_core = (*max_core).max(*core);
        }
        partitions
            .into_iter()
            .map(|(key, (present, core))| {
                let complete = (0..core).all(|p| present.contains(&p));
                (key, complete)
            })
            .collect()
    }

    #[test]
    fn sweep_agrees_with_the_definition_on_random_timelines() {
        let base = parse_instant("2024-01-01").unwrap();
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for round in 0..400 {
            let mut timeline = Timeline::new();
            let mut segments: Vec<(SegmentId, u32)> = Vec::new();
            for _ in 0..1 + rng.below(10) {
                let start = base + rng.below(20) as i64;
                let end = start + 1 + rng.below(8) as i64;
                let id = SegmentId {
                    datasource: "wiki".into(),
                    interval: Interval { start, end },
                    version: format!("v{}", rng.below(3)),
                    partition: rng.below(3) as u32,
                };
                let core = rng.below(3) as u32;
                timeline.add(id.clone(), core, round).unwrap();
                segments.retain(|(held, _)| *held != id);
                segments.push((id, core));
            }
            let chunks = chunk_completeness(&segments);

            let query_start = base + rng.below(10) as i64;
            let query = Interval {
                start: query_start,
                end: query_start + 1 + rng.below(25) as i64,
            };
            let found = timeline.lookup(query);
            for pair in found.windows(2) {
                let same_chunk = pair[0].chunk_interval == pair[1].chunk_interval
                    && pair[0].version == pair[1].version;
                assert!(pair[0].interval.end <= pair[1].interval.start);
                assert!(!(same_chunk && pair[0].interval.end == pair[1].interval.start));
            }
            for t in query.start..query.end {
                let expected = winner_at(&chunks, t).map(|key| (key.interval, key.version.clone()));
                let actual = found
                    .iter()
                    .find(|chunk| chunk.interval.contains(t))
                    .map(|chunk| (chunk.chunk_interval, chunk.version.clone()));
                assert_eq!(actual, expected, "round {round} at {}", format_millis(t));
            }

            for (id, _) in &segments {
                let complete = chunks.get(&ChunkKey::of(id)).copied().unwrap_or(false);
                let covered = (id.interval.start..id.interval.end).all(|t| {
                    chunks.iter().any(|(key, other_complete)| {
                        *other_complete && key.version > id.version && key.interval.contains(t)
                    })
                });
                assert_eq!(
                    timeline.is_overshadowed(id),
                    complete && covered,
                    "round {round}: {id}"
                );
            }
        }
    }
}
