//! What an identity may write to a table, as a [`Guard`] the table checks against the record
//! before and after each write: insert needs the insert rule on the new record, update the
//! update rule on both (so no update moves a record out of reach or into someone else's),
//! delete the delete rule on the old record; hidden and fixed properties stay as they are.

use std::sync::Arc;

use serde_json::Value;

use super::read::Reader;
use super::rule::Bound;
use crate::error::{Error, Result};
use crate::storage::Key;
use crate::table::Guard;

/// What the write is, which decides how a refusal is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// `PUT`: creates or replaces.
    Put,
    /// `POST`: creates under a generated key.
    Create,
    /// `PATCH`: changes an existing record.
    Patch,
    /// `DELETE`.
    Delete,
}

/// One identity's write permissions on one table.
pub struct Writer {
    pub(super) table: String,
    pub(super) reader: Reader,
    pub(super) insert: Bound,
    pub(super) update: Bound,
    pub(super) delete: Bound,
    /// Properties it may not set or change.
    pub(super) fixed: Vec<String>,
}

impl Writer {
    /// Whether nothing the write could be is allowed, so it is refused before it is decided.
    pub fn refuses(&self, write: Write) -> bool {
        let none = |bound: &Bound| *bound == Bound::None;
        match write {
            Write::Put => none(&self.insert) && none(&self.update),
            Write::Create => none(&self.insert),
            Write::Patch => none(&self.update),
            Write::Delete => none(&self.delete),
        }
    }

    /// Whether the write is allowed whatever the records (no rule, no property restriction).
    pub fn writes_any_record(&self, write: Write) -> bool {
        let all = |bound: &Bound| *bound == Bound::All;
        self.reader.sees_all()
            && self.fixed.is_empty()
            && match write {
                Write::Put => all(&self.insert) && all(&self.update),
                Write::Create => all(&self.insert),
                Write::Patch => all(&self.update),
                Write::Delete => all(&self.delete),
            }
    }

    /// The guard for `write`; `None` when there is nothing to check.
    pub fn guard(self, write: Write) -> Option<Guard> {
        if self.writes_any_record(write) {
            return None;
        }
        let writer = Arc::new(self);
        Some(Guard(Arc::new(move |key, before, after| {
            writer.check(write, key, before, after)
        })))
    }

    fn check(
        &self,
        write: Write,
        key: &Key,
        before: Option<&Value>,
        after: Option<&mut Value>,
    ) -> Result<()> {
        if let Some(before) = before
            && !self.reader.sees(before)
        {
            // A record out of the identity's sight does not exist for it, except that its id
            // is taken.
            return Err(match write {
                Write::Put | Write::Create => Error::Forbidden(format!(
                    "`{}/{key}` is taken by a record your roles may not read",
                    self.table
                )),
                Write::Patch | Write::Delete => Error::RecordNotFound {
                    table: self.table.clone(),
                    id: key.to_string(),
                },
            });
        }
        let refused = |what: &str| {
            Err(Error::Forbidden(format!(
                "your roles may not {what} `{}/{key}`",
                self.table
            )))
        };
        match (before, after) {
            (None, Some(after)) => {
                if !self.insert.covers(after) {
                    return refused("create the record as");
                }
                self.keep_properties(None, after)
            }
            (Some(before), Some(after)) => {
                if !self.update.covers(before) {
                    return refused("change");
                }
                self.keep_properties(Some(before), after)?;
                if !self.update.covers(after) {
                    return refused("change to this value");
                }
                Ok(())
            }
            (Some(before), None) => {
                if self.delete.covers(before) {
                    Ok(())
                } else {
                    refused("delete")
                }
            }
            (None, None) => Ok(()),
        }
    }

    /// Refuses a change to a fixed or hidden property, and keeps the hidden ones as they were
    /// (a client that cannot see them cannot be asked to send them back).
    fn keep_properties(&self, before: Option<&Value>, after: &mut Value) -> Result<()> {
        let old = |name: &str| before.and_then(|b| b.get(name));
        let Value::Object(fields) = after else {
            return Ok(());
        };
        for name in self.fixed.iter().chain(&self.reader.hidden) {
            if let Some(new) = fields.get(name)
                && Some(new) != old(name)
            {
                return Err(Error::Forbidden(format!(
                    "your roles may not set or change the property `{name}` of table `{}`",
                    self.table
                )));
            }
        }
        for name in &self.reader.hidden {
            match old(name) {
                Some(value) => {
                    fields.insert(name.clone(), value.clone());
                }
                None => {
                    fields.shift_remove(name);
                }
            }
        }
        for name in &self.fixed {
            if fields.get(name) != old(name) {
                return Err(Error::Forbidden(format!(
                    "your roles may not remove the property `{name}` of table `{}`",
                    self.table
                )));
            }
        }
        Ok(())
    }
}
