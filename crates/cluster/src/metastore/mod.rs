//! The [`MetaStore`]: the small, strongly consistent key-value store all shared state
//! goes through. Keys are `/`-separated paths (see `docs/etcd-layout.md`); values are
//! JSON. Every write bumps a store-wide revision, as etcd's does; leases make keys
//! that vanish when their owner stops renewing them; watches stream every change
//! under a prefix from a given revision on.
//!
//! Two implementations pass one suite (`suite.rs`): [`EtcdStore`] for clusters and
//! [`EmbeddedStore`] for a single process.

mod embedded;
mod etcd;

pub use embedded::EmbeddedStore;
pub use etcd::EtcdStore;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::error::Result;

/// A lease's id; keys written under a lease are deleted when it expires.
pub type LeaseId = i64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the last write to this key.
    pub mod_revision: u64,
    /// The lease the key lives under, if any.
    pub lease: Option<LeaseId>,
}

/// Keys under a prefix as of one revision: watching from `revision + 1` sees every
/// change after it, with nothing missed and nothing twice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub kvs: Vec<KeyValue>,
    pub revision: u64,
}

/// A condition a transaction checks before applying its operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key was last written at `revision`; 0 means the key does not exist.
    ModRevision { key: String, revision: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    },
    Delete {
        key: String,
    },
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
    }
}

/// All-or-nothing: if every compare holds, every op is applied at one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
}

impl Txn {
    /// Puts a key that must not exist yet.
    pub fn create(self, key: impl Into<String>, value: Vec<u8>) -> Self {
        let key = key.into();
        self.when_revision(key.clone(), 0).put(key, value)
    }

    /// Requires `key` to have been last written at `revision` (0: to be absent).
    pub fn when_revision(mut self, key: impl Into<String>, revision: u64) -> Self {
        self.compares.push(Compare::ModRevision {
            key: key.into(),
            revision,
        });
        self
    }

    pub fn put(mut self, key: impl Into<String>, value: Vec<u8>) -> Self {
        self.ops.push(Op::Put {
            key: key.into(),
            value,
            lease: None,
        });
        self
    }

    /// Puts a key that lives only as long as `lease`.
    pub fn put_leased(mut self, key: impl Into<String>, value: Vec<u8>, lease: LeaseId) -> Self {
        self.ops.push(Op::Put {
            key: key.into(),
            value,
            lease: Some(lease),
        });
        self
    }

    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.ops.push(Op::Delete { key: key.into() });
        self
    }

    /// The same conditions with no operations: applied, it says whether they hold.
    pub fn compares_only(&self) -> Txn {
        Txn {
            compares: self.compares.clone(),
            ops: Vec::new(),
        }
    }
}

/// The error of a write whose guard (a leader's fence) no longer holds.
pub(crate) fn guard_lost() -> crate::Error {
    crate::Error::Busy("the guard of this write no longer holds (leadership was lost)".into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change to one key; `value` is empty for deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: EventKind,
    pub key: String,
    pub value: Vec<u8>,
}

/// The watched changes made at one revision (one transaction's worth).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchBatch {
    pub revision: u64,
    pub events: Vec<WatchEvent>,
}

/// Changes in revision order. The stream ends with an error when the watch cannot
/// go on (the store went away, or fell too far behind): the watcher then takes a new
/// [`Snapshot`] and watches again from after it.
pub type WatchStream = BoxStream<'static, Result<WatchBatch>>;

#[async_trait]
pub trait MetaStore: Send + Sync + std::fmt::Debug {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;
    /// Every key starting with `prefix`, in key order, and the revision they are at.
    async fn snapshot(&self, prefix: &str) -> Result<Snapshot>;
    /// Writes a key; returns the new revision.
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<u64>;
    /// Deletes a key; returns whether it existed.
    async fn delete(&self, key: &str) -> Result<bool>;
    /// Applies `txn`; returns whether its compares held (and so its ops were applied).
    async fn txn(&self, txn: Txn) -> Result<bool>;
    /// A new lease that expires `ttl` after its last renewal (whole seconds, at least 1).
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId>;
    /// Renews a lease; `false` if it has already expired (its keys are gone).
    async fn keep_alive(&self, lease: LeaseId) -> Result<bool>;
    /// Ends a lease now, deleting its keys.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<()>;
    /// Every change to keys starting with `prefix` made at `from_revision` or later.
    /// A revision the store no longer remembers is [`crate::Error::Compacted`].
    async fn watch(&self, prefix: &str, from_revision: u64) -> Result<WatchStream>;

    /// Every key starting with `prefix`, in key order.
    async fn range(&self, prefix: &str) -> Result<Vec<KeyValue>> {
        Ok(self.snapshot(prefix).await?.kvs)
    }
}

/// Where the cluster's metadata lives, as configured.
pub type SharedStore = Arc<dyn MetaStore>;

/// Whole seconds for a lease, at least one.
pub(crate) fn ttl_seconds(ttl: Duration) -> i64 {
    ttl.as_secs_f64().ceil().max(1.0) as i64
}

/// Waits before attempt `attempt` (from 0) of a compare-and-swap loop: not at all
/// before the first, then a random few milliseconds, more after each lost race, so
/// that writers racing in lock step fall out of step instead of starving one another.
pub(crate) async fn before_attempt(attempt: usize) {
    use rand::Rng;
    if attempt == 0 {
        return;
    }
    let most = 2u64 << attempt.min(6);
    let wait = rand::rng().random_range(1..=most);
    tokio::time::sleep(Duration::from_millis(wait)).await;
}

/// How often [`compare_and_swap`] decides again after another writer came first.
const CAS_ATTEMPTS: usize = 16;

/// A read-decide-write on one key: `decide` sees `key` as it is now (`None`: absent)
/// and returns the operations to apply and what to answer; they are applied in one
/// transaction that also requires `key` unchanged since the read and `guard`'s
/// compares to hold. On a lost race it reads and decides again; a guard that no longer
/// holds is an error ([`guard_lost`]). `what` names the key in errors.
pub(crate) async fn compare_and_swap<T>(
    store: &dyn MetaStore,
    guard: &Txn,
    key: &str,
    what: &str,
    mut decide: impl FnMut(Option<&KeyValue>) -> crate::Result<(Vec<Op>, T)>,
) -> crate::Result<T> {
    for attempt in 0..CAS_ATTEMPTS {
        before_attempt(attempt).await;
        let current = store.get(key).await?;
        let revision = current.as_ref().map_or(0, |kv| kv.mod_revision);
        let (ops, answer) = decide(current.as_ref())?;
        let mut txn = guard.compares_only().when_revision(key, revision);
        txn.ops.extend(ops);
        if store.txn(txn).await? {
            return Ok(answer);
        }
        if !store.txn(guard.compares_only()).await? {
            return Err(guard_lost());
        }
    }
    Err(crate::Error::Busy(format!(
        "{what} kept changing ({CAS_ATTEMPTS} attempts); try again"
    )))
}

/// The conformance suite every implementation passes; public so that each one's
/// tests, wherever they live, run the same checks.
pub mod suite;
