//! Binding a query to a table's schema: untyped values are converted by the attributes' declared
//! types, and attributes the schema forbids (`additionalProperties: false`) are refused, with
//! their position in the query string.

use serde_json::Value;

use super::date::parse_date;
use super::{Condition, Filter, Literal, Op, Query};
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
