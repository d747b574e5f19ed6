//! Storage: the only module that uses sled.
//!
//! One sled tree per table holds `encoded key -> envelope`, one tree per secondary index
//! (`_index/<table>/<path>`) holds its [`index`] entries, and `_expiry/<table>` lists the records
//! that carry an expiry time, by that time, so due ones are found without a scan. The `_meta`
//! tree holds each table's metadata and the store's counters. All writes go through the
//! group-commit writer; reads go straight to sled (or the hot records) from any thread.
//!
//! | file | holds |
//! | --- | --- |
//! | `mod.rs` | [`Store`]: open, commit, the change log's reader, close |
//! | `records.rs` | [`Records`]: one table's reads |
//! | `mutation.rs` | the mutation contract: [`Target`], [`Decide`], [`Change`], [`Commit`] |
//! | `writer.rs` | the writer thread: batches, one transaction and one fsync each |
//! | `staged.rs` | what a batch writes to one table, staged mutation by mutation |
//! | `changelog.rs` | the change log: entries, the writer's end, the reader's query |
//! | `meta.rs`, `indexes.rs` | table metadata; opening, building and dropping indexes |
//! | `index.rs`, `key.rs`, `envelope.rs`, `hlc.rs` | encodings of index entries, keys, records; the version clock |
//! | `hot.rs` | the hot records: recently read envelopes kept decoded in memory |
//! | `keyspace.rs` | [`Keyspace`]: raw keys and values beside the tables (MQTT sessions) |
//! | `pieces.rs` | values too large for a sled page, kept in pieces in the `_pieces` tree |
//! | `tests.rs` | tests of the whole store: replication's tombstones, published cursor, versions |

mod changelog;
mod envelope;
mod hlc;
mod hot;
pub mod index;
mod indexes;
mod key;
mod keyspace;
mod meta;
mod mutation;
mod pieces;
mod records;
mod staged;
mod writer;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{oneshot, watch};

pub use changelog::LoggedChange;
pub use envelope::Envelope;
pub use indexes::IndexRange;
pub use key::{Key, KeyType};
pub use keyspace::Keyspace;
pub use mutation::{
    Change, Commit, Decide, DecideAhead, OnDurable, Scope, Stamp, Target, WriteContext,
};
pub use records::Records;

use crate::clock::Clock;
use crate::config::{DEFAULT_CHANGE_LOG, DEFAULT_MAX_INDEX_ENTRIES, DEFAULT_STORE_CACHE};
use crate::error::{Cause, Error, Result};
use changelog::ChangeLog;
use hot::HotRecords;
use mutation::{Ahead, Command, Prepared, Request};
use writer::Writer;

/// How a store is opened.
#[derive(Clone, Debug)]
pub struct Options {
    /// Memory for records: a quarter for hot records, the rest for sled's page cache.
    pub cache_bytes: u64,
    /// How many of the latest commits the change log keeps.
    pub change_log: u64,
    /// The time commits are stamped with.
    pub clock: Clock,
    /// The most index entries one record may have, over all its table's indexes.
    pub max_index_entries: usize,
    /// Whether the store's commits are replicated to other nodes: deletes then leave a
    /// tombstone with their version (see [`WriteContext::deleted`]), and the change log keeps
    /// every entry not yet published (see [`Store::published`]).
    pub replicated: bool,
    /// With replication, whether every local commit is answered only once the cluster's
    /// stream stores it, rather than once durable here (see [`Store::acknowledged`]).
    pub await_published: bool,
    /// How long a commit waits for the cluster's stream to store it, when it does.
    pub publish_patience: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            cache_bytes: DEFAULT_STORE_CACHE,
            change_log: DEFAULT_CHANGE_LOG,
            clock: Clock::system(),
            max_index_entries: DEFAULT_MAX_INDEX_ENTRIES,
            replicated: false,
            await_published: false,
            publish_patience: crate::config::DEFAULT_REPLICATION_TIMEOUT,
        }
    }
}

/// The database: a sled instance and its writer thread.
pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    log: sled::Tree,
    /// The pieces of large values, of records and of the change log.
    pieces: sled::Tree,
    /// The last change-log sequence number written.
    log_last: Arc<AtomicU64>,
    commands: mpsc::Sender<Command>,
    writer: Mutex<Option<JoinHandle<()>>>,
    hot: Arc<HotRecords>,
    /// Table names by the number that stands for them among the hot records.
    table_ids: Mutex<Vec<Arc<str>>>,
    clock: Clock,
    max_index_entries: usize,
    /// Made when the store was created (see [`Store::id`]).
    id: String,
    /// Whether the store's commits are replicated (see [`Options::replicated`]).
    replicated: bool,
    /// The last change-log sequence number published (`u64::MAX` unless replicated), watched
    /// by the change log's trimming and by the commits that wait for publication.
    published: watch::Sender<u64>,
    await_published: bool,
    publish_patience: Duration,
    /// Whether a commit failed in the store (see [`Store::failed`]).
    failed: Arc<AtomicBool>,
}

impl Store {
    /// Opens (or creates) the database in `dir` and starts its writer thread, which calls
    /// `on_durable` for every commit that changed a record, once it is on disk.
    pub fn open(dir: &Path, options: Options, on_durable: OnDurable) -> Result<Store> {
        let hot_bytes = options.cache_bytes / 4;
        let db = open_db(dir, options.cache_bytes - hot_bytes)?;
        let meta = db.open_tree(meta::TREE).map_err(storage_error)?;
        let id = meta::identity(&meta)?;
        let last_version = meta::read_counter(&meta, meta::CLOCK_KEY)?;
        let log_last = Arc::new(AtomicU64::new(meta::read_counter(&meta, meta::LOG_KEY)?));
        let log = db.open_tree(changelog::TREE).map_err(storage_error)?;
        let published = watch::Sender::new(match options.replicated {
            true => meta::read_counter(&meta, meta::PUBLISHED_KEY)?,
            false => u64::MAX,
        });
        let pieces = db.open_tree(pieces::TREE).map_err(storage_error)?;
        let next_piece_id = meta::read_counter(&meta, meta::PIECE_KEY)?.max(1);
        let failed = Arc::new(AtomicBool::new(false));
        let (commands, receiver) = mpsc::channel();
        let writer = Writer {
            db: db.clone(),
            meta: meta.clone(),
            hlc: hlc::Hlc::resume(last_version),
            clock: options.clock.clone(),
            on_durable,
            log: ChangeLog::open(
                log.clone(),
                (log_last.clone(), published.subscribe()),
                options.change_log,
            )?,
            pieces: pieces.clone(),
            next_piece_id,
            failed: failed.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("tablecast-writer".to_owned())
            .spawn(move || writer.run(receiver))
            .map_err(|e| Error::Storage(Cause::of("cannot start the writer thread", e)))?;
        Ok(Store {
            db,
            meta,
            log,
            pieces,
            log_last,
            commands,
            writer: Mutex::new(Some(handle)),
            hot: Arc::new(HotRecords::new(
                usize::try_from(hot_bytes).unwrap_or(usize::MAX),
            )),
            table_ids: Mutex::default(),
            clock: options.clock,
            max_index_entries: options.max_index_entries,
            id,
            replicated: options.replicated,
            published,
            await_published: options.await_published,
            publish_patience: options.publish_patience,
            failed,
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
        let id = self.table_id(name)?;
        Records::open(
            &self.db,
            &self.meta,
            self.hot.clone(),
            (name, id),
            key_type,
            (index_paths, self.max_index_entries),
            self.replicated,
        )
    }

    /// Table `name`'s records as they are, to read only: without its indexes, and without
    /// writing anything (`tablecast check`); `None` if the table was never opened.
    pub fn records_to_read(&self, name: &str) -> Result<Option<Records>> {
        let id = self.table_id(name)?;
        Records::open_to_read(&self.db, &self.meta, self.hot.clone(), (name, id))
    }

    /// The key type table `name` stores its records under and how many it holds, if it was
    /// ever opened.
    pub fn stored_key_type(&self, name: &str) -> Result<Option<(KeyType, u64)>> {
        meta::TableMeta::stored(&self.meta, name)
    }

    /// Table `name`'s number among the hot records, given when first asked for.
    fn table_id(&self, name: &str) -> Result<u32> {
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
        u32::try_from(id).map_err(|_| storage_failure("too many tables"))
    }

    /// The keyspace `name`, created if it is new.
    pub fn keyspace(&self, name: &str) -> Result<Keyspace> {
        Keyspace::open(&self.db, name)
    }

    /// Queues a mutation and waits until it is durable (or rejected).
    pub async fn commit(
        &self,
        records: &Records,
        target: Target,
        decide: Decide,
    ) -> Result<Commit> {
        self.send(records, target, decide, None).await
    }

    /// Like [`commit`](Store::commit), but decides the mutation here first, against the record as
    /// it is now, and does the costly part of the write here too (validation, serialisation,
    /// index values): the writer, which every write waits for, then only confirms that the record
    /// is still the one decided against, and decides again if it is not. One client's large
    /// records thus cost the writer no more than their share of its disk writes.
    pub async fn commit_ahead(
        &self,
        records: &Records,
        target: Target,
        decide: DecideAhead,
    ) -> Result<Commit> {
        let key = match &target {
            Target::Key(key) => key.clone(),
            Target::NextInteger => records.predict_next_integer()?,
        };
        let current = records.get_for_write(&key)?;
        let now_ms = self.clock.now_ms();
        let deleted = match current {
            None => records.deleted(&key.encode())?,
            Some(_) => None,
        };
        let context = WriteContext {
            key: &key,
            now_ms,
            deleted,
        };
        let change = decide(current.as_ref(), &context).and_then(|c| records.prepare(c));
        // The index values of the record decided against, for a change that moves its entries.
        let seen = match (current, &change) {
            (
                Some(current),
                Ok(Prepared::Put { .. } | Prepared::Delete { .. } | Prepared::Evict),
            ) => Some((current.version, records.indexed(&current)?)),
            (Some(current), _) => Some((current.version, Vec::new())),
            (None, _) => None,
        };
        let ahead = Ahead {
            key,
            seen,
            now_ms,
            change,
        };
        let again: Decide = Box::new(move |current, context| decide(current, context));
        self.send(records, target, again, Some(ahead)).await
    }

    async fn send(
        &self,
        records: &Records,
        target: Target,
        decide: Decide,
        ahead: Option<Ahead>,
    ) -> Result<Commit> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            records: records.clone(),
            target,
            decide,
            ahead,
            reply,
        };
        self.commands
            .send(Command::Write(Box::new(request)))
            .map_err(|_| Error::ShuttingDown)?;
        answer.await.map_err(|_| Error::ShuttingDown)?
    }

    /// `commit` once it may be acknowledged: if the store replicates and `cluster` or
    /// [`Options::await_published`] asks for it, once replication has published it (or
    /// [`Error::NotReplicated`] after [`Options::publish_patience`]: the commit stays durable
    /// here, and is published later); at once otherwise.
    pub async fn acknowledged(&self, commit: Commit, cluster: bool) -> Result<Commit> {
        let wait = self.replicated && (cluster || self.await_published);
        match commit.seq {
            Some(seq) if wait && commit.scope == Scope::Cluster => {
                self.published_through(seq, self.publish_patience).await?;
                Ok(commit)
            }
            _ => Ok(commit),
        }
    }

    /// The store's identity, made when it was created: tells the data a node holds now from
    /// what it held under the same name before (a directory wiped, or another one).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether the store's commits are replicated to other nodes.
    pub fn replicated(&self) -> bool {
        self.replicated
    }

    /// Waits until replication has published the change-log entries up to `seq`, for at most
    /// `patience` ([`Error::NotReplicated`] then).
    pub async fn published_through(&self, seq: u64, patience: Duration) -> Result<()> {
        let mut published = self.published.subscribe();
        let stored = published.wait_for(|&published| published >= seq);
        match tokio::time::timeout(patience, stored).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(Error::ShuttingDown),
            Err(_) => Err(Error::NotReplicated(patience)),
        }
    }

    /// Whether a commit has failed in the store (a full disk, say). sled refuses every write
    /// after a failed flush, so the store writes again only once the server restarts.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// The sequence number of the last logged commit (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.log_last.load(Ordering::Acquire)
    }

    /// The durable logged changes after sequence number `after`, oldest first, at most `limit`;
    /// `None` if the log no longer holds every change after `after` (or never held them).
    pub fn changes_after(&self, after: u64, limit: usize) -> Result<Option<Vec<LoggedChange>>> {
        changelog::changes_after((&self.log, &self.pieces), self.last_seq(), after, limit)
    }

    /// The last change-log sequence number replication has published (0 before the first):
    /// the log keeps every entry after it.
    pub fn published(&self) -> u64 {
        *self.published.borrow()
    }

    /// Records that the changes up to sequence number `seq` are published, so the log may trim
    /// them. Persisted without an fsync of its own: after a crash, at worst a few changes are
    /// published again, which their receivers recognise.
    pub fn set_published(&self, seq: u64) -> Result<()> {
        debug_assert!(self.replicated, "only a replicated store publishes");
        self.meta
            .insert(meta::PUBLISHED_KEY, &seq.to_be_bytes())
            .map_err(storage_error)?;
        self.published.send_replace(seq);
        Ok(())
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
                let context = format!("cannot open {}", dir.display());
                return Err(Error::Storage(Cause::of(context, e)));
            }
        }
    }
}

fn decode(raw: Bytes) -> Result<Envelope> {
    Envelope::decode(raw).ok_or_else(|| storage_failure("corrupt record envelope"))
}

fn storage_error(error: sled::Error) -> Error {
    let full = match &error {
        sled::Error::Io(io) => {
            use std::io::ErrorKind;
            matches!(io.kind(), ErrorKind::StorageFull | ErrorKind::FileTooLarge)
                || matches!(io.raw_os_error(), Some(27 | 28 | 122)) // EFBIG, ENOSPC, EDQUOT
        }
        _ => false,
    };
    match full {
        true => Error::DiskFull(Cause::of("the disk is full", error)),
        false => Error::Storage(Cause::of("the database failed", error)),
    }
}

/// A storage failure described by `context` alone (corrupt data, typically).
fn storage_failure(context: impl Into<String>) -> Error {
    Error::Storage(Cause::new(context))
}
