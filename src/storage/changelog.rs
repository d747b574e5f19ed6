//! The change log: every commit that changed a record, by sequence number, kept for a bounded
//! number of entries so a subscriber that was away can be told what it missed.
//!
//! Entries are `seq (u64 BE) -> table | key type | key | version | value`, written in the same
//! transaction as the change itself, so the log never disagrees with the tables.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::key::{Key, KeyType};

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
