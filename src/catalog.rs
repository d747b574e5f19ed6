//! The catalog: which resource serves each table name.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::schema::TableSchema;
use crate::storage::Store;
use crate::table::Table;

/// What serves a table's URL space.
pub enum Resource {
    /// A table of our own.
    Local(Table),
}

/// Every table, by name.
pub struct Catalog {
    resources: BTreeMap<Arc<str>, Resource>,
}

impl Catalog {
    /// Opens a resource for every schema.
    pub fn open(schemas: Vec<TableSchema>, store: &Arc<Store>) -> Result<Catalog> {
        let mut resources = BTreeMap::new();
        for schema in schemas {
            let name = schema.name.clone();
            resources.insert(name, Resource::Local(Table::open(schema, store.clone())?));
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
}
