//! A table's records: its tree of `encoded key -> envelope`, its indexes and its expiry list,
//! read straight from sled (or the hot records) from any thread. Writes go through the writer.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use serde_json::Value;

use super::envelope::Stored;
use super::hot::HotRecords;
use super::indexes::{Index, IndexRange};
use super::key::{Key, KeyType};
use super::meta::{self, TableMeta};
use super::mutation::{Change, Indexed, Prepared, Stamp};
use super::pieces::{self, Reference};
use super::{Envelope, decode, index, staged, storage_error, storage_failure};
use crate::error::{Error, Result};

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
    /// The pieces of records too large to keep in `tree`.
    pub(crate) pieces: sled::Tree,
    /// The most index entries one record may have, over all the table's indexes.
    pub(crate) max_index_entries: usize,
    /// `key -> version` of every record deleted, if the store keeps tombstones (it does when
    /// it replicates, so an older write arriving late does not bring a deleted record back).
    pub(crate) tombstones: Option<sled::Tree>,
    meta: Arc<Mutex<TableMeta>>,
}

impl Records {
    /// Table `name` of `db` to read its records only (no indexes, nothing written), if it was
    /// ever opened. See [`Store::records_to_read`](super::Store::records_to_read).
    pub(crate) fn open_to_read(
        db: &sled::Db,
        meta_tree: &sled::Tree,
        hot: Arc<HotRecords>,
        (name, id): (&str, u32),
    ) -> Result<Option<Records>> {
        let Some((key_type, count)) = TableMeta::stored(meta_tree, name)? else {
            return Ok(None);
        };
        let exists = |tree: &str| db.tree_names().iter().any(|t| t == tree.as_bytes());
        let expiry = format!("_expiry/{name}");
        if !exists(name) || !exists(pieces::TREE) || !exists(&expiry) {
            return Ok(None);
        }
        let open = |tree: &str| db.open_tree(tree).map_err(storage_error);
        Ok(Some(Records {
            name: name.into(),
            id,
            hot,
            key_type,
            tree: open(name)?,
            indexes: Arc::new([]),
            expiry: open(&expiry)?,
            pieces: open(pieces::TREE)?,
            max_index_entries: 0,
            tombstones: None,
            meta: Arc::new(Mutex::new(TableMeta {
                count,
                ..TableMeta::default()
            })),
        }))
    }

    /// Opens table `name` of `db`, known to the hot records as `id`. See
    /// [`Store::records`](super::Store::records).
    pub(crate) fn open(
        db: &sled::Db,
        meta_tree: &sled::Tree,
        hot: Arc<HotRecords>,
        (name, id): (&str, u32),
        key_type: KeyType,
        (index_paths, max_index_entries): (&[String], usize),
        keep_tombstones: bool,
    ) -> Result<Records> {
        let tree = db.open_tree(name).map_err(storage_error)?;
        let pieces = db.open_tree(pieces::TREE).map_err(storage_error)?;
        let meta = TableMeta::open(meta_tree, name, key_type)?;
        let records = (&tree, &pieces);
        let indexes = super::indexes::open(db, meta_tree, name, records, index_paths, meta.count)?;
        let expiry = db
            .open_tree(format!("_expiry/{name}"))
            .map_err(storage_error)?;
        let tombstones = keep_tombstones
            .then(|| db.open_tree(format!("_deleted/{name}")))
            .transpose()
            .map_err(storage_error)?;
        Ok(Records {
            name: name.into(),
            id,
            hot,
            key_type,
            tree,
            indexes: indexes.into(),
            expiry,
            pieces,
            max_index_entries,
            tombstones,
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
        let (key_type, tree, pieces) = (self.key_type, self.tree.clone(), self.pieces.clone());
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
        entries.filter_map(move |entry| {
            let scanned = entry.map_err(storage_error).and_then(|(raw_key, raw)| {
                let key = Key::decode(key_type, &raw_key)
                    .ok_or_else(|| storage_failure("corrupt key"))?;
                let record = resolve((&tree, &pieces), &raw_key, raw)?;
                Ok(record.map(|(record, _)| (key, record)))
            });
            scanned.transpose()
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
        let due = ..staged::expiry_entry(now.saturating_add(1), &[]);
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

    /// Does the work of `change` that needs no current record: serialises it and computes its
    /// index values, refusing a record with more index entries than a record may have.
    pub(crate) fn prepare(&self, change: Change) -> Result<Prepared> {
        Ok(match change {
            Change::Put(value, stamp) => self.prepare_put(&value, stamp, None)?,
            Change::Restamp(stamp) => Prepared::Restamp {
                stamp,
                replicated: false,
            },
            Change::RestampReplica(stamp) => Prepared::Restamp {
                stamp,
                replicated: true,
            },
            Change::Delete => Prepared::Delete { replicated: None },
            Change::Evict => Prepared::Evict,
            Change::Replicate(version, Some((value, stamp))) => {
                self.prepare_put(&value, stamp, Some(version))?
            }
            Change::Replicate(version, None) => Prepared::Delete {
                replicated: Some(version),
            },
        })
    }

    fn prepare_put(
        &self,
        value: &Value,
        stamp: Stamp,
        replicated: Option<u64>,
    ) -> Result<Prepared> {
        Ok(Prepared::Put {
            indexed: self.index_values(value)?,
            json: serde_json::to_vec(value)
                .expect("a JSON value serialises")
                .into(),
            stamp,
            replicated,
        })
    }

    /// The key a generated integer id takes (see [`Store::commit_ahead`](super::Store)), as the
    /// writer will choose it unless another write comes first.
    pub(crate) fn predict_next_integer(&self) -> Result<Key> {
        let meta = self.meta_snapshot();
        next_integer(&meta, |key| {
            self.tree.contains_key(key).map_err(storage_error)
        })
        .map(|(key, _)| key)
    }

    /// The values the table's indexes hold for `record`.
    pub(crate) fn indexed(&self, record: &Envelope) -> Result<Indexed> {
        if self.indexes.is_empty() {
            return Ok(Vec::new());
        }
        let value = serde_json::from_slice(&record.value).map_err(Error::stored_not_json)?;
        Ok(self.index_values_unbounded(&value))
    }

    fn index_values(&self, record: &Value) -> Result<Indexed> {
        let indexed = self.index_values_unbounded(record);
        let entries = indexed.iter().map(BTreeSet::len).sum();
        if entries > self.max_index_entries {
            return Err(Error::TooManyIndexEntries {
                table: self.name.to_string(),
                entries,
                limit: self.max_index_entries,
            });
        }
        Ok(indexed)
    }

    fn index_values_unbounded(&self, record: &Value) -> Indexed {
        let indexes = self.indexes.iter();
        indexes.map(|i| index::values(record, &i.path)).collect()
    }

    /// Reads one record about to be written: from the hot records if it is there, else from
    /// sled without keeping it (the write would make it stale at once).
    pub(crate) fn get_for_write(&self, key: &Key) -> Result<Option<Envelope>> {
        let encoded = key.encode();
        match self.hot.peek(self.id, &encoded) {
            Some(record) => Ok(Some(record)),
            None => self.read(&encoded),
        }
    }

    /// The version of the delete that removed the record under `encoded`, if tombstones are kept
    /// and one did.
    pub(crate) fn deleted(&self, encoded: &[u8]) -> Result<Option<u64>> {
        let Some(tombstones) = &self.tombstones else {
            return Ok(None);
        };
        let raw = tombstones.get(encoded).map_err(storage_error)?;
        raw.map(|raw| {
            raw.as_ref()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| storage_failure("corrupt tombstone"))
        })
        .transpose()
    }

    /// Reads one record from sled, past the hot records.
    pub(crate) fn read(&self, encoded: &[u8]) -> Result<Option<Envelope>> {
        Ok(self.read_stored(encoded)?.map(|(record, _)| record))
    }

    /// Reads one record from sled with where its pieces are, if it has any: the writer's view.
    pub(crate) fn read_stored(&self, encoded: &[u8]) -> Result<StoredRecord> {
        let raw = self.tree.get(encoded).map_err(storage_error)?;
        match raw {
            Some(raw) => resolve((&self.tree, &self.pieces), encoded, raw),
            None => Ok(None),
        }
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

/// The key a generated integer id takes in a table with metadata `meta`, and where the search for
/// the next one resumes: one above the highest integer key ever written, so ids are not reused,
/// or once that is `i64::MAX` (a client may PUT any key), the lowest one above `free_from` that
/// `taken` says is free. The search resumes where the last ended, so it passes each key once.
pub(crate) fn next_integer(
    meta: &TableMeta,
    taken: impl Fn(&[u8]) -> Result<bool>,
) -> Result<(Key, i64)> {
    match meta.max_int.map_or(Some(1), |n| n.checked_add(1)) {
        Some(next) => Ok((Key::Int(next), meta.free_from)),
        None => {
            let mut candidate = meta.free_from.max(1);
            while taken(&Key::Int(candidate).encode())? {
                candidate = candidate.checked_add(1).ok_or_else(|| Error::InvalidId {
                    id: i64::MAX.to_string(),
                    key_type: "integer",
                    reason: "every positive integer id is taken".to_owned(),
                })?;
            }
            Ok((Key::Int(candidate), candidate.saturating_add(1)))
        }
    }
}

/// A record as its tree holds it, and the reference to its pieces if it is in pieces.
pub(crate) type StoredRecord = Option<(Envelope, Option<Reference>)>;

/// The record that `raw`, read from `tree` under `encoded`, stands for; its pieces are read from
/// `pieces`. `None` if the record was removed meanwhile.
pub(crate) fn resolve(
    (tree, pieces): (&sled::Tree, &sled::Tree),
    encoded: &[u8],
    raw: sled::IVec,
) -> Result<StoredRecord> {
    let mut raw = Bytes::from_owner(raw);
    loop {
        let reference = match Stored::read(raw.clone()) {
            Some(Stored::Whole(encoded)) => return Ok(Some((decode(encoded)?, None))),
            Some(Stored::InPieces(reference)) => reference,
            None => return Err(storage_failure("corrupt record envelope")),
        };
        if let Some(encoded) = pieces::load(pieces, reference)? {
            return Ok(Some((decode(encoded)?, Some(reference))));
        }
        // Replaced or removed since `raw` was read: read it again.
        let Some(again) = tree.get(encoded).map_err(storage_error)? else {
            return Ok(None);
        };
        if again.as_ref() == &raw[..] {
            return Err(storage_failure("a record's pieces are missing"));
        }
        raw = Bytes::from_owner(again);
    }
}
