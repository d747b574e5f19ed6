//! Keyspaces: trees of raw keys and values kept beside the tables, for state that is not
//! records (MQTT's persistent sessions). They are written directly, not through the writer: no
//! versions, no change log, no replication. A write is on disk after the next flush, which every
//! commit of the writer also does, or after [`Keyspace::flush`], which callers share: one
//! fsync covers every write made before it began (group commit).

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use super::{storage_error, storage_failure};
use crate::error::Result;

/// The prefix of every keyspace's tree, which no table's tree shares (table names cannot
/// start with `_`).
const PREFIX: &str = "_keyspace/";

/// One keyspace; cloning shares it.
#[derive(Clone)]
pub struct Keyspace {
    db: sled::Db,
    tree: sled::Tree,
    flushes: Arc<Flushes>,
}

/// The flushes asked for and done, numbered in the order they were asked for.
#[derive(Default)]
struct Flushes {
    state: Mutex<FlushState>,
    finished: Notify,
}

#[derive(Default)]
struct FlushState {
    asked: u64,
    /// Every flush up to this one is done.
    done: u64,
    /// The flushes up to this one failed.
    failed: u64,
    running: bool,
}

impl Keyspace {
    pub(super) fn open(db: &sled::Db, name: &str) -> Result<Keyspace> {
        let tree = db
            .open_tree(format!("{PREFIX}{name}"))
            .map_err(storage_error)?;
        Ok(Keyspace {
            db: db.clone(),
            tree,
            flushes: Arc::default(),
        })
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let value = self.tree.get(key).map_err(storage_error)?;
        Ok(value.map(|v| v.to_vec()))
    }

    pub fn insert(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.tree.insert(key, value).map_err(storage_error)?;
        Ok(())
    }

    pub fn remove(&self, key: &[u8]) -> Result<()> {
        self.tree.remove(key).map_err(storage_error)?;
        Ok(())
    }

    /// Writes (`Some`) and removes (`None`) these entries at once.
    pub fn apply(
        &self,
        changes: impl IntoIterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<()> {
        let mut batch = sled::Batch::default();
        for (key, value) in changes {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        self.tree.apply_batch(batch).map_err(storage_error)
    }

    /// The entries whose keys start with `prefix`, in key order.
    pub fn scan(&self, prefix: &[u8]) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> {
        self.tree.scan_prefix(prefix).map(|entry| {
            entry
                .map(|(key, value)| (key.to_vec(), value.to_vec()))
                .map_err(storage_error)
        })
    }

    /// The first entry whose key starts with `prefix`.
    pub fn first(&self, prefix: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.scan(prefix).next().transpose()
    }

    /// Removes every entry whose key starts with `prefix`.
    pub fn remove_all(&self, prefix: &[u8]) -> Result<()> {
        for entry in self.tree.scan_prefix(prefix).keys() {
            self.tree
                .remove(entry.map_err(storage_error)?)
                .map_err(storage_error)?;
        }
        Ok(())
    }

    /// Waits until what was written before the call is on disk. A caller that comes while a
    /// flush runs waits for the next one, which covers everyone waiting by then.
    pub async fn flush(&self) -> Result<()> {
        let flushes = &self.flushes;
        let lock = || flushes.state.lock().unwrap_or_else(PoisonError::into_inner);
        let ticket = {
            let mut state = lock();
            state.asked += 1;
            state.asked
        };
        loop {
            let finished = flushes.finished.notified();
            tokio::pin!(finished);
            finished.as_mut().enable();
            {
                let mut state = lock();
                if state.done >= ticket {
                    return Ok(());
                }
                if state.failed >= ticket {
                    return Err(storage_failure("a flush of the store failed"));
                }
                if !state.running {
                    state.running = true;
                    // On a task of its own: the flush finishes, and the others learn of it,
                    // even if this caller goes away.
                    tokio::spawn(run_flush(self.db.clone(), flushes.clone(), state.asked));
                }
            }
            finished.await;
        }
    }
}

/// Flushes `db` for the callers up to `through`, and tells them.
async fn run_flush(db: sled::Db, flushes: Arc<Flushes>, through: u64) {
    let flushed = db.flush_async().await;
    if let Err(error) = &flushed {
        tracing::error!(%error, "a flush of the store failed");
    }
    {
        let mut state = flushes.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.running = false;
        match flushed {
            Ok(_) => state.done = through,
            Err(_) => state.failed = through,
        }
    }
    flushes.finished.notify_waiters();
}

#[cfg(test)]
mod tests {
    use crate::storage::Store;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_flushes_all_finish() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let store = Store::open(dir.path(), Default::default(), Box::new(|_| {})).expect("opens");
        let keyspace = store.keyspace("test").expect("a keyspace");
        let mut flushes = Vec::new();
        for n in 0..200u32 {
            keyspace.insert(&n.to_be_bytes(), b"value").expect("insert");
            let keyspace = keyspace.clone();
            flushes.push(tokio::spawn(async move { keyspace.flush().await }));
        }
        for flush in flushes {
            flush.await.expect("joins").expect("flushed");
        }
        let state = keyspace.flushes.state.lock().unwrap();
        assert_eq!(state.done, 200, "every caller's flush is done");
        assert!(!state.running);
        assert_eq!(keyspace.scan(b"").count(), 200);
    }
}
