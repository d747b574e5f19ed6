//! MQTT 3.1.1 and 5 against the real listener, with rumqttc and the `mosquitto_sub` /
//! `mosquitto_pub` command-line clients.

use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5 as v5p;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::{Fixture, TestServer, delete, put, put_counters};
use crate::mqtt_client::{Client5, Client311, MqttClient, WAIT};
use crate::subscribe::{ws_connect, ws_next};

pub async fn get(server: &TestServer, path: &str) -> (u16, String) {
    let response = server
        .client
        .get(server.url(path))
        .send()
        .await
        .expect("GET");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

fn json_of(payload: &Bytes) -> Value {
    serde_json::from_slice(payload).expect("a JSON payload")
}

#[tokio::test]
async fn v311_subscribers_get_current_records_then_changes() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    put(&server, "/Item/b", json!({"name": "bee"})).await;
    put(&server, "/Item/a", json!({"name": "ay"})).await;
    let mut mqtt = Client311::connect(server.mqtt, "reader").await;
    assert_eq!(
        mqtt.subscribe("Item/+").await,
        rumqttc::SubscribeReasonCode::Success(rumqttc::QoS::AtLeastOnce)
    );
    for id in ["a", "b"] {
        let current = mqtt.next_publish().await;
        assert_eq!(current.topic, format!("Item/{id}"));
        assert!(current.retain, "current values arrive as retained messages");
        assert_eq!(current.qos, rumqttc::QoS::AtLeastOnce);
        assert_eq!(json_of(&current.payload)["id"], id);
    }

    put(&server, "/Item/c", json!({"name": "sea"})).await;
    let change = mqtt.next_publish().await;
    assert_eq!((change.topic.as_str(), change.retain), ("Item/c", false));
    assert_eq!(json_of(&change.payload), json!({"id": "c", "name": "sea"}));

    delete(&server, "/Item/a").await;
    let deleted = mqtt.next_publish().await;
    assert_eq!(deleted.topic, "Item/a");
    assert!(deleted.payload.is_empty(), "a delete is an empty payload");
    mqtt.task.abort();
    server.stop().await;
}

#[tokio::test]
async fn v5_retained_publishes_write_records_and_bad_ones_get_reason_codes() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let mut ws = ws_connect(&server, "/Item/x").await;
    assert_eq!(ws_next(&mut ws).await["type"], "synced");
    let mut mqtt = Client5::connect(server.mqtt, "writer").await;

    let ack = mqtt
        .publish("Item/x", br#"{"name":"from mqtt"}"#, true)
        .await;
    assert_eq!(ack.reason, v5p::PubAckReason::Success);
    assert_eq!(
        get(&server, "/Item/x").await,
        (200, r#"{"id":"x","name":"from mqtt"}"#.to_owned())
    );
    let event = ws_next(&mut ws).await;
    assert_eq!(
        (event["type"].as_str(), event["value"]["name"].as_str()),
        (Some("put"), Some("from mqtt"))
    );

    for (topic, payload, reason, mentions) in [
        (
            "Item/x",
            &b"{not json"[..],
            v5p::PubAckReason::PayloadFormatInvalid,
            "not JSON",
        ),
        (
            "Item/x",
            br#"{"name":5}"#,
            v5p::PubAckReason::PayloadFormatInvalid,
            "/name",
        ),
        (
            "Item/x",
            br#"{"id":"y","name":"n"}"#,
            v5p::PubAckReason::PayloadFormatInvalid,
            "id",
        ),
        (
            "Counter/abc",
            br#"{}"#,
            v5p::PubAckReason::TopicNameInvalid,
            "integer",
        ),
        (
            "Item",
            br#"{}"#,
            v5p::PubAckReason::TopicNameInvalid,
            "Item/<id>",
        ),
    ] {
        let ack = mqtt.publish(topic, payload, true).await;
        assert_eq!(ack.reason, reason, "{topic} {payload:?}");
        let said = ack
            .properties
            .and_then(|p| p.reason_string)
            .unwrap_or_default();
        assert!(
            said.contains(mentions),
            "{said:?} should mention {mentions:?}"
        );
    }
    assert_eq!(
        get(&server, "/Item/x").await.1,
        r#"{"id":"x","name":"from mqtt"}"#,
        "refused publishes write nothing"
    );

    let ack = mqtt.publish("Item/x", b"", true).await;
    assert_eq!(ack.reason, v5p::PubAckReason::Success);
    assert_eq!(
        get(&server, "/Item/x").await.0,
        404,
        "a retained empty payload deletes"
    );
    assert_eq!(ws_next(&mut ws).await["type"], "delete");
    // Deleting what is not there is not an error.
    let ack = mqtt.publish("Item/x", b"", true).await;
    assert_eq!(ack.reason, v5p::PubAckReason::Success);

    put(&server, "/Item/z", json!({"name": "zed"})).await;
    let granted = mqtt.subscribe("Item/+").await;
    assert_eq!(
        granted.return_codes,
        [v5p::SubscribeReasonCode::Success(
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce
        )]
    );
    let current = mqtt.next_publish().await;
    assert_eq!((&current.topic[..], current.retain), (&b"Item/z"[..], true));
    assert_eq!(json_of(&current.payload)["name"], "zed");
    server.stop().await;
}

#[tokio::test]
async fn a_v311_client_whose_publish_is_refused_stays_connected() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let mut mqtt = Client311::connect(server.mqtt, "clumsy").await;
    // 3.1.1 has no reason codes: a client that wants to know why subscribes to its errors
    // topic, which only it is sent.
    assert_eq!(
        mqtt.subscribe("$tablecast/errors/clumsy").await,
        rumqttc::SubscribeReasonCode::Success(rumqttc::QoS::AtLeastOnce)
    );
    mqtt.client
        .publish(
            "Item/q",
            rumqttc::QoS::AtLeastOnce,
            true,
            br#"{"name": 42}"#.to_vec(),
        )
        .await
        .expect("publish");
    let told = mqtt.next_publish().await;
    assert_eq!(told.topic, "$tablecast/errors/clumsy");
    assert_eq!(
        json_of(&told.payload),
        json!({"topic": "Item/q", "code": "schema-violation",
               "detail": "the record does not match the schema of table `Item`: /name: 42 is not of type \"string\""})
    );
    mqtt.next_where(|packet| matches!(packet, rumqttc::Packet::PubAck(_)).then_some(()))
        .await;
    mqtt.publish("Item/q", br#"{"name": "fixed"}"#, true).await;
    assert_eq!(
        get(&server, "/Item/q").await.1,
        r#"{"id":"q","name":"fixed"}"#
    );
    // A subscription past the limit is refused; the connection stays, and a held one may be
    // renewed. It holds one already, its errors topic.
    for n in 1..99 {
        mqtt.subscribe(&format!("f/{n}")).await;
    }
    assert_eq!(
        mqtt.subscribe("Item/q").await,
        rumqttc::SubscribeReasonCode::Success(rumqttc::QoS::AtLeastOnce)
    );
    assert_eq!(
        mqtt.subscribe("f/one-too-many").await,
        rumqttc::SubscribeReasonCode::Failure
    );
    assert_eq!(
        mqtt.subscribe("Item/q").await,
        rumqttc::SubscribeReasonCode::Success(rumqttc::QoS::AtLeastOnce)
    );
    server.stop().await;
}

#[tokio::test]
async fn a_non_retained_publish_to_a_record_is_relayed_as_a_message() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    put(&server, "/Item/m", json!({"name": "unchanged"})).await;
    let mut ws = ws_connect(&server, "/Item/m").await;
    ws_next(&mut ws).await;
    assert_eq!(ws_next(&mut ws).await["type"], "synced");
    let mut listener = Client311::connect(server.mqtt, "listener").await;
    listener.subscribe("Item/m").await;
    listener.next_publish().await; // the current value

    let mut talker = Client5::connect(server.mqtt, "talker").await;
    talker.publish("Item/m", br#"{"hello":1}"#, false).await;
    let message = ws_next(&mut ws).await;
    assert_eq!(message["type"], "message");
    assert_eq!(message["value"], json!({"hello": 1}));
    let relayed = listener.next_publish().await;
    assert_eq!((relayed.topic.as_str(), relayed.retain), ("Item/m", false));
    assert_eq!(&relayed.payload[..], br#"{"hello":1}"#);
    assert_eq!(
        get(&server, "/Item/m").await.1,
        r#"{"id":"m","name":"unchanged"}"#
    );
    server.stop().await;
}

#[tokio::test]
async fn topics_outside_tables_are_a_plain_broker() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let mut alice = Client311::connect(server.mqtt, "alice").await;
    alice.subscribe("chat/#").await;
    let mut bob = Client5::connect(server.mqtt, "bob").await;
    bob.publish("chat/room1", b"hi", false).await;
    let heard = alice.next_publish().await;
    assert_eq!(
        (heard.topic.as_str(), &heard.payload[..], heard.retain),
        ("chat/room1", &b"hi"[..], false)
    );

    bob.publish("chat/topic", b"rust", true).await;
    assert_eq!(&alice.next_publish().await.payload[..], b"rust");
    let mut carol = Client311::connect(server.mqtt, "carol").await;
    carol.subscribe("chat/+").await;
    let retained = carol.next_publish().await;
    assert_eq!(
        (retained.topic.as_str(), retained.retain),
        ("chat/topic", true)
    );
    assert_eq!(&retained.payload[..], b"rust");
    server.stop().await;
}

#[tokio::test]
async fn the_last_will_is_published_when_a_client_vanishes() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let mut watcher = Client311::connect(server.mqtt, "watcher").await;
    watcher.subscribe("status/#").await;
    let doomed = Client311::connect_with(server.mqtt, "doomed", |options| {
        options.set_last_will(rumqttc::LastWill::new(
            "status/doomed",
            "gone",
            rumqttc::QoS::AtLeastOnce,
            false,
        ));
    })
    .await;
    // Dropping the event loop drops the connection without a DISCONNECT.
    doomed.task.abort();
    drop(doomed);
    let will = watcher.next_publish().await;
    assert_eq!(
        (will.topic.as_str(), &will.payload[..]),
        ("status/doomed", &b"gone"[..])
    );
    server.stop().await;
}

async fn mosquitto(program: &str, args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{program} runs (Debian package mosquitto-clients): {e}"))
}

#[tokio::test]
async fn mosquitto_clients_subscribe_and_publish() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let port = server.mqtt.port().to_string();
    put(&server, "/Item/a", json!({"name": "before"})).await;
    for version in ["mqttv311", "mqttv5"] {
        let mut sub = mosquitto(
            "mosquitto_sub",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-V",
                version,
                "-q",
                "1",
                "-t",
                "Item/a",
                "-v",
                "-C",
                "2",
            ],
        )
        .await;
        let mut lines = BufReader::new(sub.stdout.take().expect("stdout")).lines();
        let current = next_line(&mut lines).await;
        assert!(
            current.starts_with("Item/a {\"id\":\"a\""),
            "{version}: {current}"
        );
        put(&server, "/Item/a", json!({"name": version})).await;
        assert_eq!(
            next_line(&mut lines).await,
            format!(r#"Item/a {{"id":"a","name":"{version}"}}"#)
        );
        let status = tokio::time::timeout(WAIT, sub.wait())
            .await
            .expect("exits")
            .expect("status");
        assert!(status.success(), "mosquitto_sub {version}: {status}");

        let publish = mosquitto(
            "mosquitto_pub",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-V",
                version,
                "-q",
                "1",
                "-r",
                "-t",
                "Item/b",
                "-m",
                &format!(r#"{{"name":"pub {version}"}}"#),
            ],
        )
        .await;
        let output = publish.wait_with_output().await.expect("runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            get(&server, "/Item/b").await,
            (200, format!(r#"{{"id":"b","name":"pub {version}"}}"#))
        );
    }
    server.stop().await;
}

async fn next_line(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) -> String {
    tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("output in time")
        .expect("read")
        .expect("a line")
}

/// Writes Counter records 1 to `count`, labelled `<label> <id>`.
async fn load_counters(server: &TestServer, count: usize, label: &'static str) {
    put_counters(server, count, move |n| {
        (n + 1, format!("{label} {}", n + 1))
    })
    .await;
}

#[tokio::test]
async fn a_100k_record_table_is_delivered_whole_and_a_stalled_client_resyncs() {
    const RECORDS: usize = 100_000;
    let fixture = Fixture::new();
    let server = fixture.start().await;
    load_counters(&server, RECORDS, "first").await;

    let mut reader = Client311::connect_with(server.mqtt, "everything", |options| {
        options.set_max_packet_size(1 << 20, 1 << 20);
    })
    .await;
    reader.subscribe("Counter/#").await;
    for n in 1..=RECORDS {
        let publish = reader.next_publish().await;
        assert!(publish.retain);
        assert_eq!(publish.topic, format!("Counter/{n}"), "in key order");
    }

    // A client that stops reading while every record changes again.
    // It sends no PINGREQ while it is stalled: a keep-alive longer than the load keeps the
    // server from (rightly) dropping it as silent.
    let mut stalled = Client311::connect_with(server.mqtt, "stalled", |options| {
        options.set_keep_alive(Duration::from_secs(3600));
    })
    .await;
    stalled.subscribe("$tablecast/resync").await;
    stalled.subscribe("Counter/#").await;
    load_counters(&server, RECORDS, "second").await;
    // It reads again: changes, then the resync notice and every current value.
    loop {
        let publish = stalled.next_publish().await;
        if publish.topic == "$tablecast/resync" {
            break;
        }
    }
    for n in 1..=RECORDS {
        let publish = stalled.next_publish().await;
        assert_eq!(publish.topic, format!("Counter/{n}"));
        assert!(publish.retain);
        assert_eq!(json_of(&publish.payload)["label"], format!("second {n}"));
    }
    server.stop().await;
}
