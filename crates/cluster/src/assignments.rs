//! The coordinator's instructions and the historicals' answers:
//! `/grove/assign/{node}/{segment_id}` holds the descriptor of a segment the node is
//! to serve (deleting the key tells it to drop the segment), and
//! `/grove/served/{node}/{segment_id}`, under the node's lease, says it does.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::metastore::MetaStore;
use crate::segments::SegmentDescriptor;

pub const ASSIGN_PREFIX: &str = "/grove/assign/";
pub const SERVED_PREFIX: &str = "/grove/served/";

pub fn assign_key(node: &str, segment: &str) -> String {
    format!("{ASSIGN_PREFIX}{node}/{segment}")
}

pub fn served_key(node: &str, segment: &str) -> String {
    format!("{SERVED_PREFIX}{node}/{segment}")
}

/// `(node, segment id)` from a key under `prefix`.
pub fn split_key<'a>(prefix: &str, key: &'a str) -> Option<(&'a str, &'a str)> {
    key.strip_prefix(prefix)?.split_once('/')
}

/// What a node announces for a segment it serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Served {
    pub size: u64,
    /// Set by a streaming task for a segment it is still building: what brokers know
    /// of it before it is published (its columns, its chunk's core partitions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realtime: Option<SegmentDescriptor>,
}

/// Every assignment: node -> segment id -> descriptor.
pub async fn assigned(
    store: &dyn MetaStore,
) -> Result<BTreeMap<String, BTreeMap<String, SegmentDescriptor>>> {
    let mut out: BTreeMap<String, BTreeMap<String, SegmentDescriptor>> = BTreeMap::new();
    for kv in store.range(ASSIGN_PREFIX).await? {
        let Some((node, id)) = split_key(ASSIGN_PREFIX, &kv.key) else {
            continue;
        };
        let descriptor = crate::segments::decode(&kv.key, &kv.value)?;
        out.entry(node.to_string())
            .or_default()
            .insert(id.to_string(), descriptor);
    }
    Ok(out)
}

/// Every served segment: node -> segment id -> what it announced.
pub async fn served(store: &dyn MetaStore) -> Result<BTreeMap<String, BTreeMap<String, Served>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Served>> = BTreeMap::new();
    for kv in store.range(SERVED_PREFIX).await? {
        let Some((node, id)) = split_key(SERVED_PREFIX, &kv.key) else {
            continue;
        };
        let served: Served = serde_json::from_slice(&kv.value)
            .map_err(|e| Error::Store(format!("{} is unreadable: {e}", kv.key)))?;
        out.entry(node.to_string())
            .or_default()
            .insert(id.to_string(), served);
    }
    Ok(out)
}

/// The node ids serving each segment.
pub fn replicas(
    served: &BTreeMap<String, BTreeMap<String, Served>>,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (node, segments) in served {
        for id in segments.keys() {
            out.entry(id.clone()).or_default().insert(node.clone());
        }
    }
    out
}
