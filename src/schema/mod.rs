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
        match self.pointer.as_str() {
            "" => write!(f, "{}: {}", self.file.display(), self.reason),
            pointer => write!(f, "{}#{pointer}: {}", self.file.display(), self.reason),
        }
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
    /// The `default` of each property that has one, nested objects included.
    defaults: Vec<PropertyDefault>,
}

/// A property's `default`, and those of the properties inside it.
#[derive(Debug)]
struct PropertyDefault {
    name: String,
    value: Option<Value>,
    inside: Vec<PropertyDefault>,
}

/// The defaults declared under `properties` of `schema`, at any depth of nested objects.
fn defaults_of(schema: &Value) -> Vec<PropertyDefault> {
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    properties
        .iter()
        .map(|(name, property)| PropertyDefault {
            name: name.clone(),
            value: property.get("default").cloned(),
            inside: defaults_of(property),
        })
        .filter(|default| default.value.is_some() || !default.inside.is_empty())
        .collect()
}

fn apply_defaults(defaults: &[PropertyDefault], object: &mut serde_json::Map<String, Value>) {
    for default in defaults {
        if !object.contains_key(&default.name)
            && let Some(value) = &default.value
        {
            object.insert(default.name.clone(), value.clone());
        }
        if let Some(Value::Object(inner)) = object.get_mut(&default.name) {
            apply_defaults(&default.inside, inner);
        }
    }
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
    /// Gives a new record the `default` of every property it leaves out, in objects it has
    /// (a default of a property inside an absent object applies only if that object is made
    /// by its own default).
    pub fn complete(&self, record: &mut Value) {
        if let Value::Object(fields) = record {
            apply_defaults(&self.defaults, fields);
        }
    }

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
                // Point at the missing property itself, where the client must add it.
                ValidationErrorKind::Required { property } => {
                    let name = property.as_str().unwrap_or_default();
                    violations.push(Violation {
                        pointer: format!("{at}/{}", settings::escape_pointer(name)),
                        message: format!("property `{name}` is required"),
                    });
                }
                ValidationErrorKind::Enum { options } => violations.push(Violation {
                    pointer: at.to_owned(),
                    message: format!(
                        "{} is not one of the allowed values: {}",
                        error.instance(),
                        listed(options)
                    ),
                }),
                ValidationErrorKind::Format { format } => violations.push(Violation {
                    pointer: at.to_owned(),
                    message: format!(
                        "{} is not a valid {}",
                        error.instance(),
                        format_name(format)
                    ),
                }),
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
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&document)
            .map_err(|e| problems.push(fail(e.instance_path().as_str(), e.to_string())));
        match (settings, validator) {
            (Ok(settings), Ok(validator)) if problems.is_empty() => Ok(TableSchema {
                name: name.into(),
                file: file.to_owned(),
                settings,
                defaults: defaults_of(&document),
                document,
                validator,
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
    if problems.is_empty() {
        Ok(schemas)
    } else {
        Err(problems)
    }
}

/// Every allowed value of an `enum`, in the schema's order.
fn listed(options: &Value) -> String {
    match options {
        Value::Array(values) => values
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

/// A `format` in words, as a client reads it in an error.
fn format_name(format: &str) -> String {
    let words = match format {
        "email" | "idn-email" => "email address",
        "date-time" => "date-time (RFC 3339, as 2026-12-04T10:00:00Z)",
        "date" => "date (RFC 3339, as 2026-12-04)",
        "time" => "time (RFC 3339, as 10:00:00Z)",
        "uri" | "iri" => "URI",
        "uri-reference" | "iri-reference" => "URI reference",
        "uuid" => "UUID",
        "ipv4" => "IPv4 address",
        "ipv6" => "IPv6 address",
        "hostname" | "idn-hostname" => "host name",
        "duration" => "duration (ISO 8601, as P1DT2H)",
        "regex" => "regular expression",
        "json-pointer" => "JSON pointer",
        other => return format!("`{other}`"),
    };
    words.to_owned()
}

fn is_table_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests;
