//! Last wills: published when a connection ends without a clean DISCONNECT, at once or after
//! their MQTT 5 Will Delay Interval.

use std::sync::Arc;
use std::time::Duration;

use rumqttd::protocol::LastWill;

use crate::access::Identity;
use crate::realtime::mqtt::Shared;
use crate::realtime::mqtt::broker::Publisher;
use crate::realtime::mqtt::connect::Will;
use crate::realtime::mqtt::publish;

/// Publishes the will of a connection that ended, as `publisher`, who is `identity`.
pub(super) async fn publish_will(
    shared: Arc<Shared>,
    publisher: Publisher,
    identity: Arc<Identity>,
    will: Will,
) {
    let forwarded = will.forwarded();
    let LastWill {
        topic,
        message,
        qos,
        retain,
    } = will.message;
    let Ok(topic) = String::from_utf8(topic.to_vec()) else {
        return;
    };
    let from = (&publisher, identity.as_ref());
    let applying = publish::accept(&shared, from, &topic, (message, qos, retain), forwarded);
    let outcome = applying
        .await
        .and_then(|relay| relay.map_or(Ok(false), |relay| publish::relay(&shared, relay)));
    if let Err(refusal) = outcome {
        refusal.log(&publisher.client, &topic);
    }
}

/// Publishes a will after its Will Delay Interval, or when the session ends if that comes
/// first; a client that connects again before then takes its session back and the will is not
/// published (unless it starts a clean session, which ends the old one: the will goes at once).
pub(super) fn defer_will(
    shared: Arc<Shared>,
    publisher: Publisher,
    identity: Arc<Identity>,
    will: Will,
    delay: Duration,
) {
    let returned = shared.broker.defer_will(&publisher.client);
    tokio::spawn(async move {
        let publish = tokio::select! {
            () = tokio::time::sleep(delay) => true,
            clean = returned => clean.unwrap_or(false),
        };
        if publish {
            publish_will(shared, publisher, identity, will).await;
        }
    });
}
