//! MQTT 5 as clients use it: properties forwarded unchanged, message expiry, subscription
//! identifiers, topic aliases, Receive Maximum and Maximum Packet Size both ways, shared
//! subscriptions, delayed wills, Server Keep Alive and assigned client ids.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5 as v5p;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{Fixture, TestServer};
use crate::mqtt_client::{Client5, Client311, MqttClient, WAIT};

type Qos5 = rumqttc::v5::mqttbytes::QoS;

async fn subscribe(
    client: &mut Client5,
    filter: &str,
    qos: Qos5,
    id: Option<usize>,
) -> v5p::SubAck {
    let properties = v5p::SubscribeProperties {
        id,
        user_properties: Vec::new(),
    };
    client
        .client
        .subscribe_with_properties(filter, qos, properties)
        .await
        .expect("subscribe");
    client
        .next_where(|packet| match packet {
            v5p::Packet::SubAck(ack) => Some(ack),
            _ => None,
        })
        .await
}

/// The next PUBLISH, or `None` if none comes within `patience`.
async fn maybe_publish(client: &mut Client5, patience: Duration) -> Option<v5p::Publish> {
    tokio::time::timeout(patience, client.next_publish())
        .await
        .ok()
}

#[tokio::test]
async fn properties_travel_unchanged_and_expiry_counts_down() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let mut listener = Client5::connect(server.mqtt, "listener").await;
    subscribe(&mut listener, "rpc/#", Qos5::AtLeastOnce, Some(7)).await;
    subscribe(&mut listener, "rpc/add", Qos5::AtMostOnce, Some(9)).await;
    let requester = Client5::connect(server.mqtt, "requester").await;
    let sent = v5p::PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(120),
        topic_alias: None,
        response_topic: Some("rpc/replies/requester".to_owned()),
        correlation_data: Some(Bytes::from_static(b"\x00\x01\x02")),
        user_properties: vec![("trace".to_owned(), "abc".to_owned())],
        subscription_identifiers: Vec::new(),
        content_type: Some("application/json".to_owned()),
    };
    requester
        .client
        .publish_with_properties("rpc/add", Qos5::AtLeastOnce, false, "[1,2]", sent.clone())
        .await
        .expect("publish");
    let heard = listener.next_publish().await;
    assert_eq!(heard.qos, Qos5::AtLeastOnce, "one copy, at the highest QoS");
    let got = heard.properties.expect("properties");
    assert_eq!(got.payload_format_indicator, sent.payload_format_indicator);
    assert_eq!(got.response_topic, sent.response_topic);
    assert_eq!(got.correlation_data, sent.correlation_data);
    assert_eq!(got.user_properties, sent.user_properties);
    assert_eq!(got.content_type, sent.content_type);
    let remaining = got.message_expiry_interval.expect("the remaining interval");
    assert!(remaining <= 120 && remaining > 100, "{remaining}");
    let mut ids = got.subscription_identifiers.clone();
    ids.sort_unstable();
    assert_eq!(
        ids,
        [7, 9],
        "the identifiers of both matching subscriptions"
    );

    // A message that expires before an absent client returns is not delivered.
    let persistent = |options: &mut rumqttc::v5::MqttOptions| {
        options.set_clean_start(false);
        options.set_session_expiry_interval(Some(600));
    };
    let mut away = Client5::connect_with(server.mqtt, "away", persistent).await;
    subscribe(&mut away, "news", Qos5::AtLeastOnce, None).await;
    away.task.abort();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let short_lived = v5p::PublishProperties {
        message_expiry_interval: Some(1),
        ..v5p::PublishProperties::default()
    };
    requester
        .client
        .publish_with_properties("news", Qos5::AtLeastOnce, false, "stale", short_lived)
        .await
        .expect("publish");
    requester
        .client
        .publish("news", Qos5::AtLeastOnce, false, "fresh")
        .await
        .expect("publish");
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let mut away = Client5::connect_with(server.mqtt, "away", persistent).await;
    assert!(away.connack.session_present);
    assert_eq!(&away.next_publish().await.payload[..], b"fresh");
    assert!(
        maybe_publish(&mut away, Duration::from_millis(500))
            .await
            .is_none()
    );
    server.stop().await;
}

#[tokio::test]
async fn retained_messages_keep_their_qos_and_properties_and_expire() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let publisher = Client5::connect(server.mqtt, "publisher").await;
    let typed = v5p::PublishProperties {
        content_type: Some("text/plain".to_owned()),
        ..v5p::PublishProperties::default()
    };
    let brief = v5p::PublishProperties {
        message_expiry_interval: Some(1),
        ..v5p::PublishProperties::default()
    };
    publisher
        .client
        .publish_with_properties("kept/typed", Qos5::AtMostOnce, true, "hello", typed)
        .await
        .expect("publish");
    publisher
        .client
        .publish_with_properties("kept/brief", Qos5::AtMostOnce, true, "soon gone", brief)
        .await
        .expect("publish");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut late = Client5::connect(server.mqtt, "late").await;
    subscribe(&mut late, "kept/+", Qos5::ExactlyOnce, None).await;
    let retained = late.next_publish().await;
    assert_eq!(
        &retained.topic[..],
        b"kept/typed",
        "the expired one is gone"
    );
    assert_eq!(
        retained.qos,
        Qos5::AtMostOnce,
        "at the QoS it was published at"
    );
    assert_eq!(
        retained.properties.and_then(|p| p.content_type).as_deref(),
        Some("text/plain")
    );
    assert!(
        maybe_publish(&mut late, Duration::from_millis(300))
            .await
            .is_none()
    );
    server.stop().await;
}

#[tokio::test]
async fn topic_aliases_stand_for_topics_a_client_set() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let mut listener = Client5::connect(server.mqtt, "listener").await;
    subscribe(&mut listener, "sensors/#", Qos5::AtMostOnce, None).await;
    let talker = Client5::connect(server.mqtt, "talker").await;
    let max = talker
        .connack
        .properties
        .as_ref()
        .and_then(|p| p.topic_alias_max);
    assert_eq!(max, Some(64));
    let alias = |alias| v5p::PublishProperties {
        topic_alias: Some(alias),
        ..v5p::PublishProperties::default()
    };
    talker
        .client
        .publish_with_properties("sensors/temp", Qos5::AtMostOnce, false, "20", alias(1))
        .await
        .expect("publish");
    talker
        .client
        .publish_with_properties("", Qos5::AtMostOnce, false, "21", alias(1))
        .await
        .expect("publish");
    for expected in ["20", "21"] {
        let heard = listener.next_publish().await;
        assert_eq!(
            (&heard.topic[..], &heard.payload[..]),
            (&b"sensors/temp"[..], expected.as_bytes())
        );
    }

    // An alias never set is a protocol error: the connection is closed with the reason.
    let mut stream = raw_v5_connect(&server, "aliasless").await;
    let mut publish = vec![0, 0, 3, 0x23, 0, 5];
    publish.extend_from_slice(b"x");
    stream
        .write_all(&frame(0x30, &publish))
        .await
        .expect("write");
    assert_eq!(disconnect_reason(&mut stream).await, 0x82);
    server.stop().await;
}

#[tokio::test]
async fn a_client_past_the_receive_maximum_is_disconnected_with_0x93() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let probe = Client5::connect(server.mqtt, "probe").await;
    let receive_max = probe
        .connack
        .properties
        .as_ref()
        .and_then(|p| p.receive_max);
    assert_eq!(receive_max, Some(1024));
    let mut stream = raw_v5_connect(&server, "greedy").await;
    // QoS 2 publishes whose PUBRELs never come: each stays in progress.
    let mut packets = Vec::new();
    for pkid in 1..=1025u16 {
        let mut body = vec![0, 1, b't'];
        body.extend_from_slice(&pkid.to_be_bytes());
        body.push(0); // no properties
        packets.extend(frame(0x34, &body));
    }
    stream.write_all(&packets).await.expect("write");
    assert_eq!(disconnect_reason(&mut stream).await, 0x93);
    // The server goes on.
    Client5::connect(server.mqtt, "after").await;
    server.stop().await;
}

#[tokio::test]
async fn nothing_larger_than_a_clients_maximum_packet_size_is_sent_to_it() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let mut small = Client5::connect_with(server.mqtt, "small", |options| {
        options.set_max_packet_size(Some(128));
    })
    .await;
    subscribe(&mut small, "blobs", Qos5::AtLeastOnce, None).await;
    let sender = Client5::connect(server.mqtt, "sender").await;
    sender
        .client
        .publish("blobs", Qos5::AtLeastOnce, false, vec![b'x'; 500])
        .await
        .expect("publish");
    sender
        .client
        .publish("blobs", Qos5::AtLeastOnce, false, "small")
        .await
        .expect("publish");
    assert_eq!(
        &small.next_publish().await.payload[..],
        b"small",
        "the large one was dropped"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_shared_subscription_gives_each_message_to_one_member() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let mut workers = Vec::new();
    for name in ["worker-1", "worker-2"] {
        let mut worker = Client5::connect(server.mqtt, name).await;
        let ack = subscribe(&mut worker, "$share/pool/jobs/+", Qos5::AtLeastOnce, None).await;
        assert_eq!(
            ack.return_codes,
            [v5p::SubscribeReasonCode::Success(Qos5::AtLeastOnce)]
        );
        workers.push(worker);
    }
    let mut auditor = Client5::connect(server.mqtt, "auditor").await;
    subscribe(&mut auditor, "jobs/+", Qos5::AtMostOnce, None).await;
    let boss = Client5::connect(server.mqtt, "boss").await;
    for n in 0..10 {
        boss.client
            .publish(format!("jobs/{n}"), Qos5::AtLeastOnce, false, n.to_string())
            .await
            .expect("publish");
    }
    for _ in 0..10 {
        auditor.next_publish().await;
    }
    let mut done = Vec::new();
    let mut per_worker = Vec::new();
    for worker in &mut workers {
        let mut count = 0;
        while let Some(job) = maybe_publish(worker, Duration::from_millis(500)).await {
            done.push(String::from_utf8_lossy(&job.payload).into_owned());
            count += 1;
        }
        per_worker.push(count);
    }
    done.sort_by_key(|n| n.parse::<u32>().unwrap());
    let all: Vec<String> = (0..10).map(|n: u32| n.to_string()).collect();
    assert_eq!(done, all, "each job once");
    assert_eq!(per_worker, [5, 5], "in turn");

    // A table's topics are not shared: every subscriber gets each change.
    let refused = subscribe(&mut auditor, "$share/pool/Item/+", Qos5::AtLeastOnce, None).await;
    assert_eq!(
        refused.return_codes,
        [v5p::SubscribeReasonCode::SharedSubscriptionsNotSupported]
    );
    server.stop().await;
}

#[tokio::test]
async fn a_delayed_will_waits_and_is_cancelled_by_a_prompt_return() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let mut watcher = Client5::connect(server.mqtt, "watcher").await;
    subscribe(&mut watcher, "status/+", Qos5::AtLeastOnce, None).await;
    let with_will = |id: &'static str| {
        move |options: &mut rumqttc::v5::MqttOptions| {
            let properties = v5p::LastWillProperties {
                delay_interval: Some(2),
                payload_format_indicator: None,
                message_expiry_interval: None,
                content_type: None,
                response_topic: None,
                correlation_data: None,
                user_properties: Vec::new(),
            };
            options.set_last_will(v5p::LastWill::new(
                format!("status/{id}"),
                "gone",
                Qos5::AtLeastOnce,
                false,
                Some(properties),
            ));
            options.set_clean_start(false);
            options.set_session_expiry_interval(Some(600));
        }
    };
    // Back within the delay: no will.
    let flaky = Client5::connect_with(server.mqtt, "flaky", with_will("flaky")).await;
    flaky.task.abort();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _back = Client5::connect_with(server.mqtt, "flaky", with_will("flaky")).await;
    // Gone for good: the will, after its delay.
    let doomed = Client5::connect_with(server.mqtt, "doomed", with_will("doomed")).await;
    let vanished = Instant::now();
    doomed.task.abort();
    let will = watcher.next_publish().await;
    assert_eq!(&will.topic[..], b"status/doomed", "not flaky's");
    assert!(
        vanished.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        vanished.elapsed()
    );
    server.stop().await;
}

#[tokio::test]
async fn keep_alive_is_bounded_and_empty_client_ids_are_assigned() {
    let fixture = Fixture::new();
    let mut config = fixture.config();
    config.mqtt_max_keepalive = 10;
    let server = TestServer::start(config).await;
    let told = Client5::connect_with(server.mqtt, "", |options| {
        options.set_keep_alive(Duration::from_secs(30));
    })
    .await;
    let properties = told.connack.properties.clone().expect("CONNACK properties");
    assert_eq!(properties.server_keep_alive, Some(10));
    let assigned = properties
        .assigned_client_identifier
        .expect("an assigned id");
    assert!(assigned.starts_with("tablecast-"), "{assigned}");

    // MQTT 3.1.1 cannot be told: refused with "identifier rejected", as Mosquitto does.
    let mut options = rumqttc::MqttOptions::new("old", "127.0.0.1", server.mqtt.port());
    options.set_keep_alive(Duration::from_secs(30));
    let (_client, mut eventloop) = rumqttc::AsyncClient::new(options, 8);
    let refused = tokio::time::timeout(WAIT, eventloop.poll())
        .await
        .expect("in time");
    assert!(
        matches!(
            refused,
            Err(rumqttc::ConnectionError::ConnectionRefused(
                rumqttc::ConnectReturnCode::BadClientId
            ))
        ),
        "{refused:?}"
    );
    let _fine = Client311::connect_with(server.mqtt, "fine", |options| {
        options.set_keep_alive(Duration::from_secs(10));
    })
    .await;
    server.stop().await;
}

/// Subscribes with MQTT 5 subscription options.
async fn subscribe_with(client: &mut Client5, filter: v5p::Filter) -> v5p::SubAck {
    client
        .client
        .subscribe_many([filter])
        .await
        .expect("subscribe");
    client
        .next_where(|packet| match packet {
            v5p::Packet::SubAck(ack) => Some(ack),
            _ => None,
        })
        .await
}

fn options(path: &str, change: impl FnOnce(&mut v5p::Filter)) -> v5p::Filter {
    let mut filter = v5p::Filter::new(path, Qos5::AtLeastOnce);
    change(&mut filter);
    filter
}

#[tokio::test]
async fn no_local_retain_as_published_and_retain_handling() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let mut other = Client5::connect(server.mqtt, "other").await;
    other.publish("opts/kept", b"retained", true).await;

    // No Local: a client's own messages do not come back to it.
    let mut talker = Client5::connect(server.mqtt, "talker").await;
    let no_local = options("opts/chat", |f| {
        f.nolocal = true;
        f.retain_forward_rule = v5p::RetainForwardRule::Never;
    });
    subscribe_with(&mut talker, no_local).await;
    talker.publish("opts/chat", b"mine", false).await;
    other.publish("opts/chat", b"theirs", false).await;
    assert_eq!(&talker.next_publish().await.payload[..], b"theirs");

    // Retain Handling 0 sends retained messages on every subscribe; 1 on a new subscription
    // only; 2 never.
    let mut reader = Client5::connect(server.mqtt, "reader").await;
    let handling = |rule| options("opts/kept", |f| f.retain_forward_rule = rule);
    subscribe_with(
        &mut reader,
        handling(v5p::RetainForwardRule::OnEverySubscribe),
    )
    .await;
    assert!(reader.next_publish().await.retain);
    subscribe_with(
        &mut reader,
        handling(v5p::RetainForwardRule::OnEverySubscribe),
    )
    .await;
    assert!(
        reader.next_publish().await.retain,
        "again, on every subscribe"
    );
    subscribe_with(
        &mut reader,
        handling(v5p::RetainForwardRule::OnNewSubscribe),
    )
    .await;
    assert!(
        maybe_publish(&mut reader, Duration::from_millis(300))
            .await
            .is_none()
    );
    let mut late = Client5::connect(server.mqtt, "late").await;
    subscribe_with(&mut late, handling(v5p::RetainForwardRule::Never)).await;
    assert!(
        maybe_publish(&mut late, Duration::from_millis(300))
            .await
            .is_none()
    );

    // Retain As Published: a live retained message keeps its flag only for those who ask.
    let mut keeper = Client5::connect(server.mqtt, "keeper").await;
    let as_published = options("opts/live", |f| f.preserve_retain = true);
    subscribe_with(&mut keeper, as_published).await;
    let mut plain = Client5::connect(server.mqtt, "plain").await;
    subscribe_with(&mut plain, options("opts/live", |_| {})).await;
    other.publish("opts/live", b"now", true).await;
    assert!(keeper.next_publish().await.retain);
    assert!(!plain.next_publish().await.retain);
    server.stop().await;
}

#[tokio::test]
async fn a_second_connect_is_a_protocol_error_and_the_server_goes_on() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let mut stream = raw_v5_connect(&server, "twice").await;
    let again = [0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0, 0, 1, b'x'];
    stream.write_all(&frame(0x10, &again)).await.expect("write");
    assert_eq!(disconnect_reason(&mut stream).await, 0x82);
    Client5::connect(server.mqtt, "after").await;
    server.stop().await;
}

fn frame(header: u8, body: &[u8]) -> Vec<u8> {
    let mut packet = vec![header];
    let mut length = body.len();
    loop {
        let byte = u8::try_from(length % 128).unwrap();
        length /= 128;
        packet.push(if length > 0 { byte | 0x80 } else { byte });
        if length == 0 {
            break;
        }
    }
    packet.extend_from_slice(body);
    packet
}

/// A raw MQTT 5 connection, past its CONNACK.
async fn raw_v5_connect(server: &TestServer, client_id: &str) -> TcpStream {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0];
    body.extend_from_slice(&u16::try_from(client_id.len()).unwrap().to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut stream = TcpStream::connect(server.mqtt).await.expect("connect");
    stream.write_all(&frame(0x10, &body)).await.expect("write");
    let mut header = [0; 2];
    stream.read_exact(&mut header).await.expect("CONNACK");
    assert_eq!(header[0], 0x20, "CONNACK");
    let mut rest = vec![0; usize::from(header[1])];
    stream.read_exact(&mut rest).await.expect("CONNACK");
    assert_eq!(rest[1], 0, "accepted");
    stream
}

/// Reads packets until a DISCONNECT; returns its reason code.
async fn disconnect_reason(stream: &mut TcpStream) -> u8 {
    let mut received = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut received)).await;
    let mut at = 0;
    while at < received.len() {
        let kind = received[at];
        let (mut length, mut shift, mut used) = (0usize, 0, 1);
        while let Some(&byte) = received.get(at + used) {
            length |= usize::from(byte & 0x7f) << shift;
            shift += 7;
            used += 1;
            if byte & 0x80 == 0 {
                break;
            }
        }
        if kind == 0xe0 {
            return received[at + used];
        }
        at += used + length;
    }
    panic!("no DISCONNECT in {} bytes", received.len());
}
