//! Choosing how to find a query's records: one index range, or a scan of the table.
//!
//! The candidates are the conditions that every match must meet (the top level of an `&`
//! chain) on an indexed attribute, with an operator an index can answer (`=`, `=lt=`, `=le=`,
//! `=gt=`, `=ge=`, `=sw=`, `=null`); conditions on one attribute combine into one range. The
//! planner asks how many entries each candidate range has (up to a cap) and picks the smallest.
//! Whatever the plan, the executor checks every condition on every record it reads, so the
//! result never depends on the plan.

use std::ops::Bound;

use serde_json::Value;

use super::{Condition, Filter, Literal, Op};
use crate::storage::IndexRange;
use crate::storage::index::{self, all_booleans, all_numbers, all_strings, string_prefix};

/// How many entries of a candidate range are counted at most when comparing candidates.
const ESTIMATE_CAP: usize = 1_000;

/// How to find the records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Read every record.
    Scan,
    /// Read the records an index range names.
    Index {
        path: Vec<String>,
        range: IndexRange,
    },
}

/// Picks the plan for `filter`. `count(path, range, cap)` counts index entries up to `cap` (so
/// a `cap` of 0 only asks whether there is an index), and is `None` where `path` has no index.
pub fn plan(
    filter: Option<&Filter>,
    count: impl Fn(&[String], &IndexRange, usize) -> Option<usize>,
) -> Plan {
    let conditions: Vec<&Condition> = match filter {
        Some(Filter::Condition(condition)) => vec![condition],
        Some(Filter::All(parts)) => parts
            .iter()
            .filter_map(|part| match part {
                Filter::Condition(condition) => Some(condition),
                _ => None,
            })
            .collect(),
        Some(Filter::Any(_)) | None => Vec::new(),
    };
    let mut paths: Vec<&[String]> = Vec::new();
    for condition in &conditions {
        if !paths.contains(&condition.path.as_slice()) {
            paths.push(&condition.path);
        }
    }
    let mut candidates: Vec<(&[String], IndexRange)> = paths
        .into_iter()
        .filter_map(|path| {
            let range = range(conditions.iter().copied().filter(|c| c.path == path))?;
            count(path, &range, 0)?;
            Some((path, range))
        })
        .collect();
    let chosen = if candidates.len() < 2 {
        candidates.pop()
    } else {
        // Counting reads entries: stop each count once it is no better than the fewest so far.
        let mut best: Option<(usize, (&[String], IndexRange))> = None;
        for (path, range) in candidates {
            let cap = best.as_ref().map_or(ESTIMATE_CAP, |(fewest, _)| *fewest);
            let entries = count(path, &range, cap).unwrap_or(usize::MAX);
            if best.as_ref().is_none_or(|(fewest, _)| entries < *fewest) {
                best = Some((entries, (path, range)));
            }
        }
        best.map(|(_, candidate)| candidate)
    };
    chosen.map_or(Plan::Scan, |(path, range)| Plan::Index {
        path: path.to_vec(),
        range,
    })
}

/// The one index range that covers every condition given (all on one attribute), if any.
fn range<'a>(conditions: impl Iterator<Item = &'a Condition>) -> Option<IndexRange> {
    let mut lower: Option<Bound<Vec<u8>>> = None;
    let mut upper: Option<Bound<Vec<u8>>> = None;
    let mut kind: Option<(Vec<u8>, Vec<u8>)> = None;
    for condition in conditions {
        let encoded = match &condition.value {
            Literal::Null if condition.op == Op::Eq => {
                return Some(IndexRange::Value(index::encode(&Value::Null)?));
            }
            Literal::String(s) if condition.op == Op::StartsWith => {
                return Some(IndexRange::Prefix(string_prefix(s)));
            }
            Literal::Number(n) => (index::encode(&Value::from(*n))?, all_numbers()),
            Literal::String(s) => (index::encode(&Value::from(s.as_str()))?, all_strings()),
            Literal::Bool(b) => (index::encode(&Value::from(*b))?, all_booleans()),
            _ => continue,
        };
        let (value, bounds) = encoded;
        // A value as long as an index entry holds of a string, or longer, shares its entry value
        // with longer strings just above or below it: the strict bounds become inclusive, and
        // the filter decides.
        let held_in_full = match &condition.value {
            Literal::String(s) => s.len() < index::MAX_STRING_BYTES,
            _ => true,
        };
        let op = match condition.op {
            Op::Gt if !held_in_full => Op::Ge,
            Op::Lt if !held_in_full => Op::Le,
            op => op,
        };
        match op {
            Op::Eq => return Some(IndexRange::Value(value)),
            Op::Gt => lower = tighter_lower(lower, Bound::Included(prefix_end(&value))),
            Op::Ge => lower = tighter_lower(lower, Bound::Included(value)),
            Op::Lt => upper = tighter_upper(upper, Bound::Excluded(value)),
            Op::Le => upper = tighter_upper(upper, Bound::Excluded(prefix_end(&value))),
            _ => continue,
        }
        kind.get_or_insert(bounds);
    }
    let (kind_lower, kind_upper) = kind?;
    Some(IndexRange::Between(
        lower.unwrap_or(Bound::Included(kind_lower)),
        upper.unwrap_or(Bound::Excluded(kind_upper)),
    ))
}

fn tighter_lower(current: Option<Bound<Vec<u8>>>, new: Bound<Vec<u8>>) -> Option<Bound<Vec<u8>>> {
    Some(match current {
        Some(Bound::Included(old)) if bound_value(&new) <= Some(&old) => Bound::Included(old),
        _ => new,
    })
}

fn tighter_upper(current: Option<Bound<Vec<u8>>>, new: Bound<Vec<u8>>) -> Option<Bound<Vec<u8>>> {
    Some(match current {
        Some(Bound::Excluded(old)) if bound_value(&new) >= Some(&old) => Bound::Excluded(old),
        _ => new,
    })
}

fn bound_value(bound: &Bound<Vec<u8>>) -> Option<&Vec<u8>> {
    match bound {
        Bound::Included(v) | Bound::Excluded(v) => Some(v),
        Bound::Unbounded => None,
    }
}

/// The smallest byte string greater than every string that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xFF; prefix.len() + 1]
}
