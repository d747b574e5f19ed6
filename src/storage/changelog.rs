//! The change log: every commit that changed a record (and, in a replicated store, every
//! restamp, for the other nodes), by sequence number, kept for a bounded number of entries so a
//! subscriber that was away can be told what it missed, and replication can publish it.
//!
//! Entries are `seq (u64 BE) -> table | key type | key | version | tag [| meta] | value`, where
//! the tag's low bits say what `value` is: `0` after a delete (none), `1` JSON, or `2` a
//! reference to JSON kept in [`pieces`](super::pieces); its high bits mark a change applied
//! from another node (`0x80`), one for this node only (`0x40`), a restamp (`0x20`, logged only
//! for replication), and one with the stamp's metadata (`0x10`, then `len (u16 BE) | meta`).
//! Each is written in the same
//! transaction as the change itself, so the log never disagrees with the tables. The writer
//! appends ([`ChangeLog`]); readers ask for what came after a sequence number
//! ([`changes_after`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::sync::watch;

use super::key::{Key, KeyType};
use super::mutation::Scope;
use super::pieces::{self, PIECE, Pieces, Reference};
use super::{storage_error, storage_failure};
use crate::error::Result;

/// Name of the change log's tree.
pub(crate) const TREE: &str = "_changes";

const DELETED: u8 = 0;
const WHOLE: u8 = 1;
const IN_PIECES: u8 = 2;
const KIND: u8 = 0x0f;
/// Marks the entry of a change made on another node.
const FROM_PEER: u8 = 0x80;
/// Marks the entry of a change made for this node only.
const NODE_ONLY: u8 = 0x40;
/// Marks the entry of a restamp.
const RESTAMP: u8 = 0x20;
/// Marks an entry that carries its stamp's metadata.
const WITH_META: u8 = 0x10;

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
    /// The metadata of the record's stamp after the change (a cache entry's freshness); empty
    /// for most records.
    pub meta: Bytes,
    /// Where the change was made, and who else is to learn of it.
    pub scope: Scope,
    /// Whether only the record's stamp changed; subscribers are not told of such entries.
    pub restamp: bool,
}

impl LoggedChange {
    /// The log's entry for this change; a value longer than a piece goes to `pieces`, and the
    /// entry holds its reference, returned beside it.
    pub(crate) fn encode(&self, pieces: &mut Pieces) -> (Vec<u8>, Option<Reference>) {
        let key = self.key.encode();
        let value = self.value.as_deref().unwrap_or_default();
        let inline = if value.len() <= PIECE { value.len() } else { 0 };
        let mut out = BytesMut::with_capacity(
            22 + self.table.len() + key.len() + self.meta.len() + inline + Reference::LEN,
        );
        out.put_u16(u16::try_from(self.table.len()).expect("table names are short"));
        out.put_slice(self.table.as_bytes());
        out.put_u8(match self.key.key_type() {
            KeyType::Integer => 0,
            KeyType::String => 1,
        });
        out.put_u16(u16::try_from(key.len()).expect("keys are at most 512 bytes"));
        out.put_slice(&key);
        out.put_u64(self.version);
        let mut reference = None;
        // Metadata stays far below 64 KiB (a cache entry's is at most about 16 KiB).
        let meta = u16::try_from(self.meta.len()).ok().filter(|&len| len > 0);
        let flags = match self.scope {
            Scope::Cluster => 0,
            Scope::Peer => FROM_PEER,
            Scope::Node => NODE_ONLY,
        } | if self.restamp { RESTAMP } else { 0 }
            | if meta.is_some() { WITH_META } else { 0 };
        let kind = match &self.value {
            None => DELETED,
            Some(value) if value.len() <= PIECE => WHOLE,
            Some(_) => IN_PIECES,
        };
        out.put_u8(kind | flags);
        if let Some(len) = meta {
            out.put_u16(len);
            out.put_slice(&self.meta);
        }
        match &self.value {
            None => {}
            Some(value) if value.len() <= PIECE => out.put_slice(value),
            Some(value) => {
                let stored = pieces.store(value);
                let mut encoded = Vec::with_capacity(Reference::LEN);
                stored.encode_into(&mut encoded);
                out.put_slice(&encoded);
                reference = Some(stored);
            }
        }
        (out.to_vec(), reference)
    }

    /// Decodes an entry. A change whose value is in pieces comes without it (`value` is `None`),
    /// and with the reference to them.
    pub(crate) fn decode(seq: u64, raw: &[u8]) -> Option<(LoggedChange, Option<Reference>)> {
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
        let tag = raw.try_get_u8().ok()?;
        let meta = match tag & WITH_META {
            0 => Bytes::new(),
            _ => {
                let len = usize::from(raw.try_get_u16().ok()?);
                Bytes::from(take(&mut raw, len)?)
            }
        };
        let (value, reference) = match tag & KIND {
            DELETED => (None, None),
            WHOLE => (Some(Bytes::copy_from_slice(raw)), None),
            IN_PIECES => (None, Some(Reference::decode(raw)?)),
            _ => return None,
        };
        let change = LoggedChange {
            seq,
            table: table.into(),
            key,
            version,
            value,
            meta,
            scope: match (tag & FROM_PEER, tag & NODE_ONLY) {
                (0, 0) => Scope::Cluster,
                (0, _) => Scope::Node,
                _ => Scope::Peer,
            },
            restamp: tag & RESTAMP != 0,
        };
        Some((change, reference))
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
    /// Entries after this one are kept whatever the retention: those replication has yet to
    /// publish (`u64::MAX` when the store does not replicate).
    unpublished_after: watch::Receiver<u64>,
}

/// The log entries of one batch: those it appends, and those it trims.
pub(crate) struct LogBatch {
    /// The writes to the log's tree.
    pub entries: sled::Batch,
    /// The sequence number of the batch's last entry.
    pub last: u64,
    /// The oldest entry kept once the batch is applied.
    keep_from: u64,
    /// The entries the batch appends whose values are in pieces, by sequence number.
    in_pieces: Vec<(u64, Reference)>,
}

impl ChangeLog {
    /// The log in `tree`, whose last written sequence number is in `last`, keeping the latest
    /// `retention` entries.
    /// Entries after the one in `unpublished_after` are kept whatever the retention.
    pub fn open(
        tree: sled::Tree,
        (last, unpublished_after): (Arc<AtomicU64>, watch::Receiver<u64>),
        retention: u64,
    ) -> Result<ChangeLog> {
        let first = match tree.first().map_err(storage_error)? {
            Some((seq, _)) => decode_seq(&seq)?,
            None => last.load(Ordering::Acquire) + 1,
        };
        Ok(ChangeLog {
            tree,
            last,
            first,
            retention,
            unpublished_after,
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
            in_pieces: Vec::new(),
        }
    }

    /// Adds to `batch` the removal of the entries beyond the retention, once it holds them all,
    /// and of their pieces.
    pub fn trim(&self, batch: &mut LogBatch, pieces: &mut Pieces) -> Result<()> {
        let unpublished = self.unpublished_after.borrow().saturating_add(1);
        batch.keep_from = (batch.last + 1)
            .saturating_sub(self.retention)
            .min(unpublished)
            .max(1);
        let applied = self.last.load(Ordering::Relaxed);
        for old in self.first..batch.keep_from {
            let seq = old.to_be_bytes();
            if old <= applied {
                let entry = self.tree.get(seq).map_err(storage_error)?;
                let reference = entry.and_then(|raw| LoggedChange::decode(old, &raw)?.1);
                reference.into_iter().for_each(|r| pieces.release(r));
            }
            batch.entries.remove(&seq);
        }
        let trimmed = batch
            .in_pieces
            .iter()
            .filter(|(seq, _)| *seq < batch.keep_from);
        trimmed.for_each(|(_, reference)| pieces.release(*reference));
        Ok(())
    }

    /// `batch` is durable: readers may see its entries.
    pub fn applied(&mut self, batch: &LogBatch) {
        self.first = self.first.max(batch.keep_from);
        self.last.store(batch.last, Ordering::Release);
    }
}

impl LogBatch {
    /// Appends `change`, numbered next (its `seq` is ignored); returns its sequence number.
    pub fn append(&mut self, mut logged: LoggedChange, pieces: &mut Pieces) -> u64 {
        self.last += 1;
        logged.seq = self.last;
        let (entry, reference) = logged.encode(pieces);
        if let Some(reference) = reference {
            self.in_pieces.push((self.last, reference));
        }
        self.entries.insert(&self.last.to_be_bytes(), entry);
        self.last
    }
}

/// The changes in `tree` (their values' pieces in `pieces`) after sequence number `after`, oldest
/// first, at most `limit`, when the last one written is `last`; `None` if the log no longer holds
/// every change after `after` (or never held them).
pub(crate) fn changes_after(
    (tree, pieces): (&sled::Tree, &sled::Tree),
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
        let (mut change, reference) = LoggedChange::decode(seq, &raw)
            .ok_or_else(|| storage_failure(format!("corrupt change log entry {seq}")))?;
        if let Some(reference) = reference {
            let Some(value) = pieces::load(pieces, reference)? else {
                // Trimmed since it was read.
                return Ok(None);
            };
            change.value = Some(value);
        }
        changes.push(change);
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
        let meta = Bytes::from_static(b"\x01fresh");
        for (key, value, scope, meta, restamp) in [
            (
                Key::Int(-7),
                Some(Bytes::from_static(br#"{"n":-7}"#)),
                Scope::Cluster,
                Bytes::new(),
                false,
            ),
            (
                Key::Str("a/b é".into()),
                None,
                Scope::Peer,
                meta.clone(),
                false,
            ),
            (
                Key::Str(String::new()),
                Some(Bytes::new()),
                Scope::Node,
                Bytes::new(),
                true,
            ),
            (
                Key::Int(3),
                Some(Bytes::from_static(b"{}")),
                Scope::Cluster,
                meta.clone(),
                true,
            ),
        ] {
            let change = LoggedChange {
                seq: 42,
                table: "Product".into(),
                key,
                version: u64::MAX - 1,
                value,
                meta,
                scope,
                restamp,
            };
            let (entry, reference) = change.encode(&mut Pieces::new(1));
            assert_eq!(reference, None);
            assert_eq!(LoggedChange::decode(42, &entry), Some((change, None)));
        }
        let large = LoggedChange {
            seq: 43,
            table: "Product".into(),
            key: Key::Int(1),
            version: 9,
            value: Some(vec![b'x'; PIECE + 1].into()),
            meta: meta.clone(),
            scope: Scope::Cluster,
            restamp: false,
        };
        let (entry, reference) = large.encode(&mut Pieces::new(1));
        let decoded = LoggedChange::decode(43, &entry).expect("decodes");
        assert_eq!(decoded.1, reference);
        assert_eq!((decoded.0.value, decoded.0.meta), (None, meta));
        assert_eq!(LoggedChange::decode(1, &[0, 9, b'x']), None);
    }
}
