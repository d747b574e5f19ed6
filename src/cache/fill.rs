//! The fill path: one origin request per key however many requests wait on it (single-flight),
//! and what becomes of its answer: a fill or refresh stored as a normal commit, a revalidation
//! that only restamps the entry, an eviction on a 404, or a failure.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

use super::control::OriginDirectives;
use super::flight::Boarding;
use super::origin::{OriginError, Reply, Validators};
use super::{CachedTable, Claim, Entry, Stats};
use crate::error::{Cause, Chain, Error, OriginFailure, Violation};
use crate::storage::{Commit, Envelope, Key};
use crate::table::Precondition;

/// What one origin request produced, shared by every request that waited on it.
pub(super) type Flown = Result<Filled, Failure>;

/// An origin request that produced an answer.
#[derive(Clone, Debug)]
pub(super) struct Filled {
    pub fetched: Fetched,
    pub origin_status: u16,
    pub origin_time: Duration,
    /// The change-log position of what it stored, if anything was (and logged).
    pub logged: Option<u64>,
}

/// What the answer became.
#[derive(Clone, Debug)]
pub(super) enum Fetched {
    /// Stored (a fill, a refresh or a revalidation).
    Stored(Envelope, Entry),
    /// Served once, not stored (`no-store` from the client or, if honoured, the origin).
    Unstored(Bytes),
    /// The origin has no such record; `until`: remembered until then.
    NotFound { until: Option<u64> },
}

/// Why an origin request produced nothing to serve.
#[derive(Clone, Debug)]
pub(super) enum Failure {
    /// The origin gave no usable answer, after this long.
    Origin(OriginError, Duration),
    /// The origin's answer is not a record of the table: not JSON, or against its schema.
    Invalid {
        reason: String,
        violations: Vec<Violation>,
    },
    /// The answer could not be stored, or the request failed here.
    Local(Error),
}

impl Failure {
    /// The origin's status, if it answered.
    pub fn origin_status(&self) -> Option<u16> {
        match self {
            Failure::Origin(OriginError::Status(status), _) => Some(*status),
            Failure::Invalid { .. } => Some(200),
            Failure::Origin(..) | Failure::Local(_) => None,
        }
    }

    /// How long the origin took, if it was asked.
    pub fn origin_time(&self) -> Option<Duration> {
        match self {
            Failure::Origin(_, took) => Some(*took),
            Failure::Invalid { .. } | Failure::Local(_) => None,
        }
    }

    /// The error a client is answered with for `table/id`.
    pub fn into_error(self, table: &str, id: &Key) -> Error {
        let (table, id) = (table.to_owned(), id.to_string());
        let failure = match self {
            Failure::Origin(OriginError::Timeout(after), _) => {
                let after_ms = after.as_millis();
                return Error::OriginTimeout {
                    table,
                    id,
                    after_ms,
                };
            }
            Failure::Origin(OriginError::Status(status), _) => OriginFailure::Status(status),
            Failure::Origin(OriginError::Redirected(_), _) => OriginFailure::Redirected,
            Failure::Origin(OriginError::TooLarge(limit), _) => OriginFailure::TooLarge { limit },
            Failure::Origin(OriginError::Unreachable(_), _) => OriginFailure::Unreachable,
            Failure::Invalid { reason, violations } => {
                return Error::OriginInvalid {
                    table,
                    id,
                    reason,
                    violations,
                };
            }
            Failure::Local(error) => return error,
        };
        Error::OriginFailed { table, id, failure }
    }
}

impl CachedTable {
    /// Joins or starts the origin request for `key`.
    pub(super) fn board(&self, key: Key, validators: Validators) -> Boarding<Flown> {
        let this = self.clone();
        let encoded = key.encode();
        self.shared
            .flights
            .board(encoded, &self.shared.tasks, move || {
                this.fetch(key, validators, true)
            })
    }

    /// One origin request for `key` and what becomes of its answer (see [`Self::fill`]). A
    /// failure here rather than at the origin is logged with its cause: a background refresh has
    /// no one else to tell.
    pub(super) async fn fetch(self, key: Key, validators: Validators, store: bool) -> Flown {
        let shared = self.shared.clone();
        let flown = self.fill(key.clone(), validators, store).await;
        if let Err(Failure::Local(error)) = &flown
            && error.is_internal()
        {
            let (table, error) = (shared.table.name(), Chain(error));
            tracing::error!(table, id = %key, %error, "a cache fill failed");
        }
        flown
    }

    /// One origin request for `key` and what becomes of its answer (see [`Self::ask`]); in a
    /// cluster, the answer another node's request for it brings, if one is under way.
    async fn fill(self, key: Key, validators: Validators, store: bool) -> Flown {
        if !store {
            return self.ask(key, validators, false).await;
        }
        let before = self.entry_before(&key);
        let release = match self.claim(&key).await {
            Claim::Ours(release) => Some(release),
            Claim::Theirs(released) => {
                let started = Instant::now();
                if let Some(fetched) = self.peer_fill(&key, before, released).await {
                    let origin_time = started.elapsed();
                    return Ok(Filled {
                        fetched,
                        origin_status: 200,
                        origin_time,
                        logged: None,
                    });
                }
                None
            }
            Claim::Alone => None,
        };
        let flown = self.clone().ask(key, validators, true).await;
        if let Some(release) = release {
            let logged = flown.as_ref().ok().and_then(|filled| filled.logged);
            self.shared.tasks.spawn(release(logged));
        }
        flown
    }

    /// One origin request for `key` and what becomes of its answer: stored (if `store`),
    /// restamped on a 304, or the stored entry evicted on a 404.
    async fn ask(self, key: Key, validators: Validators, store: bool) -> Flown {
        let shared = &self.shared;
        let url = shared.origin.url(&key.to_string()).map_err(|reason| {
            Failure::Local(Error::Internal(Cause::new(format!(
                "a checked id made no origin URL: {reason}"
            ))))
        })?;
        Stats::count(&shared.stats.origin_requests);
        let (reply, took) = shared.origin.fetch(url, &validators).await;
        shared.stats.origin_took(took);
        let reply = reply.map_err(|error| {
            Stats::count(&shared.stats.origin_errors);
            tracing::warn!(table = shared.table.name(), id = %key, %error, "origin request failed");
            Failure::Origin(error, took)
        })?;
        let now = shared.clock.now_ms();
        let filled = |(fetched, logged), origin_status| Filled {
            fetched,
            origin_status,
            origin_time: took,
            logged,
        };
        match reply {
            Reply::Record {
                body,
                validators: received,
                directives,
                age,
            } => {
                let origin = OriginRecord {
                    body: &body,
                    validators: received,
                    directives: &directives,
                    age,
                };
                let stored = self.store(&key, origin, now, store).await;
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
                    stamped_at: now,
                    fresh_until: now,
                    ..Entry::default()
                });
                entry.etag = received.etag.or(validators.etag);
                entry.last_modified = received.last_modified.or(validators.last_modified);
                let stamp = entry.stamp();
                match shared.table.restamp(key.clone(), move |_| stamp).await {
                    Ok(commit) => {
                        let logged = commit.seq;
                        let fetched = Fetched::Stored(stored_record(commit)?, entry);
                        Ok(filled((fetched, logged), 304))
                    }
                    // Evicted while the origin was asked: ask again, unconditionally.
                    Err(Error::RecordNotFound { .. }) => {
                        Box::pin(self.clone().ask(key, Validators::default(), store)).await
                    }
                    Err(error) => Err(Failure::Local(error)),
                }
            }
            Reply::NotFound { directives } => {
                // The origin no longer has the record: evict it, so subscribers see it go.
                match shared
                    .table
                    .delete(key.clone(), Precondition::default())
                    .await
                {
                    Ok(_) | Err(Error::RecordNotFound { .. }) => shared.recency.forget(&key),
                    Err(error) => return Err(Failure::Local(error)),
                }
                let until = store
                    .then(|| shared.policy.not_found_until(&directives, now))
                    .flatten()
                    .filter(|&until| shared.not_found.remember(&key, until, now));
                Ok(filled((Fetched::NotFound { until }, None), 404))
            }
        }
    }

    /// Validates an origin record and stores it, unless it must not be stored; with the
    /// change-log position of what it stored.
    async fn store(
        &self,
        key: &Key,
        origin: OriginRecord<'_>,
        now: u64,
        store: bool,
    ) -> Result<(Fetched, Option<u64>), Failure> {
        let shared = &self.shared;
        let value: Value = serde_json::from_slice(origin.body).map_err(|e| Failure::Invalid {
            reason: format!("is not JSON ({e})"),
            violations: Vec::new(),
        })?;
        shared.not_found.forget(key);
        let record = shared
            .table
            .check(key, value, now)
            .map_err(|rejection| Failure::Invalid {
                reason: "does not match the table's schema".to_owned(),
                violations: rejection.into_violations(),
            })?;
        let entry = shared
            .policy
            .entry(origin.directives, now, origin.age)
            .filter(|_| store);
        let Some(mut entry) = entry else {
            let bytes = serde_json::to_vec(&record).map_err(|e| {
                Failure::Local(Error::Internal(Cause::of("a record did not encode", e)))
            })?;
            return Ok((Fetched::Unstored(bytes.into()), None));
        };
        entry.etag = origin.validators.etag;
        entry.last_modified = origin.validators.last_modified;
        let commit = shared
            .table
            .refresh(key.clone(), record, entry.stamp())
            .await
            .map_err(Failure::Local)?;
        shared.recency.touch(key);
        self.enforce_bound();
        let logged = commit.seq;
        Ok((Fetched::Stored(stored_record(commit)?, entry), logged))
    }
}

/// An origin's 200 answer, as `store` needs it.
struct OriginRecord<'a> {
    body: &'a [u8],
    validators: Validators,
    directives: &'a OriginDirectives,
    /// The answer's `Age` in ms.
    age: u64,
}

/// The validators to revalidate `entry` with.
pub(super) fn validators(entry: &Entry) -> Validators {
    Validators {
        etag: entry.etag.clone(),
        last_modified: entry.last_modified.clone(),
    }
}

fn stored_record(commit: Commit) -> Result<Envelope, Failure> {
    commit
        .record
        .ok_or_else(|| Failure::Local(Error::Internal(Cause::new("a fill stored no record"))))
}
