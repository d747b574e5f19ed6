//! Group commit: one writer thread applies every mutation, one fsync acknowledges a whole batch.
//!
//! Requests queue on a channel. The writer takes everything queued (up to [`MAX_BATCH`]), decides
//! each mutation against the current record (earlier writes of the same batch included), applies
//! the batch in one sled transaction, flushes once, then calls `on_durable` for each commit in
//! commit order and only then replies. A single writer makes read-modify-write (PATCH, If-Match,
//! generated integer keys) atomic without locks, and makes commit order equal version order.

use std::collections::{BTreeMap, HashMap};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::mpsc;

use serde_json::Value;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use tokio::sync::oneshot;

use super::changelog::{ChangeLog, LogBatch};
use super::hlc::Hlc;
use super::key::Key;
use super::meta::{CLOCK_KEY, LOG_KEY, TableMeta};
use super::mutation::{Change, Command, Commit, Decide, OnDurable, Request, Target, WriteContext};
use super::{Envelope, Records, index, storage_error};
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
}

/// Where a commit's outcome goes.
type Reply = oneshot::Sender<Result<Commit>>;

/// What one batch writes before it is applied.
struct Batch {
    /// By table name.
    tables: HashMap<Arc<str>, Staged>,
    log: LogBatch,
    /// The commits staged, in order, with where each one's outcome goes.
    pending: Vec<(Commit, Reply)>,
}

/// What a batch writes to one table.
struct Staged {
    records: Records,
    batch: sled::Batch,
    /// The records `batch` writes, by encoded key, so later mutations of the batch see them
    /// (and the hot records forget them once applied).
    written: BTreeMap<Vec<u8>, Option<Envelope>>,
    /// One batch per index of the table, in the order of `records.indexes`.
    index_batches: Vec<sled::Batch>,
    /// Changes to the table's expiry tree, if any.
    expiry: Option<sled::Batch>,
    meta: TableMeta,
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
                    Command::Write(request) => batch.push(request),
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
            pending: Vec::with_capacity(requests.len()),
        };
        for request in requests {
            self.stage(&mut batch, request, now_ms);
        }
        if batch.pending.is_empty() {
            return;
        }
        self.log.trim(&mut batch.log);
        let applied = self.apply(&batch);
        self.acknowledge(batch, applied);
    }

    /// Decides one request against the current record and stages its change; a request whose
    /// decision fails is answered at once, and stages nothing.
    fn stage(&mut self, batch: &mut Batch, request: Request, now_ms: u64) {
        let Request {
            records,
            target,
            decide,
            reply,
        } = request;
        let table = batch
            .tables
            .entry(records.name.clone())
            .or_insert_with(|| Staged::new(&records));
        let staged = table.key(target).and_then(|key| {
            let encoded = key.encode();
            let current = table.current(&encoded)?;
            let change = decide_guarded(decide, current.as_ref(), &key, now_ms, &records.name)?;
            let announce = !matches!(change, Change::Restamp(_));
            let changed = table.change(&key, encoded, current, change, now_ms, &mut self.hlc)?;
            let (version, record) = changed;
            Ok((key, announce, version, record))
        });
        let (key, announce, version, record) = match staged {
            Ok(staged) => staged,
            Err(error) => {
                let _ = reply.send(Err(error));
                return;
            }
        };
        let seq = announce.then(|| {
            let value = record.as_ref().map(|r| r.value.clone());
            batch
                .log
                .append(records.name.clone(), key.clone(), version, value)
        });
        let commit = Commit {
            table: records.name.clone(),
            key,
            version,
            record,
            seq,
        };
        batch.pending.push((commit, reply));
    }

    /// Writes every staged table, its metadata, the change log and the clock in one
    /// transaction, then fsyncs.
    fn apply(&self, batch: &Batch) -> Result<()> {
        // Every tree the batch touches, each with its batch; the meta tree comes first.
        let mut trees = vec![self.meta.clone(), self.log.tree().clone()];
        let mut batches = vec![&batch.log.entries];
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
        let clock = self.hlc.last().to_be_bytes();
        let last_seq = batch.log.last.to_be_bytes();
        trees
            .as_slice()
            .transaction(|views| {
                let (meta, others) = views.split_first().expect("the meta tree is first");
                meta.insert(CLOCK_KEY, &clock)?;
                meta.insert(LOG_KEY, &last_seq)?;
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
            // Only logged commits changed the record; a restamp is not announced.
            if commit.seq.is_some() {
                (self.on_durable)(&commit);
            }
            let _ = reply.send(Ok(commit));
        }
    }
}

/// Runs `decide` for `key` of `table`; a panicking decision fails its own write, not the writer.
fn decide_guarded(
    decide: Decide,
    current: Option<&Envelope>,
    key: &Key,
    now_ms: u64,
    table: &str,
) -> Result<Change> {
    let context = WriteContext { key, now_ms };
    panic::catch_unwind(AssertUnwindSafe(|| decide(current, &context))).unwrap_or_else(|_| {
        Err(Error::Internal(Cause::new(format!(
            "a write to {table}/{key} panicked"
        ))))
    })
}

impl Staged {
    fn new(records: &Records) -> Staged {
        Staged {
            meta: records.meta_snapshot(),
            records: records.clone(),
            batch: sled::Batch::default(),
            written: BTreeMap::new(),
            index_batches: records
                .indexes
                .iter()
                .map(|_| sled::Batch::default())
                .collect(),
            expiry: None,
        }
    }

    /// The key `target` names.
    fn key(&self, target: Target) -> Result<Key> {
        match target {
            Target::Key(key) => Ok(key),
            Target::NextInteger => self
                .meta
                .max_int
                .map_or(Some(1), |n| n.checked_add(1))
                .map(Key::Int)
                .ok_or_else(|| Error::InvalidId {
                    id: i64::MAX.to_string(),
                    key_type: "integer",
                    reason: "the table's integer ids are exhausted".to_owned(),
                }),
        }
    }

    /// The record under `encoded` as the batch leaves it so far.
    fn current(&self, encoded: &[u8]) -> Result<Option<Envelope>> {
        match self.written.get(encoded) {
            Some(staged) => Ok(staged.clone()),
            None => self.records.read(encoded),
        }
    }

    /// Stages `change` of the record `key` (encoded as `encoded`, now `current`); returns the
    /// commit's version and the record after it.
    fn change(
        &mut self,
        key: &Key,
        encoded: Vec<u8>,
        current: Option<Envelope>,
        change: Change,
        now_ms: u64,
        hlc: &mut Hlc,
    ) -> Result<(u64, Option<Envelope>)> {
        let old_expiry = current.as_ref().and_then(|c| c.expires_at);
        let (version, record) = match (change, current) {
            (Change::Put(value, stamp), current) => {
                let envelope = Envelope {
                    version: hlc.next(now_ms),
                    created: current.as_ref().map_or(now_ms, |c| c.created),
                    updated: now_ms,
                    expires_at: stamp.expires_at,
                    meta: stamp.meta,
                    value: serde_json::to_vec(&value)
                        .expect("a JSON value serialises")
                        .into(),
                };
                self.batch.insert(encoded.clone(), envelope.encode());
                self.reindex(&encoded, current.as_ref(), Some(&value));
                self.reschedule(&encoded, old_expiry, envelope.expires_at);
                self.meta.count += u64::from(current.is_none());
                if let Key::Int(n) = key {
                    self.meta.max_int = Some(self.meta.max_int.map_or(*n, |m| m.max(*n)));
                }
                (envelope.version, Some(envelope))
            }
            (Change::Restamp(stamp), Some(current)) => {
                let envelope = Envelope {
                    expires_at: stamp.expires_at,
                    meta: stamp.meta,
                    ..current
                };
                self.batch.insert(encoded.clone(), envelope.encode());
                self.reschedule(&encoded, old_expiry, envelope.expires_at);
                (envelope.version, Some(envelope))
            }
            (Change::Restamp(_), None) => {
                return Err(Error::RecordNotFound {
                    table: self.records.name.to_string(),
                    id: key.to_string(),
                });
            }
            (Change::Delete, current) => {
                self.batch.remove(encoded.clone());
                self.reindex(&encoded, current.as_ref(), None);
                self.reschedule(&encoded, old_expiry, None);
                self.meta.count -= u64::from(current.is_some());
                (hlc.next(now_ms), None)
            }
        };
        self.written.insert(encoded, record.clone());
        Ok((version, record))
    }

    /// Moves the record's expiry entry from `before` to `after`.
    fn reschedule(&mut self, key: &[u8], before: Option<u64>, after: Option<u64>) {
        if before == after {
            return;
        }
        let batch = self.expiry.get_or_insert_with(sled::Batch::default);
        if let Some(at) = before {
            batch.remove(expiry_entry(at, key));
        }
        if let Some(at) = after {
            batch.insert(expiry_entry(at, key), &[]);
        }
    }

    /// Moves the record's index entries from what `before` put there to what `after` does.
    fn reindex(&mut self, key: &[u8], before: Option<&Envelope>, after: Option<&Value>) {
        if self.records.indexes.is_empty() {
            return;
        }
        let before = before.and_then(|r| serde_json::from_slice::<Value>(&r.value).ok());
        for (index, batch) in self.records.indexes.iter().zip(&mut self.index_batches) {
            let values = |record: Option<&Value>| {
                record
                    .map(|r| index::values(r, &index.path))
                    .unwrap_or_default()
            };
            let (old, new) = (values(before.as_ref()), values(after));
            for value in old.difference(&new) {
                batch.remove(index::entry(value, key));
            }
            for value in new.difference(&old) {
                batch.insert(index::entry(value, key), &[]);
            }
        }
    }
}

/// An expiry tree entry: the moment first, so a range scan finds what is due.
pub(crate) fn expiry_entry(at: u64, key: &[u8]) -> Vec<u8> {
    let mut entry = Vec::with_capacity(8 + key.len());
    entry.extend_from_slice(&at.to_be_bytes());
    entry.extend_from_slice(key);
    entry
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::storage::{KeyType, Options, Stamp, Store};

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
