//! What an identity sees of a table: the rows its read rule covers, without the properties it
//! may not read. One [`Reader`] decides GET by id, listings, counts and subscriptions alike.

use bytes::Bytes;
use serde_json::Value;

use super::rule::Bound;
use crate::error::{Error, Result};
use crate::query::{Field, Filter, Query, Select};

/// The read permission of one identity on one table.
#[derive(Clone, Debug)]
pub struct Reader {
    pub(super) rows: Bound,
    pub(super) hidden: Vec<String>,
}

impl Reader {
    /// Sees every record whole.
    pub fn everything() -> Reader {
        Reader {
            rows: Bound::All,
            hidden: Vec::new(),
        }
    }

    /// Sees no record.
    pub fn nothing(&self) -> bool {
        self.rows == Bound::None
    }

    /// Sees every record as stored: answers need not be parsed.
    pub fn sees_all(&self) -> bool {
        self.rows == Bound::All && self.hidden.is_empty()
    }

    /// Sees every record (perhaps not every property).
    pub fn rows_all(&self) -> bool {
        self.rows == Bound::All
    }

    /// A message's payload without the hidden properties, if it is a JSON object.
    pub fn show_message(&self, payload: &Bytes) -> Bytes {
        if self.hidden.is_empty() {
            return payload.clone();
        }
        match serde_json::from_slice::<Value>(payload) {
            Ok(mut value @ Value::Object(_)) => {
                self.strip(&mut value);
                serde_json::to_vec(&value).map_or_else(|_| Bytes::new(), Bytes::from)
            }
            _ => payload.clone(),
        }
    }

    /// Whether `property` (top-level) is hidden from the identity.
    pub fn hides(&self, property: &str) -> bool {
        self.hidden.iter().any(|p| p == property)
    }

    /// Whether no property is hidden.
    pub fn hides_nothing(&self) -> bool {
        self.hidden.is_empty()
    }

    /// Whether the identity may read `record`.
    pub fn sees(&self, record: &Value) -> bool {
        self.rows.covers(record)
    }

    /// Removes what the identity may not read.
    pub fn strip(&self, record: &mut Value) {
        if let Value::Object(fields) = record {
            for property in &self.hidden {
                fields.shift_remove(property);
            }
        }
    }

    /// What the identity may see of a stored record: `None` if nothing, the bytes as they are
    /// if all of it.
    pub fn show(&self, stored: &Bytes) -> Result<Option<Bytes>> {
        if self.sees_all() {
            return Ok(Some(stored.clone()));
        }
        if self.nothing() {
            return Ok(None);
        }
        let mut record: Value = serde_json::from_slice(stored).map_err(Error::stored_not_json)?;
        if !self.sees(&record) {
            return Ok(None);
        }
        if self.hidden.is_empty() {
            return Ok(Some(stored.clone()));
        }
        self.strip(&mut record);
        Ok(Some(Bytes::from(serde_json::to_vec(&record).map_err(
            |e| Error::Internal(crate::error::Cause::of("a record did not format", e)),
        )?)))
    }

    /// Refuses a query that would reveal a property the identity may not read: a condition or
    /// a sort on it (its values would show through the answer), or selecting it.
    pub fn check_query(&self, query: &Query) -> Result<()> {
        let hidden = |path: &[String]| path.first().filter(|p| self.hidden.contains(p)).cloned();
        let mut found = query.filter.as_ref().and_then(|f| hidden_in(f, &hidden));
        found = found.or_else(|| query.sort.iter().find_map(|key| hidden(&key.path)));
        found = found.or_else(|| match &query.select {
            Some(Select::Value(path)) => hidden(path),
            Some(Select::Fields(fields)) => fields
                .iter()
                .find_map(|Field { name, .. }| hidden(std::slice::from_ref(name))),
            None => None,
        });
        match found {
            Some(property) => Err(Error::Forbidden(format!(
                "the property `{property}` is not readable with your roles, so a query cannot name it"
            ))),
            None => Ok(()),
        }
    }

    /// `query` restricted to the records the identity may read.
    pub fn restrict(&self, query: &mut Query) {
        let Bound::Matching(rule) = &self.rows else {
            return;
        };
        query.filter = Some(match query.filter.take() {
            None => rule.clone(),
            // Kept flat, so the planner sees the rule's conditions beside the query's and can
            // answer from an index on either.
            Some(Filter::All(mut parts)) => {
                push_all(&mut parts, rule);
                Filter::All(parts)
            }
            Some(other) => {
                let mut parts = vec![other];
                push_all(&mut parts, rule);
                Filter::All(parts)
            }
        });
    }
}

fn push_all(parts: &mut Vec<Filter>, rule: &Filter) {
    match rule {
        Filter::All(rule_parts) => parts.extend(rule_parts.iter().cloned()),
        other => parts.push(other.clone()),
    }
}

fn hidden_in(filter: &Filter, hidden: &impl Fn(&[String]) -> Option<String>) -> Option<String> {
    match filter {
        Filter::All(parts) | Filter::Any(parts) => parts.iter().find_map(|p| hidden_in(p, hidden)),
        Filter::Condition(condition) => hidden(&condition.path),
    }
}
