//! Cache tables: a table whose records mirror an HTTP origin, kept fresh by expiry.
//!
//! Read path (`GET /T/id`): the stored envelope's [`Entry`] and the request's directives go
//! through [`freshness()`]. Fresh: served as stored. Usable stale (stale-while-revalidate or
//! `max-stale`): served, and one background refresh starts. Otherwise the origin is asked
//! (conditionally when validators are stored); concurrent askers of one key share one request
//! ([`flight`]). If the origin fails and the entry is within stale-if-error, the stale entry
//! is served. Every fill, refresh, push and eviction is a normal commit, so it is durable and
//! announced like any write; a revalidation that changes nothing only restamps the entry.

mod control;
mod entry;
mod flight;
mod freshness;
mod origin;
mod stats;
mod sweeper;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use lru::LruCache;
use serde_json::{Value, json};
use tokio_util::task::TaskTracker;

pub use control::RequestDirectives;
pub use entry::Entry;
pub use freshness::{Freshness, Policy, freshness};
pub use sweeper::Sweeper;

use crate::clock::Clock;
use crate::error::{Error, Result, Violation};
use crate::schema::CacheSettings;
use crate::storage::{Commit, Envelope, Key};
use crate::table::{Precondition, Table};
use flight::Flights;
use origin::{Origin, OriginError, Reply, Validators};
use stats::Stats;

/// Remembered origin 404s per table, at most; beyond it new ones are not remembered.
const MAX_NOT_FOUND: usize = 100_000;
/// Origin requests a warm-up keeps in flight at once.
const WARM_CONCURRENCY: usize = 16;
/// Writes an invalidation or a sweep queues at once (the group commit takes them together).
const WRITE_CHUNK: usize = 1024;

/// A cache table. Cloning shares it.
#[derive(Clone)]
pub struct CachedTable {
    shared: Arc<Shared>,
}

struct Shared {
    table: Table,
    settings: CacheSettings,
    policy: Policy,
    origin: Origin,
    clock: Clock,
    flights: Arc<Flights<Flown>>,
    /// Origin requests under way, so shutdown can wait for them.
    tasks: TaskTracker,
    stats: Stats,
    /// Origin 404s remembered, by encoded key, until the given time.
    not_found: Mutex<HashMap<Vec<u8>, u64>>,
    /// Stored keys by recency of use, kept only when `maxEntries` bounds the table.
    recency: Option<Mutex<LruCache<Key, ()>>>,
}

/// What one origin request produced, shared by every request that waited on it.
type Flown = std::result::Result<Filled, Failure>;

#[derive(Clone, Debug)]
struct Filled {
    fetched: Fetched,
    origin_status: u16,
    origin_time: Duration,
}

#[derive(Clone, Debug)]
enum Fetched {
    /// Stored (a fill, a refresh or a revalidation).
    Stored(Envelope, Entry),
    /// Served once, not stored (`no-store` from the client or, if honoured, the origin).
    Unstored(Bytes),
    /// The origin has no such record; `until`: remembered until then.
    NotFound { until: Option<u64> },
}

#[derive(Clone, Debug)]
enum Failure {
    Origin(OriginError, Duration),
    NotJson(String),
    Invalid(Vec<Violation>),
    Internal(String),
}

/// The answer to a read, with what the cache did to produce it.
#[derive(Debug)]
pub struct Served {
    /// The record, or why there is none.
    pub outcome: Result<Found>,
    /// What happened, for the `Cache-Status` header.
    pub status: CacheStatus,
    /// The answer's age in ms (since the origin produced it), if it came from the cache.
    pub age: Option<u64>,
    /// How long the origin took, if it was asked.
    pub origin_time: Option<Duration>,
}

/// A record served from a cache table.
#[derive(Debug)]
pub enum Found {
    /// A stored record and its cache entry.
    Stored(Envelope, Entry),
    /// The origin's record, validated but not stored.
    Unstored(Bytes),
}

/// What the cache did for one request, in the terms of RFC 9211 (`Cache-Status`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheStatus {
    /// Served from storage without asking the origin.
    pub hit: bool,
    /// Why the origin was asked: `miss`, `stale` or `request` (the client's `no-cache`).
    pub forward: Option<&'static str>,
    /// The origin's status, when it answered.
    pub origin_status: Option<u16>,
    /// The origin's answer was stored.
    pub stored: bool,
    /// The request waited on an origin request already under way.
    pub collapsed: bool,
    /// Freshness left in ms; negative when stale.
    pub ttl: Option<i64>,
    /// More detail: `stale-while-revalidate`, `stale-if-error`, `only-if-cached`, ...
    pub detail: Option<&'static str>,
}

impl std::fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("tablecast")?;
        if self.hit {
            f.write_str("; hit")?;
        }
        if let Some(forward) = self.forward {
            write!(f, "; fwd={forward}")?;
        }
        if let Some(status) = self.origin_status {
            write!(f, "; fwd-status={status}")?;
        }
        if let Some(ttl) = self.ttl {
            write!(f, "; ttl={}", ttl.div_euclid(1000))?;
        }
        if self.stored {
            f.write_str("; stored")?;
        }
        if self.collapsed {
            f.write_str("; collapsed")?;
        }
        if let Some(detail) = self.detail {
            write!(f, "; detail={detail}")?;
        }
        Ok(())
    }
}

/// What a warm-up did.
#[derive(Debug, Default, serde::Serialize)]
pub struct WarmReport {
    /// Fetched from the origin and stored.
    pub fetched: u64,
    /// Already fresh, so not fetched.
    pub fresh: u64,
    /// Unknown to the origin.
    #[serde(rename = "notFound")]
    pub not_found: u64,
    /// Ids that could not be fetched, with the reason.
    pub failed: Vec<Value>,
}

impl CachedTable {
    /// A cache in front of `table`, whose settings must name an origin. Origin bodies are
    /// limited to `max_body` bytes.
    pub fn open(table: Table, clock: Clock, max_body: usize) -> Result<CachedTable> {
        let settings =
            table.schema().settings.cache.clone().ok_or_else(|| {
                Error::Storage(format!("table `{}` is not a cache", table.name()))
            })?;
        let origin = Origin::new(&settings, max_body)
            .map_err(|e| Error::Storage(format!("table `{}`: {e}", table.name())))?;
        let recency = settings
            .max_entries
            .map(|_| Mutex::new(LruCache::unbounded()));
        let cache = CachedTable {
            shared: Arc::new(Shared {
                policy: Policy::of(&settings),
                table,
                settings,
                origin,
                clock,
                flights: Arc::new(Flights::new()),
                tasks: TaskTracker::new(),
                stats: Stats::default(),
                not_found: Mutex::new(HashMap::new()),
                recency,
            }),
        };
        cache.load_recency()?;
        Ok(cache)
    }

    /// The table the entries are stored in.
    pub fn table(&self) -> &Table {
        &self.shared.table
    }

    /// Reads `key` through the cache, as `request` directs.
    pub async fn get(&self, key: Key, request: &RequestDirectives) -> Served {
        let shared = &self.shared;
        let now = shared.clock.now_ms();
        let stored = match shared.table.get(&key) {
            Ok(stored) => stored,
            Err(error) => return Served::failed(error, CacheStatus::default()),
        };
        // A record without cache metadata (stored before the table became a cache) is
        // treated as long expired.
        let stored = stored.map(|record| {
            let entry = Entry::decode(&record.meta).unwrap_or_default();
            (record, entry)
        });
        if stored.is_none()
            && !request.no_cache
            && let Some(until) = self.remembered_not_found(&key, now)
        {
            Stats::count(&shared.stats.hits);
            let status = CacheStatus {
                hit: true,
                ttl: Some(signed(until) - signed(now)),
                detail: Some("not-found"),
                ..CacheStatus::default()
            };
            return Served::failed(self.not_found(&key), status);
        }
        let state = freshness(stored.as_ref().map(|(_, entry)| entry), request, now);
        match (state, stored) {
            (Freshness::Fresh { ttl }, Some((record, entry))) => {
                Stats::count(&shared.stats.hits);
                self.touch(&key);
                let status = CacheStatus {
                    hit: true,
                    ttl: Some(signed(ttl)),
                    ..CacheStatus::default()
                };
                Served::stored(record, entry, status, now, None)
            }
            (Freshness::Usable { stale_for }, Some((record, entry))) => {
                Stats::count(&shared.stats.stale_served);
                self.touch(&key);
                // A pushed id the origin cannot be asked for stays as it is.
                if shared.origin.url(&key.to_string()).is_ok() {
                    drop(self.board(key, validators(&entry)));
                }
                let status = CacheStatus {
                    hit: true,
                    ttl: Some(-signed(stale_for)),
                    detail: Some("stale-while-revalidate"),
                    ..CacheStatus::default()
                };
                Served::stored(record, entry, status, now, None)
            }
            (state, stored) => self.forward(key, request, state, stored, now).await,
        }
    }

    /// Asks the origin, then serves its answer, or the stale entry if the origin fails within
    /// stale-if-error.
    async fn forward(
        &self,
        key: Key,
        request: &RequestDirectives,
        state: Freshness,
        stored: Option<(Envelope, Entry)>,
        now: u64,
    ) -> Served {
        let shared = &self.shared;
        let forward = match (&stored, request.no_cache) {
            (None, _) => "miss",
            (Some(_), true) => "request",
            (Some(_), false) => "stale",
        };
        if request.only_if_cached {
            let status = CacheStatus {
                detail: Some("only-if-cached"),
                ..CacheStatus::default()
            };
            let error = Error::NotCached {
                table: shared.table.name().to_owned(),
                id: key.to_string(),
            };
            return Served::failed(error, status);
        }
        if let Err(reason) = shared.origin.url(&key.to_string()) {
            let error = Error::InvalidId {
                id: key.to_string(),
                key_type: shared.table.schema().settings.key_type.name(),
                reason,
            };
            return Served::failed(error, CacheStatus::default());
        }
        if stored.is_none() {
            Stats::count(&shared.stats.misses);
        }
        let (flown, collapsed) = if request.no_store {
            (
                self.clone()
                    .fetch(key.clone(), Validators::default(), false)
                    .await,
                false,
            )
        } else {
            let validators = stored
                .as_ref()
                .map(|(_, e)| validators(e))
                .unwrap_or_default();
            let boarding = self.board(key.clone(), validators);
            let collapsed = boarding.collapsed;
            if collapsed {
                Stats::count(&shared.stats.collapsed);
            }
            let flown = boarding.wait().await.unwrap_or_else(|| {
                Err(Failure::Internal(
                    "the origin request ended without a result".into(),
                ))
            });
            (flown, collapsed)
        };
        let mut status = CacheStatus {
            forward: Some(forward),
            collapsed,
            ..CacheStatus::default()
        };
        match flown {
            Ok(Filled {
                fetched,
                origin_status,
                origin_time,
            }) => {
                status.origin_status = Some(origin_status);
                let now = shared.clock.now_ms();
                match fetched {
                    Fetched::Stored(record, entry) => {
                        status.stored = true;
                        status.ttl = Some(signed(entry.fresh_until) - signed(now));
                        Served::stored(record, entry, status, now, Some(origin_time))
                    }
                    Fetched::Unstored(body) => Served {
                        outcome: Ok(Found::Unstored(body)),
                        status,
                        age: None,
                        origin_time: Some(origin_time),
                    },
                    Fetched::NotFound { until } => {
                        status.stored = until.is_some();
                        status.ttl = until.map(|until| signed(until) - signed(now));
                        Served {
                            origin_time: Some(origin_time),
                            ..Served::failed(self.not_found(&key), status)
                        }
                    }
                }
            }
            Err(failure) => {
                status.origin_status = failure.origin_status();
                let origin_time = failure.origin_time();
                let fallback = matches!(state, Freshness::Revalidate { fallback: true });
                match stored {
                    Some((record, entry)) if fallback => {
                        Stats::count(&shared.stats.stale_served);
                        status.forward = Some("stale");
                        status.ttl = Some(signed(entry.fresh_until) - signed(now));
                        status.detail = Some("stale-if-error");
                        Served::stored(record, entry, status, now, origin_time)
                    }
                    _ => Served {
                        origin_time,
                        ..Served::failed(self.failure(&key, failure), status)
                    },
                }
            }
        }
    }

    /// Joins or starts the origin request for `key`.
    fn board(&self, key: Key, validators: Validators) -> flight::Boarding<Flown> {
        let this = self.clone();
        let encoded = key.encode();
        self.shared
            .flights
            .board(encoded, &self.shared.tasks, move || {
                this.fetch(key, validators, true)
            })
    }

    /// One origin request for `key` and what becomes of its answer: stored (if `store`),
    /// restamped on a 304, or the stored entry evicted on a 404.
    async fn fetch(self, key: Key, validators: Validators, store: bool) -> Flown {
        let shared = &self.shared;
        let url = shared
            .origin
            .url(&key.to_string())
            .map_err(Failure::Internal)?;
        Stats::count(&shared.stats.origin_requests);
        let (answer, took) = shared.origin.fetch(url, &validators).await;
        shared.stats.origin_took(took);
        let answer = answer.map_err(|error| {
            Stats::count(&shared.stats.origin_errors);
            tracing::warn!(table = shared.table.name(), id = %key, %error, "origin request failed");
            Failure::Origin(error, took)
        })?;
        let now = shared.clock.now_ms();
        let filled = |fetched, origin_status| Filled {
            fetched,
            origin_status,
            origin_time: took,
        };
        match answer {
            Reply::Record {
                body,
                validators: received,
                directives,
                age,
            } => {
                let stored = self
                    .store(&key, &body, received, &directives, age, now, store)
                    .await;
                if stored.is_err() {
                    Stats::count(&shared.stats.origin_errors);
                }
                Ok(filled(stored?, 200))
            }
            Reply::NotModified {
                validators: received,
                directives,
                age,
            } => {
                if validators == Validators::default() {
                    Stats::count(&shared.stats.origin_errors);
                    return Err(Failure::Origin(OriginError::Status(304), took));
                }
                let mut entry = shared.policy.entry(&directives, now, age).unwrap_or(Entry {
                    fetched_at: now,
                    fresh_until: now,
                    ..Entry::default()
                });
                entry.etag = received.etag.or(validators.etag);
                entry.last_modified = received.last_modified.or(validators.last_modified);
                let stamp = entry.stamp();
                match shared.table.restamp(key.clone(), move |_| stamp).await {
                    Ok(commit) => Ok(filled(Fetched::Stored(stored_record(commit)?, entry), 304)),
                    // Evicted while the origin was asked: ask again, unconditionally.
                    Err(Error::RecordNotFound { .. }) => {
                        Box::pin(self.clone().fetch(key, Validators::default(), store)).await
                    }
                    Err(error) => Err(Failure::Internal(error.to_string())),
                }
            }
            Reply::NotFound { directives } => {
                // The origin no longer has the record: evict it, so subscribers see it go.
                match shared
                    .table
                    .delete(key.clone(), Precondition::default())
                    .await
                {
                    Ok(_) | Err(Error::RecordNotFound { .. }) => self.forget(&key),
                    Err(error) => return Err(Failure::Internal(error.to_string())),
                }
                let until = store
                    .then(|| shared.policy.not_found_until(&directives, now))
                    .flatten()
                    .filter(|&until| self.remember_not_found(&key, until));
                Ok(filled(Fetched::NotFound { until }, 404))
            }
        }
    }

    /// Validates an origin record and stores it, unless it must not be stored.
    #[allow(clippy::too_many_arguments)]
    async fn store(
        &self,
        key: &Key,
        body: &[u8],
        received: Validators,
        directives: &control::OriginDirectives,
        age: u64,
        now: u64,
        store: bool,
    ) -> std::result::Result<Fetched, Failure> {
        let shared = &self.shared;
        let value: Value =
            serde_json::from_slice(body).map_err(|e| Failure::NotJson(e.to_string()))?;
        self.forget_not_found(key);
        let Some(mut entry) = shared.policy.entry(directives, now, age).filter(|_| store) else {
            let record = shared.table.check(key, value, now).map_err(invalid)?;
            let bytes =
                serde_json::to_vec(&record).map_err(|e| Failure::Internal(e.to_string()))?;
            return Ok(Fetched::Unstored(bytes.into()));
        };
        entry.etag = received.etag;
        entry.last_modified = received.last_modified;
        let commit = shared
            .table
            .refresh(key.clone(), value, entry.stamp())
            .await
            .map_err(invalid)?;
        self.touch(key);
        self.enforce_bound();
        Ok(Fetched::Stored(stored_record(commit)?, entry))
    }

    /// Stores a value pushed by a client (`PUT`), fresh for `max_age` seconds if given, else
    /// for the table's expiration.
    pub async fn push(
        &self,
        key: Key,
        record: Value,
        precondition: Precondition,
        max_age: Option<u64>,
    ) -> Result<Commit> {
        let entry = self
            .shared
            .policy
            .pushed(max_age, self.shared.clock.now_ms());
        let commit = self
            .shared
            .table
            .put_stamped(key.clone(), record, precondition, entry.stamp())
            .await?;
        self.forget_not_found(&key);
        self.touch(&key);
        self.enforce_bound();
        Ok(commit)
    }

    /// Evicts `key` (`DELETE`): the stored entry and any remembered 404.
    pub async fn evict(&self, key: Key, precondition: Precondition) -> Result<()> {
        let forgotten = self.forget_not_found(&key);
        match self.shared.table.delete(key.clone(), precondition).await {
            Ok(_) => {
                self.forget(&key);
                Ok(())
            }
            Err(Error::RecordNotFound { .. }) if forgotten => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Marks entries stale now (a soft purge: stale-while-revalidate and stale-if-error still
    /// apply): those of `keys`, or every entry if `keys` is `None`. Returns how many were marked.
    pub async fn invalidate(&self, keys: Option<Vec<Key>>) -> Result<u64> {
        let shared = &self.shared;
        let now = shared.clock.now_ms();
        let keys = match keys {
            Some(keys) => {
                for key in &keys {
                    self.forget_not_found(key);
                }
                keys
            }
            None => {
                shared
                    .not_found
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clear();
                let mut keys = Vec::new();
                for record in shared.table.scan(false, None) {
                    keys.push(record?.0);
                }
                keys
            }
        };
        let mut marked = 0;
        for chunk in keys.chunks(WRITE_CHUNK) {
            let writes = chunk.iter().map(|key| {
                shared.table.restamp(key.clone(), move |record| {
                    let mut entry = Entry::decode(&record.meta).unwrap_or_default();
                    entry.fresh_until = entry.fresh_until.min(now);
                    entry.stamp()
                })
            });
            for result in futures_util::future::join_all(writes).await {
                match result {
                    Ok(_) => marked += 1,
                    Err(Error::RecordNotFound { .. }) => {}
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(marked)
    }

    /// Fetches every key of `keys` that is not fresh, a few at a time.
    pub async fn warm(&self, keys: Vec<Key>) -> WarmReport {
        let report = Mutex::new(WarmReport::default());
        let directives = RequestDirectives::default();
        futures_util::stream::iter(keys)
            .for_each_concurrent(WARM_CONCURRENCY, |key| {
                let report = &report;
                let directives = &directives;
                async move {
                    let served = self.get(key.clone(), directives).await;
                    let mut report = report.lock().unwrap_or_else(PoisonError::into_inner);
                    match served.outcome {
                        Ok(_) if served.status.hit => report.fresh += 1,
                        Ok(_) => report.fetched += 1,
                        Err(Error::RecordNotFound { .. }) => report.not_found += 1,
                        Err(error) => report
                            .failed
                            .push(json!({ "id": key.to_json(), "detail": error.to_string() })),
                    }
                }
            })
            .await;
        report.into_inner().unwrap_or_else(PoisonError::into_inner)
    }

    /// Removes the entries past their last usable moment and forgets expired 404s; returns how
    /// many entries were removed.
    pub async fn sweep(&self) -> Result<usize> {
        let shared = &self.shared;
        let now = shared.clock.now_ms();
        shared
            .not_found
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, until| *until > now);
        let mut removed = 0;
        loop {
            let due = shared.table.expired(now, WRITE_CHUNK)?;
            let writes = due.iter().map(|key| {
                shared.table.remove_if(key.clone(), move |record| {
                    record.expires_at.is_some_and(|at| at <= now)
                })
            });
            let results = futures_util::future::join_all(writes).await;
            let mut round = 0;
            // An entry refreshed since it fell due was kept, and stays in the recency list.
            for (key, _) in due
                .iter()
                .zip(&results)
                .filter(|(_, result)| result.is_ok())
            {
                self.forget(key);
                round += 1;
            }
            removed += round;
            if due.len() < WRITE_CHUNK || round == 0 {
                break;
            }
        }
        Stats::add(&shared.stats.evictions, removed);
        Ok(removed)
    }

    /// Stops taking origin work and waits up to `within` for what is under way.
    pub async fn close(&self, within: Duration) {
        self.shared.tasks.close();
        if tokio::time::timeout(within, self.shared.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                table = self.shared.table.name(),
                "origin requests still running at shutdown"
            );
        }
    }

    /// The cache settings (secrets left out) and statistics, for `GET /T`.
    pub fn describe(&self) -> Value {
        let settings = &self.shared.settings;
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let header_names: Vec<&str> = settings.headers.iter().map(|(n, _)| n.as_str()).collect();
        json!({
            "origin": settings.origin,
            "headers": header_names,
            "expirationMs": ms(settings.expiration),
            "staleWhileRevalidateMs": ms(settings.stale_while_revalidate),
            "staleIfErrorMs": ms(settings.stale_if_error),
            "notFoundMs": ms(settings.not_found),
            "timeoutMs": ms(settings.timeout),
            "maxEntries": settings.max_entries,
            "honorOriginCacheControl": settings.honor_origin_cache_control,
            "originRequestsInFlight": self.shared.flights.len(),
            "stats": self.shared.stats.to_json(),
        })
    }

    fn not_found(&self, key: &Key) -> Error {
        Error::RecordNotFound {
            table: self.shared.table.name().to_owned(),
            id: key.to_string(),
        }
    }

    fn failure(&self, key: &Key, failure: Failure) -> Error {
        let table = self.shared.table.name().to_owned();
        let id = key.to_string();
        match failure {
            Failure::Origin(OriginError::Timeout(after), _) => Error::OriginTimeout {
                table,
                id,
                after_ms: after.as_millis(),
            },
            Failure::Origin(error, _) => Error::OriginFailed {
                table,
                id,
                reason: error.to_string(),
            },
            Failure::NotJson(reason) => Error::OriginInvalid {
                table,
                id,
                reason: format!("is not JSON ({reason})"),
                violations: Vec::new(),
            },
            Failure::Invalid(violations) => Error::OriginInvalid {
                table,
                id,
                reason: "does not match the table's schema".to_owned(),
                violations,
            },
            Failure::Internal(cause) => Error::Storage(cause),
        }
    }

    fn remembered_not_found(&self, key: &Key, now: u64) -> Option<u64> {
        let remembered = self
            .shared
            .not_found
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        remembered
            .get(&key.encode())
            .copied()
            .filter(|&until| until > now)
    }

    /// Remembers an origin 404 until `until`; false if too many are remembered already.
    fn remember_not_found(&self, key: &Key, until: u64) -> bool {
        let now = self.shared.clock.now_ms();
        let mut remembered = self
            .shared
            .not_found
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
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
    fn forget_not_found(&self, key: &Key) -> bool {
        let mut remembered = self
            .shared
            .not_found
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        remembered.remove(&key.encode()).is_some()
    }

    /// Marks `key` as just used.
    fn touch(&self, key: &Key) {
        if let Some(recency) = &self.shared.recency {
            let mut recency = recency.lock().unwrap_or_else(PoisonError::into_inner);
            // `get` promotes in place: a hit costs one lookup, and no clone of the key.
            if recency.get(key).is_none() {
                recency.put(key.clone(), ());
            }
        }
    }

    /// Drops `key` from the recency list (it is no longer stored).
    fn forget(&self, key: &Key) {
        if let Some(recency) = &self.shared.recency {
            recency
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop(key);
        }
    }

    /// Evicts the least recently used entries beyond `maxEntries`, in the background.
    fn enforce_bound(&self) {
        let (Some(recency), Some(max)) = (&self.shared.recency, self.shared.settings.max_entries)
        else {
            return;
        };
        let mut victims = Vec::new();
        {
            let mut recency = recency.lock().unwrap_or_else(PoisonError::into_inner);
            while u64::try_from(recency.len()).unwrap_or(u64::MAX) > max {
                match recency.pop_lru() {
                    Some((key, ())) => victims.push(key),
                    None => break,
                }
            }
        }
        if victims.is_empty() {
            return;
        }
        let shared = self.shared.clone();
        self.shared.tasks.spawn(async move {
            let writes = victims
                .into_iter()
                .map(|key| shared.table.remove_if(key, |_| true));
            let results = futures_util::future::join_all(writes).await;
            let evicted = results.iter().filter(|r| r.is_ok()).count();
            Stats::add(&shared.stats.evictions, evicted);
        });
    }

    /// Fills the recency list from storage, oldest fill first, so a restart keeps the order
    /// approximately; then applies the bound.
    fn load_recency(&self) -> Result<()> {
        let Some(recency) = &self.shared.recency else {
            return Ok(());
        };
        let mut stored = Vec::new();
        for record in self.shared.table.scan(false, None) {
            let (key, record) = record?;
            let fetched_at = Entry::decode(&record.meta).map_or(0, |e| e.fetched_at);
            stored.push((fetched_at, key));
        }
        stored.sort_unstable();
        {
            let mut recency = recency.lock().unwrap_or_else(PoisonError::into_inner);
            for (_, key) in stored {
                recency.put(key, ());
            }
        }
        Ok(())
    }
}

impl Served {
    fn failed(error: Error, status: CacheStatus) -> Served {
        Served {
            outcome: Err(error),
            status,
            age: None,
            origin_time: None,
        }
    }

    fn stored(
        record: Envelope,
        entry: Entry,
        status: CacheStatus,
        now: u64,
        origin_time: Option<Duration>,
    ) -> Served {
        Served {
            age: Some(now.saturating_sub(entry.fetched_at)),
            outcome: Ok(Found::Stored(record, entry)),
            status,
            origin_time,
        }
    }
}

impl Failure {
    fn origin_status(&self) -> Option<u16> {
        match self {
            Failure::Origin(OriginError::Status(status), _) => Some(*status),
            Failure::NotJson(_) | Failure::Invalid(_) => Some(200),
            Failure::Origin(..) | Failure::Internal(_) => None,
        }
    }

    fn origin_time(&self) -> Option<Duration> {
        match self {
            Failure::Origin(_, took) => Some(*took),
            _ => None,
        }
    }
}

fn validators(entry: &Entry) -> Validators {
    Validators {
        etag: entry.etag.clone(),
        last_modified: entry.last_modified.clone(),
    }
}

fn invalid(error: Error) -> Failure {
    match error {
        Error::SchemaViolation { violations, .. } => Failure::Invalid(violations),
        Error::KeyMismatch { .. } => Failure::Invalid(vec![Violation {
            pointer: String::new(),
            message: error.to_string(),
        }]),
        other => Failure::Internal(other.to_string()),
    }
}

fn stored_record(commit: Commit) -> std::result::Result<Envelope, Failure> {
    commit
        .record
        .ok_or_else(|| Failure::Internal("a fill stored no record".to_owned()))
}

fn signed(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}
