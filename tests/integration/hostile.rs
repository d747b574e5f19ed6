//! What an attacker sends: each request is answered with a clear error or served, nothing
//! acknowledged is lost or changed, and the server serves everyone else on.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::common::{
    COUNTER_SCHEMA, Fixture, ITEM_SCHEMA, TestServer, delete, expect_problem, post_json, put,
    read_until_closed,
};
use crate::origin::Origin;

#[tokio::test]
async fn a_record_with_more_index_entries_than_allowed_is_refused_and_changes_nothing() {
    let fixture = Fixture::new();
    let mut config = fixture.config();
    config.max_index_entries = 100;
    let server = TestServer::start(config).await;
    // `tags` is indexed: each distinct element is one entry (and `tags` is the only index).
    put(&server, "/Item/a", json!({ "name": "kept", "tags": ["x"] })).await;

    let tags: Vec<String> = (0..101).map(|n| format!("t{n}")).collect();
    let refused = server
        .client
        .put(server.url("/Item/a"))
        .json(&json!({ "name": "flood", "tags": tags }))
        .send()
        .await
        .expect("PUT");
    let problem = expect_problem(refused, 422, "too-many-index-entries").await;
    assert_eq!(
        (problem["entries"].clone(), problem["limit"].clone()),
        (json!(101), json!(100))
    );
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("--max-index-entries"))
    );
    let refused = post_json(&server, "/Item/", json!({ "name": "flood", "tags": tags })).await;
    expect_problem(refused, 422, "too-many-index-entries").await;

    let kept: Value = server.get_json("/Item/a").await;
    assert_eq!(kept["name"], "kept");
    let found: Value = server.get_json("/Item/?tags=t5").await;
    assert_eq!(
        found,
        json!([]),
        "no entry of the refused record is in the index"
    );
    // Exactly at the limit is fine (duplicates count once).
    let mut tags = tags[..100].to_vec();
    tags.push("t0".to_owned());
    put(&server, "/Item/a", json!({ "name": "full", "tags": tags })).await;
    let found: Value = server.get_json("/Item/?tags=t99&select(name)").await;
    assert_eq!(found, json!(["full"]));
}

#[tokio::test]
async fn one_put_of_the_largest_integer_id_does_not_end_id_generation() {
    let fixture = Fixture::with_schemas(&[("Counter", COUNTER_SCHEMA), ("Item", ITEM_SCHEMA)]);
    let server = fixture.start().await;
    put(&server, "/Counter/2", json!({ "label": "taken" })).await;
    put(&server, &format!("/Counter/{}", i64::MAX), json!({})).await;
    let response = delete(&server, &format!("/Counter/{}", i64::MAX)).await;
    assert!(response.status().is_success());

    let mut generated = Vec::new();
    for _ in 0..2 {
        let created = post_json(&server, "/Counter/", json!({ "label": "new" })).await;
        assert_eq!(created.status(), 201);
        let record: Value = created.json().await.expect("JSON");
        generated.push(record["n"].clone());
    }
    assert_eq!(
        generated,
        [json!(1), json!(3)],
        "the lowest free ids, skipping 2"
    );
    server.stop().await;

    let server = fixture.start().await;
    let created = post_json(&server, "/Counter/", json!({ "label": "after restart" })).await;
    assert_eq!(created.status(), 201);
    let record: Value = created.json().await.expect("JSON");
    assert_eq!(record["n"], 4);
}

#[tokio::test]
async fn text_that_is_almost_a_date_is_refused_in_a_query_and_never_matches_when_stored() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let refused = server
        .client
        .get(server.url("/Counter/?createdAt=date:2001-01-01T12:00:00.aa%C3%A9"))
        .send()
        .await
        .expect("GET");
    expect_problem(refused, 400, "bad-query").await;
    let impossible = server
        .client
        .get(server.url("/Counter/?createdAt=lt=date:2001-02-31"))
        .send()
        .await
        .expect("GET");
    expect_problem(impossible, 400, "bad-query").await;

    put(
        &server,
        "/Counter/1",
        json!({ "label": "2001-01-01T12:00:00.aaé" }),
    )
    .await;
    put(
        &server,
        "/Counter/2",
        json!({ "label": "2001-01-01T12:00:00Z" }),
    )
    .await;
    put(&server, "/Counter/3", json!({ "label": "2001-02-31" })).await;
    let found: Value = server
        .get_json("/Counter/?label=gt=date:2000-01-01&select(n)")
        .await;
    assert_eq!(
        found,
        json!([2]),
        "only the stored text that is a date compares as one"
    );
}

/// Sends `head` (and whatever body bytes follow it) on a new connection to `server`.
async fn send_raw(server: &TestServer, head: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(server.base.trim_start_matches("http://"))
        .await
        .expect("connect");
    stream.write_all(head).await.expect("write");
    stream
}

fn put_head(path: &str, length: u64) -> Vec<u8> {
    format!(
        "PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn bodies_that_are_too_large_slow_or_too_many_are_refused_and_the_server_serves_on() {
    let fixture = Fixture::new();
    let mut config = fixture.config();
    config.body_timeout = Duration::from_millis(500);
    config.body_memory = 1 << 20;
    let server = TestServer::start(config).await;

    // A declared length over --max-body is refused before a byte of the body is sent.
    let mut huge = send_raw(&server, &put_head("/Item/a", 999_999_999_999)).await;
    let refused = read_until_closed(&mut huge, Duration::from_secs(5)).await;
    assert!(refused.starts_with("HTTP/1.1 413"), "{refused}");
    assert!(refused.contains("application/problem+json") && refused.contains("payload-too-large"));

    // A body that stops arriving is answered 408 once --body-timeout has passed.
    let mut stalled = send_raw(&server, &put_head("/Item/a", 100)).await;
    stalled.write_all(b"{\"name\":").await.expect("write");
    let timed_out = read_until_closed(&mut stalled, Duration::from_secs(10)).await;
    assert!(timed_out.starts_with("HTTP/1.1 408"), "{timed_out}");
    assert!(timed_out.contains("request-timeout") && timed_out.contains("--body-timeout"));

    // Bodies being received hold at most --body-memory (1 MiB) between them: two that each
    // sent 400 KB of 900 KB leave no room for a third's 400 KB.
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut holder = send_raw(&server, &put_head("/Item/big", 900_000)).await;
        holder.write_all(&[b' '; 400_000]).await.expect("write");
        holders.push(holder);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = send_raw(&server, &put_head("/Item/c", 900_000)).await;
    let _ = third.write_all(&[b' '; 400_000]).await;
    let busy = read_until_closed(&mut third, Duration::from_secs(5)).await;
    assert!(busy.starts_with("HTTP/1.1 503"), "{busy}");
    assert!(busy.contains("server-busy") && busy.contains("--body-memory"));
    for mut holder in holders {
        let timed_out = read_until_closed(&mut holder, Duration::from_secs(10)).await;
        assert!(timed_out.starts_with("HTTP/1.1 408"), "{timed_out}");
    }

    // Nothing was written, and once the holders are gone, bodies are read again.
    let absent = server
        .client
        .get(server.url("/Item/a"))
        .send()
        .await
        .expect("GET");
    assert_eq!(absent.status(), 404);
    put(&server, "/Item/a", json!({ "name": "after" })).await;

    // A body without a Content-Type is not taken for JSON.
    let untyped = server
        .client
        .put(server.url("/Item/a"))
        .body(r#"{"name":"untyped"}"#)
        .send()
        .await
        .expect("PUT");
    let problem = expect_problem(untyped, 415, "unsupported-media-type").await;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("no Content-Type"))
    );
}

#[tokio::test]
async fn a_cache_id_the_table_could_never_store_costs_no_origin_request() {
    let origin = Origin::start().await;
    let schema = format!(
        r#"{{
          "type": "object",
          "x-table": {{
            "primaryKey": "symbol",
            "cache": {{ "origin": "{}", "expiration": "60s" }}
          }},
          "properties": {{
            "symbol": {{ "type": "string", "pattern": "^[A-Z]{{1,5}}$" }},
            "price": {{ "type": "number" }}
          }}
        }}"#,
        origin.template()
    );
    let fixture = Fixture::with_schemas(&[("Quote", &schema)]);
    let server = fixture.start().await;
    for bad in ["lower", "TOOLONG", "A%20B"] {
        let refused = server
            .client
            .get(server.url(&format!("/Quote/{bad}")))
            .send()
            .await
            .expect("GET");
        let problem = expect_problem(refused, 400, "invalid-id").await;
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains("does not match"))
        );
    }
    assert_eq!(origin.requests(), 0, "the origin was not asked");
}

#[tokio::test]
async fn a_number_that_cannot_be_stored_exactly_is_refused_not_rounded() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    put(
        &server,
        "/Item/n",
        json!({ "name": "kept", "dims": { "w": 1.5 } }),
    )
    .await;
    let refused = server
        .client
        .put(server.url("/Item/n"))
        .header("content-type", "application/json")
        .body(r#"{"name": "rounded", "dims": {"w": 123456789012345678901234567890}}"#)
        .send()
        .await
        .expect("PUT");
    let problem = expect_problem(refused, 422, "inexact-number").await;
    assert_eq!(problem["number"], "123456789012345678901234567890");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("as a string"))
    );
    let kept: Value = server.get_json("/Item/n").await;
    assert_eq!(kept["name"], "kept");

    // Every digit a double holds is kept as written.
    let exact = r#"{"name": "exact", "dims": {"w": 0.30000000000000004}, "qty": 9007199254740993}"#;
    let stored = server
        .client
        .put(server.url("/Item/n"))
        .header("content-type", "application/json")
        .body(exact)
        .send()
        .await
        .expect("PUT");
    assert_eq!(stored.status(), 204);
    let text = server
        .client
        .get(server.url("/Item/n"))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("body");
    assert!(
        text.contains("0.30000000000000004") && text.contains("9007199254740993"),
        "{text}"
    );
}

#[tokio::test]
async fn requests_hyper_cannot_parse_get_problem_details_too() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
    let long_header = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(500_000)
    );
    let cases: [(&[u8], &str, &str); 5] = [
        (
            b"GET /Item/a b HTTP/1.1\r\nHost: x\r\n\r\n",
            "400",
            "bad-request",
        ),
        (
            b"GET /Item/a\0b HTTP/1.1\r\nHost: x\r\n\r\n",
            "400",
            "bad-request",
        ),
        (
            b"GET /Item/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
            "400",
            "bad-request",
        ),
        (long_uri.as_bytes(), "414", "uri-too-long"),
        (long_header.as_bytes(), "431", "headers-too-large"),
    ];
    for (request, status, code) in cases {
        let mut stream = TcpStream::connect(server.base.trim_start_matches("http://"))
            .await
            .expect("connect");
        let _ = stream.write_all(request).await;
        let answer = read_until_closed(&mut stream, Duration::from_secs(10)).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{answer}"
        );
        assert!(
            answer.contains("content-type: application/problem+json"),
            "{answer}"
        );
        let body = answer.split("\r\n\r\n").nth(1).expect("a body");
        let problem: Value = serde_json::from_str(body).expect("problem JSON");
        assert_eq!(problem["type"], format!("urn:tablecast:problem:{code}"));
    }
    let health = server
        .client
        .get(server.url("/_health"))
        .send()
        .await
        .expect("GET");
    assert_eq!(health.status(), 200);
}
