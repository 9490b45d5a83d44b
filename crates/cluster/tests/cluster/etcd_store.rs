//! The shared MetaStore suite against a real etcd started for the test.

use std::time::{Duration, Instant};

use grove_cluster::metastore::{EtcdStore, MetaStore, suite};
use grove_testkit::Etcd;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_store_passes_the_suite() {
    let etcd = Etcd::start();
    let store = EtcdStore::connect(&[etcd.endpoint()]).await.unwrap();
    suite::run_all(&store, "/suite").await;
    // A second run on the same store: the suite keeps to its own keys.
    suite::run_all(&store, "/again").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_compacted_revision_is_refused() {
    let etcd = Etcd::start();
    let store = EtcdStore::connect(&[etcd.endpoint()]).await.unwrap();
    for i in 0..5 {
        store.put("/k", vec![i]).await.unwrap();
    }
    let revision = store.snapshot("/k").await.unwrap().revision;
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    client.compact(revision as i64, None).await.unwrap();
    assert!(suite::is_compacted(store.watch("/", 1).await));
    assert!(store.watch("/", revision + 1).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_etcd_is_an_error_naming_it() {
    let mut etcd = Etcd::start();
    let store = EtcdStore::connect(&[etcd.endpoint()]).await.unwrap();
    etcd.kill();
    let began = Instant::now();
    let err = store.get("/k").await.unwrap_err().to_string();
    assert!(err.contains(&etcd.endpoint()), "{err}");
    assert!(
        began.elapsed() < Duration::from_secs(15),
        "requests have deadlines"
    );
    let refused = EtcdStore::connect(&[etcd.endpoint()]).await.unwrap_err();
    assert!(refused.to_string().contains(&etcd.endpoint()), "{refused}");
    // And it comes back when etcd does.
    etcd.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match store.put("/k", b"back".to_vec()).await {
            Ok(_) => break,
            Err(e) if Instant::now() > deadline => panic!("etcd never came back: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
