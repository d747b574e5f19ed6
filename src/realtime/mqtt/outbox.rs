//! What a session sends: packets encoded into one buffer until the session writes it out, and
//! the window of QoS 1 and 2 deliveries awaiting acknowledgement, bounded by the client's Receive
//! Maximum.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rumqttd::protocol::{Packet, PubRel, PubRelReason, QoS};

use super::codec::{self, Codec};
use super::properties::Forwarded;
use super::sys::Stats;

/// QoS 1 and 2 deliveries awaiting acknowledgement, at most (lower if the client asks).
const MAX_IN_FLIGHT: u16 = 1024;
/// Deliveries waiting for room in the window, at most: as many as the broker may retain, so
/// one subscription gets them all, while SUBSCRIBE after SUBSCRIBE cannot grow it further.
pub const MAX_QUEUED: usize = super::broker::MAX_RETAINED;

/// A message to deliver.
#[derive(Clone, Debug, Default)]
pub struct Delivery {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// The MQTT 5 properties it travels with.
    pub properties: Option<Arc<Forwarded>>,
    /// The identifiers of the subscriptions it matched.
    pub subscription_ids: Vec<usize>,
}

/// Where a delivery came from, which decides what its acknowledgement settles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A plain-topic message kept in the session's store under this sequence number.
    Kept(u64),
    /// A table change at this change-log position.
    Change(u64),
    /// Anything else: current values, retained messages, a clean session's messages.
    Passing,
}

/// A delivery awaiting acknowledgement.
struct InFlight {
    origin: Origin,
    qos: QoS,
    /// A QoS 2 delivery the client received (PUBREC): PUBREL sent, PUBCOMP awaited.
    released: bool,
}

/// The outgoing side of one connection.
pub struct Outbox {
    codec: Codec,
    out: BytesMut,
    in_flight: HashMap<u16, InFlight>,
    window: u16,
    next_pkid: u16,
    /// Deliveries waiting for room in the window.
    queued: VecDeque<(Delivery, Origin)>,
    client_id: String,
    stats: Arc<Stats>,
    /// The largest packet the client accepts (MQTT 5 Maximum Packet Size).
    max_packet: usize,
}

impl Outbox {
    /// An empty outbox; `receive_maximum` and `max_packet` are the client's, if it gave them.
    pub fn new(
        codec: Codec,
        (receive_maximum, max_packet): (Option<u16>, Option<u32>),
        client_id: String,
        stats: Arc<Stats>,
    ) -> Outbox {
        Outbox {
            codec,
            out: BytesMut::with_capacity(4096),
            in_flight: HashMap::new(),
            window: receive_maximum
                .unwrap_or(MAX_IN_FLIGHT)
                .clamp(1, MAX_IN_FLIGHT),
            next_pkid: 0,
            queued: VecDeque::new(),
            client_id,
            stats,
            max_packet: max_packet.map_or(usize::MAX, |max| max as usize),
        }
    }

    /// Encodes `packet` for sending.
    pub fn send(&mut self, packet: Packet) {
        if let Err(error) = self.codec.write(packet, &mut self.out) {
            tracing::error!(client = %self.client_id, %error, "could not encode an MQTT packet");
        }
    }

    /// Encodes a PUBLISH to the client; returns its packet id (0 at QoS 0), or `None` if it is
    /// not sent: it expired, or is larger than the client accepts (dropped, as MQTT-3.1.2-25
    /// asks).
    pub fn deliver(&mut self, delivery: &Delivery, origin: Origin) -> Option<u16> {
        let pkid = match delivery.qos {
            QoS::AtMostOnce => 0,
            QoS::AtLeastOnce | QoS::ExactlyOnce => self.allocate_pkid(),
        };
        self.publish(delivery, origin, pkid, false).then_some(pkid)
    }

    /// Sends again, with DUP set, a delivery the session had sent as `pkid` before the client
    /// reconnected; or only its PUBREL, if the client had received it. False if it is not sent
    /// (see [`Outbox::deliver`]).
    pub fn resend(
        &mut self,
        delivery: &Delivery,
        origin: Origin,
        pkid: u16,
        released: bool,
    ) -> bool {
        if !released {
            return self.publish(delivery, origin, pkid, true);
        }
        let in_flight = InFlight {
            origin,
            qos: QoS::ExactlyOnce,
            released: true,
        };
        self.in_flight.insert(pkid, in_flight);
        self.release(pkid);
        true
    }

    fn publish(&mut self, delivery: &Delivery, origin: Origin, pkid: u16, dup: bool) -> bool {
        let Delivery {
            topic,
            payload,
            qos,
            retain,
            properties,
            subscription_ids,
        } = delivery;
        // A message whose delivery began is sent again even if it expired since (MQTT 5,
        // 3.3.2.3.3).
        if !dup && properties.as_ref().is_some_and(|p| p.expired()) {
            return false;
        }
        let properties = match properties {
            Some(forwarded) => Some(forwarded.to_send(subscription_ids.clone())),
            None if subscription_ids.is_empty() => None,
            None => Some(Forwarded::default().to_send(subscription_ids.clone())),
        };
        let publish = codec::publish(topic, payload, *qos, pkid, *retain, dup);
        let before = self.out.len();
        self.send(Packet::Publish(publish, properties));
        if self.out.len() - before > self.max_packet {
            self.out.truncate(before);
            tracing::debug!(client = %self.client_id, topic, "a delivery larger than the client's Maximum Packet Size was dropped");
            return false;
        }
        if *qos != QoS::AtMostOnce {
            let in_flight = InFlight {
                origin,
                qos: *qos,
                released: false,
            };
            self.in_flight.insert(pkid, in_flight);
        }
        Stats::count(&self.stats.sent);
        true
    }

    /// Keeps a delivery until the window has room; false if [`MAX_QUEUED`] are waiting
    /// already.
    pub fn queue(&mut self, delivery: Delivery, origin: Origin) -> bool {
        if self.queued.len() >= MAX_QUEUED {
            return false;
        }
        self.queued.push_back((delivery, origin));
        true
    }

    /// Whether the window has room for another acknowledged delivery.
    pub fn has_room(&self) -> bool {
        self.in_flight.len() < usize::from(self.window)
    }

    /// The next queued delivery, if there is room to send it.
    pub fn next_queued(&mut self) -> Option<(Delivery, Origin)> {
        if self.has_room() {
            self.queued.pop_front()
        } else {
            None
        }
    }

    /// The client acknowledged QoS 1 delivery `pkid` (PUBACK); what it settles.
    pub fn acknowledged(&mut self, pkid: u16) -> Option<Origin> {
        self.settle(pkid, QoS::AtLeastOnce, false)
    }

    /// The client received QoS 2 delivery `pkid` (PUBREC): it is released (a PUBREL is
    /// sent) if the client accepted it, or settled if it refused it (a reason of 0x80 or more).
    /// Returns the delivery's origin, and whether it is settled.
    pub fn received(&mut self, pkid: u16, accepted: bool) -> Option<(Origin, bool)> {
        if !accepted {
            return self
                .settle(pkid, QoS::ExactlyOnce, false)
                .map(|origin| (origin, true));
        }
        let in_flight = self
            .in_flight
            .get_mut(&pkid)
            .filter(|f| f.qos == QoS::ExactlyOnce)?;
        let origin = in_flight.origin;
        in_flight.released = true;
        self.release(pkid);
        Some((origin, false))
    }

    /// The client completed QoS 2 delivery `pkid` (PUBCOMP); what it settles.
    pub fn completed(&mut self, pkid: u16) -> Option<Origin> {
        self.settle(pkid, QoS::ExactlyOnce, true)
    }

    fn settle(&mut self, pkid: u16, qos: QoS, released: bool) -> Option<Origin> {
        let matches = self
            .in_flight
            .get(&pkid)
            .is_some_and(|f| f.qos == qos && f.released == released);
        matches.then(|| self.in_flight.remove(&pkid).expect("present").origin)
    }

    fn release(&mut self, pkid: u16) {
        let release = PubRel {
            pkid,
            reason: PubRelReason::Success,
        };
        self.send(Packet::PubRel(release, None));
    }

    /// The table changes in flight, by change-log position.
    pub fn changes_in_flight(&self) -> impl Iterator<Item = u64> + '_ {
        self.in_flight.values().filter_map(|f| match f.origin {
            Origin::Change(seq) => Some(seq),
            Origin::Kept(_) | Origin::Passing => None,
        })
    }

    /// The QoS 1 deliveries of kept messages in flight: their packet ids and sequence numbers.
    pub fn kept_in_flight(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        self.in_flight
            .iter()
            .filter_map(|(&pkid, f)| match f.origin {
                Origin::Kept(seq) if f.qos == QoS::AtLeastOnce => Some((pkid, seq)),
                _ => None,
            })
    }

    /// The bytes encoded since the last call, if any.
    pub fn take(&mut self) -> Option<Bytes> {
        (!self.out.is_empty()).then(|| self.out.split().freeze())
    }

    fn allocate_pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if !self.in_flight.contains_key(&self.next_pkid) {
                return self.next_pkid;
            }
        }
    }
}
