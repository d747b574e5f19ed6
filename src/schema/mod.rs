//! Schema files: one JSON Schema (draft 2020-12) per table, plus the `x-table` settings.
//!
//! Everything about a schema is checked at start-up; a bad file stops the server with the file,
//! a JSON pointer into it and the reason. Validators are compiled once per table, and again
//! when a reload changes the document (`rules.rs`); `x-table` settings are read once.

mod cache_settings;
mod links;
mod rules;
pub(crate) mod settings;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use serde_json::Value;

pub use cache_settings::CacheSettings;
pub use links::Relation;
use rules::Rules;
pub use settings::{CREATED_AT, TableSettings, UPDATED_AT};

use crate::error::Violation;

const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

/// Why a schema file was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadError {
    /// The file (or directory) at fault.
    pub file: PathBuf,
    /// JSON pointer to the offending part of the file (`""` for the whole file).
    pub pointer: String,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pointer.as_str() {
            "" => write!(f, "{}: {}", self.file.display(), self.reason),
            pointer => write!(f, "{}#{pointer}: {}", self.file.display(), self.reason),
        }
    }
}

/// A table's schema: its settings, and the rules of its JSON Schema document (which a reload
/// may replace, see [`TableSchema::adopt`]).
pub struct TableSchema {
    /// The table's name: the file's stem.
    pub name: Arc<str>,
    /// The file it was read from.
    pub file: PathBuf,
    /// The `x-table` settings.
    pub settings: TableSettings,
    rules: RwLock<Arc<Rules>>,
}

impl fmt::Debug for TableSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableSchema")
            .field("name", &self.name)
            .field("file", &self.file)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl TableSchema {
    fn rules(&self) -> Arc<Rules> {
        self.rules
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The schema document as written (the one last reloaded).
    pub fn document(&self) -> Arc<Value> {
        self.rules().document.clone()
    }

    /// Checks `record` against the schema; on failure, every violation with its pointer.
    pub fn validate(&self, record: &Value) -> Result<(), Vec<Violation>> {
        self.rules().validate(record)
    }

    /// Checks a primary key value against what the schema says of the key's property (its
    /// type, `pattern`, bounds...); on failure, the first violation's message.
    pub fn check_key(&self, key: &Value) -> Result<(), String> {
        self.rules().check_key(&self.settings, key)
    }

    /// Gives a new record the `default` of every property it leaves out, in objects it has
    /// (a default of a property inside an absent object applies only if that object is made
    /// by its own default).
    pub fn complete(&self, record: &mut Value) {
        self.rules().complete(record);
    }

    /// Takes the rules of `newer`, a later load of the same file: its settings must be these.
    pub fn adopt(&self, newer: TableSchema) {
        debug_assert_eq!(self.settings, newer.settings);
        let rules = newer
            .rules
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        *self.rules.write().unwrap_or_else(PoisonError::into_inner) = rules;
    }

    /// Reads one schema file; on failure, every problem found in it.
    pub fn load(file: &Path) -> Result<TableSchema, Vec<LoadError>> {
        let fail = |pointer: &str, reason: String| LoadError {
            file: file.to_owned(),
            pointer: pointer.to_owned(),
            reason,
        };
        let name = file
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| vec![fail("", "the file name is not valid UTF-8".to_owned())])?;
        let mut problems = Vec::new();
        if !is_table_name(name) {
            problems.push(fail(
                "",
                format!("`{name}` is not a table name: use a letter, then letters, digits or `_`"),
            ));
        }
        let text = std::fs::read(file).map_err(|e| vec![fail("", format!("cannot read: {e}"))])?;
        let document: Value = serde_json::from_slice(&text).map_err(|e| {
            vec![fail(
                "",
                format!(
                    "not valid JSON: {e} (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            )]
        })?;
        let Some(object) = document.as_object() else {
            return Err(vec![fail(
                "",
                "a schema file must hold a JSON object".to_owned(),
            )]);
        };
        match object.get("$schema") {
            None => {}
            Some(Value::String(uri)) if uri.trim_end_matches('#') == DRAFT_2020_12 => {}
            Some(_) => problems.push(fail(
                "/$schema",
                format!(
                    "tablecast reads JSON Schema draft 2020-12: use \"{DRAFT_2020_12}\" or leave `$schema` out"
                ),
            )),
        }
        if object.get("type") != Some(&Value::from("object")) {
            problems.push(fail(
                "/type",
                "a table's schema describes one record: it must say \"type\": \"object\""
                    .to_owned(),
            ));
        }
        let settings = settings::read(object, &fail).map_err(|found| problems.extend(found));
        // A default of what the server sets itself would only contradict it.
        let owned: Vec<&str> = match &settings {
            Ok(settings) if settings.timestamps => {
                vec![settings.primary_key.as_str(), CREATED_AT, UPDATED_AT]
            }
            Ok(settings) => vec![settings.primary_key.as_str()],
            Err(()) => Vec::new(),
        };
        let rules = Rules::compile(document.clone(), &owned).map_err(|found| {
            let found = found
                .into_iter()
                .map(|(pointer, reason)| fail(&pointer, reason));
            problems.extend(found);
        });
        match (settings, rules) {
            (Ok(settings), Ok(rules)) if problems.is_empty() => Ok(TableSchema {
                name: name.into(),
                file: file.to_owned(),
                settings,
                rules: RwLock::new(Arc::new(rules)),
            }),
            _ => Err(problems),
        }
    }
}

/// Reads every `*.json` file in `dir`, in name order; reports every bad file, not just the first.
pub fn load_dir(dir: &Path) -> Result<Vec<TableSchema>, Vec<LoadError>> {
    let fail = |reason: String| {
        vec![LoadError {
            file: dir.to_owned(),
            pointer: String::new(),
            reason,
        }]
    };
    let entries = std::fs::read_dir(dir).map_err(|e| {
        fail(format!(
            "cannot read the schema directory: {e}; name the directory of your `<Table>.json` files with --schemas DIR"
        ))
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "json") && path.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(fail(
            "no schema files (*.json) here; write one `<Table>.json` JSON Schema per table (see README, Schema files)"
                .to_owned(),
        ));
    }
    let mut schemas = Vec::new();
    let mut problems = Vec::new();
    for file in &files {
        match TableSchema::load(file) {
            Ok(schema) => schemas.push(schema),
            Err(found) => problems.extend(found),
        }
    }
    // Links name other tables: checked once every file that loads has.
    problems.extend(links::check(&schemas));
    if problems.is_empty() {
        Ok(schemas)
    } else {
        Err(problems)
    }
}

/// Whether `name` is a property or relation name that GraphQL can carry as a field name.
pub fn is_field_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_table_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests;
