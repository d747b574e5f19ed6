//! Per-table cache statistics, counted without locks and shown by `GET /T`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

/// Counters since the server started.
#[derive(Debug, Default)]
pub struct Stats {
    /// Answers served fresh from storage (remembered 404s included).
    pub hits: AtomicU64,
    /// Reads that found nothing stored and went to the origin.
    pub misses: AtomicU64,
    /// Stale entries served: within stale-while-revalidate, `max-stale`, or stale-if-error.
    pub stale_served: AtomicU64,
    /// Requests that joined an origin request already under way.
    pub collapsed: AtomicU64,
    /// Requests sent to the origin.
    pub origin_requests: AtomicU64,
    /// Origin requests that failed, timed out or answered something unusable.
    pub origin_errors: AtomicU64,
    /// Entries removed by expiry or by the `maxEntries` bound.
    pub evictions: AtomicU64,
    /// Fills, refreshes and removals (by `DELETE` or an origin 404) other nodes of the cluster
    /// made, applied here.
    pub from_peers: AtomicU64,
    /// Origin requests not made because another node was making the same one.
    pub filled_by_peers: AtomicU64,
    /// Origin requests made although another node was making the same one (its answer did
    /// not arrive in time, or was not stored).
    pub duplicate_fetches: AtomicU64,
    origin_micros: AtomicU64,
    origin_max_micros: AtomicU64,
}

impl Stats {
    /// Adds one to `counter`.
    pub fn count(counter: &AtomicU64) {
        Stats::add(counter, 1);
    }

    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Records how long one origin request took.
    pub fn origin_took(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.origin_micros.fetch_add(micros, Ordering::Relaxed);
        self.origin_max_micros.fetch_max(micros, Ordering::Relaxed);
    }

    /// The counters as JSON.
    pub fn to_json(&self) -> Value {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let requests = read(&self.origin_requests);
        let millis = |micros: u64| f64::from(u32::try_from(micros).unwrap_or(u32::MAX)) / 1000.0;
        let mean = read(&self.origin_micros).checked_div(requests).unwrap_or(0);
        json!({
            "hits": read(&self.hits),
            "misses": read(&self.misses),
            "staleServed": read(&self.stale_served),
            "collapsed": read(&self.collapsed),
            "originRequests": requests,
            "originErrors": read(&self.origin_errors),
            "originLatencyMeanMs": millis(mean),
            "originLatencyMaxMs": millis(read(&self.origin_max_micros)),
            "evictions": read(&self.evictions),
            "fromPeers": read(&self.from_peers),
            "filledByPeers": read(&self.filled_by_peers),
            "duplicateFetches": read(&self.duplicate_fetches),
        })
    }
}
