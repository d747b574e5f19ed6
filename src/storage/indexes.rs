//! A table's secondary indexes: one tree each (`_index/<table>/<path>`, entries encoded by
//! [`index`](super::index)), opened at start, built from the records when newly declared, dropped
//! when no longer declared.

use std::collections::BTreeSet;
use std::ops::Bound;

use super::records::resolve;
use super::{index, meta, storage_error};
use crate::error::{Cause, Error, Result};

/// A secondary index: the attribute path it indexes and its tree.
pub(crate) struct Index {
    pub path: Vec<String>,
    pub tree: sled::Tree,
}

/// Which index entries to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IndexRange {
    /// Entries of exactly this value (its whole encoding): they are in primary key order.
    Value(Vec<u8>),
    /// Entries whose value encoding starts with these bytes.
    Prefix(Vec<u8>),
    /// Entries whose value encoding lies between these bounds.
    Between(Bound<Vec<u8>>, Bound<Vec<u8>>),
}

/// Opens the indexes on `paths` (dotted attribute paths) of `table`, whose records are in
/// `records` (its tree and the pieces tree; `count` of them): new ones are built before this returns (logging progress), and
/// the trees of indexes no longer declared are dropped.
pub(crate) fn open(
    db: &sled::Db,
    meta_tree: &sled::Tree,
    table: &str,
    records: (&sled::Tree, &sled::Tree),
    paths: &[String],
    count: u64,
) -> Result<Vec<Index>> {
    let list_key = meta::indexes_key(table);
    let built: BTreeSet<String> = match meta_tree.get(&list_key).map_err(storage_error)? {
        Some(raw) => serde_json::from_slice(&raw).map_err(|e| {
            Error::Storage(Cause::of(format!("corrupt index list of `{table}`"), e))
        })?,
        None => BTreeSet::new(),
    };
    let tree_name = |path: &str| format!("_index/{table}/{path}");
    for gone in built.iter().filter(|p| !paths.contains(p)) {
        tracing::info!(table, index = %gone, "dropping an index no longer declared");
        db.drop_tree(tree_name(gone)).map_err(storage_error)?;
    }
    let mut indexes = Vec::new();
    let mut missing = Vec::new();
    for path in paths {
        let tree = db.open_tree(tree_name(path)).map_err(storage_error)?;
        let index = Index {
            path: path.split('.').map(str::to_owned).collect(),
            tree,
        };
        if !built.contains(path) {
            index.tree.clear().map_err(storage_error)?;
            missing.push(indexes.len());
        }
        indexes.push(index);
    }
    if !missing.is_empty() {
        let new: Vec<&Index> = missing.iter().map(|&i| &indexes[i]).collect();
        build(table, records, &new, count)?;
    }
    let list: BTreeSet<&String> = paths.iter().collect();
    let list = serde_json::to_vec(&list)
        .map_err(|e| Error::Internal(Cause::of("the index list did not encode", e)))?;
    meta_tree.insert(list_key, list).map_err(storage_error)?;
    db.flush().map_err(storage_error)?;
    Ok(indexes)
}

/// Fills new indexes from the records of `table`, in batches, logging progress.
fn build(
    table: &str,
    records: (&sled::Tree, &sled::Tree),
    indexes: &[&Index],
    total: u64,
) -> Result<()> {
    const BATCH: usize = 10_000;
    let paths: Vec<String> = indexes.iter().map(|i| i.path.join(".")).collect();
    tracing::info!(table, indexes = ?paths, records = total, "building indexes");
    let mut batches: Vec<sled::Batch> = indexes.iter().map(|_| sled::Batch::default()).collect();
    let mut done = 0;
    for entry in records.0.iter() {
        let (key, raw) = entry.map_err(storage_error)?;
        let Some((record, _)) = resolve(records, &key, raw)? else {
            continue;
        };
        let value: serde_json::Value =
            serde_json::from_slice(&record.value).map_err(Error::stored_not_json)?;
        for (index, batch) in indexes.iter().zip(&mut batches) {
            for indexed in index::values(&value, &index.path) {
                batch.insert(index::entry(&indexed, &key), &[]);
            }
        }
        done += 1;
        if done % BATCH == 0 {
            for (index, batch) in indexes.iter().zip(&mut batches) {
                index
                    .tree
                    .apply_batch(std::mem::take(batch))
                    .map_err(storage_error)?;
            }
            if done % (10 * BATCH) == 0 {
                tracing::info!(table, done, total, "building indexes");
            }
        }
    }
    for (index, batch) in indexes.iter().zip(batches) {
        index.tree.apply_batch(batch).map_err(storage_error)?;
    }
    tracing::info!(table, records = done, "indexes built");
    Ok(())
}
