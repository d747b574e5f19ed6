//! Active caching: what clients and the sweeper do to a cache table besides reading it. A value
//! pushed (`PUT`), an entry evicted (`DELETE`), entries marked stale, ids fetched ahead of use,
//! and entries past their last usable moment removed.

use futures_util::StreamExt;
use serde_json::{Value, json};

use super::{CachedTable, Entry, RequestDirectives, Stats};
use crate::error::{Chain, Error, Result};
use crate::storage::{Commit, Key};
use crate::table::Precondition;

/// Origin requests a warm-up keeps in flight at once.
const WARM_CONCURRENCY: usize = 16;
/// Writes an invalidation or a sweep queues at once (the group commit takes them together).
const WRITE_CHUNK: usize = 1024;

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
    /// Stores a value pushed by a client (`PUT`), fresh for `max_age` seconds if given, else
    /// for the table's expiration.
    pub async fn push(
        &self,
        key: Key,
        record: Value,
        precondition: Precondition,
        max_age: Option<u64>,
    ) -> Result<Commit> {
        let shared = &self.shared;
        let entry = shared.policy.pushed(max_age, shared.clock.now_ms());
        let commit = shared
            .table
            .put_stamped(key.clone(), record, precondition, entry.stamp())
            .await?;
        shared.not_found.forget(&key);
        shared.recency.touch(&key);
        self.enforce_bound();
        Ok(commit)
    }

    /// Evicts `key` (`DELETE`): the stored entry and any remembered 404.
    pub async fn evict(&self, key: Key, precondition: Precondition) -> Result<()> {
        let forgotten = self.shared.not_found.forget(&key);
        match self.shared.table.delete(key.clone(), precondition).await {
            Ok(_) => {
                self.shared.recency.forget(&key);
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
                    shared.not_found.forget(key);
                }
                keys
            }
            None => {
                shared.not_found.forget_all();
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
                    entry.stamped_at = now;
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
        let directives = RequestDirectives::default();
        let directives = &directives;
        futures_util::stream::iter(keys)
            .map(|key| async move {
                let served = self.get(key.clone(), directives).await;
                (key, served)
            })
            .buffer_unordered(WARM_CONCURRENCY)
            .fold(
                WarmReport::default(),
                |mut report, (key, served)| async move {
                    match served.outcome {
                        Ok(_) if served.status.hit => report.fresh += 1,
                        Ok(_) => report.fetched += 1,
                        Err(Error::RecordNotFound { .. }) => report.not_found += 1,
                        Err(error) => {
                            if error.is_internal() {
                                let error = Chain(&error);
                                tracing::error!(id = %key, %error, "a warm-up failed");
                            }
                            let detail = error.public_detail();
                            report
                                .failed
                                .push(json!({ "id": key.to_json(), "detail": detail }));
                        }
                    }
                    report
                },
            )
            .await
    }

    /// Removes the entries past their last usable moment and forgets expired 404s; returns how
    /// many entries were removed.
    pub async fn sweep(&self) -> Result<usize> {
        let shared = &self.shared;
        let now = shared.clock.now_ms();
        shared.not_found.forget_expired(now);
        let mut removed = 0;
        loop {
            let due = shared.table.expired(now, WRITE_CHUNK)?;
            let writes = due.iter().map(|key| {
                shared.table.evict_if(key.clone(), move |record| {
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
                shared.recency.forget(key);
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
}
