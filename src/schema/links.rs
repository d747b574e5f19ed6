//! Links between tables: a property that names a record of another table (`x-references`), and
//! a table's reverse relations (`x-table.relations`), the records of another table that
//! reference it through an indexed property.
//!
//! Each file's links are read with the file; whether the tables they name exist, and have the
//! index a relation reads, is checked once every file is loaded ([`check`]).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::settings::escape_pointer;
use super::{LoadError, TableSchema};
use crate::storage::KeyType;

/// `"relations": {"products": {"table": "Product", "by": "category"}}`: the records of `table`
/// whose property `by` holds this table's primary key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relation {
    /// The table whose records are related.
    pub table: String,
    /// Their property that references this table (an indexed one).
    pub by: String,
}

/// The `x-references` of the top-level properties: property name -> the table it references.
pub fn references(
    properties: &Map<String, Value>,
    fail: &dyn Fn(&str, String) -> LoadError,
) -> Result<BTreeMap<String, String>, Vec<LoadError>> {
    let mut references = BTreeMap::new();
    let mut problems = Vec::new();
    for (name, property) in properties {
        let Some(target) = property.get("x-references") else {
            continue;
        };
        let pointer = format!("/properties/{}/x-references", escape_pointer(name));
        match target {
            Value::String(table) => {
                references.insert(name.clone(), table.clone());
            }
            _ => problems.push(fail(
                &pointer,
                "must name a table (a string, the table's schema file name without `.json`)"
                    .to_owned(),
            )),
        }
    }
    match problems.is_empty() {
        true => Ok(references),
        false => Err(problems),
    }
}

/// Reads `x-table.relations` at `pointer`.
pub fn relations(
    value: &Value,
    pointer: &str,
    fail: &dyn Fn(&str, String) -> LoadError,
) -> Result<BTreeMap<String, Relation>, Vec<LoadError>> {
    let Value::Object(entries) = value else {
        return Err(vec![fail(
            pointer,
            "must be an object: {\"<name>\": {\"table\": \"<Table>\", \"by\": \"<property>\"}}"
                .to_owned(),
        )]);
    };
    let mut relations = BTreeMap::new();
    let mut problems = Vec::new();
    for (name, entry) in entries {
        let here = format!("{pointer}/{}", escape_pointer(name));
        let text = |key: &str| entry.get(key).and_then(Value::as_str).map(str::to_owned);
        let unknown: Vec<&String> = entry
            .as_object()
            .map(|fields| {
                fields
                    .keys()
                    .filter(|key| *key != "table" && *key != "by")
                    .collect()
            })
            .unwrap_or_default();
        match (text("table"), text("by")) {
            _ if !super::is_field_name(name) => problems.push(fail(
                &here,
                format!("`{name}` is not a relation name: use a letter or `_`, then letters, digits or `_`"),
            )),
            (Some(table), Some(by)) if unknown.is_empty() => {
                relations.insert(name.clone(), Relation { table, by });
            }
            (Some(_), Some(_)) => problems.push(fail(
                &format!("{here}/{}", escape_pointer(unknown[0])),
                "a relation has only `table` and `by`".to_owned(),
            )),
            _ => problems.push(fail(
                &here,
                "a relation is {\"table\": \"<Table>\", \"by\": \"<property of that table>\"}"
                    .to_owned(),
            )),
        }
    }
    match problems.is_empty() {
        true => Ok(relations),
        false => Err(problems),
    }
}

/// Every link that names a table not loaded, a key of another type than the target's, or a
/// relation through a property its table does not index.
pub fn check(schemas: &[TableSchema]) -> Vec<LoadError> {
    let find = |name: &str| schemas.iter().find(|schema| &*schema.name == name);
    let mut problems = Vec::new();
    for schema in schemas {
        let fail = |pointer: String, reason: String| LoadError {
            file: schema.file.clone(),
            pointer,
            reason,
        };
        let document = schema.document();
        let properties = document.get("properties");
        for (property, target) in &schema.settings.references {
            let pointer = format!("/properties/{}/x-references", escape_pointer(property));
            let Some(target_schema) = find(target) else {
                problems.push(fail(pointer, unknown_table(target, schemas)));
                continue;
            };
            let key_type = target_schema.settings.key_type;
            let declared = properties
                .and_then(|p| p.get(property))
                .and_then(|p| p.get("type"));
            if !holds(declared, key_type) {
                problems.push(fail(
                    pointer,
                    format!(
                        "`{property}` references `{target}`, whose primary key is {} {}: declare `{property}` with \"type\": \"{}\"",
                        article(key_type),
                        key_type.name(),
                        key_type.name()
                    ),
                ));
            }
        }
        for (name, relation) in &schema.settings.relations {
            let pointer = format!("/x-table/relations/{}", escape_pointer(name));
            if properties.and_then(|p| p.get(name)).is_some() {
                problems.push(fail(
                    pointer.clone(),
                    format!(
                        "`{name}` is also a property of this table: name the relation otherwise"
                    ),
                ));
            }
            let Some(related) = find(&relation.table) else {
                problems.push(fail(
                    format!("{pointer}/table"),
                    unknown_table(&relation.table, schemas),
                ));
                continue;
            };
            let by_type = related
                .document()
                .get("properties")
                .and_then(|p| p.get(&relation.by))
                .map(|p| p.get("type").cloned());
            let key_type = schema.settings.key_type;
            let holds_key = match &by_type {
                Some(Some(Value::String(t))) if t == "array" => {
                    let items = related.document()["properties"][&relation.by]
                        .get("items")
                        .and_then(|i| i.get("type"))
                        .cloned();
                    holds(items.as_ref(), key_type)
                }
                Some(declared) => holds(declared.as_ref(), key_type),
                None => false,
            };
            if by_type.is_none() {
                problems.push(fail(
                    format!("{pointer}/by"),
                    format!(
                        "`{}` has no property `{}`: `by` names the property of the related records that holds this table's key",
                        relation.table, relation.by
                    ),
                ));
                continue;
            }
            if !holds_key {
                problems.push(fail(
                    format!("{pointer}/by"),
                    format!(
                        "`{}.{}` must hold this table's key, {} {}, or an array of them",
                        relation.table,
                        relation.by,
                        article(key_type),
                        key_type.name()
                    ),
                ));
            }
            if !related.settings.indexes.contains(&relation.by) {
                problems.push(fail(
                    format!("{pointer}/by"),
                    format!(
                        "`{}.{}` is not indexed: a relation reads it through its index; add \"{}\" to /x-table/indexes of {}",
                        relation.table,
                        relation.by,
                        relation.by,
                        related.file.display()
                    ),
                ));
            }
        }
    }
    problems
}

fn unknown_table(name: &str, schemas: &[TableSchema]) -> String {
    let known: Vec<&str> = schemas.iter().map(|s| &*s.name).collect();
    format!("no table `{name}`: the tables are {}", known.join(", "))
}

/// Whether a property of the declared `type` can hold keys of `key_type` (and null).
fn holds(declared: Option<&Value>, key_type: KeyType) -> bool {
    let wanted = key_type.name();
    match declared {
        Some(Value::String(t)) => t == wanted,
        Some(Value::Array(types)) => {
            types.iter().any(|t| t == wanted) && types.iter().all(|t| t == wanted || t == "null")
        }
        _ => false,
    }
}

fn article(key_type: KeyType) -> &'static str {
    match key_type {
        KeyType::Integer => "an",
        KeyType::String => "a",
    }
}
