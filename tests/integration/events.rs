//! One change event per durable commit, in commit order, none for failed writes.

use serde_json::{Value, json};
use tablecast::events::ChangeKind;

use crate::common::{Fixture, version};

#[tokio::test]
async fn one_event_per_commit_none_for_failures() {
    let fixture = Fixture::new();
    let mut server = fixture.start().await;
    let url = server.url("/Item/a");
    let http = server.client.clone();

    let created = http
        .put(&url)
        .json(&json!({"name":"one"}))
        .send()
        .await
        .expect("PUT");
    let patched = http
        .patch(&url)
        .json(&json!({"qty":2}))
        .send()
        .await
        .expect("PATCH");
    // Failures: schema violation, key mismatch, stale If-Match, missing record, bad JSON.
    for (status, response) in [
        (422, http.put(&url).json(&json!({"name":""})).send().await),
        (
            400,
            http.put(&url)
                .json(&json!({"id":"b","name":"x"}))
                .send()
                .await,
        ),
        (
            412,
            http.put(&url)
                .header("if-match", "\"1\"")
                .json(&json!({"name":"x"}))
                .send()
                .await,
        ),
        (404, http.delete(server.url("/Item/missing")).send().await),
        (
            400,
            http.put(&url)
                .header("content-type", "application/json")
                .body("{")
                .send()
                .await,
        ),
    ] {
        assert_eq!(response.expect("request").status(), status);
    }
    let deleted = http.delete(&url).send().await.expect("DELETE");
    assert_eq!(deleted.status(), 204);

    let events = server.drain_events();
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[0].kind, ChangeKind::Put);
    assert_eq!(events[0].version, version(&created));
    let value: Value =
        serde_json::from_slice(events[1].value.as_ref().expect("value")).expect("JSON");
    assert_eq!(
        value,
        json!({"id":"a","name":"one","qty":2}),
        "a patch is published as the whole record"
    );
    assert_eq!(events[1].version, version(&patched));
    assert_eq!(events[2].kind, ChangeKind::Delete);
    assert_eq!(events[2].value, None);
    assert!(
        events
            .iter()
            .all(|e| &*e.table == "Item" && e.id.to_string() == "a")
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_are_published_in_commit_order() {
    let fixture = Fixture::new();
    let mut server = fixture.start().await;
    let writes = (0..200).map(|i| {
        let request = server
            .client
            .put(server.url(&format!("/Counter/{}", i % 20)))
            .json(&json!({"label": i.to_string()}))
            .send();
        async move {
            let response = request.await.expect("PUT");
            assert_eq!(response.status(), 204);
            version(&response)
        }
    });
    let mut acknowledged = futures::future::join_all(writes).await;
    acknowledged.sort_unstable();

    let events = server.drain_events();
    let published: Vec<u64> = events.iter().map(|e| e.version).collect();
    assert!(
        published.windows(2).all(|w| w[0] < w[1]),
        "events arrive in version (commit) order"
    );
    let mut sorted = published.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted, acknowledged,
        "exactly one event per acknowledged write"
    );
    // The last event for each key carries what a read returns now.
    for key in 0..20 {
        let last = events
            .iter()
            .rev()
            .find(|e| e.id.to_string() == key.to_string())
            .expect("event for key");
        let stored = server
            .client
            .get(server.url(&format!("/Counter/{key}")))
            .send()
            .await
            .expect("GET")
            .bytes()
            .await
            .expect("body");
        assert_eq!(last.value.as_deref(), Some(&stored[..]));
    }
    server.stop().await;
}
