//! Real-time: subscriptions to records and tables, delivered over WebSocket, Server-Sent Events
//! and MQTT.
//!
//! Every transport goes through one [`Subscription`] core (`subscription.rs`): current values
//! first, then each durable change, and the one lag policy (`resync`). `ws.rs` and `sse.rs` are
//! the HTTP transports; `mqtt/` serves MQTT with rumqttd's packet codecs under our own sessions;
//! `topic_filter.rs` holds the [`TopicFilter`] every subscription watches; `matching.rs` narrows
//! a table subscription to the records that match a query, and `visibility.rs` to what the
//! subscriber's identity may read.

mod matching;
pub mod mqtt;
pub mod sse;
mod subscription;
mod topic_filter;
mod visibility;
pub mod ws;

use std::sync::Arc;
use std::time::Duration;

use serde::de::IgnoredAny;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

pub use matching::Matching;
pub use subscription::{Item, Subscription};
pub use topic_filter::TopicFilter;

use crate::access::Identity;
use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::events::{ChangeEvent, ChangeKind, EventBus};
use crate::storage::Store;

/// The subscription hub shared by every transport. Cloning shares it.
#[derive(Clone)]
pub struct Realtime {
    catalog: Arc<Catalog>,
    store: Arc<Store>,
    events: EventBus,
    closing: CancellationToken,
    /// One per WebSocket or SSE stream and per MQTT connection.
    subscribers: Arc<Semaphore>,
    max_subscribers: usize,
    /// How long a WebSocket peer may neither read nor answer before it is dropped.
    silence: Duration,
}

impl Realtime {
    /// The hub for `catalog`'s tables, serving at most `max_subscribers` streams and MQTT
    /// connections at once, dropping WebSocket peers silent for `silence`.
    pub fn new(
        catalog: Arc<Catalog>,
        store: Arc<Store>,
        events: EventBus,
        (max_subscribers, silence): (usize, Duration),
    ) -> Realtime {
        Realtime {
            catalog,
            store,
            events,
            closing: CancellationToken::new(),
            subscribers: Arc::new(Semaphore::new(max_subscribers)),
            max_subscribers,
            silence,
        }
    }

    /// How long a WebSocket peer may neither read nor answer before it is dropped.
    pub fn silence(&self) -> Duration {
        self.silence
    }

    /// A place for one more subscriber (a stream or an MQTT connection), held until it ends.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit> {
        self.subscribers
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::TooManySubscribers {
                limit: self.max_subscribers,
            })
    }

    /// A subscription watching nothing yet; it sees every change announced from now on that
    /// `identity` may read.
    pub fn subscribe(&self, identity: Arc<Identity>) -> Subscription {
        Subscription::new(
            self.catalog.clone(),
            self.store.clone(),
            self.events.subscribe(),
            visibility::Visibility::of(identity, self.catalog.clone()),
        )
    }

    /// The store the tables are in.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The tables.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// The bus every change is announced on.
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// Completes when the server starts shutting down: transports then close their streams.
    pub fn closing(&self) -> &CancellationToken {
        &self.closing
    }

    /// Tells every transport to close its subscribers' streams.
    pub fn close(&self) {
        self.closing.cancel();
    }
}

/// The JSON envelope WebSocket and SSE deliver:
/// `{"type","table","id","version","value"}`. The version is the record's `ETag` value (hex, so
/// a client can send it back in `If-Match`); a message whose payload is not JSON carries it as a
/// string.
pub fn envelope(item: &Item) -> String {
    let event = match item {
        Item::Change(event) => event.as_ref(),
        Item::Current(event) => event,
        Item::Resync => return r#"{"type":"resync"}"#.to_owned(),
        Item::Synced { filter, .. } => {
            return format!(
                r#"{{"type":"synced","topic":{}}}"#,
                json_string(&filter.to_string())
            );
        }
    };
    change_envelope(event)
}

fn change_envelope(event: &ChangeEvent) -> String {
    let value = event.value.as_deref().unwrap_or_default();
    let value = if event.value.is_none() {
        "null".into()
    } else if event.kind != ChangeKind::Message
        || serde_json::from_slice::<IgnoredAny>(value).is_ok()
    {
        // Records are stored as valid JSON; only a message's payload can be anything.
        String::from_utf8_lossy(value)
    } else {
        json_string(&String::from_utf8_lossy(value)).into()
    };
    let version = match event.version {
        0 => "null".to_owned(),
        version => format!(r#""{version:x}""#),
    };
    format!(
        r#"{{"type":"{}","table":{},"id":{},"version":{version},"value":{value}}}"#,
        event.kind.name(),
        json_string(&event.table),
        event.id.to_json(),
    )
}

fn json_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde_json::{Value, json};

    use super::*;
    use crate::storage::Key;

    fn event(kind: ChangeKind, value: Option<&'static [u8]>) -> Item {
        Item::Change(Arc::new(ChangeEvent {
            kind,
            table: "Item".into(),
            id: Key::Str("a\"b".into()),
            version: if kind == ChangeKind::Message {
                0
            } else {
                1 << 60
            },
            value: value.map(Bytes::from_static),
            seq: None,
        }))
    }

    fn parsed(item: &Item) -> Value {
        serde_json::from_str(&envelope(item)).expect("the envelope is JSON")
    }

    #[test]
    fn envelopes_are_json_with_exact_versions() {
        assert_eq!(
            parsed(&event(ChangeKind::Put, Some(br#"{"n":1}"#))),
            json!({"type": "put", "table": "Item", "id": "a\"b",
                   "version": "1000000000000000", "value": {"n": 1}})
        );
        assert_eq!(
            parsed(&event(ChangeKind::Delete, None))["value"],
            Value::Null
        );
        let message = parsed(&event(ChangeKind::Message, Some(b"not json \xff")));
        assert_eq!(message["type"], "message");
        assert_eq!(message["version"], Value::Null);
        assert_eq!(message["value"], "not json \u{fffd}");
        assert_eq!(parsed(&Item::Resync), json!({"type": "resync"}));
    }
}
