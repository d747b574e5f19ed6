//! What a persistent session keeps of itself while its client is connected, and how it is
//! taken back on reconnect and kept when the client leaves (`sessions.rs` holds it meanwhile).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant as StdInstant};

use rumqttd::protocol::QoS;

use super::Session;
use crate::error::Chain;
use crate::realtime::mqtt::codec::Version;
use crate::realtime::mqtt::outbox::{Delivery, Origin};
use crate::realtime::mqtt::sessions::{Kept, KeptGrant, Resumed, Stored};

/// How often, at most, a persistent session's position in the change log is saved while its
/// client is connected (it is always saved when the client leaves).
const SAVE_POSITION_EVERY: Duration = Duration::from_secs(1);

/// What a session keeps of itself while its client is connected, if it is persistent.
pub(super) struct Keeping {
    /// Seconds the session outlives the connection; 0: it ends with it, and nothing is kept.
    pub(super) expiry: u32,
    /// The sequence number of the next plain-topic message kept.
    pub(super) next_seq: u64,
    /// The change-log position through which table changes were sent (or were in the current
    /// values sent).
    pub(super) table_through: u64,
    /// The position last saved, and when.
    pub(super) saved_through: u64,
    pub(super) saved_at: StdInstant,
}

impl Session {
    pub(super) fn persistent(&self) -> bool {
        self.keeping.expiry > 0
    }

    /// Takes back what a persistent session kept: its subscriptions (table topics resume from
    /// the change-log position it had reached), the QoS 2 publishes awaiting release, and its
    /// messages: those sent before are sent again with DUP, the others queued.
    pub(super) fn restore(&mut self, resumed: Option<Resumed>) {
        let resuming = resumed.is_some();
        if let Some(Resumed {
            kept,
            messages,
            next_seq,
        }) = resumed
        {
            let catalog = self.shared.realtime.catalog().clone();
            let v5 = self.codec.version() == Version::V5;
            for grant in kept.grants.iter().filter_map(KeptGrant::grant) {
                // What the client may subscribe to may have changed since (the access file).
                if let Err((_, why)) = self.permitted(grant.filter.clone(), v5) {
                    tracing::warn!(client = %self.client_id, filter = %grant.filter, "a persistent session's subscription is no longer allowed: {why}");
                    continue;
                }
                let filter = grant.filter.clone();
                let shared = grant.share.is_some();
                self.shared.broker.join(&grant, &self.client_id);
                self.grants.restore(grant);
                self.shared
                    .stats
                    .subscriptions
                    .fetch_add(1, Ordering::Relaxed);
                if !shared
                    && catalog
                        .resources()
                        .any(|r| filter.may_match_table(r.table().name()))
                    && let Err(error) = self.subscription.resume(filter, kept.table_since)
                {
                    tracing::error!(client = %self.client_id, error = %Chain(&error), "could not resume a subscription");
                }
            }
            self.awaiting_release.extend(kept.awaiting_release);
            for Stored {
                seq,
                delivery,
                pkid,
                released,
            } in messages
            {
                if pkid == 0 {
                    // At most --mqtt-max-queued of them, and still kept if not queued now.
                    self.outbox.queue(delivery, Origin::Kept(seq));
                } else if !self
                    .outbox
                    .resend(&delivery, Origin::Kept(seq), pkid, released)
                {
                    self.settled(Some(Origin::Kept(seq)), delivery.qos);
                }
            }
            self.keeping.next_seq = next_seq;
            self.keeping.table_through = kept.table_since;
            if kept.dropped > 0 {
                tracing::warn!(client = %self.client_id, dropped = kept.dropped, "an MQTT client's session dropped messages while it was away (--mqtt-max-queued)");
            }
        }
        if self.persistent() {
            self.save();
        } else if resuming
            && let Err(error) = self.shared.broker.sessions().discard(&self.client_id)
        {
            tracing::error!(client = %self.client_id, error = %Chain(&error), "could not remove an MQTT session");
        }
    }

    /// What the session keeps of itself now.
    pub(super) fn kept(&self) -> Kept {
        let in_flight = self.outbox.changes_in_flight().min();
        Kept {
            expiry: self.keeping.expiry,
            grants: self.grants.iter().map(KeptGrant::of).collect(),
            table_since: in_flight.map_or(self.keeping.table_through, |seq| seq - 1),
            awaiting_release: self.awaiting_release.iter().copied().collect(),
            left_at: None,
            dropped: 0,
            owner: self.identity.user.clone(),
        }
    }

    /// Saves the session's state, if it is persistent.
    pub(super) fn save(&mut self) {
        if !self.persistent() {
            return;
        }
        let kept = self.kept();
        self.keeping.saved_through = kept.table_since;
        self.keeping.saved_at = StdInstant::now();
        if let Err(error) = self.shared.broker.sessions().save(&self.client_id, &kept) {
            tracing::error!(client = %self.client_id, error = %Chain(&error), "could not save an MQTT session");
        }
    }

    /// Saves the session's position in the change log if it moved and was not saved lately: a
    /// server killed meanwhile replays no more than that from the log on reconnect.
    pub(super) fn save_position(&mut self) {
        let moved = self.keeping.table_through != self.keeping.saved_through;
        if moved && self.keeping.saved_at.elapsed() >= SAVE_POSITION_EVERY {
            self.save();
        }
    }

    /// The client is gone: a persistent session is kept for its return, with the messages that
    /// reached it and it had not read; any other ends. Queued messages the store keeps stay
    /// there; the others (retained messages due on a subscribe) are not the session's to keep.
    pub(super) fn leave(mut self) {
        self.write_pending(true);
        if self.persistent() {
            let sent: Vec<(u16, u64)> = self.outbox.kept_in_flight().collect();
            if let Err(error) = self
                .shared
                .broker
                .sessions()
                .mark_sent(&self.client_id, sent)
            {
                tracing::error!(client = %self.client_id, error = %Chain(&error), "could not keep an MQTT session's deliveries in flight");
            }
        }
        let held = self.grants.iter().count() as u64;
        self.shared
            .stats
            .subscriptions
            .fetch_sub(held, Ordering::Relaxed);
        let sessions = self.shared.broker.sessions();
        let kept = if self.persistent() {
            self.kept()
        } else {
            self.shared.broker.quit(None, &self.client_id);
            if let Err(error) = sessions.discard(&self.client_id) {
                tracing::error!(client = %self.client_id, error = %Chain(&error), "could not remove an MQTT session");
            }
            return;
        };
        let parked = self.shared.broker.park(
            &self.client_id,
            kept,
            self.keeping.next_seq,
            (&self.grants, self.messages),
        );
        if let Err(error) = parked {
            tracing::error!(client = %self.client_id, error = %Chain(&error), "could not keep an MQTT session");
        }
    }

    /// Sends a message the session's store keeps (`fresh`: is to keep), noting the packet id it
    /// goes with; one that is not sent (expired, too large for the client) is forgotten.
    pub(super) fn send_kept(&mut self, delivery: Delivery, seq: u64, fresh: bool) {
        let qos = delivery.qos;
        match self.outbox.deliver(&delivery, Origin::Kept(seq)) {
            Some(pkid) => {
                let stored = Stored {
                    seq,
                    delivery,
                    pkid,
                    released: false,
                };
                match (qos, fresh) {
                    (QoS::ExactlyOnce, _) => self.keep(&stored),
                    (_, true) => self.pending.keep(stored),
                    // Already in the store: its packet id is noted if it is still in flight
                    // when the client leaves.
                    (_, false) => {}
                }
            }
            None => self.settled(Some(Origin::Kept(seq)), qos),
        }
    }

    /// Writes the pending changes to kept messages, if they are due (or `now`).
    pub(super) fn write_pending(&mut self, now: bool) {
        if self.pending.is_empty() || !(now || self.pending.is_due()) {
            return;
        }
        let sessions = self.shared.broker.sessions();
        if let Err(error) = sessions.write(&self.client_id, &mut self.pending) {
            tracing::error!(client = %self.client_id, error = %Chain(&error), "could not keep an MQTT session's messages");
        }
    }

    /// Keeps a message in the session's store.
    pub(super) fn keep(&self, stored: &Stored) {
        if let Err(error) = self.shared.broker.sessions().store(&self.client_id, stored) {
            tracing::error!(client = %self.client_id, error = %Chain(&error), "could not keep an MQTT message");
        }
    }

    /// A delivery at `qos` was acknowledged: one the store kept is forgotten (a QoS 2 one at
    /// once: it must not come again).
    pub(super) fn settled(&mut self, origin: Option<Origin>, qos: QoS) {
        let Some(Origin::Kept(seq)) = origin.filter(|_| self.persistent()) else {
            return;
        };
        if qos != QoS::ExactlyOnce {
            self.pending.forget(seq);
            return;
        }
        if let Err(error) = self
            .shared
            .broker
            .sessions()
            .delivered(&self.client_id, seq)
        {
            tracing::error!(client = %self.client_id, error = %Chain(&error), "could not forget a delivered MQTT message");
        }
    }
}
