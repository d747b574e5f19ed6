//! What replication reports: on `GET /_cluster`, on `/_health` while catching up, in the log.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use serde_json::{Value, json};

use super::Settings;
use crate::storage::Store;

/// How many refused records `GET /_cluster` lists (the log has every one).
const RECENT_REFUSED: usize = 20;

/// From how far behind a peer's commits arrive, once caught up, the log says so; and below
/// which lag it says they keep up again (far enough below not to say it at every commit of a
/// lag that hovers around the first).
const BEHIND_MS: u64 = 1_000;
const KEEPING_UP_MS: u64 = 250;

/// Replication's counters and state, shared by its tasks and the HTTP handlers.
pub struct Status {
    node: String,
    cluster: String,
    url: String,
    connected: AtomicBool,
    /// Set once this node's consumer had no message left to apply.
    caught_up: AtomicBool,
    /// Commits of other nodes stored here.
    applied: AtomicU64,
    /// Messages this node already held (its own, or ones it applied before).
    held: AtomicU64,
    /// Messages older than what this node holds, answered by publishing its version again.
    superseded: AtomicU64,
    /// The stream sequence of the last message applied here, and how many messages were in
    /// the stream after it then.
    stream_applied: AtomicU64,
    stream_pending: AtomicU64,
    refused: Mutex<Refused>,
    peers: Mutex<BTreeMap<String, Peer>>,
}

/// Messages that could not be applied: not a commit, an unknown table, or a record that does
/// not validate against this node's schema.
#[derive(Default)]
struct Refused {
    count: u64,
    recent: VecDeque<Value>,
}

/// What this node has applied of another's commits.
#[derive(Clone, Copy, Default)]
struct Peer {
    applied: u64,
    last_version: u64,
    /// From the stream storing the last one applied to its application here.
    lag_ms: u64,
    /// Applied since the log last told of this peer, and the greatest lag among them.
    window: (u64, u64),
    /// Whether its commits arrive late (from [`BEHIND_MS`] until below [`KEEPING_UP_MS`]), once caught up.
    behind: bool,
}

impl Status {
    pub(super) fn new(settings: &Settings) -> Status {
        Status {
            node: settings.node.clone(),
            cluster: settings.cluster.clone(),
            url: without_credentials(&settings.url),
            connected: AtomicBool::new(false),
            caught_up: AtomicBool::new(false),
            applied: AtomicU64::new(0),
            held: AtomicU64::new(0),
            superseded: AtomicU64::new(0),
            stream_applied: AtomicU64::new(0),
            stream_pending: AtomicU64::new(0),
            refused: Mutex::default(),
            peers: Mutex::default(),
        }
    }

    /// Whether this node has applied everything the stream held when it connected first.
    pub fn caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }

    pub(super) fn set_caught_up(&self) {
        if !self.caught_up.swap(true, Ordering::AcqRel) {
            tracing::info!(node = %self.node, "caught up with the cluster");
        }
    }

    pub(super) fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }

    pub(super) fn applied(&self, node: &str, version: u64, lag_ms: u64) {
        self.applied.fetch_add(1, Ordering::Relaxed);
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        let peer = peers.entry(node.to_owned()).or_default();
        peer.applied += 1;
        peer.last_version = peer.last_version.max(version);
        peer.lag_ms = lag_ms;
        peer.window = (peer.window.0 + 1, peer.window.1.max(lag_ms));
        // While catching up every commit is late; that is what catching up means.
        let threshold = if peer.behind {
            KEEPING_UP_MS
        } else {
            BEHIND_MS
        };
        let behind = self.caught_up() && lag_ms >= threshold;
        match (peer.behind, behind) {
            (false, true) => tracing::warn!(peer = node, lag_ms, "replication from a peer lags"),
            (true, false) => tracing::info!(
                peer = node,
                lag_ms,
                "replication from a peer keeps up again"
            ),
            _ => {}
        }
        peer.behind = behind;
    }

    /// Logs what was applied of each peer's commits since the last call, with the lag.
    pub(super) fn log_lag(&self) {
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        for (node, peer) in peers.iter_mut().filter(|(_, peer)| peer.window.0 > 0) {
            let (applied, max_lag_ms) = std::mem::take(&mut peer.window);
            let lag_ms = peer.lag_ms;
            tracing::info!(peer = %node, applied, lag_ms, max_lag_ms, "replicated from a peer");
        }
    }

    /// The message at `sequence` of the stream, with `pending` after it, is applied.
    pub(super) fn at(&self, sequence: u64, pending: u64) {
        self.stream_applied.store(sequence, Ordering::Relaxed);
        self.stream_pending.store(pending, Ordering::Relaxed);
    }

    pub(super) fn held(&self) {
        self.held.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn superseded(&self) {
        self.superseded.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts and logs a message that cannot be applied.
    pub(super) fn refused(&self, subject: &str, node: Option<&str>, reason: &str) {
        tracing::warn!(subject, node, reason, "a replicated record was refused");
        let mut refused = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
        refused.count += 1;
        if refused.recent.len() == RECENT_REFUSED {
            refused.recent.pop_front();
        }
        refused
            .recent
            .push_back(json!({ "subject": subject, "node": node, "reason": reason }));
    }

    /// The report of `GET /_cluster`.
    pub fn report(&self, store: &Store) -> Value {
        let peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        let peers: serde_json::Map<String, Value> = peers
            .iter()
            .map(|(node, peer)| {
                let report = json!({
                    "applied": peer.applied,
                    "lastVersion": peer.last_version,
                    "lagMs": peer.lag_ms,
                });
                (node.clone(), report)
            })
            .collect();
        let refused = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
        json!({
            "node": self.node,
            "cluster": self.cluster,
            "nats": self.url,
            "connected": self.connected.load(Ordering::Relaxed),
            "caughtUp": self.caught_up(),
            "changeLog": {
                "last": store.last_seq(),
                "published": store.published(),
                "unpublished": store.last_seq().saturating_sub(store.published()),
            },
            "stream": {
                "applied": self.stream_applied.load(Ordering::Relaxed),
                "pending": self.stream_pending.load(Ordering::Relaxed),
            },
            "applied": self.applied.load(Ordering::Relaxed),
            "held": self.held.load(Ordering::Relaxed),
            "superseded": self.superseded.load(Ordering::Relaxed),
            "peers": peers,
            "refused": { "count": refused.count, "recent": Vec::from(refused.recent.clone()) },
        })
    }
}

/// `url` without the user and password it may carry (`nats://user:secret@host:4222`).
fn without_credentials(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, host))) => format!("{scheme}://{host}"),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reported_url_holds_no_credentials() {
        assert_eq!(
            without_credentials("nats://u:secret@n1:4222"),
            "nats://n1:4222"
        );
        assert_eq!(without_credentials("nats://n1:4222"), "nats://n1:4222");
    }
}
