//! Change events: one per durable commit, broadcast in commit order to in-process subscribers,
//! and the messages relayed to a table's subscribers without changing it.

use std::sync::Arc;

use bytes::Bytes;

use crate::bus::{self, Bus, Footprint};
use crate::storage::{Commit, Key, LoggedChange};

/// What a commit did to a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// The record was created or replaced (a patch is reported as the whole new record).
    Put,
    /// The record was removed.
    Delete,
    /// A message published to the record's topic (a non-retained MQTT PUBLISH); the record is
    /// unchanged.
    Message,
    /// The record no longer matches the query of the subscription it is sent to: it was
    /// changed, not removed (see `realtime::matching`).
    Leave,
}

impl ChangeKind {
    /// The name used in event envelopes: `put`, `delete`, `message` or `leave`.
    pub fn name(self) -> &'static str {
        match self {
            ChangeKind::Put => "put",
            ChangeKind::Delete => "delete",
            ChangeKind::Message => "message",
            ChangeKind::Leave => "leave",
        }
    }
}

/// A committed change, published only after it is durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeEvent {
    /// What happened.
    pub kind: ChangeKind,
    /// The table changed.
    pub table: Arc<str>,
    /// The record's primary key.
    pub id: Key,
    /// The commit's version (also the record's `ETag`); 0 for a message.
    pub version: u64,
    /// The record's JSON after the change; `None` after a delete; a message's payload.
    pub value: Option<Bytes>,
    /// The commit's position in the change log; `None` for a message.
    pub seq: Option<u64>,
}

impl From<&Commit> for ChangeEvent {
    fn from(commit: &Commit) -> ChangeEvent {
        ChangeEvent {
            kind: match commit.record {
                Some(_) => ChangeKind::Put,
                None => ChangeKind::Delete,
            },
            table: commit.table.clone(),
            id: commit.key.clone(),
            version: commit.version,
            value: commit.record.as_ref().map(|r| r.value.clone()),
            seq: commit.seq,
        }
    }
}

impl From<LoggedChange> for ChangeEvent {
    fn from(change: LoggedChange) -> ChangeEvent {
        ChangeEvent {
            kind: match change.value {
                Some(_) => ChangeKind::Put,
                None => ChangeKind::Delete,
            },
            table: change.table,
            id: change.key,
            version: change.version,
            value: change.value,
            seq: Some(change.seq),
        }
    }
}

impl Footprint for ChangeEvent {
    fn footprint(&self) -> usize {
        const FIXED: usize = 128;
        FIXED + self.value.as_ref().map_or(0, Bytes::len)
    }
}

/// The in-process broadcast of change events. Cloning shares the bus.
#[derive(Clone, Debug)]
pub struct EventBus {
    bus: Bus<ChangeEvent>,
}

impl EventBus {
    /// A bus that keeps up to `capacity` events and `max_bytes` of them for its slowest
    /// subscriber.
    pub fn new(capacity: usize, max_bytes: usize) -> EventBus {
        EventBus {
            bus: Bus::new(capacity, max_bytes),
        }
    }

    /// Delivers `event` to every current subscriber; with none, the event is dropped.
    pub fn publish(&self, event: ChangeEvent) {
        self.bus.send(event);
    }

    /// Receives every event published from now on. A receiver that falls more than the bus's
    /// capacity behind gets `RecvError::Lagged` rather than slowing writers.
    pub fn subscribe(&self) -> bus::Receiver<ChangeEvent> {
        self.bus.subscribe()
    }
}
