//! Binding a query to a table's schema, and evaluating it on records.
//!
//! Semantics (where Harper is inconsistent, the right thing): null and missing are one thing;
//! `=null` matches both, `!=` and `=ne=` include them, `lt`/`le`/`gt`/`ge` never match them; an
//! array matches a condition once if any element does, except `!=`, which means no element equals;
//! values compare only with values of their own kind; strings order by code point.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::{Condition, Field, Filter, Literal, Op, Query, Select};
use crate::error::QueryError;

/// The kind of value an attribute holds, from its schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Number,
    Boolean,
    String,
    Date,
    /// Not declared, or declared without one scalar type: text stays text.
    Untyped,
}

/// Converts untyped values by the attributes' declared types and rejects attributes the schema
/// forbids (`additionalProperties: false`).
pub fn bind(mut query: Query, schema: &Value) -> Result<Query, QueryError> {
    if let Some(filter) = &mut query.filter {
        bind_filter(filter, schema)?;
    }
    for key in &query.sort {
        kind(schema, &key.path).ok_or_else(|| unknown(&key.path, key.position))?;
    }
    Ok(query)
}

fn bind_filter(filter: &mut Filter, schema: &Value) -> Result<(), QueryError> {
    match filter {
        Filter::All(parts) | Filter::Any(parts) => {
            parts.iter_mut().try_for_each(|p| bind_filter(p, schema))
        }
        Filter::Condition(condition) => {
            let kind = kind(schema, &condition.path)
                .ok_or_else(|| unknown(&condition.path, condition.position))?;
            if let Literal::Text(text) = &condition.value {
                condition.value = convert(text, kind, condition)?;
            }
            Ok(())
        }
    }
}

fn convert(text: &str, kind: Kind, condition: &Condition) -> Result<Literal, QueryError> {
    let fail = |expected: &str| QueryError {
        position: condition.value_position,
        token: text.to_owned(),
        expected: format!("{expected} for `{}`", condition.path.join(".")),
    };
    let textual = matches!(condition.op, Op::StartsWith | Op::Contains | Op::EndsWith);
    Ok(match kind {
        _ if textual => Literal::String(text.to_owned()),
        Kind::Number => Literal::Number(
            text.parse::<f64>()
                .ok()
                .filter(|n| n.is_finite())
                .ok_or_else(|| fail("a number"))?,
        ),
        Kind::Boolean => match text {
            "true" => Literal::Bool(true),
            "false" => Literal::Bool(false),
            _ => return Err(fail("true or false")),
        },
        Kind::Date => Literal::Date(
            parse_date(text)
                .ok_or_else(|| fail("a date such as 2001-01-01 or 2001-01-01T12:00:00Z"))?,
        ),
        Kind::String | Kind::Untyped => Literal::String(text.to_owned()),
    })
}

fn unknown(path: &[String], position: usize) -> QueryError {
    QueryError {
        position,
        token: path.join("."),
        expected: "an attribute the table's schema declares (it forbids others with additionalProperties: false)".to_owned(),
    }
}

/// The kind of the attribute at `path`; `None` if the schema forbids it.
fn kind(schema: &Value, path: &[String]) -> Option<Kind> {
    let mut node = schema;
    for segment in path {
        match node.get("properties").and_then(|p| p.get(segment)) {
            Some(child) => node = items(child),
            None if node.get("additionalProperties") == Some(&Value::Bool(false)) => return None,
            None => return Some(Kind::Untyped),
        }
    }
    let declared = match node.get("type") {
        Some(Value::String(t)) => Some(t.as_str()),
        Some(Value::Array(types)) => {
            let mut scalar = types
                .iter()
                .filter_map(Value::as_str)
                .filter(|t| *t != "null");
            scalar.next().filter(|_| scalar.next().is_none())
        }
        _ => None,
    };
    Some(match declared {
        Some("integer" | "number") => Kind::Number,
        Some("boolean") => Kind::Boolean,
        Some("string")
            if matches!(
                node.get("format").and_then(Value::as_str),
                Some("date" | "date-time")
            ) =>
        {
            Kind::Date
        }
        Some("string") => Kind::String,
        _ => Kind::Untyped,
    })
}

/// Arrays are matched per element: the element schema describes the attribute.
fn items(node: &Value) -> &Value {
    match (node.get("type"), node.get("items")) {
        (Some(Value::String(t)), Some(items)) if t == "array" => items,
        _ => node,
    }
}

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

/// What `select` keeps of a record.
pub fn project(select: &Select, record: &Value) -> Value {
    match select {
        Select::Value(path) => lookup(record, path).cloned().unwrap_or(Value::Null),
        Select::Fields(fields) => keep(fields, record),
    }
}

fn keep(fields: &[Field], value: &Value) -> Value {
    let Value::Object(object) = value else {
        return value.clone();
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

/// Parses `YYYY-MM-DD`, optionally followed by `THH:MM[:SS[.fraction]]` and `Z` or `±HH:MM`
/// (UTC when absent), into milliseconds since the Unix epoch.
pub fn parse_date(text: &str) -> Option<i64> {
    let number = |s: &str| -> Option<i64> {
        s.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| s.parse().ok())
            .flatten()
    };
    let (date, time) = match text.split_once(['T', 't', ' ']) {
        Some((date, time)) => (date, Some(time)),
        None => (text, None),
    };
    let mut parts = date.splitn(3, '-');
    let (year, month, day) = (
        number(parts.next()?)?,
        number(parts.next()?)?,
        number(parts.next()?)?,
    );
    if date.len() != 10 || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let mut ms = days_from_civil(year, month, day) * 86_400_000;
    if let Some(time) = time {
        let (clock, offset_ms) = if let Some(clock) = time.strip_suffix(['Z', 'z']) {
            (clock, 0)
        } else if let Some(at) = time.rfind(['+', '-']) {
            let (clock, zone) = time.split_at(at);
            let (hours, minutes) = zone[1..].split_once(':')?;
            let offset = (number(hours)? * 60 + number(minutes)?) * 60_000;
            (
                clock,
                if zone.starts_with('-') {
                    -offset
                } else {
                    offset
                },
            )
        } else {
            (time, 0)
        };
        let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
        let mut fields = hms.split(':');
        let hours = number(fields.next()?)?;
        let minutes = number(fields.next()?)?;
        let seconds = fields.next().map_or(Some(0), number)?;
        if fields.next().is_some() || hours > 23 || minutes > 59 || seconds > 60 {
            return None;
        }
        let millis = match fraction {
            "" => 0,
            digits => number(&format!("{digits:0<3}")[..3])?,
        };
        ms += ((hours * 60 + minutes) * 60 + seconds) * 1000 + millis - offset_ms;
    }
    Some(ms)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2001-01-01"), Some(978_307_200_000));
        assert_eq!(
            parse_date("2001-01-01T00:00:00.000Z"),
            Some(978_307_200_000)
        );
        assert_eq!(
            parse_date("2001-01-01T01:00:00+01:00"),
            Some(978_307_200_000)
        );
        assert_eq!(
            parse_date("2000-12-31T23:00:00-01:00"),
            Some(978_307_200_000)
        );
        assert_eq!(parse_date("2001-01-01T00:00:00.5Z"), Some(978_307_200_500));
        assert_eq!(parse_date("1969-12-31T23:59:59Z"), Some(-1000));
        for bad in [
            "2001",
            "2001-13-01",
            "2001-1-1",
            "2001-01-01T25:00",
            "soon",
            "2001-01-01T00:00:00+0100",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }
}
