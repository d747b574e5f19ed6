//! The memory of origin 404s: ids the origin said it does not have, each until a moment.
//!
//! A remembered 404 is answered without asking the origin (`notFound` in the cache settings);
//! it is in memory only, as it is cheap to learn again after a restart.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::storage::Key;

/// Remembered origin 404s per table, at most; beyond it new ones are not remembered.
const MAX_NOT_FOUND: usize = 100_000;

/// Origin 404s remembered, by encoded key, until the given time (ms since the Unix epoch).
#[derive(Default)]
pub(super) struct NotFoundMemory {
    until: Mutex<HashMap<Vec<u8>, u64>>,
}

impl NotFoundMemory {
    /// Until when `key` is remembered as not found, if it still is at `now`.
    pub fn until(&self, key: &Key, now: u64) -> Option<u64> {
        self.lock()
            .get(&key.encode())
            .copied()
            .filter(|&until| until > now)
    }

    /// Remembers an origin 404 for `key` until `until`; false if too many are remembered.
    pub fn remember(&self, key: &Key, until: u64, now: u64) -> bool {
        let mut remembered = self.lock();
        if remembered.len() >= MAX_NOT_FOUND {
            remembered.retain(|_, until| *until > now);
            if remembered.len() >= MAX_NOT_FOUND {
                return false;
            }
        }
        remembered.insert(key.encode(), until);
        true
    }

    /// Forgets a remembered 404; true if there was one.
    pub fn forget(&self, key: &Key) -> bool {
        self.lock().remove(&key.encode()).is_some()
    }

    /// Forgets every remembered 404.
    pub fn forget_all(&self) {
        self.lock().clear();
    }

    /// Forgets the 404s remembered no later than `now`.
    pub fn forget_expired(&self, now: u64) {
        self.lock().retain(|_, until| *until > now);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, u64>> {
        // The map holds no invariant a panicking holder could break.
        self.until.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_until_the_moment_given() {
        let memory = NotFoundMemory::default();
        let key = Key::Str("A".into());
        assert!(memory.remember(&key, 1_000, 0));
        assert_eq!(memory.until(&key, 999), Some(1_000));
        assert_eq!(memory.until(&key, 1_000), None);
        memory.forget_expired(1_000);
        assert!(!memory.forget(&key), "expired entries are dropped");
        assert!(memory.remember(&key, 2_000, 0));
        assert!(memory.forget(&key));
    }
}
