//! The record envelope: what sled stores for each record.
//!
//! Format 1: `1 | version (8) | created (8) | updated (8) | expires_at (8, 0 = never) | JSON`.
//! Format 2 adds what the table's resource keeps beside the record (a cache entry's freshness
//! and origin validators): `2 | the same four fields | meta length (4) | meta | JSON`. Records
//! without metadata keep format 1, so plain tables pay nothing for it. An envelope longer than a
//! piece is kept in [`pieces`](super::pieces), and its tree holds `3 | reference` instead. All
//! integers are big-endian; times are Unix epoch milliseconds.

use bytes::Bytes;

use super::pieces::{PIECE, Pieces, Reference};

const PLAIN: u8 = 1;
const WITH_META: u8 = 2;
const IN_PIECES: u8 = 3;
const HEADER_LEN: usize = 1 + 8 * 4;

/// What a record's tree holds for it.
pub(crate) enum Stored {
    /// The encoded envelope.
    Whole(Bytes),
    /// Where the encoded envelope's pieces are.
    InPieces(Reference),
}

impl Stored {
    /// What the tree holds for `envelope`, storing its pieces in `pieces` if it needs them.
    pub fn store(envelope: &Envelope, pieces: &mut Pieces) -> (Vec<u8>, Option<Reference>) {
        let encoded = envelope.encode();
        if encoded.len() <= PIECE {
            return (encoded, None);
        }
        let reference = pieces.store(&encoded);
        let mut stored = vec![IN_PIECES];
        reference.encode_into(&mut stored);
        (stored, Some(reference))
    }

    /// Reads what a tree holds; `None` if it is not a record.
    pub fn read(raw: Bytes) -> Option<Stored> {
        match raw.first()? {
            &IN_PIECES => Reference::decode(&raw[1..]).map(Stored::InPieces),
            _ => Some(Stored::Whole(raw)),
        }
    }
}

/// A stored record with its metadata. `value` is the record's JSON exactly as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The hybrid-logical-clock version of the commit that wrote this record.
    pub version: u64,
    /// When the record was first created (ms since the Unix epoch).
    pub created: u64,
    /// When the record was last written (ms since the Unix epoch).
    pub updated: u64,
    /// When the record may be removed (ms since the Unix epoch), if ever.
    pub expires_at: Option<u64>,
    /// Metadata of the resource that owns the table, opaque to storage; empty for plain tables.
    pub meta: Bytes,
    /// The record's JSON bytes.
    pub value: Bytes,
}

impl Envelope {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 4 + self.meta.len() + self.value.len());
        out.push(if self.meta.is_empty() {
            PLAIN
        } else {
            WITH_META
        });
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.created.to_be_bytes());
        out.extend_from_slice(&self.updated.to_be_bytes());
        out.extend_from_slice(&self.expires_at.unwrap_or(0).to_be_bytes());
        if !self.meta.is_empty() {
            let len = u32::try_from(self.meta.len()).expect("record metadata is small");
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&self.meta);
        }
        out.extend_from_slice(&self.value);
        out
    }

    /// Decodes stored bytes without copying: `meta` and `value` share the buffer.
    pub(crate) fn decode(raw: Bytes) -> Option<Envelope> {
        if raw.len() < HEADER_LEN {
            return None;
        }
        let field = |i: usize| {
            let start = 1 + 8 * i;
            u64::from_be_bytes(raw[start..start + 8].try_into().expect("8-byte slice"))
        };
        let (meta, value) = match raw[0] {
            PLAIN => (Bytes::new(), raw.slice(HEADER_LEN..)),
            WITH_META => {
                let len = raw.get(HEADER_LEN..HEADER_LEN + 4)?;
                let len = usize::try_from(u32::from_be_bytes(len.try_into().ok()?)).ok()?;
                let start = HEADER_LEN + 4;
                let end = start.checked_add(len).filter(|&end| end <= raw.len())?;
                (raw.slice(start..end), raw.slice(end..))
            }
            _ => return None,
        };
        Some(Envelope {
            version: field(0),
            created: field(1),
            updated: field(2),
            expires_at: Some(field(3)).filter(|&t| t != 0),
            meta,
            value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(meta: &'static [u8]) -> Envelope {
        Envelope {
            version: 7 << 16,
            created: 1,
            updated: 2,
            expires_at: Some(3),
            meta: Bytes::from_static(meta),
            value: Bytes::from_static(br#"{"id":1}"#),
        }
    }

    #[test]
    fn round_trips_with_and_without_metadata() {
        for meta in [&b""[..], b"cache entry"] {
            let envelope = envelope(meta);
            let encoded = envelope.encode();
            assert_eq!(encoded[0], if meta.is_empty() { PLAIN } else { WITH_META });
            assert_eq!(Envelope::decode(encoded.into()), Some(envelope));
        }
    }

    #[test]
    fn rejects_truncated_or_unknown_format() {
        assert_eq!(Envelope::decode(Bytes::from_static(b"\x01short")), None);
        let mut raw = vec![9u8; HEADER_LEN + 2];
        raw[0] = 3;
        assert_eq!(Envelope::decode(raw.into()), None);
        let mut overlong = envelope(b"meta").encode();
        overlong.truncate(HEADER_LEN + 4 + 2);
        assert_eq!(Envelope::decode(overlong.into()), None);
    }
}
