//! What a cache table keeps beside each record: its freshness and the origin's validators.

use bytes::{BufMut, Bytes, BytesMut};

use crate::storage::Stamp;

/// The encoding's version: 2 added `stamped_at`; 1 is still read.
const FORMAT: u8 = 2;

/// The longest validator kept: a header line's worth, which also keeps an entry's encoding
/// within what a change-log entry carries (64 KiB).
const MAX_VALIDATOR: usize = 8 << 10;

/// The cache metadata of one stored record. Times are ms since the Unix epoch; windows are ms.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    /// When the origin produced the stored answer (the fetch time less the origin's `Age`);
    /// the response's `Age` counts from here.
    pub fetched_at: u64,
    /// Until when the entry is fresh.
    pub fresh_until: u64,
    /// How long past `fresh_until` it is served while one background refresh runs.
    pub stale_while_revalidate: u64,
    /// How long past `fresh_until` it is served when the origin fails.
    pub stale_if_error: u64,
    /// The origin's `ETag`, sent back as `If-None-Match` to revalidate.
    pub etag: Option<String>,
    /// The origin's `Last-Modified`, sent back as `If-Modified-Since` to revalidate.
    pub last_modified: Option<String>,
    /// When the entry was last stamped, here or on another node (filled, revalidated, pushed
    /// or marked stale): of two stamps of one version of a record, the later one wins.
    pub stamped_at: u64,
}

impl Entry {
    /// The last moment any rule lets the entry be served; the sweeper removes it after that.
    pub fn last_usable(&self) -> u64 {
        self.fresh_until
            .saturating_add(self.stale_while_revalidate.max(self.stale_if_error))
    }

    /// The storage stamp: metadata plus the expiry time the sweeper acts on.
    pub fn stamp(&self) -> Stamp {
        Stamp {
            expires_at: Some(self.last_usable()),
            meta: self.encode(),
        }
    }

    fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(64);
        out.put_u8(FORMAT);
        out.put_u64(self.fetched_at);
        out.put_u64(self.fresh_until);
        out.put_u64(self.stale_while_revalidate);
        out.put_u64(self.stale_if_error);
        out.put_u64(self.stamped_at);
        for text in [&self.etag, &self.last_modified] {
            let text = text.as_deref().unwrap_or_default();
            // Validators longer than a header line are not worth keeping.
            let text = if text.len() > MAX_VALIDATOR { "" } else { text };
            out.put_u16(u16::try_from(text.len()).unwrap_or(0));
            out.put_slice(text.as_bytes());
        }
        out.freeze()
    }

    /// Decodes stored metadata; `None` if it is not a cache entry's (a record stored before the
    /// table became a cache, say), which the read path treats as expired.
    pub fn decode(raw: &[u8]) -> Option<Entry> {
        let (&format, mut rest) = raw.split_first()?;
        if format != 1 && format != FORMAT {
            return None;
        }
        let mut number = || {
            let (n, tail) = rest.split_first_chunk::<8>()?;
            rest = tail;
            Some(u64::from_be_bytes(*n))
        };
        let (fetched_at, fresh_until) = (number()?, number()?);
        let (stale_while_revalidate, stale_if_error) = (number()?, number()?);
        let stamped_at = match format {
            1 => fetched_at,
            _ => number()?,
        };
        let mut text = || {
            let (len, tail) = rest.split_first_chunk::<2>()?;
            let len = usize::from(u16::from_be_bytes(*len));
            let (text, tail) = (tail.get(..len)?, tail.get(len..)?);
            rest = tail;
            let text = std::str::from_utf8(text).ok()?;
            Some((!text.is_empty()).then(|| text.to_owned()))
        };
        let (etag, last_modified) = (text()?, text()?);
        Some(Entry {
            fetched_at,
            fresh_until,
            stale_while_revalidate,
            stale_if_error,
            etag,
            last_modified,
            stamped_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let entry = Entry {
            fetched_at: 1,
            fresh_until: 60_001,
            stale_while_revalidate: 30_000,
            stale_if_error: 600_000,
            etag: Some("\"v1\"".into()),
            last_modified: None,
            stamped_at: 2,
        };
        let stamp = entry.stamp();
        assert_eq!(stamp.expires_at, Some(660_001));
        assert_eq!(Entry::decode(&stamp.meta).as_ref(), Some(&entry));
        assert_eq!(Entry::decode(b""), None);
        assert_eq!(Entry::decode(&stamp.meta[..20]), None);
        // Format 1, without `stamped_at`: stamped when fetched.
        let mut first = stamp.meta[..33].to_vec();
        first[0] = 1;
        first.extend_from_slice(&stamp.meta[41..]);
        let read = Entry::decode(&first).expect("format 1 is read");
        assert_eq!((read.stamped_at, read.etag), (1, entry.etag));
    }
}
