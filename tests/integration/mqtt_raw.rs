//! MQTT as client libraries will not speak it: packets written by hand (early closes, garbage,
//! an old protocol level), and a client that pipelines its publishes.

use serde_json::Value;

use crate::common::{Fixture, TestServer, eventually};
use crate::mqtt::get;
use crate::mqtt_client::{Client311, MqttClient, WAIT};

/// MQTT 3.1.1 packets written by hand, for what client libraries will not send.
fn connect_packet(client_id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60];
    body.extend_from_slice(&u16::try_from(client_id.len()).unwrap().to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    frame(0x10, &body)
}

fn publish_packet(topic: &str, payload: &[u8], retain: bool) -> Vec<u8> {
    let mut body = u16::try_from(topic.len()).unwrap().to_be_bytes().to_vec();
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(payload);
    frame(0x30 | u8::from(retain), &body)
}

fn frame(header: u8, body: &[u8]) -> Vec<u8> {
    assert!(body.len() < 128, "one-byte remaining length");
    let mut packet = vec![header, u8::try_from(body.len()).unwrap()];
    packet.extend_from_slice(body);
    packet
}

async fn raw(server: &TestServer, bytes: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.mqtt)
        .await
        .expect("connect");
    stream.write_all(bytes).await.expect("write");
    stream.shutdown().await.expect("half-close");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
    answer
}

/// The server's answer to a bare MQTT 3.1.1 CONNECT.
pub async fn raw_connect(server: &TestServer, client_id: &str) -> Vec<u8> {
    raw(server, &connect_packet(client_id)).await
}

#[tokio::test]
async fn raw_clients_closing_early_or_sending_garbage() {
    let fixture = Fixture::new();
    let server = fixture.start().await;

    // A QoS 0 retained publish, then the connection closes without DISCONNECT: still written.
    let mut bytes = connect_packet("fire-and-forget");
    bytes.extend(publish_packet(
        "Item/f",
        br#"{"name":"sent and gone"}"#,
        true,
    ));
    let answer = raw(&server, &bytes).await;
    assert_eq!(answer[..4], [0x20, 2, 0, 0], "CONNACK accepted");
    eventually("the publish was not written", async || {
        get(&server, "/Item/f").await.0 == 200
    })
    .await;
    assert_eq!(
        get(&server, "/Item/f").await,
        (200, r#"{"id":"f","name":"sent and gone"}"#.to_owned())
    );

    // MQTT 3.1 (protocol level 3) is refused with return code 1.
    let v31 = frame(
        0x10,
        &[
            0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 60, 0, 1, b'x',
        ],
    );
    assert_eq!(raw(&server, &v31).await, [0x20, 2, 0, 1]);
    // Not MQTT at all, and a malformed packet after a good CONNECT: the connection is closed.
    assert!(raw(&server, b"GET / HTTP/1.1\r\n\r\n").await.is_empty());
    let mut bad = connect_packet("bad");
    bad.extend([0x82, 2, 0, 0]);
    assert_eq!(
        raw(&server, &bad).await,
        [0x20, 2, 0, 0],
        "only the CONNACK"
    );
    // The server serves on.
    let mut mqtt = Client311::connect(server.mqtt, "after").await;
    assert_eq!(
        mqtt.subscribe("Item/f").await,
        rumqttc::SubscribeReasonCode::Success(rumqttc::QoS::AtLeastOnce)
    );
    server.stop().await;
}

#[tokio::test]
async fn pipelined_writes_apply_and_are_acknowledged_in_order() {
    const WRITES: usize = 300;
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let mut mqtt = Client311::connect(server.mqtt, "pipeliner").await;
    // Publish without waiting for acknowledgements: the session applies them together.
    let client = mqtt.client.clone();
    let publishing = tokio::spawn(async move {
        for n in 0..WRITES {
            let payload = format!(r#"{{"label":"write {n}"}}"#);
            client
                .publish("Counter/1", rumqttc::QoS::AtLeastOnce, true, payload)
                .await
                .expect("publish");
        }
    });
    let mut acknowledged = Vec::new();
    while acknowledged.len() < WRITES {
        if let rumqttc::Packet::PubAck(ack) = mqtt.next().await {
            acknowledged.push(ack.pkid);
        }
    }
    publishing.await.expect("publisher");
    // rumqttc numbers publishes 1, 2, ... up to its in-flight limit (100), then again from 1.
    let expected: Vec<u16> = (0..WRITES)
        .map(|n| u16::try_from(n % 100 + 1).unwrap())
        .collect();
    assert_eq!(acknowledged, expected, "PUBACKs in publish order");
    let (status, body) = get(&server, "/Counter/1").await;
    assert_eq!(status, 200);
    let record: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        record["label"],
        format!("write {}", WRITES - 1),
        "the last publish is the last write"
    );
    server.stop().await;
}
