//! Composing the record that gets stored: primary key, timestamps, validation.

use serde_json::Value;

use crate::error::{Error, Violation};
use crate::schema::{CREATED_AT, TableSchema, UPDATED_AT};
use crate::storage::Key;

/// Why a record cannot be stored as it is.
#[derive(Debug)]
pub enum Rejection {
    /// The body's primary key names another record than the one written.
    KeyMismatch {
        field: String,
        body: String,
        url: String,
    },
    /// The record breaks the table's schema.
    Violations(Vec<Violation>),
}

impl Rejection {
    /// The domain error for a write to `table`.
    pub fn into_error(self, table: &str) -> Error {
        match self {
            Rejection::KeyMismatch { field, body, url } => Error::KeyMismatch { field, body, url },
            Rejection::Violations(violations) => Error::SchemaViolation {
                table: table.to_owned(),
                violations,
            },
        }
    }

    /// Every problem as a schema violation (a key mismatch is one of the whole record).
    pub fn into_violations(self) -> Vec<Violation> {
        match self {
            Rejection::KeyMismatch { .. } => vec![Violation {
                pointer: String::new(),
                message: self.into_error("").to_string(),
            }],
            Rejection::Violations(violations) => violations,
        }
    }
}

/// Completes `record` for storage under `key` and validates it: fills in the primary key when the
/// body leaves it out, rejects one that disagrees with `key`, sets the timestamps if the table keeps
/// them, then checks the schema. Returns the record to store.
pub fn compose(
    schema: &TableSchema,
    key: &Key,
    mut record: Value,
    created: u64,
    now: u64,
) -> Result<Value, Rejection> {
    let settings = &schema.settings;
    if let Value::Object(fields) = &mut record {
        match fields.get(&settings.primary_key) {
            Some(value) => check_key(schema, key, value)?,
            None => {
                fields.shift_insert(0, settings.primary_key.clone(), key.to_json());
            }
        }
        if settings.timestamps {
            fields.insert(CREATED_AT.to_owned(), created.into());
            fields.insert(UPDATED_AT.to_owned(), now.into());
        }
    }
    schema.validate(&record).map_err(Rejection::Violations)?;
    Ok(record)
}

/// Checks that a primary key value found in a body names `key`.
pub fn check_key(schema: &TableSchema, key: &Key, value: &Value) -> Result<(), Rejection> {
    match schema.settings.key_type.from_json(value) {
        Ok(found) if found == *key => Ok(()),
        _ => Err(Rejection::KeyMismatch {
            field: schema.settings.primary_key.clone(),
            body: value.to_string(),
            url: key.to_json().to_string(),
        }),
    }
}
