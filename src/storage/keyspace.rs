//! Keyspaces: trees of raw keys and values kept beside the tables, for state that is not
//! records (MQTT's persistent sessions). They are written directly, not through the writer: no
//! versions, no change log, no replication. A write is on disk after the next flush, which every
//! commit of the writer also does, or after [`Keyspace::flush`].

use super::storage_error;
use crate::error::Result;

/// The prefix of every keyspace's tree, which no table's tree shares (table names cannot
/// start with `_`).
const PREFIX: &str = "_keyspace/";

/// One keyspace; cloning shares it.
#[derive(Clone)]
pub struct Keyspace {
    db: sled::Db,
    tree: sled::Tree,
}

impl Keyspace {
    pub(super) fn open(db: &sled::Db, name: &str) -> Result<Keyspace> {
        let tree = db
            .open_tree(format!("{PREFIX}{name}"))
            .map_err(storage_error)?;
        Ok(Keyspace {
            db: db.clone(),
            tree,
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

    /// Waits until what was written before the call is on disk.
    pub async fn flush(&self) -> Result<()> {
        self.db.flush_async().await.map_err(storage_error)?;
        Ok(())
    }
}
