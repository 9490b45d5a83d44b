//! The stream offsets a datasource has been published up to (Druid's datasource
//! metadata), kept at `/grove/datasource-meta/{datasource}`.
//!
//! Exactly-once streaming rests on one rule: a task publishes the segments it built
//! from offsets `start` to `end` in the same transaction that moves the stored offsets
//! from `start` to `end`, and that transaction applies only if the stored offsets are
//! still `start`. A task whose start no longer matches (another task published the
//! same messages first, or the offsets were reset) publishes nothing; a crash before
//! the transaction leaves the offsets where they were, and the messages are read again.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use grove_segment::spec::KafkaTopic;

use crate::error::{Error, Result};
use crate::metastore::{MetaStore, Txn};

const PREFIX: &str = "/grove/datasource-meta/";

/// A partition of a topic: what stream offsets are kept by. Written `topic:partition`
/// (Kafka topic names have no colon).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

/// Offsets by partition: the next to read, or where reading ends.
pub type Offsets = BTreeMap<TopicPartition, i64>;

impl TopicPartition {
    pub fn new(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition {
            topic: topic.to_string(),
            partition,
        }
    }

    /// Druid's name of the partition: its number when the supervisor reads one topic,
    /// `topic:partition` when it reads the topics of a `topicPattern`.
    pub fn druid_key(&self, topic: &KafkaTopic) -> String {
        if topic.is_pattern() {
            self.to_string()
        } else {
            self.partition.to_string()
        }
    }

    /// Reads Druid's name of a partition back: a bare number is a partition of the
    /// supervisor's one topic.
    pub fn from_druid_key(key: &str, topic: &KafkaTopic) -> Result<TopicPartition> {
        match (topic, key.parse::<i32>()) {
            (KafkaTopic::Name(name), Ok(partition)) => Ok(TopicPartition::new(name, partition)),
            _ => key.parse(),
        }
    }

    /// The task group that reads it, of `task_count` (Druid's rule: the partition
    /// number modulo the count for one topic; for a pattern's topics, the topic's
    /// Java hash code joins in, so that every topic's partition 0 does not land in
    /// the same group).
    pub fn task_group(&self, topic: &KafkaTopic, task_count: u32) -> u32 {
        let count = task_count.max(1);
        if !topic.is_pattern() {
            return self.partition.unsigned_abs() % count;
        }
        let hash = self
            .topic
            .encode_utf16()
            .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
        hash.wrapping_mul(31)
            .wrapping_add(self.partition)
            .unsigned_abs()
            % count
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.topic, self.partition)
    }
}

impl std::str::FromStr for TopicPartition {
    type Err = Error;

    fn from_str(text: &str) -> Result<TopicPartition> {
        text.rsplit_once(':')
            .filter(|(topic, _)| !topic.is_empty())
            .and_then(|(topic, p)| Some(TopicPartition::new(topic, p.parse().ok()?)))
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{text:?} names no partition of a topic (topic:partition)"
                ))
            })
    }
}

impl Serialize for TopicPartition {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TopicPartition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

/// Where a datasource's stream stands: the next offset to read in each partition.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StreamOffsets {
    /// The topic, or the `topicPattern`, read.
    pub stream: String,
    pub partitions: Offsets,
}

/// What one publication moves: partitions of `stream` from `start` to `end`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetCommit {
    pub datasource: String,
    pub stream: String,
    pub start: Offsets,
    pub end: Offsets,
}

pub fn key(datasource: &str) -> String {
    format!("{PREFIX}{datasource}")
}

/// The stored offsets of `datasource` and their revision (0: none stored).
pub async fn read(store: &dyn MetaStore, datasource: &str) -> Result<(Option<StreamOffsets>, u64)> {
    let key = key(datasource);
    match store.get(&key).await? {
        Some(kv) => {
            let offsets = serde_json::from_slice(&kv.value)
                .map_err(|e| Error::Store(format!("{key} is unreadable: {e}")))?;
            Ok((Some(offsets), kv.mod_revision))
        }
        None => Ok((None, 0)),
    }
}

impl OffsetCommit {
    /// Checks the commit against what is stored (read at `revision`) and adds to `txn`
    /// the compare and the write that apply it: the stored offsets must still be at
    /// that revision, and the commit's partitions must start where they stand. A
    /// partition with no stored offset may start anywhere.
    pub fn apply(&self, stored: Option<&StreamOffsets>, revision: u64, txn: Txn) -> Result<Txn> {
        if self.start.keys().ne(self.end.keys()) {
            return Err(Error::Invalid(
                "a commit must give start and end offsets of the same partitions".into(),
            ));
        }
        if let Some((partition, (from, to))) = self
            .start
            .iter()
            .zip(self.end.values())
            .map(|((p, from), to)| (p, (from, to)))
            .find(|(_, (from, to))| to < from)
        {
            return Err(Error::Invalid(format!(
                "partition {partition} would move back, from {from} to {to}"
            )));
        }
        let mut next = match stored {
            Some(stored) if stored.stream != self.stream => {
                return Err(mismatch(format!(
                    "{} reads {:?}, not {:?}",
                    self.datasource, stored.stream, self.stream
                )));
            }
            Some(stored) => stored.clone(),
            None => StreamOffsets {
                stream: self.stream.clone(),
                partitions: BTreeMap::new(),
            },
        };
        for (partition, start) in &self.start {
            if let Some(at) = next.partitions.get(partition)
                && at != start
            {
                return Err(mismatch(format!(
                    "partition {partition} stands at {at}, not at {start}"
                )));
            }
        }
        next.partitions
            .extend(self.end.iter().map(|(p, o)| (p.clone(), *o)));
        let value = serde_json::to_vec(&next).map_err(|e| Error::Store(e.to_string()))?;
        let key = key(&self.datasource);
        Ok(txn.when_revision(key.clone(), revision).put(key, value))
    }
}

fn mismatch(why: String) -> Error {
    Error::Busy(format!(
        "the stream's committed offsets are not where this publication starts ({why}); \
         nothing was published"
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use grove_segment::{Interval, SegmentId};

    use super::*;
    use crate::metastore::EmbeddedStore;
    use crate::segments::{self, SegmentDescriptor};
    use crate::task::{self, SEGMENTS_PER_TXN};

    fn descriptors(task: &str, count: u32) -> Vec<SegmentDescriptor> {
        (0..count)
            .map(|partition| SegmentDescriptor {
                id: SegmentId {
                    datasource: "clicks".into(),
                    interval: Interval::new(0, 3_600_000).unwrap(),
                    version: format!("v-{task}"),
                    partition,
                },
                core_partitions: count,
                size: 1,
                num_rows: 1,
                crc32: 0,
                path: format!("clicks/{task}/{partition}.grove"),
                columns: Vec::new(),
                created: "2024-01-01T00:00:00.000Z".into(),
                used: true,
                commit: None,
            })
            .collect()
    }

    fn offsets(at: &[(i32, i64)]) -> Offsets {
        at.iter()
            .map(|(p, o)| (TopicPartition::new("clicks", *p), *o))
            .collect()
    }

    fn commit(start: &[(i32, i64)], end: &[(i32, i64)]) -> OffsetCommit {
        OffsetCommit {
            datasource: "clicks".into(),
            stream: "clicks".into(),
            start: offsets(start),
            end: offsets(end),
        }
    }

    async fn published(store: &dyn MetaStore) -> usize {
        segments::load(store, Some("clicks")).await.unwrap().len()
    }

    #[tokio::test]
    async fn segments_and_offsets_move_together_or_not_at_all() {
        let store = EmbeddedStore::in_memory();
        let none = Txn::default();
        let first = commit(&[(0, 0), (1, 0)], &[(0, 10), (1, 7)]);
        task::publish(&store, &none, &mut descriptors("a", 2), "a", Some(&first))
            .await
            .unwrap();
        let (stored, _) = read(&store, "clicks").await.unwrap();
        assert_eq!(stored.unwrap().partitions, offsets(&[(0, 10), (1, 7)]));

        // The same messages again (a replica, or a task restarted from old offsets):
        // refused, and its segments are not there.
        let again = commit(&[(0, 0)], &[(0, 10)]);
        let refused = task::publish(&store, &none, &mut descriptors("b", 2), "b", Some(&again))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("partition clicks:0 stands at 10, not at 0"),
            "{refused}"
        );
        assert_eq!(published(&store).await, 2);

        // Also when the segments take several transactions: nothing of them is left.
        let many = (SEGMENTS_PER_TXN + 5) as u32;
        let stale = commit(&[(1, 3)], &[(1, 9)]);
        let refused = task::publish(
            &store,
            &none,
            &mut descriptors("c", many),
            "c",
            Some(&stale),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(refused.contains("stands at 7, not at 3"), "{refused}");
        assert_eq!(published(&store).await, 2);
        assert_eq!(store.range("/grove/segments/").await.unwrap().len(), 2);

        // From where they stand: both move; a partition not named keeps its offset.
        let next = commit(&[(1, 7)], &[(1, 12)]);
        task::publish(&store, &none, &mut descriptors("d", many), "d", Some(&next))
            .await
            .unwrap();
        assert_eq!(published(&store).await, 2 + many as usize);
        let (stored, _) = read(&store, "clicks").await.unwrap();
        assert_eq!(stored.unwrap().partitions, offsets(&[(0, 10), (1, 12)]));

        // Offsets never move back, nor to another topic.
        let back = commit(&[(0, 10)], &[(0, 4)]);
        let mut segments = descriptors("e", 1);
        assert!(
            task::publish(&store, &none, &mut segments, "e", Some(&back))
                .await
                .is_err()
        );
        let other = OffsetCommit {
            stream: "views".into(),
            ..commit(&[(0, 10)], &[(0, 11)])
        };
        let refused = task::publish(&store, &none, &mut segments, "e", Some(&other))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("reads \"clicks\", not \"views\""),
            "{refused}"
        );
        assert_eq!(published(&store).await, 2 + many as usize);
    }

    #[test]
    fn partitions_take_druids_names_and_task_groups() {
        let one = KafkaTopic::Name("clicks".into());
        let pattern = KafkaTopic::Pattern("metrics-.*".into());
        let p = TopicPartition::new("clicks", 3);
        assert_eq!(p.druid_key(&one), "3");
        assert_eq!(p.druid_key(&pattern), "clicks:3");
        assert_eq!(TopicPartition::from_druid_key("3", &one).unwrap(), p);
        assert_eq!(
            TopicPartition::from_druid_key("clicks:3", &pattern).unwrap(),
            p
        );
        assert!(TopicPartition::from_druid_key("3", &pattern).is_err());
        assert!(TopicPartition::from_druid_key("clicks:x", &pattern).is_err());
        assert_eq!(
            serde_json::to_string(&offsets(&[(3, 9)])).unwrap(),
            r#"{"clicks:3":9}"#
        );

        // One topic: the partition number modulo the count.
        assert_eq!(p.task_group(&one, 2), 1);
        assert_eq!(TopicPartition::new("x", 8).task_group(&one, 3), 2);
        // Several: |31 * hashCode(topic) + partition| modulo the count, with Java's
        // String.hashCode ("ab": 97 * 31 + 98 = 3105; "metrics-us": -609707032,
        // whose product wraps to -1721048806 with partition 2).
        assert_eq!(TopicPartition::new("ab", 1).task_group(&pattern, 3), 1);
        assert_eq!(TopicPartition::new("ab", 1).task_group(&pattern, 4), 0);
        let us = TopicPartition::new("metrics-us", 2);
        assert_eq!(us.task_group(&pattern, 4), 2);
        assert_eq!(us.task_group(&pattern, 3), 1);
        assert_eq!(
            TopicPartition::new("metrics-eu-west", 5).task_group(&pattern, 4),
            3
        );
    }

    /// A store in which another task group publishes its partitions just before the
    /// next transaction: between a publication's read of the offsets and its write.
    #[derive(Debug)]
    struct OtherGroupFirst {
        inner: EmbeddedStore,
        others: std::sync::Mutex<Vec<OffsetCommit>>,
    }

    #[async_trait::async_trait]
    impl MetaStore for OtherGroupFirst {
        async fn get(&self, key: &str) -> Result<Option<crate::metastore::KeyValue>> {
            self.inner.get(key).await
        }
        async fn snapshot(&self, prefix: &str) -> Result<crate::metastore::Snapshot> {
            self.inner.snapshot(prefix).await
        }
        async fn put(&self, key: &str, value: Vec<u8>) -> Result<u64> {
            self.inner.put(key, value).await
        }
        async fn delete(&self, key: &str) -> Result<bool> {
            self.inner.delete(key).await
        }
        async fn txn(&self, txn: Txn) -> Result<bool> {
            let other = self.others.lock().unwrap().pop();
            if let Some(other) = other {
                let (stored, revision) = read(&self.inner, "clicks").await?;
                let first = other.apply(stored.as_ref(), revision, Txn::default())?;
                assert!(self.inner.txn(first).await?);
            }
            self.inner.txn(txn).await
        }
        async fn grant_lease(&self, ttl: std::time::Duration) -> Result<crate::metastore::LeaseId> {
            self.inner.grant_lease(ttl).await
        }
        async fn keep_alive(&self, lease: crate::metastore::LeaseId) -> Result<bool> {
            self.inner.keep_alive(lease).await
        }
        async fn revoke_lease(&self, lease: crate::metastore::LeaseId) -> Result<()> {
            self.inner.revoke_lease(lease).await
        }
        async fn watch(&self, prefix: &str, from: u64) -> Result<crate::metastore::WatchStream> {
            self.inner.watch(prefix, from).await
        }
    }

    /// Task groups publish their own partitions independently: a commit applies
    /// although another group moved the stored offsets of other partitions while it
    /// was written, but not when its own partitions moved.
    #[tokio::test]
    async fn a_publication_applies_after_another_group_published_other_partitions() {
        let store = OtherGroupFirst {
            inner: EmbeddedStore::in_memory(),
            others: std::sync::Mutex::new(Vec::new()),
        };
        let none = Txn::default();
        let first = commit(&[(0, 0), (1, 0)], &[(0, 5), (1, 5)]);
        task::publish(&store, &none, &mut descriptors("a", 1), "a", Some(&first))
            .await
            .unwrap();

        // One transaction, and several (the last moves the offsets).
        for (task, count, p) in [("b", 1, 0), ("c", SEGMENTS_PER_TXN as u32 + 1, 0)] {
            let other = 1 - p;
            let at = if task == "b" { 5 } else { 10 };
            *store.others.lock().unwrap() = vec![commit(&[(other, at)], &[(other, at + 5)])];
            let mine = commit(&[(p, at)], &[(p, at + 5)]);
            task::publish(
                &store,
                &none,
                &mut descriptors(task, count),
                task,
                Some(&mine),
            )
            .await
            .unwrap();
            assert!(store.others.lock().unwrap().is_empty());
        }
        let (stored, _) = read(&store, "clicks").await.unwrap();
        assert_eq!(stored.unwrap().partitions, offsets(&[(0, 15), (1, 15)]));
        assert_eq!(published(&store).await, 1 + 1 + SEGMENTS_PER_TXN + 1);

        // Its own partition moved meanwhile (a replica published it): refused.
        *store.others.lock().unwrap() = vec![commit(&[(0, 15)], &[(0, 20)])];
        let mine = commit(&[(0, 15)], &[(0, 20)]);
        let refused = task::publish(&store, &none, &mut descriptors("d", 1), "d", Some(&mine))
            .await
            .unwrap_err()
            .to_string();
        assert!(refused.contains("stands at 20, not at 15"), "{refused}");
        assert_eq!(published(&store).await, 1 + 1 + SEGMENTS_PER_TXN + 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn of_two_publications_from_the_same_offsets_exactly_one_applies() {
        let store: Arc<dyn MetaStore> = Arc::new(EmbeddedStore::in_memory());
        let attempts = ["r1", "r2", "r3", "r4"].map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                let commit = commit(&[(0, 0)], &[(0, 50)]);
                let mut segments = descriptors(task, 1);
                task::publish(
                    store.as_ref(),
                    &Txn::default(),
                    &mut segments,
                    task,
                    Some(&commit),
                )
                .await
                .is_ok()
            })
        });
        let mut applied = 0;
        for attempt in attempts {
            applied += usize::from(attempt.await.unwrap());
        }
        assert_eq!(applied, 1);
        assert_eq!(published(store.as_ref()).await, 1);
        let (stored, _) = read(store.as_ref(), "clicks").await.unwrap();
        assert_eq!(stored.unwrap().partitions, offsets(&[(0, 50)]));
    }
}
