//! A cache in a cluster: what the other nodes' origin requests bring here. A fill, refresh,
//! revalidation or push made on another node, and its removals by `DELETE` or an origin 404,
//! arrive with the entry's freshness as that node stored it (absolute times, the origin's
//! validators), so one origin request serves every node, and a refresh anywhere refreshes
//! everywhere. A key only other nodes read is the first this node's `maxEntries` bound evicts.
//!
//! Before it asks the origin, a node claims the key in the cluster ([`Peers`]); a node that
//! finds the key claimed waits for the claimer's fill to arrive instead of asking too, and asks
//! only if it does not come. Without a reachable cluster, every node asks for itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::Value;
use tokio::sync::Notify;

use super::fill::Fetched;
use super::{CachedTable, Entry, Freshness, RequestDirectives, Stats, freshness};
use crate::error::Result;
use crate::storage::{Envelope, Key};
use crate::table::Replicated;

/// The other nodes of a cluster, one of which may be asking the origin for a key already.
pub trait Peers: Send + Sync {
    /// Claims the origin request for `key` of `table` for this node.
    fn claim(&self, table: &str, key: &Key) -> BoxFuture<'static, Claim>;
}

/// Who asks the origin for a key.
pub enum Claim {
    /// This node: once the origin answered, run the release of the claim, given the
    /// change-log position of what the answer stored, if anything (it releases the claim once
    /// that is published, so that it is there for the others).
    Ours(Box<dyn FnOnce(Option<u64>) -> BoxFuture<'static, ()> + Send>),
    /// Another node: this completes once it has released its claim (or the claim lapsed),
    /// `false` if it said it stored nothing.
    Theirs(BoxFuture<'static, bool>),
    /// This node, with no one to tell: the cluster cannot be reached.
    Alone,
}

/// How long, after another node released its claim, its fill may take to arrive here (it is
/// in the stream by then; this is the time to apply what came before it).
const ARRIVAL: Duration = Duration::from_secs(1);

/// The keys this node waits to receive another node's fill of, each with what wakes its waiter
/// (one per key: the key's origin request on this node, see `flight.rs`).
#[derive(Default)]
pub(super) struct Arrivals {
    waiting: Mutex<HashMap<Key, Arc<Notify>>>,
}

impl Arrivals {
    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<Notify>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes the waiter of `key`, if any.
    fn arrived(&self, key: &Key) {
        if let Some(arrival) = self.waiting().get(key) {
            arrival.notify_one();
        }
    }
}

impl CachedTable {
    /// Makes this cache claim its origin requests among `peers` (once; later calls are ignored).
    pub fn join(&self, peers: Arc<dyn Peers>) {
        let _ = self.shared.peers.set(peers);
    }

    /// Claims the origin request for `key` among the peers, if there are any.
    pub(super) async fn claim(&self, key: &Key) -> Claim {
        match self.shared.peers.get() {
            Some(peers) => peers.claim(self.shared.table.name(), key).await,
            None => Claim::Alone,
        }
    }

    /// The entry stored for `key` as a fill another node makes is to be told from: its version
    /// and fetch time.
    pub(super) fn entry_before(&self, key: &Key) -> Option<(u64, u64)> {
        let (record, entry) = self.stored(key)?;
        Some((record.version, entry.fetched_at))
    }

    fn stored(&self, key: &Key) -> Option<(Envelope, Entry)> {
        let record = self.shared.table.get(key).ok()??;
        let entry = Entry::decode(&record.meta)?;
        Some((record, entry))
    }

    /// Waits for the fill of `key` that another node makes (`released` once it is done) and
    /// returns it once it is here and fresh (an entry other than `before`, what was stored when
    /// this node claimed); `None` if the claimer stored nothing, or its fill did not come
    /// within [`ARRIVAL`] of its release or within the origin timeout, and this node is to ask
    /// the origin itself.
    pub(super) async fn peer_fill(
        &self,
        key: &Key,
        before: Option<(u64, u64)>,
        released: BoxFuture<'static, bool>,
    ) -> Option<Fetched> {
        let shared = &self.shared;
        let arrival = Arc::new(Notify::new());
        shared
            .arrivals
            .waiting()
            .insert(key.clone(), arrival.clone());
        let fresh = || {
            let (record, entry) = self.stored(key)?;
            let now = shared.clock.now_ms();
            let state = freshness(Some(&entry), &RequestDirectives::default(), now);
            let filled = Some((record.version, entry.fetched_at)) != before;
            (filled && matches!(state, Freshness::Fresh { .. }))
                .then(|| Fetched::Stored(record, entry))
        };
        let wait = async {
            tokio::pin!(released);
            loop {
                if let Some(fetched) = fresh() {
                    return Some(fetched);
                }
                tokio::select! {
                    () = arrival.notified() => {}
                    stored = &mut released => match stored {
                        true => break,
                        false => return None,
                    },
                }
            }
            // Released: the fill, if there was one, is in the cluster's stream by now.
            loop {
                if let Some(fetched) = fresh() {
                    return Some(fetched);
                }
                tokio::time::timeout(ARRIVAL, arrival.notified())
                    .await
                    .ok()?;
            }
        };
        let fetched = tokio::time::timeout(shared.settings.timeout, wait)
            .await
            .ok()
            .flatten();
        shared.arrivals.waiting().remove(key);
        match &fetched {
            Some(_) => Stats::count(&shared.stats.filled_by_peers),
            None => Stats::count(&shared.stats.duplicate_fetches),
        }
        fetched
    }

    /// Applies what another node committed to this cache at `version`: `record` with the entry
    /// `meta` (its encoding), or the entry removed (`None`). An entry this node cannot read is
    /// kept as expired, as one stored before the table became a cache is.
    pub async fn replicate(
        &self,
        key: Key,
        version: u64,
        record: Option<Value>,
        meta: &[u8],
    ) -> Result<Replicated> {
        let shared = &self.shared;
        let stamped =
            record.map(|record| (record, Entry::decode(meta).unwrap_or_default().stamp()));
        let alive = stamped.is_some();
        let replicated = shared
            .table
            .replicate(key.clone(), version, stamped, replaces)
            .await?;
        if let Replicated::Applied(_) = replicated {
            Stats::count(&shared.stats.from_peers);
            if alive {
                shared.not_found.forget(&key);
                shared.recency.arrived(&key);
                self.enforce_bound();
            } else {
                shared.recency.forget(&key);
            }
            shared.arrivals.arrived(&key);
        }
        Ok(replicated)
    }
}

/// Whether entry metadata `theirs`, another node's for the version of a record this node holds
/// with `ours`, replaces it: the later stamp wins (a revalidation, or a mark of staleness),
/// then the greater encoding, so that every node chooses alike.
fn replaces(theirs: &[u8], ours: &[u8]) -> bool {
    let order = |raw| Entry::decode(raw).map(|entry| entry.stamped_at);
    (order(theirs), theirs) > (order(ours), ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(stamped_at: u64, fresh_until: u64) -> Vec<u8> {
        let entry = Entry {
            stamped_at,
            fresh_until,
            ..Entry::default()
        };
        entry.stamp().meta.to_vec()
    }

    #[test]
    fn the_later_stamp_replaces_then_the_greater_encoding() {
        // A revalidation at 2 against an entry marked stale at 1, and the other way round.
        assert!(replaces(&entry(2, 100), &entry(1, 1)));
        assert!(!replaces(&entry(1, 1), &entry(2, 100)));
        assert!(replaces(&entry(3, 3), &entry(2, 100)));
        // One moment: every node picks the same one.
        assert!(replaces(&entry(5, 9), &entry(5, 8)) != replaces(&entry(5, 8), &entry(5, 9)));
        assert!(!replaces(&entry(1, 5), &entry(1, 5)));
        // Anything readable replaces what is not.
        assert!(replaces(&entry(1, 5), b"?"));
        assert!(!replaces(b"?", &entry(1, 5)));
    }
}
