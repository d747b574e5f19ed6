//! The MQTT 5 properties a PUBLISH carries to its subscribers unchanged (payload format
//! indicator, content type, response topic, correlation data, user properties), and its Message
//! Expiry Interval, kept as a deadline: a message not delivered by then is dropped, and one
//! delivered before is sent with the interval that remains (MQTT-3.3.2-6). Topic aliases and
//! subscription identifiers belong to one connection and are not forwarded.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rumqttd::protocol::PublishProperties;
use serde::{Deserialize, Serialize};

/// What travels with a message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Forwarded {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_format_indicator: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_topic: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", with = "optional_bytes")]
    pub correlation_data: Option<Bytes>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub user_properties: Vec<(String, String)>,
    /// When the message expires, in milliseconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

impl Forwarded {
    /// What of a received PUBLISH's properties travels on; `None` if nothing does.
    pub fn of(properties: Option<&PublishProperties>) -> Option<Forwarded> {
        let p = properties?;
        let forwarded = Forwarded {
            payload_format_indicator: p.payload_format_indicator,
            content_type: p.content_type.clone(),
            response_topic: p.response_topic.clone(),
            correlation_data: p.correlation_data.clone(),
            user_properties: p.user_properties.clone(),
            expires_at: p
                .message_expiry_interval
                .map(|seconds| now_ms().saturating_add(u64::from(seconds) * 1000)),
        };
        (forwarded != Forwarded::default()).then_some(forwarded)
    }

    /// Whether the message has expired.
    pub fn expired(&self) -> bool {
        self.expires_at.is_some_and(|at| at <= now_ms())
    }

    /// The properties to send with the message now, with these subscription identifiers.
    pub fn to_send(&self, subscription_identifiers: Vec<usize>) -> PublishProperties {
        PublishProperties {
            payload_format_indicator: self.payload_format_indicator,
            message_expiry_interval: self.expires_at.map(|at| {
                let remaining = at.saturating_sub(now_ms()).div_ceil(1000);
                u32::try_from(remaining).unwrap_or(u32::MAX)
            }),
            topic_alias: None,
            response_topic: self.response_topic.clone(),
            correlation_data: self.correlation_data.clone(),
            user_properties: self.user_properties.clone(),
            subscription_identifiers,
            content_type: self.content_type.clone(),
        }
    }
}

pub fn now_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH);
    since.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Correlation data is binary: kept as an array of bytes.
mod optional_bytes {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Bytes>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(bytes) => s.serialize_bytes(bytes),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Bytes>, D::Error> {
        Ok(Option::<Vec<u8>>::deserialize(d)?.map(Bytes::from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_properties_survive_storage_and_count_down_their_expiry() {
        let received = PublishProperties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(60),
            topic_alias: Some(3),
            response_topic: Some("reply/here".to_owned()),
            correlation_data: Some(Bytes::from_static(b"\x00\x01")),
            user_properties: vec![("k".to_owned(), "v".to_owned())],
            subscription_identifiers: vec![9],
            content_type: Some("text/plain".to_owned()),
        };
        let forwarded = Forwarded::of(Some(&received)).expect("something to forward");
        let stored = serde_json::to_vec(&forwarded).expect("encodes");
        let again: Forwarded = serde_json::from_slice(&stored).expect("decodes");
        assert_eq!(again, forwarded);
        let sent = again.to_send(vec![4]);
        assert_eq!(
            sent.topic_alias, None,
            "aliases are the sender's connection's"
        );
        assert_eq!(sent.subscription_identifiers, [4]);
        assert_eq!(sent.message_expiry_interval, Some(60));
        assert_eq!(sent.correlation_data, received.correlation_data);
        assert!(!again.expired());
        let lapsed = Forwarded {
            expires_at: Some(now_ms() - 1),
            ..Forwarded::default()
        };
        assert!(lapsed.expired());
        assert_eq!(Forwarded::of(Some(&PublishProperties::default())), None);
        // What is absent is left out, and read back as absent.
        let sparse = Forwarded {
            content_type: Some("text/plain".to_owned()),
            ..Forwarded::default()
        };
        let stored = serde_json::to_string(&sparse).expect("encodes");
        assert_eq!(stored, r#"{"contentType":"text/plain"}"#);
        assert_eq!(
            serde_json::from_str::<Forwarded>(&stored).expect("decodes"),
            sparse
        );
    }
}
