//! The plain broker: topics that are not tables, shared among MQTT clients.
//!
//! Messages are relayed to every session whose filters match; a retained message is kept (in
//! memory: these topics are not tables) and sent to later subscribers; a retained empty payload
//! clears it. The broker also knows which client ids are connected, so a client that connects
//! again takes its session over.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use rumqttd::protocol::QoS;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::realtime::TopicFilter;

/// Messages buffered for the slowest session before it misses some.
const BUFFER: usize = 4096;
/// Retained messages kept at most; beyond it a new topic's retained message is refused.
pub const MAX_RETAINED: usize = 100_000;

/// A message published to a plain topic.
#[derive(Debug)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    /// Whether it was published retained.
    pub retain: bool,
    /// The session that published it (for MQTT 5's no-local option).
    pub from: u64,
}

pub struct Broker {
    messages: broadcast::Sender<Arc<Message>>,
    retained: Mutex<BTreeMap<String, Bytes>>,
    clients: Mutex<HashMap<String, (u64, CancellationToken)>>,
}

impl Broker {
    pub fn new() -> Broker {
        Broker {
            messages: broadcast::channel(BUFFER).0,
            retained: Mutex::default(),
            clients: Mutex::default(),
        }
    }

    pub fn listen(&self) -> broadcast::Receiver<Arc<Message>> {
        self.messages.subscribe()
    }

    /// Relays `message`; if it is retained, keeps it for later subscribers (or clears the
    /// topic's retained message if the payload is empty). Fails if the retained store is full.
    pub fn publish(&self, message: Message) -> Result<(), String> {
        if message.retain {
            let mut retained = self.retained.lock().unwrap_or_else(PoisonError::into_inner);
            if message.payload.is_empty() {
                retained.remove(&message.topic);
            } else if retained.len() >= MAX_RETAINED && !retained.contains_key(&message.topic) {
                return Err(format!(
                    "the broker already keeps {MAX_RETAINED} retained messages"
                ));
            } else {
                retained.insert(message.topic.clone(), message.payload.clone());
            }
        }
        let _ = self.messages.send(Arc::new(message));
        Ok(())
    }

    /// The retained messages whose topics `filter` matches.
    pub fn retained(&self, filter: &TopicFilter) -> Vec<(String, Bytes)> {
        let retained = self.retained.lock().unwrap_or_else(PoisonError::into_inner);
        let range: Box<dyn Iterator<Item = (&String, &Bytes)>> = match filter.first() {
            // Topics of one first level sit together in the ordered map.
            Some(first) => Box::new(
                retained
                    .range(first.to_owned()..)
                    .take_while(move |(topic, _)| topic.starts_with(first)),
            ),
            None => Box::new(retained.iter()),
        };
        range
            .filter(|(topic, _)| filter.matches(topic))
            .map(|(topic, payload)| (topic.clone(), payload.clone()))
            .collect()
    }

    /// Registers `client_id` as connected in session `session`; a session already connected
    /// under that id is told to end.
    pub fn connect(&self, client_id: &str, session: u64, end: CancellationToken) {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, previous)) = clients.insert(client_id.to_owned(), (session, end)) {
            previous.cancel();
        }
    }

    /// Forgets `client_id` if session `session` still holds it.
    pub fn disconnect(&self, client_id: &str, session: u64) {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if clients.get(client_id).is_some_and(|(s, _)| *s == session) {
            clients.remove(client_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(topic: &str, payload: &'static [u8], retain: bool) -> Message {
        Message {
            topic: topic.to_owned(),
            payload: Bytes::from_static(payload),
            qos: QoS::AtMostOnce,
            retain,
            from: 1,
        }
    }

    #[test]
    fn retained_messages_are_kept_matched_and_cleared() {
        let broker = Broker::new();
        broker.publish(message("chat/a", b"1", true)).unwrap();
        broker.publish(message("chat/b/c", b"2", true)).unwrap();
        broker.publish(message("chatter", b"3", true)).unwrap();
        broker
            .publish(message("chat/d", b"relayed only", false))
            .unwrap();
        let topics = |filter: &str| -> Vec<String> {
            let filter = TopicFilter::parse(filter).unwrap();
            broker
                .retained(&filter)
                .into_iter()
                .map(|(t, _)| t)
                .collect()
        };
        assert_eq!(topics("chat/+"), ["chat/a"]);
        assert_eq!(topics("chat/#"), ["chat/a", "chat/b/c"]);
        assert_eq!(topics("#"), ["chat/a", "chat/b/c", "chatter"]);
        broker.publish(message("chat/a", b"", true)).unwrap();
        assert_eq!(topics("chat/#"), ["chat/b/c"]);
    }
}
