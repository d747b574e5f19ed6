//! The `x-table` extension keyword: how a schema file configures its table.

use serde_json::{Map, Value};

use std::collections::BTreeMap;
use std::time::Duration;

use super::LoadError;
use super::cache_settings::{self, CacheSettings};
use super::links::{self, Relation};
use crate::config::parse_duration;
use crate::storage::KeyType;

/// The keys `x-table` accepts today.
const KNOWN_KEYS: &str = "primaryKey, indexes, timestamps, cache, relations, maxAge";
/// Property names maintained when `timestamps` is on.
pub const CREATED_AT: &str = "createdAt";
/// See [`CREATED_AT`].
pub const UPDATED_AT: &str = "updatedAt";

/// The table settings read from `x-table`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSettings {
    /// The primary key property.
    pub primary_key: String,
    /// The primary key's type, from the property's declared `type`.
    pub key_type: KeyType,
    /// Declared secondary indexes (property names, or dotted paths into nested objects).
    pub indexes: Vec<String>,
    /// Whether `createdAt` / `updatedAt` (epoch ms) are maintained in every record.
    pub timestamps: bool,
    /// Present on a cache table: the origin it mirrors.
    pub cache: Option<CacheSettings>,
    /// Top-level properties that hold the primary key of another table's record
    /// (`x-references`): property name -> table name.
    pub references: BTreeMap<String, String>,
    /// Reverse relations (`relations`): name -> the records of another table that reference
    /// this one.
    pub relations: BTreeMap<String, Relation>,
    /// How long answers that read this table (of our own) may be cached downstream
    /// (`maxAge`); `None`: they are revalidated with their `ETag`.
    pub max_age: Option<Duration>,
}

/// Reads and checks `x-table` against the rest of the schema document `doc`; on failure, every
/// problem found, so one start-up reports them all.
pub fn read(
    doc: &Map<String, Value>,
    fail: &dyn Fn(&str, String) -> LoadError,
) -> Result<TableSettings, Vec<LoadError>> {
    let mut problems = Vec::new();
    let empty = Map::new();
    let x_table = match doc.get("x-table") {
        None => &empty,
        Some(Value::Object(x_table)) => x_table,
        Some(_) => {
            return Err(vec![fail(
                "/x-table",
                "`x-table` must be an object".to_owned(),
            )]);
        }
    };
    let mut primary_key = "id".to_owned();
    let mut indexes = Vec::new();
    let mut timestamps = false;
    let mut cache = None;
    let mut relations = BTreeMap::new();
    let mut max_age = None;
    for (name, value) in x_table {
        let pointer = format!("/x-table/{}", escape_pointer(name));
        let mut problem = |reason: String| problems.push(fail(&pointer, reason));
        match (name.as_str(), value) {
            ("primaryKey", Value::String(key)) => primary_key.clone_from(key),
            ("primaryKey", _) => problem("must be a property name (a string)".to_owned()),
            ("indexes", Value::Array(list)) => {
                for (i, entry) in list.iter().enumerate() {
                    match entry {
                        Value::String(path) => {
                            indexes.push((format!("{pointer}/{i}"), path.clone()))
                        }
                        _ => problems.push(fail(
                            &format!("{pointer}/{i}"),
                            "an index is a property name (a string)".to_owned(),
                        )),
                    }
                }
            }
            ("indexes", _) => problem("must be an array of property names".to_owned()),
            ("timestamps", Value::Bool(on)) => timestamps = *on,
            ("timestamps", _) => problem("must be true or false".to_owned()),
            ("cache", value) => match cache_settings::read(value, &pointer, fail) {
                Ok(settings) => cache = Some(settings),
                Err(found) => problems.extend(found),
            },
            ("relations", value) => match links::relations(value, &pointer, fail) {
                Ok(read) => relations = read,
                Err(found) => problems.extend(found),
            },
            ("maxAge", Value::String(text)) => match parse_duration(text) {
                Ok(duration) => max_age = Some(duration),
                Err(reason) => problem(format!("{reason} (a duration such as \"30s\")")),
            },
            ("maxAge", _) => problem("must be a duration string such as \"30s\"".to_owned()),
            ("expiration", _) => {
                problem(format!(
                    "`{name}` is not supported by this version of tablecast"
                ));
            }
            _ => problem(format!(
                "unknown setting `{name}`; expected one of {KNOWN_KEYS}"
            )),
        }
    }

    if cache.is_some() && max_age.is_some() {
        problems.push(fail(
            "/x-table/maxAge",
            "`maxAge` is for tables of our own: answers from a cache table are fresh as long as its entries".to_owned(),
        ));
    }
    let properties = doc
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let references = links::references(properties, fail).unwrap_or_else(|found| {
        problems.extend(found);
        BTreeMap::new()
    });
    let key_pointer = format!("/properties/{}", escape_pointer(&primary_key));
    let key_type = match properties.get(&primary_key).and_then(|p| p.get("type")) {
        Some(Value::String(t)) if t == "string" => Some(KeyType::String),
        Some(Value::String(t)) if t == "integer" => Some(KeyType::Integer),
        Some(_) => {
            problems.push(fail(
                &format!("{key_pointer}/type"),
                format!(
                    "the primary key `{primary_key}` must have \"type\": \"string\" or \"type\": \"integer\""
                ),
            ));
            None
        }
        None => {
            problems.push(fail(
                "/properties",
                format!(
                    "the primary key `{primary_key}` must be declared here with \"type\": \"string\" or \"integer\""
                ),
            ));
            None
        }
    };

    let mut seen = Vec::new();
    for (pointer, path) in indexes {
        let top = path.split('.').next().unwrap_or_default();
        let problem = if path.is_empty() || path.split('.').any(str::is_empty) {
            Some(format!("`{path}` is not a property name or dotted path"))
        } else if !properties.contains_key(top) {
            Some(format!(
                "indexed property `{top}` is not declared in /properties"
            ))
        } else if path == primary_key {
            Some(format!(
                "`{path}` is the primary key, which is always indexed"
            ))
        } else if seen.contains(&path) {
            Some(format!("`{path}` is indexed twice"))
        } else {
            None
        };
        match problem {
            Some(reason) => problems.push(fail(&pointer, reason)),
            None => seen.push(path),
        }
    }

    if timestamps && doc.get("additionalProperties") == Some(&Value::Bool(false)) {
        for field in [CREATED_AT, UPDATED_AT] {
            if !properties.contains_key(field) {
                problems.push(fail(
                    "/x-table/timestamps",
                    format!(
                        "timestamps add `{field}`, which \"additionalProperties\": false forbids; declare it in /properties as an integer"
                    ),
                ));
            }
        }
    }

    match key_type {
        Some(key_type) if problems.is_empty() => Ok(TableSettings {
            primary_key,
            key_type,
            indexes: seen,
            timestamps,
            cache,
            references,
            relations,
            max_age,
        }),
        _ => Err(problems),
    }
}

/// Escapes a property name for use as a JSON pointer segment (RFC 6901).
pub fn escape_pointer(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}
