//! What a session sends: packets encoded into one buffer until the session writes it out, and
//! the QoS 1 window (deliveries awaiting PUBACK, bounded by the client's Receive Maximum).

use std::collections::{HashSet, VecDeque};

use bytes::{Bytes, BytesMut};
use rumqttd::protocol::{Packet, QoS};

use super::codec::{self, Codec};

/// QoS 1 deliveries awaiting acknowledgement, at most (lower if the client asks).
const MAX_IN_FLIGHT: u16 = 1024;

/// The outgoing side of one connection.
pub struct Outbox {
    codec: Codec,
    out: BytesMut,
    /// Packet ids of QoS 1 deliveries not yet acknowledged.
    in_flight: HashSet<u16>,
    window: u16,
    next_pkid: u16,
    /// Deliveries waiting for room in the window (retained plain-broker messages).
    queued: VecDeque<(String, Bytes, QoS)>,
    client_id: String,
}

impl Outbox {
    /// An empty outbox; `receive_maximum` is the client's, if it gave one.
    pub fn new(codec: Codec, receive_maximum: Option<u16>, client_id: String) -> Outbox {
        Outbox {
            codec,
            out: BytesMut::with_capacity(4096),
            in_flight: HashSet::new(),
            window: receive_maximum
                .unwrap_or(MAX_IN_FLIGHT)
                .clamp(1, MAX_IN_FLIGHT),
            next_pkid: 0,
            queued: VecDeque::new(),
            client_id,
        }
    }

    /// Encodes `packet` for sending.
    pub fn send(&mut self, packet: Packet) {
        if let Err(error) = self.codec.write(packet, &mut self.out) {
            tracing::error!(client = %self.client_id, %error, "could not encode an MQTT packet");
        }
    }

    /// Encodes a PUBLISH to the client, numbered if it is acknowledged.
    pub fn deliver(&mut self, topic: &str, payload: &[u8], qos: QoS, retain: bool) {
        let pkid = match qos {
            QoS::AtMostOnce => 0,
            QoS::AtLeastOnce | QoS::ExactlyOnce => self.allocate_pkid(),
        };
        self.send(Packet::Publish(
            codec::publish(topic, payload, qos, pkid, retain),
            None,
        ));
    }

    /// Keeps a retained delivery until the window has room.
    pub fn queue(&mut self, topic: String, payload: Bytes, qos: QoS) {
        self.queued.push_back((topic, payload, qos));
    }

    /// Whether the window has room for another acknowledged delivery.
    pub fn has_room(&self) -> bool {
        self.in_flight.len() < usize::from(self.window)
    }

    /// Delivers one queued message if there is room; false if there was nothing to do.
    pub fn release_queued(&mut self) -> bool {
        if !self.has_room() {
            return false;
        }
        let Some((topic, payload, qos)) = self.queued.pop_front() else {
            return false;
        };
        self.deliver(&topic, &payload, qos, true);
        true
    }

    /// The client acknowledged delivery `pkid`.
    pub fn acknowledged(&mut self, pkid: u16) {
        self.in_flight.remove(&pkid);
    }

    /// The bytes encoded since the last call, if any.
    pub fn take(&mut self) -> Option<Bytes> {
        (!self.out.is_empty()).then(|| self.out.split().freeze())
    }

    fn allocate_pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if self.in_flight.insert(self.next_pkid) {
                return self.next_pkid;
            }
        }
    }
}
