//! The record envelope: what sled stores for each record.
//!
//! Layout: `format (1) | version (8) | created (8) | updated (8) | expires_at (8, 0 = never) | JSON`.
//! All integers are big-endian; times are Unix epoch milliseconds. The leading format byte lets a
//! later release add fields (origin validators for cache tables) without rewriting old records.

use bytes::Bytes;

const FORMAT: u8 = 1;
const HEADER_LEN: usize = 1 + 8 * 4;

/// A stored record with its metadata. `value` is the record's JSON exactly as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The hybrid-logical-clock version of the commit that wrote this record.
    pub version: u64,
    /// When the record was first created (ms since the Unix epoch).
    pub created: u64,
    /// When the record was last written (ms since the Unix epoch).
    pub updated: u64,
    /// When the record stops being served (ms since the Unix epoch), if ever.
    pub expires_at: Option<u64>,
    /// The record's JSON bytes.
    pub value: Bytes,
}

impl Envelope {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.value.len());
        out.push(FORMAT);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.created.to_be_bytes());
        out.extend_from_slice(&self.updated.to_be_bytes());
        out.extend_from_slice(&self.expires_at.unwrap_or(0).to_be_bytes());
        out.extend_from_slice(&self.value);
        out
    }

    /// Decodes stored bytes without copying the JSON: `value` shares the buffer.
    pub(crate) fn decode(raw: Bytes) -> Option<Envelope> {
        if raw.len() < HEADER_LEN || raw[0] != FORMAT {
            return None;
        }
        let field = |i: usize| {
            let start = 1 + 8 * i;
            u64::from_be_bytes(raw[start..start + 8].try_into().expect("8-byte slice"))
        };
        Some(Envelope {
            version: field(0),
            created: field(1),
            updated: field(2),
            expires_at: Some(field(3)).filter(|&t| t != 0),
            value: raw.slice(HEADER_LEN..),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let envelope = Envelope {
            version: 7 << 16,
            created: 1,
            updated: 2,
            expires_at: Some(3),
            value: Bytes::from_static(br#"{"id":1}"#),
        };
        assert_eq!(Envelope::decode(envelope.encode().into()), Some(envelope));
    }

    #[test]
    fn rejects_truncated_or_unknown_format() {
        assert_eq!(Envelope::decode(Bytes::from_static(b"\x01short")), None);
        let mut raw = vec![9u8; HEADER_LEN + 2];
        raw[0] = 2;
        assert_eq!(Envelope::decode(raw.into()), None);
    }
}
