//! Acknowledged writes survive restarts and `kill -9`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Fixture, TestServer, client, delete, etag, post_json, put, version};

#[tokio::test]
async fn records_persist_across_a_restart() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    for i in 0..50 {
        put(
            &server,
            &format!("/Item/k{i:02}"),
            json!({"name": format!("n{i}")}),
        )
        .await;
    }
    assert_eq!(delete(&server, "/Item/k07").await.status(), 204);
    let counter: Value = post_json(&server, "/Counter/", json!({}))
        .await
        .json()
        .await
        .expect("JSON");
    let before: Value = server.get_json("/Item/").await;
    let stored = get(&server, "/Item/k01").await;
    server.stop().await;

    let server = fixture.start().await;
    let after: Value = server.get_json("/Item/").await;
    assert_eq!(after, before);
    assert_eq!(after.as_array().map(Vec::len), Some(49));
    let described: Value = server.get_json("/Item").await;
    assert_eq!(described["recordCount"], 49);
    let same = get(&server, "/Item/k01").await;
    assert_eq!(
        etag(&same),
        etag(&stored),
        "versions are stored, not recomputed"
    );
    // Versions keep increasing after a restart, and generated ids continue.
    let rewritten = put(&server, "/Item/k01", json!({"name":"again"})).await;
    assert!(rewritten > version(&stored));
    let next: Value = post_json(&server, "/Counter/", json!({}))
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(next["n"].as_i64(), counter["n"].as_i64().map(|n| n + 1));
    server.stop().await;
}

/// `GET path`.
async fn get(server: &TestServer, path: &str) -> reqwest::Response {
    server
        .client
        .get(server.url(path))
        .send()
        .await
        .expect("GET")
}

/// Several clients write records small and large (stored in pieces) while the process is killed
/// with SIGKILL; after a restart on the same data directory every acknowledged write is there,
/// byte for byte, and nothing is corrupt. `TABLECAST_SOAK_ROUNDS` kill cycles (3 by default;
/// `benches/soak.sh` runs 100), with the restart times reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_sigkill() {
    const CLIENTS: usize = 8;
    let rounds: usize = std::env::var("TABLECAST_SOAK_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let fixture = Fixture::new();
    let mut restarts = Vec::new();
    let mut total_acknowledged = 0;
    // id -> the body whose PUT was acknowledged last.
    let acknowledged: Arc<Mutex<BTreeMap<String, Value>>> = Arc::default();

    for round in 0..rounds {
        let mut process = fixture.spawn();
        let base = process.base.clone();
        let mut writers = Vec::new();
        let written: Arc<Mutex<usize>> = Arc::default();
        for client_id in 0..CLIENTS {
            let (base, acknowledged, written) =
                (base.clone(), acknowledged.clone(), written.clone());
            writers.push(tokio::spawn(async move {
                let http = client();
                for i in 0.. {
                    // Each client rewrites a small set of ids, so later rounds overwrite earlier ones.
                    let id = format!("c{client_id}-{}", i % 50);
                    // One write in seven is large enough to be stored in pieces.
                    let large = if i % 7 == 0 {
                        "y".repeat(30_000)
                    } else {
                        String::new()
                    };
                    let name = format!("round {round} write {i}{large}");
                    let body = json!({"name": name, "qty": i, "tags": ["x".repeat(i % 200)]});
                    match http
                        .put(format!("{base}/Item/{id}"))
                        .json(&body)
                        .send()
                        .await
                    {
                        Ok(response) if response.status() == 204 => {
                            acknowledged.lock().unwrap().insert(id, body);
                            *written.lock().unwrap() += 1;
                        }
                        Ok(response) => panic!("unexpected status {}", response.status()),
                        // The server is gone; this write may or may not have been committed.
                        Err(_) => return (i, id, body),
                    }
                }
                unreachable!()
            }));
        }
        // Let the load run, then kill mid-flight.
        tokio::time::sleep(Duration::from_millis(700)).await;
        process.child.kill().expect("SIGKILL");
        process.child.wait().expect("reaped");
        let mut writes = 0;
        let mut in_flight = BTreeMap::new();
        for writer in writers {
            let (count, id, body) = writer.await.expect("writer");
            writes += count;
            in_flight.insert(id, body);
        }
        assert!(writes > 0, "round {round}: the clients wrote nothing");

        total_acknowledged += *written.lock().unwrap();
        let started = std::time::Instant::now();
        let restarted = fixture.spawn();
        restarts.push(started.elapsed());
        let http = client();
        let mut expected = std::mem::take(&mut *acknowledged.lock().unwrap());
        for (id, body) in expected.iter_mut() {
            let response = http
                .get(restarted.url(&format!("/Item/{id}")))
                .send()
                .await
                .expect("GET");
            assert_eq!(
                response.status(),
                200,
                "round {round}: acknowledged {id} is missing"
            );
            let mut stored: Value = response.json().await.expect("intact JSON");
            stored.as_object_mut().expect("object").remove("id");
            // The last acknowledged write, or one that was committed while its answer was lost.
            if in_flight.get(id) == Some(&stored) {
                *body = stored;
            } else {
                assert_eq!(&stored, body, "round {round}: {id}");
            }
        }
        // Writes in flight at the kill may or may not be there, but every stored record is whole.
        let all: Vec<Value> = http
            .get(restarted.url("/Item/"))
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("intact listing");
        assert!(all.len() >= expected.len());
        assert!(
            all.iter()
                .all(|r| r["name"].is_string() && r["qty"].is_u64())
        );
        *acknowledged.lock().unwrap() = expected;
        drop(restarted);
    }
    restarts.sort();
    eprintln!(
        "soak: {rounds} SIGKILL cycles, {total_acknowledged} acknowledged writes, none lost; \
         restart to listening: median {:?}, max {:?}",
        restarts[restarts.len() / 2],
        restarts[restarts.len() - 1]
    );
}
