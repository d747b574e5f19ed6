//! Hot records: the decoded envelopes of recently read records, kept in memory in front of sled.
//!
//! A point read that finds its record here skips sled's tree walk, which costs about a fifth of
//! a GET by id (docs/PERFORMANCE.md). Only point reads fill it, so scans and bulk writes do not
//! push hot records out. It holds at most its budget of bytes, evicting the least recently read.
//!
//! The writer thread invalidates every key it writes as soon as the transaction has applied,
//! before the fsync, so once a write is acknowledged no read can find an older copy here. A read
//! that raced a write must not put back what it read from sled before the write: each shard counts
//! its invalidations, and a fill is dropped if the count moved while the read was in progress.

use std::hash::BuildHasher;
use std::sync::Mutex;

use lru::LruCache;

use super::Envelope;
use crate::error::Result;

const SHARDS: usize = 16;
/// Bytes an entry costs beyond its key and record (map slot, list links, envelope fields).
const ENTRY_OVERHEAD: usize = 128;

/// The store's hot records, shared by all its tables.
pub(crate) struct HotRecords {
    shards: Box<[Mutex<Shard>]>,
    shard_budget: usize,
    hasher: std::hash::RandomState,
}

struct Shard {
    entries: LruCache<Vec<u8>, Envelope>,
    bytes: usize,
    invalidations: u64,
}

impl HotRecords {
    /// Hot records taking at most about `budget` bytes (0 turns them off).
    pub(crate) fn new(budget: usize) -> HotRecords {
        HotRecords {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        entries: LruCache::unbounded(),
                        bytes: 0,
                        invalidations: 0,
                    })
                })
                .collect(),
            shard_budget: budget / SHARDS,
            hasher: std::hash::RandomState::new(),
        }
    }

    /// The record stored under `key` in table `table`: from memory if it is here, otherwise from
    /// `load` (which reads sled), kept for next time unless a write to the shard intervened.
    pub(crate) fn read(
        &self,
        table: u32,
        key: &[u8],
        load: impl FnOnce() -> Result<Option<Envelope>>,
    ) -> Result<Option<Envelope>> {
        if self.shard_budget == 0 {
            return load();
        }
        let key = hot_key(table, key);
        let shard = self.shard(&key);
        let before = {
            let mut shard = lock(shard);
            if let Some(hit) = shard.entries.get(&key) {
                return Ok(Some(hit.clone()));
            }
            shard.invalidations
        };
        let loaded = load()?;
        if let Some(record) = &loaded {
            let key_len = key.len();
            let cost = entry_cost(key_len, record);
            let mut shard = lock(shard);
            if shard.invalidations == before && cost <= self.shard_budget {
                // Another read may have filled it meanwhile: replace, and count it once.
                if let Some(old) = shard.entries.put(key, record.clone()) {
                    shard.bytes -= entry_cost(key_len, &old);
                }
                shard.bytes += cost;
                while shard.bytes > self.shard_budget {
                    let Some((key, old)) = shard.entries.pop_lru() else {
                        break;
                    };
                    shard.bytes -= entry_cost(key.len(), &old);
                }
            }
        }
        Ok(loaded)
    }

    /// The record under `key` in table `table` if it is here; unlike [`read`](Self::read), a
    /// miss does not fill it (for a record about to be written).
    pub(crate) fn peek(&self, table: u32, key: &[u8]) -> Option<Envelope> {
        if self.shard_budget == 0 {
            return None;
        }
        let key = hot_key(table, key);
        lock(self.shard(&key)).entries.peek(&key).cloned()
    }

    /// Forgets the record under `key` in table `table`: it has just been written.
    pub(crate) fn invalidate(&self, table: u32, key: &[u8]) {
        if self.shard_budget == 0 {
            return;
        }
        let key = hot_key(table, key);
        let mut shard = lock(self.shard(&key));
        shard.invalidations += 1;
        if let Some(old) = shard.entries.pop(&key) {
            shard.bytes -= entry_cost(key.len(), &old);
        }
    }

    fn shard(&self, key: &[u8]) -> &Mutex<Shard> {
        let hash = self.hasher.hash_one(key);
        &self.shards[usize::try_from(hash % SHARDS as u64).expect("a shard index fits")]
    }
}

fn hot_key(table: u32, key: &[u8]) -> Vec<u8> {
    let mut hot = Vec::with_capacity(4 + key.len());
    hot.extend_from_slice(&table.to_be_bytes());
    hot.extend_from_slice(key);
    hot
}

fn entry_cost(key_len: usize, record: &Envelope) -> usize {
    key_len + record.meta.len() + record.value.len() + ENTRY_OVERHEAD
}

fn lock(shard: &Mutex<Shard>) -> std::sync::MutexGuard<'_, Shard> {
    // A shard holds no invariant a panicking holder could break beyond its byte count.
    shard
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use bytes::Bytes;

    use super::*;

    fn record(version: u64, value: &'static str) -> Envelope {
        Envelope {
            version,
            created: 0,
            updated: 0,
            expires_at: None,
            meta: Bytes::new(),
            value: Bytes::from_static(value.as_bytes()),
        }
    }

    /// Reads `key` of table 0, counting the loads from "sled".
    fn read(hot: &HotRecords, key: &[u8], stored: &Envelope, loads: &Cell<u32>) -> u64 {
        hot.read(0, key, || {
            loads.set(loads.get() + 1);
            Ok(Some(stored.clone()))
        })
        .unwrap()
        .unwrap()
        .version
    }

    #[test]
    fn a_second_read_is_served_from_memory_until_the_record_is_written() {
        let hot = HotRecords::new(1 << 20);
        let loads = Cell::new(0);
        assert_eq!(read(&hot, b"k", &record(1, "{}"), &loads), 1);
        assert_eq!(read(&hot, b"k", &record(1, "{}"), &loads), 1);
        assert_eq!(loads.get(), 1);
        hot.invalidate(0, b"k");
        assert_eq!(read(&hot, b"k", &record(2, "{}"), &loads), 2);
        assert_eq!(loads.get(), 2);
        // Tables do not share entries.
        assert_eq!(hot.read(1, b"k", || Ok(None)).unwrap(), None);
    }

    #[test]
    fn a_read_that_raced_a_write_does_not_keep_what_it_read() {
        let hot = HotRecords::new(1 << 20);
        // The write lands (and invalidates) while the read is loading the old record.
        let raced = hot
            .read(0, b"k", || {
                hot.invalidate(0, b"k");
                Ok(Some(record(1, "{}")))
            })
            .unwrap();
        assert_eq!(raced.map(|r| r.version), Some(1));
        let loads = Cell::new(0);
        assert_eq!(read(&hot, b"k", &record(2, "{}"), &loads), 2);
        assert_eq!(loads.get(), 1, "the raced read must not have filled");
    }

    #[test]
    fn the_budget_evicts_the_least_recently_read() {
        let value = "x".repeat(1000).leak();
        // Room for about two entries per shard; every key goes to some shard, so fill one shard.
        let hot = HotRecords::new(SHARDS * (2 * (1000 + ENTRY_OVERHEAD + 8) + 10));
        let loads = Cell::new(0);
        let shard_of = |key: &[u8]| std::ptr::from_ref(hot.shard(&hot_key(0, key)));
        let first = 0u32.to_be_bytes();
        let same_shard: Vec<[u8; 4]> = (0u32..10_000)
            .map(u32::to_be_bytes)
            .filter(|key| shard_of(key) == shard_of(&first))
            .take(3)
            .collect();
        let stored = record(1, value);
        for key in &same_shard[..2] {
            read(&hot, key, &stored, &loads);
        }
        read(&hot, &same_shard[0], &stored, &loads); // now the second is least recent
        read(&hot, &same_shard[2], &stored, &loads); // evicts the second
        assert_eq!(loads.get(), 3);
        read(&hot, &same_shard[0], &stored, &loads);
        assert_eq!(loads.get(), 3, "the recently read one stayed");
        read(&hot, &same_shard[1], &stored, &loads);
        assert_eq!(loads.get(), 4, "the least recently read one went");
    }

    #[test]
    fn a_zero_budget_always_loads() {
        let hot = HotRecords::new(0);
        let loads = Cell::new(0);
        read(&hot, b"k", &record(1, "{}"), &loads);
        read(&hot, b"k", &record(1, "{}"), &loads);
        assert_eq!(loads.get(), 2);
    }
}
