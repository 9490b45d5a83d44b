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

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::metastore::{MetaStore, Txn};

const PREFIX: &str = "/grove/datasource-meta/";

/// Where a datasource's stream stands: the next offset to read in each partition.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StreamOffsets {
    pub topic: String,
    pub partitions: BTreeMap<i32, i64>,
}

/// What one publication moves: partitions of `topic` from `start` to `end`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetCommit {
    pub datasource: String,
    pub topic: String,
    #[serde(with = "partition_keys")]
    pub start: BTreeMap<i32, i64>,
    #[serde(with = "partition_keys")]
    pub end: BTreeMap<i32, i64>,
}

/// Serde for offsets by partition that also reads them where serde buffers what it
/// reads (inside internally tagged enums such as task actions), which leaves a JSON
/// object's keys as strings that a plain `BTreeMap<i32, _>` refuses.
pub mod partition_keys {
    use std::collections::BTreeMap;

    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(map: &BTreeMap<i32, i64>, s: S) -> Result<S::Ok, S::Error> {
        map.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<i32, i64>, D::Error> {
        BTreeMap::<String, i64>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| match k.parse::<i32>() {
                Ok(p) => Ok((p, v)),
                Err(_) => Err(D::Error::custom(format!("partition {k:?} is not a number"))),
            })
            .collect()
    }
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
            Some(stored) if stored.topic != self.topic => {
                return Err(mismatch(format!(
                    "{} reads topic {:?}, not {:?}",
                    self.datasource, stored.topic, self.topic
                )));
            }
            Some(stored) => stored.clone(),
            None => StreamOffsets {
                topic: self.topic.clone(),
                partitions: BTreeMap::new(),
            },
        };
        for (partition, start) in &self.start {
            if let Some(at) = next.partitions.get(partition)
                && at != start
            {
                return Err(mismatch(format!(
                    "partition {partition} of {:?} stands at {at}, not at {start}",
                    self.topic
                )));
            }
        }
        next.partitions
            .extend(self.end.iter().map(|(p, o)| (*p, *o)));
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

    fn commit(start: &[(i32, i64)], end: &[(i32, i64)]) -> OffsetCommit {
        OffsetCommit {
            datasource: "clicks".into(),
            topic: "clicks".into(),
            start: start.iter().copied().collect(),
            end: end.iter().copied().collect(),
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
        assert_eq!(
            stored.unwrap().partitions,
            BTreeMap::from([(0, 10), (1, 7)])
        );

        // The same messages again (a replica, or a task restarted from old offsets):
        // refused, and its segments are not there.
        let again = commit(&[(0, 0)], &[(0, 10)]);
        let refused = task::publish(&store, &none, &mut descriptors("b", 2), "b", Some(&again))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("partition 0 of \"clicks\" stands at 10, not at 0"),
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
        assert_eq!(
            stored.unwrap().partitions,
            BTreeMap::from([(0, 10), (1, 12)])
        );

        // Offsets never move back, nor to another topic.
        let back = commit(&[(0, 10)], &[(0, 4)]);
        let mut segments = descriptors("e", 1);
        assert!(
            task::publish(&store, &none, &mut segments, "e", Some(&back))
                .await
                .is_err()
        );
        let other = OffsetCommit {
            topic: "views".into(),
            ..commit(&[(0, 10)], &[(0, 11)])
        };
        let refused = task::publish(&store, &none, &mut segments, "e", Some(&other))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("reads topic \"clicks\", not \"views\""),
            "{refused}"
        );
        assert_eq!(published(&store).await, 2 + many as usize);
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
        assert_eq!(stored.unwrap().partitions, BTreeMap::from([(0, 50)]));
    }
}
