//! Subscriptions that take a query: the records that match first, then the changes of records
//! that match, and a `leave` when one stops matching, over WebSocket and Server-Sent Events.

use serde_json::{Value, json};

use crate::common::{Fixture, TestServer, delete, expect_problem, put};
use crate::subscribe::{SseReader, ws_connect, ws_next};

async fn stock(server: &TestServer) {
    for (id, qty) in [("a", 1), ("b", 9), ("c", 7), ("d", 2)] {
        put(
            server,
            &format!("/Item/{id}"),
            json!({"name": id, "qty": qty}),
        )
        .await;
    }
}

/// (type, id) of an event.
fn what(frame: &Value) -> (String, String) {
    (
        frame["type"].as_str().unwrap_or_default().to_owned(),
        frame["id"].as_str().unwrap_or_default().to_owned(),
    )
}

fn pair(kind: &str, id: &str) -> (String, String) {
    (kind.to_owned(), id.to_owned())
}

#[tokio::test]
async fn a_websocket_subscription_with_a_query_keeps_a_live_result() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    stock(&server).await;
    let mut ws = ws_connect(&server, "/Item/?qty=gt=5").await;
    let mut current = Vec::new();
    loop {
        let frame = ws_next(&mut ws).await;
        if frame["type"] == "synced" {
            break;
        }
        current.push(what(&frame));
    }
    assert_eq!(current, [pair("put", "b"), pair("put", "c")]);

    put(&server, "/Item/e", json!({"name": "e", "qty": 1})).await; // never matches: not sent
    put(&server, "/Item/a", json!({"name": "a", "qty": 6})).await; // enters
    put(&server, "/Item/b", json!({"name": "b", "qty": 3})).await; // leaves
    assert_eq!(delete(&server, "/Item/d").await.status(), 204); // was never inside: not sent
    assert_eq!(delete(&server, "/Item/c").await.status(), 204); // inside, deleted
    put(&server, "/Item/b", json!({"name": "b", "qty": 4})).await; // outside, stays out: not sent
    put(&server, "/Item/f", json!({"name": "f", "qty": 50})).await;

    let entered = ws_next(&mut ws).await;
    assert_eq!(what(&entered), pair("put", "a"));
    assert_eq!(entered["value"]["qty"], 6);
    let left = ws_next(&mut ws).await;
    assert_eq!(what(&left), pair("leave", "b"), "{left}");
    assert_eq!(left["value"], Value::Null);
    assert!(
        left["version"].is_string(),
        "the version of the change: {left}"
    );
    assert_eq!(what(&ws_next(&mut ws).await), pair("delete", "c"));
    assert_eq!(what(&ws_next(&mut ws).await), pair("put", "f"));
    server.stop().await;
}

#[tokio::test]
async fn an_event_stream_with_a_query_resumes_with_a_resync_and_the_current_matches() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    stock(&server).await;
    let query = "/Item/?qty=gt=5&name!=z";
    let mut sse = SseReader::open(&server, query, None).await;
    let first = sse.next().await.data.expect("data");
    assert_eq!(what(&first), pair("put", "b"));
    assert_eq!(
        what(&sse.next().await.data.expect("data")),
        pair("put", "c")
    );
    let position = sse.next().await.id.expect("the position marker");
    drop(sse);

    // While the client is away: b leaves, d enters, e never matches.
    put(&server, "/Item/b", json!({"name": "b", "qty": 0})).await;
    put(&server, "/Item/d", json!({"name": "d", "qty": 8})).await;
    put(&server, "/Item/e", json!({"name": "z", "qty": 80})).await;
    let mut sse = SseReader::open(&server, query, Some(&position)).await;
    // Which records it held is not known to the server: it starts again from what matches.
    let resync = sse.next().await.data.expect("data");
    assert_eq!(resync, json!({"type": "resync"}));
    let current: Vec<(String, String)> = [sse.next().await, sse.next().await]
        .into_iter()
        .map(|event| what(&event.data.expect("data")))
        .collect();
    assert_eq!(current, [pair("put", "c"), pair("put", "d")]);
    sse.next().await.id.expect("the position marker");
    // And it carries on live: c, held since the resync, leaves.
    put(&server, "/Item/c", json!({"name": "c", "qty": 1})).await;
    assert_eq!(
        what(&sse.next().await.data.expect("data")),
        pair("leave", "c")
    );
    server.stop().await;
}

#[tokio::test]
async fn a_subscription_query_is_checked_before_the_stream_opens() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let sse = |query: &'static str| {
        server
            .client
            .get(server.url(&format!("/Item/?{query}")))
            .header("accept", "text/event-stream")
            .send()
    };
    let bad = expect_problem(sse("qty=gt=x").await.expect("GET"), 400, "bad-query").await;
    assert!(bad["detail"].as_str().unwrap().contains("qty"), "{bad}");
    let shaped = expect_problem(
        sse("qty=gt=1&sort(-qty)").await.expect("GET"),
        400,
        "bad-request",
    )
    .await;
    assert!(
        shaped["detail"]
            .as_str()
            .unwrap()
            .contains("conditions only"),
        "{shaped}"
    );
    server.stop().await;
}
