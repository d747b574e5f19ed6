//! Persistent sessions: what the server keeps of a client that asked for it (MQTT 3.1.1
//! `cleanSession=0`, MQTT 5 a Session Expiry Interval) while it is away, in the store, so it
//! survives a restart.
//!
//! A session keeps its subscriptions, the QoS 2 publishes it received and has not seen released,
//! and its messages on plain topics: those in flight (sent, not yet acknowledged: resent with DUP
//! on reconnect) and those published while it was away, at QoS 1 or 2, at most
//! [`SessionLimits::max_queued`] of them (past it the oldest are dropped, and counted). QoS 0
//! messages are not kept for an absent client, as Mosquitto does by default. Table topics need
//! nothing queued: the session keeps the change-log position up to which its table deliveries
//! were acknowledged, and a reconnect replays the changes after it (or resyncs, if the log no
//! longer holds them).
//!
//! In the `mqtt-sessions` keyspace, `s<client>` holds a session ([`Kept`], JSON) and
//! `m<client><seq>` its messages in order (`<client>` is the id's length, 2 bytes, then the id;
//! `<seq>` 8 bytes, big-endian). A message's pkid is 0 until it is sent.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rumqttd::protocol::QoS;
use serde::{Deserialize, Serialize};

mod encoding;

use encoding::{decode, encode, message_key, messages_prefix, seq_of, session_key};

use super::broker::Message;
use super::grants::{Grant, Grants};
use super::outbox::Delivery;
use crate::error::{Chain, Error, Result};
use crate::storage::Keyspace;

/// The keyspace persistent sessions are kept in.
pub const KEYSPACE: &str = "mqtt-sessions";

/// How much a persistent session may keep.
#[derive(Clone, Copy, Debug)]
pub struct SessionLimits {
    /// Messages kept for one session, at most.
    pub max_queued: usize,
    /// The longest a session outlives its connection; also the expiry of MQTT 3.1.1 sessions,
    /// which do not state one.
    pub max_expiry: Duration,
    /// Persistent sessions kept at most, away or connected.
    pub max_sessions: usize,
}

/// A session as kept in the store.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Kept {
    /// Seconds the session outlives its connection.
    pub expiry: u32,
    pub grants: Vec<KeptGrant>,
    /// The change-log position up to which table deliveries were acknowledged.
    pub table_since: u64,
    /// QoS 2 publishes received and answered with PUBREC, awaiting PUBREL.
    pub awaiting_release: Vec<u16>,
    /// When the client left, in milliseconds since the epoch; `None` while it is connected (a
    /// session found so after a restart left when the server stopped).
    pub left_at: Option<u64>,
    /// Messages dropped because the session kept as many as it may.
    pub dropped: u64,
    /// The user whose session it is (`None`: anonymous): another user's client with the same
    /// client id does not get it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// A subscription as kept in the store.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeptGrant {
    pub filter: String,
    pub qos: u8,
    pub no_local: bool,
    pub retain_as_published: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<usize>,
}

impl KeptGrant {
    pub fn of(grant: &Grant) -> KeptGrant {
        KeptGrant {
            filter: grant.name(),
            qos: grant.qos as u8,
            no_local: grant.no_local,
            retain_as_published: grant.retain_as_published,
            id: grant.id,
        }
    }

    pub fn grant(&self) -> Option<Grant> {
        let (filter, share) = super::grants::parse(&self.filter).ok()?;
        Some(Grant {
            filter,
            share,
            qos: rumqttd::protocol::qos(self.qos)?,
            no_local: self.no_local,
            retain_as_published: self.retain_as_published,
            id: self.id,
        })
    }
}

/// Kept subscriptions as grants again (any that no longer parse are left out).
trait KeptGrants {
    fn grants(&self) -> Grants;
}

impl KeptGrants for Vec<KeptGrant> {
    fn grants(&self) -> Grants {
        let mut grants = Grants::default();
        for grant in self.iter().filter_map(KeptGrant::grant) {
            grants.restore(grant);
        }
        grants
    }
}

/// A kept message: what to deliver, and how far its delivery got.
#[derive(Clone, Debug)]
pub struct Stored {
    pub seq: u64,
    pub delivery: Delivery,
    /// The packet id it was sent with; 0 if it was not sent yet.
    pub pkid: u16,
    /// A QoS 2 delivery the client received (PUBREC): only its PUBREL is owed.
    pub released: bool,
}

/// Changes to the kept QoS 1 messages of a connected session, written together (every
/// [`Pending::BATCH`] changes or [`Pending::EVERY`], and when the client leaves) rather than one
/// at a time: a message delivered and acknowledged in between is never written at all, and a
/// kept message sent from the store has its packet id written only if it is still in flight
/// when the client leaves ([`Sessions::mark_sent`]). QoS 2
/// messages, which must never be delivered twice, are written at once. Neither waits for the
/// disk: after a `kill -9`, the QoS 1 messages in flight to a connected client in its last
/// second or so may be lost or delivered again, unlike those kept for an absent client, which
/// are on disk before their publisher's acknowledgement.
#[derive(Default)]
pub struct Pending {
    changes: std::collections::BTreeMap<u64, Change>,
    /// When the oldest change was made.
    since: Option<Instant>,
}

enum Change {
    /// Keep this message, which the store does not hold yet.
    Keep(Stored),
    Forget,
}

impl Pending {
    const BATCH: usize = 256;
    const EVERY: Duration = Duration::from_secs(1);

    /// Keeps `stored`, which the store does not hold yet.
    pub fn keep(&mut self, stored: Stored) {
        self.since.get_or_insert_with(Instant::now);
        self.changes.insert(stored.seq, Change::Keep(stored));
    }

    /// Forgets the message `seq`, delivered.
    pub fn forget(&mut self, seq: u64) {
        self.since.get_or_insert_with(Instant::now);
        match self.changes.get(&seq) {
            Some(Change::Keep(_)) => {
                self.changes.remove(&seq);
            }
            _ => {
                self.changes.insert(seq, Change::Forget);
            }
        }
    }

    /// Whether the changes are due to be written.
    pub fn is_due(&self) -> bool {
        self.changes.len() >= Self::BATCH
            || self.since.is_some_and(|at| at.elapsed() >= Self::EVERY)
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// A session taken back by its client on reconnect.
pub struct Resumed {
    pub kept: Kept,
    /// Its messages, in order.
    pub messages: Vec<Stored>,
    /// The sequence number of the next message kept for it.
    pub next_seq: u64,
}

/// A session whose client is away.
struct Away {
    grants: Grants,
    /// The sequence numbers of its kept messages not yet sent, oldest first: those that may be
    /// dropped to make room (one sent and not yet acknowledged holds its packet id and, at QoS
    /// 2, an exchange the client may be in the middle of).
    seqs: VecDeque<u64>,
    next_seq: u64,
    /// When it ends.
    expires_at: Instant,
    dropped: u64,
}

/// The persistent sessions.
pub struct Sessions {
    keyspace: Keyspace,
    limits: SessionLimits,
    away: Mutex<HashMap<String, Away>>,
    /// The client ids of every persistent session kept, away or connected.
    kept: Mutex<HashSet<String>>,
}

/// The sessions whose clients are away, locked: messages are queued for them, and sessions
/// move between connected and away, one at a time.
pub struct AwayGuard<'a> {
    sessions: &'a Sessions,
    away: MutexGuard<'a, HashMap<String, Away>>,
}

impl Sessions {
    /// The sessions kept in `keyspace`: those whose expiry has passed (while the server was
    /// stopped, too) are removed, the others wait for their clients.
    pub fn open(keyspace: Keyspace, limits: SessionLimits) -> Result<Sessions> {
        let now = epoch_ms();
        let mut away = HashMap::new();
        let mut expired = Vec::new();
        for entry in keyspace.scan(b"s") {
            let (key, value) = entry?;
            let Some(client) = std::str::from_utf8(&key[1..]).ok().map(str::to_owned) else {
                continue;
            };
            let Ok(kept) = serde_json::from_slice::<Kept>(&value) else {
                tracing::warn!(client, "dropping an unreadable persistent MQTT session");
                expired.push(client);
                continue;
            };
            let expiry = Duration::from_secs(u64::from(kept.expiry)).min(limits.max_expiry);
            let left_at = kept.left_at.unwrap_or(now);
            let gone_for = Duration::from_millis(now.saturating_sub(left_at));
            let Some(remaining) = expiry.checked_sub(gone_for) else {
                expired.push(client);
                continue;
            };
            let (seqs, next_seq) = queued(&keyspace, &client)?;
            let grants = kept.grants.grants();
            away.insert(
                client,
                Away {
                    grants,
                    seqs,
                    next_seq,
                    expires_at: Instant::now() + remaining,
                    dropped: kept.dropped,
                },
            );
        }
        let kept = away.keys().cloned().collect();
        let sessions = Sessions {
            keyspace,
            limits,
            away: Mutex::new(away),
            kept: Mutex::new(kept),
        };
        for client in expired {
            sessions.discard(&client)?;
        }
        let kept = sessions.lock().away.len();
        if kept > 0 {
            tracing::info!(
                sessions = kept,
                "persistent MQTT sessions wait for their clients"
            );
        }
        Ok(sessions)
    }

    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    /// The away sessions, locked.
    pub fn lock(&self) -> AwayGuard<'_> {
        AwayGuard {
            sessions: self,
            away: self.away.lock().unwrap_or_else(PoisonError::into_inner),
        }
    }

    /// Starts keeping a new persistent session for `client`; false if as many as
    /// [`SessionLimits::max_sessions`] are kept already.
    pub fn admit(&self, client: &str) -> bool {
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.contains(client) {
            return true;
        }
        if kept.len() >= self.limits.max_sessions {
            return false;
        }
        kept.insert(client.to_owned());
        true
    }

    /// Keeps session `client` as connected now.
    pub fn save(&self, client: &str, kept: &Kept) -> Result<()> {
        let encoded = serde_json::to_vec(kept).expect("a session encodes");
        self.keyspace.insert(&session_key(client), &encoded)
    }

    /// Keeps a message of `client`'s session.
    pub fn store(&self, client: &str, stored: &Stored) -> Result<()> {
        let key = message_key(client, stored.seq);
        self.keyspace.insert(&key, &encode(stored))
    }

    /// Forgets a message of `client`'s session, delivered.
    pub fn delivered(&self, client: &str, seq: u64) -> Result<()> {
        self.keyspace.remove(&message_key(client, seq))
    }

    /// Removes everything kept of `client`'s session.
    pub fn discard(&self, client: &str) -> Result<()> {
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        kept.remove(client);
        drop(kept);
        self.keyspace.remove_all(&messages_prefix(client))?;
        self.keyspace.remove(&session_key(client))
    }

    /// Notes, for messages of `client`'s session that the store keeps, the packet ids they went
    /// out with (`(pkid, seq)`), so a reconnect resends them under those ids.
    pub fn mark_sent(
        &self,
        client: &str,
        sent: impl IntoIterator<Item = (u16, u64)>,
    ) -> Result<()> {
        let mut changes = Vec::new();
        for (pkid, seq) in sent {
            let key = message_key(client, seq);
            if let Some(mut raw) = self.keyspace.get(&key)?
                && raw.len() >= 4
            {
                raw[2..4].copy_from_slice(&pkid.to_be_bytes());
                changes.push((key, Some(raw)));
            }
        }
        self.keyspace.apply(changes)
    }

    /// Writes what `pending` holds for `client`'s session, and empties it.
    pub fn write(&self, client: &str, pending: &mut Pending) -> Result<()> {
        pending.since = None;
        let changes = std::mem::take(&mut pending.changes);
        self.keyspace
            .apply(changes.into_iter().map(|(seq, change)| {
                let key = message_key(client, seq);
                match change {
                    Change::Keep(stored) => (key, Some(encode(&stored))),
                    Change::Forget => (key, None),
                }
            }))
    }

    /// Waits until what was kept is on disk.
    pub async fn flush(&self) -> Result<()> {
        self.keyspace.flush().await
    }
}

impl AwayGuard<'_> {
    /// Keeps `message` for every away session one of whose subscriptions matches it at QoS 1
    /// or 2; true if there was one.
    pub fn queue(&mut self, message: &Message) -> bool {
        let sessions = self.sessions;
        let mut kept = false;
        for (client, away) in self.away.iter_mut() {
            let from_itself = *message.from.client == **client;
            let Some(delivery) = message.delivery(&away.grants, client, from_itself) else {
                continue;
            };
            if delivery.qos == QoS::AtMostOnce {
                continue;
            }
            match away.keep(sessions, client, delivery) {
                Ok(()) => kept = true,
                Err(error) => tracing::error!(
                    client, error = %Chain(&error), "could not keep a message for an absent MQTT client"
                ),
            }
        }
        kept
    }

    /// Takes session `client` back for its reconnecting client, or ends it if `clean`; `None`
    /// if it had none (left). Another user's session is neither taken nor ended
    /// ([`Error::Forbidden`]).
    pub fn resume(
        &mut self,
        client: &str,
        clean: bool,
        owner: Option<&str>,
    ) -> Result<Option<Resumed>> {
        let sessions = self.sessions;
        let stored = sessions.keyspace.get(&session_key(client))?;
        let kept = stored
            .as_ref()
            .map(|stored| serde_json::from_slice::<Kept>(stored).unwrap_or_default());
        if let Some(kept) = &kept
            && kept.owner.as_deref() != owner
        {
            return Err(Error::Forbidden(format!(
                "client id `{client}` names another user's persistent session"
            )));
        }
        if clean {
            if stored.is_some() {
                sessions.discard(client)?;
            }
            self.away.remove(client);
            return Ok(None);
        }
        if stored.is_none() {
            self.away.remove(client);
            return Ok(None);
        }
        let mut kept = kept.unwrap_or_default();
        if let Some(away) = self.away.get(client) {
            kept.dropped = away.dropped;
        }
        let mut messages = Vec::new();
        for entry in sessions.keyspace.scan(&messages_prefix(client)) {
            let (key, value) = entry?;
            match decode(seq_of(&key), &value) {
                Some(stored) => messages.push(stored),
                None => tracing::warn!(client, "dropping an unreadable kept MQTT message"),
            }
        }
        // Only now that it was read: on a failure it stays away, and keeps what comes.
        let away = self.away.remove(client);
        let next_seq = messages.last().map_or(1, |last| last.seq + 1);
        let next_seq = away.map_or(next_seq, |away| away.next_seq.max(next_seq));
        Ok(Some(Resumed {
            kept,
            messages,
            next_seq,
        }))
    }

    /// Keeps session `client` for its absent client, with `kept` as its state and `late`, the
    /// messages that reached it as it left, queued after the ones it already has.
    pub fn park(
        &mut self,
        client: &str,
        mut kept: Kept,
        next_seq: u64,
        late: Vec<Delivery>,
    ) -> Result<()> {
        let sessions = self.sessions;
        let limits = sessions.limits;
        kept.left_at = Some(epoch_ms());
        let expiry = Duration::from_secs(u64::from(kept.expiry)).min(limits.max_expiry);
        let (seqs, last_seq) = queued(&sessions.keyspace, client)?;
        let mut away = Away {
            grants: kept.grants.grants(),
            seqs,
            next_seq: next_seq.max(last_seq),
            expires_at: Instant::now() + expiry,
            dropped: kept.dropped,
        };
        for delivery in late {
            away.keep(sessions, client, delivery)?;
        }
        kept.dropped = away.dropped;
        sessions.save(client, &kept)?;
        self.away.insert(client.to_owned(), away);
        Ok(())
    }

    /// Ends the away sessions whose expiry has passed; returns their clients.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let expired: Vec<String> = self
            .away
            .iter()
            .filter(|(_, away)| away.expires_at <= now)
            .map(|(client, _)| client.clone())
            .collect();
        for client in &expired {
            self.away.remove(client);
            tracing::debug!(client, "a persistent MQTT session expired");
            if let Err(error) = self.sessions.discard(client) {
                tracing::error!(client, error = %Chain(&error), "could not remove an expired MQTT session");
            }
        }
        expired
    }

    /// How many sessions are away.
    pub fn count(&self) -> usize {
        self.away.len()
    }

    /// The shared subscriptions the away sessions hold, with their clients.
    pub fn shared_grants(&self) -> Vec<(String, Grant)> {
        let mut shared = Vec::new();
        for (client, away) in self.away.iter() {
            for grant in away.grants.iter().filter(|g| g.share.is_some()) {
                shared.push((client.clone(), grant.clone()));
            }
        }
        shared
    }

    /// How many subscriptions the away sessions hold.
    pub fn subscriptions(&self) -> usize {
        self.away.values().map(|away| away.grants.len()).sum()
    }
}

impl Away {
    /// Keeps `delivery` last, dropping the oldest message if the session keeps as many as it
    /// may.
    fn keep(&mut self, sessions: &Sessions, client: &str, delivery: Delivery) -> Result<()> {
        if self.seqs.len() >= sessions.limits.max_queued
            && let Some(oldest) = self.seqs.pop_front()
        {
            sessions.delivered(client, oldest)?;
            if self.dropped == 0 {
                tracing::warn!(
                    client,
                    max = sessions.limits.max_queued,
                    "an absent MQTT client's session is full; its oldest messages are dropped (--mqtt-max-queued)"
                );
            }
            self.dropped += 1;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        sessions.store(
            client,
            &Stored {
                seq,
                delivery,
                pkid: 0,
                released: false,
            },
        )?;
        self.seqs.push_back(seq);
        Ok(())
    }
}

/// The sequence numbers of `client`'s kept messages not yet sent, oldest first, and the
/// sequence number after the last of all its kept messages.
fn queued(keyspace: &Keyspace, client: &str) -> Result<(VecDeque<u64>, u64)> {
    let mut seqs = VecDeque::new();
    let mut next = 1;
    for entry in keyspace.scan(&messages_prefix(client)) {
        let (key, value) = entry?;
        let seq = seq_of(&key);
        next = seq + 1;
        // The packet id: bytes 2 and 3, 0 until sent.
        if value.get(2..4) == Some(&[0, 0]) {
            seqs.push_back(seq);
        }
    }
    Ok((seqs, next))
}

fn epoch_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH);
    since.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
