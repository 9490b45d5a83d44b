//! Reading Kafka partitions by explicit offset, as Druid's realtime tasks do: no
//! consumer groups and no offsets committed to Kafka, because the offsets a stream has
//! been read up to live in Grove's metadata store and move only with a publication.
//!
//! The high watermark (the offset the next produced message will take) is taken from
//! fetch answers, which every Kafka-API broker keeps exact, rather than from a
//! list-offsets request, which some brokers answer loosely after batched produces.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};

use crate::error::{Error, Result};

/// How long the fetch behind [`KafkaReader::bounds`] waits: some brokers (tansu) answer
/// a fetch that may not wait at all with no partition in it.
const BOUNDS_WAIT: Duration = Duration::from_millis(10);

/// One message of a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: BTreeMap<String, Vec<u8>>,
    /// The message's timestamp, in milliseconds since the epoch.
    pub timestamp: i64,
}

/// What one fetch gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The messages from the asked offset on, in offset order.
    pub messages: Vec<Message>,
    /// The offset the next message produced to the partition will take.
    pub high_watermark: i64,
}

/// A connection to a Kafka-API cluster.
pub struct KafkaReader {
    client: Client,
    bootstrap: String,
    /// A client per partition, kept while it works (each finds its partition's leader
    /// once).
    partitions: Mutex<HashMap<(String, i32), Arc<PartitionClient>>>,
}

impl KafkaReader {
    /// Connects through `bootstrap` (`host:port`, comma-separated: Kafka's
    /// `bootstrap.servers`).
    pub async fn connect(bootstrap: &str) -> Result<KafkaReader> {
        let brokers: Vec<String> = bootstrap
            .split(',')
            .map(|b| b.trim().to_string())
            .filter(|b| !b.is_empty())
            .collect();
        if brokers.is_empty() {
            return Err(Error::Invalid("bootstrap.servers names no broker".into()));
        }
        let client = ClientBuilder::new(brokers)
            .client_id("grove")
            .build()
            .await
            .map_err(|e| unreachable(bootstrap, e))?;
        Ok(KafkaReader {
            client,
            bootstrap: bootstrap.to_string(),
            partitions: Mutex::new(HashMap::new()),
        })
    }

    /// The topics with their partition numbers, in order.
    pub async fn topics(&self) -> Result<BTreeMap<String, Vec<i32>>> {
        let topics = self
            .client
            .list_topics()
            .await
            .map_err(|e| unreachable(&self.bootstrap, e))?;
        Ok(topics
            .into_iter()
            .map(|t| (t.name, t.partitions.into_iter().collect()))
            .collect())
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, HashMap<(String, i32), Arc<PartitionClient>>> {
        self.partitions.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn partition(&self, topic: &str, partition: i32) -> Result<Arc<PartitionClient>> {
        let key = (topic.to_string(), partition);
        if let Some(client) = self.cached().get(&key) {
            return Ok(client.clone());
        }
        let client = self
            .client
            .partition_client(topic, partition, UnknownTopicHandling::Error)
            .await
            .map_err(|e| Error::Busy(format!("topic {topic:?} partition {partition}: {e}")))?;
        let client = Arc::new(client);
        self.cached().insert(key, client.clone());
        Ok(client)
    }

    /// Forgets a partition's client after it failed: the next call finds the leader
    /// again.
    fn forget(&self, topic: &str, partition: i32) {
        self.cached().remove(&(topic.to_string(), partition));
    }

    /// The earliest offset `partition` still has and its high watermark.
    pub async fn bounds(&self, topic: &str, partition: i32) -> Result<(i64, i64)> {
        let client = self.partition(topic, partition).await?;
        let earliest = client.get_offset(OffsetAt::Earliest).await.map_err(|e| {
            self.forget(topic, partition);
            Error::Busy(format!("topic {topic:?} partition {partition}: {e}"))
        })?;
        let fetched = self
            .fetch(topic, partition, earliest, 1, BOUNDS_WAIT)
            .await?;
        Ok((earliest, fetched.high_watermark))
    }

    /// The messages of `partition` from `offset` on, up to about `max_bytes` of them
    /// (at least one message, however large), waiting up to `max_wait` when there are
    /// none yet.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: i32,
        max_wait: Duration,
    ) -> Result<Fetched> {
        let client = self.partition(topic, partition).await?;
        let wait = i32::try_from(max_wait.as_millis()).unwrap_or(i32::MAX);
        let (records, high_watermark) = client
            .fetch_records(offset, 1..max_bytes.max(1), wait)
            .await
            .map_err(|e| {
                self.forget(topic, partition);
                Error::Busy(format!(
                    "fetching topic {topic:?} partition {partition} from offset {offset}: {e}"
                ))
            })?;
        let mut messages: Vec<Message> = records
            .into_iter()
            .filter(|r| r.offset >= offset)
            .map(|r| Message {
                offset: r.offset,
                key: r.record.key,
                value: r.record.value,
                headers: r.record.headers,
                timestamp: r.record.timestamp.timestamp_millis(),
            })
            .collect();
        messages.sort_by_key(|m| m.offset);
        Ok(Fetched {
            messages,
            high_watermark,
        })
    }
}

fn unreachable(bootstrap: &str, e: rskafka::client::error::Error) -> Error {
    Error::Busy(format!("Kafka at {bootstrap}: {e}"))
}
