//! The publish path: where an MQTT PUBLISH becomes a record write, a record delete or a relayed
//! message, and the acknowledgement it gets.
//!
//! On `<Table>/<id>`, a retained PUBLISH with a JSON payload is a write
//! ([`Resource::put`](crate::catalog::Resource::put), validated, durable before the PUBACK), a
//! retained empty payload a delete, and a non-retained PUBLISH a message to the record's
//! subscribers. Any other topic belongs to the plain broker. A refused PUBLISH changes nothing;
//! an MQTT 5 client is told why with a reason code from the error's [`ErrorCode`] and a reason
//! string; MQTT 3.1.1 has no way to say it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use rumqttd::protocol::{
    DisconnectReasonCode, Packet, PubAck, PubAckProperties, PubAckReason, PubRec, PubRecProperties,
    PubRecReason, Publish, PublishProperties, QoS,
};

use super::Shared;
use super::broker::{Message, Publisher};
use super::codec::Version;
use super::properties::Forwarded;
use crate::access::{Identity, Write};
use crate::catalog::Resource;
use crate::error::{Chain, Error, ErrorCode};
use crate::events::{ChangeEvent, ChangeKind};

/// A message a PUBLISH asks to relay.
pub enum Relay {
    /// To a record's subscribers (non-retained, on a table topic).
    Record(ChangeEvent),
    /// Among MQTT clients (a plain topic).
    Broker(Message),
}

/// Why a PUBLISH was not applied.
pub enum Refusal {
    /// The write path refused it.
    Domain(Error),
    /// Its topic names no record and is not the plain broker's.
    Topic(String),
    /// The broker keeps as many retained messages as it may.
    RetainedFull(String),
}

/// What applying a PUBLISH comes to: nothing more to do, a message to relay, or a refusal.
pub type Applying = Pin<Box<dyn Future<Output = Result<Option<Relay>, Refusal>> + Send>>;

/// Topic aliases a client may set (MQTT 5 Topic Alias Maximum).
pub const TOPIC_ALIAS_MAX: u16 = 64;

/// The topic of a PUBLISH, or why the connection must close: a topic that is not UTF-8, has
/// wildcards or U+0000 (MQTT-1.5.3-2) is malformed; an empty one needs a topic alias the client
/// set before on this connection (MQTT 5), and a topic with an alias sets it.
pub fn topic(
    publish: &Publish,
    properties: Option<&PublishProperties>,
    aliases: &mut HashMap<u16, String>,
) -> Result<String, DisconnectReasonCode> {
    let topic = match std::str::from_utf8(&publish.topic) {
        Ok(topic) if !topic.contains(['+', '#', '\0']) => topic,
        Ok(_) | Err(_) => return Err(DisconnectReasonCode::TopicNameInvalid),
    };
    match properties.and_then(|p| p.topic_alias) {
        None if topic.is_empty() => Err(DisconnectReasonCode::TopicNameInvalid),
        None => Ok(topic.to_owned()),
        Some(alias) if alias == 0 || alias > TOPIC_ALIAS_MAX => {
            Err(DisconnectReasonCode::TopicAliasInvalid)
        }
        Some(alias) if topic.is_empty() => aliases
            .get(&alias)
            .cloned()
            .ok_or(DisconnectReasonCode::ProtocolError),
        Some(alias) => {
            aliases.insert(alias, topic.to_owned());
            Ok(topic.to_owned())
        }
    }
}

/// Checks a PUBLISH from session `from`, by `who`, against what `who` may write, and starts what it asks: a record write or delete (the
/// returned future completes once it is durable), or a message to relay (returned, to be relayed
/// in its turn).
pub fn accept(
    shared: &Shared,
    (from, who): (&Publisher, &Identity),
    topic: &str,
    (payload, qos, retain): (Bytes, QoS, bool),
    properties: Option<Forwarded>,
) -> Applying {
    let refuse = |refusal| -> Applying { Box::pin(std::future::ready(Err(refusal))) };
    let relay = |relay| -> Applying { Box::pin(std::future::ready(Ok(Some(relay)))) };
    if payload.len() > shared.max_body {
        let limit = shared.max_body;
        return refuse(Refusal::Domain(Error::PayloadTooLarge { limit }));
    }
    if topic.starts_with('$') {
        // `$SYS/...`, `$tablecast/resync`: what the server says, which no client may forge.
        return refuse(Refusal::Topic(
            "topics that start with `$` are the server's; clients cannot publish to them"
                .to_owned(),
        ));
    }
    let catalog = shared.realtime.catalog().clone();
    let (first, id) = match topic.split_once('/') {
        Some((first, id)) => (first, Some(id)),
        None => (topic, None),
    };
    let Ok(resource) = catalog.resource(first) else {
        shared.typos.check(&catalog, first, &from.client);
        if !who.may_publish(topic) {
            return refuse(Refusal::Domain(
                who.refusal(format!("publish to `{topic}`")),
            ));
        }
        return relay(Relay::Broker(Message {
            topic: topic.to_owned(),
            payload,
            qos,
            retain,
            from: from.clone(),
            properties: properties.map(Arc::new),
            chosen: Vec::new(),
        }));
    };
    let Some(id) = id.filter(|id| !id.is_empty()) else {
        return refuse(Refusal::Topic(format!(
            "a topic of table `{first}` names a record: `{first}/<id>`"
        )));
    };
    let key = match resource.table().parse_id(id) {
        Ok(key) => key,
        Err(error) => return refuse(Refusal::Domain(error)),
    };
    let writer = who.writer(resource.table());
    let write = if retain && payload.is_empty() {
        Write::Delete
    } else {
        Write::Put
    };
    let cache_table = matches!(resource, Resource::Cached(_));
    let refused = writer.refuses(write) || (cache_table && !writer.writes_any_record(write));
    if refused {
        let what = match write {
            Write::Delete => format!("delete `{topic}`"),
            _ => format!("publish to `{topic}`"),
        };
        return refuse(Refusal::Domain(who.refusal(what)));
    }
    if !retain {
        return relay(Relay::Record(ChangeEvent {
            kind: ChangeKind::Message,
            table: resource.table().schema().name.clone(),
            id: key,
            version: 0,
            value: Some(payload),
            seq: None,
        }));
    }
    let record = if payload.is_empty() {
        None
    } else {
        match crate::json::parse(&payload) {
            Ok(record) => Some(record),
            Err(error) => return refuse(Refusal::Domain(error)),
        }
    };
    let table = first.to_owned();
    let guard = writer.guard(write);
    Box::pin(async move {
        let resource = catalog.resource(&table).map_err(Refusal::Domain)?;
        let written = match record {
            Some(record) => resource.put(key, record, guard).await.map(drop),
            None => match resource.delete(key, guard).await {
                Err(Error::RecordNotFound { .. }) => Ok(()),
                deleted => deleted,
            },
        };
        written.map(|()| None).map_err(Refusal::Domain)
    })
}

/// Relays a message, in its turn among the connection's publishes; true if it was kept for a
/// persistent session whose client is away (it is durable once the sessions are flushed).
pub fn relay(shared: &Shared, relay: Relay) -> Result<bool, Refusal> {
    match relay {
        Relay::Record(event) => {
            shared.realtime.events().publish(event);
            Ok(false)
        }
        Relay::Broker(message) => shared
            .broker
            .publish(message)
            .map_err(Refusal::RetainedFull),
    }
}

impl Refusal {
    /// The reason code an MQTT 5 client is given.
    fn reason(&self) -> PubAckReason {
        match self {
            Refusal::Domain(error) => reason(error.code()),
            Refusal::Topic(_) => PubAckReason::TopicNameInvalid,
            Refusal::RetainedFull(_) => PubAckReason::QuotaExceeded,
        }
    }

    /// The stable code of what was wrong, as in an HTTP problem's `type`.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Domain(error) => error.code().as_str(),
            Refusal::Topic(_) => "no-route",
            Refusal::RetainedFull(_) => "retained-full",
        }
    }

    /// The reason string: what was wrong, and where (safe to send: failures inside the server
    /// are told as one sentence).
    pub fn detail(&self) -> String {
        match self {
            Refusal::Domain(error) => error.public_detail(),
            Refusal::Topic(detail) | Refusal::RetainedFull(detail) => detail.clone(),
        }
    }

    /// Logs the refusal of a publish by `client` to `topic`: a failure inside the server with
    /// its cause, anything else as the client was told it.
    pub fn log(&self, client: &str, topic: &str) {
        match self {
            Refusal::Domain(error) if error.is_internal() => tracing::error!(
                client, topic, error = %Chain(error), "an MQTT publish failed"
            ),
            Refusal::Domain(_) | Refusal::Topic(_) | Refusal::RetainedFull(_) => tracing::warn!(
                client, topic, reason = ?self.reason(), "refused an MQTT publish: {}", self.detail()
            ),
        }
    }
}

/// The PUBACK reason for each code.
fn reason(code: ErrorCode) -> PubAckReason {
    match code {
        ErrorCode::UnknownTable | ErrorCode::NoRoute | ErrorCode::InvalidId => {
            PubAckReason::TopicNameInvalid
        }
        ErrorCode::MalformedJson
        | ErrorCode::InexactNumber
        | ErrorCode::SchemaViolation
        | ErrorCode::KeyMismatch
        | ErrorCode::KeyInBody
        | ErrorCode::UnsupportedMediaType => PubAckReason::PayloadFormatInvalid,
        ErrorCode::TooManyIndexEntries => PubAckReason::ImplementationSpecificError,
        ErrorCode::Unauthenticated | ErrorCode::Forbidden => PubAckReason::NotAuthorized,
        ErrorCode::RateLimited => PubAckReason::QuotaExceeded,
        ErrorCode::PayloadTooLarge
        | ErrorCode::TooManyConnections
        | ErrorCode::TooManySubscribers
        | ErrorCode::ServerBusy
        | ErrorCode::InsufficientStorage => PubAckReason::QuotaExceeded,
        ErrorCode::RecordNotFound
        | ErrorCode::BadQuery
        | ErrorCode::BadRequest
        | ErrorCode::MethodNotAllowed
        | ErrorCode::NotAcceptable
        | ErrorCode::PreconditionFailed
        | ErrorCode::OriginFailed
        | ErrorCode::OriginInvalid
        | ErrorCode::OriginTimeout
        | ErrorCode::NotCached
        | ErrorCode::RequestTimeout
        | ErrorCode::UriTooLong
        | ErrorCode::HeadersTooLarge
        | ErrorCode::ShuttingDown
        | ErrorCode::NotReplicated
        | ErrorCode::StorageFailure
        | ErrorCode::Internal => PubAckReason::UnspecifiedError,
    }
}

/// The answer to a PUBLISH of this QoS and packet id, by its outcome: PUBACK for QoS 1, PUBREC
/// for QoS 2, nothing for QoS 0. MQTT 3.1.1 acknowledges a refused publish as a success.
pub fn acknowledgement(
    version: Version,
    qos: QoS,
    pkid: u16,
    outcome: &Result<(), Refusal>,
) -> Option<Packet> {
    let v5 = version == Version::V5;
    let (reason, detail) = match outcome {
        Err(refusal) if v5 => (refusal.reason(), Some(refusal.detail())),
        Ok(()) | Err(_) => (PubAckReason::Success, None),
    };
    match qos {
        QoS::AtMostOnce => None,
        QoS::AtLeastOnce => {
            let properties = detail.map(|detail| PubAckProperties {
                reason_string: Some(detail),
                user_properties: Vec::new(),
            });
            Some(Packet::PubAck(PubAck { pkid, reason }, properties))
        }
        QoS::ExactlyOnce => {
            let properties = detail.map(|detail| PubRecProperties {
                reason_string: Some(detail),
                user_properties: Vec::new(),
            });
            let reason = received(reason);
            Some(Packet::PubRec(PubRec { pkid, reason }, properties))
        }
    }
}

/// The PUBREC reason of a PUBACK reason: MQTT 5 gives both the same set.
fn received(reason: PubAckReason) -> PubRecReason {
    match reason {
        PubAckReason::Success => PubRecReason::Success,
        PubAckReason::NoMatchingSubscribers => PubRecReason::NoMatchingSubscribers,
        PubAckReason::UnspecifiedError => PubRecReason::UnspecifiedError,
        PubAckReason::ImplementationSpecificError => PubRecReason::ImplementationSpecificError,
        PubAckReason::NotAuthorized => PubRecReason::NotAuthorized,
        PubAckReason::TopicNameInvalid => PubRecReason::TopicNameInvalid,
        PubAckReason::PacketIdentifierInUse => PubRecReason::PacketIdentifierInUse,
        PubAckReason::QuotaExceeded => PubRecReason::QuotaExceeded,
        PubAckReason::PayloadFormatInvalid => PubRecReason::PayloadFormatInvalid,
    }
}
