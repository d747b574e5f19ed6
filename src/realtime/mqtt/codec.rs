//! MQTT framing: rumqttd's packet codecs for MQTT 3.1.1 (`V4`) and 5 (`V5`) on one port.
//!
//! The version is read from the CONNECT packet's protocol level before either codec is used. A
//! codec that panics on hostile input is treated as a malformed packet, never as a crash.

use std::panic::{self, AssertUnwindSafe};

use bytes::{BufMut, Bytes, BytesMut};
use rumqttd::protocol::v4::V4;
use rumqttd::protocol::v5::V5;
use rumqttd::protocol::{Error, Packet, Protocol, Publish, QoS};

/// The protocol spoken on a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5 (protocol level 5).
    V5,
}

/// Why a connection cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("malformed packet: {0}")]
    Malformed(String),
    #[error("a packet of {0} bytes is over the limit")]
    TooLarge(usize),
}

/// What the start of a connection says about its protocol.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello {
    /// More bytes are needed to tell.
    Incomplete,
    /// A CONNECT packet of this version.
    Connect(Version),
    /// A CONNECT packet of an unsupported protocol level (3 is MQTT 3.1).
    UnsupportedLevel(u8),
    /// Not an MQTT CONNECT packet.
    NotMqtt,
}

/// Reads the protocol level of the CONNECT packet at the start of `bytes`.
pub fn hello(bytes: &[u8]) -> Hello {
    let mut rest = bytes;
    match rest.first() {
        None => return Hello::Incomplete,
        Some(0x10) => rest = &rest[1..],
        Some(_) => return Hello::NotMqtt,
    }
    // The remaining length: 1 to 4 bytes, 7 bits each.
    for at in 0..4 {
        match rest.get(at) {
            None => return Hello::Incomplete,
            Some(byte) if byte & 0x80 == 0 => {
                rest = &rest[at + 1..];
                break;
            }
            Some(_) if at == 3 => return Hello::NotMqtt,
            Some(_) => {}
        }
    }
    // Protocol name ("MQTT", or "MQIsdp" for 3.1), then the level.
    let Some(&[high, low]) = rest.get(..2) else {
        return Hello::Incomplete;
    };
    let name_len = usize::from(u16::from_be_bytes([high, low]));
    let Some(name) = rest.get(2..2 + name_len) else {
        return Hello::Incomplete;
    };
    let Some(&level) = rest.get(2 + name_len) else {
        return Hello::Incomplete;
    };
    match (name, level) {
        (b"MQTT", 4) => Hello::Connect(Version::V311),
        (b"MQTT", 5) => Hello::Connect(Version::V5),
        (b"MQTT" | b"MQIsdp", level) => Hello::UnsupportedLevel(level),
        _ => Hello::NotMqtt,
    }
}

/// Reads and writes the packets of one connection.
#[derive(Clone, Copy)]
pub struct Codec {
    version: Version,
    max_packet: usize,
}

impl Codec {
    pub fn new(version: Version, max_packet: usize) -> Codec {
        Codec {
            version,
            max_packet,
        }
    }

    pub fn version(&self) -> Version {
        self.version
    }

    /// The next complete packet in `buffer`, or `None` if more bytes are needed.
    pub fn read(&self, buffer: &mut BytesMut) -> Result<Option<Packet>, CodecError> {
        let Some(&first) = buffer.first() else {
            return Ok(None);
        };
        // Packets only a server sends: rumqttd's decoder does not expect them from a client
        // (CONNACK and UNSUBACK reach an `unreachable!`), so they are refused unread.
        const CONNACK: u8 = 2;
        const SUBACK: u8 = 9;
        const UNSUBACK: u8 = 11;
        const PINGRESP: u8 = 13;
        if matches!(first >> 4, CONNACK | SUBACK | UNSUBACK | PINGRESP) {
            return Err(CodecError::Malformed(format!(
                "packet type {} is sent by servers only",
                first >> 4
            )));
        }
        let version = self.version;
        let max = self.max_packet;
        let before = buffer.len();
        let read = panic::catch_unwind(AssertUnwindSafe(|| match version {
            Version::V311 => V4.read_mut(buffer, max),
            Version::V5 => V5.read_mut(buffer, max),
        }));
        match read {
            Ok(Ok(packet)) => Ok(Some(packet)),
            // Short of a whole frame: wait for more. A whole frame whose contents run short is
            // malformed (the codec consumed it).
            Ok(Err(Error::InsufficientBytes(_))) if buffer.len() == before => Ok(None),
            Ok(Err(Error::PayloadSizeLimitExceeded(size))) => Err(CodecError::TooLarge(size)),
            Ok(Err(error)) => Err(CodecError::Malformed(error.to_string())),
            Err(_) => Err(CodecError::Malformed("unreadable packet".to_owned())),
        }
    }

    /// Appends `packet` to `out`. Properties are dropped under MQTT 3.1.1, which has none.
    pub fn write(&self, packet: Packet, out: &mut BytesMut) -> Result<(), CodecError> {
        let packet = match self.version {
            Version::V5 => packet,
            Version::V311 => without_properties(packet),
        };
        let version = self.version;
        let written = panic::catch_unwind(AssertUnwindSafe(|| match version {
            Version::V311 => V4.write(packet, out),
            Version::V5 => V5.write(packet, out),
        }));
        match written {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(CodecError::Malformed(error.to_string())),
            Err(_) => Err(CodecError::Malformed("unwritable packet".to_owned())),
        }
    }
}

fn without_properties(packet: Packet) -> Packet {
    match packet {
        Packet::ConnAck(p, _) => Packet::ConnAck(p, None),
        Packet::Publish(p, _) => Packet::Publish(p, None),
        Packet::PubAck(p, _) => Packet::PubAck(p, None),
        Packet::SubAck(p, _) => Packet::SubAck(p, None),
        Packet::UnsubAck(p, _) => Packet::UnsubAck(p, None),
        Packet::PubRec(p, _) => Packet::PubRec(p, None),
        Packet::PubComp(p, _) => Packet::PubComp(p, None),
        Packet::Disconnect(p, _) => Packet::Disconnect(p, None),
        other => other,
    }
}

/// The QoS and packet id of a PUBLISH. rumqttd keeps them private, so they are read from its
/// own serialisation (`header | pkid | topic length | topic`), with the payload left out.
pub fn qos_and_pkid(publish: &Publish) -> (QoS, u16) {
    let mut header = publish.clone();
    header.payload = Bytes::new();
    let header = header.serialize();
    let qos = match (header[0] >> 1) & 0b11 {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    };
    (qos, u16::from_be_bytes([header[1], header[2]]))
}

/// A PUBLISH to send, built through rumqttd's own deserialisation since its QoS, packet id and
/// DUP flag cannot be set directly.
pub fn publish(
    topic: &str,
    payload: &[u8],
    qos: QoS,
    pkid: u16,
    retain: bool,
    dup: bool,
) -> Publish {
    let mut raw = BytesMut::with_capacity(5 + topic.len() + payload.len());
    raw.put_u8(0b0011_0000 | (u8::from(dup) << 3) | ((qos as u8) << 1) | u8::from(retain));
    raw.put_u16(pkid);
    raw.put_u16(u16::try_from(topic.len()).unwrap_or(u16::MAX));
    raw.put_slice(topic.as_bytes());
    raw.put_slice(payload);
    Publish::deserialize(raw.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_comes_from_the_connect_packet() {
        let v311 = [0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60];
        let v5 = [0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 60, 0];
        let v31 = [0x10, 14, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3];
        assert_eq!(hello(&v311), Hello::Connect(Version::V311));
        assert_eq!(hello(&v5), Hello::Connect(Version::V5));
        assert_eq!(hello(&v31), Hello::UnsupportedLevel(3));
        for cut in 0..9 {
            assert_eq!(hello(&v311[..cut]), Hello::Incomplete, "{cut} bytes");
        }
        assert_eq!(hello(b"GET / HTTP/1.1\r\n"), Hello::NotMqtt);
        assert_eq!(hello(&[0x10, 0xff, 0xff, 0xff, 0xff]), Hello::NotMqtt);
    }

    #[test]
    fn publish_fields_survive_both_codecs() {
        for version in [Version::V311, Version::V5] {
            let codec = Codec::new(version, 1 << 20);
            for (qos, pkid) in [(QoS::AtMostOnce, 0), (QoS::AtLeastOnce, 7)] {
                let sent = publish("T/1", b"{}", qos, pkid, true, false);
                assert_eq!(qos_and_pkid(&sent), (qos, pkid));
                let mut wire = BytesMut::new();
                codec
                    .write(Packet::Publish(sent.clone(), None), &mut wire)
                    .expect("writes");
                match codec.read(&mut wire).expect("reads") {
                    Some(Packet::Publish(got, _)) => {
                        assert_eq!(qos_and_pkid(&got), (qos, pkid));
                        assert!(got.retain);
                        assert_eq!(
                            (&got.topic[..], &got.payload[..]),
                            (&b"T/1"[..], &b"{}"[..])
                        );
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let codec = Codec::new(Version::V5, 1 << 20);
        for bytes in [&[0xf0, 0][..], &[0x30, 1, 0], &[0x82, 2, 0, 0], &[0x00, 0]] {
            let mut buffer = BytesMut::from(bytes);
            assert!(codec.read(&mut buffer).is_err(), "{bytes:?}");
        }
        let mut partial = BytesMut::from(&[0x30, 10, 0][..]);
        assert!(matches!(codec.read(&mut partial), Ok(None)));
    }

    #[test]
    fn packets_only_servers_send_are_refused_before_decoding() {
        for version in [Version::V311, Version::V5] {
            let codec = Codec::new(version, 1 << 20);
            // CONNACK, SUBACK, UNSUBACK, PINGRESP, as a client would send them.
            for bytes in [
                &[0x20, 2, 0, 0][..],
                &[0x90, 3, 0, 1, 0],
                &[0xb0, 2, 0, 1],
                &[0xd0, 0],
            ] {
                let mut buffer = BytesMut::from(bytes);
                match codec.read(&mut buffer) {
                    Err(CodecError::Malformed(why)) => {
                        assert!(why.contains("servers only"), "{why}");
                    }
                    other => panic!("{bytes:?}: {other:?}"),
                }
            }
        }
    }
}
