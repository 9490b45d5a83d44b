//! The coordinator: one leader at a time, elected on the MetaStore, runs the duties of
//! [`plan`] every period and writes the result as assignments. Every write it makes
//! is fenced on its leadership key, so a leader that lost its lease (and so its key)
//! cannot change anything any more; it notices, steps down and campaigns again.

pub mod plan;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

use crate::assignments::{self, assign_key};
use crate::election::{CAMPAIGN_EVERY, Election, LEADER_LEASE_TTL};
use crate::error::{Error, Result};
use crate::metastore::{MetaStore, Txn};
use crate::nodes::{self, NodeInfo, Role};
use crate::rules;
use crate::segments;
use crate::session::{Session, SessionWork, keep_session};
use plan::{ClusterState, Memory, Report, Settings};

/// Most operations in one fenced transaction (etcd allows 128 by default).
const OPS_PER_TXN: usize = 100;

#[derive(Debug, Clone)]
pub struct CoordinatorSettings {
    /// Time between duty runs.
    pub period: Duration,
    /// How long a vanished historical keeps its assignments.
    pub replicant_lifetime: Duration,
    pub max_segments_to_move: usize,
    /// TTL of the coordinator's lease: a dead leader is replaced after about this.
    pub lease_ttl: Duration,
}

impl Default for CoordinatorSettings {
    fn default() -> Self {
        CoordinatorSettings {
            period: Duration::from_secs(5),
            replicant_lifetime: Duration::from_secs(15 * 60),
            max_segments_to_move: 5,
            lease_ttl: LEADER_LEASE_TTL,
        }
    }
}

/// What `/status` shows.
#[derive(Debug, Default, Clone, Serialize)]
pub struct CoordinatorStatus {
    pub node_id: String,
    pub is_leader: bool,
    /// The leader's node id, as last seen.
    pub leader: Option<String>,
    pub runs: u64,
    pub last_run: Option<String>,
    pub last_error: Option<String>,
    pub report: Report,
}

pub struct Coordinator {
    store: Arc<dyn MetaStore>,
    election: Election,
    node: NodeInfo,
    settings: CoordinatorSettings,
    status: Arc<RwLock<CoordinatorStatus>>,
}

impl Coordinator {
    pub fn new(store: Arc<dyn MetaStore>, node: NodeInfo, settings: CoordinatorSettings) -> Self {
        let status = CoordinatorStatus {
            node_id: node.id.clone(),
            ..CoordinatorStatus::default()
        };
        Coordinator {
            election: Election::new(store.clone(), "coordinator", &node.id),
            store,
            node,
            settings,
            status: Arc::new(RwLock::new(status)),
        }
    }

    pub fn status(&self) -> Arc<RwLock<CoordinatorStatus>> {
        self.status.clone()
    }

    fn update(&self, f: impl FnOnce(&mut CoordinatorStatus)) {
        if let Ok(mut s) = self.status.write() {
            f(&mut s);
        }
    }

    /// Registers, campaigns and leads until `shutdown` turns true; survives the store
    /// going away and coming back.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let name = format!("coordinator {}", self.node.id);
        let mut worker = Campaign {
            coordinator: &self,
            memory: Memory::default(),
        };
        keep_session(
            self.store.clone(),
            self.settings.lease_ttl,
            &name,
            &mut shutdown,
            &mut worker,
        )
        .await;
        self.step_down();
    }

    /// Campaigns, and leads when elected, until the session is lost.
    async fn serve(&self, session: &Session, memory: &mut Memory) {
        loop {
            if session.is_lost() {
                return;
            }
            match self.campaign(session).await {
                Ok(Some(fence)) => {
                    tracing::info!("coordinator {} is the leader", self.node.id);
                    self.update(|s| {
                        s.is_leader = true;
                        s.leader = Some(self.node.id.clone());
                    });
                    // Memory of vanished nodes is only trusted from one's own runs.
                    *memory = Memory::default();
                    self.lead(session, fence, memory).await;
                    self.step_down();
                }
                Ok(None) => {}
                Err(e) => self.update(|s| s.last_error = Some(e.to_string())),
            }
            tokio::time::sleep(CAMPAIGN_EVERY).await;
        }
    }

    /// Stops claiming leadership (logged once, if it was claimed).
    fn step_down(&self) {
        let was_leader = self
            .status
            .write()
            .map(|mut s| std::mem::replace(&mut s.is_leader, false))
            .unwrap_or(false);
        if was_leader {
            tracing::info!("coordinator {} stepped down", self.node.id);
        }
    }

    /// Takes the leadership key if it is free; returns its revision (the fence).
    async fn campaign(&self, session: &Session) -> Result<Option<u64>> {
        let campaign = self.election.campaign(session).await?;
        self.update(|s| s.leader = campaign.leader.clone());
        Ok(campaign.fence)
    }

    async fn lead(&self, session: &Session, fence: u64, memory: &mut Memory) {
        loop {
            if session.is_lost() {
                return;
            }
            match self.run_once(fence, memory).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!("coordinator run: {e}");
                    self.update(|s| s.last_error = Some(e.to_string()));
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.settings.period) => {}
                _ = session.lost() => return,
            }
        }
    }

    /// One run of the duties; `false` when leadership turned out to be lost.
    async fn run_once(&self, fence: u64, memory: &mut Memory) -> Result<bool> {
        let state = read_state(self.store.as_ref()).await?;
        let settings = Settings {
            replicant_lifetime_ms: self.settings.replicant_lifetime.as_millis() as i64,
            max_segments_to_move: self.settings.max_segments_to_move,
        };
        let now = chrono::Utc::now().timestamp_millis();
        let plan = plan::plan(&state, memory, settings, now);
        let mut ops = Txn::default();
        for d in &plan.mark_unused {
            ops = ops.put(d.key(), encode(d)?);
        }
        for (node, id) in &plan.unassign {
            ops = ops.delete(assign_key(node, id));
        }
        for (node, d) in &plan.assign {
            ops = ops.put(assign_key(node, &d.id.to_string()), encode(d)?);
        }
        for chunk in ops.ops.chunks(OPS_PER_TXN) {
            let mut txn = self.election.guard(fence);
            txn.ops = chunk.to_vec();
            if !self.store.txn(txn).await? {
                return Ok(false);
            }
        }
        if !plan.assign.is_empty() || !plan.unassign.is_empty() {
            tracing::info!(
                "coordinator: {} assigned, {} unassigned, {} marked unused",
                plan.assign.len(),
                plan.unassign.len(),
                plan.mark_unused.len()
            );
        }
        for line in &plan.report.unplaceable {
            tracing::debug!("cannot place: {line}");
        }
        self.update(|s| {
            s.runs += 1;
            s.last_run = Some(chrono::Utc::now().to_rfc3339());
            s.last_error = None;
            s.report = plan.report;
        });
        Ok(true)
    }
}

/// A coordinator's life in one session: register, then campaign and lead.
struct Campaign<'a> {
    coordinator: &'a Coordinator,
    memory: Memory,
}

#[async_trait::async_trait]
impl SessionWork for Campaign<'_> {
    async fn join(&mut self, session: &Session) -> Result<()> {
        let c = self.coordinator;
        let joined = nodes::register(c.store.as_ref(), session, &c.node).await;
        if let Err(e) = &joined {
            c.update(|s| s.last_error = Some(e.to_string()));
        }
        joined
    }

    async fn work(&mut self, session: &Session) {
        self.coordinator.serve(session, &mut self.memory).await;
    }

    fn ended(&mut self) {
        self.coordinator.step_down();
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::Store(e.to_string()))
}

/// Reads everything a run needs.
pub async fn read_state(store: &dyn MetaStore) -> Result<ClusterState> {
    let segments = segments::load(store, None)
        .await?
        .into_iter()
        .filter(|d| d.used)
        .collect();
    let historicals = nodes::live(store)
        .await?
        .into_iter()
        .filter(|n| n.role == Role::Historical)
        .collect();
    let assigned = assignments::assigned(store)
        .await?
        .into_iter()
        .map(|(node, segments)| {
            let sizes: BTreeMap<String, u64> =
                segments.into_iter().map(|(id, d)| (id, d.size)).collect();
            (node, sizes)
        })
        .collect();
    let served = assignments::served(store)
        .await?
        .into_iter()
        .map(|(node, segments)| (node, segments.into_keys().collect::<BTreeSet<_>>()))
        .collect();
    Ok(ClusterState {
        segments,
        rules: rules::all(store).await?,
        historicals,
        assigned,
        served,
    })
}
