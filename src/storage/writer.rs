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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::Value;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use tokio::sync::oneshot;

use super::changelog::LoggedChange;
use super::clock::Hlc;
use super::key::Key;
use super::{Envelope, Records, TableMeta, index, storage_error};
use crate::error::{Cause, Chain, Error, Result};

/// The most requests one flush acknowledges; bounds the latency of the first in a long queue.
const MAX_BATCH: usize = 4096;
/// Key of the highest issued version in the meta tree.
pub(crate) const CLOCK_KEY: &[u8] = b"clock";
/// Key of the last change-log sequence number in the meta tree.
pub(crate) const LOG_KEY: &[u8] = b"change-seq";

/// Which record a mutation targets.
pub enum Target {
    /// The record with this key.
    Key(Key),
    /// A new record keyed one above the highest integer key the table has ever had.
    NextInteger,
}

/// What the writer tells a mutation's decision about the moment of the commit.
pub struct WriteContext<'a> {
    /// The record's key.
    pub key: &'a Key,
    /// Commit time, ms since the Unix epoch.
    pub now_ms: u64,
}

/// When a record may be removed, and what its table's resource keeps beside it (opaque here).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stamp {
    /// When the record may be removed (ms since the Unix epoch); listed in the expiry tree.
    pub expires_at: Option<u64>,
    /// Resource metadata, stored in the envelope.
    pub meta: Bytes,
}

/// The outcome a decision asks for.
pub enum Change {
    /// Store this (validated) record with this stamp.
    Put(Value, Stamp),
    /// Keep the record, its version and its `updated` time; replace only its stamp. The record
    /// does not change, so no event is announced.
    Restamp(Stamp),
    /// Remove the record.
    Delete,
}

/// Decides a mutation given the current record; runs on the writer thread, so it must be quick.
pub type Decide = Box<dyn FnOnce(Option<&Envelope>, &WriteContext) -> Result<Change> + Send>;

/// A durable commit, reported to `on_durable` and to the caller.
#[derive(Clone, Debug)]
pub struct Commit {
    /// The table written.
    pub table: Arc<str>,
    /// The record's key.
    pub key: Key,
    /// The commit's version.
    pub version: u64,
    /// The record after the commit; `None` for a delete.
    pub record: Option<Envelope>,
    /// The commit's position in the change log; `None` if it only restamped the record.
    pub seq: Option<u64>,
}

/// Called on the writer thread for each commit that changed a record, in commit order, once it is
/// on disk.
pub type OnDurable = Box<dyn Fn(&Commit) + Send>;

pub(crate) struct Request {
    pub records: Records,
    pub target: Target,
    pub decide: Decide,
    pub reply: oneshot::Sender<Result<Commit>>,
}

pub(crate) enum Command {
    Write(Request),
    /// Finish what is queued before this, then stop.
    Close,
}

pub(crate) struct Writer {
    pub db: sled::Db,
    pub meta: sled::Tree,
    pub clock: Hlc,
    pub on_durable: OnDurable,
    pub log: ChangeLog,
}

/// The writer's end of the change log.
pub(crate) struct ChangeLog {
    pub tree: sled::Tree,
    /// The last sequence number written, shared with readers.
    pub last: Arc<AtomicU64>,
    /// The oldest sequence number possibly still in the tree.
    pub first: u64,
    /// How many entries to keep.
    pub retention: u64,
}

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

impl Staged {
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

impl Writer {
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

    fn commit_batch(&mut self, requests: Vec<Request>) {
        let now_ms = now_ms();
        let mut staged: HashMap<Arc<str>, Staged> = HashMap::new();
        let mut pending = Vec::with_capacity(requests.len());
        let mut log = sled::Batch::default();
        let mut last_seq = self.log.last.load(Ordering::Relaxed);

        for Request {
            records,
            target,
            decide,
            reply,
        } in requests
        {
            let table = staged
                .entry(records.name.clone())
                .or_insert_with(|| Staged {
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
                });
            let key = match target {
                Target::Key(key) => key,
                Target::NextInteger => {
                    match table.meta.max_int.map_or(Some(1), |n| n.checked_add(1)) {
                        Some(n) => Key::Int(n),
                        None => {
                            let _ = reply.send(Err(Error::InvalidId {
                                id: i64::MAX.to_string(),
                                key_type: "integer",
                                reason: "the table's integer ids are exhausted".to_owned(),
                            }));
                            continue;
                        }
                    }
                }
            };
            let encoded = key.encode();
            let current = match table.written.get(&encoded) {
                Some(staged) => Ok(staged.clone()),
                None => records.read(&encoded),
            };
            let decided = current.and_then(|current| {
                let context = WriteContext { key: &key, now_ms };
                // A panicking decision must not take the only writer down with it.
                let decision =
                    panic::catch_unwind(AssertUnwindSafe(|| decide(current.as_ref(), &context)))
                        .unwrap_or_else(|_| {
                            Err(Error::Internal(Cause::new(format!(
                                "a write to {}/{key} panicked",
                                records.name
                            ))))
                        });
                decision.map(|change| (current, change))
            });
            let (current, change) = match decided {
                Ok(decided) => decided,
                Err(error) => {
                    let _ = reply.send(Err(error));
                    continue;
                }
            };
            let old_expiry = current.as_ref().and_then(|c| c.expires_at);
            let announce = !matches!(change, Change::Restamp(_));
            let (version, record) = match (change, current) {
                (Change::Put(value, stamp), current) => {
                    let version = self.clock.next(now_ms);
                    let envelope = Envelope {
                        version,
                        created: current.as_ref().map_or(now_ms, |c| c.created),
                        updated: now_ms,
                        expires_at: stamp.expires_at,
                        meta: stamp.meta,
                        value: serde_json::to_vec(&value)
                            .expect("a JSON value serialises")
                            .into(),
                    };
                    table.batch.insert(encoded.clone(), envelope.encode());
                    table.reindex(&encoded, current.as_ref(), Some(&value));
                    table.reschedule(&encoded, old_expiry, envelope.expires_at);
                    table.meta.count += u64::from(current.is_none());
                    if let Key::Int(n) = key {
                        table.meta.max_int = Some(table.meta.max_int.map_or(n, |m| m.max(n)));
                    }
                    (version, Some(envelope))
                }
                (Change::Restamp(stamp), Some(current)) => {
                    let envelope = Envelope {
                        expires_at: stamp.expires_at,
                        meta: stamp.meta,
                        ..current
                    };
                    table.batch.insert(encoded.clone(), envelope.encode());
                    table.reschedule(&encoded, old_expiry, envelope.expires_at);
                    (envelope.version, Some(envelope))
                }
                (Change::Restamp(_), None) => {
                    let _ = reply.send(Err(Error::RecordNotFound {
                        table: records.name.to_string(),
                        id: key.to_string(),
                    }));
                    continue;
                }
                (Change::Delete, current) => {
                    table.batch.remove(encoded.clone());
                    table.reindex(&encoded, current.as_ref(), None);
                    table.reschedule(&encoded, old_expiry, None);
                    table.meta.count -= u64::from(current.is_some());
                    (self.clock.next(now_ms), None)
                }
            };
            table.written.insert(encoded, record.clone());
            let seq = announce.then(|| {
                last_seq += 1;
                let seq = last_seq;
                let logged = LoggedChange {
                    seq,
                    table: records.name.clone(),
                    key: key.clone(),
                    version,
                    value: record.as_ref().map(|r| r.value.clone()),
                };
                log.insert(&seq.to_be_bytes(), logged.encode());
                seq
            });
            let commit = Commit {
                table: records.name.clone(),
                key,
                version,
                record,
                seq,
            };
            pending.push((commit, reply));
        }

        if pending.is_empty() {
            return;
        }
        let staged: Vec<Staged> = staged.into_values().collect();
        // Entries beyond the retention are dropped in the same batch as the new ones.
        let keep_from = (last_seq + 1).saturating_sub(self.log.retention).max(1);
        for old in self.log.first..keep_from {
            log.remove(&old.to_be_bytes());
        }
        match self.apply(&staged, &log, last_seq) {
            Ok(()) => {
                self.log.first = self.log.first.max(keep_from);
                self.log.last.store(last_seq, Ordering::Release);
                for table in &staged {
                    table.records.set_meta(table.meta.clone());
                }
                for (commit, reply) in pending {
                    // Only logged commits changed the record; a restamp is not announced.
                    if commit.seq.is_some() {
                        (self.on_durable)(&commit);
                    }
                    let _ = reply.send(Ok(commit));
                }
            }
            Err(error) => {
                tracing::error!(error = %Chain(&error), "commit failed; {} writes rejected", pending.len());
                for (_, reply) in pending {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }

    /// Writes every staged table, its metadata and the clock in one transaction, then fsyncs.
    fn apply(&self, staged: &[Staged], log: &sled::Batch, last_seq: u64) -> Result<()> {
        // Every tree the batch touches, each with its batch; the meta tree comes first.
        let mut trees = vec![self.meta.clone(), self.log.tree.clone()];
        let mut batches = vec![log];
        for table in staged {
            trees.push(table.records.tree.clone());
            batches.push(&table.batch);
            for (index, batch) in table.records.indexes.iter().zip(&table.index_batches) {
                trees.push(index.tree.clone());
                batches.push(batch);
            }
            if let Some(batch) = &table.expiry {
                trees.push(table.records.expiry.clone());
                batches.push(batch);
            }
        }
        let clock = self.clock.last().to_be_bytes();
        trees
            .as_slice()
            .transaction(|views| {
                let (meta, others) = views.split_first().expect("the meta tree is first");
                meta.insert(CLOCK_KEY, &clock)?;
                meta.insert(LOG_KEY, &last_seq.to_be_bytes())?;
                for (view, batch) in others.iter().zip(&batches) {
                    view.apply_batch(batch)?;
                }
                for table in staged {
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
        for table in staged {
            for key in table.written.keys() {
                table.records.hot.invalidate(table.records.id, key);
            }
        }
        self.db.flush().map_err(storage_error)?;
        Ok(())
    }
}

/// An expiry tree entry: the moment first, so a range scan finds what is due.
pub(crate) fn expiry_entry(at: u64, key: &[u8]) -> Vec<u8> {
    let mut entry = Vec::with_capacity(8 + key.len());
    entry.extend_from_slice(&at.to_be_bytes());
    entry.extend_from_slice(key);
    entry
}

fn now_ms() -> u64 {
    let elapsed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::storage::{KeyType, Store};

    #[tokio::test]
    async fn a_panicking_decision_fails_its_write_only() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let published = Arc::new(Mutex::new(Vec::new()));
        let seen = published.clone();
        let store = Store::open(
            dir.path(),
            1 << 20,
            1000,
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
        let store = Store::open(dir.path(), 1 << 20, 1000, Box::new(|_| {})).expect("opens");
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
