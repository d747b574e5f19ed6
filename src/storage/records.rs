//! A table's records: its tree of `encoded key -> envelope`, its indexes and its expiry list,
//! read straight from sled (or the hot records) from any thread. Writes go through the writer.

use std::ops::Bound;
use std::sync::{Arc, Mutex, PoisonError};

use super::hot::HotRecords;
use super::indexes::{Index, IndexRange};
use super::key::{Key, KeyType};
use super::meta::{self, TableMeta};
use super::{Envelope, decode, index, storage_error, storage_failure, writer};
use crate::error::Result;

/// A table's records: a handle to its tree and index trees, cheap to clone.
#[derive(Clone)]
pub struct Records {
    pub(crate) name: Arc<str>,
    /// The table's number among the hot records.
    pub(crate) id: u32,
    pub(crate) hot: Arc<HotRecords>,
    pub(crate) key_type: KeyType,
    pub(crate) tree: sled::Tree,
    pub(crate) indexes: Arc<[Index]>,
    /// `expires_at ++ key` for every record that has an expiry time.
    pub(crate) expiry: sled::Tree,
    meta: Arc<Mutex<TableMeta>>,
}

impl Records {
    /// Opens table `name` of `db`, known to the hot records as `id`. See
    /// [`Store::records`](super::Store::records).
    pub(crate) fn open(
        db: &sled::Db,
        meta_tree: &sled::Tree,
        hot: Arc<HotRecords>,
        (name, id): (&str, u32),
        key_type: KeyType,
        index_paths: &[String],
    ) -> Result<Records> {
        let tree = db.open_tree(name).map_err(storage_error)?;
        let meta = TableMeta::open(meta_tree, name, key_type)?;
        let indexes = super::indexes::open(db, meta_tree, name, &tree, index_paths, meta.count)?;
        let expiry = db
            .open_tree(format!("_expiry/{name}"))
            .map_err(storage_error)?;
        Ok(Records {
            name: name.into(),
            id,
            hot,
            key_type,
            tree,
            indexes: indexes.into(),
            expiry,
            meta: Arc::new(Mutex::new(meta)),
        })
    }

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
            let key =
                Key::decode(key_type, &raw_key).ok_or_else(|| storage_failure("corrupt key"))?;
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
            let at =
                index::value_len(&entry).ok_or_else(|| storage_failure("corrupt index entry"))?;
            Ok(entry[at..].to_vec())
        }))
    }

    /// Reads one record by its encoded key.
    pub fn get_encoded(&self, encoded: &[u8]) -> Result<Option<(Key, Envelope)>> {
        let Some(record) = self.hot.read(self.id, encoded, || self.read(encoded))? else {
            return Ok(None);
        };
        let key =
            Key::decode(self.key_type, encoded).ok_or_else(|| storage_failure("corrupt key"))?;
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
                    .ok_or_else(|| storage_failure("corrupt expiry entry"))
            })
            .collect()
    }

    /// Reads one record from sled, past the hot records: the writer's view.
    pub(crate) fn read(&self, encoded: &[u8]) -> Result<Option<Envelope>> {
        self.tree
            .get(encoded)
            .map_err(storage_error)?
            .map(decode)
            .transpose()
    }

    /// The key of the table's metadata in the meta tree.
    pub(crate) fn meta_key(&self) -> Vec<u8> {
        meta::table_key(&self.name)
    }

    /// The table's metadata as the last commit left it.
    pub(crate) fn meta_snapshot(&self) -> TableMeta {
        self.meta
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records what a commit made of the table's metadata.
    pub(crate) fn set_meta(&self, meta: TableMeta) {
        *self.meta.lock().unwrap_or_else(PoisonError::into_inner) = meta;
    }
}
