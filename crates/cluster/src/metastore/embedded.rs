//! The embedded [`MetaStore`]: one process, state in memory, durable keys persisted to
//! one JSON file under the data directory that is replaced atomically (write, sync,
//! rename) on every change to them. Leased keys are never persisted: they belong to
//! the running process and would be gone after a restart anyway. Watches replay a
//! bounded in-memory history, then follow live changes. Meant for metadata-sized
//! data: single-process deployments and tests.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::{
    Compare, EventKind, KeyValue, LeaseId, MetaStore, Op, Snapshot, Txn, WatchBatch, WatchEvent,
    WatchStream,
};
use crate::error::{Error, Result};

/// How many revisions a watch can start behind the current one.
const HISTORY: usize = 10_000;
/// How far a live watcher may fall behind before its watch ends (and it re-lists).
const LIVE_BACKLOG: usize = 4_096;
/// How often expired leases are collected when nothing else touches the store.
const REAP_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    mode: Mode,
    shared: Mutex<Shared>,
    changes: broadcast::Sender<Arc<WatchBatch>>,
}

#[derive(Debug)]
enum Mode {
    Memory,
    /// This process owns the directory; the open lock file keeps other writers out.
    Owner {
        path: PathBuf,
        _lock: File,
    },
    /// Reads what the owner last saved, re-reading the file before every operation.
    Reader {
        path: PathBuf,
    },
}

#[derive(Debug, Default)]
struct Shared {
    state: State,
    leases: HashMap<LeaseId, Lease>,
    next_lease: LeaseId,
    /// The last [`HISTORY`] revisions' changes, oldest first, one per revision.
    history: VecDeque<Arc<WatchBatch>>,
    reaper: bool,
}

#[derive(Debug)]
struct Lease {
    ttl: Duration,
    deadline: Instant,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct State {
    revision: u64,
    keys: BTreeMap<String, Entry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    #[serde(with = "text_or_bytes")]
    value: Vec<u8>,
    mod_revision: u64,
    #[serde(skip)]
    lease: Option<LeaseId>,
}
/// Values are JSON text in practice; storing them as strings keeps the file readable.
mod text_or_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(value) {
            Ok(text) => s.serialize_str(text),
            Err(_) => s.serialize_bytes(value),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Text(String),
            Bytes(Vec<u8>),
        }
        Ok(match Form::deserialize(d)? {
            Form::Text(t) => t.into_bytes(),
            Form::Bytes(b) => b,
        })
    }
}

const STORE_FILE: &str = "metadata.json";
const LOCK_FILE: &str = "LOCK";

impl EmbeddedStore {
    /// A store that lives only in memory.
    pub fn in_memory() -> Self {
        Self::with_mode(Mode::Memory, State::default())
    }

    /// Opens the store in `dir` for writing, taking the directory's lock: a second
    /// writer, in this process or another, fails at once.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(format!("opening {}", lock_path.display()), e))?;
        if lock.try_lock().is_err() {
            return Err(Error::Busy(format!(
                "the data directory {} is in use by another Grove process",
                dir.display()
            )));
        }
        let path = dir.join(STORE_FILE);
        let state = load(&path)?;
        Ok(Self::with_mode(Mode::Owner { path, _lock: lock }, state))
    }

    /// Opens the store in `dir` for reading only, without the lock: it sees what the
    /// directory's owner has saved, as of each call, and refuses writes, leases and
    /// watches.
    pub fn open_read_only(dir: &Path) -> Result<Self> {
        let path = dir.join(STORE_FILE);
        let state = load(&path)?;
        Ok(Self::with_mode(Mode::Reader { path }, state))
    }

    fn with_mode(mode: Mode, state: State) -> Self {
        let (changes, _) = broadcast::channel(LIVE_BACKLOG);
        EmbeddedStore {
            inner: Arc::new(Inner {
                mode,
                shared: Mutex::new(Shared {
                    state,
                    next_lease: 1,
                    ..Shared::default()
                }),
                changes,
            }),
        }
    }
}

impl Inner {
    /// The shared state, current as of now: a reader re-reads the owner's file and
    /// expired leases are collected first.
    fn lock(&self) -> Result<MutexGuard<'_, Shared>> {
        let mut shared = self
            .shared
            .lock()
            .map_err(|_| Error::Store("store lock poisoned".into()))?;
        if let Mode::Reader { path } = &self.mode {
            shared.state = load(path)?;
        }
        self.expire_leases(&mut shared)?;
        Ok(shared)
    }

    fn writable(&self) -> Result<()> {
        match &self.mode {
            Mode::Reader { path } => Err(Error::Store(format!(
                "{} is open read-only; writes go through the process that owns it",
                path.display()
            ))),
            _ => Ok(()),
        }
    }

    fn expire_leases(&self, shared: &mut Shared) -> Result<()> {
        let now = Instant::now();
        let expired: Vec<LeaseId> = shared
            .leases
            .iter()
            .filter(|(_, lease)| lease.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.end_lease(shared, id)?;
        }
        Ok(())
    }

    fn end_lease(&self, shared: &mut Shared, id: LeaseId) -> Result<()> {
        shared.leases.remove(&id);
        let ops: Vec<Op> = shared
            .state
            .keys
            .iter()
            .filter(|(_, e)| e.lease == Some(id))
            .map(|(k, _)| Op::Delete { key: k.clone() })
            .collect();
        if !ops.is_empty() {
            self.apply(shared, ops)?;
        }
        Ok(())
    }

    /// Applies `ops` at one new revision, persisting durable keys first if they
    /// changed; on a failed save nothing changes.
    fn apply(&self, shared: &mut Shared, ops: Vec<Op>) -> Result<u64> {
        self.writable()?;
        for op in &ops {
            if let Op::Put {
                lease: Some(lease),
                key,
                ..
            } = op
                && !shared.leases.contains_key(lease)
            {
                return Err(Error::Invalid(format!(
                    "lease {lease} for {key} has expired or never existed"
                )));
            }
        }
        let revision = shared.state.revision + 1;
        let mut undo: Vec<(String, Option<Entry>)> = Vec::with_capacity(ops.len());
        let mut events = Vec::with_capacity(ops.len());
        let mut durable = false;
        for op in ops {
            match op {
                Op::Put { key, value, lease } => {
                    durable |= lease.is_none();
                    events.push(WatchEvent {
                        kind: EventKind::Put,
                        key: key.clone(),
                        value: value.clone(),
                    });
                    let entry = Entry {
                        value,
                        mod_revision: revision,
                        lease,
                    };
                    let before = shared.state.keys.insert(key.clone(), entry);
                    durable |= before.as_ref().is_some_and(|e| e.lease.is_none());
                    undo.push((key, before));
                }
                Op::Delete { key } => {
                    if let Some(before) = shared.state.keys.remove(&key) {
                        durable |= before.lease.is_none();
                        events.push(WatchEvent {
                            kind: EventKind::Delete,
                            key: key.clone(),
                            value: Vec::new(),
                        });
                        undo.push((key, Some(before)));
                    }
                }
            }
        }
        shared.state.revision = revision;
        if durable
            && let Mode::Owner { path, .. } = &self.mode
            && let Err(e) = save(path, &shared.state)
        {
            for (key, before) in undo.into_iter().rev() {
                match before {
                    Some(entry) => shared.state.keys.insert(key, entry),
                    None => shared.state.keys.remove(&key),
                };
            }
            shared.state.revision = revision - 1;
            return Err(e);
        }
        let batch = Arc::new(WatchBatch { revision, events });
        if shared.history.len() == HISTORY {
            shared.history.pop_front();
        }
        shared.history.push_back(batch.clone());
        // Nobody listening is fine.
        let _ = self.changes.send(batch);
        Ok(revision)
    }

    /// Collects expired leases while the store lives, even if nothing else runs.
    fn start_reaper(self: &Arc<Self>, shared: &mut Shared) {
        if shared.reaper || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        shared.reaper = true;
        let weak: Weak<Inner> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REAP_EVERY).await;
                let Some(inner) = weak.upgrade() else { return };
                if let Err(e) = inner.lock() {
                    tracing::warn!("collecting expired leases: {e}");
                }
            }
        });
    }
}

fn load(path: &Path) -> Result<State> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| Error::Store(format!("{} is unreadable: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
    }
}

/// What is written: the durable keys only.
#[derive(Serialize)]
struct Saved<'a> {
    revision: u64,
    keys: BTreeMap<&'a str, &'a Entry>,
}

fn save(path: &Path, state: &State) -> Result<()> {
    let saved = Saved {
        revision: state.revision,
        keys: state
            .keys
            .iter()
            .filter(|(_, e)| e.lease.is_none())
            .map(|(k, e)| (k.as_str(), e))
            .collect(),
    };
    let tmp = path.with_extension("json.tmp");
    let io = |e| Error::io(format!("writing {}", tmp.display()), e);
    let bytes = serde_json::to_vec(&saved).map_err(|e| Error::Store(e.to_string()))?;
    let mut file = File::create(&tmp).map_err(io)?;
    file.write_all(&bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path)
        .map_err(|e| Error::io(format!("replacing {}", path.display()), e))?;
    // The rename is durable only once the directory holding it is synced.
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("syncing {}", dir.display()), e))
}

impl State {
    fn holds(&self, compare: &Compare) -> bool {
        match compare {
            Compare::ModRevision { key, revision } => {
                self.keys.get(key).map_or(0, |e| e.mod_revision) == *revision
            }
        }
    }
}

fn key_value(key: &str, entry: &Entry) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: entry.value.clone(),
        mod_revision: entry.mod_revision,
        lease: entry.lease,
    }
}

/// The events of `batch` under `prefix`, if any.
fn under_prefix(batch: &WatchBatch, prefix: &str) -> Option<WatchBatch> {
    let events: Vec<WatchEvent> = batch
        .events
        .iter()
        .filter(|e| e.key.starts_with(prefix))
        .cloned()
        .collect();
    (!events.is_empty()).then_some(WatchBatch {
        revision: batch.revision,
        events,
    })
}

#[async_trait]
impl MetaStore for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let shared = self.inner.lock()?;
        Ok(shared.state.keys.get(key).map(|e| key_value(key, e)))
    }

    async fn snapshot(&self, prefix: &str) -> Result<Snapshot> {
        let shared = self.inner.lock()?;
        let kvs = shared
            .state
            .keys
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, e)| key_value(k, e))
            .collect();
        Ok(Snapshot {
            kvs,
            revision: shared.state.revision,
        })
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<u64> {
        let mut shared = self.inner.lock()?;
        let op = Op::Put {
            key: key.to_string(),
            value,
            lease: None,
        };
        self.inner.apply(&mut shared, vec![op])
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let mut shared = self.inner.lock()?;
        self.inner.writable()?;
        let existed = shared.state.keys.contains_key(key);
        if existed {
            let op = Op::Delete {
                key: key.to_string(),
            };
            self.inner.apply(&mut shared, vec![op])?;
        }
        Ok(existed)
    }

    async fn txn(&self, txn: Txn) -> Result<bool> {
        let mut shared = self.inner.lock()?;
        self.inner.writable()?;
        if !txn.compares.iter().all(|c| shared.state.holds(c)) {
            return Ok(false);
        }
        self.inner.apply(&mut shared, txn.ops)?;
        Ok(true)
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        self.inner.writable()?;
        let ttl = Duration::from_secs(super::ttl_seconds(ttl) as u64);
        let mut shared = self.inner.lock()?;
        self.inner.start_reaper(&mut shared);
        let id = shared.next_lease;
        shared.next_lease += 1;
        let deadline = Instant::now() + ttl;
        shared.leases.insert(id, Lease { ttl, deadline });
        Ok(id)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<bool> {
        let mut shared = self.inner.lock()?;
        Ok(match shared.leases.get_mut(&lease) {
            Some(l) => {
                l.deadline = Instant::now() + l.ttl;
                true
            }
            None => false,
        })
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        let mut shared = self.inner.lock()?;
        self.inner.end_lease(&mut shared, lease)
    }

    async fn watch(&self, prefix: &str, from_revision: u64) -> Result<WatchStream> {
        self.inner.writable()?;
        let shared = self.inner.lock()?;
        let current = shared.state.revision;
        let oldest = current + 1 - shared.history.len() as u64;
        let from = from_revision.max(1);
        if from < oldest {
            return Err(Error::Compacted {
                requested: from,
                oldest,
            });
        }
        let backlog: Vec<Result<WatchBatch>> = shared
            .history
            .iter()
            .filter(|b| b.revision >= from)
            .filter_map(|b| under_prefix(b, prefix))
            .map(Ok)
            .collect();
        // Subscribed while the lock is held: no revision falls between backlog and live.
        let live = self.inner.changes.subscribe();
        drop(shared);
        let prefix = prefix.to_string();
        let live = futures::stream::unfold(Some(live), move |rx| {
            let prefix = prefix.clone();
            async move {
                let mut rx = rx?;
                loop {
                    match rx.recv().await {
                        Ok(batch) if batch.revision < from => continue,
                        Ok(batch) => {
                            if let Some(b) = under_prefix(&batch, &prefix) {
                                return Some((Ok(b), Some(rx)));
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            let e = Error::Store(
                                "the watch fell too far behind the store's changes".into(),
                            );
                            return Some((Err(e), None));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
        Ok(Box::pin(futures::stream::iter(backlog).chain(live)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metastore::suite;

    #[tokio::test]
    async fn in_memory_store_passes_the_suite() {
        suite::run_all(&EmbeddedStore::in_memory(), "/suite").await;
    }

    #[tokio::test]
    async fn a_watch_from_before_the_kept_history_is_refused() {
        let store = EmbeddedStore::in_memory();
        for i in 0..=HISTORY {
            store.put("/k", i.to_string().into_bytes()).await.unwrap();
        }
        assert!(suite::is_compacted(store.watch("/", 1).await));
        let kept = store.watch("/", 2).await;
        assert!(kept.is_ok(), "the last {HISTORY} revisions are kept");
    }

    #[tokio::test]
    async fn leased_keys_are_not_persisted() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            let lease = store.grant_lease(Duration::from_secs(60)).await.unwrap();
            let txn = Txn::default()
                .put_leased("/grove/nodes/h1", b"up".to_vec(), lease)
                .put("/grove/durable", b"yes".to_vec());
            assert!(store.txn(txn).await.unwrap());
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(store.get("/grove/nodes/h1").await.unwrap(), None);
        assert!(store.get("/grove/durable").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn persisted_store_passes_the_suite_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            suite::run_all(&store, "/suite").await;
            store.put("/grove/kept", b"yes".to_vec()).await.unwrap();
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(
            store.get("/grove/kept").await.unwrap().unwrap().value,
            b"yes"
        );
    }

    #[test]
    fn a_second_writer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = EmbeddedStore::open(dir.path()).unwrap();
        let err = EmbeddedStore::open(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("in use by another Grove process"),
            "{err}"
        );
        let reader = EmbeddedStore::open_read_only(dir.path()).expect("readers need no lock");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let refused = rt.block_on(reader.put("/k", b"v".to_vec())).unwrap_err();
        assert!(refused.to_string().contains("read-only"), "{refused}");
    }
}
