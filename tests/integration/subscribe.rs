//! WebSocket and Server-Sent Events subscriptions, driven by real clients (tokio-tungstenite and a
//! streaming reqwest response read as `EventSource` would).

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::common::{
    Fixture, TestServer, delete, eventually, expect_problem, put, put_counters, version,
};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a test waits for one expected delivery.
const WAIT: Duration = Duration::from_secs(20);

pub async fn ws_connect(server: &TestServer, path: &str) -> Ws {
    let url = format!("{}{path}", server.base.replacen("http", "ws", 1));
    tokio_tungstenite::connect_async(url)
        .await
        .expect("WebSocket upgrade")
        .0
}

/// The next JSON text frame (pings and pongs are skipped).
pub async fn ws_next(ws: &mut Ws) -> Value {
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("the stream is open")
            .expect("a frame");
        match frame {
            Message::Text(text) => return serde_json::from_str(&text).expect("JSON frame"),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Frames up to and including the next `synced`.
async fn ws_until_synced(ws: &mut Ws) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let frame = ws_next(ws).await;
        if frame["type"] == "synced" {
            return frames;
        }
        frames.push(frame);
    }
}

#[tokio::test]
async fn a_record_subscription_gets_the_current_value_then_every_change() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let v1 = format!(
        "{:x}",
        put(&server, "/Item/a", json!({"name": "first"})).await
    );
    let mut ws = ws_connect(&server, "/Item/a").await;
    let current = ws_until_synced(&mut ws).await;
    assert_eq!(
        current,
        [
            json!({"type": "put", "table": "Item", "id": "a", "version": v1,
                "value": {"id": "a", "name": "first"}})
        ]
    );

    let v2 = format!(
        "{:x}",
        put(&server, "/Item/a", json!({"name": "second"})).await
    );
    put(&server, "/Item/b", json!({"name": "another record"})).await;
    let patched = server
        .client
        .patch(server.url("/Item/a"))
        .json(&json!({"qty": 3}))
        .send()
        .await
        .expect("PATCH");
    let v3 = format!("{:x}", version(&patched));
    assert_eq!(delete(&server, "/Item/a").await.status(), 204);

    assert_eq!(
        ws_next(&mut ws).await,
        json!({"type": "put", "table": "Item", "id": "a", "version": v2,
               "value": {"id": "a", "name": "second"}})
    );
    // A patch arrives as the whole new record.
    assert_eq!(
        ws_next(&mut ws).await,
        json!({"type": "put", "table": "Item", "id": "a", "version": v3,
               "value": {"id": "a", "name": "second", "qty": 3}})
    );
    let delete = ws_next(&mut ws).await;
    assert_eq!(delete["type"], "delete");
    assert_eq!(delete["value"], Value::Null);
    ws.close(None).await.expect("close");
    server.stop().await;
}

#[tokio::test]
async fn a_table_subscription_gets_every_record_then_the_table_s_changes() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    for id in ["c", "a", "b"] {
        put(&server, &format!("/Item/{id}"), json!({"name": id})).await;
    }
    let mut ws = ws_connect(&server, "/Item/").await;
    let ids: Vec<Value> = ws_until_synced(&mut ws)
        .await
        .into_iter()
        .map(|frame| frame["id"].clone())
        .collect();
    assert_eq!(ids, ["a", "b", "c"], "current values in key order");

    put(&server, "/Counter/1", json!({"label": "other table"})).await;
    put(&server, "/Item/d", json!({"name": "d"})).await;
    let frame = ws_next(&mut ws).await;
    assert_eq!(
        (frame["type"].as_str(), frame["id"].as_str()),
        (Some("put"), Some("d"))
    );

    // A second subscriber on an integer-keyed table, by record.
    let mut counter = ws_connect(&server, "/Counter/1").await;
    let current = ws_until_synced(&mut counter).await;
    assert_eq!(current[0]["id"], 1);
    server.stop().await;
}

#[tokio::test]
async fn subscriptions_to_unknown_tables_or_bad_ids_are_refused_before_the_upgrade() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let url = |path: &str| format!("{}{path}", server.base.replacen("http", "ws", 1));
    for (path, status) in [("/Nope/1", 404), ("/Nope/", 404), ("/Counter/x", 400)] {
        match tokio_tungstenite::connect_async(url(path)).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), status, "{path}");
                assert_eq!(
                    response.headers()["content-type"],
                    "application/problem+json"
                );
            }
            other => panic!("{path}: {other:?}"),
        }
    }
    for (path, status, code) in [
        ("/Nope/1", 404, "unknown-table"),
        ("/Counter/x", 400, "invalid-id"),
    ] {
        let response = server
            .client
            .get(server.url(path))
            .header("accept", "text/event-stream")
            .send()
            .await
            .expect("GET");
        expect_problem(response, status, code).await;
    }
    let bad_resume = server
        .client
        .get(server.url("/Item/"))
        .header("accept", "text/event-stream")
        .header("last-event-id", "yesterday")
        .send()
        .await
        .expect("GET");
    expect_problem(bad_resume, 400, "bad-request").await;
    // A subscription's query is checked before the stream opens (see subscribe_query.rs).
    let shaped = server
        .client
        .get(server.url("/Item/?name=a&sort(name)"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("GET");
    expect_problem(shaped, 400, "bad-request").await;
    server.stop().await;
}

#[tokio::test]
async fn websocket_close_codes_say_why() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let mut ws = ws_connect(&server, "/Item/").await;
    ws_until_synced(&mut ws).await;
    ws.send(Message::Text("hello".into())).await.expect("send");
    let close = next_close(&mut ws).await;
    assert_eq!(close, Some(CloseCode::Policy));

    let mut ws = ws_connect(&server, "/Item/").await;
    ws_until_synced(&mut ws).await;
    let stopping = tokio::spawn(server.stop());
    assert_eq!(next_close(&mut ws).await, Some(CloseCode::Away));
    stopping
        .await
        .expect("the server stops with a subscriber connected");
}

async fn next_close(ws: &mut Ws) -> Option<CloseCode> {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("in time")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
            Some(Ok(_)) => {}
            Some(Err(error)) => panic!("{error}"),
            None => return None,
        }
    }
}

/// One Server-Sent Event as `EventSource` would see it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub data: Option<Value>,
}

/// Reads an event stream the way the HTML standard's parser does (the subset we send).
pub struct SseReader {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

impl SseReader {
    pub async fn open(server: &TestServer, path: &str, last_event_id: Option<&str>) -> SseReader {
        let mut request = server
            .client
            .get(server.url(path))
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        SseReader::read(request.send().await.expect("GET"))
    }

    /// Reads the event stream `response` opened.
    pub fn read(response: reqwest::Response) -> SseReader {
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        SseReader {
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        }
    }

    pub async fn next(&mut self) -> SseEvent {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent::default();
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(id) = line.strip_prefix("id: ") {
                        event.id = Some(id.to_owned());
                    } else if let Some(text) = line.strip_prefix("data: ") {
                        data.push(text);
                    }
                }
                if !data.is_empty() {
                    event.data = Some(serde_json::from_str(&data.join("\n")).expect("JSON data"));
                }
                if event.id.is_some() || event.data.is_some() {
                    return event; // comment-only blocks are heartbeats
                }
                continue;
            }
            let chunk = tokio::time::timeout(WAIT, self.body.next())
                .await
                .expect("an event in time")
                .expect("the stream is open")
                .expect("a chunk");
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }
}

#[tokio::test]
async fn server_sent_events_resume_from_last_event_id() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    put(&server, "/Item/a", json!({"name": "one"})).await;
    let mut sse = SseReader::open(&server, "/Item/a", None).await;
    let current = sse.next().await;
    assert_eq!(current.id, None, "current values carry no id");
    assert_eq!(current.data.expect("data")["value"]["name"], "one");
    let synced = sse.next().await;
    assert_eq!(synced.data, None, "the position marker has no data");
    let position = synced.id.expect("an id");

    put(&server, "/Item/a", json!({"name": "two"})).await;
    let change = sse.next().await;
    let seen = change
        .id
        .clone()
        .expect("changes carry the change sequence");
    assert!(seen.parse::<u64>().unwrap() > position.parse::<u64>().unwrap());
    assert_eq!(change.data.expect("data")["value"]["name"], "two");
    drop(sse);

    // Missed while disconnected: two changes to the record, one to another.
    put(&server, "/Item/a", json!({"name": "three"})).await;
    put(&server, "/Item/b", json!({"name": "elsewhere"})).await;
    delete(&server, "/Item/a").await;

    let mut resumed = SseReader::open(&server, "/Item/a", Some(&seen)).await;
    let replayed = resumed.next().await;
    assert_eq!(replayed.data.expect("data")["value"]["name"], "three");
    let deleted = resumed.next().await.data.expect("data");
    assert_eq!(deleted["type"], "delete");
    assert!(
        resumed.next().await.data.is_none(),
        "then the position marker"
    );
    put(&server, "/Item/a", json!({"name": "four"})).await;
    assert_eq!(
        resumed.next().await.data.expect("data")["value"]["name"],
        "four"
    );

    // A table stream resumes the same way.
    let mut table = SseReader::open(&server, "/Item/", Some(&seen)).await;
    let names: Vec<Value> = [table.next().await, table.next().await, table.next().await]
        .into_iter()
        .map(|e| e.data.expect("data")["id"].clone())
        .collect();
    assert_eq!(names, ["a", "b", "a"]);
    server.stop().await;
}

#[tokio::test]
async fn a_resume_older_than_the_change_log_gets_a_resync_and_current_values() {
    let fixture = Fixture::new();
    let mut config = fixture.config();
    config.change_log = 5;
    let server = TestServer::start(config).await;
    put(&server, "/Counter/1", json!({"label": "start"})).await;
    let mut sse = SseReader::open(&server, "/Counter/", None).await;
    sse.next().await;
    let position = sse.next().await.id.expect("position");
    drop(sse);
    for n in 0..20 {
        put(
            &server,
            &format!("/Counter/{}", n % 3 + 1),
            json!({"label": format!("v{n}")}),
        )
        .await;
    }
    let mut resumed = SseReader::open(&server, "/Counter/", Some(&position)).await;
    assert_eq!(resumed.next().await.data, Some(json!({"type": "resync"})));
    let mut labels = Vec::new();
    for _ in 0..3 {
        let event = resumed.next().await;
        assert_eq!(event.id, None);
        labels.push(event.data.expect("data")["value"]["label"].clone());
    }
    assert_eq!(labels, ["v18", "v19", "v17"]);
    assert!(resumed.next().await.id.is_some());
    // Garbage from the future (another server's ids) also resyncs rather than hanging.
    let mut future = SseReader::open(&server, "/Counter/", Some("999999999")).await;
    assert_eq!(future.next().await.data, Some(json!({"type": "resync"})));
    server.stop().await;
}

/// A WebSocket client whose socket buffers almost nothing, so that not reading stalls the
/// server's sends at once.
async fn ws_connect_small_buffer(server: &TestServer, path: &str) -> Ws {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("buffer size");
    let address = server
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    let stream = socket.connect(address).await.expect("connect");
    let url = format!("ws://{}{path}", server.base.trim_start_matches("http://"));
    tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
        .await
        .expect("upgrade")
        .0
}

#[tokio::test]
async fn an_sse_client_that_reads_nothing_is_dropped_and_frees_its_place() {
    use tokio::io::AsyncWriteExt;
    let fixture = Fixture::new();
    let mut config = fixture.config();
    config.subscriber_silence = Duration::from_millis(500);
    config.max_subscribers = 1;
    let server = TestServer::start(config).await;
    let address: std::net::SocketAddr = server
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("small buffer");
    let mut stalled = socket.connect(address).await.expect("connect");
    stalled
        .write_all(b"GET /Item/ HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .expect("write");
    let large = "x".repeat(200_000);
    for n in 0..20 {
        put(
            &server,
            "/Item/large",
            json!({ "name": format!("{n} {large}") }),
        )
        .await;
    }
    // Once the server gives up on the client that reads nothing, its place is free.
    let mut attempts = 0;
    loop {
        let response = server
            .client
            .get(server.url("/Item/"))
            .header("accept", "text/event-stream")
            .send()
            .await
            .expect("GET");
        if response.status() == 200 {
            break;
        }
        assert_eq!(response.status(), 503);
        attempts += 1;
        assert!(attempts < 200, "the silent SSE client keeps its place");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(stalled);
}

/// `config` with a server that waits for a stalled WebSocket peer for as long as a test stalls
/// it (on a loaded machine, longer than the default minute).
fn patient(mut config: tablecast::Config) -> tablecast::Config {
    config.subscriber_silence = Duration::from_secs(600);
    config
}

#[tokio::test]
async fn a_websocket_peer_that_reads_nothing_is_dropped_and_frees_its_place() {
    let fixture = Fixture::new();
    let mut config = fixture.config();
    config.subscriber_silence = Duration::from_millis(500);
    config.max_subscribers = 1;
    let server = TestServer::start(config).await;
    let mut stalled = ws_connect_small_buffer(&server, "/Item/").await;
    assert!(ws_until_synced(&mut stalled).await.is_empty());
    let large = "x".repeat(200_000);
    for n in 0..20 {
        put(
            &server,
            "/Item/large",
            json!({ "name": format!("{n} {large}") }),
        )
        .await;
    }
    // Its place comes free once the server gives up on it.
    let url = format!("{}/Item/", server.base.replacen("http", "ws", 1));
    let mut attempts = 0;
    let _next = loop {
        match tokio_tungstenite::connect_async(&url).await {
            Ok((next, _)) => break next,
            Err(_) => {
                attempts += 1;
                assert!(attempts < 200, "the silent peer keeps its place");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    // What the dropped peer still finds in its buffers ends without a resync.
    let ended = tokio::time::timeout(WAIT, async {
        while let Some(Ok(_)) = stalled.next().await {}
    });
    assert!(ended.await.is_ok(), "the connection was closed");
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_holds_no_more_than_the_bus_bytes() {
    let fixture = Fixture::new();
    let server = TestServer::start(patient(fixture.config())).await;
    let mut stalled = ws_connect_small_buffer(&server, "/Item/").await;
    assert!(ws_until_synced(&mut stalled).await.is_empty());
    // 120 changes of 700 KB: far fewer events than the bus keeps (4,096), but more bytes (64 MiB).
    let large = "x".repeat(700_000);
    for n in 0..120 {
        put(
            &server,
            "/Item/large",
            json!({ "name": format!("{n} {large}") }),
        )
        .await;
    }
    let mut frames = 0;
    loop {
        let frame = ws_next(&mut stalled).await;
        if frame["type"] == "resync" {
            break;
        }
        frames += 1;
        assert!(
            frames < 120,
            "every change was kept for a subscriber that did not read"
        );
    }
    let current = ws_until_synced(&mut stalled).await;
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["value"]["name"], format!("119 {large}"));
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_gets_a_resync_and_the_final_values() {
    const WRITES: usize = 100_000;
    const RECORDS: usize = 1_000;
    let fixture = Fixture::new();
    let server = TestServer::start(patient(fixture.config())).await;
    let mut stalled = ws_connect_small_buffer(&server, "/Counter/").await;
    assert!(ws_until_synced(&mut stalled).await.is_empty());
    // Another subscriber reads its record's changes all along (and so answers pings).
    let mut live = ws_connect(&server, "/Counter/7").await;
    ws_until_synced(&mut live).await;
    let padding = "x".repeat(200);
    // Concurrent writers do not order their writes to one record: the last round is written
    // by one client, in order, so each record's final value is known.
    let last_label = |id: usize| format!("final {id} {padding}");
    let final_seven = last_label(7);
    let live =
        tokio::spawn(
            async move { while ws_next(&mut live).await["value"]["label"] != final_seven {} },
        );

    // The stalled subscriber reads nothing while every write completes: writers never wait for it.
    let label_padding = padding.clone();
    put_counters(&server, WRITES, move |n| {
        (n % RECORDS + 1, format!("{n} {label_padding}"))
    })
    .await;
    let final_padding = padding.clone();
    put_counters(&server, RECORDS, move |n| {
        (n + 1, format!("final {} {final_padding}", n + 1))
    })
    .await;

    // The other subscriber kept up and has its record's final value.
    live.await.expect("live reader");

    // The stalled one reads again: buffered changes, then a resync and every current value.
    let mut frames = 0;
    loop {
        let frame = ws_next(&mut stalled).await;
        frames += 1;
        if frame["type"] == "resync" {
            break;
        }
        assert!(frames <= WRITES, "no resync after {frames} frames");
    }
    let current = ws_until_synced(&mut stalled).await;
    assert_eq!(current.len(), RECORDS);
    for frame in current {
        let id = usize::try_from(frame["id"].as_u64().expect("integer id")).unwrap();
        assert_eq!(frame["value"]["label"], last_label(id), "record {id}");
    }
    server.stop().await;
}

#[tokio::test]
async fn subscribers_beyond_the_limit_are_refused_until_one_leaves() {
    let fixture = Fixture::new();
    let mut config = fixture.config();
    config.max_subscribers = 2;
    let server = TestServer::start(config).await;
    let mut first = ws_connect(&server, "/Item/").await;
    ws_until_synced(&mut first).await;
    let mut second = SseReader::open(&server, "/Item/", None).await;
    second.next().await;

    let url = format!("{}/Item/", server.base.replacen("http", "ws", 1));
    match tokio_tungstenite::connect_async(url).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 503);
            assert_eq!(response.headers()["retry-after"], "1");
        }
        other => panic!("expected 503, got {other:?}"),
    }
    let refused = server
        .client
        .get(server.url("/Item/a"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("GET");
    expect_problem(refused, 503, "too-many-subscribers").await;
    // MQTT connections count too: CONNACK "server unavailable" (3.1.1 return code 3).
    let mqtt = crate::mqtt_raw::raw_connect(&server, "over the limit").await;
    assert_eq!(mqtt, [0x20, 2, 0, 3]);
    // Plain reads are not subscriptions.
    assert_eq!(
        server
            .client
            .get(server.url("/Item/"))
            .send()
            .await
            .expect("GET")
            .status(),
        200
    );

    first.close(None).await.expect("close");
    drop(first);
    let url = format!("{}/Item/", server.base.replacen("http", "ws", 1));
    eventually("no place freed up when a subscriber left", async || {
        tokio_tungstenite::connect_async(&url).await.is_ok()
    })
    .await;
    server.stop().await;
}
