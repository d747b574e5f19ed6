//! A store that fails (here a disk that fills: a file-size limit on the server process) fails
//! the writes it cannot complete with a safe message on every transport, and the server serves
//! on. The cause is in the log, and nowhere else.

use std::process::Command;

use rumqttc::v5::mqttbytes::v5 as v5p;
use serde_json::json;
use tempfile::TempDir;

use crate::common::{Fixture, Process, binary, client, expect_problem};
use crate::mqtt_client::Client5;

const SAFE: &str = "the server's disk is full, so nothing was stored; the server log has the cause";

/// `tablecast serve` on `fixture`, whose files may not grow past `limit_kib`: a write beyond it
/// fails with EFBIG (SIGXFSZ, which would end the process, is ignored). Logs go to `log`.
fn spawn_with_file_limit(fixture: &Fixture, limit_kib: u32, log: &std::path::Path) -> Process {
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f {limit_kib}; exec \"$0\" \"$@\""
        ))
        .arg(binary())
        .args(["serve", "--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0"])
        .arg("--schemas")
        .arg(fixture.schemas.path())
        .arg("--data")
        .arg(fixture.data.path())
        .env("RUST_LOG", "warn")
        .stderr(std::fs::File::create(log).expect("log file"));
    Process::spawn_with(command)
}

#[tokio::test]
async fn a_full_disk_fails_writes_with_a_safe_message_over_mqtt_and_http() {
    let fixture = Fixture::new();
    let logs = TempDir::new().expect("temp dir");
    let log = logs.path().join("stderr");
    let server = spawn_with_file_limit(&fixture, 2048, &log);
    let mut mqtt = Client5::connect(server.mqtt.expect("MQTT"), "filler").await;
    let payload = json!({ "name": "x".repeat(2000) }).to_string();

    let mut acknowledged = 0;
    let refused = loop {
        assert!(acknowledged < 10_000, "2 MiB should fill long before this");
        let ack = mqtt
            .publish(&format!("Item/{acknowledged}"), payload.as_bytes(), true)
            .await;
        if ack.reason != v5p::PubAckReason::Success {
            break ack;
        }
        acknowledged += 1;
    };
    assert!(acknowledged > 0, "the first writes fit");
    assert_eq!(refused.reason, v5p::PubAckReason::QuotaExceeded);
    let said = refused.properties.and_then(|p| p.reason_string);
    assert_eq!(said.as_deref(), Some(SAFE), "nothing of the cause is sent");

    let http = client();
    let put = http
        .put(server.url("/Item/over-http"))
        .json(&json!({"name": "one more"}))
        .send()
        .await
        .expect("PUT");
    let problem = expect_problem(put, 507, "insufficient-storage").await;
    assert_eq!(problem["detail"], SAFE, "{problem}");

    // The server serves on, and its health says that the store no longer writes.
    let health = http.get(server.url("/_health")).send().await.expect("GET");
    assert_eq!(health.status(), 503);
    let health: serde_json::Value = health.json().await.expect("JSON");
    assert_eq!(health["status"], "failing");
    drop(server);
    let logged = std::fs::read_to_string(&log).expect("the log");
    assert!(
        logged.contains("File too large"),
        "the cause is logged:\n{logged}"
    );

    // With room again, every acknowledged write is there, and none of the refused ones.
    let again = fixture.spawn();
    let listed: Vec<serde_json::Value> = http
        .get(again.url("/Item/?select(id)"))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("a listing");
    let mut ids: Vec<usize> = listed
        .iter()
        .map(|id| {
            id.as_str()
                .and_then(|id| id.parse().ok())
                .expect("a numbered id")
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..acknowledged).collect::<Vec<_>>());
    let refused = http
        .get(again.url("/Item/over-http"))
        .send()
        .await
        .expect("GET");
    assert_eq!(refused.status(), 404);
    let ack = Client5::connect(again.mqtt.expect("MQTT"), "after")
        .await
        .publish("Item/after", br#"{"name":"room again"}"#, true)
        .await;
    assert_eq!(ack.reason, v5p::PubAckReason::Success);
}
