//! `$SYS/broker/...`: the broker's statistics, published as retained messages every
//! [`SYS_INTERVAL`], under the topic names Mosquitto uses, so its dashboards and scripts work.
//! `#` and `+` never match `$SYS` topics (MQTT-4.7.2-1): a client subscribes to `$SYS/#`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttd::protocol::QoS;

use super::broker::{Broker, Message, Publisher};

/// How often the statistics are published (Mosquitto's default `sys_interval`).
pub const SYS_INTERVAL: Duration = Duration::from_secs(10);

/// Counters every session adds to.
#[derive(Default)]
pub struct Stats {
    /// PUBLISH packets received from clients.
    pub received: AtomicU64,
    /// PUBLISH packets sent to clients.
    pub sent: AtomicU64,
    /// Subscriptions held by connected clients.
    pub subscriptions: AtomicU64,
}

impl Stats {
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Publishes the statistics once.
pub fn publish(broker: &Broker, stats: &Stats, started: Instant) {
    let (away, away_subscriptions) = {
        let away = broker.sessions().lock();
        (away.count(), away.subscriptions())
    };
    let subscriptions = stats.subscriptions.load(Ordering::Relaxed) + away_subscriptions as u64;
    let values = [
        (
            "version",
            format!("tablecast {}", env!("CARGO_PKG_VERSION")),
        ),
        ("uptime", format!("{} seconds", started.elapsed().as_secs())),
        ("clients/connected", broker.connected().to_string()),
        ("clients/disconnected", away.to_string()),
        ("clients/total", (broker.connected() + away).to_string()),
        (
            "messages/received",
            stats.received.load(Ordering::Relaxed).to_string(),
        ),
        (
            "messages/sent",
            stats.sent.load(Ordering::Relaxed).to_string(),
        ),
        ("subscriptions/count", subscriptions.to_string()),
        (
            "retained messages/count",
            broker.retained_count().to_string(),
        ),
    ];
    let from = Publisher {
        session: 0,
        client: Arc::from("$SYS"),
    };
    for (name, value) in values {
        let message = Message {
            topic: format!("$SYS/broker/{name}"),
            payload: Bytes::from(value),
            qos: QoS::AtMostOnce,
            retain: true,
            from: from.clone(),
            properties: None,
            chosen: Vec::new(),
        };
        if let Err(error) = broker.publish(message) {
            tracing::debug!("could not publish $SYS/broker/{name}: {error}");
        }
    }
}
