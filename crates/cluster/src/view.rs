//! A [`ClusterView`]: the broker's picture of the cluster, kept current from watches on
//! the published descriptors, what each historical serves, the live nodes and the
//! committed tasks. Each part is listed once, then followed from the revision after
//! the listing; when a watch breaks (the store is down, or the watch fell behind) the
//! part is listed again once the store answers. Meanwhile readers keep the last
//! view: queries go on while the store is away.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;

use crate::assignments::{SERVED_PREFIX, Served, split_key};
use crate::error::{Error, Result};
use crate::metastore::{EventKind, MetaStore};
use crate::nodes::{self, NODES_PREFIX, NodeInfo};
use crate::segments::{self, SEGMENTS_PREFIX, SegmentDescriptor, TASKS_PREFIX};

#[derive(Debug, Default)]
pub struct ViewState {
    /// Every descriptor, published or not yet, by segment id.
    pub descriptors: BTreeMap<String, SegmentDescriptor>,
    /// node -> segment id -> what it announced.
    pub served: BTreeMap<String, BTreeMap<String, Served>>,
    /// Live nodes, by id.
    pub nodes: BTreeMap<String, NodeInfo>,
    pub committed: BTreeSet<String>,
    /// Bumped on every change to a datasource's segments or their replicas.
    datasource_versions: HashMap<String, u64>,
    /// Bumped on changes that may touch every datasource: a fresh listing, a node
    /// joining or leaving, a task committing.
    global_version: u64,
    /// Bumped on every change.
    pub version: u64,
}

impl ViewState {
    /// Used, published descriptors of one datasource (or all), with their replicas.
    pub fn segments(&self, datasource: Option<&str>) -> Vec<(&SegmentDescriptor, BTreeSet<&str>)> {
        let replicas = self.replicas();
        self.descriptors
            .values()
            .filter(|d| datasource.is_none_or(|ds| d.id.datasource == ds))
            .filter(|d| d.used && segments::is_published(d, &self.committed))
            .map(|d| {
                let nodes = replicas
                    .get(d.id.to_string().as_str())
                    .cloned()
                    .unwrap_or_default();
                (d, nodes)
            })
            .collect()
    }

    /// Segments streaming tasks announce and that are not published (yet), with the
    /// tasks serving them: what a query reads besides the published segments.
    pub fn unpublished_realtime(
        &self,
        datasource: Option<&str>,
    ) -> Vec<(&SegmentDescriptor, BTreeSet<&str>)> {
        let mut out: BTreeMap<&str, (&SegmentDescriptor, BTreeSet<&str>)> = BTreeMap::new();
        for (node, ids) in &self.served {
            for (id, served) in ids {
                let Some(d) = &served.realtime else { continue };
                let published = self
                    .descriptors
                    .get(id)
                    .is_some_and(|p| segments::is_published(p, &self.committed));
                if published || datasource.is_some_and(|ds| d.id.datasource != ds) {
                    continue;
                }
                out.entry(id.as_str())
                    .or_insert_with(|| (d, BTreeSet::new()))
                    .1
                    .insert(node.as_str());
            }
        }
        out.into_values().collect()
    }

    /// Segment id -> nodes serving it.
    pub fn replicas(&self) -> HashMap<&str, BTreeSet<&str>> {
        let mut out: HashMap<&str, BTreeSet<&str>> = HashMap::new();
        for (node, ids) in &self.served {
            for id in ids.keys() {
                out.entry(id.as_str()).or_default().insert(node.as_str());
            }
        }
        out
    }

    pub fn datasources(&self) -> BTreeSet<String> {
        self.descriptors
            .values()
            .filter(|d| d.used && segments::is_published(d, &self.committed))
            .map(|d| d.id.datasource.clone())
            .chain(
                self.unpublished_realtime(None)
                    .into_iter()
                    .map(|(d, _)| d.id.datasource.clone()),
            )
            .collect()
    }

    /// Changes whenever anything a query of `datasource` sees may have changed.
    pub fn datasource_version(&self, datasource: &str) -> u64 {
        let own = self.datasource_versions.get(datasource).copied();
        own.unwrap_or(0).max(self.global_version)
    }

    fn touch(&mut self, datasource: Option<&str>) {
        self.version += 1;
        let version = self.version;
        match datasource {
            Some(ds) => {
                self.datasource_versions.insert(ds.to_string(), version);
            }
            None => self.global_version = version,
        }
    }

    fn datasource_of(&self, id: &str) -> Option<String> {
        self.descriptors.get(id).map(|d| d.id.datasource.clone())
    }

    /// The datasource of a segment a node announces or announced.
    fn served_datasource(&self, node: &str, id: &str) -> Option<String> {
        let announced = self.served.get(node).and_then(|ids| ids.get(id));
        match announced.and_then(|s| s.realtime.as_ref()) {
            Some(d) => Some(d.id.datasource.clone()),
            None => self.datasource_of(id),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Segments,
    Served,
    Nodes,
    Tasks,
}

impl Part {
    const ALL: [Part; 4] = [Part::Segments, Part::Served, Part::Nodes, Part::Tasks];

    fn prefix(self) -> &'static str {
        match self {
            Part::Segments => SEGMENTS_PREFIX,
            Part::Served => SERVED_PREFIX,
            Part::Nodes => NODES_PREFIX,
            Part::Tasks => TASKS_PREFIX,
        }
    }
}

#[derive(Debug)]
pub struct ClusterView {
    store: Arc<dyn MetaStore>,
    state: RwLock<ViewState>,
    synced: watch::Sender<usize>,
    connected: RwLock<BTreeMap<&'static str, bool>>,
}

impl ClusterView {
    /// The store followed, for what the view does not keep (task records).
    pub fn store(&self) -> &Arc<dyn MetaStore> {
        &self.store
    }

    /// Starts following `store`; the view fills in as each part is first listed.
    pub fn start(store: Arc<dyn MetaStore>) -> Arc<ClusterView> {
        let view = Arc::new(ClusterView {
            store: store.clone(),
            state: RwLock::new(ViewState::default()),
            synced: watch::channel(0).0,
            connected: RwLock::new(BTreeMap::new()),
        });
        for part in Part::ALL {
            let view = Arc::downgrade(&view);
            let store = store.clone();
            tokio::spawn(async move {
                let mut first = true;
                loop {
                    let Some(strong) = view.upgrade() else { return };
                    let result = strong.follow(store.as_ref(), part, &mut first).await;
                    if let Err(e) = result {
                        tracing::warn!("following {}: {e}; retrying", part.prefix());
                    }
                    strong.set_connected(part, false);
                    drop(strong);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            });
        }
        view
    }

    /// Waits until every part has been listed once, or `timeout` passes.
    pub async fn wait_synced(&self, timeout: Duration) -> Result<()> {
        let mut rx = self.synced.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|n| *n >= Part::ALL.len()))
            .await
            .map_err(|_| Error::Store("the metadata store did not answer in time".into()))?
            .map_err(|_| Error::Store("the cluster view stopped".into()))?;
        Ok(())
    }

    /// Whether every part is being followed right now.
    pub fn is_connected(&self) -> bool {
        self.connected
            .read()
            .is_ok_and(|c| c.len() == Part::ALL.len() && c.values().all(|v| *v))
    }

    fn set_connected(&self, part: Part, up: bool) {
        if let Ok(mut c) = self.connected.write() {
            c.insert(part.prefix(), up);
        }
    }

    /// Reads the current view.
    pub fn read<T>(&self, f: impl FnOnce(&ViewState) -> T) -> T {
        match self.state.read() {
            Ok(state) => f(&state),
            Err(poisoned) => f(&poisoned.into_inner()),
        }
    }

    fn write(&self, f: impl FnOnce(&mut ViewState)) {
        match self.state.write() {
            Ok(mut state) => f(&mut state),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    async fn follow(&self, store: &dyn MetaStore, part: Part, first: &mut bool) -> Result<()> {
        let snapshot = store.snapshot(part.prefix()).await?;
        let mut entries = Vec::with_capacity(snapshot.kvs.len());
        for kv in &snapshot.kvs {
            entries.push((kv.key.clone(), kv.value.clone()));
        }
        self.write(|s| {
            replace(s, part, &entries);
        });
        self.set_connected(part, true);
        if std::mem::take(first) {
            self.synced.send_modify(|n| *n += 1);
        }
        let mut watch = store.watch(part.prefix(), snapshot.revision + 1).await?;
        while let Some(batch) = watch.next().await {
            let batch = batch?;
            self.write(|s| {
                for event in &batch.events {
                    let value = (event.kind == EventKind::Put).then_some(event.value.as_slice());
                    if let Err(e) = apply(s, part, &event.key, value) {
                        tracing::warn!("{e}");
                    }
                }
            });
        }
        Err(Error::Store(format!(
            "the watch on {} ended",
            part.prefix()
        )))
    }
}

/// Replaces one part wholesale with a fresh listing.
fn replace(s: &mut ViewState, part: Part, entries: &[(String, Vec<u8>)]) {
    match part {
        Part::Segments => s.descriptors.clear(),
        Part::Served => s.served.clear(),
        Part::Nodes => s.nodes.clear(),
        Part::Tasks => s.committed.clear(),
    }
    for (key, value) in entries {
        if let Err(e) = apply(s, part, key, Some(value)) {
            tracing::warn!("{e}");
        }
    }
    s.touch(None);
}

/// Applies one change: a put (`Some(value)`) or a delete.
fn apply(s: &mut ViewState, part: Part, key: &str, value: Option<&[u8]>) -> Result<()> {
    match part {
        Part::Segments => {
            let datasource = match value {
                Some(v) => {
                    let d = segments::decode(key, v)?;
                    let ds = d.id.datasource.clone();
                    s.descriptors.insert(d.id.to_string(), d);
                    Some(ds)
                }
                None => {
                    let id = key.rsplit('/').next().unwrap_or_default();
                    s.descriptors.remove(id).map(|d| d.id.datasource)
                }
            };
            s.touch(datasource.as_deref());
        }
        Part::Served => {
            let Some((node, id)) = split_key(SERVED_PREFIX, key) else {
                return Ok(());
            };
            // What was announced before the change, for a realtime segment's datasource.
            let before = s.served_datasource(node, id);
            match value {
                Some(v) => {
                    let served: Served = serde_json::from_slice(v)
                        .map_err(|e| Error::Store(format!("{key} is unreadable: {e}")))?;
                    s.served
                        .entry(node.to_string())
                        .or_default()
                        .insert(id.to_string(), served);
                }
                None => {
                    if let Some(ids) = s.served.get_mut(node) {
                        ids.remove(id);
                        if ids.is_empty() {
                            s.served.remove(node);
                        }
                    }
                }
            }
            let datasource = s.served_datasource(node, id).or(before);
            s.touch(datasource.as_deref());
        }
        Part::Nodes => {
            let id = key.rsplit('/').next().unwrap_or_default().to_string();
            match value {
                Some(v) => {
                    s.nodes.insert(id, nodes::decode(key, v)?);
                }
                None => {
                    s.nodes.remove(&id);
                }
            }
            // Availability counts live nodes only.
            s.touch(None);
        }
        Part::Tasks => {
            let task = key.strip_prefix(TASKS_PREFIX).unwrap_or(key).to_string();
            match value {
                Some(_) => s.committed.insert(task),
                None => s.committed.remove(&task),
            };
            s.touch(None);
        }
    }
    Ok(())
}
