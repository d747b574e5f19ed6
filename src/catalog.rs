//! The catalog: which resource serves each table name.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::cache::CachedTable;
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::schema::TableSchema;
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
}
