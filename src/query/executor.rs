//! Running a bound query over a table: a lazy pipeline (index range or scan) -> filter -> offset
//! -> limit -> select, so memory stays flat however large the table. Sorting on anything but the
//! primary key has to see every match first; it holds at most [`MAX_SORTED`] records.

use std::cmp::Ordering;

use bytes::Bytes;
use serde_json::Value;

use super::evaluate::{by_keys, matches, project};
use super::planner::{self, Plan};
use super::{Filter, Query, SortKey};
use crate::error::{Cause, Error, QueryError, Result};
use crate::storage::{Envelope, IndexRange, Key};
use crate::table::Table;

/// The most matching records a sort on a non-key attribute holds in memory.
pub const MAX_SORTED: usize = 100_000;

/// One record of an answer.
pub struct ListedRecord {
    /// The record's primary key.
    pub key: Key,
    /// The version of the commit that wrote it (its `ETag`).
    pub version: u64,
    /// What to send for it.
    pub content: Content,
}

/// A record as sent: the stored bytes as they are, or a parsed (and maybe projected) value.
pub enum Content {
    /// Stored JSON, served without parsing.
    Stored(Bytes),
    /// A projected value.
    Value(Value),
}

/// The records of an answer, produced lazily.
pub type Listing = Box<dyn Iterator<Item = Result<ListedRecord>> + Send>;

/// A record on its way through the pipeline, parsed when something needs its fields.
type Candidate = (Key, u64, Bytes, Option<Value>);

/// Whether the answer is in primary key order, and which way (`Some(true)`: descending).
pub fn key_order(table: &Table, query: &Query) -> Option<bool> {
    let primary_key = &table.schema().settings.primary_key;
    match &query.sort[..] {
        [] => Some(false),
        [
            SortKey {
                path, descending, ..
            },
        ] if path.len() == 1 && path[0] == *primary_key => Some(*descending),
        _ => None,
    }
}

/// Runs `query` (already bound to the table's schema) over `table`.
pub fn execute(table: &Table, query: Query) -> Result<Listing> {
    let key_order = key_order(table, &query);
    let needs_value = query.filter.is_some() || query.select.is_some() || key_order.is_none();
    let matching = candidates(table, &query, key_order, needs_value)?;
    let Query {
        select,
        sort,
        offset,
        limit,
        ..
    } = query;
    let ordered: Box<dyn Iterator<Item = Result<Candidate>> + Send> = match key_order {
        Some(_) => Box::new(matching),
        None => Box::new(sorted(matching, &sort)?.into_iter().map(Ok)),
    };
    let page = ordered.skip(offset).take(limit.unwrap_or(usize::MAX));
    Ok(Box::new(page.map(move |candidate| {
        let (key, version, stored, value) = candidate?;
        let content = match (&select, value) {
            (Some(select), Some(value)) => Content::Value(project(select, &value)),
            _ => Content::Stored(stored),
        };
        Ok(ListedRecord {
            key,
            version,
            content,
        })
    })))
}

/// How many records match `query`, ignoring its paging.
pub fn count(table: &Table, query: &Query) -> Result<u64> {
    if query.filter.is_none() && query.after.is_none() {
        return Ok(table.count());
    }
    let order = key_order(table, query).unwrap_or(false);
    candidates(table, query, Some(order), query.filter.is_some())?
        .try_fold(0, |n, candidate| candidate.map(|_| n + 1))
}

/// The records that match, in key order (`reverse`: descending) from `after(...)` on.
fn candidates(
    table: &Table,
    query: &Query,
    key_order: Option<bool>,
    needs_value: bool,
) -> Result<impl Iterator<Item = Result<Candidate>> + Send + use<>> {
    let reverse = key_order.unwrap_or(false);
    let after = match &query.after {
        None => None,
        Some((id, position)) => {
            if key_order.is_none() {
                return Err(Error::BadQuery(QueryError {
                    position: *position,
                    token: id.clone(),
                    expected: "after() only in key order: without sort(), or with sort() on the primary key".to_owned(),
                }));
            }
            Some(table.parse_id(id).map_err(|e| {
                Error::BadQuery(QueryError {
                    position: *position,
                    token: id.clone(),
                    expected: e.to_string(),
                })
            })?)
        }
    };
    let plan = planner::plan(query.filter.as_ref(), |path, range, cap| {
        table
            .index_keys(path, range)
            .map(|keys| keys.take(cap).count())
    });
    tracing::debug!(table = table.name(), ?plan, "query plan");
    let records: Box<dyn Iterator<Item = Result<(Key, Envelope)>> + Send> = match plan {
        Plan::Scan => Box::new(table.scan(reverse, after.as_ref())),
        Plan::Index { path, range } => {
            Box::new(indexed(table, &path, &range, reverse, after.as_ref())?)
        }
    };
    let filter: Option<Filter> = query.filter.clone();
    Ok(records
        .map(move |entry| {
            let (key, record) = entry?;
            let value = match needs_value {
                true => Some(
                    serde_json::from_slice::<Value>(&record.value)
                        .map_err(Error::stored_not_json)?,
                ),
                false => None,
            };
            Ok((key, record.version, record.value, value))
        })
        .filter(move |candidate| match (candidate, &filter) {
            (Ok((_, _, _, Some(value))), Some(filter)) => matches(filter, value),
            _ => true,
        }))
}

/// The records an index range names, in key order (each once, however many of its values
/// match), after `after` if given.
fn indexed(
    table: &Table,
    path: &[String],
    range: &IndexRange,
    reverse: bool,
    after: Option<&Key>,
) -> Result<impl Iterator<Item = Result<(Key, Envelope)>> + Send + use<>> {
    let entries = table
        .index_keys(path, range)
        .ok_or_else(|| Error::Internal(Cause::new(format!("no index on {}", path.join(".")))))?;
    let after = after.map(Key::encode);
    let past_after = move |key: &[u8]| match &after {
        Some(after) if reverse => key < after.as_slice(),
        Some(after) => key > after.as_slice(),
        None => true,
    };
    let not_yet_after = {
        let past_after = past_after.clone();
        move |key: &Result<Vec<u8>>| key.as_ref().is_ok_and(|key| !past_after(key))
    };
    let keys: Box<dyn Iterator<Item = Result<Vec<u8>>> + Send> = match range {
        // One value's entries are already in key order, each key once: streaming them lets a
        // limit stop the read early.
        IndexRange::Value(_) if reverse => Box::new(entries.rev().skip_while(not_yet_after)),
        IndexRange::Value(_) => Box::new(entries.skip_while(not_yet_after)),
        _ => {
            let mut keys = entries.collect::<Result<Vec<_>>>()?;
            keys.retain(|key| past_after(key));
            keys.sort_unstable();
            keys.dedup();
            if reverse {
                keys.reverse();
            }
            Box::new(keys.into_iter().map(Ok))
        }
    };
    Ok(table.records_by_keys(keys))
}

fn sorted(
    matching: impl Iterator<Item = Result<Candidate>>,
    sort: &[SortKey],
) -> Result<Vec<Candidate>> {
    let mut held = Vec::new();
    for candidate in matching {
        held.push(candidate?);
        if held.len() > MAX_SORTED {
            return Err(Error::BadQuery(QueryError {
                position: sort.first().map_or(0, |k| k.position),
                token: sort.first().map(|k| k.path.join(".")).unwrap_or_default(),
                expected: format!(
                    "a sort over at most {MAX_SORTED} matching records: add conditions, or sort by the primary key"
                ),
            }));
        }
    }
    held.sort_by(|(_, _, _, a), (_, _, _, b)| match (a, b) {
        (Some(a), Some(b)) => by_keys(sort, a, b),
        _ => Ordering::Equal,
    });
    Ok(held)
}
