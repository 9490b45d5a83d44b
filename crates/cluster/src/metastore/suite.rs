//! The behaviour every [`MetaStore`] implementation must have, run against each.
//!
//! Every check works under its own key prefix, so the suite can run on a store that
//! holds other data (a shared etcd) and twice on the same store.

use std::time::{Duration, Instant};

use futures::StreamExt;

use super::{EventKind, MetaStore, Txn, WatchBatch, WatchStream};
use crate::Error;

/// Runs every check. `prefix` keeps this run's keys apart from others'.
pub async fn run_all(store: &dyn MetaStore, prefix: &str) {
    put_get_delete(store, &format!("{prefix}/basic")).await;
    range_is_by_prefix_in_order(store, &format!("{prefix}/range")).await;
    transactions_are_all_or_nothing(store, &format!("{prefix}/txn")).await;
    compares_fence_stale_writers(store, &format!("{prefix}/fence")).await;
    watches_see_every_change_in_order(store, &format!("{prefix}/watch")).await;
    watches_resume_from_a_snapshot_revision(store, &format!("{prefix}/resume")).await;
    leased_keys_vanish_when_the_lease_expires(store, &format!("{prefix}/lease")).await;
    kept_alive_leases_stay_and_revoked_ones_go(store, &format!("{prefix}/keep")).await;
}

async fn put_get_delete(store: &dyn MetaStore, p: &str) {
    let key = format!("{p}/a");
    assert_eq!(store.get(&key).await.unwrap(), None);
    let r1 = store.put(&key, b"1".to_vec()).await.unwrap();
    let got = store.get(&key).await.unwrap().unwrap();
    assert_eq!(
        (got.value.as_slice(), got.mod_revision, got.lease),
        (b"1".as_slice(), r1, None)
    );
    let r2 = store.put(&key, b"2".to_vec()).await.unwrap();
    assert!(r2 > r1, "revisions grow");
    assert!(store.delete(&key).await.unwrap());
    assert!(!store.delete(&key).await.unwrap());
    assert_eq!(store.get(&key).await.unwrap(), None);
}

async fn range_is_by_prefix_in_order(store: &dyn MetaStore, p: &str) {
    for key in ["/r/b", "/r/a", "/r/c/d", "/rx", "/q"] {
        let key = format!("{p}{key}");
        store.put(&key, key.as_bytes().to_vec()).await.unwrap();
    }
    let snapshot = store.snapshot(&format!("{p}/r/")).await.unwrap();
    let keys: Vec<_> = snapshot.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(
        keys,
        [
            p.to_string() + "/r/a",
            p.to_string() + "/r/b",
            p.to_string() + "/r/c/d"
        ]
    );
    let newest = snapshot.kvs.iter().map(|kv| kv.mod_revision).max().unwrap();
    assert!(
        snapshot.revision >= newest,
        "a snapshot is at or after its keys"
    );
}

async fn transactions_are_all_or_nothing(store: &dyn MetaStore, p: &str) {
    let txn = Txn::default()
        .create(format!("{p}/1"), b"a".to_vec())
        .create(format!("{p}/2"), b"b".to_vec());
    assert!(store.txn(txn.clone()).await.unwrap());
    let both = store.range(&format!("{p}/")).await.unwrap();
    assert_eq!(both.len(), 2);
    assert_eq!(both[0].mod_revision, both[1].mod_revision, "one revision");
    // Same keys again: the create-compares fail and nothing is written.
    let again = Txn::default()
        .create(format!("{p}/3"), b"c".to_vec())
        .create(format!("{p}/1"), b"z".to_vec());
    assert!(!store.txn(again).await.unwrap());
    assert_eq!(store.get(&format!("{p}/3")).await.unwrap(), None);
    assert_eq!(
        store.get(&format!("{p}/1")).await.unwrap().unwrap().value,
        b"a"
    );
    let delete = Txn::default()
        .delete(format!("{p}/1"))
        .delete(format!("{p}/2"));
    assert!(store.txn(delete).await.unwrap());
    assert!(store.range(&format!("{p}/")).await.unwrap().is_empty());
}

async fn compares_fence_stale_writers(store: &dyn MetaStore, p: &str) {
    let fence = format!("{p}/leader");
    let revision = store.put(&fence, b"me".to_vec()).await.unwrap();
    let write = |v: &str| {
        Txn::default()
            .when_revision(fence.clone(), revision)
            .put(format!("{p}/data"), v.as_bytes().to_vec())
    };
    assert!(store.txn(write("first")).await.unwrap());
    store.put(&fence, b"someone else".to_vec()).await.unwrap();
    assert!(!store.txn(write("stale")).await.unwrap());
    let data = store.get(&format!("{p}/data")).await.unwrap().unwrap();
    assert_eq!(data.value, b"first");
}

async fn next(stream: &mut WatchStream) -> WatchBatch {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a watch event within 10s")
        .expect("the watch goes on")
        .expect("no watch error")
}

async fn watches_see_every_change_in_order(store: &dyn MetaStore, p: &str) {
    let start = store.snapshot(&format!("{p}/")).await.unwrap().revision + 1;
    let mut watch = store.watch(&format!("{p}/"), start).await.unwrap();
    let r1 = store.put(&format!("{p}/a"), b"1".to_vec()).await.unwrap();
    // Outside the prefix: not seen.
    store.put(&format!("{p}x"), b"no".to_vec()).await.unwrap();
    let txn = Txn::default()
        .put(format!("{p}/b"), b"2".to_vec())
        .delete(format!("{p}/a"));
    assert!(store.txn(txn).await.unwrap());

    let first = next(&mut watch).await;
    assert_eq!(first.revision, r1);
    assert_eq!(first.events.len(), 1);
    assert_eq!(
        (first.events[0].kind, first.events[0].value.as_slice()),
        (EventKind::Put, b"1".as_slice())
    );
    let second = next(&mut watch).await;
    assert!(second.revision > r1);
    let seen: Vec<_> = second
        .events
        .iter()
        .map(|e| (e.kind, e.key.strip_prefix(p).unwrap().to_string()))
        .collect();
    assert_eq!(
        seen,
        [
            (EventKind::Put, "/b".to_string()),
            (EventKind::Delete, "/a".to_string())
        ],
        "a transaction's changes arrive together"
    );
}

async fn watches_resume_from_a_snapshot_revision(store: &dyn MetaStore, p: &str) {
    store.put(&format!("{p}/old"), b"o".to_vec()).await.unwrap();
    let snapshot = store.snapshot(&format!("{p}/")).await.unwrap();
    // Changes made after the snapshot but before the watch starts are not lost.
    let missed = store.put(&format!("{p}/new"), b"n".to_vec()).await.unwrap();
    let mut watch = store
        .watch(&format!("{p}/"), snapshot.revision + 1)
        .await
        .unwrap();
    let batch = next(&mut watch).await;
    assert_eq!(batch.revision, missed);
    assert_eq!(batch.events[0].key, format!("{p}/new"));
}

async fn leased_keys_vanish_when_the_lease_expires(store: &dyn MetaStore, p: &str) {
    let lease = store.grant_lease(Duration::from_secs(1)).await.unwrap();
    let start = store.snapshot(&format!("{p}/")).await.unwrap().revision + 1;
    let mut watch = store.watch(&format!("{p}/"), start).await.unwrap();
    let txn = Txn::default().put_leased(format!("{p}/node"), b"up".to_vec(), lease);
    assert!(store.txn(txn).await.unwrap());
    let kv = store.get(&format!("{p}/node")).await.unwrap().unwrap();
    assert_eq!(kv.lease, Some(lease));
    assert_eq!(next(&mut watch).await.events[0].kind, EventKind::Put);

    // Nothing renews the lease: the key goes, and watchers hear of it.
    let began = Instant::now();
    let deleted = next(&mut watch).await;
    assert_eq!(deleted.events[0].kind, EventKind::Delete);
    assert!(began.elapsed() < Duration::from_secs(8));
    assert_eq!(store.get(&format!("{p}/node")).await.unwrap(), None);
    assert!(
        !store.keep_alive(lease).await.unwrap(),
        "an expired lease stays expired"
    );
    let late = Txn::default().put_leased(format!("{p}/late"), b"x".to_vec(), lease);
    assert!(
        store.txn(late).await.is_err(),
        "no new keys under an expired lease"
    );
}

async fn kept_alive_leases_stay_and_revoked_ones_go(store: &dyn MetaStore, p: &str) {
    let lease = store.grant_lease(Duration::from_secs(2)).await.unwrap();
    let txn = Txn::default().put_leased(format!("{p}/node"), b"up".to_vec(), lease);
    assert!(store.txn(txn).await.unwrap());
    // Well past the TTL, renewed all along.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(store.keep_alive(lease).await.unwrap());
    }
    assert!(store.get(&format!("{p}/node")).await.unwrap().is_some());
    store.revoke_lease(lease).await.unwrap();
    assert_eq!(store.get(&format!("{p}/node")).await.unwrap(), None);
}

/// A watch from before what the store remembers fails with [`Error::Compacted`]
/// instead of silently skipping changes. Stores compact differently, so each
/// implementation's tests set this up their own way and call this check.
pub fn is_compacted(result: crate::Result<WatchStream>) -> bool {
    matches!(result, Err(Error::Compacted { .. }))
}
