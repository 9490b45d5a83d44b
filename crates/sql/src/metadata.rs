//! Where the SQL layer learns what data exists: [`Metadata`], with two sources.
//!
//! - [`DirectMetadata`] reads descriptors from the metadata store before each
//!   statement and reads every used segment itself: `grove sql --data-dir` on a data
//!   directory, with no cluster running.
//! - [`ViewMetadata`] is the broker's: a [`ClusterView`] kept current by watches, where
//!   a query sees only segments some historical serves (as Druid's broker does), so a
//!   replacement becomes visible once it is loaded in full.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use grove_cluster::metastore::MetaStore;
use grove_cluster::nodes::{NodeInfo, Role};
use grove_cluster::segments::{self, SegmentDescriptor};
use grove_cluster::supervisors::{self, SupervisorRecord, SupervisorState};
use grove_cluster::task_status::{self, TaskRecord};
use grove_cluster::view::ClusterView;

/// A used segment (published, or announced by a streaming task building it) and
/// whether a query can read it.
#[derive(Debug, Clone)]
pub struct SegmentInfo {
    pub descriptor: SegmentDescriptor,
    pub available: bool,
    /// Live nodes serving it: historicals, and streaming tasks.
    pub replicas: Vec<Replica>,
    pub published: bool,
    /// Served by streaming tasks only (Druid's `is_realtime`): its rows may still
    /// change, so its results are never cached.
    pub realtime: bool,
}

/// The priority of a streaming task's replica of a segment: below every historical's,
/// so that once a historical serves a handed-off segment, queries read its copy.
pub const REALTIME_REPLICA_PRIORITY: i32 = i32::MIN;

/// A historical serving a segment, and where it takes fragments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    pub node: String,
    pub tier: String,
    /// Higher is asked first.
    pub priority: i32,
    pub flight_address: Option<String>,
}

/// A live node and what it holds.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub node: NodeInfo,
    /// Bytes of the segments it serves.
    pub current_size: u64,
}

#[async_trait]
pub trait Metadata: Send + Sync + std::fmt::Debug {
    /// Brings the metadata up to date before a statement is planned.
    async fn refresh(&self) -> grove_cluster::Result<()> {
        Ok(())
    }
    fn datasource_names(&self) -> Vec<String>;
    /// Changes whenever the datasource's segments or their availability do.
    fn datasource_version(&self, name: &str) -> u64;
    /// The used, published segments of one datasource (or of all).
    fn segments(&self, datasource: Option<&str>) -> Vec<SegmentInfo>;
    fn servers(&self) -> Vec<ServerInfo>;
    /// The indexing service's tasks, read when asked (they are not kept).
    async fn tasks(&self) -> grove_cluster::Result<Vec<TaskRecord>>;
    /// The supervisors that were not terminated, with the state the overlord last
    /// wrote, read when asked.
    async fn supervisors(
        &self,
    ) -> grove_cluster::Result<Vec<(SupervisorRecord, Option<SupervisorState>)>>;
    /// The lookups SQL reads (the default tier's), by name, read when asked.
    async fn lookups(&self) -> grove_cluster::Result<BTreeMap<String, BTreeMap<String, String>>>;
}

/// The supervisors in `store` that were not terminated, with their states.
async fn live_supervisors(
    store: &dyn MetaStore,
) -> grove_cluster::Result<Vec<(SupervisorRecord, Option<SupervisorState>)>> {
    let mut states = supervisors::states(store).await?;
    Ok(supervisors::list(store)
        .await?
        .into_iter()
        .filter(|r| !r.terminated)
        .map(|r| {
            let state = states.remove(&r.id);
            (r, state)
        })
        .collect())
}

#[derive(Debug)]
pub struct DirectMetadata {
    store: Arc<dyn MetaStore>,
    state: RwLock<(u64, Vec<SegmentDescriptor>)>,
}

impl DirectMetadata {
    pub fn new(store: Arc<dyn MetaStore>) -> Self {
        DirectMetadata {
            store,
            state: RwLock::new((0, Vec::new())),
        }
    }

    fn read<T>(&self, f: impl FnOnce(&(u64, Vec<SegmentDescriptor>)) -> T) -> T {
        match self.state.read() {
            Ok(s) => f(&s),
            Err(p) => f(&p.into_inner()),
        }
    }
}

#[async_trait]
impl Metadata for DirectMetadata {
    async fn refresh(&self) -> grove_cluster::Result<()> {
        let mut fresh = segments::load(self.store.as_ref(), None).await?;
        fresh.retain(|d| d.used);
        if let Ok(mut state) = self.state.write()
            && state.1 != fresh
        {
            state.0 += 1;
            state.1 = fresh;
        }
        Ok(())
    }

    fn datasource_names(&self) -> Vec<String> {
        self.read(|(_, all)| {
            all.iter()
                .map(|d| d.id.datasource.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        })
    }

    fn datasource_version(&self, _name: &str) -> u64 {
        self.read(|(version, _)| *version)
    }

    fn segments(&self, datasource: Option<&str>) -> Vec<SegmentInfo> {
        self.read(|(_, all)| {
            all.iter()
                .filter(|d| datasource.is_none_or(|ds| d.id.datasource == ds))
                .map(|d| SegmentInfo {
                    descriptor: d.clone(),
                    available: true,
                    replicas: Vec::new(),
                    published: true,
                    realtime: false,
                })
                .collect()
        })
    }

    fn servers(&self) -> Vec<ServerInfo> {
        Vec::new()
    }

    async fn tasks(&self) -> grove_cluster::Result<Vec<TaskRecord>> {
        task_status::list(self.store.as_ref()).await
    }

    async fn lookups(&self) -> grove_cluster::Result<BTreeMap<String, BTreeMap<String, String>>> {
        grove_cluster::lookups::maps(self.store.as_ref()).await
    }

    async fn supervisors(
        &self,
    ) -> grove_cluster::Result<Vec<(SupervisorRecord, Option<SupervisorState>)>> {
        live_supervisors(self.store.as_ref()).await
    }
}

#[derive(Debug)]
pub struct ViewMetadata {
    view: Arc<ClusterView>,
}

impl ViewMetadata {
    pub fn new(view: Arc<ClusterView>) -> Self {
        ViewMetadata { view }
    }
}

#[async_trait]
impl Metadata for ViewMetadata {
    fn datasource_names(&self) -> Vec<String> {
        self.view.read(|s| s.datasources().into_iter().collect())
    }

    fn datasource_version(&self, name: &str) -> u64 {
        self.view.read(|s| s.datasource_version(name))
    }

    fn segments(&self, datasource: Option<&str>) -> Vec<SegmentInfo> {
        self.view.read(|s| {
            let published = s.segments(datasource).into_iter().map(|x| (x, true));
            let realtime = s
                .unpublished_realtime(datasource)
                .into_iter()
                .map(|x| (x, false));
            published
                .chain(realtime)
                .map(|((d, nodes), published)| {
                    let live: Vec<&NodeInfo> =
                        nodes.iter().filter_map(|n| s.nodes.get(*n)).collect();
                    let replicas: Vec<Replica> = live
                        .iter()
                        .map(|n| Replica {
                            node: n.id.clone(),
                            tier: n.tier().to_string(),
                            priority: match n.role {
                                Role::Peon => REALTIME_REPLICA_PRIORITY,
                                _ => n.priority,
                            },
                            flight_address: n.flight_address.clone(),
                        })
                        .collect();
                    SegmentInfo {
                        descriptor: d.clone(),
                        available: !replicas.is_empty(),
                        published,
                        realtime: !live.is_empty() && live.iter().all(|n| n.role == Role::Peon),
                        replicas,
                    }
                })
                .collect()
        })
    }

    fn servers(&self) -> Vec<ServerInfo> {
        self.view.read(|s| {
            let mut sizes: BTreeMap<&str, u64> = BTreeMap::new();
            for (node, ids) in &s.served {
                sizes.insert(node.as_str(), ids.values().map(|v| v.size).sum());
            }
            s.nodes
                .values()
                .map(|n| ServerInfo {
                    node: n.clone(),
                    current_size: sizes.get(n.id.as_str()).copied().unwrap_or(0),
                })
                .collect()
        })
    }

    async fn tasks(&self) -> grove_cluster::Result<Vec<TaskRecord>> {
        task_status::list(self.view.store().as_ref()).await
    }

    async fn lookups(&self) -> grove_cluster::Result<BTreeMap<String, BTreeMap<String, String>>> {
        grove_cluster::lookups::maps(self.view.store().as_ref()).await
    }

    async fn supervisors(
        &self,
    ) -> grove_cluster::Result<Vec<(SupervisorRecord, Option<SupervisorState>)>> {
        live_supervisors(self.view.store().as_ref()).await
    }
}
