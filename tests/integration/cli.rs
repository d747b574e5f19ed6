//! The `tablecast` binary: start-up errors, environment configuration, clean exit on signals.

use std::process::Command;

use serde_json::json;

use crate::common::{Fixture, Process, binary, client, failed_start, tablecast_command};

#[test]
fn bad_schema_stops_start_up_with_file_and_pointer() {
    let fixture = Fixture::with_schemas(&[
        (
            "Good",
            r#"{"type":"object","properties":{"id":{"type":"string"}}}"#,
        ),
        (
            "Bad",
            r#"{"type":"object","x-table":{"primaryKey":"sku"},"properties":{"id":{"type":"string"}}}"#,
        ),
        (
            "Worse",
            r#"{"type":"object","properties":{"id":{"type":"string","minLength":"one"}}}"#,
        ),
    ]);
    let output = failed_start(&fixture, &[]);
    assert!(output.stdout.is_empty(), "nothing listens");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the schemas cannot be used, 2 problems:"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Bad.json#/properties: the primary key `sku`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Worse.json#/properties/id/minLength"),
        "{stderr}"
    );
}

#[test]
fn missing_schema_directory_is_reported() {
    let data = tempfile::TempDir::new().expect("temp dir");
    let output = tablecast_command(&["serve"], &data.path().join("nope"), data.path())
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("nope: cannot read the schema directory") && stderr.contains("--schemas"),
        "{stderr}"
    );
    assert!(!stderr.contains("bad schema file"), "{stderr}");
}

#[tokio::test]
async fn configured_by_environment_and_exits_cleanly_on_sigterm() {
    let fixture = Fixture::new();
    let mut command = Command::new(binary());
    command
        .arg("serve")
        .env("TABLECAST_SCHEMAS", fixture.schemas.path())
        .env("TABLECAST_DATA", fixture.data.path())
        .env("TABLECAST_HTTP", "127.0.0.1:0")
        .env("TABLECAST_MQTT", "off")
        .env("RUST_LOG", "warn");
    let mut process = Process::spawn_with(command);
    assert_eq!(process.mqtt, None, "TABLECAST_MQTT=off");
    let http = client();
    let health = http.get(process.url("/_health")).send().await.expect("GET");
    assert_eq!(health.status(), 200);
    let put = http
        .put(process.url("/Item/a"))
        .json(&json!({"name":"kept"}))
        .send()
        .await
        .expect("PUT");
    assert_eq!(put.status(), 204);

    let status = Command::new("kill")
        .args(["-TERM", &process.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = process.child.wait().expect("exits");
    assert!(exit.success(), "exit status {exit}");

    let restarted = fixture.spawn();
    let body = http
        .get(restarted.url("/Item/a"))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("body");
    assert_eq!(body, r#"{"id":"a","name":"kept"}"#);
}

#[test]
fn a_data_directory_in_use_is_refused_clearly() {
    let fixture = Fixture::new();
    let _first = fixture.spawn();
    let output = failed_start(&fixture, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("another process is using this data directory"),
        "{stderr}"
    );
}

#[test]
fn the_example_schemas_load() {
    let data = tempfile::TempDir::new().expect("temp dir");
    let schemas = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let process = Process::spawn(&schemas, data.path());
    assert!(process.addr.port() > 0);
}

#[test]
fn a_taken_mqtt_port_says_how_to_choose_another_or_turn_mqtt_off() {
    let fixture = Fixture::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("address").to_string();
    let output = failed_start(&fixture, &["--mqtt", &address]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {address} for MQTT"))
            && stderr.contains("--mqtt off"),
        "{stderr}"
    );
}
