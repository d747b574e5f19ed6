//! Schema files: one JSON Schema (draft 2020-12) per table, plus the `x-table` settings.
//!
//! Everything about a schema is checked once at start-up; a bad file stops the server with the
//! file, a JSON pointer into it and the reason. Validators are compiled once per table.

mod cache_settings;
pub(crate) mod settings;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jsonschema::error::ValidationErrorKind;
use serde_json::Value;

pub use cache_settings::CacheSettings;
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
        write!(
            f,
            "{}#{}: {}",
            self.file.display(),
            self.pointer,
            self.reason
        )
    }
}

/// A table's schema: its settings, its JSON Schema document and the compiled validator.
pub struct TableSchema {
    /// The table's name: the file's stem.
    pub name: Arc<str>,
    /// The file it was read from.
    pub file: PathBuf,
    /// The `x-table` settings.
    pub settings: TableSettings,
    /// The schema document as written.
    pub document: Value,
    validator: jsonschema::Validator,
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
    /// Checks `record` against the schema; on failure, every violation with its pointer.
    pub fn validate(&self, record: &Value) -> Result<(), Vec<Violation>> {
        if self.validator.is_valid(record) {
            return Ok(());
        }
        let mut violations = Vec::new();
        for error in self.validator.iter_errors(record) {
            let at = error.instance_path().as_str();
            match error.kind() {
                // Point at each property that is not allowed, not at the object holding it.
                ValidationErrorKind::AdditionalProperties { unexpected }
                | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
                    violations.extend(unexpected.iter().map(|name| Violation {
                        pointer: format!("{at}/{}", settings::escape_pointer(name)),
                        message: format!("property `{name}` is not allowed here"),
                    }));
                }
                _ => violations.push(Violation {
                    pointer: at.to_owned(),
                    message: error.to_string(),
                }),
            }
        }
        Err(violations)
    }

    /// Checks a primary key value against what the schema says of the key's property (its
    /// type, `pattern`, bounds...); on failure, the first violation's message.
    pub fn check_key(&self, key: &Value) -> Result<(), String> {
        let field = &self.settings.primary_key;
        let record = Value::Object([(field.clone(), key.clone())].into_iter().collect());
        let at = format!("/{}", settings::escape_pointer(field));
        let mut errors = self.validator.iter_errors(&record);
        match errors.find(|e| {
            let path = e.instance_path().as_str();
            path == at || path.starts_with(&format!("{at}/"))
        }) {
            Some(error) => Err(error.to_string()),
            None => Ok(()),
        }
    }

    /// Reads one schema file.
    pub fn load(file: &Path) -> Result<TableSchema, LoadError> {
        let fail = |pointer: &str, reason: String| LoadError {
            file: file.to_owned(),
            pointer: pointer.to_owned(),
            reason,
        };
        let name = file
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| fail("", "the file name is not valid UTF-8".to_owned()))?;
        if !is_table_name(name) {
            return Err(fail(
                "",
                format!("`{name}` is not a table name: use a letter, then letters, digits or `_`"),
            ));
        }
        let text = std::fs::read(file).map_err(|e| fail("", format!("cannot read: {e}")))?;
        let document: Value = serde_json::from_slice(&text).map_err(|e| {
            fail(
                "",
                format!(
                    "not valid JSON: {e} (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            )
        })?;
        let Some(object) = document.as_object() else {
            return Err(fail("", "a schema file must hold a JSON object".to_owned()));
        };
        match object.get("$schema") {
            None => {}
            Some(Value::String(uri)) if uri.trim_end_matches('#') == DRAFT_2020_12 => {}
            Some(_) => {
                return Err(fail(
                    "/$schema",
                    format!(
                        "tablecast reads JSON Schema draft 2020-12: use \"{DRAFT_2020_12}\" or leave `$schema` out"
                    ),
                ));
            }
        }
        if object.get("type") != Some(&Value::from("object")) {
            return Err(fail(
                "/type",
                "a table's schema describes one record: it must say \"type\": \"object\""
                    .to_owned(),
            ));
        }
        let settings = settings::read(object, &fail)?;
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&document)
            .map_err(|e| fail(e.instance_path().as_str(), e.to_string()))?;
        Ok(TableSchema {
            name: name.into(),
            file: file.to_owned(),
            settings,
            document,
            validator,
        })
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
    let entries = std::fs::read_dir(dir)
        .map_err(|e| fail(format!("cannot read the schema directory: {e}")))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "json") && path.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(fail("no schema files (*.json) here".to_owned()));
    }
    let (schemas, errors): (Vec<_>, Vec<_>) = files
        .iter()
        .map(|f| TableSchema::load(f))
        .partition(Result::is_ok);
    if errors.is_empty() {
        Ok(schemas.into_iter().filter_map(Result::ok).collect())
    } else {
        Err(errors.into_iter().filter_map(Result::err).collect())
    }
}

fn is_table_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests;
