//! Identity and access on the real-time transports: WebSocket (tokio-tungstenite), Server-Sent
//! Events, MQTT (rumqttc, mosquitto_sub / mosquitto_pub). Subscribers get only what they may
//! read, without hidden properties; MQTT clients sign in with CONNECT and are held to their
//! roles' topics.

use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;
use jsonwebtoken::Algorithm;
use rumqttc::v5::mqttbytes::v5 as v5p;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::access::{Secured, as_user, secured, token, write};
use crate::common::TestServer;
use crate::mqtt_client::{Client5, Client311, MqttClient};
use crate::subscribe::{SseReader, ws_next};

/// A WebSocket subscription to `path` with `header: value` on the upgrade.
async fn ws_as(server: &TestServer, path: &str, header: &str, value: &str) -> crate::subscribe::Ws {
    let url = format!("{}{path}", server.base.replacen("http", "ws", 1));
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(header.as_bytes()).unwrap(),
        HeaderValue::from_str(value).unwrap(),
    );
    tokio_tungstenite::connect_async(request)
        .await
        .expect("WebSocket upgrade")
        .0
}

fn basic(user: &str) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{user}-pw"));
    format!("Basic {encoded}")
}

/// The ids and values of events up to `until` (an id), in order.
async fn ws_until(ws: &mut crate::subscribe::Ws, until: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let event = ws_next(ws).await;
        let done = event["id"] == until && event["type"] != "synced";
        seen.push(event);
        if done {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_and_sse_subscribers_see_only_what_they_may_read() {
    let Secured { server, .. } = secured().await;
    write(&server, "alice", "a1", json!({"owner": "alice"})).await;
    write(&server, "bob", "b1", json!({"owner": "bob"})).await;
    let bearer = token(
        Algorithm::HS256,
        json!({"sub": "alice", "roles": ["customer"]}),
    );
    let mut by_header = ws_as(&server, "/Order/", "authorization", &basic("alice")).await;
    let mut by_protocol = ws_as(
        &server,
        "/Order/",
        "sec-websocket-protocol",
        &format!("tablecast.bearer, {bearer}"),
    )
    .await;
    let sse = as_user(&server, reqwest::Method::GET, "/Order/", "alice")
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let mut sse = SseReader::read(sse);
    // Current values: hers only.
    for ws in [&mut by_header, &mut by_protocol] {
        let current = ws_next(ws).await;
        assert_eq!(
            (current["type"].as_str(), current["id"].as_str()),
            (Some("put"), Some("a1")),
            "{current}"
        );
        assert_eq!(ws_next(ws).await["type"], "synced");
    }
    // Changes: bob's are not delivered; carol's note on alice's order is not shown; when carol
    // gives alice's order to bob, alice is told it is gone from her sight.
    write(&server, "bob", "b2", json!({"owner": "bob"})).await;
    write(
        &server,
        "carol",
        "a1",
        json!({"owner": "alice", "internalNote": "vip"}),
    )
    .await;
    write(&server, "carol", "a1", json!({"owner": "bob"})).await;
    write(&server, "alice", "a2", json!({"owner": "alice"})).await;
    for ws in [&mut by_header, &mut by_protocol] {
        let events = ws_until(ws, "a2").await;
        let seen: Vec<(String, String)> = events
            .iter()
            .map(|e| {
                (
                    e["type"].as_str().unwrap().to_owned(),
                    e["id"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let expected = [("put", "a1"), ("delete", "a1"), ("put", "a2")];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(seen, expected, "{events:?}");
        assert!(
            !events.iter().any(|e| e.to_string().contains("vip")),
            "{events:?}"
        );
    }
    let mut sse_ids = Vec::new();
    while sse_ids.last().map(String::as_str) != Some("a2") {
        let event = sse.next().await;
        if let Some(data) = event.data
            && let Some(id) = data["id"].as_str()
        {
            assert!(!data.to_string().contains("vip"), "{data}");
            sse_ids.push(id.to_owned());
        }
    }
    assert!(!sse_ids.iter().any(|id| id.starts_with('b')), "{sse_ids:?}");
    // A subscription to a record of bob's is a subscription to nothing: bob's changes never come.
    let mut to_bobs = ws_as(&server, "/Order/b1", "authorization", &basic("alice")).await;
    assert_eq!(ws_next(&mut to_bobs).await["type"], "synced");
    write(&server, "bob", "b1", json!({"owner": "bob", "total": 1})).await;
    let nothing = tokio::time::timeout(Duration::from_millis(500), to_bobs.next()).await;
    assert!(nothing.is_err(), "alice got {nothing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_without_read_access_are_refused_before_the_upgrade() {
    let Secured { server, .. } = secured().await;
    let url = format!("{}/Order/", server.base.replacen("http", "ws", 1));
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("anonymous subscribed to Order: {other:?}"),
    }
    let sse = server
        .client
        .get(server.url("/Order/"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_clients_sign_in_with_connect_and_are_held_to_their_roles() {
    let Secured { server, .. } = secured().await;
    write(&server, "alice", "a1", json!({"owner": "alice"})).await;
    write(&server, "bob", "b1", json!({"owner": "bob"})).await;
    // Refused sign-ins, in each protocol's words.
    let mut options = rumqttc::MqttOptions::new("wrong", "127.0.0.1", server.mqtt.port());
    options.set_credentials("alice", "nope");
    let (_client, mut eventloop) = rumqttc::AsyncClient::new(options, 8);
    match eventloop.poll().await {
        Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
            assert_eq!(code, rumqttc::ConnectReturnCode::BadUserNamePassword)
        }
        other => panic!("a wrong password connected: {other:?}"),
    }
    let mut options = rumqttc::v5::MqttOptions::new("wrong5", "127.0.0.1", server.mqtt.port());
    options.set_credentials("alice", "nope");
    let (_client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 8);
    match eventloop.poll().await {
        Err(rumqttc::v5::ConnectionError::ConnectionRefused(code)) => {
            assert_eq!(code, v5p::ConnectReturnCode::BadUserNamePassword)
        }
        other => panic!("a wrong password connected: {other:?}"),
    }
    // alice, by password (3.1.1) and by token (5).
    let mut alice = Client311::connect_with(server.mqtt, "alice", |o| {
        o.set_credentials("alice", "alice-pw");
    })
    .await;
    assert!(matches!(
        alice.subscribe("Order/#").await,
        rumqttc::SubscribeReasonCode::Success(_)
    ));
    assert_eq!(alice.next_publish().await.topic, "Order/a1");
    assert_eq!(
        alice.subscribe("devices/bob/#").await,
        rumqttc::SubscribeReasonCode::Failure
    );
    assert_eq!(
        alice.subscribe("#").await,
        rumqttc::SubscribeReasonCode::Failure
    );
    let bearer = token(
        Algorithm::EdDSA,
        json!({"sub": "alice", "roles": ["customer"]}),
    );
    let mut alice5 = Client5::connect_with(server.mqtt, "alice5", |o| {
        o.set_credentials("", bearer.as_str());
    })
    .await;
    let refused = alice5.subscribe("devices/bob/#").await;
    assert_eq!(
        refused.return_codes,
        [v5p::SubscribeReasonCode::NotAuthorized]
    );
    // Writing bob's record, or as bob, is refused and changes nothing.
    let ack = alice5
        .publish("Order/b1", br#"{"owner":"alice"}"#, true)
        .await;
    assert_eq!(ack.reason, v5p::PubAckReason::NotAuthorized);
    let ack = alice5
        .publish("Order/a9", br#"{"owner":"bob"}"#, true)
        .await;
    assert_eq!(ack.reason, v5p::PubAckReason::NotAuthorized);
    let ack = alice5.publish("devices/bob/cmd", b"off", false).await;
    assert_eq!(ack.reason, v5p::PubAckReason::NotAuthorized);
    let b1: Value = as_user(&server, reqwest::Method::GET, "/Order/b1", "bob")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(b1["owner"], "bob");
    // Her own topics and records work.
    assert!(matches!(
        alice5.subscribe("devices/alice/#").await.return_codes[..],
        [v5p::SubscribeReasonCode::Success(_)]
    ));
    let ack = alice5.publish("devices/alice/temp", b"21", false).await;
    assert_eq!(ack.reason, v5p::PubAckReason::Success);
    assert_eq!(alice5.next_publish().await.payload.as_ref(), b"21");
    let ack = alice5
        .publish("Order/a2", br#"{"owner":"alice"}"#, true)
        .await;
    assert_eq!(ack.reason, v5p::PubAckReason::Success);
    // alice's 3.1.1 subscription to Order/# gets a2 but never bob's b1 change, and carol's note
    // on a3 never reaches her.
    write(&server, "bob", "b1", json!({"owner": "bob", "total": 2})).await;
    write(
        &server,
        "carol",
        "a3",
        json!({"owner": "alice", "internalNote": "vip"}),
    )
    .await;
    let mut topics = Vec::new();
    loop {
        let publish = alice.next_publish().await;
        assert!(!String::from_utf8_lossy(&publish.payload).contains("vip"));
        topics.push(publish.topic);
        if topics.last().map(String::as_str) == Some("Order/a3") {
            break;
        }
    }
    assert_eq!(topics, ["Order/a2", "Order/a3"]);
}

async fn mosquitto(program: &str, args: &[&str]) -> std::process::Output {
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{program} runs (Debian package mosquitto-clients): {e}"));
    tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("mosquitto exits")
        .expect("output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_sign_in_with_u_and_p() {
    let Secured { server, .. } = secured().await;
    write(
        &server,
        "alice",
        "a1",
        json!({"owner": "alice", "total": 5}),
    )
    .await;
    write(&server, "bob", "b1", json!({"owner": "bob"})).await;
    let port = server.mqtt.port().to_string();
    for version in ["mqttv311", "mqttv5"] {
        let common = ["-h", "127.0.0.1", "-p", &port, "-V", version];
        let read = mosquitto(
            "mosquitto_sub",
            &[
                &common[..],
                &[
                    "-u", "alice", "-P", "alice-pw", "-t", "Order/#", "-C", "1", "-W", "10", "-v",
                ],
            ]
            .concat(),
        )
        .await;
        let printed = String::from_utf8_lossy(&read.stdout);
        assert!(
            read.status.success() && printed.starts_with("Order/a1 "),
            "{version}: {printed} {}",
            String::from_utf8_lossy(&read.stderr)
        );
        let wrong = mosquitto(
            "mosquitto_pub",
            &[
                &common[..],
                &[
                    "-u",
                    "alice",
                    "-P",
                    "wrong",
                    "-t",
                    "devices/alice/x",
                    "-m",
                    "1",
                ],
            ]
            .concat(),
        )
        .await;
        assert!(
            !wrong.status.success(),
            "{version}: a wrong password published"
        );
        let said = String::from_utf8_lossy(&wrong.stderr).to_lowercase();
        assert!(
            said.contains("password") || said.contains("not authori"),
            "{version}: {said}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_publisher_past_its_rate_is_disconnected_with_0x96() {
    let Secured { server, .. } = secured().await;
    // `limited` may make 3 requests a minute.
    let mut limited = Client5::connect_with(server.mqtt, "limited", |o| {
        o.set_credentials("limited", "limited-pw");
    })
    .await;
    for _ in 0..3 {
        let ack = limited.publish("devices/limited/x", b"1", false).await;
        assert_eq!(
            ack.reason,
            v5p::PubAckReason::NotAuthorized,
            "its role has no topics"
        );
    }
    limited
        .client
        .publish(
            "devices/limited/x",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            b"1".to_vec(),
        )
        .await
        .unwrap();
    // rumqttc reports the server's DISCONNECT as the end of its event loop, with the reason.
    let ended = loop {
        let next = tokio::time::timeout(Duration::from_secs(20), limited.incoming().recv()).await;
        match next
            .expect("the server answers in time")
            .expect("the client runs")
        {
            Ok(_) => continue,
            Err(error) => break error,
        }
    };
    assert!(ended.contains("MessageRateTooHigh"), "{ended}");
    // Others publish on.
    let mut alice = Client5::connect_with(server.mqtt, "alice", |o| {
        o.set_credentials("alice", "alice-pw");
    })
    .await;
    let ack = alice.publish("devices/alice/x", b"1", false).await;
    assert_eq!(ack.reason, v5p::PubAckReason::Success);
}

#[tokio::test]
async fn a_client_id_and_its_persistent_session_belong_to_their_user() {
    let Secured { server, .. } = secured().await;
    let as_user = |user: &'static str, password: &'static str| {
        move |o: &mut rumqttc::MqttOptions| {
            o.set_credentials(user, password);
            o.set_clean_session(false);
        }
    };
    let mut alice =
        Client311::connect_with(server.mqtt, "phone", as_user("alice", "alice-pw")).await;
    assert!(matches!(
        alice.subscribe("devices/alice/#").await,
        rumqttc::SubscribeReasonCode::Success(_)
    ));
    // Another user's client cannot take the connected client id over...
    let refused = |user, password| async move {
        let mut options = rumqttc::MqttOptions::new("phone", "127.0.0.1", server.mqtt.port());
        options.set_credentials(user, password);
        options.set_clean_session(false);
        let (_client, mut eventloop) = rumqttc::AsyncClient::new(options, 8);
        eventloop.poll().await
    };
    let taken = refused("bob", "bob-pw").await;
    assert!(
        matches!(
            taken,
            Err(rumqttc::ConnectionError::ConnectionRefused(
                rumqttc::ConnectReturnCode::NotAuthorized
            ))
        ),
        "{taken:?}"
    );
    alice.task.abort();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // ...nor take or end the session it left.
    let taken = refused("bob", "bob-pw").await;
    assert!(
        matches!(taken, Err(rumqttc::ConnectionError::ConnectionRefused(_))),
        "{taken:?}"
    );
    let alice = Client311::connect_with(server.mqtt, "phone", as_user("alice", "alice-pw")).await;
    assert!(alice.session_present, "still alice's");
    server.stop().await;
}
