//! The recency bound: when `maxEntries` bounds a cache table, its stored keys by recency of use,
//! and the eviction of the least recently used beyond the bound.

use std::sync::{Mutex, PoisonError};

use lru::LruCache;

use super::{CachedTable, Entry, Stats};
use crate::error::Result;
use crate::storage::Key;
use crate::table::Table;

/// Stored keys by recency of use; nothing at all for an unbounded table.
pub(super) struct Recency {
    bound: Option<(u64, Mutex<LruCache<Key, ()>>)>,
}

impl Recency {
    /// The recency of `table`'s stored entries, bounded to `max_entries`: filled from storage,
    /// oldest fill first, so a restart keeps the order approximately.
    pub fn load(table: &Table, max_entries: Option<u64>) -> Result<Recency> {
        let Some(max) = max_entries else {
            return Ok(Recency { bound: None });
        };
        let mut stored = Vec::new();
        for record in table.scan(false, None) {
            let (key, record) = record?;
            let fetched_at = Entry::decode(&record.meta).map_or(0, |e| e.fetched_at);
            stored.push((fetched_at, key));
        }
        stored.sort_unstable();
        let mut order = LruCache::unbounded();
        for (_, key) in stored {
            order.put(key, ());
        }
        Ok(Recency {
            bound: Some((max, Mutex::new(order))),
        })
    }

    /// Marks `key` as just used.
    pub fn touch(&self, key: &Key) {
        if let Some((_, order)) = &self.bound {
            let mut order = lock(order);
            // `get` promotes in place: a hit costs one lookup, and no clone of the key.
            if order.get(key).is_none() {
                order.put(key.clone(), ());
            }
        }
    }

    /// Adds `key`, stored by another node's fill, as the least recently used, so it stays only
    /// as long as the keys this node uses leave room; a key already here keeps its place.
    pub fn arrived(&self, key: &Key) {
        if let Some((_, order)) = &self.bound {
            let mut order = lock(order);
            if !order.contains(key) {
                order.put(key.clone(), ());
                order.demote(key);
            }
        }
    }

    /// Drops `key` (it is no longer stored).
    pub fn forget(&self, key: &Key) {
        if let Some((_, order)) = &self.bound {
            lock(order).pop(key);
        }
    }

    /// Takes the keys beyond the bound off the list, least recently used first.
    fn over_bound(&self) -> Vec<Key> {
        let Some((max, order)) = &self.bound else {
            return Vec::new();
        };
        let mut order = lock(order);
        let mut victims = Vec::new();
        while u64::try_from(order.len()).unwrap_or(u64::MAX) > *max {
            match order.pop_lru() {
                Some((key, ())) => victims.push(key),
                None => break,
            }
        }
        victims
    }
}

impl CachedTable {
    /// Evicts the least recently used entries beyond `maxEntries`, in the background.
    pub(super) fn enforce_bound(&self) {
        let victims = self.shared.recency.over_bound();
        if victims.is_empty() {
            return;
        }
        let shared = self.shared.clone();
        self.shared.tasks.spawn(async move {
            let writes = victims
                .into_iter()
                .map(|key| shared.table.evict_if(key, |_| true));
            let results = futures_util::future::join_all(writes).await;
            let evicted = results.iter().filter(|r| r.is_ok()).count();
            Stats::add(&shared.stats.evictions, evicted);
        });
    }
}

fn lock(order: &Mutex<LruCache<Key, ()>>) -> std::sync::MutexGuard<'_, LruCache<Key, ()>> {
    // The list is only an ordering hint: a panicking holder cannot make it unsafe to use.
    order.lock().unwrap_or_else(PoisonError::into_inner)
}
