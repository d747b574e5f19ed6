//! MQTT over WebSocket at `/mqtt`: MQTT.js in Node and in headless Chromium speak the same
//! sessions as on the MQTT port; upgrades that are not MQTT's, or from pages of other sites,
//! are refused with a problem.

use std::path::PathBuf;

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::browser::{Chromium, next_report, page_server};
use crate::common::{Fixture, TestServer, put, run_client};
use crate::mqtt::get;
use crate::mqtt_client::Client311;

/// The JavaScript clients' directory, with MQTT.js installed.
fn js_clients() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    assert!(
        dir.join("node_modules/mqtt").exists(),
        "MQTT.js is not installed: run `npm ci --prefix tests/js`"
    );
    dir
}

fn ws_url(server: &TestServer) -> String {
    format!("{}/mqtt", server.base.replace("http://", "ws://"))
}

#[tokio::test]
async fn mqtt_js_speaks_over_websocket_with_sessions_tables_and_qos2() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    put(&server, "/Item/seeded", json!({"name": "from rest"})).await;
    let mut listener = Client311::connect(server.mqtt, "tcp-listener").await;
    listener.subscribe("js/#").await;
    let script = js_clients().join("mqtt_ws.mjs");
    let mut command = tokio::process::Command::new("node");
    command.arg(&script).arg(ws_url(&server));
    run_client(&mut command, "MQTT.js (tests/js/mqtt_ws.mjs)").await;
    assert_eq!(
        get(&server, "/Item/fromjs").await,
        (200, r#"{"id":"fromjs","name":"from MQTT.js"}"#.to_owned())
    );
    assert_eq!(
        get(&server, "/Item/bad").await.0,
        404,
        "the refused write wrote nothing"
    );
    // A client on the MQTT port heard what was published over WebSocket.
    assert_eq!(listener.next_publish().await.topic, "js/news");
    server.stop().await;
}

const PAGE: &str = r#"<!doctype html>
<title>MQTT over WebSocket</title>
<script>MQTT_JS</script>
<script>
const report = (stage, extra) =>
  fetch("/report", { method: "POST", body: JSON.stringify({ stage, ...extra }) });
const client = mqtt.connect("WS_URL", { protocolVersion: 5, clientId: "browser", reconnectPeriod: 0 });
client.on("error", (e) => report("mqtt-error", { message: String(e) }));
client.on("connect", async () => {
  const got = [];
  client.on("message", (topic, payload) => {
    got.push({ topic, payload: payload.toString() });
    if (got.length === 2) report("done", { got });
  });
  await client.subscribeAsync(["Item/browser", "page/#"], { qos: 1 });
  await client.publishAsync("Item/frombrowser", JSON.stringify({ name: "from a page" }), { qos: 1, retain: true });
  await client.publishAsync("page/hello", "hi", { qos: 1 });
});
</script>"#;

#[tokio::test]
async fn a_browser_page_uses_mqtt_over_websocket() {
    let fixture = Fixture::new();
    let mut config = fixture.config();
    config.cors_origins = vec!["*".to_owned()];
    let server = TestServer::start(config).await;
    put(&server, "/Item/browser", json!({"name": "current"})).await;
    let bundle = std::fs::read_to_string(js_clients().join("node_modules/mqtt/dist/mqtt.min.js"))
        .expect("MQTT.js's browser bundle");
    let page = PAGE
        .replace("WS_URL", &ws_url(&server))
        .replace("MQTT_JS", &bundle.replace("</script", "<\\/script"));
    let (page, mut reports) = page_server(page).await;
    let _browser = Chromium::open(&page);
    let done = next_report(&mut reports).await;
    assert_eq!(done["stage"], "done", "{done}");
    let mut got: Vec<Value> = done["got"].as_array().expect("messages").clone();
    got.sort_by_key(|m| m["topic"].as_str().map(str::to_owned));
    assert_eq!(got[0]["topic"], "Item/browser");
    assert_eq!(
        serde_json::from_str::<Value>(got[0]["payload"].as_str().unwrap()).unwrap()["name"],
        "current"
    );
    assert_eq!(got[1], json!({"topic": "page/hello", "payload": "hi"}));
    assert_eq!(
        get(&server, "/Item/frombrowser").await.1,
        r#"{"id":"frombrowser","name":"from a page"}"#
    );
    server.stop().await;
}

/// Asks for a WebSocket at `/mqtt` with these headers; returns the HTTP status and body of a
/// refusal.
async fn refused_upgrade(server: &TestServer, headers: &[(&'static str, &str)]) -> (u16, Value) {
    let mut request = ws_url(server).into_client_request().expect("request");
    for (name, value) in headers {
        request
            .headers_mut()
            .insert(*name, HeaderValue::from_str(value).unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            let content_type = response.headers()["content-type"].to_str().unwrap();
            assert_eq!(content_type, "application/problem+json");
            (
                response.status().as_u16(),
                serde_json::from_slice(&body).expect("a problem"),
            )
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn upgrades_that_are_not_mqtt_or_come_from_other_sites_are_refused() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let (status, problem) = refused_upgrade(&server, &[]).await;
    assert_eq!(status, 400);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("subprotocol `mqtt`"),
        "{problem}"
    );
    let (status, problem) = refused_upgrade(
        &server,
        &[
            ("sec-websocket-protocol", "mqtt"),
            ("origin", "https://evil.example"),
        ],
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("--cors-origins"),
        "{problem}"
    );
    let plain = server
        .client
        .get(server.url("/mqtt"))
        .send()
        .await
        .expect("GET");
    assert_eq!(plain.status(), 400, "a GET that is no upgrade");
    server.stop().await;
}
