//! A real browser: headless Chromium loads a page from another origin that subscribes with
//! `EventSource` and `WebSocket` and reports what it received.

use std::process::Stdio;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::Html;
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::common::{Fixture, TestServer};

const PAGE: &str = r#"<!doctype html>
<title>tablecast subscriber</title>
<script>
const api = "API";
const got = { sse: [], ws: [] };
let subscribed = false;
function report(stage, extra) {
  fetch("/report", { method: "POST", body: JSON.stringify({ stage, got, ...extra }) });
}
function check() {
  const changed = (k) => got[k].some((e) => e.value && e.value.name === "changed");
  if (!subscribed && got.sse.length && got.ws.length) {
    subscribed = true;
    report("subscribed");
  }
  if (changed("sse") && changed("ws")) report("done", { lastEventIds });
}
const lastEventIds = [];
const source = new EventSource(api + "/Item/browser");
source.onmessage = (e) => {
  got.sse.push(JSON.parse(e.data));
  lastEventIds.push(e.lastEventId);
  check();
};
source.onerror = () => report("sse-error");
const socket = new WebSocket(api.replace("http", "ws") + "/Item/browser");
socket.onmessage = (e) => {
  const frame = JSON.parse(e.data);
  if (frame.type !== "synced") got.ws.push(frame);
  check();
};
socket.onerror = () => report("ws-error");
</script>"#;

/// Serves `page` and forwards its reports.
pub async fn page_server(page: String) -> (String, mpsc::UnboundedReceiver<Value>) {
    page_server_at("http://127.0.0.1:0", page).await
}

/// [`page_server`] on the origin `origin` (`http://host:port`).
async fn page_server_at(origin: &str, page: String) -> (String, mpsc::UnboundedReceiver<Value>) {
    let (reports, received) = mpsc::unbounded_channel();
    let app = Router::new()
        .route("/", get(move || async move { Html(page) }))
        .route(
            "/report",
            post(
                |State(reports): State<mpsc::UnboundedSender<Value>>, body: String| async move {
                    let _ = reports.send(serde_json::from_str(&body).unwrap_or(Value::Null));
                },
            ),
        )
        .with_state(reports);
    let listener = TcpListener::bind(origin.trim_start_matches("http://"))
        .await
        .expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

/// Headless Chromium showing a page, with a profile of its own, until dropped.
pub struct Chromium {
    _process: tokio::process::Child,
    _profile: tempfile::TempDir,
}

impl Chromium {
    pub fn open(page: &str) -> Chromium {
        let profile = tempfile::TempDir::new().expect("profile dir");
        let process = tokio::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-background-networking",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(page)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromium runs (Debian package chromium)");
        Chromium {
            _process: process,
            _profile: profile,
        }
    }
}

pub async fn next_report(reports: &mut mpsc::UnboundedReceiver<Value>) -> Value {
    let report = tokio::time::timeout(Duration::from_secs(60), reports.recv())
        .await
        .expect("the page reports in time")
        .expect("report");
    assert!(
        !report["stage"]
            .as_str()
            .unwrap_or_default()
            .ends_with("error"),
        "{report}"
    );
    report
}

#[tokio::test]
async fn a_browser_subscribes_with_event_source_and_websocket() {
    let fixture = Fixture::new();
    let mut config = fixture.config();
    config.cors_origins = vec!["*".to_owned()];
    let server = TestServer::start(config).await;
    let put = |name: &'static str| {
        server
            .client
            .put(server.url("/Item/browser"))
            .json(&json!({ "name": name }))
            .send()
    };
    assert_eq!(put("initial").await.expect("PUT").status(), 204);
    let (page, mut reports) = page_server(PAGE.replace("API", &server.base)).await;
    let _browser = Chromium::open(&page);

    let subscribed = next_report(&mut reports).await;
    assert_eq!(subscribed["stage"], "subscribed");
    assert_eq!(put("changed").await.expect("PUT").status(), 204);
    let done = loop {
        let report = next_report(&mut reports).await;
        if report["stage"] == "done" {
            break report;
        }
    };
    for transport in ["sse", "ws"] {
        let got = done["got"][transport].as_array().expect("events");
        assert_eq!(
            got[0]["value"]["name"], "initial",
            "{transport}: current value first"
        );
        assert_eq!(
            got.last().unwrap()["value"]["name"],
            "changed",
            "{transport}"
        );
        assert_eq!(got.last().unwrap()["type"], "put");
    }
    // EventSource's last event id: none with the current value, then the position marker's,
    // then the change's own sequence number.
    let ids = done["lastEventIds"].as_array().expect("ids");
    assert_eq!(ids[0], "", "{ids:?}");
    let change = ids.last().and_then(Value::as_str).expect("an id");
    assert!(change.parse::<u64>().is_ok(), "{ids:?}");
    server.stop().await;
}

#[tokio::test]
async fn cross_origin_requests_are_allowed_only_from_configured_origins() {
    let fixture = Fixture::new();
    let closed = fixture.start().await;
    let plain = closed
        .client
        .get(closed.url("/Item/"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .expect("GET");
    assert!(plain.headers().get("access-control-allow-origin").is_none());
    closed.stop().await;

    let mut config = fixture.config();
    config.cors_origins = vec!["https://app.example.com".to_owned()];
    let open = TestServer::start(config).await;
    let preflight = open
        .client
        .request(reqwest::Method::OPTIONS, open.url("/Item/a"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "PUT")
        .header("access-control-request-headers", "content-type, if-match")
        .send()
        .await
        .expect("OPTIONS");
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let header = |name: &str| {
        preflight.headers()[name]
            .to_str()
            .expect("header")
            .to_ascii_lowercase()
    };
    assert_eq!(
        header("access-control-allow-origin"),
        "https://app.example.com"
    );
    assert!(header("access-control-allow-methods").contains("put"));
    assert!(header("access-control-allow-headers").contains("if-match"));
    let missing = open
        .client
        .get(open.url("/Item/nope"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .expect("GET");
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["access-control-allow-origin"],
        "https://app.example.com",
        "errors carry CORS headers too, so a page can read the problem"
    );
    assert!(
        missing.headers()["access-control-expose-headers"]
            .to_str()
            .expect("header")
            .contains("etag")
    );
    let elsewhere = open
        .client
        .get(open.url("/Item/"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("GET");
    assert!(
        elsewhere
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    open.stop().await;
}

/// A page on another port of the same host (the same site) that signs in with `/_session`, then
/// subscribes with the cookie, which is all `EventSource` can send.
const SIGNED_IN_PAGE: &str = r#"<!doctype html>
<title>signed-in subscriber</title>
<script>
const api = "API";
const got = { sse: [], ws: [] };
function report(stage, extra) {
  fetch("/report", { method: "POST", body: JSON.stringify({ stage, got, ...extra }) });
}
function check() {
  const has = (k, id) => got[k].some((e) => e.id === id);
  if (has("sse", "a2") && has("ws", "a2")) report("done");
}
async function main() {
  const anonymous = await fetch(api + "/Order/", { credentials: "include" });
  const signed = await fetch(api + "/_session", {
    method: "POST", credentials: "include",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user: "alice", password: "alice-pw" }),
  });
  if (!signed.ok) return report("sign-in-error", { status: signed.status });
  const source = new EventSource(api + "/Order/", { withCredentials: true });
  source.onmessage = (e) => { got.sse.push(JSON.parse(e.data)); check(); };
  source.onerror = () => report("sse-error");
  const socket = new WebSocket(api.replace("http", "ws") + "/Order/");
  socket.onmessage = (e) => {
    const frame = JSON.parse(e.data);
    if (frame.type === "synced") report("subscribed", { anonymous: anonymous.status });
    else got.ws.push(frame);
    check();
  };
  socket.onerror = () => report("ws-error");
}
main().catch((e) => report("page-error", { message: String(e) }));
</script>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_signs_in_and_subscribes_with_its_session_cookie() {
    // The page's origin must be known to the API when it starts: a free port is picked first.
    let page_url = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", listener.local_addr().expect("address"))
    };
    let file = crate::access::access_file(crate::access::customer_orders());
    let secured = crate::access::secured_with_origins(file, vec![page_url.clone()]).await;
    let server = &secured.server;
    for (user, id) in [("alice", "a1"), ("bob", "b1")] {
        crate::access::write(server, user, id, json!({"owner": user})).await;
    }
    let note = json!({"owner": "alice", "internalNote": "vip"});
    crate::access::write(server, "carol", "a1", note).await;
    let (page, mut reports) =
        page_server_at(&page_url, SIGNED_IN_PAGE.replace("API", &server.base)).await;
    let _browser = Chromium::open(&page);
    let subscribed = next_report(&mut reports).await;
    assert_eq!(subscribed["stage"], "subscribed", "{subscribed}");
    assert_eq!(
        subscribed["anonymous"], 401,
        "without the cookie, Order needs credentials"
    );
    for (user, id) in [("bob", "b2"), ("alice", "a2")] {
        crate::access::write(server, user, id, json!({"owner": user})).await;
    }
    let done = loop {
        let report = next_report(&mut reports).await;
        if report["stage"] == "done" {
            break report;
        }
    };
    for transport in ["sse", "ws"] {
        let got = done["got"][transport].as_array().expect("events");
        let ids: Vec<&str> = got.iter().filter_map(|e| e["id"].as_str()).collect();
        assert!(
            ids.contains(&"a1") && ids.contains(&"a2"),
            "{transport}: {ids:?}"
        );
        assert!(
            !ids.iter().any(|id| id.starts_with('b')),
            "{transport}: {ids:?}"
        );
        assert!(!done["got"].to_string().contains("vip"), "{done}");
    }
}
