//! The historical: serves the segments the coordinator assigns it. It follows
//! `/grove/assign/{node}/` with a watch, downloads each segment from deep storage into
//! its local cache, checks the file's CRC-32 against the descriptor, memory-maps it
//! and announces it under its lease at `/grove/served/{node}/{segment}`; an
//! unassigned segment is unannounced, unmapped and deleted.
//!
//! On start it serves what its cache holds at once (each file checked first, a bad
//! copy deleted and fetched again), before the store is even reachable; assignments
//! then decide what stays.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use grove_segment::format::Segment;
use serde::Serialize;
use tokio::sync::watch;

use crate::assignments::{ASSIGN_PREFIX, Served, served_key, split_key};
use crate::deep_storage::{DeepStorage, file_crc};
use crate::error::{Error, Result};
use crate::metastore::{EventKind, MetaStore, Txn};
use crate::nodes::{self, NodeInfo};
use crate::segments::{self, SegmentDescriptor};
use crate::session::{Session, SessionWork, keep_session};

/// How often failed loads are retried and assignments re-read.
const RECHECK: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct LoadedSegment {
    pub descriptor: SegmentDescriptor,
    pub segment: Arc<Segment>,
}

/// What a historical has memory-mapped, by segment id.
pub type LoadedSegments = Arc<RwLock<BTreeMap<String, Arc<LoadedSegment>>>>;

#[derive(Debug, Clone)]
pub struct HistoricalSettings {
    /// The local segment cache.
    pub cache_dir: PathBuf,
    pub lease_ttl: Duration,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct HistoricalStatus {
    pub node_id: String,
    pub tier: String,
    pub capacity: u64,
    pub segments: usize,
    pub bytes: u64,
    /// Assigned segments that could not be loaded yet, with why.
    pub failed: BTreeMap<String, String>,
    pub connected: bool,
}

pub struct Historical {
    store: Arc<dyn MetaStore>,
    deep: DeepStorage,
    node: NodeInfo,
    settings: HistoricalSettings,
    loaded: LoadedSegments,
    status: Arc<RwLock<HistoricalStatus>>,
}

impl Historical {
    pub fn new(
        store: Arc<dyn MetaStore>,
        deep: DeepStorage,
        node: NodeInfo,
        settings: HistoricalSettings,
    ) -> Self {
        let status = HistoricalStatus {
            node_id: node.id.clone(),
            tier: node.tier().to_string(),
            capacity: node.capacity.unwrap_or(u64::MAX),
            ..HistoricalStatus::default()
        };
        Historical {
            store,
            deep,
            node,
            settings,
            loaded: LoadedSegments::default(),
            status: Arc::new(RwLock::new(status)),
        }
    }

    pub fn loaded(&self) -> LoadedSegments {
        self.loaded.clone()
    }

    pub fn status(&self) -> Arc<RwLock<HistoricalStatus>> {
        self.status.clone()
    }

    fn update(&self, f: impl FnOnce(&mut HistoricalStatus)) {
        let (segments, bytes) = self.loaded.read().map_or((0, 0), |l| {
            (l.len(), l.values().map(|s| s.descriptor.size).sum())
        });
        if let Ok(mut s) = self.status.write() {
            s.segments = segments;
            s.bytes = bytes;
            f(&mut s);
        }
    }

    /// Serves the local cache, then follows assignments until `shutdown`.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        if let Err(e) = self.serve_cache().await {
            tracing::warn!("historical {}: reading the local cache: {e}", self.node.id);
        }
        let name = format!("historical {}", self.node.id);
        let store = self.store.clone();
        let ttl = self.settings.lease_ttl;
        keep_session(store, ttl, &name, &mut shutdown, &mut &self).await;
        self.update(|s| s.connected = false);
    }

    /// Registers, and announces again whatever is loaded already, under `session`.
    async fn register(&self, session: &Session) -> Result<()> {
        nodes::register(self.store.as_ref(), session, &self.node).await?;
        let loaded: Vec<Arc<LoadedSegment>> = self
            .loaded
            .read()
            .map(|l| l.values().cloned().collect())
            .unwrap_or_default();
        for chunk in loaded.chunks(100) {
            let mut txn = Txn::default();
            for s in chunk {
                txn = self.announce(txn, &s.descriptor, session)?;
            }
            self.store.txn(txn).await?;
        }
        Ok(())
    }

    fn announce(&self, txn: Txn, d: &SegmentDescriptor, session: &Session) -> Result<Txn> {
        let served = Served {
            size: d.size,
            realtime: None,
        };
        let value = serde_json::to_vec(&served).map_err(|e| Error::Store(e.to_string()))?;
        Ok(txn.put_leased(
            served_key(&self.node.id, &d.id.to_string()),
            value,
            session.lease(),
        ))
    }

    /// Reads assignments, then follows them; returns when the watch breaks.
    async fn follow(&self, session: &Session) -> Result<()> {
        let prefix = format!("{ASSIGN_PREFIX}{}/", self.node.id);
        let snapshot = self.store.snapshot(&prefix).await?;
        let mut wanted: BTreeMap<String, SegmentDescriptor> = BTreeMap::new();
        for kv in &snapshot.kvs {
            if let Some((_, id)) = split_key(ASSIGN_PREFIX, &kv.key) {
                wanted.insert(id.to_string(), segments::decode(&kv.key, &kv.value)?);
            }
        }
        self.reconcile(&wanted, session).await;
        let mut watch = self.store.watch(&prefix, snapshot.revision + 1).await?;
        loop {
            let batch = tokio::select! {
                b = watch.next() => b,
                _ = tokio::time::sleep(RECHECK) => {
                    self.reconcile(&wanted, session).await;
                    continue;
                }
            };
            let batch = match batch {
                Some(b) => b?,
                None => return Err(Error::Store("the assignment watch ended".into())),
            };
            for event in batch.events {
                let Some((_, id)) = split_key(ASSIGN_PREFIX, &event.key) else {
                    continue;
                };
                match event.kind {
                    EventKind::Put => {
                        wanted.insert(id.to_string(), segments::decode(&event.key, &event.value)?);
                    }
                    EventKind::Delete => {
                        wanted.remove(id);
                    }
                }
            }
            self.reconcile(&wanted, session).await;
        }
    }

    /// Loads what is wanted and not loaded, drops what is loaded and not wanted.
    async fn reconcile(&self, wanted: &BTreeMap<String, SegmentDescriptor>, session: &Session) {
        let loaded: Vec<String> = self
            .loaded
            .read()
            .map(|l| l.keys().cloned().collect())
            .unwrap_or_default();
        for id in loaded.iter().filter(|id| !wanted.contains_key(*id)) {
            if let Err(e) = self.drop_segment(id).await {
                tracing::warn!("historical {}: dropping {id}: {e}", self.node.id);
            }
        }
        let mut failed = BTreeMap::new();
        for (id, d) in wanted {
            if loaded.contains(id) {
                continue;
            }
            match self.load(d, session).await {
                Ok(()) => tracing::info!("historical {}: serving {id}", self.node.id),
                Err(e) => {
                    tracing::warn!("historical {}: loading {id}: {e}", self.node.id);
                    failed.insert(id.clone(), e.to_string());
                }
            }
        }
        self.update(|s| s.failed = failed);
    }

    fn cache_path(&self, d: &SegmentDescriptor, extension: &str) -> PathBuf {
        self.settings
            .cache_dir
            .join(format!("{}.{extension}", d.id.file_stem()))
    }

    async fn load(&self, d: &SegmentDescriptor, session: &Session) -> Result<()> {
        let path = self.cache_path(d, "grove");
        self.deep.copy_verified(&d.path, &path, d.crc32).await?;
        let sidecar = serde_json::to_vec(d).map_err(|e| Error::Store(e.to_string()))?;
        tokio::fs::write(self.cache_path(d, "json"), sidecar)
            .await
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        let segment = Segment::open(&path)?;
        // Announced first: a segment counts as loaded only once the cluster knows.
        let txn = self.announce(Txn::default(), d, session)?;
        self.store.txn(txn).await?;
        self.loaded.write().map_err(poisoned)?.insert(
            d.id.to_string(),
            Arc::new(LoadedSegment {
                descriptor: d.clone(),
                segment,
            }),
        );
        self.update(|_| {});
        Ok(())
    }

    async fn drop_segment(&self, id: &str) -> Result<()> {
        self.store.delete(&served_key(&self.node.id, id)).await?;
        let removed = self.loaded.write().map_err(poisoned)?.remove(id);
        if let Some(s) = removed {
            remove(&self.cache_path(&s.descriptor, "grove")).await?;
            remove(&self.cache_path(&s.descriptor, "json")).await?;
            tracing::info!("historical {}: dropped {id}", self.node.id);
        }
        self.update(|_| {});
        Ok(())
    }

    /// Maps every intact segment of the local cache; deletes corrupt ones.
    async fn serve_cache(&self) -> Result<()> {
        let dir = &self.settings.cache_dir;
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let mut entries = tokio::fs::read_dir(dir)
            .await
            .map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
        while let Ok(Some(entry)) = entries.next_entry().await {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") {
                self.serve_cached(&path).await;
            }
        }
        self.update(|_| {});
        Ok(())
    }

    async fn serve_cached(&self, sidecar: &Path) {
        let data = sidecar.with_extension("grove");
        let descriptor = tokio::fs::read(sidecar)
            .await
            .ok()
            .and_then(|bytes| serde_json::from_slice::<SegmentDescriptor>(&bytes).ok());
        let intact = match &descriptor {
            Some(d) => file_crc(&data).await.is_ok_and(|crc| crc == d.crc32),
            None => false,
        };
        let opened = match (descriptor, intact) {
            (Some(d), true) => Segment::open(&data).map(|s| (d, s)).ok(),
            _ => None,
        };
        match opened {
            Some((descriptor, segment)) => {
                if let Ok(mut loaded) = self.loaded.write() {
                    loaded.insert(
                        descriptor.id.to_string(),
                        Arc::new(LoadedSegment {
                            descriptor,
                            segment,
                        }),
                    );
                }
            }
            None => {
                tracing::warn!("{}: corrupt or incomplete; deleted", data.display());
                let _ = remove(&data).await;
                let _ = remove(sidecar).await;
            }
        }
    }
}

#[async_trait::async_trait]
impl SessionWork for &Historical {
    async fn join(&mut self, session: &Session) -> Result<()> {
        self.register(session).await
    }

    /// Follows assignments for as long as the session lives: a broken watch is
    /// listed and watched again in the same session, so what is served stays
    /// announced.
    async fn work(&mut self, session: &Session) {
        loop {
            self.update(|s| s.connected = true);
            if let Err(e) = self.follow(session).await {
                tracing::warn!("historical {}: {e}", self.node.id);
            }
            self.update(|s| s.connected = false);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    fn ended(&mut self) {
        self.update(|s| s.connected = false);
    }
}

fn poisoned<T>(_: T) -> Error {
    Error::Store("the loaded-segment table is poisoned".into())
}

async fn remove(path: &Path) -> Result<()> {
    match tokio::fs::remove_file(path).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::io(format!("deleting {}", path.display()), e))
        }
        _ => Ok(()),
    }
}
