//! Connection limits: a slow or idle client is cut off, and connections over the limit get a 503.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{Fixture, TestServer, eventually, read_until_closed};

fn address(server: &TestServer) -> String {
    server.base.trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn slow_and_idle_connections_are_closed() {
    let fixture = Fixture::new();
    let mut config = fixture.config();
    config.header_timeout = Duration::from_millis(300);
    let server = TestServer::start(config).await;

    // A request head that never completes.
    let mut slow = TcpStream::connect(address(&server)).await.expect("connect");
    slow.write_all(b"GET /_health HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    read_until_closed(&mut slow, Duration::from_secs(10)).await;

    // A kept-alive connection that goes quiet after one request.
    let mut idle = TcpStream::connect(address(&server)).await.expect("connect");
    idle.write_all(b"GET /_health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let answered = read_until_closed(&mut idle, Duration::from_secs(10)).await;
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");

    // Others are served all along.
    assert_eq!(
        server
            .client
            .get(server.url("/_health"))
            .send()
            .await
            .expect("GET")
            .status(),
        200
    );
    server.stop().await;
}

#[tokio::test]
async fn shutdown_does_not_wait_forever_for_a_client_that_stopped_reading() {
    let fixture = Fixture::new();
    let mut config = fixture.config();
    config.drain_timeout = Duration::from_millis(300);
    let server = TestServer::start(config).await;
    let padding = "p".repeat(4000);
    for n in 0..1000 {
        let response = server
            .client
            .put(server.url(&format!("/Counter/{n}")))
            .json(&serde_json::json!({ "label": padding }))
            .send()
            .await
            .expect("PUT");
        assert_eq!(response.status(), 204);
    }
    // Ask for 4 MB and read none of it: the server's writes block once the socket buffers fill.
    let mut stalled = TcpStream::connect(address(&server)).await.expect("connect");
    stalled
        .write_all(b"GET /Counter/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped = tokio::time::timeout(Duration::from_secs(20), server.stop()).await;
    assert!(stopped.is_ok(), "shutdown waited on the stalled client");
    drop(stalled);
}

#[tokio::test]
async fn connections_over_the_limit_get_503() {
    let fixture = Fixture::new();
    let mut config = fixture.config();
    config.max_connections = 2;
    let server = TestServer::start(config).await;

    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(address(&server)).await.expect("connect");
        stream
            .write_all(b"GET /_health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.expect("answer");
        assert_eq!(&head, b"HTTP/1.1 200");
        held.push(stream);
    }
    let mut third = TcpStream::connect(address(&server)).await.expect("connect");
    let refused = read_until_closed(&mut third, Duration::from_secs(10)).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(
        refused.contains("application/problem+json") && refused.contains("too-many-connections"),
        "{refused}"
    );

    // Once a connection closes, a new one is served.
    drop(held.pop());
    eventually("a freed slot is not reused", async || {
        let health = crate::common::client().get(server.url("/_health"));
        health.send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    drop(held);
    server.stop().await;
}
