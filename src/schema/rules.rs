//! A schema's rules, compiled: the validator, the defaults and the document they come from.
//! They are what a reload of the schema files may replace while the server runs.

use std::sync::Arc;

use jsonschema::error::ValidationErrorKind;
use serde_json::Value;

use super::settings::{self, TableSettings};
use crate::error::Violation;

/// The compiled rules of one schema document.
pub(super) struct Rules {
    /// The schema document as written.
    pub document: Arc<Value>,
    validator: jsonschema::Validator,
    /// The `default` of each property that has one, nested objects included.
    defaults: Vec<PropertyDefault>,
}

impl Rules {
    /// Compiles `document`, whose top-level properties `owned` the server sets (their defaults
    /// are not applied); on failure, each JSON pointer into it with its reason.
    pub fn compile(document: Value, owned: &[&str]) -> Result<Rules, Vec<(String, String)>> {
        let at = |e: &jsonschema::ValidationError<'_>| {
            (e.instance_path().as_str().to_owned(), e.to_string())
        };
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&document)
            .map_err(|error| {
                // The compiler stops at the first problem; the meta-schema names them all.
                let meta = jsonschema::draft202012::meta::validator();
                let all: Vec<_> = meta.iter_errors(&document).map(|e| at(&e)).collect();
                if all.is_empty() {
                    vec![at(&error)]
                } else {
                    all
                }
            })?;
        let mut defaults = defaults_of(&document);
        defaults.retain(|default| !owned.contains(&default.name.as_str()));
        Ok(Rules {
            defaults,
            document: Arc::new(document),
            validator,
        })
    }

    /// Gives a new record the `default` of every property it leaves out.
    pub fn complete(&self, record: &mut Value) {
        if let Value::Object(fields) = record {
            apply_defaults(&self.defaults, fields);
        }
    }

    /// Checks `record`; on failure, every violation with its pointer.
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
    pub fn check_key(&self, table: &TableSettings, key: &Value) -> Result<(), String> {
        let field = &table.primary_key;
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
