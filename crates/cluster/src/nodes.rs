//! Membership: every running node registers under its session's lease at
//! `/grove/nodes/{role}/{node_id}`, so the key vanishes when the node does.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::metastore::{MetaStore, Txn};
use crate::session::Session;

pub const NODES_PREFIX: &str = "/grove/nodes/";
/// The tier a historical is in unless configured otherwise (Druid's name).
pub const DEFAULT_TIER: &str = "_default_tier";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Coordinator,
    Broker,
    Historical,
    /// Runs the indexing service: accepts tasks, grants locks, assigns tasks to workers.
    Overlord,
    /// Runs tasks in slots (Druid's MiddleManager).
    Worker,
    /// A streaming task serving its in-progress segments, registered by its worker.
    Peon,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Coordinator => "coordinator",
            Role::Broker => "broker",
            Role::Historical => "historical",
            Role::Overlord => "overlord",
            Role::Worker => "worker",
            Role::Peon => "peon",
        }
    }
}

impl Role {
    /// The role's name in Druid's `sys.servers.server_type`.
    pub fn druid_server_type(self) -> &'static str {
        match self {
            Role::Worker => "middle_manager",
            Role::Peon => "indexer-executor",
            other => other.as_str(),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    pub role: Role,
    /// `host:port` of its HTTP endpoint.
    pub http_address: String,
    /// `host:port` of its Arrow Flight endpoint, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flight_address: Option<String>,
    /// Historicals: the tier it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Historicals: how many bytes of segments it may hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u64>,
    /// Historicals: brokers query replicas on higher-priority nodes first (Druid's
    /// `druid.server.priority`), e.g. a hot tier over a cold one.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: i32,
    /// Workers: how many tasks it runs at once (Druid's `druid.worker.capacity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_slots: Option<u32>,
    /// Workers: the category tasks may ask for (Druid's `druid.worker.category`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// When it started (ISO-8601).
    pub started_at: String,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// Each node's name as Druid's `sys.servers.server` and the coordinator's server
/// lists give it: its `host:port`, or, where several nodes share one HTTP address (the
/// roles of `grove start`), `host:port/node-id`, so that every name is one node's.
pub fn server_names<'a>(
    nodes: impl IntoIterator<Item = &'a NodeInfo>,
) -> std::collections::HashMap<String, String> {
    let nodes: Vec<&NodeInfo> = nodes.into_iter().collect();
    let mut sharing: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for node in &nodes {
        *sharing.entry(node.http_address.as_str()).or_default() += 1;
    }
    nodes
        .iter()
        .map(|node| {
            let name = if sharing[node.http_address.as_str()] > 1 {
                format!("{}/{}", node.http_address, node.id)
            } else {
                node.http_address.clone()
            };
            (node.id.clone(), name)
        })
        .collect()
}

impl NodeInfo {
    /// A node of `role` reachable over HTTP at `http_address`, started now, with no
    /// historical settings (no Flight address, tier, capacity; priority 0).
    pub fn new(id: impl Into<String>, role: Role, http_address: impl Into<String>) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            role,
            http_address: http_address.into(),
            flight_address: None,
            tier: None,
            capacity: None,
            priority: 0,
            task_slots: None,
            category: None,
            started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        }
    }

    pub fn key(&self) -> String {
        format!("{NODES_PREFIX}{}/{}", self.role, self.id)
    }

    pub fn tier(&self) -> &str {
        self.tier.as_deref().unwrap_or(DEFAULT_TIER)
    }
}

/// Announces `info` for as long as `session` lives. A live node with the same role
/// and id is an error: two processes must not share an identity.
pub async fn register(store: &dyn MetaStore, session: &Session, info: &NodeInfo) -> Result<()> {
    let value = serde_json::to_vec(info).map_err(|e| Error::Store(e.to_string()))?;
    let txn =
        Txn::default()
            .when_revision(info.key(), 0)
            .put_leased(info.key(), value, session.lease());
    if store.txn(txn).await? {
        Ok(())
    } else {
        Err(Error::Busy(format!(
            "a live {} named {:?} is registered already; give this one another node id",
            info.role, info.id
        )))
    }
}

pub fn decode(key: &str, value: &[u8]) -> Result<NodeInfo> {
    serde_json::from_slice(value)
        .map_err(|e| Error::Store(format!("node entry {key} is unreadable: {e}")))
}

/// Every live node, by role then id.
pub async fn live(store: &dyn MetaStore) -> Result<Vec<NodeInfo>> {
    store
        .range(NODES_PREFIX)
        .await?
        .iter()
        .map(|kv| decode(&kv.key, &kv.value))
        .collect()
}

/// A node id from the host name and a listening port: stable across restarts.
pub fn default_node_id(role: Role, port: u16) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    format!("{role}-{host}-{port}")
}

/// Keeps `info` registered until `shutdown`: registers under a fresh session whenever
/// the previous one is lost (the store went away and came back).
pub async fn stay_registered(
    store: std::sync::Arc<dyn MetaStore>,
    info: NodeInfo,
    ttl: std::time::Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let name = format!("{} {}", info.role, info.id);
    let mut registration = Registration {
        store: store.clone(),
        info,
    };
    crate::session::keep_session(store, ttl, &name, &mut shutdown, &mut registration).await;
}

/// Being registered is all there is to do.
struct Registration {
    store: std::sync::Arc<dyn MetaStore>,
    info: NodeInfo,
}

#[async_trait::async_trait]
impl crate::session::SessionWork for Registration {
    async fn join(&mut self, session: &Session) -> Result<()> {
        register(self.store.as_ref(), session, &self.info).await
    }

    async fn work(&mut self, _session: &Session) {
        std::future::pending::<()>().await
    }
}
