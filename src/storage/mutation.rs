//! The mutation contract: what a caller hands the writer (a target and a decision) and what it
//! gets back once the write is durable (a [`Commit`]).

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::oneshot;

use super::{Envelope, Key, Records};
use crate::error::Result;

/// Which record a mutation targets.
pub enum Target {
    /// The record with this key.
    Key(Key),
    /// A new record keyed one above the highest integer key the table has ever had.
    NextInteger,
}

/// What the writer tells a mutation's decision about the moment of the commit.
pub struct WriteContext<'a> {
    /// The record's key.
    pub key: &'a Key,
    /// Commit time, ms since the Unix epoch.
    pub now_ms: u64,
    /// When the record is absent and the store keeps tombstones: the version of the delete
    /// that removed it, if one did.
    pub deleted: Option<u64>,
}

/// When a record may be removed, and what its table's resource keeps beside it (opaque here).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stamp {
    /// When the record may be removed (ms since the Unix epoch); listed in the expiry tree.
    pub expires_at: Option<u64>,
    /// Resource metadata, stored in the envelope.
    pub meta: Bytes,
}

/// Where a commit was made, and who else is to learn of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Made on this node, for the whole cluster: replication publishes it.
    Cluster,
    /// Made on another node and applied here.
    Peer,
    /// Made on this node for this node only, as a cache entry evicted or expired here (every
    /// node bounds and sweeps its own cache): never published.
    Node,
}

/// The outcome a decision asks for.
pub enum Change {
    /// Store this (validated) record with this stamp.
    Put(Value, Stamp),
    /// Keep the record, its version and its `updated` time; replace only its stamp. The record
    /// does not change, so no event is announced.
    Restamp(Stamp),
    /// Remove the record.
    Delete,
    /// Remove the record from this node only ([`Scope::Node`]): no tombstone is kept, so the
    /// record comes back with the next version another node sends.
    Evict,
    /// Apply a commit made on another node, with its version: store this record with this
    /// stamp, or remove the record (`None`). The clock moves past the version.
    Replicate(u64, Option<(Value, Stamp)>),
    /// Replace only the stamp, as another node did to the same version of the record (a
    /// cache entry it revalidated or marked stale).
    RestampReplica(Stamp),
}

/// Decides a mutation given the current record; runs on the writer thread, so it must be quick.
pub type Decide = Box<dyn FnOnce(Option<&Envelope>, &WriteContext) -> Result<Change> + Send>;

/// Decides a mutation given the current record, ahead of the writer and again on it if the record
/// changed in between (see [`Store::commit_ahead`](super::Store::commit_ahead)).
pub type DecideAhead =
    Arc<dyn Fn(Option<&Envelope>, &WriteContext) -> Result<Change> + Send + Sync>;

/// The values each index of a table holds for one record, in the order of the table's indexes.
pub(crate) type Indexed = Vec<BTreeSet<Vec<u8>>>;

/// A change with its work done: the record serialised and its index values computed.
pub(crate) enum Prepared {
    Put {
        json: Bytes,
        indexed: Indexed,
        stamp: Stamp,
        /// The version another node gave it; `None` for a commit of this node.
        replicated: Option<u64>,
    },
    Restamp {
        stamp: Stamp,
        /// Whether another node made it.
        replicated: bool,
    },
    Delete {
        /// The version another node gave the delete; `None` for a commit of this node.
        replicated: Option<u64>,
    },
    Evict,
}

impl Prepared {
    /// Where the change was made, and who else is to learn of it.
    pub fn scope(&self) -> Scope {
        match self {
            Prepared::Put {
                replicated: Some(_),
                ..
            }
            | Prepared::Delete {
                replicated: Some(_),
            }
            | Prepared::Restamp {
                replicated: true, ..
            } => Scope::Peer,
            Prepared::Evict => Scope::Node,
            _ => Scope::Cluster,
        }
    }
}

/// A mutation decided and prepared outside the writer, against the record as it was then. The
/// writer takes it if the record is still that one, and decides again otherwise.
pub(crate) struct Ahead {
    /// The key it was decided for (for a generated integer key, the one predicted).
    pub key: Key,
    /// The record it was decided against: its version and index values; `None` if absent.
    pub seen: Option<(u64, Indexed)>,
    /// The moment it was decided at, which the commit takes as its time.
    pub now_ms: u64,
    /// The outcome.
    pub change: Result<Prepared>,
}

/// A durable commit, reported to `on_durable` and to the caller.
#[derive(Clone, Debug)]
pub struct Commit {
    /// The table written.
    pub table: Arc<str>,
    /// The record's key.
    pub key: Key,
    /// The commit's version.
    pub version: u64,
    /// The record after the commit; `None` for a delete.
    pub record: Option<Envelope>,
    /// The commit's position in the change log; `None` if it is not logged (a restamp, unless
    /// the store replicates and this node made it).
    pub seq: Option<u64>,
    /// Where it was made, and who else is to learn of it.
    pub scope: Scope,
    /// Whether it replaced only the record's stamp: not announced to subscribers.
    pub restamp: bool,
}

/// Called on the writer thread for each logged commit (see [`Commit::seq`]), in commit order,
/// once it is on disk.
pub type OnDurable = Box<dyn Fn(&Commit) + Send>;

/// One queued mutation and where its outcome goes.
pub(crate) struct Request {
    pub records: Records,
    pub target: Target,
    pub decide: Decide,
    pub ahead: Option<Ahead>,
    pub reply: oneshot::Sender<Result<Commit>>,
}

/// What the writer is asked to do.
pub(crate) enum Command {
    Write(Box<Request>),
    /// Finish what is queued before this, then stop.
    Close,
}
