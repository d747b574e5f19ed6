//! The result cache: recent answers, each with the records and tables it read, dropped the
//! moment a commit changes one of them.
//!
//! The store calls [`Results::invalidate`] for every commit on its writer thread, after the
//! commit is durable and before the write is acknowledged, so no answer older than a change is
//! served once the change's 2xx is out. An answer computed while a commit it could have read
//! was being made is not kept: each table has a generation, bumped by every commit to it, and
//! an answer is stored only if the generations of the tables it read are those it started with
//! (checked under the lock that invalidation takes). The cache is bounded in answers and in
//! bytes.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use lru::LruCache;

use crate::follow::Reads;
use crate::storage::Key;

/// Answers larger than this are not kept.
const MAX_ANSWER_BYTES: usize = 1 << 20;
/// What all kept answers (and their keys) may hold.
const MAX_BYTES: usize = 64 << 20;

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
    /// How many answers are kept (read without the lock, so commits skip it when none are).
    held: AtomicUsize,
    /// `None` for a cache that keeps nothing.
    inner: Option<Mutex<Inner>>,
}

struct Inner {
    capacity: usize,
    bytes: usize,
    next_id: u64,
    /// Answers by their request's key, least recently used first.
    answers: LruCache<String, (u64, Arc<Kept>)>,
    /// The request key of each answer id.
    keys: HashMap<u64, String>,
    by_record: HashMap<(Arc<str>, Key), HashSet<u64>>,
    by_table: HashMap<Arc<str>, HashSet<u64>>,
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
            inner: (capacity > 0).then(|| {
                Mutex::new(Inner {
                    capacity,
                    bytes: 0,
                    next_id: 0,
                    answers: LruCache::unbounded(),
                    keys: HashMap::new(),
                    by_record: HashMap::new(),
                    by_table: HashMap::new(),
                })
            }),
        }
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
        if self.held.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut inner = self.lock()?;
        let (_, kept) = inner.answers.get(key)?.clone();
        if kept.fresh_until.is_some_and(|until| until <= now) {
            inner.remove(key);
            self.held.store(inner.answers.len(), Ordering::Relaxed);
            return None;
        }
        Some(kept)
    }

    /// Keeps `kept` under `key` with what it `read`, unless a table it read changed since
    /// `started`. Returns whether it was kept.
    pub fn keep(&self, key: String, mut kept: Kept, read: &Reads, started: &Generations) -> bool {
        if kept.body.len() > MAX_ANSWER_BYTES || read.unstored {
            return false;
        }
        let Some(mut inner) = self.lock() else {
            return false;
        };
        let tables: HashSet<&Arc<str>> = read
            .records
            .iter()
            .map(|(table, _, _)| table)
            .chain(&read.tables)
            .collect();
        // Under the lock invalidation takes: a commit either bumped its table's generation
        // before this check, or finds this answer to drop.
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
        if self.held.load(Ordering::Relaxed) == 0 {
            return;
        }
        let Some(mut inner) = self.lock() else {
            return;
        };
        let record = (Arc::<str>::from(table), key.clone());
        let mut dropped: Vec<u64> = Vec::new();
        dropped.extend(inner.by_record.get(&record).into_iter().flatten());
        dropped.extend(inner.by_table.get(table).into_iter().flatten());
        for id in dropped {
            if let Some(key) = inner.keys.get(&id).cloned() {
                inner.remove(&key);
            }
        }
        self.held.store(inner.answers.len(), Ordering::Relaxed);
    }

    /// Drops every answer: what they showed may no longer be what anyone may see (the access
    /// rules were reloaded).
    pub fn clear(&self) {
        let Some(mut inner) = self.lock() else {
            return;
        };
        while let Some((key, _)) = inner.answers.peek_lru().map(|(k, v)| (k.clone(), v.0)) {
            inner.remove(&key);
        }
        self.held.store(0, Ordering::Relaxed);
    }

    fn lock(&self) -> Option<std::sync::MutexGuard<'_, Inner>> {
        let inner = self.inner.as_ref()?;
        Some(inner.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Inner {
    fn insert(&mut self, key: String, kept: Arc<Kept>) {
        self.remove(&key);
        let id = self.next_id;
        self.next_id += 1;
        for record in &kept.records {
            self.by_record.entry(record.clone()).or_default().insert(id);
        }
        for table in &kept.tables {
            self.by_table.entry(table.clone()).or_default().insert(id);
        }
        self.bytes += footprint(&key, &kept);
        self.keys.insert(id, key.clone());
        self.answers.push(key, (id, kept));
        while self.answers.len() > self.capacity || self.bytes > MAX_BYTES {
            let Some((oldest, _)) = self.answers.peek_lru().map(|(k, _)| (k.clone(), ())) else {
                break;
            };
            self.remove(&oldest);
        }
    }

    fn remove(&mut self, key: &str) {
        let Some((id, kept)) = self.answers.pop(key) else {
            return;
        };
        self.bytes -= footprint(key, &kept);
        self.keys.remove(&id);
        for record in &kept.records {
            if let Some(ids) = self.by_record.get_mut(record) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.by_record.remove(record);
                }
            }
        }
        for table in &kept.tables {
            if let Some(ids) = self.by_table.get_mut(table) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.by_table.remove(table);
                }
            }
        }
    }
}

/// What an answer holds in memory, roughly: its key, body and dependencies.
fn footprint(key: &str, kept: &Kept) -> usize {
    const PER_DEPENDENCY: usize = 64;
    key.len() + kept.body.len() + PER_DEPENDENCY * (kept.records.len() + kept.tables.len())
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
        let read = read(&[("A", 1), ("B", 2)], &[]);
        assert!(results.keep("q".into(), answer("1"), &read, &started));
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
    fn expired_evicted_and_cleared_answers_go() {
        let results = Results::new(1, ["A".into()]);
        let started = results.generations();
        let fresh = Kept::answer(Bytes::from("1"), "\"e\"".to_owned(), Some(100), None);
        assert!(results.keep("q".into(), fresh, &read(&[("A", 1)], &[]), &started));
        assert!(results.get("q", 99).is_some());
        assert!(results.get("q", 100).is_none());
        assert!(results.keep("q".into(), answer("1"), &read(&[("A", 1)], &[]), &started));
        assert!(results.keep("r".into(), answer("2"), &read(&[("A", 2)], &[]), &started));
        assert!(results.get("q", 0).is_none(), "evicted");
        {
            let inner = results.lock().unwrap();
            assert_eq!(
                inner.by_record.len(),
                1,
                "the evicted answer's records are forgotten"
            );
            assert_eq!(inner.keys.len(), 1);
        }
        results.clear();
        assert!(results.get("r", 0).is_none());
        assert_eq!(results.lock().unwrap().bytes, 0);
    }

    #[test]
    fn answers_are_bounded_in_bytes() {
        let results = Results::new(1000, ["A".into()]);
        let started = results.generations();
        let big = || {
            Kept::answer(
                Bytes::from(vec![b'x'; MAX_ANSWER_BYTES]),
                "\"e\"".into(),
                None,
                None,
            )
        };
        for n in 0..100 {
            assert!(results.keep(format!("q{n}"), big(), &read(&[("A", n)], &[]), &started));
        }
        let inner = results.lock().unwrap();
        assert!(inner.bytes <= MAX_BYTES);
        assert!(inner.answers.len() < 100);
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
