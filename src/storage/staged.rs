//! What one batch writes to one table: its records (in pieces where large), their index and
//! expiry entries, and its metadata, as the writer stages the batch's mutations one by one.

use std::collections::{BTreeMap, BTreeSet};

use super::envelope::Stored;
use super::hlc::Hlc;
use super::key::Key;
use super::meta::TableMeta;
use super::mutation::{Indexed, Prepared, Target};
use super::pieces::Pieces;
use super::records::{StoredRecord, next_integer};
use super::{Envelope, Records, index};
use crate::error::{Error, Result};

/// What a batch writes to one table.
pub(super) struct Staged {
    pub records: Records,
    pub batch: sled::Batch,
    /// The records `batch` writes, by encoded key, so later mutations of the batch see them
    /// (and the hot records forget them once applied).
    pub written: BTreeMap<Vec<u8>, StoredRecord>,
    /// One batch per index of the table, in the order of `records.indexes`.
    pub index_batches: Vec<sled::Batch>,
    /// Changes to the table's expiry tree, if any.
    pub expiry: Option<sled::Batch>,
    /// Changes to the table's tombstones, if it keeps them: the version of each delete staged
    /// (`None` once a later write of the batch brings the record back), by encoded key.
    pub tombstones: BTreeMap<Vec<u8>, Option<u64>>,
    pub meta: TableMeta,
}

impl Staged {
    pub fn new(records: &Records) -> Staged {
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
            tombstones: BTreeMap::new(),
        }
    }

    /// The key `target` names.
    pub fn key(&mut self, target: Target) -> Result<Key> {
        match target {
            Target::Key(key) => Ok(key),
            Target::NextInteger => {
                let taken = |encoded: &[u8]| Ok(self.current(encoded)?.is_some());
                let (key, free_from) = next_integer(&self.meta, taken)?;
                self.meta.free_from = free_from;
                Ok(key)
            }
        }
    }

    /// The record under `encoded` as the batch leaves it so far.
    pub fn current(&self, encoded: &[u8]) -> Result<StoredRecord> {
        match self.written.get(encoded) {
            Some(staged) => Ok(staged.clone()),
            None => self.records.read_stored(encoded),
        }
    }

    /// The version of the delete that removed the absent record under `encoded`, as the batch
    /// leaves it so far (see [`Records::deleted`]).
    pub fn deleted(&self, encoded: &[u8]) -> Result<Option<u64>> {
        match self.tombstones.get(encoded) {
            Some(staged) => Ok(*staged),
            None => self.records.deleted(encoded),
        }
    }

    /// The tombstone changes as a batch for the table's tombstone tree, if there are any.
    pub fn tombstone_batch(&self) -> Option<(sled::Tree, sled::Batch)> {
        if self.tombstones.is_empty() {
            return None;
        }
        let tree = self.records.tombstones.clone()?;
        let mut batch = sled::Batch::default();
        for (key, version) in &self.tombstones {
            match version {
                Some(version) => batch.insert(key.as_slice(), &version.to_be_bytes()),
                None => batch.remove(key.as_slice()),
            }
        }
        Some((tree, batch))
    }

    /// Stages `envelope` as the record under `encoded`.
    fn store(&mut self, encoded: &[u8], envelope: &Envelope, pieces: &mut Pieces) -> StoredRecord {
        let (stored, reference) = Stored::store(envelope, pieces);
        self.batch.insert(encoded, stored);
        Some((envelope.clone(), reference))
    }

    /// Stages `change` of the record `key` (encoded as `encoded`, now `current`, whose index
    /// values are `indexed_before` if known), at `now_ms` by `hlc`, its pieces in `pieces`;
    /// returns the commit's version and the record after it.
    pub fn change(
        &mut self,
        key: &Key,
        encoded: Vec<u8>,
        current: StoredRecord,
        (change, indexed_before): (Prepared, Option<Indexed>),
        (now_ms, hlc): (u64, &mut Hlc),
        pieces: &mut Pieces,
    ) -> Result<(u64, Option<Envelope>)> {
        let (current, old_pieces) = match current {
            Some((record, reference)) => (Some(record), reference),
            None => (None, None),
        };
        let indexed_before = match (indexed_before, &current) {
            (Some(indexed), _) => indexed,
            (None, Some(current)) if !matches!(change, Prepared::Restamp { .. }) => {
                self.records.indexed(current)?
            }
            (None, _) => Vec::new(),
        };
        let old_expiry = current.as_ref().and_then(|c| c.expires_at);
        let (version, stored) = match (change, current) {
            (
                Prepared::Put {
                    json,
                    indexed,
                    stamp,
                    replicated,
                },
                current,
            ) => {
                // A replicated commit keeps its version and the time it was made at.
                let (version, updated) = match replicated {
                    Some(version) => (hlc.observe(version), version >> 16),
                    None => (hlc.next(now_ms), now_ms),
                };
                if current.is_none() && self.deleted(&encoded)?.is_some() {
                    self.tombstones.insert(encoded.clone(), None);
                }
                let envelope = Envelope {
                    version,
                    created: current.as_ref().map_or(updated, |c| c.created),
                    updated,
                    expires_at: stamp.expires_at,
                    meta: stamp.meta,
                    value: json,
                };
                let stored = self.store(&encoded, &envelope, pieces);
                self.reindex(&encoded, &indexed_before, &indexed);
                self.reschedule(&encoded, old_expiry, envelope.expires_at);
                self.meta.count += u64::from(current.is_none());
                if let Key::Int(n) = key {
                    self.meta.max_int = Some(self.meta.max_int.map_or(*n, |m| m.max(*n)));
                }
                (envelope.version, stored)
            }
            (Prepared::Restamp { stamp, .. }, Some(current)) => {
                let envelope = Envelope {
                    expires_at: stamp.expires_at,
                    meta: stamp.meta,
                    ..current
                };
                let stored = self.store(&encoded, &envelope, pieces);
                self.reschedule(&encoded, old_expiry, envelope.expires_at);
                (envelope.version, stored)
            }
            (Prepared::Restamp { .. } | Prepared::Evict, None) => {
                return Err(Error::RecordNotFound {
                    table: self.records.name.to_string(),
                    id: key.to_string(),
                });
            }
            (Prepared::Delete { replicated }, current) => {
                self.batch.remove(encoded.clone());
                self.reindex(&encoded, &indexed_before, &Vec::new());
                self.reschedule(&encoded, old_expiry, None);
                self.meta.count -= u64::from(current.is_some());
                let version = match replicated {
                    Some(version) => hlc.observe(version),
                    None => hlc.next(now_ms),
                };
                if self.records.tombstones.is_some() {
                    self.tombstones.insert(encoded.clone(), Some(version));
                }
                (version, None)
            }
            (Prepared::Evict, Some(_)) => {
                self.batch.remove(encoded.clone());
                self.reindex(&encoded, &indexed_before, &Vec::new());
                self.reschedule(&encoded, old_expiry, None);
                self.meta.count -= 1;
                (hlc.next(now_ms), None)
            }
        };
        if let Some(reference) = old_pieces {
            pieces.release(reference);
        }
        let record = stored.as_ref().map(|(record, _)| record.clone());
        self.written.insert(encoded, stored);
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

    /// Moves the record's index entries from the values `before` to the values `after` (one set
    /// per index; none for an absent record).
    fn reindex(&mut self, key: &[u8], before: &Indexed, after: &Indexed) {
        let none = BTreeSet::new();
        for (i, batch) in self.index_batches.iter_mut().enumerate() {
            let old = before.get(i).unwrap_or(&none);
            let new = after.get(i).unwrap_or(&none);
            for value in old.difference(new) {
                batch.remove(index::entry(value, key));
            }
            for value in new.difference(old) {
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
