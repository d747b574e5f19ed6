//! Cache tables: a table whose records mirror an HTTP origin, kept fresh by expiry.
//!
//! Read path (`GET /T/id`, [`CachedTable::get`]): the stored envelope's [`Entry`] and the
//! request's directives go through [`freshness()`]. Fresh: served as stored. Usable stale
//! (stale-while-revalidate or `max-stale`): served, and one background refresh starts. Otherwise
//! the origin is asked (conditionally when validators are stored); concurrent askers of one key
//! share one request (`fill.rs`, over `flight.rs`). If the origin fails and the entry is within
//! stale-if-error, the stale entry is served. Every fill, refresh, push and eviction is a normal
//! commit, so it is durable and announced like any write; a revalidation that changes nothing
//! only restamps the entry.
//!
//! | file | holds |
//! | --- | --- |
//! | `mod.rs` | [`CachedTable`]: open, the read path, close, describe |
//! | `fill.rs` | the fill path: one origin request per key, and what becomes of its answer |
//! | `flight.rs` | single-flight: concurrent requests for one key share one piece of work |
//! | `active.rs` | push, evict, invalidate, warm, sweep |
//! | `peers.rs` | in a cluster: other nodes' fills, refreshes and evictions, applied here |
//! | `status.rs` | [`CacheStatus`], the `Cache-Status` header value |
//! | `freshness.rs`, `control.rs`, `entry.rs` | pure decisions, `Cache-Control` directives, the stored metadata |
//! | `not_found.rs`, `recency.rs` | the memory of origin 404s; the `maxEntries` bound |
//! | `stats.rs`, `sweeper.rs` | counters for `GET /T`; the task that removes expired entries |
//! | `origin.rs` | the HTTP client (the only user of reqwest) |

mod active;
mod control;
mod entry;
mod fill;
mod flight;
mod freshness;
mod not_found;
mod origin;
mod peers;
mod recency;
mod stats;
mod status;
mod sweeper;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio_util::task::TaskTracker;

pub use active::WarmReport;
pub use control::RequestDirectives;
pub use entry::Entry;
pub use freshness::{Freshness, Policy, freshness};
pub use peers::{Claim, Peers};
pub use status::{CacheStatus, Detail, Forward, seconds_left};
pub use sweeper::Sweeper;

use crate::clock::Clock;
use crate::error::{Cause, Error, Result};
use crate::schema::CacheSettings;
use crate::storage::{Envelope, Key};
use crate::table::Table;
use fill::{Failure, Fetched, Filled, Flown, validators};
use flight::Flights;
use not_found::NotFoundMemory;
use origin::{Origin, Validators};
use peers::Arrivals;
use recency::Recency;
use stats::Stats;

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
    /// Origin requests, evictions and claim releases under way, so shutdown can wait for them.
    tasks: TaskTracker,
    stats: Stats,
    not_found: NotFoundMemory,
    recency: Recency,
    /// The cluster's other nodes, once replication starts.
    peers: OnceLock<Arc<dyn Peers>>,
    /// Keys whose fill by another node this node waits for.
    arrivals: Arrivals,
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

impl CachedTable {
    /// A cache in front of `table`, whose settings must name an origin. Origin bodies are
    /// limited to `max_body` bytes.
    pub fn open(table: Table, clock: Clock, max_body: usize) -> Result<CachedTable> {
        let name = table.name().to_owned();
        let settings =
            table.schema().settings.cache.clone().ok_or_else(|| {
                Error::Internal(Cause::new(format!("table `{name}` is not a cache")))
            })?;
        let origin = Origin::new(&settings, max_body)
            .map_err(|reason| Error::Internal(Cause::new(format!("table `{name}`: {reason}"))))?;
        let recency = Recency::load(&table, settings.max_entries)?;
        Ok(CachedTable {
            shared: Arc::new(Shared {
                policy: Policy::of(&settings),
                table,
                settings,
                origin,
                clock,
                flights: Arc::new(Flights::new()),
                tasks: TaskTracker::new(),
                stats: Stats::default(),
                not_found: NotFoundMemory::default(),
                recency,
                peers: OnceLock::new(),
                arrivals: Arrivals::default(),
            }),
        })
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
        if stored.is_none()
            && let Err(reason) = shared.table.schema().check_key(&key.to_json())
        {
            // No origin request for an id the table could never store.
            let key_type = shared.table.schema().settings.key_type.name();
            let id = key.to_string();
            let error = Error::InvalidId {
                id,
                key_type,
                reason,
            };
            return Served::failed(error, CacheStatus::default());
        }
        // A record without cache metadata (stored before the table became a cache) is
        // treated as long expired.
        let stored = stored.map(|record| {
            let entry = Entry::decode(&record.meta).unwrap_or_default();
            (record, entry)
        });
        if stored.is_none()
            && !request.no_cache
            && let Some(until) = shared.not_found.until(&key, now)
        {
            Stats::count(&shared.stats.hits);
            let status = CacheStatus {
                hit: true,
                ttl: Some(signed(until) - signed(now)),
                detail: Some(Detail::NotFound),
                ..CacheStatus::default()
            };
            return Served::failed(self.not_found(&key), status);
        }
        let state = freshness(stored.as_ref().map(|(_, entry)| entry), request, now);
        match (state, stored) {
            (Freshness::Fresh { ttl }, Some((record, entry))) => {
                Stats::count(&shared.stats.hits);
                shared.recency.touch(&key);
                let status = CacheStatus {
                    hit: true,
                    ttl: Some(signed(ttl)),
                    ..CacheStatus::default()
                };
                Served::stored(record, entry, status, now, None)
            }
            (Freshness::Usable { stale_for }, Some((record, entry))) => {
                Stats::count(&shared.stats.stale_served);
                shared.recency.touch(&key);
                // A pushed id the origin cannot be asked for stays as it is.
                if shared.origin.url(&key.to_string()).is_ok() {
                    drop(self.board(key, validators(&entry)));
                }
                let status = CacheStatus {
                    hit: true,
                    ttl: Some(-signed(stale_for)),
                    detail: Some(Detail::StaleWhileRevalidate),
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
            (None, _) => Forward::Miss,
            (Some(_), true) => Forward::Request,
            (Some(_), false) => Forward::Stale,
        };
        if request.only_if_cached {
            let status = CacheStatus::detail(Detail::OnlyIfCached);
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
                let ended = Cause::new("the origin request ended without a result");
                Err(Failure::Local(Error::Internal(ended)))
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
                ..
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
                        status.forward = Some(Forward::Stale);
                        status.ttl = Some(signed(entry.fresh_until) - signed(now));
                        status.detail = Some(Detail::StaleIfError);
                        Served::stored(record, entry, status, now, origin_time)
                    }
                    _ => Served {
                        origin_time,
                        ..Served::failed(failure.into_error(shared.table.name(), &key), status)
                    },
                }
            }
        }
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

fn signed(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}
