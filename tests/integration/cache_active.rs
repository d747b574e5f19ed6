//! Active caching against a real origin: values pushed, entries evicted and invalidated, ids
//! warmed (over HTTP and with `tablecast warm`), the `maxEntries` bound, the sweeper, and entries
//! that survive a restart.

use std::time::Duration;

use serde_json::{Value, json};
use tablecast::events::ChangeKind;

use crate::cache::{Setup, header, setup, setup_with, version};
use crate::common::{TestServer, delete, eventually, expect_problem, post_json};
use crate::origin::Mode;

#[tokio::test]
async fn pushes_evictions_and_invalidation() {
    let mut s = setup("").await;
    let pushed = s
        .server
        .client
        .put(s.server.url("/Quote/P"))
        .header("cache-control", "max-age=5")
        .json(&json!({"name": "pushed", "version": 99}))
        .send()
        .await
        .expect("PUT");
    assert_eq!(pushed.status(), 204);
    assert_eq!(
        header(&pushed, "cache-status"),
        "tablecast; stored; detail=pushed"
    );
    let hit = s.get("P").await;
    assert_eq!(header(&hit, "cache-status"), "tablecast; hit; ttl=5");
    assert_eq!(version(hit).await, 99);
    s.clock.advance(Duration::from_secs(6));
    let stale = s.get("P").await;
    assert!(header(&stale, "cache-status").contains("stale-while-revalidate"));
    s.origin.wait_for_requests(1).await;

    // A push cannot keep the origin away for longer than the table's expiration.
    let forever = s
        .server
        .client
        .put(s.server.url("/Quote/F"))
        .header("cache-control", "max-age=18446744073709551615")
        .json(&json!({"name": "pushed", "version": 1}))
        .send()
        .await
        .expect("PUT");
    assert_eq!(forever.status(), 204);
    let hit = s.get("F").await;
    assert_eq!(header(&hit, "cache-status"), "tablecast; hit; ttl=60");
    assert_eq!(delete(&s.server, "/Quote/F").await.status(), 204);

    let bad_push = s
        .server
        .client
        .put(s.server.url("/Quote/P"))
        .json(&json!({"version": "x"}))
        .send()
        .await
        .expect("PUT");
    expect_problem(bad_push, 422, "schema-violation").await;

    let evicted = delete(&s.server, "/Quote/P").await;
    assert_eq!(evicted.status(), 204);
    assert_eq!(
        header(&evicted, "cache-status"),
        "tablecast; detail=evicted"
    );
    let again = delete(&s.server, "/Quote/P").await;
    expect_problem(again, 404, "record-not-found").await;

    for method in [reqwest::Method::PATCH, reqwest::Method::POST] {
        let path = if method == reqwest::Method::POST {
            "/Quote/"
        } else {
            "/Quote/P"
        };
        let refused = s
            .server
            .client
            .request(method.clone(), s.server.url(path))
            .json(&json!({"name": "x"}))
            .send()
            .await
            .expect("request");
        assert!(!header(&refused, "allow").is_empty(), "{method}");
        expect_problem(refused, 405, "method-not-allowed").await;
    }

    // Invalidation marks entries stale: the next read is served stale and refreshes.
    s.server.drain_events();
    for id in ["A", "B", "C"] {
        assert_eq!(s.get(id).await.status(), 200);
    }
    let before = s.origin.requests();
    let invalidate = |body| post_json(&s.server, "/_cache/Quote/invalidate", body);
    let marked: Value = invalidate(json!({"ids": ["A", "nope"]}))
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(marked, json!({"invalidated": 1}));
    assert!(header(&s.get("A").await, "cache-status").contains("stale-while-revalidate"));
    assert!(header(&s.get("B").await, "cache-status").starts_with("tablecast; hit; ttl="));
    s.origin.wait_for_requests(before + 1).await;
    let all: Value = invalidate(json!({"all": true}))
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(all, json!({"invalidated": 3}));
    assert!(header(&s.get("C").await, "cache-status").contains("stale-while-revalidate"));
    let bad = invalidate(json!({"ids": [1]})).await;
    let problem = expect_problem(bad, 400, "bad-request").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("/ids/0"),
        "{problem}"
    );
}

#[tokio::test]
async fn warm_fetches_what_is_not_fresh() {
    let s = setup("").await;
    let warm = |ids: Value| post_json(&s.server, "/_cache/Quote/warm", json!({ "ids": ids }));
    let report: Value = warm(json!(["a", "b", "c"]))
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        report,
        json!({"fetched": 3, "fresh": 0, "notFound": 0, "failed": []})
    );
    let report: Value = warm(json!(["a", "b", "c", "d"]))
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        report,
        json!({"fetched": 1, "fresh": 3, "notFound": 0, "failed": []})
    );
    assert_eq!(s.origin.requests(), 4);
    assert_eq!(s.record_count().await, 4);
    // A failure names the schema rule the origin's answer broke.
    s.origin.set_mode(Mode::Invalid);
    let report: Value = warm(json!(["e"])).await.json().await.expect("JSON");
    let detail = report["failed"][0]["detail"].as_str().expect("a detail");
    assert!(
        detail.contains("does not match the table's schema")
            && detail.contains("/name: property `name` is required"),
        "{report}"
    );
    s.origin.set_mode(Mode::Serve);
    let plain = warm(json!(["a"])).await;
    assert_eq!(plain.status(), 200);
    let unknown = s
        .server
        .client
        .post(s.server.url("/_cache/Nope/warm"))
        .json(&json!({"ids": []}))
        .send()
        .await
        .expect("POST");
    expect_problem(unknown, 404, "unknown-table").await;
}

#[tokio::test]
async fn max_entries_evicts_the_least_recently_used() {
    let s = setup(r#", "maxEntries": 3"#).await;
    for id in ["a", "b", "c"] {
        assert_eq!(s.get(id).await.status(), 200);
    }
    // `a` is used again, so `b` is now the least recently used.
    assert!(header(&s.get("a").await, "cache-status").contains("hit"));
    assert_eq!(s.get("d").await.status(), 200);
    eventually("the bound was not applied", async || {
        s.record_count().await == 3
    })
    .await;
    assert_eq!(s.record_count().await, 3);
    let ids: Vec<Value> = s.server.get_json("/Quote/?select(id)").await;
    assert_eq!(ids, [json!("a"), json!("c"), json!("d")]);
    assert_eq!(s.describe().await["cache"]["stats"]["evictions"], 1);
}

#[tokio::test]
async fn the_sweeper_removes_entries_past_their_last_usable_moment() {
    let sweep_often = |config: &mut tablecast::Config| {
        config.sweep_interval = Duration::from_millis(20);
    };
    let mut s = setup_with("", sweep_often).await;
    assert_eq!(s.get("A").await.status(), 200);
    s.clock.advance(Duration::from_secs(60 + 599));
    // Ten sweeps or so.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.record_count().await, 1, "still within stale-if-error");
    s.clock.advance(Duration::from_secs(2));
    eventually("the sweeper did not remove the expired entry", async || {
        s.record_count().await == 0
    })
    .await;
    let events = s.server.drain_events();
    assert_eq!(events.last().map(|e| e.kind), Some(ChangeKind::Delete));
}

#[tokio::test]
async fn cached_entries_survive_a_restart() {
    let s = setup("").await;
    assert_eq!(version(s.get("A").await).await, 1);
    let Setup {
        origin,
        fixture,
        clock,
        server,
    } = s;
    server.stop().await;
    clock.advance(Duration::from_secs(10));
    let server = TestServer::start_with_clock(fixture.config(), clock.clone()).await;
    let hit = server
        .client
        .get(server.url("/Quote/A"))
        .send()
        .await
        .expect("GET");
    assert_eq!(header(&hit, "cache-status"), "tablecast; hit; ttl=50");
    assert_eq!(header(&hit, "age"), "10");
    assert_eq!(version(hit).await, 1);
    assert_eq!(origin.requests(), 1);
}

#[tokio::test]
async fn the_warm_command_fills_a_running_server() {
    let s = setup("").await;
    let ids = s.fixture.data.path().join("ids.txt");
    // One id per request, so the command sends many requests over its one connection.
    let list: String = (0..30).map(|i| format!("w{i}\n\n")).collect();
    std::fs::write(&ids, list).expect("write ids");
    let run = |ids: std::path::PathBuf, base: String| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(crate::common::binary())
                .args([
                    "warm", "--table", "Quote", "--batch", "2", "--url", &base, "--ids",
                ])
                .arg(ids)
                .output()
                .expect("tablecast warm runs")
        })
    };
    let output = run(ids.clone(), s.server.base.clone())
        .await
        .expect("joins");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(
            "warmed Quote: 30 fetched, 0 already fresh, 0 not found at the origin, 0 failed"
        ),
        "{stdout}"
    );
    assert_eq!(s.origin.requests(), 30);
    assert_eq!(s.record_count().await, 30);

    s.origin.set_mode(Mode::Fail);
    std::fs::write(&ids, "w0\nz\n").expect("write ids");
    let output = run(ids, s.server.base.clone()).await.expect("joins");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success());
    assert!(
        stdout.contains("1 fetched") || stdout.contains("1 already fresh"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\"z\": the origin of table `Quote`"),
        "{stdout}"
    );
}
