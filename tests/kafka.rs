//! Reading a real Kafka-API broker (tansu) by explicit partition and offset, with what a
//! user's producer (kafka-python) wrote.

use grove_cluster::kafka::KafkaReader;
use grove_e2e::flight::runtime;
use grove_e2e::start::python_client;
use grove_testkit::Tansu;
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_millis(100);

#[test]
fn partitions_are_read_from_any_offset_with_the_high_watermark() {
    let tansu = Tansu::start();
    let sent = python_client(
        "kafka_client.py",
        &[&tansu.bootstrap(), "events", "2", "10"],
    );
    assert_eq!(sent, json!({"sent": 10}));
    runtime().block_on(async {
        let reader = KafkaReader::connect(&tansu.bootstrap()).await.unwrap();
        let topics = reader.topics().await.unwrap();
        assert_eq!(topics.get("events"), Some(&vec![0, 1]));
        assert!(!topics.contains_key("absent"));

        // Partition 0 holds messages 0, 2, 4, 6 and 8, at offsets 0 to 4.
        let all = reader.fetch("events", 0, 0, 1 << 20, WAIT).await.unwrap();
        assert_eq!(all.high_watermark, 5, "{}", tansu.log());
        let offsets: Vec<i64> = all.messages.iter().map(|m| m.offset).collect();
        assert_eq!(offsets, vec![0, 1, 2, 3, 4]);
        for (m, i) in all.messages.iter().zip([0, 2, 4, 6, 8]) {
            let value: Value = serde_json::from_slice(m.value.as_deref().unwrap()).unwrap();
            let ts = format!("2024-01-01T00:00:{i:02}Z");
            assert_eq!(
                value,
                json!({"ts": ts, "i": i, "k": format!("k{}", i % 3), "v": i})
            );
            assert_eq!(m.key.as_deref(), Some(format!("key{i}").as_bytes()));
            assert_eq!(
                m.headers.get("h").map(Vec::as_slice),
                Some(format!("value{i}").as_bytes())
            );
            assert!(
                m.timestamp > 1_700_000_000_000,
                "a producer's timestamp: {}",
                m.timestamp
            );
        }

        // From a later offset: only what follows it; at the end: nothing yet.
        let later = reader.fetch("events", 0, 3, 1 << 20, WAIT).await.unwrap();
        let offsets: Vec<i64> = later.messages.iter().map(|m| m.offset).collect();
        assert_eq!(offsets, vec![3, 4]);
        let end = reader.fetch("events", 1, 5, 1 << 20, WAIT).await.unwrap();
        assert!(end.messages.is_empty());
        assert_eq!(end.high_watermark, 5);

        // The earliest offset kept and the high watermark.
        assert_eq!(reader.bounds("events", 1).await.unwrap(), (0, 5));
    });
}
