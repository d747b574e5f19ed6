//! The plain broker: topics that are not tables, shared among MQTT clients.
//!
//! Messages are relayed to every session whose filters match; a retained message is kept (in
//! memory: these topics are not tables) and sent to later subscribers; a retained empty payload
//! clears it. Retained messages are bounded in number, in bytes, and in bytes per client id (a
//! message counts against the client that retained it, until it is replaced or cleared). The
//! broker also knows which client ids are connected, so a client that connects again takes its
//! session over, and it queues messages for the persistent sessions whose clients are away
//! (`sessions.rs`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use rumqttd::protocol::QoS;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::grants::{Grant, Grants};
use super::outbox::Delivery;
use super::properties::Forwarded;
use super::sessions::{Kept, Resumed, Sessions};
use crate::bus::{self, Bus, Footprint, TryRecvError};
use crate::error::Result;
use crate::realtime::TopicFilter;

/// Messages buffered for the slowest session before it misses some, and their bytes at most:
/// room for a burst of small messages at full speed (the bytes bound the memory).
const BUFFER: usize = 32_768;
const BUFFER_BYTES: usize = 64 << 20;
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
    pub from: Publisher,
    /// The MQTT 5 properties it travels with.
    pub properties: Option<Arc<Forwarded>>,
    /// The member each matching shared subscription's group sends it to (set by the broker).
    pub chosen: Vec<Chosen>,
}

/// The member of a shared subscription's group a message goes to.
#[derive(Clone, Debug)]
pub struct Chosen {
    /// The shared subscription's whole name.
    pub share: Arc<str>,
    pub client: Arc<str>,
}

/// The members of one shared subscription, by client id, and whose turn is next.
struct Group {
    filter: TopicFilter,
    members: Vec<Arc<str>>,
    next: usize,
}

impl Message {
    /// The delivery of the message to `client`'s session with `grants`, if one matches;
    /// `from_itself` if the session published it (MQTT 5 No Local).
    pub fn delivery(&self, grants: &Grants, client: &str, from_itself: bool) -> Option<Delivery> {
        let granted = grants
            .best(|g| !(from_itself && g.no_local) && g.takes(&self.topic, &self.chosen, client))?;
        Some(Delivery {
            topic: self.topic.clone(),
            payload: self.payload.clone(),
            qos: super::grants::lower(granted.qos, self.qos),
            retain: granted.retain_as_published && self.retain,
            properties: self.properties.clone(),
            subscription_ids: granted.subscription_ids,
        })
    }
}

impl Footprint for Message {
    fn footprint(&self) -> usize {
        const FIXED: usize = 128;
        FIXED + self.topic.len() + self.payload.len()
    }
}

/// Who published a message.
#[derive(Clone, Debug)]
pub struct Publisher {
    /// The session (for MQTT 5's no-local option).
    pub session: u64,
    /// The client id, whose share of retained bytes a retained message counts against.
    pub client: Arc<str>,
}

/// How much the broker retains: bytes in all (topics and payloads) and per client id.
#[derive(Clone, Copy, Debug)]
pub struct RetainedLimits {
    pub bytes: usize,
    pub bytes_per_client: usize,
}

pub struct Broker {
    messages: Bus<Message>,
    retained: Mutex<Retained>,
    clients: Mutex<HashMap<String, Connected>>,
    sessions: Sessions,
    /// Wills waiting for their delay, by client id: told whether the client came back with a
    /// clean session (publish now) or to take its session back (do not publish).
    wills: Mutex<HashMap<String, oneshot::Sender<bool>>>,
    /// Shared subscriptions, by their whole name.
    groups: Mutex<HashMap<Arc<str>, Group>>,
}

/// The connection a client id is served on.
struct Connected {
    session: u64,
    /// The user connected under the client id (`None`: anonymous).
    owner: Option<String>,
    /// Cancelled when another connection takes the client id over.
    end: CancellationToken,
    /// Held by the connection serving the client id: one serves it at a time, and the next
    /// takes its session over only once the previous one has kept it.
    turn: Arc<tokio::sync::Mutex<()>>,
}

/// A client id's turn to be served, held while its connection lasts.
pub type Turn = tokio::sync::OwnedMutexGuard<()>;

/// A retained message, and the client that retained it.
struct RetainedMessage {
    payload: Bytes,
    owner: Arc<str>,
    /// The QoS it was published at: later subscribers get it at no higher.
    qos: QoS,
    properties: Option<Arc<Forwarded>>,
}

/// The retained messages, by topic, with what each client's hold.
#[derive(Default)]
struct Retained {
    messages: BTreeMap<String, RetainedMessage>,
    bytes: usize,
    by_client: HashMap<Arc<str>, usize>,
    limits: Option<RetainedLimits>,
}

impl Retained {
    /// Keeps `kept` as the retained message of `topic`, within the limits.
    fn keep(&mut self, topic: &str, kept: RetainedMessage) -> Result<(), String> {
        let limits = self.limits.expect("the broker sets its limits");
        let client = &kept.owner;
        let size = topic.len() + kept.payload.len();
        let replaced = self.messages.get(topic);
        if replaced.is_none() && self.messages.len() >= MAX_RETAINED {
            return Err(format!(
                "the broker already keeps {MAX_RETAINED} retained messages"
            ));
        }
        let freed = replaced.map_or(0, |old| topic.len() + old.payload.len());
        let freed_here = replaced
            .filter(|old| old.owner == *client)
            .map_or(0, |_| freed);
        let held = self.by_client.get(client).copied().unwrap_or(0);
        if held - freed_here + size > limits.bytes_per_client {
            return Err(format!(
                "client `{client}` already retains {held} bytes; each client may retain {} (--mqtt-retained-per-client)",
                limits.bytes_per_client
            ));
        }
        if self.bytes - freed + size > limits.bytes {
            return Err(format!(
                "the broker already retains {} bytes of {} (--mqtt-retained-memory)",
                self.bytes, limits.bytes
            ));
        }
        self.clear(topic);
        self.bytes += size;
        *self.by_client.entry(client.clone()).or_default() += size;
        self.messages.insert(topic.to_owned(), kept);
        Ok(())
    }

    fn clear(&mut self, topic: &str) {
        if let Some(RetainedMessage { payload, owner, .. }) = self.messages.remove(topic) {
            let size = topic.len() + payload.len();
            self.bytes -= size;
            if let Some(held) = self.by_client.get_mut(&owner) {
                *held -= size;
                if *held == 0 {
                    self.by_client.remove(&owner);
                }
            }
        }
    }
}

impl Broker {
    pub fn new(limits: RetainedLimits, sessions: Sessions) -> Broker {
        let broker = Broker {
            messages: Bus::new(BUFFER, BUFFER_BYTES),
            retained: Mutex::new(Retained {
                limits: Some(limits),
                ..Retained::default()
            }),
            clients: Mutex::default(),
            sessions,
            wills: Mutex::default(),
            groups: Mutex::default(),
        };
        // Away sessions stay members of their groups.
        for (client, grant) in broker.sessions.lock().shared_grants() {
            broker.join(&grant, &client);
        }
        broker
    }

    /// Makes `client` a member of the group of shared subscription `grant`.
    pub fn join(&self, grant: &Grant, client: &str) {
        let Some(share) = &grant.share else {
            return;
        };
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        let group = groups.entry(share.clone()).or_insert_with(|| Group {
            filter: grant.filter.clone(),
            members: Vec::new(),
            next: 0,
        });
        if !group.members.iter().any(|m| **m == *client) {
            group.members.push(Arc::from(client));
        }
    }

    /// Ends `client`'s membership of shared subscription `share`, or of every group if `None`.
    pub fn quit(&self, share: Option<&str>, client: &str) {
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        groups.retain(|name, group| {
            if share.is_none_or(|share| **name == *share) {
                group.members.retain(|m| **m != *client);
            }
            !group.members.is_empty()
        });
    }

    /// The member of each shared subscription matching `topic` that gets the next message on
    /// it: in turn, among the connected members if there are any.
    fn choose(&self, topic: &str) -> Vec<Chosen> {
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        if groups.is_empty() {
            return Vec::new();
        }
        let clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        let mut chosen = Vec::new();
        for (share, group) in groups.iter_mut() {
            if !group.filter.matches(topic) {
                continue;
            }
            let count = group.members.len();
            let turn = (0..count)
                .map(|step| (group.next + step) % count)
                .find(|&at| clients.contains_key(&*group.members[at]))
                .unwrap_or(group.next % count);
            group.next = turn + 1;
            chosen.push(Chosen {
                share: share.clone(),
                client: group.members[turn].clone(),
            });
        }
        chosen
    }

    /// The persistent sessions.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// Relays `message` to the connected sessions and keeps it for the away ones (true if there
    /// were any); if it is retained, keeps it for later subscribers (or clears the topic's
    /// retained message if the payload is empty). Fails if the retained store is full.
    pub fn publish(&self, mut message: Message) -> std::result::Result<bool, String> {
        if message.retain {
            let mut retained = self.retained.lock().unwrap_or_else(PoisonError::into_inner);
            if message.payload.is_empty() {
                retained.clear(&message.topic);
            } else {
                let kept = RetainedMessage {
                    payload: message.payload.clone(),
                    owner: message.from.client.clone(),
                    qos: message.qos,
                    properties: message.properties.clone(),
                };
                retained.keep(&message.topic, kept)?;
            }
        }
        // A session moves between away and connected under this lock: it gets each message
        // either kept or on the bus.
        let mut away = self.sessions.lock();
        message.chosen = self.choose(&message.topic);
        let kept = away.queue(&message);
        self.messages.send(message);
        Ok(kept)
    }

    /// Starts serving client id `client`, connected as user `owner`, on the connection: its
    /// session if it kept one (unless `clean`), and the plain-topic messages published from now
    /// on. Fails with [`Error::Forbidden`] if the kept session is another user's.
    pub fn resume(
        &self,
        client: &str,
        clean: bool,
        owner: Option<&str>,
    ) -> Result<(Option<Resumed>, bus::Receiver<Message>)> {
        let mut away = self.sessions.lock();
        let resumed = away.resume(client, clean, owner)?;
        if resumed.is_none() {
            // A session that ended leaves its groups.
            self.quit(None, client);
        }
        Ok((resumed, self.messages.subscribe()))
    }

    /// Keeps the session of client id `client`, whose connection ended, for its return: with
    /// `kept` as its state and, queued after the messages it has, those of `listening` that
    /// its `grants` match and that it had not read.
    pub fn park(
        &self,
        client: &str,
        kept: Kept,
        next_seq: u64,
        (grants, mut listening): (&Grants, Option<bus::Receiver<Message>>),
    ) -> Result<()> {
        let mut away = self.sessions.lock();
        let mut late = Vec::new();
        while let Some(listening) = &mut listening {
            let message = match listening.try_recv() {
                Ok(message) => message,
                Err(TryRecvError::Lagged(_)) => continue,
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            };
            let from_itself = *message.from.client == *client;
            if let Some(delivery) = message.delivery(grants, client, from_itself)
                && delivery.qos != QoS::AtMostOnce
            {
                late.push(delivery);
            }
        }
        away.park(client, kept, next_seq, late)
    }

    /// Plain-topic messages from now on.
    pub fn listen(&self) -> bus::Receiver<Message> {
        self.messages.subscribe()
    }

    /// The retained messages whose topics `filter` matches, as they were published (those
    /// whose Message Expiry Interval has passed are cleared instead).
    pub fn retained(&self, filter: &TopicFilter) -> Vec<Delivery> {
        let mut retained = self.retained.lock().unwrap_or_else(PoisonError::into_inner);
        let messages = &retained.messages;
        let range: Box<dyn Iterator<Item = (&String, &RetainedMessage)>> = match filter.first() {
            // Topics of one first level sit together in the ordered map.
            Some(first) => Box::new(
                messages
                    .range(first.to_owned()..)
                    .take_while(move |(topic, _)| topic.starts_with(first)),
            ),
            None => Box::new(messages.iter()),
        };
        let (expired, live): (Vec<_>, Vec<_>) = range
            .filter(|(topic, _)| filter.matches(topic))
            .partition(|(_, kept)| kept.properties.as_ref().is_some_and(|p| p.expired()));
        let deliveries = live
            .into_iter()
            .map(|(topic, kept)| Delivery {
                topic: topic.clone(),
                payload: kept.payload.clone(),
                qos: kept.qos,
                retain: true,
                properties: kept.properties.clone(),
                subscription_ids: Vec::new(),
            })
            .collect();
        let expired: Vec<String> = expired
            .into_iter()
            .map(|(topic, _)| topic.clone())
            .collect();
        for topic in expired {
            retained.clear(&topic);
        }
        deliveries
    }

    /// Registers `client_id` as connected in session `session`, by user `owner`, with a clean
    /// start or not, and waits for its turn: a session already connected under that id is told
    /// to end, and finishes first; a will waiting for its delay is published at once or not at
    /// all. `None` if another user's client is connected under that id: it is not taken over.
    pub async fn connect(
        &self,
        client_id: &str,
        (session, clean_start, owner): (u64, bool, Option<&str>),
        end: CancellationToken,
    ) -> Option<Turn> {
        let turn = {
            let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
            let turn = match clients.get(client_id) {
                Some(previous) if previous.owner.as_deref() != owner => return None,
                Some(previous) => {
                    previous.end.cancel();
                    previous.turn.clone()
                }
                None => Arc::default(),
            };
            let connected = Connected {
                session,
                owner: owner.map(str::to_owned),
                end,
                turn: turn.clone(),
            };
            clients.insert(client_id.to_owned(), connected);
            turn
        };
        let turn = turn.lock_owned().await;
        // After the turn: the previous connection defers its will before it lets go.
        let will = self
            .wills
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(client_id);
        if let Some(will) = will {
            let _ = will.send(clean_start);
        }
        Some(turn)
    }

    /// Registers the will of `client_id` as waiting for its delay.
    pub fn defer_will(&self, client_id: &str) -> oneshot::Receiver<bool> {
        let (returned, waiting) = oneshot::channel();
        let mut wills = self.wills.lock().unwrap_or_else(PoisonError::into_inner);
        // Wills already published (their waiting ended) are forgotten.
        wills.retain(|_, returned| !returned.is_closed());
        wills.insert(client_id.to_owned(), returned);
        waiting
    }

    /// Forgets `client_id` if session `session` still holds it.
    pub fn disconnect(&self, client_id: &str, session: u64) {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if clients.get(client_id).is_some_and(|c| c.session == session) {
            clients.remove(client_id);
        }
    }

    /// Ends the away sessions whose expiry has passed.
    pub fn expire(&self) {
        let expired = self.sessions.lock().expire(std::time::Instant::now());
        for client in expired {
            self.quit(None, &client);
        }
    }

    /// How many retained messages are kept.
    pub fn retained_count(&self) -> usize {
        let retained = self.retained.lock().unwrap_or_else(PoisonError::into_inner);
        retained.messages.len()
    }

    /// How many clients are connected.
    pub fn connected(&self) -> usize {
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::realtime::mqtt::sessions::SessionLimits;
    use crate::storage::Store;

    /// A broker, with the store its sessions are kept in.
    fn broker(limits: RetainedLimits) -> (tempfile::TempDir, Store, Broker) {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let store = Store::open(dir.path(), Default::default(), Box::new(|_| {})).expect("opens");
        let keyspace = store.keyspace("sessions").expect("a keyspace");
        let limits_of_sessions = SessionLimits {
            max_queued: 10,
            max_expiry: std::time::Duration::from_secs(60),
            max_sessions: 10,
        };
        let sessions = Sessions::open(keyspace, limits_of_sessions).expect("sessions");
        (dir, store, Broker::new(limits, sessions))
    }

    fn message(topic: &str, payload: &'static [u8], retain: bool) -> Message {
        from("c", topic, payload, retain)
    }

    fn from(client: &str, topic: &str, payload: &'static [u8], retain: bool) -> Message {
        Message {
            topic: topic.to_owned(),
            payload: Bytes::from_static(payload),
            qos: QoS::AtMostOnce,
            retain,
            from: Publisher {
                session: 1,
                client: client.into(),
            },
            properties: None,
            chosen: Vec::new(),
        }
    }

    const LIMITS: RetainedLimits = RetainedLimits {
        bytes: 1 << 20,
        bytes_per_client: 1 << 20,
    };

    #[test]
    fn retained_bytes_are_bounded_in_all_and_per_client() {
        let (_dir, _store, broker) = broker(RetainedLimits {
            bytes: 30,
            bytes_per_client: 20,
        });
        // Each message is 2 bytes of topic and 8 of payload: 10 bytes.
        broker.publish(from("a", "t1", b"12345678", true)).unwrap();
        broker.publish(from("a", "t2", b"12345678", true)).unwrap();
        let refused = broker.publish(from("a", "t3", b"12345678", true));
        assert!(refused.unwrap_err().contains("--mqtt-retained-per-client"));
        // Replacing one's own message frees its bytes first.
        broker.publish(from("a", "t2", b"87654321", true)).unwrap();
        broker.publish(from("b", "t3", b"12345678", true)).unwrap();
        let refused = broker.publish(from("b", "t4", b"12345678", true));
        assert!(refused.unwrap_err().contains("--mqtt-retained-memory"));
        // b replaces a's message: a's share is freed, b's grows.
        broker.publish(from("b", "t1", b"12345678", true)).unwrap();
        broker.publish(from("a", "t5", b"", true)).unwrap();
        broker.publish(from("b", "t1", b"", true)).unwrap();
        broker.publish(from("a", "t4", b"12345678", true)).unwrap();
        let all = broker.retained(&TopicFilter::parse("#").unwrap());
        let topics: Vec<&str> = all.iter().map(|d| d.topic.as_str()).collect();
        assert_eq!(topics, ["t2", "t3", "t4"]);
    }

    #[test]
    fn retained_messages_are_kept_matched_and_cleared() {
        let (_dir, _store, broker) = broker(LIMITS);
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
                .map(|d| d.topic)
                .collect()
        };
        assert_eq!(topics("chat/+"), ["chat/a"]);
        assert_eq!(topics("chat/#"), ["chat/a", "chat/b/c"]);
        assert_eq!(topics("#"), ["chat/a", "chat/b/c", "chatter"]);
        broker.publish(message("chat/a", b"", true)).unwrap();
        assert_eq!(topics("chat/#"), ["chat/b/c"]);
    }
}
