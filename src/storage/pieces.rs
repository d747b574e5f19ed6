//! Large values, stored in pieces.
//!
//! sled 0.34 keeps a page larger than a quarter of its 512 KiB segment in a file of its own under
//! `blobs/`, and does not reliably delete that file when the page is rewritten or freed: one 1 MB
//! record overwritten 300 times left 300 files (300 MB), which neither a restart nor deleting the
//! record reclaimed, and a change log of 1 MB values leaked 3 MB per append. A leaf page holds up
//! to about 26 entries (16 before it splits, plus updates not yet merged into it), so no value that
//! storage hands sled is larger than [`PIECE`] bytes: a record or change-log value above that is
//! written to the `_pieces` tree as pieces under an id never used again, and its own tree holds a
//! [`Reference`] in its place. A reader that races with the value's replacement finds the pieces
//! gone (never a mix of two values) and reads the reference again.

use bytes::{Bytes, BytesMut};

use super::storage_error;
use crate::error::Result;

/// Name of the pieces' tree: `id (u64 BE) | index (u32 BE) -> piece`.
pub(crate) const TREE: &str = "_pieces";
/// The largest value kept in place, and the size of every piece but a value's last.
pub(crate) const PIECE: usize = 4096;

/// Where a value stored in pieces is, and how long it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Reference {
    id: u64,
    len: u64,
}

impl Reference {
    /// The encoded length.
    pub const LEN: usize = 16;

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.len.to_be_bytes());
    }

    pub fn decode(raw: &[u8]) -> Option<Reference> {
        let raw: &[u8; Self::LEN] = raw.try_into().ok()?;
        let (id, len) = raw.split_at(8);
        Some(Reference {
            id: u64::from_be_bytes(id.try_into().ok()?),
            len: u64::from_be_bytes(len.try_into().ok()?),
        })
    }

    fn pieces(&self) -> u32 {
        u32::try_from(self.len.div_ceil(PIECE as u64)).unwrap_or(u32::MAX)
    }
}

fn piece_key(id: u64, index: u32) -> [u8; 12] {
    let mut key = [0; 12];
    key[..8].copy_from_slice(&id.to_be_bytes());
    key[8..].copy_from_slice(&index.to_be_bytes());
    key
}

/// The writer's pieces for one batch: those it writes and those it removes.
pub(crate) struct Pieces {
    pub batch: sled::Batch,
    /// The id the next stored value gets; persisted with the batch.
    pub next_id: u64,
    /// Whether the batch stores or removes any piece (most write none).
    pub touched: bool,
}

impl Pieces {
    pub fn new(next_id: u64) -> Pieces {
        Pieces {
            batch: sled::Batch::default(),
            next_id,
            touched: false,
        }
    }

    /// Stores `value` in pieces under a new id.
    pub fn store(&mut self, value: &[u8]) -> Reference {
        let reference = Reference {
            id: self.next_id,
            len: value.len() as u64,
        };
        self.next_id += 1;
        self.touched = true;
        for (index, piece) in (0..).zip(value.chunks(PIECE)) {
            self.batch.insert(&piece_key(reference.id, index), piece);
        }
        reference
    }

    /// Removes the pieces of a value no longer referred to.
    pub fn release(&mut self, reference: Reference) {
        self.touched = true;
        for index in 0..reference.pieces() {
            self.batch.remove(&piece_key(reference.id, index));
        }
    }
}

/// The value `reference` names; `None` if its pieces are gone (the value was replaced or removed
/// since the reference was read).
pub(crate) fn load(tree: &sled::Tree, reference: Reference) -> Result<Option<Bytes>> {
    let mut value = BytesMut::with_capacity(usize::try_from(reference.len).unwrap_or(0));
    let pieces = tree.scan_prefix(reference.id.to_be_bytes());
    for (expected, piece) in (0..reference.pieces()).zip(pieces) {
        let (key, piece) = piece.map_err(storage_error)?;
        if key[8..] != expected.to_be_bytes() {
            return Ok(None);
        }
        value.extend_from_slice(&piece);
    }
    Ok((value.len() as u64 == reference.len).then(|| value.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, sled::Tree) {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let db = sled::Config::new().path(dir.path()).open().expect("opens");
        let tree = db.open_tree(TREE).expect("tree");
        (dir, tree)
    }

    #[test]
    fn values_of_every_length_round_trip_and_release_every_piece() {
        let (_dir, tree) = tree();
        let mut pieces = Pieces::new(7);
        let values: Vec<Vec<u8>> = [0, 1, PIECE - 1, PIECE, PIECE + 1, 5 * PIECE + 17]
            .iter()
            .map(|&len| (0..len).map(|i| (i % 251) as u8).collect())
            .collect();
        let references: Vec<Reference> = values.iter().map(|v| pieces.store(v)).collect();
        tree.apply_batch(std::mem::take(&mut pieces.batch))
            .expect("applies");
        for (value, reference) in values.iter().zip(&references) {
            let loaded = load(&tree, *reference).expect("reads").expect("complete");
            assert_eq!(&loaded[..], &value[..]);
            let mut encoded = Vec::new();
            reference.encode_into(&mut encoded);
            assert_eq!(Reference::decode(&encoded), Some(*reference));
        }
        for reference in &references {
            pieces.release(*reference);
        }
        tree.apply_batch(pieces.batch).expect("applies");
        assert!(tree.is_empty());
        let gone = references.iter().filter(|r| r.len > 0);
        for reference in gone {
            assert_eq!(load(&tree, *reference).expect("reads"), None);
        }
    }

    #[test]
    fn a_value_missing_a_piece_is_not_returned() {
        let (_dir, tree) = tree();
        let mut pieces = Pieces::new(1);
        let reference = pieces.store(&[1; 3 * PIECE]);
        tree.apply_batch(pieces.batch).expect("applies");
        tree.remove(piece_key(1, 1)).expect("removes");
        assert_eq!(load(&tree, reference).expect("reads"), None);
    }
}
