//! Whether a table's stored records still meet its schema, after the schema file changed.
//!
//! A tighter schema (a new required property, a narrower enum) would otherwise start silently
//! and surface later as a 422 on an unrelated PATCH of an old record. So a start checks every
//! stored record when the schema document differs from the one last checked (or when the last
//! check found records that break it), remembers the result in the `schema-checks` keyspace,
//! and the server warns or refuses to start (`--schema-check`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use std::sync::{Arc, PoisonError};

use super::Table;
use crate::error::{Error, Result};
use crate::schema::TableSchema;
use crate::storage::Store;

/// Records named in a report, at most; the count covers them all.
const EXAMPLES: usize = 10;
/// Where the results are kept, one per table.
const KEYSPACE: &str = "schema-checks";

/// What a check of every stored record against the schema found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Conformance {
    /// The schema document checked against, as a fingerprint.
    pub schema: String,
    /// When the check ran (ms since the Unix epoch).
    pub checked_at: u64,
    /// Records checked.
    pub records: u64,
    /// Records that break the schema.
    pub breaking: u64,
    /// The first of them, with what each breaks.
    pub examples: Vec<Breach>,
}

/// One stored record that breaks its schema, with its first violation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Breach {
    pub id: Value,
    pub pointer: String,
    pub message: String,
}

impl Conformance {
    /// One line per example, `Product/7#/price: property `price` is required`.
    pub fn lines<'a>(&'a self, table: &'a str) -> impl Iterator<Item = String> + 'a {
        self.examples.iter().map(move |breach| {
            let id = match &breach.id {
                Value::String(id) => id.clone(),
                other => other.to_string(),
            };
            format!("{table}/{id}#{}: {}", breach.pointer, breach.message)
        })
    }
}

impl Table {
    /// The table described by `schema` as `store` holds it, to read its records only (see
    /// [`Store::records_to_read`]); `None` if it was never opened.
    pub fn open_to_read(schema: TableSchema, store: Arc<Store>) -> Result<Option<Table>> {
        Ok(store.records_to_read(&schema.name)?.map(|records| Table {
            schema: Arc::new(schema),
            records,
            store,
            conformance: Arc::default(),
        }))
    }

    /// What the last check of the stored records found (at start, or at a reload).
    pub fn conformance(&self) -> Option<Conformance> {
        self.conformance
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Checks every stored record against the table's schema, now.
    pub fn check_records(&self, now: u64) -> Result<Conformance> {
        self.survey(&self.schema, now, |_| true)
    }

    /// The stored records that break `newer` (a schema the table may take) although they meet
    /// the one it has: what a reload to `newer` would break.
    pub fn newly_breaking(&self, newer: &TableSchema, now: u64) -> Result<Conformance> {
        self.survey(newer, now, |record| self.schema.validate(record).is_ok())
    }

    /// Checks every stored record against `schema`; of those that break it, counts the ones
    /// `counted` takes.
    fn survey(
        &self,
        schema: &TableSchema,
        now: u64,
        counted: impl Fn(&Value) -> bool,
    ) -> Result<Conformance> {
        let mut report = Conformance {
            schema: fingerprint(&schema.document()),
            checked_at: now,
            records: 0,
            breaking: 0,
            examples: Vec::new(),
        };
        for found in self.scan(false, None) {
            let (key, envelope) = found?;
            report.records += 1;
            let record: Value =
                serde_json::from_slice(&envelope.value).map_err(Error::stored_not_json)?;
            let Err(violations) = schema.validate(&record) else {
                continue;
            };
            if !counted(&record) {
                continue;
            }
            report.breaking += 1;
            if report.examples.len() < EXAMPLES
                && let Some(first) = violations.into_iter().next()
            {
                report.examples.push(Breach {
                    id: key.to_json(),
                    pointer: first.pointer,
                    message: first.message,
                });
            }
        }
        Ok(report)
    }

    /// The check a start makes: the last result if the schema is the one it was made against and
    /// nothing broke it then, else a new check of every record, remembered for the next start.
    pub fn check_at_start(&self, now: u64) -> Result<Conformance> {
        let checks = self.store.keyspace(KEYSPACE)?;
        let name = self.name().as_bytes();
        let last: Option<Conformance> = checks
            .get(name)?
            .and_then(|raw| serde_json::from_slice(&raw).ok());
        let schema = fingerprint(&self.schema.document());
        let report = match last {
            Some(last) if last.schema == schema && last.breaking == 0 => last,
            _ => self.check_records(now)?,
        };
        // Strings and numbers always serialize; an empty value would only mean a check next start.
        checks.insert(name, &serde_json::to_vec(&report).unwrap_or_default())?;
        self.show_conformance(report.clone());
        Ok(report)
    }

    /// Shows `report` in `GET /T` until the next check. Only a start's check is remembered
    /// for the next start: writes accepted while a reload checked the records were validated
    /// against the schema it replaced, so the next start checks them all again.
    pub fn show_conformance(&self, report: Conformance) {
        *self
            .conformance
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(report);
    }
}

/// A stable fingerprint of a schema document (64-bit FNV-1a of its JSON, in the file's order):
/// the same across builds and releases, so an unchanged schema is never checked again.
fn fingerprint(document: &Value) -> String {
    let hash = document
        .to_string()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{hash:016x}")
}
