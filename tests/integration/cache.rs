//! Cache tables against a real origin: fills, hits, single-flight, stale control, revalidation,
//! request directives and the origin's own directives (active caching, eviction and persistence
//! are in `cache_active.rs`). Freshness follows a manual clock, so windows are crossed by moving
//! it rather than by sleeping.

use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};
use tablecast::clock::Clock;
use tablecast::events::ChangeKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{Fixture, TestServer, eventually, expect_problem};
use crate::origin::{Mode, Origin};

const START: u64 = 1_800_000_000_000;

/// A `Quote` cache table in front of `origin`: fresh 60 s, then 30 s of
/// stale-while-revalidate, 10 min of stale-if-error; 404s remembered 10 s; 500 ms timeout.
fn quote_schema(origin: &Origin, extra: &str) -> String {
    format!(
        r#"{{
          "type": "object",
          "x-table": {{ "cache": {{
            "origin": "{}",
            "headers": {{ "X-Api-Key": "k-${{TABLECAST_TEST_ORIGIN_KEY}}" }},
            "expiration": "60s", "staleWhileRevalidate": "30s", "staleIfError": "10m",
            "notFound": "10s", "timeout": "500ms" {extra}
          }} }},
          "properties": {{
            "id": {{ "type": "string" }},
            "name": {{ "type": "string" }},
            "version": {{ "type": "integer" }}
          }},
          "required": ["id", "name"]
        }}"#,
        origin.template()
    )
}

pub struct Setup {
    pub origin: Origin,
    pub fixture: Fixture,
    pub clock: Clock,
    pub server: TestServer,
}

pub async fn setup(extra: &str) -> Setup {
    setup_with(extra, |_| {}).await
}

/// [`setup`], with the server's configuration changed by `configure`.
pub async fn setup_with(extra: &str, configure: impl FnOnce(&mut tablecast::Config)) -> Setup {
    // SAFETY: every test sets the same value, and only the schema loader reads it.
    unsafe { std::env::set_var("TABLECAST_TEST_ORIGIN_KEY", "abc") };
    let origin = Origin::start().await;
    let fixture = Fixture::with_schemas(&[("Quote", &quote_schema(&origin, extra))]);
    let clock = Clock::manual(START);
    let mut config = fixture.config();
    configure(&mut config);
    let server = TestServer::start_with_clock(config, clock.clone()).await;
    Setup {
        origin,
        fixture,
        clock,
        server,
    }
}

impl Setup {
    pub async fn get(&self, id: &str) -> reqwest::Response {
        self.get_with(id, &[]).await
    }

    pub async fn get_with(&self, id: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self
            .server
            .client
            .get(self.server.url(&format!("/Quote/{id}")));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("GET")
    }

    pub async fn describe(&self) -> Value {
        self.server.get_json("/Quote").await
    }

    pub async fn record_count(&self) -> u64 {
        self.describe().await["recordCount"]
            .as_u64()
            .expect("count")
    }
}

pub fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

pub async fn version(response: reqwest::Response) -> u64 {
    assert_eq!(
        response.status(),
        200,
        "{}",
        header(&response, "cache-status")
    );
    let body: Value = response.json().await.expect("JSON");
    body["version"].as_u64().expect("version")
}

#[tokio::test]
async fn a_miss_fills_and_later_reads_hit() {
    let mut s = setup("").await;
    let first = s.get("ACME").await;
    assert_eq!(first.status(), 200);
    assert_eq!(
        header(&first, "cache-status"),
        "tablecast; fwd=miss; fwd-status=200; ttl=60; stored"
    );
    assert!(header(&first, "server-timing").starts_with("origin;dur="));
    assert_eq!(header(&first, "age"), "0");
    assert_eq!(
        header(&first, "cache-control"),
        "max-age=60, stale-while-revalidate=30, stale-if-error=600"
    );
    assert!(
        header(&first, "set-cookie").is_empty(),
        "origin cookies never reach clients"
    );
    let etag = header(&first, "etag");
    let body: Value = first.json().await.expect("JSON");
    assert_eq!(
        body,
        json!({"id": "ACME", "name": "item ACME", "version": 1})
    );

    s.clock.advance(Duration::from_secs(20));
    let hit = s.get("ACME").await;
    assert_eq!(header(&hit, "cache-status"), "tablecast; hit; ttl=40");
    assert_eq!(header(&hit, "age"), "20");
    assert_eq!(
        header(&hit, "cache-control"),
        "max-age=40, stale-while-revalidate=30, stale-if-error=600"
    );
    assert!(header(&hit, "server-timing").is_empty());
    assert_eq!(header(&hit, "etag"), etag);
    assert_eq!(version(hit).await, 1);
    let not_modified = s.get_with("ACME", &[("if-none-match", &etag)]).await;
    assert_eq!(not_modified.status(), 304);
    assert_eq!(s.origin.requests(), 1);

    // The origin got the configured header, with the environment variable expanded.
    let (path, headers) = &s.origin.seen()[0];
    assert_eq!(path, "/items/ACME");
    assert_eq!(headers["x-api-key"], "k-abc");
    // The fill was a commit like any other.
    let events = s.server.drain_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, ChangeKind::Put);
    let described = s.describe().await;
    assert_eq!(described["recordCount"], 1);
    assert_eq!(
        described["cache"]["stats"]["hits"], 2,
        "the 304 was served from the cache"
    );
    assert_eq!(described["cache"]["stats"]["misses"], 1);
    assert_eq!(described["cache"]["stats"]["originRequests"], 1);
    assert_eq!(
        described["cache"]["headers"],
        json!(["X-Api-Key"]),
        "values stay secret"
    );
}

#[tokio::test]
async fn two_hundred_concurrent_misses_make_one_origin_request() {
    let s = setup("").await;
    s.origin.set_delay(Duration::from_millis(300));
    let answers = join_all((0..200).map(|_| s.get("HOT"))).await;
    let (mut collapsed, mut hits) = (0, 0);
    for answer in answers {
        let status = header(&answer, "cache-status");
        collapsed += usize::from(status.contains("collapsed"));
        // Requests that arrive after the fill landed are plain hits.
        hits += usize::from(status.starts_with("tablecast; hit"));
        assert_eq!(version(answer).await, 1);
    }
    assert_eq!(s.origin.requests(), 1);
    assert_eq!(collapsed + hits, 199);
    assert!(collapsed > 0);
    assert_eq!(s.describe().await["cache"]["stats"]["collapsed"], collapsed);
}

#[tokio::test]
async fn stale_while_revalidate_serves_stale_and_refreshes_once_in_the_background() {
    let s = setup("").await;
    assert_eq!(version(s.get("A").await).await, 1);
    s.origin.bump();
    s.clock.advance(Duration::from_secs(70));
    let stale = join_all((0..20).map(|_| s.get("A"))).await;
    for answer in stale {
        assert_eq!(
            header(&answer, "cache-status"),
            "tablecast; hit; ttl=-10; detail=stale-while-revalidate"
        );
        assert_eq!(
            header(&answer, "cache-control"),
            "max-age=0, stale-while-revalidate=30, stale-if-error=600"
        );
        assert_eq!(version(answer).await, 1);
    }
    s.origin.wait_for_requests(2).await;
    // The refresh commits after the origin answers; the next reads see it.
    eventually("the background refresh never landed", async || {
        header(&s.get("A").await, "cache-status").starts_with("tablecast; hit; ttl=60")
    })
    .await;
    assert_eq!(version(s.get("A").await).await, 2);
    assert_eq!(s.origin.requests(), 2, "one refresh for twenty stale reads");
}

#[tokio::test]
async fn stale_if_error_covers_failures_timeouts_and_closed_connections_within_its_window() {
    let s = setup("").await;
    assert_eq!(version(s.get("A").await).await, 1);
    s.clock.advance(Duration::from_secs(100));
    for mode in [Mode::Fail, Mode::Close, Mode::Garbage, Mode::Invalid] {
        s.origin.set_mode(mode);
        let answer = s.get("A").await;
        let status = header(&answer, "cache-status");
        assert!(
            status.starts_with("tablecast; fwd=stale") && status.ends_with("detail=stale-if-error"),
            "{mode:?}: {status}"
        );
        assert_eq!(version(answer).await, 1);
    }
    s.origin.set_mode(Mode::Serve);
    s.origin.set_delay(Duration::from_secs(2));
    let timed_out = s.get("A").await;
    assert_eq!(
        header(&timed_out, "cache-status"),
        "tablecast; fwd=stale; ttl=-40; detail=stale-if-error"
    );
    assert_eq!(version(timed_out).await, 1);

    // Past stale-if-error: the failure is the answer.
    s.origin.set_delay(Duration::ZERO);
    s.origin.set_mode(Mode::Fail);
    s.clock.advance(Duration::from_secs(600));
    let failed = s.get("A").await;
    assert_eq!(
        header(&failed, "cache-status"),
        "tablecast; fwd=stale; fwd-status=500"
    );
    assert_eq!(header(&failed, "cache-control"), "no-store");
    let body = expect_problem(failed, 502, "origin-failed").await;
    assert!(
        body["detail"].as_str().unwrap().contains("answered 500"),
        "{body}"
    );
}

#[tokio::test]
async fn origin_failures_on_a_miss_are_clear_problems_and_store_nothing() {
    let s = setup("").await;
    s.origin.set_mode(Mode::Fail);
    expect_problem(s.get("A").await, 502, "origin-failed").await;
    s.origin.set_mode(Mode::Close);
    let closed = expect_problem(s.get("A").await, 502, "origin-failed").await;
    let detail = closed["detail"].as_str().unwrap();
    assert!(detail.ends_with("the origin is unreachable"), "{closed}");
    // What the origin said is logged, never sent: no client library's text, no redirect target.
    s.origin.set_mode(Mode::Redirect);
    let redirected = expect_problem(s.get("A").await, 502, "origin-failed").await;
    let detail = redirected["detail"].as_str().unwrap();
    assert!(
        detail.ends_with("redirected to another host, which is not followed"),
        "{detail}"
    );
    assert!(!redirected.to_string().contains("s3cret"), "{redirected}");
    s.origin.set_mode(Mode::Garbage);
    let garbage = expect_problem(s.get("A").await, 502, "origin-invalid").await;
    assert!(
        garbage["detail"].as_str().unwrap().contains("is not JSON"),
        "{garbage}"
    );
    s.origin.set_mode(Mode::Invalid);
    let invalid = expect_problem(s.get("A").await, 502, "origin-invalid").await;
    assert_eq!(invalid["errors"][0]["pointer"], "/name", "{invalid}");
    assert!(
        invalid["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("name"),
        "{invalid}"
    );
    s.origin.set_mode(Mode::Serve);
    s.origin.set_delay(Duration::from_secs(2));
    let timeout = s.get("A").await;
    assert_eq!(header(&timeout, "cache-status"), "tablecast; fwd=miss");
    let body = expect_problem(timeout, 504, "origin-timeout").await;
    assert_eq!(body["timeoutMs"], 500);
    assert_eq!(s.record_count().await, 0);
    assert_eq!(s.describe().await["cache"]["stats"]["originErrors"], 6);
}

#[tokio::test]
async fn revalidation_sends_the_origin_etag_and_a_304_refreshes_without_a_new_version() {
    let mut s = setup("").await;
    s.origin.send_etags();
    let first = s.get("A").await;
    let etag = header(&first, "etag");
    assert_eq!(version(first).await, 1);
    s.clock.advance(Duration::from_secs(120));
    let revalidated = s.get("A").await;
    assert_eq!(
        header(&revalidated, "cache-status"),
        "tablecast; fwd=stale; fwd-status=304; ttl=60; stored"
    );
    assert_eq!(
        header(&revalidated, "etag"),
        etag,
        "the record did not change"
    );
    assert_eq!(header(&revalidated, "age"), "0");
    assert_eq!(version(revalidated).await, 1);
    let seen = s.origin.seen();
    assert_eq!(seen[1].1["if-none-match"], "\"v1\"");
    assert_eq!(
        s.server.drain_events().len(),
        1,
        "a 304 announces no change"
    );

    // A changed record comes back whole, as a new version.
    s.origin.bump();
    let changed = s.get_with("A", &[("cache-control", "no-cache")]).await;
    assert_eq!(
        header(&changed, "cache-status"),
        "tablecast; fwd=request; fwd-status=200; ttl=60; stored"
    );
    assert_ne!(header(&changed, "etag"), etag);
    assert_eq!(version(changed).await, 2);
}

#[tokio::test]
async fn origin_404s_are_remembered_for_not_found_and_evict_what_was_stored() {
    let mut s = setup("").await;
    assert_eq!(version(s.get("GONE").await).await, 1);
    s.origin.set_mode(Mode::Missing);
    let missing = s.get_with("GONE", &[("cache-control", "no-cache")]).await;
    assert_eq!(
        header(&missing, "cache-status"),
        "tablecast; fwd=request; fwd-status=404; ttl=10; stored"
    );
    assert_eq!(header(&missing, "cache-control"), "max-age=10");
    expect_problem(missing, 404, "record-not-found").await;
    let events = s.server.drain_events();
    assert_eq!(events.last().map(|e| e.kind), Some(ChangeKind::Delete));

    s.clock.advance(Duration::from_secs(5));
    let remembered = s.get("GONE").await;
    assert_eq!(
        header(&remembered, "cache-status"),
        "tablecast; hit; ttl=5; detail=not-found"
    );
    expect_problem(remembered, 404, "record-not-found").await;
    assert_eq!(s.origin.requests(), 2);

    s.clock.advance(Duration::from_secs(6));
    s.origin.set_mode(Mode::Serve);
    assert_eq!(version(s.get("GONE").await).await, 1);
    assert_eq!(s.origin.requests(), 3);
}

#[tokio::test]
async fn request_directives_only_if_cached_no_store_max_age_and_max_stale() {
    let s = setup("").await;
    let not_cached = s
        .get_with("A", &[("cache-control", "only-if-cached")])
        .await;
    assert_eq!(
        header(&not_cached, "cache-status"),
        "tablecast; detail=only-if-cached"
    );
    expect_problem(not_cached, 504, "not-cached").await;
    assert_eq!(s.origin.requests(), 0);

    let unstored = s.get_with("A", &[("cache-control", "no-store")]).await;
    assert_eq!(
        header(&unstored, "cache-status"),
        "tablecast; fwd=miss; fwd-status=200"
    );
    assert_eq!(header(&unstored, "cache-control"), "no-store");
    assert_eq!(version(unstored).await, 1);
    assert_eq!(s.record_count().await, 0);

    assert_eq!(version(s.get("A").await).await, 1);
    let cached = s
        .get_with("A", &[("cache-control", "only-if-cached")])
        .await;
    assert_eq!(header(&cached, "cache-status"), "tablecast; hit; ttl=60");
    s.clock.advance(Duration::from_secs(10));
    s.origin.bump();
    let younger = s.get_with("A", &[("cache-control", "max-age=5")]).await;
    assert!(header(&younger, "cache-status").starts_with("tablecast; fwd=stale; fwd-status=200"));
    assert_eq!(version(younger).await, 2);

    // Far past every window, max-stale still accepts it (and a refresh starts).
    s.clock.advance(Duration::from_secs(3600));
    let old = s.get_with("A", &[("cache-control", "max-stale")]).await;
    assert_eq!(
        header(&old, "cache-status"),
        "tablecast; hit; ttl=-3540; detail=stale-while-revalidate"
    );
    assert_eq!(version(old).await, 2);
    let too_old = s
        .get_with("A", &[("cache-control", "only-if-cached")])
        .await;
    assert_eq!(too_old.status(), 504);
}

#[tokio::test]
async fn the_origin_cache_control_wins_when_honoured() {
    let s = setup(r#", "honorOriginCacheControl": true"#).await;
    s.origin.set_cache_control(Some(
        "max-age=5, stale-while-revalidate=0, stale-if-error=0",
    ));
    let first = s.get("A").await;
    assert_eq!(header(&first, "cache-control"), "max-age=5");
    s.clock.advance(Duration::from_secs(6));
    let refetched = s.get("A").await;
    assert!(header(&refetched, "cache-status").starts_with("tablecast; fwd=stale; fwd-status=200"));
    s.origin.set_cache_control(Some("no-store"));
    let unstored = s.get("B").await;
    assert_eq!(
        header(&unstored, "cache-status"),
        "tablecast; fwd=miss; fwd-status=200"
    );
    assert_eq!(s.record_count().await, 1);
}

#[tokio::test]
async fn ids_cannot_steer_the_origin_request() {
    let s = setup("").await;
    assert_eq!(s.get("a%2Fb%3Fx=1").await.status(), 200);
    assert_eq!(s.origin.seen()[0].0, "/items/a%2Fb%3Fx%3D1");
    // URL libraries turn `%2E%2E` into `..` and resolve it, so send the request as written, as
    // `curl --path-as-is` would.
    let address = s.server.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    stream
        .write_all(b"GET /Quote/%2E%2E HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("cache-status: tablecast\r\n"), "{answer}");
    assert!(answer.contains("relative path"), "{answer}");
    assert_eq!(s.origin.requests(), 1);
}
