//! The behaviour every [`MetaStore`] implementation must have, run against each.

use super::{MetaStore, Txn};

pub async fn run_all(store: &dyn MetaStore) {
    put_get_delete(store).await;
    range_is_by_prefix_in_order(store).await;
    transactions_are_all_or_nothing(store).await;
}

async fn put_get_delete(store: &dyn MetaStore) {
    assert_eq!(store.get("/t/a").await.unwrap(), None);
    let r1 = store.put("/t/a", b"1".to_vec()).await.unwrap();
    let got = store.get("/t/a").await.unwrap().unwrap();
    assert_eq!(
        (got.value.as_slice(), got.mod_revision),
        (b"1".as_slice(), r1)
    );
    let r2 = store.put("/t/a", b"2".to_vec()).await.unwrap();
    assert!(r2 > r1, "revisions grow");
    assert!(store.delete("/t/a").await.unwrap());
    assert!(!store.delete("/t/a").await.unwrap());
    assert_eq!(store.get("/t/a").await.unwrap(), None);
}

async fn range_is_by_prefix_in_order(store: &dyn MetaStore) {
    for key in ["/r/b", "/r/a", "/r/c/d", "/rx", "/q"] {
        store.put(key, key.as_bytes().to_vec()).await.unwrap();
    }
    let keys: Vec<_> = store
        .range("/r/")
        .await
        .unwrap()
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(keys, ["/r/a", "/r/b", "/r/c/d"]);
}

async fn transactions_are_all_or_nothing(store: &dyn MetaStore) {
    let txn = Txn::default()
        .create("/x/1", b"a".to_vec())
        .create("/x/2", b"b".to_vec());
    assert!(store.txn(txn.clone()).await.unwrap());
    assert_eq!(store.range("/x/").await.unwrap().len(), 2);
    // Same keys again: the create-compares fail and nothing is written.
    let again = Txn::default()
        .create("/x/3", b"c".to_vec())
        .create("/x/1", b"z".to_vec());
    assert!(!store.txn(again).await.unwrap());
    assert_eq!(store.get("/x/3").await.unwrap(), None);
    assert_eq!(store.get("/x/1").await.unwrap().unwrap().value, b"a");
}
