//! The catalog: which resource serves each table name, and the reload of their schemas.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::cache::CachedTable;
use crate::clock::Clock;
use crate::error::{Chain, Error, Result};
use crate::schema::{self, LoadError, TableSchema, TableSettings};
use crate::storage::{Key, Store};
use crate::table::{Guard, Precondition, Table};

/// What serves a table's URL space.
pub enum Resource {
    /// A table of our own.
    Local(Table),
    /// A table that mirrors an HTTP origin.
    Cached(CachedTable),
}

impl Resource {
    /// The table that stores the resource's records.
    pub fn table(&self) -> &Table {
        match self {
            Resource::Local(table) => table,
            Resource::Cached(cache) => cache.table(),
        }
    }

    /// Writes `record` under `key` as a `PUT` without preconditions does, if `guard` lets it:
    /// a cache table stores it as a pushed value. Returns the new version once it is durable.
    pub async fn put(
        &self,
        key: Key,
        record: serde_json::Value,
        guard: Option<Guard>,
    ) -> Result<u64> {
        let guarded = Precondition {
            guard,
            ..Precondition::default()
        };
        let commit = match self {
            Resource::Local(table) => table.put(key, record, guarded).await?,
            Resource::Cached(cache) => cache.push(key, record, guarded, None).await?,
        };
        Ok(commit.version)
    }

    /// Removes the record `key` as a `DELETE` without preconditions does, if `guard` lets it (a
    /// cache table evicts it).
    pub async fn delete(&self, key: Key, guard: Option<Guard>) -> Result<()> {
        let guarded = Precondition {
            guard,
            ..Precondition::default()
        };
        match self {
            Resource::Local(table) => table.delete(key, guarded).await.map(drop),
            Resource::Cached(cache) => cache.evict(key, guarded).await,
        }
    }
}

/// Every table, by name.
pub struct Catalog {
    resources: BTreeMap<Arc<str>, Resource>,
}

impl Catalog {
    /// Opens a resource for every schema. Cache tables read time from `clock` and accept
    /// origin bodies of at most `max_body` bytes.
    pub fn open(
        schemas: Vec<TableSchema>,
        store: &Arc<Store>,
        clock: &Clock,
        max_body: usize,
    ) -> Result<Catalog> {
        let mut resources = BTreeMap::new();
        for schema in schemas {
            let name = schema.name.clone();
            let cached = schema.settings.cache.is_some();
            let table = Table::open(schema, store.clone())?;
            let resource = if cached {
                Resource::Cached(CachedTable::open(table, clock.clone(), max_body)?)
            } else {
                Resource::Local(table)
            };
            resources.insert(name, resource);
        }
        Ok(Catalog { resources })
    }

    /// The resource serving `name`.
    pub fn resource(&self, name: &str) -> Result<&Resource> {
        self.resources
            .get(name)
            .ok_or_else(|| Error::UnknownTable(name.to_owned()))
    }

    /// All resources in name order.
    pub fn resources(&self) -> impl Iterator<Item = &Resource> {
        self.resources.values()
    }

    /// The cache tables.
    pub fn caches(&self) -> impl Iterator<Item = &CachedTable> {
        self.resources().filter_map(|resource| match resource {
            Resource::Cached(cache) => Some(cache),
            Resource::Local(_) => None,
        })
    }

    /// Reloads the schema files of `dir` (SIGHUP): a table whose document changed takes the new
    /// one if no record it stores that meets the running schema would break it, and if its
    /// `x-table` settings are the same (they shape storage and are read at start). All or
    /// nothing: on any refusal, each reason, and every table keeps the schema it has. On
    /// success, the tables whose schema changed.
    ///
    /// Reads every record of a changed table, so it belongs on the blocking pool.
    pub fn reload_schemas(&self, dir: &Path, now: u64) -> Result<Vec<Arc<str>>, Vec<String>> {
        let schemas = schema::load_dir(dir)
            .map_err(|problems| problems.iter().map(ToString::to_string).collect::<Vec<_>>())?;
        let mut refusals: Vec<String> = self
            .resources
            .keys()
            .filter(|name| !schemas.iter().any(|s| s.name == **name))
            .map(|name| {
                format!("table `{name}` has no schema file now: removing a table needs a restart")
            })
            .collect();
        let mut changed = Vec::new();
        for newer in schemas {
            let file = newer.file.display().to_string();
            let Some(resource) = self.resources.get(&newer.name) else {
                refusals.push(format!("{file}: a new table needs a restart"));
                continue;
            };
            let table = resource.table();
            let running = table.schema();
            if newer.settings != running.settings {
                let what = settings_change(&running.settings, &newer.settings);
                refusals.push(format!(
                    "{file}#/x-table: {what}; table settings are read at start: restart to apply them"
                ));
                continue;
            }
            if newer.document() == running.document() {
                continue;
            }
            match table.newly_breaking(&newer, now) {
                Ok(report) if report.breaking == 0 => changed.push((table, newer)),
                Ok(report) => refusals.push(format!(
                    "{file}: {} of {} stored records would break it, first: {}",
                    report.breaking,
                    report.records,
                    report.lines(table.name()).collect::<Vec<_>>().join("; ")
                )),
                Err(error) => refusals.push(format!(
                    "{file}: the stored records could not be checked: {}",
                    Chain(&error)
                )),
            }
        }
        if !refusals.is_empty() {
            return Err(refusals);
        }
        let mut names = Vec::new();
        for (table, newer) in changed {
            // Records that broke the schema it had may break this one too: GET /T says so.
            let before = table.conformance().filter(|report| report.breaking > 0);
            table.schema().adopt(newer);
            if before.is_some() {
                match table.check_records(now) {
                    Ok(report) => table.show_conformance(report),
                    Err(error) => {
                        tracing::warn!(table = table.name(), error = %Chain(&error), "the stored records could not be checked against the reloaded schema")
                    }
                }
            }
            names.push(table.schema().name.clone());
        }
        Ok(names)
    }
}

/// What differs between two tables' settings, in words.
fn settings_change(running: &TableSettings, newer: &TableSettings) -> String {
    // Every field named, so a new one cannot be left out of the comparison.
    let TableSettings {
        primary_key,
        key_type,
        indexes,
        timestamps,
        cache,
        references,
        relations,
        max_age,
    } = newer;
    let added: Vec<&String> = indexes
        .iter()
        .filter(|path| !running.indexes.contains(path))
        .collect();
    let dropped: Vec<&String> = running
        .indexes
        .iter()
        .filter(|path| !indexes.contains(path))
        .collect();
    let mut changes = Vec::new();
    if *primary_key != running.primary_key || *key_type != running.key_type {
        changes.push("the primary key changed".to_owned());
    }
    if !added.is_empty() {
        changes.push(format!(
            "new index {added:?}: an index is built from the records at start"
        ));
    }
    if !dropped.is_empty() {
        changes.push(format!("index {dropped:?} dropped"));
    }
    if added.is_empty() && dropped.is_empty() && *indexes != running.indexes {
        changes.push("the order of the indexes changed".to_owned());
    }
    if *timestamps != running.timestamps {
        changes.push("`timestamps` changed".to_owned());
    }
    if *cache != running.cache {
        changes.push("`cache` changed".to_owned());
    }
    if *references != running.references {
        changes.push("an `x-references` changed".to_owned());
    }
    if *relations != running.relations {
        changes.push("`relations` changed".to_owned());
    }
    if *max_age != running.max_age {
        changes.push("`maxAge` changed".to_owned());
    }
    changes.join("; ")
}

/// A problem for each schema that declares another key type than its table's stored records
/// have: the records cannot be read under it.
pub fn key_types_kept(schemas: &[TableSchema], store: &Store) -> Result<Vec<LoadError>> {
    let mut problems = Vec::new();
    for schema in schemas {
        let declared = schema.settings.key_type;
        let Some((stored, records)) = store.stored_key_type(&schema.name)? else {
            continue;
        };
        if stored != declared && records > 0 {
            problems.push(LoadError {
                file: schema.file.clone(),
                pointer: format!(
                    "/properties/{}/type",
                    schema::settings::escape_pointer(&schema.settings.primary_key)
                ),
                reason: format!(
                    "table `{}` holds {records} records with {} keys, which this {} key cannot read; put the type back, or serve this schema on a new --data directory and load the records again",
                    schema.name,
                    stored.name(),
                    declared.name()
                ),
            });
        }
    }
    Ok(problems)
}
