//! Disk use stays bounded by the live data: records of any size `--max-body` allows, overwritten
//! and deleted many times, leave a data directory within a small multiple of what is live (the
//! records plus the change log), and read back whole after a restart.

use std::path::Path;

use serde_json::json;

use crate::common::{Fixture, Process, client, tablecast_command};

const BLOB_SCHEMA: &str = r#"{
  "type": "object",
  "x-table": { "primaryKey": "id" },
  "properties": { "id": { "type": "integer" }, "data": { "type": "string" }, "round": { "type": "integer" } },
  "required": ["id"]
}"#;

fn spawn(fixture: &Fixture) -> Process {
    Process::spawn_with(tablecast_command(
        &["serve", "--http", "127.0.0.1:0", "--change-log", "10"],
        fixture.schemas.path(),
        fixture.data.path(),
    ))
}

fn bytes_under(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("lists")
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => bytes_under(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

#[tokio::test]
async fn overwriting_and_deleting_large_records_keeps_disk_use_bounded() {
    let fixture = Fixture::with_schemas(&[("Blob", BLOB_SCHEMA)]);
    let server = spawn(&fixture);
    let http = client();
    // Record sizes on both sides of every threshold, up to `--max-body` (1 MiB).
    let sizes = [100, 5_000, 150_000, 1_000_000];
    let body = |size: usize, round: usize| json!({ "data": "x".repeat(size), "round": round });
    let rounds = 60;
    for round in 0..rounds {
        for (id, &size) in sizes.iter().enumerate() {
            let url = server.url(&format!("/Blob/{id}"));
            let response = http
                .put(&url)
                .json(&body(size, round))
                .send()
                .await
                .expect("PUT");
            assert!(response.status().is_success(), "{}", response.status());
        }
        if round % 10 == 4 {
            let response = http
                .delete(server.url("/Blob/3"))
                .send()
                .await
                .expect("DELETE");
            assert!(response.status().is_success(), "{}", response.status());
        }
    }
    // Live: about 1.2 MB of records and 10 changes of at most 1 MB each. Before large values
    // were stored in pieces, this left more than 250 MB behind.
    let used = bytes_under(fixture.data.path());
    assert!(
        used < 64_000_000,
        "{used} bytes on disk for about 12 MB live"
    );
    drop(server);

    let server = spawn(&fixture);
    for (id, &size) in sizes.iter().enumerate() {
        let record: serde_json::Value = http
            .get(server.url(&format!("/Blob/{id}")))
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("JSON");
        assert_eq!(record["round"], rounds - 1, "record {id}");
        assert_eq!(
            record["data"].as_str().map(str::len),
            Some(size),
            "record {id}"
        );
    }
}
