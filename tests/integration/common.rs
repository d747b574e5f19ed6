//! Test harness: servers on port 0 with temporary directories, in-process or as the real binary.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tablecast::clock::Clock;
use tablecast::config::Listener;
use tablecast::events::ChangeEvent;
use tablecast::{App, Config, Listeners};
use tempfile::TempDir;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// `Item`: string keys, strict properties.
pub const ITEM_SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "x-table": { "primaryKey": "id", "indexes": ["tags"] },
  "properties": {
    "id": { "type": "string" },
    "name": { "type": "string", "minLength": 1 },
    "qty": { "type": "integer", "minimum": 0 },
    "tags": { "type": "array", "items": { "type": "string" } },
    "dims": { "type": "object", "properties": { "w": { "type": "number" } } }
  },
  "required": ["id", "name"],
  "additionalProperties": false
}"#;

/// `Counter`: integer keys, timestamps.
pub const COUNTER_SCHEMA: &str = r#"{
  "type": "object",
  "x-table": { "primaryKey": "n", "timestamps": true },
  "properties": { "n": { "type": "integer" }, "label": { "type": "string" } }
}"#;

/// A schema directory and a data directory that outlive the servers started on them.
pub struct Fixture {
    pub schemas: TempDir,
    pub data: TempDir,
}

impl Fixture {
    /// The `Item` and `Counter` tables.
    pub fn new() -> Fixture {
        Fixture::with_schemas(&[("Item", ITEM_SCHEMA), ("Counter", COUNTER_SCHEMA)])
    }

    pub fn with_schemas(schemas: &[(&str, &str)]) -> Fixture {
        let fixture = Fixture {
            schemas: TempDir::new().expect("temp dir"),
            data: TempDir::new().expect("temp dir"),
        };
        for (name, text) in schemas {
            std::fs::write(fixture.schemas.path().join(format!("{name}.json")), text)
                .expect("write schema");
        }
        fixture
    }

    pub fn config(&self) -> Config {
        Config::new(self.schemas.path(), self.data.path())
    }

    /// Starts a server in this process.
    pub async fn start(&self) -> TestServer {
        TestServer::start(self.config()).await
    }

    /// Starts the real `tablecast` binary.
    pub fn spawn(&self) -> Process {
        Process::spawn(self.schemas.path(), self.data.path())
    }
}

/// A server running in this process.
pub struct TestServer {
    pub base: String,
    /// The MQTT listener's address.
    pub mqtt: SocketAddr,
    pub client: reqwest::Client,
    pub events: tablecast::bus::Receiver<ChangeEvent>,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    pub async fn start(config: Config) -> TestServer {
        TestServer::start_with_clock(config, Clock::system()).await
    }

    /// A server whose cache freshness follows `clock`.
    pub async fn start_with_clock(mut config: Config, clock: Clock) -> TestServer {
        config.http = "127.0.0.1:0".parse().expect("address");
        config.mqtt = Listener(Some("127.0.0.1:0".parse().expect("address")));
        let app = App::open_with_clock(config, clock).expect("server opens");
        let events = app.events().subscribe();
        let listeners = Listeners::bind(app.config()).await.expect("bind");
        let base = format!("http://{}", listeners.http.local_addr().expect("address"));
        let mqtt = listeners
            .mqtt
            .as_ref()
            .expect("MQTT listener")
            .local_addr()
            .expect("address");
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(app.serve(listeners, async {
            let _ = stop.await;
        }));
        TestServer {
            base,
            mqtt,
            client: client(),
            events,
            shutdown: Some(shutdown),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET path`, answered with a JSON body.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let response = self.client.get(self.url(path)).send().await.expect("GET");
        response.json().await.expect("a JSON body")
    }

    /// Stops the server and waits until the store is closed.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        (&mut self.task)
            .await
            .expect("server task")
            .expect("server result");
    }

    /// Every change event received so far.
    pub fn drain_events(&mut self) -> Vec<Arc<ChangeEvent>> {
        let mut events = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            events.push(event);
        }
        events
    }
}

/// `PUT path` with a JSON body and these request headers.
pub async fn put_with(
    server: &TestServer,
    path: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = server.client.put(server.url(path)).json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("PUT")
}

/// `PUT path` with a JSON body, which must succeed; returns the new version.
pub async fn put(server: &TestServer, path: &str, body: Value) -> u64 {
    let response = put_with(server, path, body, &[]).await;
    assert!(response.status().is_success(), "{}", response.status());
    version(&response)
}

/// `POST path` with a JSON body.
pub async fn post_json(server: &TestServer, path: &str, body: Value) -> reqwest::Response {
    let request = server.client.post(server.url(path)).json(&body);
    request.send().await.expect("POST")
}

/// `DELETE path`.
pub async fn delete(server: &TestServer, path: &str) -> reqwest::Response {
    let request = server.client.delete(server.url(path));
    request.send().await.expect("DELETE")
}

/// An answer's `ETag`, as a client sends it back in `If-Match` or `If-None-Match`.
pub fn etag(response: &reqwest::Response) -> String {
    response.headers()["etag"]
        .to_str()
        .expect("an ETag")
        .to_owned()
}

/// The record version an answer's `ETag` names (change events carry it in hex, as the tag does).
pub fn version(response: &reqwest::Response) -> u64 {
    let tag = etag(response);
    u64::from_str_radix(tag.trim_matches('"'), 16).expect("a hex version in quotes")
}

/// Polls `holds` every 10 ms for up to 10 s; panics with `failure` if it never holds.
pub async fn eventually(failure: &str, mut holds: impl AsyncFnMut() -> bool) {
    for _ in 0..1000 {
        if holds().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{failure}");
}

/// PUTs `count` writes from 32 concurrent clients: write `n` (0-based) is `(id, label)` to
/// `/Counter/<id>` with `{"label": label}`; every one must succeed.
pub async fn put_counters(
    server: &TestServer,
    count: usize,
    write: impl Fn(usize) -> (usize, String) + Send + Sync + 'static,
) {
    let write = Arc::new(write);
    let writers: Vec<_> = (0..32)
        .map(|writer| {
            let client = server.client.clone();
            let base = server.base.clone();
            let write = write.clone();
            tokio::spawn(async move {
                for n in (writer..count).step_by(32) {
                    let (id, label) = write(n);
                    let response = client
                        .put(format!("{base}/Counter/{id}"))
                        .json(&serde_json::json!({ "label": label }))
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
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// The `tablecast` binary, started on port 0.
pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
    pub base: String,
    /// The MQTT listener's address, if MQTT is on.
    pub mqtt: Option<SocketAddr>,
    /// The MQTT-over-TLS listener's address, if it is on.
    pub mqtts: Option<SocketAddr>,
}

impl Process {
    pub fn spawn(schemas: &Path, data: &Path) -> Process {
        Process::spawn_with(tablecast_command(
            &["serve", "--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0"],
            schemas,
            data,
        ))
    }

    pub fn spawn_with(mut command: Command) -> Process {
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .expect("tablecast starts");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let (mut mqtt, mut mqtts) = (None, None);
        let mut scheme = "http";
        let addr: SocketAddr = loop {
            let mut line = String::new();
            stdout
                .read_line(&mut line)
                .expect("read the listening line");
            let line = line.trim();
            if let Some(address) = line.strip_prefix("tablecast MQTT on mqtt://") {
                mqtt = Some(address.parse().expect("MQTT address"));
            } else if let Some(address) = line.strip_prefix("tablecast MQTT over TLS on mqtts://") {
                mqtts = Some(address.parse().expect("MQTT over TLS address"));
            } else if let Some(address) = line.strip_prefix("tablecast listening on http://") {
                break address.parse().expect("address");
            } else if let Some(address) = line.strip_prefix("tablecast listening on https://") {
                scheme = "https";
                break address.parse().expect("address");
            } else {
                panic!("unexpected line {line:?}");
            }
        };
        Process {
            child,
            addr,
            base: format!("{scheme}://{addr}"),
            mqtt,
            mqtts,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tablecast ARGS --schemas S --data D` with quiet logs.
pub fn tablecast_command(args: &[&str], schemas: &Path, data: &Path) -> Command {
    let mut command = Command::new(binary());
    command
        .args(args)
        .arg("--schemas")
        .arg(schemas)
        .arg("--data")
        .arg(data)
        .env("RUST_LOG", "warn");
    command
}

/// `tablecast serve --http 127.0.0.1:0 EXTRA...` on `fixture`, which must fail to start; what
/// it printed.
pub fn failed_start(fixture: &Fixture, extra: &[&str]) -> std::process::Output {
    let args: Vec<&str> = ["serve", "--http", "127.0.0.1:0"]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    let output = tablecast_command(&args, fixture.schemas.path(), fixture.data.path())
        .output()
        .expect("runs");
    assert!(!output.status.success(), "{output:?}");
    output
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tablecast"))
}

/// Asserts that `response` is a problem+json with this status and stable code; returns its body.
pub async fn expect_problem(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(
        response.status().as_u16(),
        status,
        "status of {}",
        response.url()
    );
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let body: Value = response.json().await.expect("problem body is JSON");
    assert_eq!(
        body["type"],
        format!("urn:tablecast:problem:{code}"),
        "{body}"
    );
    assert_eq!(body["status"], status, "{body}");
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    body
}

/// Reads until the server closes the connection; fails if it stays open for `patience`.
pub async fn read_until_closed(stream: &mut TcpStream, patience: Duration) -> String {
    let mut received = Vec::new();
    let read = tokio::time::timeout(patience, stream.read_to_end(&mut received)).await;
    assert!(
        read.is_ok(),
        "the connection is still open after {patience:?}"
    );
    String::from_utf8_lossy(&received).into_owned()
}

/// Runs an outside client program (a script of `tests/python` or `tests/js`) to its end and
/// asserts that it succeeded, showing what it printed if not.
pub async fn run_client(command: &mut tokio::process::Command, what: &str) {
    let run = command.kill_on_drop(true).output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap_or_else(|_| panic!("{what} ends in time"))
        .unwrap_or_else(|e| panic!("{what} runs: {e}"));
    assert!(
        output.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
