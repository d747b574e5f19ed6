//! Tests of the whole store: what a replicated store keeps, and how it applies another node's
//! commits.

use std::sync::{Arc, Mutex};

use crate::storage::{Change, Decide, Key, KeyType, Options, Scope, Stamp, Store, Target};

#[tokio::test]
async fn a_replicated_store_keeps_unpublished_changes_and_tombstones() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let options = Options {
        change_log: 2,
        replicated: true,
        ..Options::default()
    };
    let store = Store::open(dir.path(), options, Box::new(|_| {})).expect("opens");
    let records = store.records("T", KeyType::Integer, &[]).expect("tree");
    let put = |n: i64| -> Decide {
        Box::new(move |_, _| Ok(Change::Put(serde_json::json!({ "n": n }), Stamp::default())))
    };
    for n in 1..=5 {
        store
            .commit(&records, Target::Key(Key::Int(n)), put(n))
            .await
            .expect("commits");
    }
    let unpublished = store
        .changes_after(0, 100)
        .expect("reads")
        .expect("all kept");
    assert_eq!(
        unpublished.len(),
        5,
        "the retention of 2 waits for publication"
    );

    store.set_published(5).expect("cursor");
    let deleted = store
        .commit(
            &records,
            Target::Key(Key::Int(1)),
            Box::new(|_, _| Ok(Change::Delete)),
        )
        .await
        .expect("deletes");
    assert_eq!(
        store.changes_after(0, 100).expect("reads"),
        None,
        "trimmed once published"
    );
    assert_eq!(
        records.deleted(&Key::Int(1).encode()).expect("reads"),
        Some(deleted.version)
    );

    // A replicated put older than the delete is decided against its tombstone; a newer one
    // keeps its version, removes the tombstone and moves the clock past it.
    let seen = Arc::new(Mutex::new(None));
    let decided = seen.clone();
    let newer = deleted.version + 1_000;
    let applied = store
        .commit(
            &records,
            Target::Key(Key::Int(1)),
            Box::new(move |_, context| {
                *decided.lock().unwrap() = context.deleted;
                let record = (serde_json::json!({ "n": 1 }), Stamp::default());
                Ok(Change::Replicate(newer, Some(record)))
            }),
        )
        .await
        .expect("applies");
    assert_eq!(*seen.lock().unwrap(), Some(deleted.version));
    assert_eq!(applied.version, newer);
    assert_eq!(records.deleted(&Key::Int(1).encode()).expect("reads"), None);
    let next = store
        .commit(&records, Target::Key(Key::Int(2)), put(2))
        .await
        .expect("commits");
    assert!(
        next.version > newer,
        "the clock moved past the replicated version"
    );
    let logged = store.changes_after(6, 100).expect("reads").expect("kept");
    assert_eq!(
        (logged[0].scope, logged[1].scope),
        (Scope::Peer, Scope::Cluster)
    );
}
