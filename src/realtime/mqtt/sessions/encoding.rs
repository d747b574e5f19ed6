//! The `mqtt-sessions` keyspace's layout: `s<client>` holds a session, `m<client><seq>` its
//! messages in order (`<client>` is the id's length, 2 bytes, then the id; `<seq>` 8 bytes,
//! big-endian), and how a kept message is encoded.

use std::sync::Arc;

use bytes::{BufMut, Bytes};
use serde::{Deserialize, Serialize};

use super::Stored;
use crate::realtime::mqtt::outbox::Delivery;
use crate::realtime::mqtt::properties::Forwarded;

pub(super) fn session_key(client: &str) -> Vec<u8> {
    [b"s", client.as_bytes()].concat()
}

pub(super) fn messages_prefix(client: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(3 + client.len() + 8);
    key.push(b'm');
    key.put_u16(u16::try_from(client.len()).unwrap_or(u16::MAX));
    key.extend_from_slice(client.as_bytes());
    key
}

pub(super) fn message_key(client: &str, seq: u64) -> Vec<u8> {
    let mut key = messages_prefix(client);
    key.put_u64(seq);
    key
}

pub(super) fn seq_of(key: &[u8]) -> u64 {
    let tail: [u8; 8] = key[key.len().saturating_sub(8)..]
        .try_into()
        .unwrap_or_default();
    u64::from_be_bytes(tail)
}

/// What a kept message carries beyond its topic and payload.
#[derive(Default, Serialize, Deserialize)]
struct Extra {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    properties: Option<Forwarded>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    subscription_ids: Vec<usize>,
}

/// `qos | flags (1 retain, 2 released, 4 extra) | pkid (2) | topic length (2) | topic |
/// [extra length (4) | extra (JSON)] | payload`.
pub(super) fn encode(stored: &Stored) -> Vec<u8> {
    let Delivery {
        topic,
        payload,
        qos,
        retain,
        properties,
        subscription_ids,
    } = &stored.delivery;
    let extra = (properties.is_some() || !subscription_ids.is_empty()).then(|| {
        let extra = Extra {
            properties: properties.as_deref().cloned(),
            subscription_ids: subscription_ids.clone(),
        };
        serde_json::to_vec(&extra).expect("properties encode")
    });
    let mut out = Vec::with_capacity(10 + topic.len() + payload.len());
    out.put_u8(*qos as u8);
    let flags =
        u8::from(*retain) | (u8::from(stored.released) << 1) | (u8::from(extra.is_some()) << 2);
    out.put_u8(flags);
    out.put_u16(stored.pkid);
    out.put_u16(u16::try_from(topic.len()).unwrap_or(u16::MAX));
    out.extend_from_slice(topic.as_bytes());
    if let Some(extra) = extra {
        out.put_u32(u32::try_from(extra.len()).unwrap_or(u32::MAX));
        out.extend_from_slice(&extra);
    }
    out.extend_from_slice(payload);
    out
}

pub(super) fn decode(seq: u64, raw: &[u8]) -> Option<Stored> {
    let (&[qos, flags, p1, p2, t1, t2], rest) = raw.split_first_chunk::<6>()?;
    let topic_len = usize::from(u16::from_be_bytes([t1, t2]));
    let topic = std::str::from_utf8(rest.get(..topic_len)?).ok()?.to_owned();
    let mut rest = &rest[topic_len..];
    let mut extra = Extra::default();
    if flags & 4 != 0 {
        let (length, after) = rest.split_first_chunk::<4>()?;
        let length = u32::from_be_bytes(*length) as usize;
        extra = serde_json::from_slice(after.get(..length)?).ok()?;
        rest = &after[length..];
    }
    Some(Stored {
        seq,
        delivery: Delivery {
            topic,
            payload: Bytes::copy_from_slice(rest),
            qos: rumqttd::protocol::qos(qos)?,
            retain: flags & 1 != 0,
            properties: extra.properties.map(Arc::new),
            subscription_ids: extra.subscription_ids,
        },
        pkid: u16::from_be_bytes([p1, p2]),
        released: flags & 2 != 0,
    })
}

#[cfg(test)]
mod tests {
    use rumqttd::protocol::QoS;

    use super::*;

    #[test]
    fn kept_messages_decode_as_encoded() {
        let stored = Stored {
            seq: 7,
            delivery: Delivery {
                topic: "a/b".to_owned(),
                payload: Bytes::from_static(b"\x00\xffpayload"),
                qos: QoS::ExactlyOnce,
                retain: true,
                properties: Some(Arc::new(Forwarded {
                    user_properties: vec![("k".to_owned(), "v".to_owned())],
                    ..Forwarded::default()
                })),
                subscription_ids: vec![3, 4],
            },
            pkid: 513,
            released: true,
        };
        let again = decode(7, &encode(&stored)).expect("decodes");
        assert_eq!(format!("{again:?}"), format!("{stored:?}"));
        assert!(decode(1, &[1, 0, 0]).is_none());
        assert!(decode(1, &[9, 0, 0, 0, 0, 0]).is_none(), "no QoS 9");
    }

    #[test]
    fn message_keys_of_one_client_sort_by_sequence_and_stay_apart_from_others() {
        let (a1, a2) = (message_key("a", 1), message_key("a", 256));
        assert!(a1 < a2);
        assert!(a2.starts_with(&messages_prefix("a")));
        assert!(!message_key("ab", 1).starts_with(&messages_prefix("a")));
        assert_eq!(seq_of(&a2), 256);
    }
}
