//! What a session delivers: table records and changes, plain-topic messages, and what waits
//! for room in the window.

use std::sync::Arc;

use rumqttd::protocol::QoS;

use super::{RESYNC_TOPIC, Session};
use crate::bus::{self, RecvError, TryRecvError};
use crate::events::ChangeKind;
use crate::realtime::Item;
use crate::realtime::mqtt::broker::Message;
use crate::realtime::mqtt::grants::lower;
use crate::realtime::mqtt::outbox::{Delivery, Origin};

/// Deliveries encoded at most before the session writes them out: one write for many small
/// messages, and still a bounded wait for the packets to acknowledge.
const BATCH: usize = 256;

impl Session {
    /// The QoS a table's record goes at by a grant of `granted`. A persistent session gets them
    /// at QoS 1 at most: a reconnect replays changes from the change log, which is at least
    /// once, not exactly once.
    pub(super) fn table_qos(&self, granted: QoS) -> QoS {
        match self.persistent() {
            true => lower(granted, QoS::AtLeastOnce),
            false => granted,
        }
    }

    /// Sends a subscription item to the client.
    pub(super) fn deliver_item(&mut self, item: &Item) {
        let (event, current) = match item {
            Item::Change(event) => (event.as_ref(), false),
            Item::Current(event) => (event, true),
            Item::Synced { seq, .. } => {
                self.keeping.table_through = self.keeping.table_through.max(*seq);
                return;
            }
            Item::Resync => {
                // Only a client that subscribed to the resync topic hears of it; every client
                // gets the current values that follow, as retained messages.
                let granted = self
                    .grants
                    .best(|g| g.takes(RESYNC_TOPIC, &[], &self.client_id));
                if let Some(granted) = granted {
                    let delivery = Delivery {
                        topic: RESYNC_TOPIC.to_owned(),
                        payload: bytes::Bytes::from_static(br#"{"type":"resync"}"#),
                        qos: self.table_qos(granted.qos),
                        subscription_ids: granted.subscription_ids,
                        ..Delivery::default()
                    };
                    self.outbox.deliver(&delivery, Origin::Passing);
                }
                return;
            }
        };
        let change = event.seq.filter(|_| !current);
        if let Some(seq) = change {
            self.keeping.table_through = self.keeping.table_through.max(seq);
        }
        let Some(granted) = self
            .grants
            .best(|g| g.takes_record(&event.table, &event.id))
        else {
            return;
        };
        let retain = granted.retain_as_published && event.kind != ChangeKind::Message;
        let delivery = Delivery {
            topic: format!("{}/{}", event.table, event.id),
            payload: event.value.clone().unwrap_or_default(),
            qos: self.table_qos(granted.qos),
            retain: current || retain,
            properties: None,
            subscription_ids: granted.subscription_ids,
        };
        self.outbox
            .deliver(&delivery, change.map_or(Origin::Passing, Origin::Change));
    }

    pub(super) fn deliver_message(&mut self, message: &Message) {
        let from_here = message.from.session == self.number;
        let Some(delivery) = message.delivery(&self.grants, &self.client_id, from_here) else {
            return;
        };
        if self.persistent() && delivery.qos != QoS::AtMostOnce {
            let seq = self.keeping.next_seq;
            self.keeping.next_seq += 1;
            self.send_kept(delivery, seq, true);
        } else {
            self.outbox.deliver(&delivery, Origin::Passing);
        }
    }

    /// Delivers the plain-topic messages that have already arrived, a batch at most, while the
    /// window has room.
    pub(super) fn deliver_ready_messages(&mut self) {
        for _ in 1..BATCH {
            if !self.outbox.has_room() {
                return;
            }
            let Some(messages) = &mut self.messages else {
                return;
            };
            match messages.try_recv() {
                Ok(message) => self.deliver_message(&message),
                Err(TryRecvError::Lagged(missed)) => self.missed(missed),
                Err(TryRecvError::Empty | TryRecvError::Closed) => return,
            }
        }
    }

    pub(super) fn missed(&self, missed: u64) {
        tracing::warn!(
            client = %self.client_id, missed,
            "an MQTT client fell behind on plain-topic messages; they were dropped"
        );
    }

    /// Sends queued deliveries while the window has room, a batch at most; false if there was
    /// nothing to do.
    pub(super) fn release_queued(&mut self) -> bool {
        let mut released = false;
        for _ in 0..BATCH {
            let Some((delivery, origin)) = self.outbox.next_queued() else {
                break;
            };
            match origin {
                Origin::Kept(seq) => self.send_kept(delivery, seq, false),
                Origin::Change(_) | Origin::Passing => {
                    self.outbox.deliver(&delivery, origin);
                }
            }
            released = true;
        }
        released
    }

    /// Listens to plain-topic messages while the session holds a subscription, and only then: a
    /// session that only publishes is not woken by every message.
    pub(super) fn listen_if_subscribed(&mut self) {
        match (self.grants.len(), &self.messages) {
            (0, Some(_)) => self.messages = None,
            (1.., None) => self.messages = Some(self.shared.broker.listen()),
            _ => {}
        }
    }
}

/// The next plain-topic message, if the session listens.
pub(super) async fn next_message(
    messages: &mut Option<bus::Receiver<Message>>,
) -> Result<Arc<Message>, RecvError> {
    match messages {
        Some(messages) => messages.recv().await,
        None => std::future::pending().await,
    }
}
