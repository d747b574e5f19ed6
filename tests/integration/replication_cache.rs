//! Cache tables on several replicating nodes: one origin request serves every node, a refresh
//! anywhere refreshes everywhere, and what a node evicts for itself stays on the others.

use std::time::Duration;

use futures::future::join_all;
use serde_json::Value;

use super::common::{Fixture, Process, client};
use super::origin::{Mode, Origin};
use super::replication::{Nats, eventually, get, node, ready, three_nodes};

/// A `Quote` cache table in front of `origin`, fresh for 60 s; `extra` adds settings.
fn quotes(origin: &Origin, extra: &str) -> Fixture {
    let schema = format!(
        r#"{{
          "type": "object",
          "x-table": {{ "cache": {{
            "origin": "{}", "expiration": "60s", "timeout": "5s" {extra}
          }} }},
          "properties": {{
            "id": {{ "type": "string" }},
            "name": {{ "type": "string" }},
            "version": {{ "type": "integer" }}
          }},
          "required": ["id", "name"]
        }}"#,
        origin.template()
    );
    Fixture::with_schemas(&[("Quote", &schema)])
}

/// The origin requests made for `id`.
fn asked_for(origin: &Origin, id: &str) -> usize {
    let path = format!("/items/{id}");
    origin.seen().iter().filter(|(p, _)| *p == path).count()
}

/// `GET /Quote/id` on `node` with `headers`: status, `Cache-Status`, `Age` and body.
async fn read(node: &Process, id: &str, headers: &[(&str, &str)]) -> (u16, String, u64, Value) {
    let mut request = client().get(node.url(&format!("/Quote/{id}")));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("GET");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().expect("ASCII").to_owned())
            .unwrap_or_default()
    };
    let (status, cache_status) = (response.status().as_u16(), header("cache-status"));
    let age = header("age").parse().unwrap_or(0);
    (
        status,
        cache_status,
        age,
        response.json().await.unwrap_or(Value::Null),
    )
}

/// The cache counters of `Quote` on `node`.
async fn stats(node: &Process) -> Value {
    get(node, "/Quote").await.2["cache"]["stats"].clone()
}

#[tokio::test]
async fn concurrent_cold_reads_on_three_nodes_make_one_origin_request() {
    let origin = Origin::start().await;
    origin.set_delay(Duration::from_millis(100));
    let fixture = quotes(&origin, "");
    let mut nats = Nats::start();
    let (_data, nodes) = three_nodes(&fixture, &nats).await;

    // 100 concurrent reads of each key, spread over the nodes, five keys one after another.
    for key in ["k1", "k2", "k3", "k4", "k5"] {
        let reads = (0..100).map(|i| read(&nodes[i % 3], key, &[]));
        for (status, _, _, body) in join_all(reads).await {
            assert_eq!(status, 200);
            assert_eq!(body["name"], format!("item {key}"));
        }
        assert_eq!(asked_for(&origin, key), 1, "one origin request for {key}");
    }
    let mut by_peers = 0;
    for node in &nodes {
        let stats = stats(node).await;
        assert_eq!(stats["duplicateFetches"], 0, "{stats}");
        by_peers += stats["filledByPeers"].as_u64().expect("a count");
    }
    assert_eq!(by_peers, 10, "two nodes of three waited for each key");
    // Each node now serves every key from its own store.
    for node in &nodes {
        for key in ["k1", "k5"] {
            let (status, cache_status, _, _) = read(node, key, &[]).await;
            assert_eq!(status, 200);
            assert!(cache_status.contains("hit"), "{cache_status}");
        }
    }
    assert_eq!(origin.requests(), 5);

    // The worst case: NATS is gone, so no node can know what the others ask; each still
    // answers, with one origin request of its own.
    nats.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reads = (0..30).map(|i| read(&nodes[i % 3], "k6", &[]));
    for (status, _, _, _) in join_all(reads).await {
        assert_eq!(status, 200);
    }
    assert_eq!(asked_for(&origin, "k6"), 3, "one per node without NATS");
}

#[tokio::test]
async fn a_key_the_origin_does_not_have_is_answered_404_on_every_node() {
    let origin = Origin::start().await;
    origin.set_mode(Mode::Missing);
    origin.set_delay(Duration::from_millis(100));
    let fixture = quotes(&origin, "");
    let nats = Nats::start();
    let (_data, nodes) = three_nodes(&fixture, &nats).await;
    let reads = (0..30).map(|i| read(&nodes[i % 3], "gone", &[]));
    for (status, _, _, problem) in join_all(reads).await {
        assert_eq!(status, 404, "{problem}");
    }
    // The claimer says it stored nothing, so the others ask for themselves at once.
    assert!(
        asked_for(&origin, "gone") <= 3,
        "{}",
        asked_for(&origin, "gone")
    );
}

#[tokio::test]
async fn a_revalidation_invalidation_or_eviction_on_one_node_reaches_the_others() {
    let origin = Origin::start().await;
    origin.send_etags();
    let fixture = quotes(&origin, r#", "staleWhileRevalidate": "0s""#);
    let nats = Nats::start();
    let (_data, nodes) = three_nodes(&fixture, &nats).await;
    let (a, b) = (&nodes[0], &nodes[1]);

    let (status, _, _, filled) = read(a, "q", &[]).await;
    assert_eq!(status, 200);
    eventually("the fill reaches b", async || {
        read(b, "q", &[("cache-control", "only-if-cached")]).await.0 == 200
    })
    .await;
    let etag_on_b = get(b, "/Quote/q").await.1;
    assert_eq!(origin.requests(), 1, "b serves a's fill");

    // A revalidation on a (the origin answers 304) makes the entry fresh again on b: its age
    // starts over, and its version (so its ETag) stays.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(read(b, "q", &[]).await.2 >= 2, "b's copy ages");
    let (_, revalidated, _, _) = read(a, "q", &[("cache-control", "no-cache")]).await;
    assert!(revalidated.contains("fwd-status=304"), "{revalidated}");
    eventually("b learns of the revalidation", async || {
        read(b, "q", &[]).await.2 < 2
    })
    .await;
    assert_eq!(get(b, "/Quote/q").await.1, etag_on_b);

    // A new version fetched on a replaces b's.
    origin.bump();
    let (_, _, _, newer) = read(a, "q", &[("cache-control", "no-cache")]).await;
    assert_ne!(newer["version"], filled["version"]);
    eventually("b has the new version", async || {
        read(b, "q", &[]).await.3["version"] == newer["version"]
    })
    .await;

    // Marked stale on a: stale on b, which asks the origin on its next read.
    let invalidated = client()
        .post(a.url("/_cache/Quote/invalidate"))
        .json(&serde_json::json!({ "ids": ["q"] }))
        .send()
        .await
        .expect("POST");
    assert_eq!(invalidated.status(), 200);
    eventually("b sees the entry stale", async || {
        read(b, "q", &[("cache-control", "only-if-cached")]).await.0 == 504
    })
    .await;

    // Evicted on a (DELETE): gone from every node.
    let requests = origin.requests();
    assert_eq!(read(a, "q", &[]).await.0, 200);
    let deleted = client()
        .delete(a.url("/Quote/q"))
        .send()
        .await
        .expect("DELETE");
    assert!(deleted.status().is_success(), "{}", deleted.status());
    for node in &nodes {
        eventually("every node forgets it", async || {
            read(node, "q", &[("cache-control", "only-if-cached")])
                .await
                .0
                == 504
        })
        .await;
    }
    assert!(origin.requests() <= requests + 1);
}

#[tokio::test]
async fn what_a_node_evicts_for_its_own_bound_stays_on_the_others() {
    let origin = Origin::start().await;
    let small = quotes(&origin, r#", "maxEntries": 1"#);
    let roomy = quotes(&origin, "");
    let nats = Nats::start();
    let (data_a, data_b) = (
        tempfile::TempDir::new().expect("dir"),
        tempfile::TempDir::new().expect("dir"),
    );
    let a = node(&small, data_a.path(), "a", &nats);
    let b = node(&roomy, data_b.path(), "b", &nats);
    ready(&a).await;
    ready(&b).await;

    assert_eq!(read(&a, "first", &[]).await.0, 200);
    assert_eq!(read(&a, "second", &[]).await.0, 200);
    eventually("a keeps one entry", async || {
        read(&a, "first", &[("cache-control", "only-if-cached")])
            .await
            .0
            == 504
    })
    .await;
    for key in ["first", "second"] {
        eventually("b keeps both", async || {
            read(&b, key, &[("cache-control", "only-if-cached")])
                .await
                .0
                == 200
        })
        .await;
    }
    // Settled: a's eviction never reaches b.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        read(&b, "first", &[("cache-control", "only-if-cached")])
            .await
            .0,
        200
    );
    assert_eq!(origin.requests(), 2);
}
