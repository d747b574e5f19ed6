//! Table metadata in the `_meta` tree: each table's key type, record count and highest integer
//! key (`table/<name>`), the list of its built indexes (`indexes/<name>`), and the store's own
//! counters: the highest version issued (`clock`) and the last change-log sequence number
//! (`change-seq`), the next id of a value in pieces (`piece-id`) and the last change-log
//! sequence number replication has published (`published-seq`); and the store's identity
//! (`store-id`), made when it is created.

use super::key::KeyType;
use super::{storage_error, storage_failure};
use crate::error::Result;

/// The metadata tree's name.
pub(crate) const TREE: &str = "_meta";
/// Key of the highest issued version.
pub(crate) const CLOCK_KEY: &[u8] = b"clock";
/// Key of the last change-log sequence number.
pub(crate) const LOG_KEY: &[u8] = b"change-seq";
/// Key of the id the next value stored in pieces gets.
pub(crate) const PIECE_KEY: &[u8] = b"piece-id";
/// Key of the last change-log sequence number replication has published.
pub(crate) const PUBLISHED_KEY: &[u8] = b"published-seq";
/// Key of the store's identity.
pub(crate) const ID_KEY: &[u8] = b"store-id";

/// The store's identity: read, or made (a UUID) if the store is new.
pub(crate) fn identity(meta: &sled::Tree) -> Result<String> {
    if let Some(raw) = meta.get(ID_KEY).map_err(storage_error)? {
        return String::from_utf8(raw.to_vec()).map_err(|_| storage_failure("corrupt store id"));
    }
    let id = uuid::Uuid::now_v7().to_string();
    meta.insert(ID_KEY, id.as_bytes()).map_err(storage_error)?;
    Ok(id)
}

/// Per-table facts kept current by the writer and persisted with every commit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TableMeta {
    pub count: u64,
    /// The highest integer key ever written (deleted keys included), so generated ids are never
    /// reused.
    pub max_int: Option<i64>,
    /// Once `max_int` is `i64::MAX`, where the search for a free integer key resumes; kept in
    /// memory only (after a restart the search starts again from 1).
    pub free_from: i64,
}

impl TableMeta {
    /// Reads the metadata of table `name`, creating it for a new table; fails if the table
    /// holds records under another key type.
    pub fn open(meta: &sled::Tree, name: &str, key_type: KeyType) -> Result<TableMeta> {
        let key = table_key(name);
        let Some(raw) = meta.get(&key).map_err(storage_error)? else {
            let fresh = TableMeta::default();
            meta.insert(&key, fresh.encode(key_type))
                .map_err(storage_error)?;
            return Ok(fresh);
        };
        let (stored_type, found) = TableMeta::decode(&raw)
            .ok_or_else(|| storage_failure(format!("corrupt metadata for table `{name}`")))?;
        if stored_type != key_type && found.count == 0 {
            // No record holds the old type: the table starts again under the new one.
            let fresh = TableMeta::default();
            meta.insert(&key, fresh.encode(key_type))
                .map_err(storage_error)?;
            return Ok(fresh);
        }
        if stored_type != key_type {
            return Err(storage_failure(format!(
                "table `{name}` holds records with {} keys but its schema now declares {} keys",
                stored_type.name(),
                key_type.name()
            )));
        }
        Ok(found)
    }

    /// The key type and record count of table `name`, if it was ever opened.
    pub fn stored(meta: &sled::Tree, name: &str) -> Result<Option<(KeyType, u64)>> {
        let Some(raw) = meta.get(table_key(name)).map_err(storage_error)? else {
            return Ok(None);
        };
        let (key_type, found) = TableMeta::decode(&raw)
            .ok_or_else(|| storage_failure(format!("corrupt metadata for table `{name}`")))?;
        Ok(Some((key_type, found.count)))
    }

    pub fn encode(&self, key_type: KeyType) -> Vec<u8> {
        let mut out = vec![key_type.tag()];
        out.extend_from_slice(&self.count.to_be_bytes());
        if let Some(max) = self.max_int {
            out.extend_from_slice(&max.to_be_bytes());
        }
        out
    }

    fn decode(raw: &[u8]) -> Option<(KeyType, TableMeta)> {
        let (&tag, rest) = raw.split_first()?;
        let (count, rest) = rest.split_first_chunk::<8>()?;
        let max_int = match rest {
            [] => None,
            _ => Some(i64::from_be_bytes(rest.try_into().ok()?)),
        };
        let meta = TableMeta {
            count: u64::from_be_bytes(*count),
            max_int,
            free_from: 1,
        };
        Some((KeyType::from_tag(tag)?, meta))
    }
}

/// The key of table `name`'s metadata.
pub(crate) fn table_key(name: &str) -> Vec<u8> {
    format!("table/{name}").into_bytes()
}

/// The key of table `name`'s list of built indexes.
pub(crate) fn indexes_key(name: &str) -> Vec<u8> {
    format!("indexes/{name}").into_bytes()
}

/// A counter of the store (0 if never written).
pub(crate) fn read_counter(meta: &sled::Tree, key: &[u8]) -> Result<u64> {
    match meta.get(key).map_err(storage_error)? {
        Some(raw) => raw
            .as_ref()
            .try_into()
            .map(u64::from_be_bytes)
            .map_err(|_| {
                storage_failure(format!(
                    "corrupt `{}` counter",
                    String::from_utf8_lossy(key)
                ))
            }),
        None => Ok(0),
    }
}
