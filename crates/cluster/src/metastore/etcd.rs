//! The etcd [`MetaStore`]: a cluster's shared state in a real etcd (v3 API).
//!
//! Unary calls get a deadline so that a caller never hangs on an unreachable etcd;
//! watches run until the connection breaks, then end with an error so the watcher
//! re-lists and watches again.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions,
    Txn as EtcdTxn, TxnOp, WatchOptions,
};
use futures::StreamExt;

use super::{
    Compare, EventKind, KeyValue, LeaseId, MetaStore, Op, Snapshot, Txn, WatchBatch, WatchEvent,
    WatchStream,
};
use crate::error::{Error, Result};

/// How long one request may take before the store counts as unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer accepted: a listing of every segment descriptor is one message
/// (etcd's own default request limit is 1.5 MiB, answers are not limited).
const MAX_MESSAGE: usize = 1 << 30;

#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    endpoints: Vec<String>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EtcdStore({})", self.endpoints.join(","))
    }
}

impl EtcdStore {
    /// Connects to etcd at `endpoints` (`http://host:port`, or `host:port`), given
    /// as a list or as one comma-separated string.
    pub async fn connect(endpoints: &[String]) -> Result<Self> {
        let endpoints: Vec<String> = endpoints
            .iter()
            .flat_map(|e| e.split(','))
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(String::from)
            .collect();
        if endpoints.is_empty() {
            return Err(Error::Invalid("no etcd endpoints given".into()));
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true);
        let client = timed(&endpoints, Client::connect(&endpoints, Some(options))).await?;
        let store = EtcdStore { client, endpoints };
        // Fail now, with the endpoints named, rather than at the first real request.
        store.snapshot("/grove/version").await?;
        Ok(store)
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    async fn call<T>(
        &self,
        f: impl Future<Output = std::result::Result<T, etcd_client::Error>>,
    ) -> Result<T> {
        timed(&self.endpoints, f).await
    }
}

async fn timed<T>(
    endpoints: &[String],
    f: impl Future<Output = std::result::Result<T, etcd_client::Error>>,
) -> Result<T> {
    match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Error::Store(format!(
            "etcd at {}: {e}",
            endpoints.join(",")
        ))),
        Err(_) => Err(Error::Store(format!(
            "etcd at {} did not answer within {}s",
            endpoints.join(","),
            REQUEST_TIMEOUT.as_secs()
        ))),
    }
}

fn key_value(kv: &etcd_client::KeyValue) -> Result<KeyValue> {
    Ok(KeyValue {
        key: key_text(kv.key())?,
        value: kv.value().to_vec(),
        mod_revision: kv.mod_revision() as u64,
        lease: (kv.lease() != 0).then_some(kv.lease()),
    })
}

fn key_text(key: &[u8]) -> Result<String> {
    String::from_utf8(key.to_vec())
        .map_err(|_| Error::Store(format!("a key is not UTF-8: {key:?}")))
}

#[async_trait]
impl MetaStore for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let mut c = self.client.clone();
        let resp = self.call(c.get(key, None)).await?;
        resp.kvs().first().map(key_value).transpose()
    }

    async fn snapshot(&self, prefix: &str) -> Result<Snapshot> {
        let mut kv = self
            .client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE);
        let resp = self
            .call(kv.get(prefix, Some(GetOptions::new().with_prefix())))
            .await?;
        let revision = resp.header().map_or(0, |h| h.revision()) as u64;
        let kvs = resp.kvs().iter().map(key_value).collect::<Result<_>>()?;
        Ok(Snapshot { kvs, revision })
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<u64> {
        let mut c = self.client.clone();
        let resp = self.call(c.put(key, value, None)).await?;
        Ok(resp.header().map_or(0, |h| h.revision()) as u64)
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let mut c = self.client.clone();
        let resp = self.call(c.delete(key, None)).await?;
        Ok(resp.deleted() > 0)
    }

    async fn txn(&self, txn: Txn) -> Result<bool> {
        let compares: Vec<EtcdCompare> = txn
            .compares
            .into_iter()
            .map(|c| match c {
                Compare::ModRevision { key, revision } => {
                    EtcdCompare::mod_revision(key, CompareOp::Equal, revision as i64)
                }
            })
            .collect();
        let ops: Vec<TxnOp> = txn
            .ops
            .into_iter()
            .map(|op| match op {
                Op::Put { key, value, lease } => {
                    let options = lease.map(|l| PutOptions::new().with_lease(l));
                    TxnOp::put(key, value, options)
                }
                Op::Delete { key } => TxnOp::delete(key, None),
            })
            .collect();
        let mut c = self.client.clone();
        let resp = self
            .call(c.txn(EtcdTxn::new().when(compares).and_then(ops)))
            .await?;
        Ok(resp.succeeded())
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        let mut c = self.client.clone();
        let resp = self
            .call(c.lease_grant(super::ttl_seconds(ttl), None))
            .await?;
        Ok(resp.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<bool> {
        let mut c = self.client.clone();
        let renewed = async move {
            let (mut keeper, mut responses) = c.lease_keep_alive(lease).await?;
            keeper.keep_alive().await?;
            Ok(responses.message().await?.map(|r| r.ttl()))
        };
        // A TTL of 0 (or no answer) means the lease is gone.
        match self.call(renewed).await {
            Ok(ttl) => Ok(ttl.unwrap_or(0) > 0),
            Err(Error::Store(m)) if m.contains("lease not found") => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        let mut c = self.client.clone();
        match self.call(c.lease_revoke(lease)).await {
            Ok(_) => Ok(()),
            // Revoking a lease that already expired is done.
            Err(Error::Store(m)) if m.contains("lease not found") => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn watch(&self, prefix: &str, from_revision: u64) -> Result<WatchStream> {
        let mut c = self.client.clone();
        // etcd reports a compacted start revision only after the watch is created;
        // a read at that revision says so at once.
        let probe = GetOptions::new()
            .with_revision(from_revision.max(1) as i64)
            .with_limit(1)
            .with_keys_only();
        match self.call(c.get(prefix, Some(probe))).await {
            Err(Error::Store(m)) if m.contains("compacted") => {
                let oldest = self.snapshot("/grove/version").await?.revision;
                return Err(Error::Compacted {
                    requested: from_revision,
                    oldest,
                });
            }
            // A future revision (nothing happened yet) is fine to watch from.
            Ok(_) | Err(Error::Store(_)) => {}
            Err(e) => return Err(e),
        }
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(from_revision.max(1) as i64);
        let mut stream = self.call(c.watch(prefix, Some(options))).await?;
        let endpoints = self.endpoints.join(",");
        // The first answer says whether the watch could start where asked.
        let first = self.call(stream.message()).await?;
        if let Some(resp) = &first
            && resp.canceled()
        {
            return Err(cancelled(resp, from_revision));
        }
        let batches = futures::stream::unfold(Some(stream), move |stream| {
            let endpoints = endpoints.clone();
            async move {
                let mut stream = stream?;
                loop {
                    match stream.message().await {
                        Ok(Some(resp)) if resp.canceled() => {
                            return Some((Err(cancelled(&resp, from_revision)), None));
                        }
                        Ok(Some(resp)) => {
                            let batches = match batches_of(&resp) {
                                Ok(b) => b,
                                Err(e) => return Some((Err(e), None)),
                            };
                            if !batches.is_empty() {
                                let out = futures::stream::iter(batches.into_iter().map(Ok));
                                return Some((Ok(out), Some(stream)));
                            }
                        }
                        Ok(None) => {
                            let e = Error::Store(format!("etcd at {endpoints} ended the watch"));
                            return Some((Err(e), None));
                        }
                        Err(e) => {
                            let e = Error::Store(format!("etcd at {endpoints}: watch: {e}"));
                            return Some((Err(e), None));
                        }
                    }
                }
            }
        });
        Ok(Box::pin(batches.flat_map(|item| match item {
            Ok(batches) => batches.boxed(),
            Err(e) => futures::stream::iter([Err(e)]).boxed(),
        })))
    }
}

fn cancelled(resp: &etcd_client::WatchResponse, requested: u64) -> Error {
    if resp.compact_revision() > 0 {
        Error::Compacted {
            requested,
            oldest: resp.compact_revision() as u64,
        }
    } else {
        Error::Store(format!(
            "etcd cancelled the watch: {}",
            resp.cancel_reason()
        ))
    }
}

/// One etcd answer may carry several revisions' events: one batch per revision.
fn batches_of(resp: &etcd_client::WatchResponse) -> Result<Vec<WatchBatch>> {
    let mut out: Vec<WatchBatch> = Vec::new();
    for event in resp.events() {
        let Some(kv) = event.kv() else { continue };
        let revision = kv.mod_revision() as u64;
        let event = match event.event_type() {
            EventType::Put => WatchEvent {
                kind: EventKind::Put,
                key: key_text(kv.key())?,
                value: kv.value().to_vec(),
            },
            EventType::Delete => WatchEvent {
                kind: EventKind::Delete,
                key: key_text(kv.key())?,
                value: Vec::new(),
            },
        };
        match out.last_mut() {
            Some(b) if b.revision == revision => b.events.push(event),
            _ => out.push(WatchBatch {
                revision,
                events: vec![event],
            }),
        }
    }
    Ok(out)
}
