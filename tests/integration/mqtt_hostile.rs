//! What an attacker sends over MQTT, as raw packets: each is refused or cut off, and the server
//! serves everyone else on.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use rumqttc::v5::mqttbytes::v5 as v5p;

use crate::common::{Fixture, TestServer};
use crate::mqtt_client::{Client5, Client311};

/// An MQTT 3.1.1 CONNECT with keep-alive 0 (no deadline at all, by the protocol).
fn connect_without_keep_alive(client_id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 0];
    body.extend_from_slice(&u16::try_from(client_id.len()).unwrap().to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    frame(0x10, &body, body.len())
}

/// A fixed header announcing `declared` bytes, then `body` (which may be shorter).
fn frame(header: u8, body: &[u8], declared: usize) -> Vec<u8> {
    let mut packet = vec![header];
    let mut left = declared;
    loop {
        let byte = u8::try_from(left % 128).unwrap();
        left /= 128;
        packet.push(if left > 0 { byte | 0x80 } else { byte });
        if left == 0 {
            break;
        }
    }
    packet.extend_from_slice(body);
    packet
}

/// A QoS 0 PUBLISH to a plain topic announcing a payload of `declared` bytes, of which `sent`
/// follow.
fn partial_publish(declared: usize, sent: usize) -> Vec<u8> {
    let topic = b"plain/flood";
    let mut body = u16::try_from(topic.len()).unwrap().to_be_bytes().to_vec();
    body.extend_from_slice(topic);
    let header_len = body.len();
    body.extend(std::iter::repeat_n(b'x', sent));
    frame(0x30, &body, header_len + declared)
}

async fn connected(server: &TestServer, id: &str) -> TcpStream {
    let mut stream = TcpStream::connect(server.mqtt).await.expect("connect");
    stream
        .write_all(&connect_without_keep_alive(id))
        .await
        .expect("write");
    let mut connack = [0; 4];
    stream.read_exact(&mut connack).await.expect("CONNACK");
    assert_eq!(connack, [0x20, 2, 0, 0], "accepted");
    stream
}

/// Whether the server closes `stream` within `patience`.
async fn closed_within(stream: &mut TcpStream, patience: Duration) -> bool {
    let mut rest = Vec::new();
    tokio::time::timeout(patience, stream.read_to_end(&mut rest))
        .await
        .is_ok()
}

#[tokio::test]
async fn packets_that_stall_or_hold_too_much_memory_are_cut_off() {
    let fixture = Fixture::new();
    let mut config = fixture.config();
    config.body_timeout = Duration::from_millis(500);
    config.body_memory = 1 << 20;
    let server = TestServer::start(config).await;

    // Keep-alive 0 leaves no deadline between packets, but a packet begun must end in time.
    let mut stalled = connected(&server, "stalled").await;
    stalled
        .write_all(&partial_publish(100_000, 10))
        .await
        .expect("write");
    assert!(closed_within(&mut stalled, Duration::from_secs(10)).await);

    // A connection that sends no packet at all is fine: keep-alive 0 means none is due.
    let mut quiet = connected(&server, "quiet").await;
    assert!(!closed_within(&mut quiet, Duration::from_millis(1_000)).await);

    // Packets being received share --body-memory (1 MiB) with HTTP bodies: two that each sent
    // 400 KB of 900 KB leave no room for a third's 400 KB.
    let mut holders = Vec::new();
    for id in ["holder-1", "holder-2"] {
        let mut holder = connected(&server, id).await;
        holder
            .write_all(&partial_publish(900_000, 400_000))
            .await
            .expect("write");
        holders.push(holder);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = connected(&server, "third").await;
    let _ = third.write_all(&partial_publish(900_000, 400_000)).await;
    assert!(
        closed_within(&mut third, Duration::from_millis(400)).await,
        "refused at once"
    );
    // A partial CONNECT counts too.
    let mut connecting = TcpStream::connect(server.mqtt).await.expect("connect");
    let mut begun = connect_without_keep_alive("big-will");
    begun.truncate(8);
    let _ = connecting
        .write_all(&frame(0x10, &begun[2..], 900_000))
        .await;
    let _ = connecting.write_all(&vec![0; 400_000]).await;
    assert!(closed_within(&mut connecting, Duration::from_millis(400)).await);
    let http = server
        .client
        .get(server.url("/Item/x"))
        .send()
        .await
        .expect("GET");
    assert_eq!(http.status(), 404, "HTTP is served meanwhile");

    // Once the holders are cut off, there is room again.
    for mut holder in holders {
        assert!(closed_within(&mut holder, Duration::from_secs(10)).await);
    }
    let mut client = Client311::connect(server.mqtt, "after").await;
    client.subscribe("plain/#").await;
}

#[tokio::test]
async fn retained_messages_are_bounded_in_bytes_in_all_and_per_client() {
    let fixture = Fixture::new();
    let mut config = fixture.config();
    config.mqtt_retained_memory = 20_000;
    config.mqtt_retained_per_client = 12_000;
    let server = TestServer::start(config).await;
    let payload = vec![b'x'; 8_000];
    let refused = |ack: v5p::PubAck, flag: &str| {
        assert_eq!(ack.reason, v5p::PubAckReason::QuotaExceeded);
        let said = ack
            .properties
            .and_then(|p| p.reason_string)
            .unwrap_or_default();
        assert!(said.contains(flag), "{said}");
    };

    let mut a = Client5::connect(server.mqtt, "a").await;
    assert_eq!(
        a.publish("cfg/a1", &payload, true).await.reason,
        v5p::PubAckReason::Success
    );
    refused(
        a.publish("cfg/a2", &payload, true).await,
        "--mqtt-retained-per-client",
    );
    let mut b = Client5::connect(server.mqtt, "b").await;
    assert_eq!(
        b.publish("cfg/b1", &payload, true).await.reason,
        v5p::PubAckReason::Success
    );
    let mut d = Client5::connect(server.mqtt, "d").await;
    refused(
        d.publish("cfg/d1", &payload, true).await,
        "--mqtt-retained-memory",
    );
    // Not retained, a message is relayed whatever the retained store holds.
    assert_eq!(
        b.publish("cfg/b2", &payload, false).await.reason,
        v5p::PubAckReason::Success
    );

    // MQTT 3.1.1 has no negative PUBACK: the connection is closed, and nothing acknowledged.
    let mut old = connected(&server, "c").await;
    let topic = b"cfg/c1";
    let mut body = u16::try_from(topic.len()).unwrap().to_be_bytes().to_vec();
    body.extend_from_slice(topic);
    body.extend_from_slice(&7u16.to_be_bytes());
    body.extend_from_slice(&payload);
    old.write_all(&frame(0x33, &body, body.len()))
        .await
        .expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), old.read_to_end(&mut answer))
        .await
        .expect("closed")
        .expect("read");
    assert_eq!(answer, b"", "no PUBACK");

    // Clearing a retained message gives its bytes back.
    assert_eq!(
        a.publish("cfg/a1", b"", true).await.reason,
        v5p::PubAckReason::Success
    );
    assert_eq!(
        a.publish("cfg/a2", &payload, true).await.reason,
        v5p::PubAckReason::Success
    );
    let mut subscriber = Client5::connect(server.mqtt, "subscriber").await;
    subscriber.subscribe("cfg/#").await;
    let mut topics = Vec::new();
    for _ in 0..2 {
        topics.push(String::from_utf8(subscriber.next_publish().await.topic.to_vec()).unwrap());
    }
    topics.sort();
    assert_eq!(topics, ["cfg/a2", "cfg/b1"]);
}

#[tokio::test]
async fn dollar_topics_are_the_servers_and_u0000_is_not_a_topic() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let mut watcher = Client5::connect(server.mqtt, "watcher").await;
    watcher.subscribe("$tablecast/#").await;
    // The very topic forged below (the broker's own statistics are under other names).
    watcher.subscribe("$SYS/broker/clients").await;
    watcher.subscribe("plain/#").await;

    let mut forger = Client5::connect(server.mqtt, "forger").await;
    for topic in ["$tablecast/resync", "$SYS/broker/clients", "$anything"] {
        for retain in [false, true] {
            let ack = forger.publish(topic, b"{}", retain).await;
            assert_eq!(ack.reason, v5p::PubAckReason::TopicNameInvalid, "{topic}");
            let said = ack
                .properties
                .and_then(|p| p.reason_string)
                .unwrap_or_default();
            assert!(said.contains("the server's"), "{said}");
        }
    }
    forger.publish("plain/after", b"real", false).await;
    let first = watcher.next_publish().await;
    assert_eq!(
        &first.topic[..],
        b"plain/after",
        "nothing forged was relayed first"
    );

    // A topic with U+0000 is malformed: the connection is closed.
    let mut stream = connected(&server, "nul").await;
    let topic = b"plain/a\0b";
    let mut body = u16::try_from(topic.len()).unwrap().to_be_bytes().to_vec();
    body.extend_from_slice(topic);
    body.extend_from_slice(b"payload");
    stream
        .write_all(&frame(0x30, &body, body.len()))
        .await
        .expect("write");
    assert!(closed_within(&mut stream, Duration::from_secs(10)).await);

    // A packet only servers send is a protocol error, answered by closing the connection.
    for packet in [[0x20, 2, 0, 0], [0xb0, 2, 0, 1]] {
        let mut stream = connected(&server, "confused").await;
        stream.write_all(&packet).await.expect("write");
        assert!(closed_within(&mut stream, Duration::from_secs(10)).await);
    }
    forger.publish("plain/still", b"served", false).await;
    assert_eq!(&watcher.next_publish().await.topic[..], b"plain/still");
}
