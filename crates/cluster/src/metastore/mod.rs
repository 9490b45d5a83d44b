//! The [`MetaStore`]: the small, strongly consistent key-value store all shared state
//! goes through. Keys are `/`-separated paths (see `docs/etcd-layout.md`); values are
//! JSON. Every write bumps a store-wide revision, as etcd's does.

mod embedded;

pub use embedded::EmbeddedStore;

use async_trait::async_trait;

use crate::error::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the last write to this key.
    pub mod_revision: u64,
}

/// A condition a transaction checks before applying its operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key was last written at `revision`; 0 means the key does not exist.
    ModRevision { key: String, revision: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

/// All-or-nothing: if every compare holds, every op is applied at one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
}

impl Txn {
    /// Puts a key that must not exist yet.
    pub fn create(mut self, key: impl Into<String>, value: Vec<u8>) -> Self {
        let key = key.into();
        self.compares.push(Compare::ModRevision {
            key: key.clone(),
            revision: 0,
        });
        self.ops.push(Op::Put { key, value });
        self
    }

    pub fn put(mut self, key: impl Into<String>, value: Vec<u8>) -> Self {
        self.ops.push(Op::Put {
            key: key.into(),
            value,
        });
        self
    }
}

#[async_trait]
pub trait MetaStore: Send + Sync + std::fmt::Debug {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;
    /// Every key starting with `prefix`, in key order.
    async fn range(&self, prefix: &str) -> Result<Vec<KeyValue>>;
    /// Writes a key; returns the new revision.
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<u64>;
    /// Deletes a key; returns whether it existed.
    async fn delete(&self, key: &str) -> Result<bool>;
    /// Applies `txn`; returns whether its compares held (and so its ops were applied).
    async fn txn(&self, txn: Txn) -> Result<bool>;
}

#[cfg(test)]
pub(crate) mod suite;
