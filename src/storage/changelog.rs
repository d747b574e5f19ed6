//! The change log: every commit that changed a record, by sequence number, kept for a bounded
//! number of entries so a subscriber that was away can be told what it missed.
//!
//! Entries are `seq (u64 BE) -> table | key type | key | version | value`, written in the same
//! transaction as the change itself, so the log never disagrees with the tables. The writer
//! appends ([`ChangeLog`]); readers ask for what came after a sequence number
//! ([`changes_after`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::key::{Key, KeyType};
use super::{storage_error, storage_failure};
use crate::error::Result;

/// Name of the change log's tree.
pub(crate) const TREE: &str = "_changes";

/// One logged change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedChange {
    /// Position in the log: rises by one with every logged commit.
    pub seq: u64,
    /// The table changed.
    pub table: Arc<str>,
    /// The record's primary key.
    pub key: Key,
    /// The commit's version.
    pub version: u64,
    /// The record's JSON after the change; `None` after a delete.
    pub value: Option<Bytes>,
}

impl LoggedChange {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let key = self.key.encode();
        let value = self.value.as_deref().unwrap_or_default();
        let mut out = BytesMut::with_capacity(16 + self.table.len() + key.len() + value.len());
        out.put_u16(u16::try_from(self.table.len()).expect("table names are short"));
        out.put_slice(self.table.as_bytes());
        out.put_u8(match self.key.key_type() {
            KeyType::Integer => 0,
            KeyType::String => 1,
        });
        out.put_u16(u16::try_from(key.len()).expect("keys are at most 512 bytes"));
        out.put_slice(&key);
        out.put_u64(self.version);
        out.put_u8(u8::from(self.value.is_some()));
        out.put_slice(value);
        out.to_vec()
    }

    pub(crate) fn decode(seq: u64, raw: &[u8]) -> Option<LoggedChange> {
        let mut raw = raw;
        let take = |raw: &mut &[u8], n: usize| -> Option<Vec<u8>> {
            (raw.remaining() >= n).then(|| raw.copy_to_bytes(n).to_vec())
        };
        let table_len = usize::from(raw.try_get_u16().ok()?);
        let table = String::from_utf8(take(&mut raw, table_len)?).ok()?;
        let key_type = match raw.try_get_u8().ok()? {
            0 => KeyType::Integer,
            1 => KeyType::String,
            _ => return None,
        };
        let key_len = usize::from(raw.try_get_u16().ok()?);
        let key = Key::decode(key_type, &take(&mut raw, key_len)?)?;
        let version = raw.try_get_u64().ok()?;
        let value = match raw.try_get_u8().ok()? {
            0 => None,
            _ => Some(Bytes::copy_from_slice(raw)),
        };
        Some(LoggedChange {
            seq,
            table: table.into(),
            key,
            version,
            value,
        })
    }
}

/// The writer's end of the change log.
pub(crate) struct ChangeLog {
    tree: sled::Tree,
    /// The last sequence number written, shared with readers.
    last: Arc<AtomicU64>,
    /// The oldest sequence number possibly still in the tree.
    first: u64,
    /// How many entries to keep.
    retention: u64,
}

/// The log entries of one batch: those it appends, and those it trims.
pub(crate) struct LogBatch {
    /// The writes to the log's tree.
    pub entries: sled::Batch,
    /// The sequence number of the batch's last entry.
    pub last: u64,
    /// The oldest entry kept once the batch is applied.
    keep_from: u64,
}

impl ChangeLog {
    /// The log in `tree`, whose last written sequence number is in `last`, keeping the latest
    /// `retention` entries.
    pub fn open(tree: sled::Tree, last: Arc<AtomicU64>, retention: u64) -> Result<ChangeLog> {
        let first = match tree.first().map_err(storage_error)? {
            Some((seq, _)) => decode_seq(&seq)?,
            None => last.load(Ordering::Acquire) + 1,
        };
        Ok(ChangeLog {
            tree,
            last,
            first,
            retention,
        })
    }

    /// The log's tree, for the batch's transaction.
    pub fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    /// An empty batch, continuing after the last entry written.
    pub fn begin(&self) -> LogBatch {
        let last = self.last.load(Ordering::Relaxed);
        LogBatch {
            entries: sled::Batch::default(),
            last,
            keep_from: self.first,
        }
    }

    /// Adds to `batch` the removal of the entries beyond the retention, once it holds them all.
    pub fn trim(&self, batch: &mut LogBatch) {
        batch.keep_from = (batch.last + 1).saturating_sub(self.retention).max(1);
        for old in self.first..batch.keep_from {
            batch.entries.remove(&old.to_be_bytes());
        }
    }

    /// `batch` is durable: readers may see its entries.
    pub fn applied(&mut self, batch: &LogBatch) {
        self.first = self.first.max(batch.keep_from);
        self.last.store(batch.last, Ordering::Release);
    }
}

impl LogBatch {
    /// Appends a change of `key` in `table` at `version` (`value`: the record after it, `None`
    /// for a delete); returns its sequence number.
    pub fn append(&mut self, table: Arc<str>, key: Key, version: u64, value: Option<Bytes>) -> u64 {
        self.last += 1;
        let logged = LoggedChange {
            seq: self.last,
            table,
            key,
            version,
            value,
        };
        self.entries
            .insert(&self.last.to_be_bytes(), logged.encode());
        self.last
    }
}

/// The changes in `tree` after sequence number `after`, oldest first, at most `limit`, when the
/// last one written is `last`; `None` if the log no longer holds every change after `after` (or
/// never held them).
pub(crate) fn changes_after(
    tree: &sled::Tree,
    last: u64,
    after: u64,
    limit: usize,
) -> Result<Option<Vec<LoggedChange>>> {
    if after > last {
        return Ok(None);
    }
    let mut changes = Vec::new();
    let entries = tree
        .range((after + 1).to_be_bytes()..=last.to_be_bytes())
        .take(limit);
    for (expected, entry) in (after + 1..).zip(entries) {
        let (seq, raw) = entry.map_err(storage_error)?;
        let seq = decode_seq(&seq)?;
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

fn decode_seq(raw: &[u8]) -> Result<u64> {
    raw.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| storage_failure("corrupt change log"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        for (key, value) in [
            (Key::Int(-7), Some(Bytes::from_static(br#"{"n":-7}"#))),
            (Key::Str("a/b é".into()), None),
            (Key::Str(String::new()), Some(Bytes::new())),
        ] {
            let change = LoggedChange {
                seq: 42,
                table: "Product".into(),
                key,
                version: u64::MAX - 1,
                value,
            };
            assert_eq!(LoggedChange::decode(42, &change.encode()), Some(change));
        }
        assert_eq!(LoggedChange::decode(1, &[0, 9, b'x']), None);
    }
}
