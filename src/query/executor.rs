//! Running a bound query over a table: a lazy pipeline scan -> filter -> offset -> limit ->
//! select, so memory stays flat however large the table. Sorting on anything but the primary key
//! has to see every match first; it holds at most [`MAX_SORTED`] records.

use bytes::Bytes;
use serde_json::Value;

use super::filter::{lookup, matches, project, sort_order};
use super::planner::{self, Plan};
use super::{Query, SortKey};
use crate::error::{Error, QueryError, Result};
use crate::storage::{Envelope, IndexRange, Key};
use crate::table::Table;

/// The most matching records a sort on a non-key attribute holds in memory.
pub const MAX_SORTED: usize = 100_000;

/// One record of an answer: the stored bytes as they are, or a parsed (and maybe projected) value.
pub enum Row {
    /// Stored JSON, served without parsing.
    Stored(Bytes),
    /// A parsed or projected value.
    Value(Value),
}

/// The rows of an answer, produced lazily.
pub type Rows = Box<dyn Iterator<Item = Result<Row>> + Send>;

/// Runs `query` (already bound to the table's schema) over `table`.
pub fn execute(table: &Table, query: Query) -> Result<Rows> {
    let Query {
        filter,
        select,
        sort,
        offset,
        limit,
    } = query;
    let primary_key = &table.schema().settings.primary_key;
    let key_order = match &sort[..] {
        [] => Some(false),
        [
            SortKey {
                path, descending, ..
            },
        ] if path.len() == 1 && path[0] == *primary_key => Some(*descending),
        _ => None,
    };
    let needs_value = filter.is_some() || select.is_some() || key_order.is_none();
    let reverse = key_order.unwrap_or(false);
    let plan = planner::plan(filter.as_ref(), |path, range, cap| {
        table
            .index_keys(path, range)
            .map(|keys| keys.take(cap).count())
    });
    tracing::debug!(table = table.name(), ?plan, "query plan");
    let records: Box<dyn Iterator<Item = Result<(Key, Envelope)>> + Send> = match plan {
        Plan::Scan => Box::new(table.scan(reverse)),
        Plan::Index { path, range } => Box::new(indexed(table, &path, &range, reverse)?),
    };
    let scanned = records.map(move |entry| {
        let (_, record) = entry?;
        let value = match needs_value {
            true => Some(
                serde_json::from_slice::<Value>(&record.value)
                    .map_err(|e| Error::Storage(format!("stored record is not JSON: {e}")))?,
            ),
            false => None,
        };
        Ok((record.value, value))
    });
    let matching = scanned.filter(move |entry| match (entry, &filter) {
        (Ok((_, Some(value))), Some(filter)) => matches(filter, value),
        _ => true,
    });
    let ordered: Box<dyn Iterator<Item = Result<(Bytes, Option<Value>)>> + Send> = match key_order {
        Some(_) => Box::new(matching),
        None => Box::new(sorted(matching, &sort)?.into_iter().map(Ok)),
    };
    let page = ordered.skip(offset).take(limit.unwrap_or(usize::MAX));
    Ok(Box::new(page.map(move |entry| {
        let (stored, value) = entry?;
        Ok(match (&select, value) {
            (Some(select), Some(value)) => Row::Value(project(select, &value)),
            _ => Row::Stored(stored),
        })
    })))
}

/// The records an index range names, in key order (each once, however many of its values match).
fn indexed(
    table: &Table,
    path: &[String],
    range: &IndexRange,
    reverse: bool,
) -> Result<impl Iterator<Item = Result<(Key, Envelope)>> + Send + use<>> {
    let mut keys = table
        .index_keys(path, range)
        .ok_or_else(|| Error::Storage(format!("no index on {}", path.join("."))))?
        .collect::<Result<Vec<_>>>()?;
    keys.sort_unstable();
    keys.dedup();
    if reverse {
        keys.reverse();
    }
    let records = table.records_by_keys(keys);
    Ok(records)
}

fn sorted(
    matching: impl Iterator<Item = Result<(Bytes, Option<Value>)>>,
    sort: &[SortKey],
) -> Result<Vec<(Bytes, Option<Value>)>> {
    let mut rows = Vec::new();
    for row in matching {
        rows.push(row?);
        if rows.len() > MAX_SORTED {
            return Err(Error::BadQuery(QueryError {
                position: sort.first().map_or(0, |k| k.position),
                token: sort.first().map(|k| k.path.join(".")).unwrap_or_default(),
                expected: format!(
                    "a sort over at most {MAX_SORTED} matching records: add conditions, or sort by the primary key"
                ),
            }));
        }
    }
    rows.sort_by(|(_, a), (_, b)| {
        let (Some(a), Some(b)) = (a, b) else {
            return std::cmp::Ordering::Equal;
        };
        sort.iter()
            .map(|key| {
                let order = sort_order(lookup(a, &key.path), lookup(b, &key.path));
                if key.descending {
                    order.reverse()
                } else {
                    order
                }
            })
            .find(|order| order.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    Ok(rows)
}
