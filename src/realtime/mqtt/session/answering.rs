//! A publish's turn: relayed in the order it arrived, then acknowledged in that order too, once
//! what it did is durable (a record's commit, or the fsync of a message kept for an absent
//! client).

use rumqttd::protocol::{Packet, PubRec, PubRecReason, QoS};

use super::{Answer, Applied, ERRORS_TOPIC, Session};
use crate::realtime::mqtt::codec::Version;
use crate::realtime::mqtt::outbox::{Delivery, Origin};
use crate::realtime::mqtt::publish::{self, Refusal, Relay};

impl Session {
    /// Completes a publish whose turn has come: relays it if it is a message, logs a refusal,
    /// and acknowledges it.
    pub(super) fn finish(&mut self, applied: Applied) {
        let Applied {
            topic,
            qos,
            pkid,
            outcome,
        } = applied;
        let outcome = outcome.and_then(|relay| self.relay(relay));
        let kept = matches!(outcome, Ok(true)) && qos != QoS::AtMostOnce;
        let answer = Answer {
            topic,
            qos,
            pkid,
            outcome: outcome.map(drop),
        };
        if kept {
            // Kept for an absent client: acknowledged once on disk (the fsync is shared with
            // the publishes around it), still in its turn.
            let shared = self.shared.clone();
            self.answering.push_back(Box::pin(async move {
                let flushed = shared.broker.sessions().flush().await;
                Answer {
                    outcome: flushed.map_err(Refusal::Domain),
                    ..answer
                }
            }));
        } else if !self.answering.is_empty() {
            self.answering
                .push_back(Box::pin(std::future::ready(answer)));
        } else {
            self.answer(answer);
        }
    }

    /// Acknowledges a publish whose turn has come, or logs its refusal.
    pub(super) fn answer(&mut self, answer: Answer) {
        let Answer {
            topic,
            qos,
            pkid,
            outcome,
        } = answer;
        if qos != QoS::AtMostOnce {
            self.answers_owed -= 1;
        }
        if qos == QoS::ExactlyOnce {
            self.receiving.remove(&pkid);
        }
        if let Err(refusal) = &outcome {
            refusal.log(&self.client_id, &topic);
            self.tell_refusal(&topic, refusal);
            let v311 = self.codec.version() == Version::V311;
            if v311 && matches!(refusal, Refusal::RetainedFull(_)) {
                // Not acknowledged: 3.1.1 would say it succeeded.
                self.over_quota = true;
                return;
            }
        }
        if let Some(ack) = publish::acknowledgement(self.codec.version(), qos, pkid, &outcome) {
            if let Packet::PubRec(
                PubRec {
                    reason: PubRecReason::Success,
                    ..
                },
                _,
            ) = &ack
            {
                self.awaiting_release.insert(pkid);
                self.save();
            }
            self.outbox.send(ack);
        }
    }

    /// `$tablecast/errors/<client id>`: only this client may subscribe to it, and only the
    /// server publishes on it.
    pub(super) fn errors_topic(&self) -> String {
        format!("{ERRORS_TOPIC}{}", self.client_id)
    }

    /// Tells the client why its publish to `topic` was refused, on its errors topic if it
    /// subscribed to it: `{"topic", "code", "detail"}`, as an HTTP problem would say it.
    fn tell_refusal(&mut self, topic: &str, refusal: &Refusal) {
        let errors = self.errors_topic();
        let Some(granted) = self.grants.best(|g| g.takes(&errors, &[], &self.client_id)) else {
            return;
        };
        let told = serde_json::json!({
            "topic": topic,
            "code": refusal.code(),
            "detail": refusal.detail(),
        });
        let delivery = Delivery {
            topic: errors,
            payload: told.to_string().into(),
            qos: granted.qos,
            subscription_ids: granted.subscription_ids,
            ..Delivery::default()
        };
        self.outbox.deliver(&delivery, Origin::Passing);
    }

    /// Relays what a publish asked to, if anything; true if it was kept for an absent client.
    pub(super) fn relay(&self, relay: Option<Relay>) -> Result<bool, Refusal> {
        relay.map_or(Ok(false), |relay| publish::relay(&self.shared, relay))
    }
}
