//! Time-chunk locks raced on a real etcd: of the requests for one chunk that arrive at
//! once (from as many overlords, each with its own connection), exactly one wins.

use std::sync::Arc;

use grove_cluster::locks::{self, BATCH_PRIORITY, Grant, LockKind, LockRequest};
use grove_cluster::metastore::{EtcdStore, MetaStore, Txn};
use grove_segment::Interval;
use grove_testkit::Etcd;

const DAY: i64 = 86_400_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_for_one_chunk_never_both_win() {
    let etcd = Etcd::start();
    let mut stores: Vec<Arc<dyn MetaStore>> = Vec::new();
    for _ in 0..4 {
        stores.push(Arc::new(
            EtcdStore::connect(&[etcd.endpoint()]).await.unwrap(),
        ));
    }
    for round in 0..20 {
        // Each round's chunk overlaps the previous one's by half a day.
        let interval = Interval::new(round * DAY, round * DAY + DAY + DAY / 2).unwrap();
        let racers: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(i, store)| {
                let store = store.clone();
                let request = LockRequest {
                    task_id: format!("t{round}-{i}"),
                    group_id: format!("t{round}-{i}"),
                    datasource: "events".into(),
                    interval,
                    kind: LockKind::Exclusive,
                    priority: BATCH_PRIORITY,
                    version: format!("v{round}"),
                };
                tokio::spawn(async move {
                    locks::acquire(store.as_ref(), &Txn::default(), &request).await
                })
            })
            .collect();
        let mut winners = Vec::new();
        for racer in racers {
            if let Grant::Granted(lock) = racer.await.unwrap().unwrap() {
                winners.push(lock.task_id);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let held = locks::list(stores[0].as_ref(), Some("events"))
            .await
            .unwrap();
        let overlapping: Vec<_> = held
            .iter()
            .filter(|s| s.lock.interval.overlaps(&interval))
            .map(|s| s.lock.task_id.clone())
            .collect();
        assert_eq!(overlapping, winners, "round {round}");
        // The winner ends, so the next round's chunk is free but for it.
        locks::release(stores[0].as_ref(), &Txn::default(), "events", &winners[0])
            .await
            .unwrap();
    }
}
