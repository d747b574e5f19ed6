//! Composing the record that gets stored: primary key, timestamps, validation.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::schema::{CREATED_AT, TableSchema, UPDATED_AT};
use crate::storage::Key;

/// Completes `record` for storage under `key` and validates it: fills in the primary key when the
/// body leaves it out, rejects one that disagrees with `key`, sets the timestamps if the table keeps
/// them, then checks the schema. Returns the record to store.
pub fn compose(
    schema: &TableSchema,
    key: &Key,
    mut record: Value,
    created: u64,
    now: u64,
) -> Result<Value> {
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
    schema
        .validate(&record)
        .map_err(|violations| Error::SchemaViolation {
            table: schema.name.to_string(),
            violations,
        })?;
    Ok(record)
}

/// Checks that a primary key value found in a body names `key`.
pub fn check_key(schema: &TableSchema, key: &Key, value: &Value) -> Result<()> {
    match schema.settings.key_type.from_json(value) {
        Ok(found) if found == *key => Ok(()),
        _ => Err(Error::KeyMismatch {
            field: schema.settings.primary_key.clone(),
            body: value.to_string(),
            url: key.to_json().to_string(),
        }),
    }
}
