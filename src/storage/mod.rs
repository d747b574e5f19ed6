//! Storage: the only module that uses sled.
//!
//! One sled tree per table holds `encoded key -> envelope`, and one tree per secondary index
//! (`_index/<table>/<path>`) holds its [`index`] entries; `_expiry/<table>` lists the records that
//! carry an expiry time, by that time, so due ones are found without a scan. The `_meta` tree holds each table's key
//! type, record count and highest integer key, the list of its built indexes, and the clock. All
//! writes go through the group-commit writer (`writer.rs`); reads go straight to sled from any
//! thread.

mod changelog;
mod clock;
mod envelope;
mod hot;
pub mod index;
mod key;
mod writer;

use std::collections::BTreeSet;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

pub use changelog::LoggedChange;
pub use envelope::Envelope;
pub use key::{Key, KeyType};
pub use writer::{Change, Commit, Decide, OnDurable, Stamp, Target, WriteContext};

use crate::error::{Cause, Error, Result};
use hot::HotRecords;
use writer::{CLOCK_KEY, ChangeLog, Command, LOG_KEY, Request, Writer};

const META_TREE: &str = "_meta";

/// The database: a sled instance and its writer thread.
pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    log: sled::Tree,
    /// The last change-log sequence number written.
    log_last: Arc<AtomicU64>,
    commands: mpsc::Sender<Command>,
    writer: Mutex<Option<JoinHandle<()>>>,
    hot: Arc<HotRecords>,
    /// Table names by the number that stands for them among the hot records.
    table_ids: Mutex<Vec<Arc<str>>>,
}

/// A table's records: a handle to its tree and index trees, cheap to clone.
#[derive(Clone)]
pub struct Records {
    name: Arc<str>,
    /// The table's number among the hot records.
    id: u32,
    hot: Arc<HotRecords>,
    key_type: KeyType,
    tree: sled::Tree,
    indexes: Arc<[Index]>,
    /// `expires_at ++ key` for every record that has an expiry time.
    expiry: sled::Tree,
    meta: Arc<Mutex<TableMeta>>,
}

/// A secondary index: the attribute path it indexes and its tree (see [`index`]).
pub(crate) struct Index {
    path: Vec<String>,
    tree: sled::Tree,
}

/// Which index entries to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IndexRange {
    /// Entries of exactly this value (its whole encoding): they are in primary key order.
    Value(Vec<u8>),
    /// Entries whose value encoding starts with these bytes.
    Prefix(Vec<u8>),
    /// Entries whose value encoding lies between these bounds.
    Between(Bound<Vec<u8>>, Bound<Vec<u8>>),
}

/// Per-table facts kept current by the writer and persisted with every commit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TableMeta {
    count: u64,
    /// The highest integer key ever written (deleted keys included), so generated ids are never reused.
    max_int: Option<i64>,
}

impl Store {
    /// Opens (or creates) the database in `dir`, with `cache_bytes` of memory for records (a
    /// quarter for hot records, the rest for sled's page cache) and a change log of the last
    /// `change_log` commits, and starts its writer thread.
    pub fn open(
        dir: &Path,
        cache_bytes: u64,
        change_log: u64,
        on_durable: OnDurable,
    ) -> Result<Store> {
        let hot_bytes = cache_bytes / 4;
        let db = open_db(dir, cache_bytes - hot_bytes)?;
        let meta = db.open_tree(META_TREE).map_err(storage_error)?;
        let read_u64 = |key: &[u8]| -> Result<u64> {
            match meta.get(key).map_err(storage_error)? {
                Some(raw) => Ok(u64::from_be_bytes(raw.as_ref().try_into().map_err(
                    |_| {
                        storage_failure(format!(
                            "corrupt `{}` record",
                            String::from_utf8_lossy(key)
                        ))
                    },
                )?)),
                None => Ok(0),
            }
        };
        let last_version = read_u64(CLOCK_KEY)?;
        let last_seq = read_u64(LOG_KEY)?;
        let log = db.open_tree(changelog::TREE).map_err(storage_error)?;
        let first_seq = match log.first().map_err(storage_error)? {
            Some((seq, _)) => u64::from_be_bytes(
                seq.as_ref()
                    .try_into()
                    .map_err(|_| storage_failure("corrupt change log".to_owned()))?,
            ),
            None => last_seq + 1,
        };
        let log_last = Arc::new(AtomicU64::new(last_seq));
        let (commands, receiver) = mpsc::channel();
        let writer = Writer {
            db: db.clone(),
            meta: meta.clone(),
            clock: clock::Hlc::resume(last_version),
            on_durable,
            log: ChangeLog {
                tree: log.clone(),
                last: log_last.clone(),
                first: first_seq,
                retention: change_log,
            },
        };
        let handle = std::thread::Builder::new()
            .name("tablecast-writer".to_owned())
            .spawn(move || writer.run(receiver))
            .map_err(|e| Error::Storage(Cause::of("cannot start the writer thread", e)))?;
        Ok(Store {
            db,
            meta,
            log,
            log_last,
            commands,
            writer: Mutex::new(Some(handle)),
            hot: Arc::new(HotRecords::new(
                usize::try_from(hot_bytes).unwrap_or(usize::MAX),
            )),
            table_ids: Mutex::default(),
        })
    }

    /// Opens the tree of table `name`, whose keys are of `key_type`, with an index on each of
    /// `index_paths` (dotted attribute paths). Indexes new since the last start are built from the
    /// records (logging progress) before this returns; indexes no longer declared are dropped.
    ///
    /// Fails if the table already holds records under another key type.
    pub fn records(
        &self,
        name: &str,
        key_type: KeyType,
        index_paths: &[String],
    ) -> Result<Records> {
        let tree = self.db.open_tree(name).map_err(storage_error)?;
        let meta_key = meta_key(name);
        let meta = match self.meta.get(&meta_key).map_err(storage_error)? {
            Some(raw) => {
                let (stored_type, meta) = TableMeta::decode(&raw).ok_or_else(|| {
                    storage_failure(format!("corrupt metadata for table `{name}`"))
                })?;
                if stored_type != key_type {
                    return Err(storage_failure(format!(
                        "table `{name}` holds records with {} keys but its schema now declares {} keys",
                        stored_type.name(),
                        key_type.name()
                    )));
                }
                meta
            }
            None => {
                let meta = TableMeta::default();
                self.meta
                    .insert(&meta_key, meta.encode(key_type))
                    .map_err(storage_error)?;
                meta
            }
        };
        let indexes = self.indexes(name, &tree, index_paths, meta.count)?;
        let expiry = self
            .db
            .open_tree(format!("_expiry/{name}"))
            .map_err(storage_error)?;
        let id = {
            let mut ids = self
                .table_ids
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let id = ids
                .iter()
                .position(|known| **known == *name)
                .unwrap_or_else(|| {
                    ids.push(name.into());
                    ids.len() - 1
                });
            u32::try_from(id).map_err(|_| storage_failure("too many tables".to_owned()))?
        };
        Ok(Records {
            name: name.into(),
            id,
            hot: self.hot.clone(),
            key_type,
            tree,
            indexes: indexes.into(),
            expiry,
            meta: Arc::new(Mutex::new(meta)),
        })
    }

    /// Opens the index trees of a table, building the new ones and dropping the old ones.
    fn indexes(
        &self,
        table: &str,
        records: &sled::Tree,
        paths: &[String],
        count: u64,
    ) -> Result<Vec<Index>> {
        let list_key = format!("indexes/{table}").into_bytes();
        let built: BTreeSet<String> = match self.meta.get(&list_key).map_err(storage_error)? {
            Some(raw) => serde_json::from_slice(&raw).map_err(|e| {
                Error::Storage(Cause::of(format!("corrupt index list of `{table}`"), e))
            })?,
            None => BTreeSet::new(),
        };
        let tree_name = |path: &str| format!("_index/{table}/{path}");
        for gone in built.iter().filter(|p| !paths.contains(p)) {
            tracing::info!(table, index = %gone, "dropping an index no longer declared");
            self.db.drop_tree(tree_name(gone)).map_err(storage_error)?;
        }
        let mut indexes = Vec::new();
        let mut missing = Vec::new();
        for path in paths {
            let tree = self.db.open_tree(tree_name(path)).map_err(storage_error)?;
            let index = Index {
                path: path.split('.').map(str::to_owned).collect(),
                tree,
            };
            if !built.contains(path) {
                index.tree.clear().map_err(storage_error)?;
                missing.push(indexes.len());
            }
            indexes.push(index);
        }
        if !missing.is_empty() {
            let new: Vec<&Index> = missing.iter().map(|&i| &indexes[i]).collect();
            build(table, records, &new, count)?;
        }
        let list: BTreeSet<&String> = paths.iter().collect();
        let list = serde_json::to_vec(&list)
            .map_err(|e| Error::Internal(Cause::of("the index list did not encode", e)))?;
        self.meta.insert(list_key, list).map_err(storage_error)?;
        self.db.flush().map_err(storage_error)?;
        Ok(indexes)
    }

    /// Queues a mutation and waits until it is durable (or rejected).
    pub async fn commit(
        &self,
        records: &Records,
        target: Target,
        decide: Decide,
    ) -> Result<Commit> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            records: records.clone(),
            target,
            decide,
            reply,
        };
        self.commands
            .send(Command::Write(request))
            .map_err(|_| Error::ShuttingDown)?;
        answer.await.map_err(|_| Error::ShuttingDown)?
    }

    /// The sequence number of the last logged commit (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.log_last.load(Ordering::Acquire)
    }

    /// The durable logged changes after sequence number `after`, oldest first, at most `limit`;
    /// `None` if the log no longer holds every change after `after` (or never held them).
    pub fn changes_after(&self, after: u64, limit: usize) -> Result<Option<Vec<LoggedChange>>> {
        let last = self.last_seq();
        if after > last {
            return Ok(None);
        }
        let mut changes = Vec::new();
        let entries = self
            .log
            .range((after + 1).to_be_bytes()..=last.to_be_bytes())
            .take(limit);
        for (expected, entry) in (after + 1..).zip(entries) {
            let (seq, raw) = entry.map_err(storage_error)?;
            let seq = u64::from_be_bytes(
                seq.as_ref()
                    .try_into()
                    .map_err(|_| storage_failure("corrupt change log".to_owned()))?,
            );
            if seq != expected {
                // Trimmed past `after`: some changes are gone.
                return Ok(None);
            }
            changes.push(
                LoggedChange::decode(seq, &raw)
                    .ok_or_else(|| storage_failure(format!("corrupt change log entry {seq}")))?,
            );
        }
        if changes.is_empty() && after < last {
            return Ok(None);
        }
        Ok(Some(changes))
    }

    /// Commits what is queued, stops the writer and flushes. Later commits fail with `ShuttingDown`.
    pub fn close(&self) {
        let handle = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            let _ = self.commands.send(Command::Close);
            if handle.join().is_err() {
                tracing::error!("the writer thread panicked");
            }
        }
        if let Err(error) = self.db.flush() {
            tracing::error!(%error, "flush on close failed");
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

impl Records {
    /// Reads one record.
    pub fn get(&self, key: &Key) -> Result<Option<Envelope>> {
        let encoded = key.encode();
        self.hot.read(self.id, &encoded, || self.read(&encoded))
    }

    /// Records in key order (descending if `reverse`), strictly after `after` in that order if
    /// given, read lazily from disk.
    pub fn scan(
        &self,
        reverse: bool,
        after: Option<&Key>,
    ) -> impl Iterator<Item = Result<(Key, Envelope)>> + Send + use<> {
        let key_type = self.key_type;
        let entries = match after.map(Key::encode) {
            None => self.tree.iter(),
            Some(after) if reverse => self.tree.range(..after),
            Some(after) => self
                .tree
                .range::<Vec<u8>, _>((Bound::Excluded(after), Bound::Unbounded)),
        };
        let entries: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>> + Send> =
            if reverse {
                Box::new(entries.rev())
            } else {
                Box::new(entries)
            };
        entries.map(move |entry| {
            let (raw_key, raw) = entry.map_err(storage_error)?;
            let key = Key::decode(key_type, &raw_key)
                .ok_or_else(|| storage_failure("corrupt key".to_owned()))?;
            Ok((key, decode(raw)?))
        })
    }

    /// The encoded primary keys of the entries of the index on `path` within `range`, in index
    /// order (a record appears once per matching value), read lazily from either end; `None` if
    /// there is no such index.
    pub fn index_keys(
        &self,
        path: &[String],
        range: &IndexRange,
    ) -> Option<impl DoubleEndedIterator<Item = Result<Vec<u8>>> + Send + use<>> {
        let index = self.indexes.iter().find(|i| i.path == path)?;
        let entries = match range {
            IndexRange::Value(prefix) | IndexRange::Prefix(prefix) => {
                index.tree.scan_prefix(prefix)
            }
            IndexRange::Between(lower, upper) => index
                .tree
                .range::<Vec<u8>, _>((lower.clone(), upper.clone())),
        };
        Some(entries.map(|entry| {
            let (entry, _) = entry.map_err(storage_error)?;
            let at = index::value_len(&entry)
                .ok_or_else(|| storage_failure("corrupt index entry".to_owned()))?;
            Ok(entry[at..].to_vec())
        }))
    }

    /// Reads one record by its encoded key.
    pub fn get_encoded(&self, encoded: &[u8]) -> Result<Option<(Key, Envelope)>> {
        let Some(record) = self.hot.read(self.id, encoded, || self.read(encoded))? else {
            return Ok(None);
        };
        let key = Key::decode(self.key_type, encoded)
            .ok_or_else(|| storage_failure("corrupt key".to_owned()))?;
        Ok(Some((key, record)))
    }

    /// How many records the table holds.
    pub fn count(&self) -> u64 {
        self.meta_snapshot().count
    }

    /// Up to `limit` keys of records whose expiry time is at or before `now`, earliest first.
    pub fn expired(&self, now: u64, limit: usize) -> Result<Vec<Key>> {
        let due = ..writer::expiry_entry(now.saturating_add(1), &[]);
        self.expiry
            .range(due)
            .take(limit)
            .map(|entry| {
                let (entry, _) = entry.map_err(storage_error)?;
                Key::decode(self.key_type, &entry[8..])
                    .ok_or_else(|| storage_failure("corrupt expiry entry".to_owned()))
            })
            .collect()
    }

    /// Reads one record from sled, past the hot records: the writer's view.
    fn read(&self, encoded: &[u8]) -> Result<Option<Envelope>> {
        self.tree
            .get(encoded)
            .map_err(storage_error)?
            .map(decode)
            .transpose()
    }

    fn meta_key(&self) -> Vec<u8> {
        meta_key(&self.name)
    }

    fn meta_snapshot(&self) -> TableMeta {
        self.meta
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_meta(&self, meta: TableMeta) {
        *self.meta.lock().unwrap_or_else(PoisonError::into_inner) = meta;
    }
}

impl TableMeta {
    fn encode(&self, key_type: KeyType) -> Vec<u8> {
        let mut out = vec![key_type.tag()];
        out.extend_from_slice(&self.count.to_be_bytes());
        if let Some(max) = self.max_int {
            out.extend_from_slice(&max.to_be_bytes());
        }
        out
    }

    fn decode(raw: &[u8]) -> Option<(KeyType, TableMeta)> {
        let (&tag, rest) = raw.split_first()?;
        let (count, rest) = rest.split_first_chunk::<8>()?;
        let max_int = match rest {
            [] => None,
            _ => Some(i64::from_be_bytes(rest.try_into().ok()?)),
        };
        let meta = TableMeta {
            count: u64::from_be_bytes(*count),
            max_int,
        };
        Some((KeyType::from_tag(tag)?, meta))
    }
}

/// Fills new indexes from the records of `table`, in batches, logging progress.
fn build(table: &str, records: &sled::Tree, indexes: &[&Index], total: u64) -> Result<()> {
    const BATCH: usize = 10_000;
    let paths: Vec<String> = indexes.iter().map(|i| i.path.join(".")).collect();
    tracing::info!(table, indexes = ?paths, records = total, "building indexes");
    let mut batches: Vec<sled::Batch> = indexes.iter().map(|_| sled::Batch::default()).collect();
    let mut done = 0;
    for entry in records.iter() {
        let (key, raw) = entry.map_err(storage_error)?;
        let record = decode(raw)?;
        let value: serde_json::Value = serde_json::from_slice(&record.value)
            .map_err(|e| Error::Storage(Cause::of("a stored record is not JSON", e)))?;
        for (index, batch) in indexes.iter().zip(&mut batches) {
            for indexed in index::values(&value, &index.path) {
                batch.insert(index::entry(&indexed, &key), &[]);
            }
        }
        done += 1;
        if done % BATCH == 0 {
            for (index, batch) in indexes.iter().zip(&mut batches) {
                index
                    .tree
                    .apply_batch(std::mem::take(batch))
                    .map_err(storage_error)?;
            }
            if done % (10 * BATCH) == 0 {
                tracing::info!(table, done, total, "building indexes");
            }
        }
    }
    for (index, batch) in indexes.iter().zip(batches) {
        index.tree.apply_batch(batch).map_err(storage_error)?;
    }
    tracing::info!(table, records = done, "indexes built");
    Ok(())
}

/// Opens sled, waiting out a lock that is about to be released: a store of this process that was
/// just closed (sled's I/O threads let go of the file shortly after the last `Db` is dropped), or a
/// child process forked by another thread between its fork and its exec. sled reports the lock as
/// a plain I/O error, recognisable only by its message.
fn open_db(dir: &Path, cache_bytes: u64) -> Result<sled::Db> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .open()
        {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                if Instant::now() >= deadline {
                    return Err(storage_failure(format!(
                        "cannot open {}: another process is using this data directory",
                        dir.display()
                    )));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                return Err(Error::Storage(Cause::of(
                    format!("cannot open {}", dir.display()),
                    e,
                )));
            }
        }
    }
}

fn meta_key(table: &str) -> Vec<u8> {
    format!("table/{table}").into_bytes()
}

fn decode(raw: sled::IVec) -> Result<Envelope> {
    Envelope::decode(Bytes::from_owner(raw))
        .ok_or_else(|| storage_failure("corrupt record envelope".to_owned()))
}

fn storage_error(error: sled::Error) -> Error {
    Error::Storage(Cause::of("the database failed", error))
}

/// A storage failure described by `context` alone (corrupt data, typically).
fn storage_failure(context: impl Into<String>) -> Error {
    Error::Storage(Cause::new(context))
}
