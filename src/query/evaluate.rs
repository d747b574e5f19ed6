//! Evaluating a bound query on records: conditions, sort order and `select`.
//!
//! Semantics (where Harper is inconsistent, the right thing): null and missing are one thing;
//! `=null` matches both, `!=` and `=ne=` include them, `lt`/`le`/`gt`/`ge` never match them; an
//! array matches a condition once if any element does, except `!=`, which means no element equals;
//! values compare only with values of their own kind; strings order by code point.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::date::parse_date;
use super::{Condition, Field, Filter, Literal, Op, Select, SortKey};

/// The value at `path`, through nested objects.
pub fn lookup<'a>(record: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter()
        .try_fold(record, |value, segment| value.get(segment))
}

/// Whether `record` matches `filter`.
pub fn matches(filter: &Filter, record: &Value) -> bool {
    match filter {
        Filter::All(parts) => parts.iter().all(|p| matches(p, record)),
        Filter::Any(parts) => parts.iter().any(|p| matches(p, record)),
        Filter::Condition(condition) => condition_matches(condition, record),
    }
}

fn condition_matches(condition: &Condition, record: &Value) -> bool {
    let (op, literal) = (condition.op, &condition.value);
    match lookup(record, &condition.path) {
        None | Some(Value::Null) => match op {
            Op::Eq => *literal == Literal::Null,
            Op::Ne => *literal != Literal::Null,
            _ => false,
        },
        Some(Value::Array(elements)) => match op {
            Op::Ne => !elements.iter().any(|e| test(Op::Eq, e, literal)),
            _ => elements.iter().any(|e| test(op, e, literal)),
        },
        Some(value) => test(op, value, literal),
    }
}

fn test(op: Op, value: &Value, literal: &Literal) -> bool {
    match op {
        Op::Eq => compare(value, literal) == Some(Ordering::Equal),
        Op::Ne => compare(value, literal) != Some(Ordering::Equal),
        Op::Lt => compare(value, literal).is_some_and(Ordering::is_lt),
        Op::Le => compare(value, literal).is_some_and(Ordering::is_le),
        Op::Gt => compare(value, literal).is_some_and(Ordering::is_gt),
        Op::Ge => compare(value, literal).is_some_and(Ordering::is_ge),
        Op::StartsWith | Op::Contains | Op::EndsWith => match (value, literal) {
            (Value::String(s), Literal::String(part) | Literal::Text(part)) => match op {
                Op::StartsWith => s.starts_with(part.as_str()),
                Op::Contains => s.contains(part.as_str()),
                _ => s.ends_with(part.as_str()),
            },
            _ => false,
        },
    }
}

/// Compares a stored value with a literal of the same kind; `None` across kinds.
fn compare(value: &Value, literal: &Literal) -> Option<Ordering> {
    match (value, literal) {
        (Value::Number(n), Literal::Number(x)) => n.as_f64()?.partial_cmp(x),
        (Value::String(s), Literal::String(x) | Literal::Text(x)) => {
            Some(s.as_str().cmp(x.as_str()))
        }
        (Value::Bool(b), Literal::Bool(x)) => Some(b.cmp(x)),
        (Value::String(s), Literal::Date(ms)) => Some(parse_date(s)?.cmp(ms)),
        (Value::Number(n), Literal::Date(ms)) => Some(n.as_i64()?.cmp(ms)),
        _ => None,
    }
}

/// Orders records by one attribute: numbers, then strings, then booleans, then anything else;
/// null and missing last. Arrays sort by their first element.
pub fn sort_order(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    fn rank(value: Option<&Value>) -> (u8, Option<&Value>) {
        let value = match value {
            Some(Value::Array(elements)) => elements.first(),
            other => other,
        };
        match value {
            Some(Value::Number(_)) => (0, value),
            Some(Value::String(_)) => (1, value),
            Some(Value::Bool(_)) => (2, value),
            None | Some(Value::Null) => (4, None),
            Some(_) => (3, value),
        }
    }
    let ((rank_a, a), (rank_b, b)) = (rank(a), rank(b));
    rank_a.cmp(&rank_b).then_with(|| match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        _ => Ordering::Equal,
    })
}

/// The order of records `a` and `b` by the keys of `sort(...)`, most significant first.
pub fn by_keys(sort: &[SortKey], a: &Value, b: &Value) -> Ordering {
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
        .unwrap_or(Ordering::Equal)
}

/// What `select` keeps of a record.
pub fn project(select: &Select, record: &Value) -> Value {
    match select {
        Select::Value(path) => lookup(record, path).cloned().unwrap_or(Value::Null),
        Select::Fields(fields) => keep(fields, record),
    }
}

fn keep(fields: &[Field], value: &Value) -> Value {
    let object = match value {
        Value::Object(object) => object,
        // `items{sku}` keeps `sku` of each object in the array.
        Value::Array(elements) => {
            return Value::Array(elements.iter().map(|e| keep(fields, e)).collect());
        }
        _ => return value.clone(),
    };
    let mut kept = Map::new();
    for field in fields {
        if let Some(inner) = object.get(&field.name) {
            let inner = if field.children.is_empty() {
                inner.clone()
            } else {
                keep(&field.children, inner)
            };
            kept.insert(field.name.clone(), inner);
        }
    }
    Value::Object(kept)
}
