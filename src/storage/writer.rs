//! Group commit: one writer thread applies every mutation, one fsync acknowledges a whole batch.
//!
//! Requests queue on a channel. The writer takes everything queued (up to [`MAX_BATCH`]), decides
//! each mutation against the current record (earlier writes of the same batch included), applies
//! the batch in one sled transaction, flushes once, then calls `on_durable` for each commit in
//! commit order and only then replies. A single writer makes read-modify-write (PATCH, If-Match,
//! generated integer keys) atomic without locks, and makes commit order equal version order.

use std::collections::HashMap;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use bytes::Bytes;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use tokio::sync::oneshot;

use super::changelog::{ChangeLog, LogBatch, LoggedChange};
use super::hlc::Hlc;
use super::meta::{CLOCK_KEY, LOG_KEY, PIECE_KEY};
use super::mutation::{
    Ahead, Change, Command, Commit, Decide, OnDurable, Prepared, Request, Scope, WriteContext,
};
use super::pieces::Pieces;
use super::staged::Staged;
use super::{Envelope, storage_error};
use crate::clock::Clock;
use crate::error::{Cause, Chain, Error, Result};

/// The most requests one flush acknowledges; bounds the latency of the first in a long queue.
const MAX_BATCH: usize = 4096;

/// The writer thread's state.
pub(crate) struct Writer {
    pub db: sled::Db,
    pub meta: sled::Tree,
    pub hlc: Hlc,
    /// Commit times come from here.
    pub clock: Clock,
    pub on_durable: OnDurable,
    pub log: ChangeLog,
    pub pieces: sled::Tree,
    /// The id the next value stored in pieces gets.
    pub next_piece_id: u64,
    /// Set once a commit failed in the store: sled refuses every later write after a failed
    /// flush, until the process restarts.
    pub failed: Arc<AtomicBool>,
}

/// Where a commit's outcome goes.
type Reply = oneshot::Sender<Result<Commit>>;

/// What one batch writes before it is applied.
struct Batch {
    /// By table name.
    tables: HashMap<Arc<str>, Staged>,
    log: LogBatch,
    pieces: Pieces,
    /// The commits staged, in order, with where each one's outcome goes.
    pending: Vec<(Commit, Reply)>,
}

impl Writer {
    /// Commits batches of `commands` until the channel closes or a `Close` arrives.
    pub fn run(mut self, commands: mpsc::Receiver<Command>) {
        while let Ok(first) = commands.recv() {
            let mut batch = Vec::new();
            let mut closing = false;
            let mut next = Some(first);
            while let Some(command) = next {
                match command {
                    Command::Write(request) => batch.push(*request),
                    Command::Close => {
                        closing = true;
                        break;
                    }
                }
                next = (batch.len() < MAX_BATCH)
                    .then(|| commands.try_recv().ok())
                    .flatten();
            }
            self.commit_batch(batch);
            if closing {
                break;
            }
        }
        if let Err(error) = self.db.flush() {
            tracing::error!(%error, "final flush failed");
        }
    }

    /// Stages every request, applies what was staged with one fsync, and answers each.
    fn commit_batch(&mut self, requests: Vec<Request>) {
        let now_ms = self.clock.now_ms();
        let mut batch = Batch {
            tables: HashMap::new(),
            log: self.log.begin(),
            pieces: Pieces::new(self.next_piece_id),
            pending: Vec::with_capacity(requests.len()),
        };
        for request in requests {
            self.stage(&mut batch, request, now_ms);
        }
        if batch.pending.is_empty() {
            return;
        }
        let applied = self
            .log
            .trim(&mut batch.log, &mut batch.pieces)
            .and_then(|()| self.apply(&batch));
        if applied.is_ok() {
            self.next_piece_id = batch.pieces.next_id;
        }
        self.acknowledge(batch, applied);
    }

    /// Decides one request against the current record and stages its change; a request whose
    /// decision fails is answered at once, and stages nothing.
    fn stage(&mut self, batch: &mut Batch, request: Request, now_ms: u64) {
        let Request {
            records,
            target,
            decide,
            ahead,
            reply,
        } = request;
        let table = batch
            .tables
            .entry(records.name.clone())
            .or_insert_with(|| Staged::new(&records));
        let pieces = &mut batch.pieces;
        let staged = table.key(target).and_then(|key| {
            let encoded = key.encode();
            let current = table.current(&encoded)?;
            let before = current.as_ref().map(|(record, _)| record);
            let seen = before.map(|record| record.version);
            let (change, indexed_before, now_ms) = match ahead {
                // Decided against this very record: take the decision, its work and its time
                // (which the record's timestamps already hold).
                Some(Ahead {
                    key: decided_for,
                    seen: decided_against,
                    now_ms: decided_at,
                    change,
                }) if decided_for == key && decided_against.as_ref().map(|s| s.0) == seen => {
                    (change?, decided_against.map(|s| s.1), decided_at)
                }
                _ => {
                    let deleted = match before {
                        None => table.deleted(&encoded)?,
                        Some(_) => None,
                    };
                    let context = WriteContext {
                        key: &key,
                        now_ms,
                        deleted,
                    };
                    let change = decide_guarded(decide, before, &context, &records.name)?;
                    (records.prepare(change)?, None, now_ms)
                }
            };
            let restamp = matches!(change, Prepared::Restamp { .. });
            let scope = change.scope();
            let meta = match &change {
                Prepared::Put { stamp, .. } | Prepared::Restamp { stamp, .. } => stamp.meta.clone(),
                _ => Bytes::new(),
            };
            let now = (now_ms, &mut self.hlc);
            let change = (change, indexed_before);
            let changed = table.change(&key, encoded, current, change, now, pieces)?;
            let (version, record) = changed;
            Ok((key, (scope, restamp, meta), version, record))
        });
        let (key, (scope, restamp, meta), version, record) = match staged {
            Ok(staged) => staged,
            Err(error) => {
                let _ = reply.send(Err(error));
                return;
            }
        };
        // A restamp changes no record, so subscribers have nothing to learn from it; other
        // nodes do (a cache entry revalidated here is fresh there too).
        let logged = !restamp || (scope == Scope::Cluster && records.tombstones.is_some());
        let seq = logged.then(|| {
            let change = LoggedChange {
                seq: 0,
                table: records.name.clone(),
                key: key.clone(),
                version,
                value: record.as_ref().map(|r| r.value.clone()),
                meta,
                scope,
                restamp,
            };
            batch.log.append(change, &mut batch.pieces)
        });
        let commit = Commit {
            table: records.name.clone(),
            key,
            version,
            record,
            seq,
            scope,
            restamp,
        };
        batch.pending.push((commit, reply));
    }

    /// Writes every staged table, its metadata, the change log and the clock in one
    /// transaction, then fsyncs.
    fn apply(&self, batch: &Batch) -> Result<()> {
        // Every tree the batch touches, each with its batch; the meta tree comes first.
        let mut trees = vec![self.meta.clone(), self.log.tree().clone()];
        let mut batches = vec![&batch.log.entries];
        let pieces = batch.pieces.touched;
        if pieces {
            trees.push(self.pieces.clone());
            batches.push(&batch.pieces.batch);
        }
        for table in batch.tables.values() {
            trees.push(table.records.tree.clone());
            batches.push(&table.batch);
            for (index, index_batch) in table.records.indexes.iter().zip(&table.index_batches) {
                trees.push(index.tree.clone());
                batches.push(index_batch);
            }
            if let Some(expiry) = &table.expiry {
                trees.push(table.records.expiry.clone());
                batches.push(expiry);
            }
        }
        // Built here, so they live as long as the transaction that borrows them.
        let tombstones: Vec<_> = batch
            .tables
            .values()
            .filter(|table| !table.tombstones.is_empty())
            .filter_map(Staged::tombstone_batch)
            .collect();
        for (tree, tombstone_batch) in &tombstones {
            trees.push(tree.clone());
            batches.push(tombstone_batch);
        }
        let clock = self.hlc.last().to_be_bytes();
        let last_seq = batch.log.last.to_be_bytes();
        let next_piece_id = batch.pieces.next_id.to_be_bytes();
        trees
            .as_slice()
            .transaction(|views| {
                let (meta, others) = views.split_first().expect("the meta tree is first");
                meta.insert(CLOCK_KEY, &clock)?;
                meta.insert(LOG_KEY, &last_seq)?;
                if pieces {
                    meta.insert(PIECE_KEY, &next_piece_id)?;
                }
                for (view, batch) in others.iter().zip(&batches) {
                    view.apply_batch(batch)?;
                }
                for table in batch.tables.values() {
                    meta.insert(
                        table.records.meta_key(),
                        table.meta.encode(table.records.key_type),
                    )?;
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|error| match error {
                TransactionError::Storage(error) => storage_error(error),
                TransactionError::Abort(()) => {
                    Error::Internal(Cause::new("the commit's transaction aborted"))
                }
            })?;
        // Before the fsync, so no acknowledged write can be shadowed by an older copy.
        for table in batch.tables.values() {
            for key in table.written.keys() {
                table.records.hot.invalidate(table.records.id, key);
            }
        }
        self.db.flush().map_err(storage_error)?;
        Ok(())
    }

    /// Answers every staged commit: once durable, each is announced in commit order, then
    /// acknowledged; if the batch failed, each is told so.
    fn acknowledge(&mut self, batch: Batch, applied: Result<()>) {
        if let Err(error) = applied {
            let rejected = batch.pending.len();
            tracing::error!(error = %Chain(&error), "commit failed; {rejected} writes rejected");
            if matches!(error, Error::Storage(_) | Error::DiskFull(_)) {
                self.failed.store(true, Ordering::Relaxed);
            }
            for (_, reply) in batch.pending {
                let _ = reply.send(Err(error.clone()));
            }
            return;
        }
        self.log.applied(&batch.log);
        for table in batch.tables.into_values() {
            table.records.set_meta(table.meta);
        }
        for (commit, reply) in batch.pending {
            // Every logged commit: those that changed a record, and a replicated store's
            // restamps (which `commit.restamp` tells apart).
            if commit.seq.is_some() {
                (self.on_durable)(&commit);
            }
            let _ = reply.send(Ok(commit));
        }
    }
}

/// Runs `decide` for the key of `context` in `table`; a panicking decision fails its own write, not the writer.
fn decide_guarded(
    decide: Decide,
    current: Option<&Envelope>,
    context: &WriteContext,
    table: &str,
) -> Result<Change> {
    panic::catch_unwind(AssertUnwindSafe(|| decide(current, context))).unwrap_or_else(|_| {
        let key = context.key;
        Err(Error::Internal(Cause::new(format!(
            "a write to {table}/{key} panicked"
        ))))
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::{Arc, Mutex};

    use serde_json::Value;

    use super::*;
    use crate::storage::{DecideAhead, Key, KeyType, Options, Stamp, Store, Target};

    #[tokio::test]
    async fn a_panicking_decision_fails_its_write_only() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let published = Arc::new(Mutex::new(Vec::new()));
        let seen = published.clone();
        let store = Store::open(
            dir.path(),
            Options::default(),
            Box::new(move |c| seen.lock().unwrap().push(c.version)),
        )
        .expect("opens");
        let records = store.records("T", KeyType::Integer, &[]).expect("tree");

        let failed = store
            .commit(
                &records,
                Target::Key(Key::Int(1)),
                Box::new(|_, _| panic!("bug")),
            )
            .await;
        assert!(matches!(failed, Err(Error::Internal(_))), "{failed:?}");
        let next = store
            .commit(
                &records,
                Target::NextInteger,
                Box::new(|_, _| Ok(Change::Put(serde_json::json!({}), Stamp::default()))),
            )
            .await
            .expect("the writer still works");
        assert_eq!(next.key, Key::Int(1));
        assert_eq!(records.count(), 1);
        assert_eq!(*published.lock().unwrap(), [next.version]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_decision_made_ahead_against_a_record_that_changed_is_made_again() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let store =
            Arc::new(Store::open(dir.path(), Options::default(), Box::new(|_| {})).expect("opens"));
        let records = store
            .records("T", KeyType::Integer, &["n".to_owned()])
            .expect("tree");
        let decided = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // Every write increments `n`: decided ahead in parallel, most against a record that
        // another write changes before this one reaches the writer.
        let writers: Vec<_> = (0..64)
            .map(|_| {
                let (store, records, decided) = (store.clone(), records.clone(), decided.clone());
                tokio::spawn(async move {
                    let increment: DecideAhead = Arc::new(move |current, _| {
                        decided.fetch_add(1, Ordering::Relaxed);
                        let n = current.map_or(0, |c| {
                            let value: Value = serde_json::from_slice(&c.value).expect("JSON");
                            value["n"].as_u64().expect("n")
                        });
                        Ok(Change::Put(
                            serde_json::json!({ "n": n + 1 }),
                            Stamp::default(),
                        ))
                    });
                    store
                        .commit_ahead(&records, Target::Key(Key::Int(1)), increment)
                        .await
                })
            })
            .collect();
        for writer in writers {
            writer.await.expect("task").expect("commits");
        }
        let record = records.get(&Key::Int(1)).expect("reads").expect("present");
        let value: Value = serde_json::from_slice(&record.value).expect("JSON");
        assert_eq!(value["n"], 64, "no increment was lost");
        assert!(decided.load(Ordering::Relaxed) >= 64);
        // The index holds the last value only.
        let range = crate::storage::IndexRange::Between(
            std::ops::Bound::Unbounded,
            std::ops::Bound::Unbounded,
        );
        let entries = records
            .index_keys(&["n".to_owned()], &range)
            .expect("index")
            .count();
        assert_eq!(entries, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_after_an_acknowledged_write_sees_it_while_other_reads_race() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let store = Store::open(dir.path(), Options::default(), Box::new(|_| {})).expect("opens");
        let records = store.records("T", KeyType::Integer, &[]).expect("tree");
        let key = Key::Int(7);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Readers keep filling the hot records with whatever they read.
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (records, key, stop) = (records.clone(), key.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        records.get(&key).expect("reads");
                    }
                })
            })
            .collect();
        for n in 0..300 {
            let value = serde_json::json!({ "n": n });
            let commit = store
                .commit(
                    &records,
                    Target::Key(key.clone()),
                    Box::new(move |_, _| Ok(Change::Put(value, Stamp::default()))),
                )
                .await
                .expect("writes");
            let read = records.get(&key).expect("reads").expect("present");
            assert_eq!(read.version, commit.version, "write {n}");
        }
        stop.store(true, Ordering::Relaxed);
        for reader in readers {
            reader.join().expect("reader");
        }
    }
}
