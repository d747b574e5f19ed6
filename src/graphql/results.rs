//! The result cache: recent answers, each with the records and tables it read, dropped the
//! moment a commit changes one of them.
//!
//! The store calls [`Results::invalidate`] for every commit on its writer thread, after the
//! commit is durable and before the write is acknowledged, so no answer older than a change is
//! served once the change's 2xx is out. An answer computed while a commit it could have read
//! was being made is not kept: each table has a generation, bumped by every commit to it, and
//! an answer is stored only if the generations of the tables it read are those it started with.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use lru::LruCache;

use crate::follow::Reads;
use crate::storage::Key;

/// Answers larger than this are not kept.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// A kept answer.
#[derive(Debug)]
pub struct Kept {
    /// The answer's JSON.
    pub body: Bytes,
    /// Its `ETag` value, quoted.
    pub etag: String,
    /// When it stops being fresh (ms since the epoch), if a cache-table entry it read expires.
    pub fresh_until: Option<u64>,
    /// How long downstream caches may keep it, by the `maxAge` of the tables of our own it
    /// read (ms; 0 if one has none); `None` if it read none.
    pub max_age: Option<u64>,
    records: Vec<(Arc<str>, Key)>,
    tables: Vec<Arc<str>>,
}

impl Kept {
    /// An answer to keep; what it read is added by [`Results::keep`].
    pub fn answer(
        body: Bytes,
        etag: String,
        fresh_until: Option<u64>,
        max_age: Option<u64>,
    ) -> Kept {
        Kept {
            body,
            etag,
            fresh_until,
            max_age,
            records: Vec::new(),
            tables: Vec::new(),
        }
    }
}

/// The generations of every table when an answer's computation started.
pub struct Generations(Vec<u64>);

/// Recent answers; see the module documentation.
pub struct Results {
    tables: Vec<(Arc<str>, AtomicU64)>,
    held: AtomicUsize,
    inner: Mutex<Inner>,
}

struct Inner {
    answers: LruCache<String, Arc<Kept>>,
    by_record: HashMap<(Arc<str>, Key), HashSet<String>>,
    by_table: HashMap<Arc<str>, HashSet<String>>,
}

impl Results {
    /// A cache of at most `capacity` answers (0 keeps none) over the tables `names`.
    pub fn new(capacity: usize, names: impl IntoIterator<Item = Arc<str>>) -> Results {
        Results {
            tables: names
                .into_iter()
                .map(|name| (name, AtomicU64::new(0)))
                .collect(),
            held: AtomicUsize::new(0),
            inner: Mutex::new(Inner {
                answers: LruCache::new(NonZeroUsize::new(capacity.max(1)).expect("at least 1")),
                by_record: HashMap::new(),
                by_table: HashMap::new(),
            }),
        }
        .capped(capacity)
    }

    fn capped(self, capacity: usize) -> Results {
        if capacity == 0 {
            // A cache of none: every answer is computed, none kept.
            self.held.store(usize::MAX, Ordering::Relaxed);
        }
        self
    }

    fn keeps(&self) -> bool {
        self.held.load(Ordering::Relaxed) != usize::MAX
    }

    /// The generations now, to hand to [`Results::keep`] with the answer computed from here.
    pub fn generations(&self) -> Generations {
        Generations(
            self.tables
                .iter()
                .map(|(_, g)| g.load(Ordering::Acquire))
                .collect(),
        )
    }

    /// The answer kept under `key`, if it is still fresh at `now`.
    pub fn get(&self, key: &str, now: u64) -> Option<Arc<Kept>> {
        if !self.keeps() || self.held.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut inner = self.lock();
        let kept = inner.answers.get(key)?.clone();
        if kept.fresh_until.is_some_and(|until| until <= now) {
            inner.remove(key);
            self.held.store(inner.answers.len(), Ordering::Relaxed);
            return None;
        }
        Some(kept)
    }

    /// Keeps `body` under `key` with what it `read`, unless a table it read changed since
    /// `started`. Returns whether it was kept.
    pub fn keep(&self, key: String, mut kept: Kept, read: &Reads, started: &Generations) -> bool {
        if !self.keeps() || kept.body.len() > MAX_ANSWER_BYTES || read.unstored {
            return false;
        }
        let tables: HashSet<&Arc<str>> = read
            .records
            .iter()
            .map(|(table, _, _)| table)
            .chain(&read.tables)
            .collect();
        let changed = self
            .tables
            .iter()
            .zip(&started.0)
            .any(|((name, now), then)| {
                tables.contains(name) && now.load(Ordering::Acquire) != *then
            });
        if changed {
            return false;
        }
        kept.records = read
            .records
            .iter()
            .map(|(table, key, _)| (table.clone(), key.clone()))
            .collect();
        kept.tables = read.tables.iter().cloned().collect();
        let mut inner = self.lock();
        // Checked again under the lock that invalidation takes: a commit after the check
        // above has bumped a generation before it looks for answers to drop.
        let changed = self
            .tables
            .iter()
            .zip(&started.0)
            .any(|((name, now), then)| {
                tables.contains(name) && now.load(Ordering::Acquire) != *then
            });
        if changed {
            return false;
        }
        inner.insert(key, Arc::new(kept));
        self.held.store(inner.answers.len(), Ordering::Relaxed);
        true
    }

    /// Drops every answer that read record `key` of `table`, or depends on the table's
    /// membership. Called for each commit, before it is acknowledged.
    pub fn invalidate(&self, table: &str, key: &Key) {
        if let Some((_, generation)) = self.tables.iter().find(|(name, _)| &**name == table) {
            generation.fetch_add(1, Ordering::AcqRel);
        }
        let held = self.held.load(Ordering::Relaxed);
        if held == 0 || held == usize::MAX {
            return;
        }
        let mut inner = self.lock();
        let mut dropped: Vec<String> = Vec::new();
        let record = (Arc::<str>::from(table), key.clone());
        if let Some(keys) = inner.by_record.get(&record) {
            dropped.extend(keys.iter().cloned());
        }
        if let Some(keys) = inner.by_table.get(table) {
            dropped.extend(keys.iter().cloned());
        }
        for key in dropped {
            inner.remove(&key);
        }
        self.held.store(inner.answers.len(), Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    fn insert(&mut self, key: String, kept: Arc<Kept>) {
        self.remove(&key);
        for record in &kept.records {
            self.by_record
                .entry(record.clone())
                .or_default()
                .insert(key.clone());
        }
        for table in &kept.tables {
            self.by_table
                .entry(table.clone())
                .or_default()
                .insert(key.clone());
        }
        if let Some((evicted, old)) = self.answers.push(key, kept) {
            self.unindex(&evicted, &old);
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.answers.pop(key) {
            self.unindex(key, &old);
        }
    }

    fn unindex(&mut self, key: &str, kept: &Kept) {
        for record in &kept.records {
            if let Some(keys) = self.by_record.get_mut(record) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_record.remove(record);
                }
            }
        }
        for table in &kept.tables {
            if let Some(keys) = self.by_table.get_mut(table) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_table.remove(table);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(records: &[(&str, i64)], tables: &[&str]) -> Reads {
        let mut reads = Reads::default();
        for (table, key) in records {
            reads.records.insert((Arc::from(*table), Key::Int(*key), 1));
        }
        for table in tables {
            reads.tables.insert(Arc::from(*table));
        }
        reads
    }

    fn answer(text: &str) -> Kept {
        Kept::answer(Bytes::from(text.to_owned()), "\"e\"".to_owned(), None, None)
    }

    fn results() -> Results {
        Results::new(10, ["A".into(), "B".into()])
    }

    #[test]
    fn an_answer_is_dropped_when_a_record_it_read_changes() {
        let results = results();
        let started = results.generations();
        assert!(results.keep(
            "q".into(),
            answer("1"),
            &read(&[("A", 1), ("B", 2)], &[]),
            &started
        ));
        assert!(results.get("q", 0).is_some());
        results.invalidate("A", &Key::Int(9));
        assert!(results.get("q", 0).is_some(), "another record of A changed");
        results.invalidate("A", &Key::Int(1));
        assert!(results.get("q", 0).is_none());
    }

    #[test]
    fn a_listing_is_dropped_by_any_change_to_its_table() {
        let results = results();
        let started = results.generations();
        assert!(results.keep("q".into(), answer("1"), &read(&[], &["B"]), &started));
        results.invalidate("A", &Key::Int(1));
        assert!(results.get("q", 0).is_some());
        results.invalidate("B", &Key::Int(7));
        assert!(results.get("q", 0).is_none());
    }

    #[test]
    fn an_answer_computed_across_a_commit_is_not_kept() {
        let results = results();
        let started = results.generations();
        results.invalidate("A", &Key::Int(5));
        assert!(!results.keep("q".into(), answer("1"), &read(&[("A", 1)], &[]), &started));
        assert!(results.keep("r".into(), answer("1"), &read(&[("B", 1)], &[]), &started));
    }

    #[test]
    fn expired_and_evicted_answers_go() {
        let results = Results::new(1, ["A".into()]);
        let started = results.generations();
        let fresh = Kept::answer(Bytes::from("1"), "\"e\"".to_owned(), Some(100), None);
        assert!(results.keep("q".into(), fresh, &read(&[("A", 1)], &[]), &started));
        assert!(results.get("q", 99).is_some());
        assert!(results.get("q", 100).is_none());
        assert!(results.keep("q".into(), answer("1"), &read(&[("A", 1)], &[]), &started));
        assert!(results.keep("r".into(), answer("2"), &read(&[("A", 2)], &[]), &started));
        assert!(results.get("q", 0).is_none(), "evicted");
        let inner = results.lock();
        assert_eq!(
            inner.by_record.len(),
            1,
            "the evicted answer's records are forgotten"
        );
    }

    #[test]
    fn a_cache_of_none_keeps_nothing() {
        let results = Results::new(0, ["A".into()]);
        let started = results.generations();
        assert!(!results.keep("q".into(), answer("1"), &read(&[], &[]), &started));
        results.invalidate("A", &Key::Int(1));
        assert!(results.get("q", 0).is_none());
    }
}
