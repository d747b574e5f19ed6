//! REST flows that need values from earlier answers: entity tags, generated keys, limits, paging.

use serde_json::{Value, json};

use crate::common::{Fixture, TestServer, delete, etag, expect_problem, post_json, put_with};

#[tokio::test]
async fn conditional_requests() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let created = put_with(&server, "/Item/a", json!({"name":"one"}), &[]).await;
    assert_eq!(created.status(), 204);
    let first = etag(&created);
    assert!(created.headers().contains_key("last-modified"));

    // GET carries the same validators; If-None-Match answers 304 (weak comparison).
    let got = server
        .client
        .get(server.url("/Item/a"))
        .send()
        .await
        .expect("GET");
    assert_eq!(etag(&got), first);
    let modified = got.headers()["last-modified"]
        .to_str()
        .expect("date")
        .to_owned();
    httpdate::parse_http_date(&modified).expect("Last-Modified is an HTTP date");
    for tag in [
        first.clone(),
        format!("W/{first}"),
        format!("\"zz\", {first}"),
        "*".to_owned(),
    ] {
        let cached = server
            .client
            .get(server.url("/Item/a"))
            .header("if-none-match", &tag)
            .send()
            .await
            .expect("GET");
        assert_eq!(cached.status(), 304, "If-None-Match: {tag}");
        assert_eq!(etag(&cached), first);
        assert!(cached.bytes().await.expect("body").is_empty());
    }
    let stale = server
        .client
        .get(server.url("/Item/a"))
        .header("if-none-match", "\"1\"")
        .send()
        .await
        .expect("GET");
    assert_eq!(stale.status(), 200);

    // If-Match: the write proceeds only on the current version, and a failed one changes nothing.
    let second = put_with(
        &server,
        "/Item/a",
        json!({"name":"two"}),
        &[("if-match", &first)],
    )
    .await;
    assert_eq!(second.status(), 204);
    let second = etag(&second);
    assert_ne!(second, first);
    let lost_update = put_with(
        &server,
        "/Item/a",
        json!({"name":"three"}),
        &[("if-match", &first)],
    )
    .await;
    expect_problem(lost_update, 412, "precondition-failed").await;
    let weak = put_with(
        &server,
        "/Item/a",
        json!({"name":"three"}),
        &[("if-match", &format!("W/{second}"))],
    )
    .await;
    expect_problem(weak, 412, "precondition-failed").await;
    let patch = server
        .client
        .patch(server.url("/Item/a"))
        .header("if-match", &first)
        .json(&json!({"qty":1}))
        .send()
        .await
        .expect("PATCH");
    expect_problem(patch, 412, "precondition-failed").await;
    let delete = server
        .client
        .delete(server.url("/Item/a"))
        .header("if-match", &first)
        .send()
        .await
        .expect("DELETE");
    expect_problem(delete, 412, "precondition-failed").await;
    let get_if_match = server
        .client
        .get(server.url("/Item/a"))
        .header("if-match", &first)
        .send()
        .await
        .expect("GET");
    expect_problem(get_if_match, 412, "precondition-failed").await;
    let body: Value = server.get_json("/Item/a").await;
    assert_eq!(body, json!({"id":"a","name":"two"}));

    // If-None-Match: * creates only; If-Match on a missing record fails.
    let exists = put_with(
        &server,
        "/Item/a",
        json!({"name":"x"}),
        &[("if-none-match", "*")],
    )
    .await;
    expect_problem(exists, 412, "precondition-failed").await;
    let fresh = put_with(
        &server,
        "/Item/new",
        json!({"name":"x"}),
        &[("if-none-match", "*")],
    )
    .await;
    assert_eq!(fresh.status(), 204);
    let missing = put_with(
        &server,
        "/Item/none",
        json!({"name":"x"}),
        &[("if-match", "*")],
    )
    .await;
    expect_problem(missing, 412, "precondition-failed").await;
    let absent = server
        .client
        .get(server.url("/Item/none"))
        .send()
        .await
        .expect("GET");
    assert_eq!(absent.status(), 404);

    // The matching ETag lets PATCH and DELETE through.
    let patched = server
        .client
        .patch(server.url("/Item/a"))
        .header("if-match", &second)
        .json(&json!({"qty":1}))
        .send()
        .await
        .expect("PATCH");
    assert_eq!(patched.status(), 204);
    let deleted = server
        .client
        .delete(server.url("/Item/a"))
        .header("if-match", etag(&patched))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(deleted.status(), 204);
    server.stop().await;
}

#[tokio::test]
async fn post_answers_location_and_never_reuses_integer_ids() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let created = post_json(&server, "/Counter/", json!({"label":"x"})).await;
        assert_eq!(created.status(), 201);
        let location = created.headers()["location"]
            .to_str()
            .expect("location")
            .to_owned();
        let body: Value = created.json().await.expect("JSON");
        assert_eq!(location, format!("/Counter/{}", body["n"]));
        let fetched: Value = server.get_json(&location).await;
        assert_eq!(fetched, body);
        assert!(body["createdAt"].is_u64() && body["createdAt"] == body["updatedAt"]);
        ids.push(body["n"].as_i64().expect("integer id"));
    }
    assert_eq!(ids, [1, 2, 3]);
    let deleted = delete(&server, "/Counter/3").await;
    assert_eq!(deleted.status(), 204);
    let next: Value = post_json(&server, "/Counter/", json!({}))
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(next["n"], 4, "a deleted id is not handed out again");

    let item = post_json(&server, "/Item/", json!({"name":"gen"})).await;
    let location = item.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let body: Value = item.json().await.expect("JSON");
    let id = body["id"].as_str().expect("string id");
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert_eq!(location, format!("/Item/{id}"));
    server.stop().await;
}

#[tokio::test]
async fn timestamps_keep_created_and_advance_updated() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let first: Value = put_with(
        &server,
        "/Counter/1",
        json!({"label":"a","createdAt":5}),
        &[("prefer", "return=representation")],
    )
    .await
    .json()
    .await
    .expect("JSON");
    assert_ne!(first["createdAt"], 5, "the server owns the timestamps");
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let second: Value = server
        .client
        .patch(server.url("/Counter/1"))
        .header("prefer", "return=representation")
        .json(&json!({"label":"b"}))
        .send()
        .await
        .expect("PATCH")
        .json()
        .await
        .expect("JSON");
    assert_eq!(second["createdAt"], first["createdAt"]);
    assert!(second["updatedAt"].as_u64() > first["updatedAt"].as_u64());
    server.stop().await;
}

#[tokio::test]
async fn body_over_the_limit_is_413_and_not_written() {
    let fixture = Fixture::new();
    let mut config = fixture.config();
    config.max_body = 1024;
    let server = TestServer::start(config).await;
    let big = json!({"name": "x".repeat(2000)});
    let response = put_with(&server, "/Item/big", big.clone(), &[]).await;
    let problem = expect_problem(response, 413, "payload-too-large").await;
    assert_eq!(problem["limit"], 1024);
    // Without Content-Length (chunked), the limit still holds.
    let chunks = futures_stream(big.to_string().into_bytes());
    let response = server
        .client
        .put(server.url("/Item/big"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("PUT");
    expect_problem(response, 413, "payload-too-large").await;
    let absent = server
        .client
        .get(server.url("/Item/big"))
        .send()
        .await
        .expect("GET");
    assert_eq!(absent.status(), 404);
    let small = put_with(&server, "/Item/small", json!({"name":"ok"}), &[]).await;
    assert_eq!(small.status(), 204);
    server.stop().await;
}

fn futures_stream(bytes: Vec<u8>) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(100).map(|c| Ok(c.to_vec())).collect();
    futures::stream::iter(chunks)
}

#[tokio::test]
async fn listing_streams_a_large_table_in_key_order() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let padding = "p".repeat(900);
    let writes = (0..300).map(|i| {
        let body = json!({"label": format!("{i}-{padding}")});
        let request = server
            .client
            .put(server.url(&format!("/Counter/{}", 1000 - i * 7)))
            .json(&body)
            .send();
        async move { assert_eq!(request.await.expect("PUT").status(), 204) }
    });
    futures::future::join_all(writes).await;

    let response = server
        .client
        .get(server.url("/Counter/"))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.headers()["content-type"], "application/json");
    assert!(
        response.headers().get("content-length").is_none(),
        "streamed, not buffered"
    );
    let records: Vec<Value> = response.json().await.expect("a JSON array");
    assert_eq!(records.len(), 300);
    let keys: Vec<i64> = records
        .iter()
        .map(|r| r["n"].as_i64().expect("n"))
        .collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "key order");
    assert_eq!(keys[0], 1000 - 299 * 7);

    let page: Vec<Value> = server.get_json("/Counter/?limit(100,150)").await;
    assert_eq!(page.len(), 50);
    assert_eq!(page[0], records[100]);
    assert_eq!(page[49], records[149]);
    let past_end: Vec<Value> = server.get_json("/Counter/?limit(290,400)").await;
    assert_eq!(past_end.len(), 10);
    let described: Value = server.get_json("/Counter").await;
    assert_eq!(described["recordCount"], 300);
    server.stop().await;
}
