//! MQTT as a broker any client trusts: plain topics of any name at every QoS, and persistent
//! sessions that keep subscriptions and messages while the client is away, across restarts and
//! a `kill -9`, with unacknowledged deliveries resent with DUP.

use std::time::Duration;

use rumqttc::v5::mqttbytes::v5 as v5p;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{Fixture, Process, TestServer, put, run_client, tablecast_command};
use crate::mqtt::get;
use crate::mqtt_client::{Client5, Client311, MqttClient, WAIT};

type Qos5 = rumqttc::v5::mqttbytes::QoS;

/// A 3.1.1 client asking for a persistent session.
async fn persistent_311(server: std::net::SocketAddr, id: &str) -> Client311 {
    Client311::connect_with(server, id, |options| {
        options.set_clean_session(false);
    })
    .await
}

async fn subscribe_311(client: &mut Client311, filter: &str, qos: rumqttc::QoS) {
    client
        .client
        .subscribe(filter, qos)
        .await
        .expect("subscribe");
    let granted = client
        .next_where(|packet| match packet {
            rumqttc::Packet::SubAck(ack) => Some(ack.return_codes[0]),
            _ => None,
        })
        .await;
    assert_eq!(granted, rumqttc::SubscribeReasonCode::Success(qos));
}

/// Publishes at QoS 1 from a short-lived clean client, and waits for the acknowledgement.
async fn publish_from(server: std::net::SocketAddr, topic: &str, payloads: &[&str]) {
    let mut publisher = Client311::connect(server, "publisher").await;
    for payload in payloads {
        publisher.publish(topic, payload.as_bytes(), false).await;
    }
    publisher.leave().await;
}

/// Ends a client's connection as a network failure would: no DISCONNECT.
fn vanish(client: Client311) {
    client.task.abort();
}

#[tokio::test]
async fn plain_topics_of_any_name_relay_at_every_qos() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let mut listener = Client5::connect(server.mqtt, "listener").await;
    for (filter, qos) in [
        ("TopicA", Qos5::ExactlyOnce),
        ("Sensors/#", Qos5::AtLeastOnce),
    ] {
        listener
            .client
            .subscribe(filter, qos)
            .await
            .expect("subscribe");
        let ack = listener
            .next_where(|packet| match packet {
                v5p::Packet::SubAck(ack) => Some(ack),
                _ => None,
            })
            .await;
        assert_eq!(ack.return_codes, [v5p::SubscribeReasonCode::Success(qos)]);
    }
    let publisher = Client5::connect(server.mqtt, "publisher").await;
    for qos in [Qos5::AtMostOnce, Qos5::AtLeastOnce, Qos5::ExactlyOnce] {
        let payload = format!("at {qos:?}");
        publisher
            .client
            .publish("TopicA", qos, false, payload.clone())
            .await
            .expect("publish");
        let heard = listener.next_publish().await;
        assert_eq!(
            (&heard.topic[..], &heard.payload[..], heard.qos),
            (&b"TopicA"[..], payload.as_bytes(), qos),
            "delivered at the lower of the publish's and the subscription's QoS"
        );
    }
    publisher
        .client
        .publish("Sensors/temp", Qos5::ExactlyOnce, false, "21.5")
        .await
        .expect("publish");
    let heard = listener.next_publish().await;
    assert_eq!(
        (&heard.topic[..], heard.qos),
        (&b"Sensors/temp"[..], Qos5::AtLeastOnce)
    );

    // A first level that names no table, upper-case or not, is a plain topic with retained
    // messages; the tables are untouched.
    let mut writer = Client311::connect(server.mqtt, "writer").await;
    writer.publish("Nope/1", b"{}", true).await;
    let mut late = Client311::connect(server.mqtt, "late").await;
    late.subscribe("Nope/+").await;
    let retained = late.next_publish().await;
    assert_eq!((retained.topic.as_str(), retained.retain), ("Nope/1", true));
    assert_eq!(get(&server, "/Nope/1").await.0, 404);
    server.stop().await;
}

#[tokio::test]
async fn a_persistent_session_keeps_subscriptions_and_messages_while_away() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    put(&server, "/Item/old", json!({"name": "before"})).await;
    let mut device = persistent_311(server.mqtt, "device").await;
    assert!(!device.session_present, "a new session");
    subscribe_311(&mut device, "cmd/#", rumqttc::QoS::AtLeastOnce).await;
    subscribe_311(&mut device, "Item/+", rumqttc::QoS::AtLeastOnce).await;
    assert_eq!(device.next_publish().await.topic, "Item/old");
    device.leave().await;

    // While it is away: messages on its plain topics, and changes to its table.
    publish_from(server.mqtt, "cmd/lamp", &["on", "off", "on again"]).await;
    put(&server, "/Item/new", json!({"name": "while away"})).await;

    let mut device = persistent_311(server.mqtt, "device").await;
    assert!(device.session_present, "the session was kept");
    let mut heard = Vec::new();
    for _ in 0..4 {
        let publish = device.next_publish().await;
        heard.push((
            publish.topic,
            String::from_utf8_lossy(&publish.payload).into_owned(),
        ));
    }
    let (table, plain): (Vec<_>, Vec<_>) =
        heard.into_iter().partition(|(t, _)| t.starts_with("Item/"));
    assert_eq!(
        plain,
        [
            ("cmd/lamp".to_owned(), "on".to_owned()),
            ("cmd/lamp".to_owned(), "off".to_owned()),
            ("cmd/lamp".to_owned(), "on again".to_owned())
        ],
        "in order"
    );
    assert_eq!(
        table.len(),
        1,
        "only what changed while it was away: {table:?}"
    );
    assert_eq!(table[0].0, "Item/new");

    // The subscriptions came back with the session: new messages arrive without subscribing.
    publish_from(server.mqtt, "cmd/fan", &["spin"]).await;
    assert_eq!(&device.next_publish().await.payload[..], b"spin");
    vanish(device);

    // A clean session ends what was kept.
    let clean = Client311::connect(server.mqtt, "device").await;
    assert!(!clean.session_present);
    clean.task.abort();
    let device = persistent_311(server.mqtt, "device").await;
    assert!(!device.session_present, "a clean session discarded it");
    server.stop().await;
}

#[tokio::test]
async fn a_persistent_session_survives_a_restart_and_a_kill() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let mut device = persistent_311(server.mqtt, "sensor-7").await;
    subscribe_311(&mut device, "alerts/#", rumqttc::QoS::ExactlyOnce).await;
    subscribe_311(&mut device, "Item/+", rumqttc::QoS::AtLeastOnce).await;
    vanish(device);
    publish_from(server.mqtt, "alerts/fire", &["drill"]).await;
    put(&server, "/Item/while-away", json!({"name": "changed"})).await;
    server.stop().await;

    // After a clean restart: the kept message, and the table's change from the change log.
    let server = fixture.start().await;
    let mut device = persistent_311(server.mqtt, "sensor-7").await;
    assert!(device.session_present);
    let mut heard = [device.next_publish().await, device.next_publish().await];
    heard.sort_by(|a, b| a.topic.cmp(&b.topic));
    let (table, kept) = (&heard[0], &heard[1]);
    assert_eq!(
        (kept.topic.as_str(), &kept.payload[..], kept.qos),
        ("alerts/fire", &b"drill"[..], rumqttc::QoS::AtLeastOnce),
        "at the publish's QoS, below the subscription's"
    );
    assert_eq!(
        (table.topic.as_str(), table.retain),
        ("Item/while-away", false),
        "a change, not a current value"
    );
    device.leave().await;
    server.stop().await;

    // After a `kill -9` of the real binary, with messages kept while the client was away.
    let process = Process::spawn_with(tablecast_command(
        &["serve", "--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0"],
        fixture.schemas.path(),
        fixture.data.path(),
    ));
    let mqtt = process.mqtt.expect("MQTT");
    // Acknowledged to the publisher once it is on disk for the absent client.
    publish_from(mqtt, "alerts/smoke", &["kitchen"]).await;
    drop(process); // SIGKILL
    let process = Process::spawn_with(tablecast_command(
        &["serve", "--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0"],
        fixture.schemas.path(),
        fixture.data.path(),
    ));
    let mut device = persistent_311(process.mqtt.expect("MQTT"), "sensor-7").await;
    assert!(device.session_present);
    let kept = device.next_publish().await;
    assert_eq!(
        (kept.topic.as_str(), &kept.payload[..]),
        ("alerts/smoke", &b"kitchen"[..])
    );
}

#[tokio::test]
async fn unacknowledged_deliveries_are_resent_with_dup_on_reconnect() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let manual = |options: &mut rumqttc::MqttOptions| {
        options.set_clean_session(false);
        options.set_manual_acks(true);
    };
    let mut device = Client311::connect_with(server.mqtt, "forgetful", manual).await;
    subscribe_311(&mut device, "jobs/+", rumqttc::QoS::AtLeastOnce).await;
    publish_from(server.mqtt, "jobs/1", &["build"]).await;
    let first = device.next_publish().await;
    assert!(!first.dup);
    // Received, never acknowledged: the connection drops.
    vanish(device);

    let mut device = Client311::connect_with(server.mqtt, "forgetful", manual).await;
    assert!(device.session_present);
    let again = device.next_publish().await;
    assert_eq!(
        (&again.payload[..], again.pkid, again.dup),
        (&b"build"[..], first.pkid, true),
        "the same delivery, marked as a duplicate"
    );
    device.client.ack(&again).await.expect("ack");
    device.leave().await;

    // Acknowledged: not sent a third time.
    let mut device = Client311::connect_with(server.mqtt, "forgetful", manual).await;
    publish_from(server.mqtt, "jobs/2", &["test"]).await;
    let test = device.next_publish().await;
    assert_eq!(&test.payload[..], b"test");
    device.client.ack(&test).await.expect("ack");
    device.leave().await;

    // A message kept while the client was away, sent on its return and not acknowledged, is
    // sent again under the same packet id.
    publish_from(server.mqtt, "jobs/3", &["deploy"]).await;
    let mut device = Client311::connect_with(server.mqtt, "forgetful", manual).await;
    let first = device.next_publish().await;
    assert_eq!((&first.payload[..], first.dup), (&b"deploy"[..], false));
    vanish(device);
    let mut device = Client311::connect_with(server.mqtt, "forgetful", manual).await;
    let again = device.next_publish().await;
    assert_eq!(
        (&again.payload[..], again.pkid, again.dup),
        (&b"deploy"[..], first.pkid, true)
    );
    server.stop().await;
}

#[tokio::test]
async fn an_absent_clients_queue_is_bounded_and_keeps_the_newest() {
    let fixture = Fixture::new();
    let mut config = fixture.config();
    config.mqtt_max_queued = 3;
    let server = TestServer::start(config).await;
    let mut device = persistent_311(server.mqtt, "slow").await;
    subscribe_311(&mut device, "news", rumqttc::QoS::AtLeastOnce).await;
    vanish(device);
    publish_from(server.mqtt, "news", &["1", "2", "3", "4", "5"]).await;
    let mut device = persistent_311(server.mqtt, "slow").await;
    for expected in ["3", "4", "5"] {
        assert_eq!(
            &device.next_publish().await.payload[..],
            expected.as_bytes()
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn v5_sessions_expire_as_asked_and_may_be_taken_over() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let expiring = |seconds: u32| {
        move |options: &mut rumqttc::v5::MqttOptions| {
            options.set_clean_start(false);
            options.set_session_expiry_interval(Some(seconds));
        }
    };
    let short = Client5::connect_with(server.mqtt, "brief", expiring(1)).await;
    assert!(!short.connack.session_present);
    short.task.abort();
    let long = Client5::connect_with(server.mqtt, "lasting", expiring(3600)).await;
    assert!(!long.connack.session_present);
    let mut long = long;
    long.client
        .subscribe("room/+", Qos5::AtLeastOnce)
        .await
        .expect("subscribe");
    long.next_where(|packet| matches!(packet, v5p::Packet::SubAck(_)).then_some(()))
        .await;
    // Taken over by a second connection with the same id, while the first is connected.
    let mut taker = Client5::connect_with(server.mqtt, "lasting", expiring(3600)).await;
    assert!(taker.connack.session_present);
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let again = Client5::connect_with(server.mqtt, "brief", expiring(1)).await;
    assert!(!again.connack.session_present, "expired after 1 s");
    publish_from(server.mqtt, "room/1", &["hello"]).await;
    assert_eq!(&taker.next_publish().await.payload[..], b"hello");
    server.stop().await;
}

/// An MQTT 3.1.1 CONNECT asking for a persistent session, written by hand.
fn persistent_connect(client_id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x00, 0, 60];
    body.extend_from_slice(&u16::try_from(client_id.len()).unwrap().to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    frame(0x10, &body)
}

/// A QoS 2 PUBLISH, with DUP if `dup`.
fn publish_qos2(topic: &str, pkid: u16, payload: &[u8], dup: bool) -> Vec<u8> {
    let mut body = u16::try_from(topic.len()).unwrap().to_be_bytes().to_vec();
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&pkid.to_be_bytes());
    body.extend_from_slice(payload);
    frame(0x34 | if dup { 0x08 } else { 0 }, &body)
}

fn frame(header: u8, body: &[u8]) -> Vec<u8> {
    let mut packet = vec![header, u8::try_from(body.len()).unwrap()];
    packet.extend_from_slice(body);
    packet
}

/// Reads exactly `expected.len()` bytes and compares them.
async fn expect_bytes(stream: &mut TcpStream, expected: &[u8], what: &str) {
    let mut got = vec![0; expected.len()];
    tokio::time::timeout(WAIT, stream.read_exact(&mut got))
        .await
        .unwrap_or_else(|_| panic!("{what} in time"))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(got, expected, "{what}");
}

#[tokio::test]
async fn a_qos2_publish_is_relayed_exactly_once_across_a_reconnect() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let mut listener = Client311::connect(server.mqtt, "listener").await;
    subscribe_311(&mut listener, "orders", rumqttc::QoS::ExactlyOnce).await;

    let mut stream = TcpStream::connect(server.mqtt).await.expect("connect");
    stream
        .write_all(&persistent_connect("till"))
        .await
        .expect("write");
    expect_bytes(&mut stream, &[0x20, 2, 0, 0], "CONNACK, no session").await;
    stream
        .write_all(&publish_qos2("orders", 7, b"one coffee", false))
        .await
        .expect("write");
    expect_bytes(&mut stream, &[0x50, 2, 0, 7], "PUBREC").await;
    // The connection drops before the PUBREL.
    drop(stream);

    let mut stream = TcpStream::connect(server.mqtt).await.expect("connect");
    stream
        .write_all(&persistent_connect("till"))
        .await
        .expect("write");
    expect_bytes(&mut stream, &[0x20, 2, 1, 0], "CONNACK, session present").await;
    stream
        .write_all(&publish_qos2("orders", 7, b"one coffee", true))
        .await
        .expect("write");
    expect_bytes(&mut stream, &[0x50, 2, 0, 7], "PUBREC again").await;
    stream.write_all(&[0x62, 2, 0, 7]).await.expect("PUBREL");
    expect_bytes(&mut stream, &[0x70, 2, 0, 7], "PUBCOMP").await;

    let relayed = listener.next_publish().await;
    assert_eq!(&relayed.payload[..], b"one coffee");
    // Nothing else comes: the resent publish was not relayed again.
    stream
        .write_all(&publish_qos2("orders", 8, b"next", false))
        .await
        .expect("write");
    assert_eq!(&listener.next_publish().await.payload[..], b"next");
    server.stop().await;
}

#[tokio::test]
async fn mosquitto_sub_keeps_its_session_with_clean_session_off() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let port = server.mqtt.port().to_string();
    let sub = |extra: &'static [&'static str]| {
        tokio::process::Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv311", "-q", "1"])
            .args([
                "-c",
                "-i",
                "mosquitto-device",
                "-t",
                "lights/#",
                "-v",
                "-W",
                "20",
            ])
            .args(extra)
            .kill_on_drop(true)
            .output()
    };
    // The first run subscribes and leaves (-E: once the subscription is granted).
    let output = sub(&["-E"])
        .await
        .expect("mosquitto_sub runs (package mosquitto-clients)");
    assert!(output.status.success(), "{output:?}");
    publish_from(server.mqtt, "lights/porch", &["on", "off"]).await;
    let output = sub(&["-C", "2"]).await.expect("mosquitto_sub runs");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "lights/porch on\nlights/porch off\n"
    );
    server.stop().await;
}

#[tokio::test]
async fn sys_topics_report_the_broker_and_wildcards_do_not_match_them() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let mut everything = Client311::connect(server.mqtt, "everything").await;
    subscribe_311(&mut everything, "#", rumqttc::QoS::AtMostOnce).await;
    let mut operator = Client311::connect(server.mqtt, "operator").await;
    subscribe_311(&mut operator, "$SYS/#", rumqttc::QoS::AtMostOnce).await;
    let mut reported = std::collections::HashMap::new();
    while reported.len() < 9 {
        let publish = operator.next_publish().await;
        // Retained when it was published before the subscription; a refresh every 10 s may
        // come live.
        assert!(publish.retain || !reported.is_empty(), "{publish:?}");
        let value = String::from_utf8_lossy(&publish.payload).into_owned();
        reported.insert(publish.topic, value);
    }
    assert!(
        reported["$SYS/broker/version"].starts_with("tablecast "),
        "{reported:?}"
    );
    for counter in [
        "clients/connected",
        "clients/disconnected",
        "messages/received",
        "messages/sent",
        "subscriptions/count",
        "retained messages/count",
    ] {
        let value = &reported[&format!("$SYS/broker/{counter}")];
        assert!(value.parse::<u64>().is_ok(), "{counter}: {value}");
    }
    // `#` got none of them: the first thing it hears is a plain message.
    publish_from(server.mqtt, "plain", &["first"]).await;
    let heard = everything.next_publish().await;
    assert_eq!(heard.topic, "plain");
    // Clients cannot forge them.
    let mut forger = Client5::connect(server.mqtt, "forger").await;
    let refused = forger.publish("$SYS/broker/version", b"evil", true).await;
    assert_eq!(refused.reason, v5p::PubAckReason::TopicNameInvalid);
    server.stop().await;
}

/// Runs a phase of `tests/python/paho_sessions.py` against the MQTT port `port`.
async fn paho(port: u16, phase: &str) {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/paho_sessions.py");
    let mut command = tokio::process::Command::new("python3");
    command.arg(script).arg(port.to_string()).arg(phase);
    run_client(
        &mut command,
        &format!("paho {phase} (pip install paho-mqtt)"),
    )
    .await;
}

#[tokio::test]
async fn paho_clients_keep_their_sessions_across_a_kill() {
    let fixture = Fixture::new();
    let spawn = || {
        Process::spawn_with(tablecast_command(
            &["serve", "--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0"],
            fixture.schemas.path(),
            fixture.data.path(),
        ))
    };
    let process = spawn();
    let port = process.mqtt.expect("MQTT").port();
    paho(port, "subscribe").await;
    paho(port, "publish").await;
    drop(process); // SIGKILL
    let process = spawn();
    paho(process.mqtt.expect("MQTT").port(), "resume").await;
}

#[tokio::test]
async fn persistent_sessions_are_bounded_in_number() {
    let fixture = Fixture::new();
    let mut config = fixture.config();
    config.mqtt_max_sessions = 1;
    let server = TestServer::start(config).await;
    let first = persistent_311(server.mqtt, "first").await;
    vanish(first);
    let mut options = rumqttc::v5::MqttOptions::new("second", "127.0.0.1", server.mqtt.port());
    options.set_clean_start(false);
    options.set_session_expiry_interval(Some(60));
    let (_client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 8);
    let refused = tokio::time::timeout(WAIT, eventloop.poll())
        .await
        .expect("in time");
    assert!(
        matches!(
            refused,
            Err(rumqttc::v5::ConnectionError::ConnectionRefused(
                v5p::ConnectReturnCode::QuotaExceeded
            ))
        ),
        "{refused:?}"
    );
    // A clean session needs no room, and the kept one comes back.
    Client311::connect(server.mqtt, "clean").await;
    let first = persistent_311(server.mqtt, "first").await;
    assert!(first.session_present);
    server.stop().await;
}
