//! The embedded [`MetaStore`]: one process, state in memory, persisted to one JSON
//! file under the data directory that is replaced atomically (write, sync, rename) on
//! every change. Meant for metadata-sized data: single-process deployments and tests.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Compare, KeyValue, MetaStore, Op, Txn};
use crate::error::{Error, Result};

#[derive(Debug)]
pub struct EmbeddedStore {
    mode: Mode,
    state: Mutex<State>,
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
        EmbeddedStore {
            mode: Mode::Memory,
            state: Mutex::new(State::default()),
        }
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
        Ok(EmbeddedStore {
            mode: Mode::Owner { path, _lock: lock },
            state: Mutex::new(state),
        })
    }

    /// Opens the store in `dir` for reading only, without the lock: it sees what the
    /// directory's owner has saved, as of each call, and refuses writes.
    pub fn open_read_only(dir: &Path) -> Result<Self> {
        let path = dir.join(STORE_FILE);
        Ok(EmbeddedStore {
            state: Mutex::new(load(&path)?),
            mode: Mode::Reader { path },
        })
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> Result<(T, bool)>) -> Result<T> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| Error::Store("store lock poisoned".into()))?;
        if let Mode::Reader { path } = &self.mode {
            *state = load(path)?;
        }
        let mut next = state.clone();
        let (out, changed) = f(&mut next)?;
        if changed {
            match &self.mode {
                Mode::Memory => {}
                Mode::Owner { path, .. } => save(path, &next)?,
                Mode::Reader { path } => {
                    return Err(Error::Store(format!(
                        "{} is open read-only; writes go through the process that owns it",
                        path.display()
                    )));
                }
            }
            *state = next;
        }
        Ok(out)
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

fn save(path: &Path, state: &State) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let io = |e| Error::io(format!("writing {}", tmp.display()), e);
    let bytes = serde_json::to_vec(state).map_err(|e| Error::Store(e.to_string()))?;
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
    fn apply(&mut self, ops: Vec<Op>) {
        self.revision += 1;
        for op in ops {
            match op {
                Op::Put { key, value } => {
                    self.keys.insert(
                        key,
                        Entry {
                            value,
                            mod_revision: self.revision,
                        },
                    );
                }
                Op::Delete { key } => {
                    self.keys.remove(&key);
                }
            }
        }
    }

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
    }
}

#[async_trait]
impl MetaStore for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.with_state(|s| Ok((s.keys.get(key).map(|e| key_value(key, e)), false)))
    }

    async fn range(&self, prefix: &str) -> Result<Vec<KeyValue>> {
        self.with_state(|s| {
            let found = s
                .keys
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, e)| key_value(k, e))
                .collect();
            Ok((found, false))
        })
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<u64> {
        self.with_state(|s| {
            s.apply(vec![Op::Put {
                key: key.to_string(),
                value,
            }]);
            Ok((s.revision, true))
        })
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.with_state(|s| {
            let existed = s.keys.contains_key(key);
            if existed {
                s.apply(vec![Op::Delete {
                    key: key.to_string(),
                }]);
            }
            Ok((existed, existed))
        })
    }

    async fn txn(&self, txn: Txn) -> Result<bool> {
        self.with_state(|s| {
            if !txn.compares.iter().all(|c| s.holds(c)) {
                return Ok((false, false));
            }
            s.apply(txn.ops);
            Ok((true, true))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metastore::suite;

    #[tokio::test]
    async fn in_memory_store_passes_the_suite() {
        suite::run_all(&EmbeddedStore::in_memory()).await;
    }

    #[tokio::test]
    async fn persisted_store_passes_the_suite_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            suite::run_all(&store).await;
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
        EmbeddedStore::open_read_only(dir.path()).expect("readers need no lock");
    }
}
