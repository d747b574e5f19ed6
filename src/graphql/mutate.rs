//! Mutations: `putT`, `patchT`, `createT`, `deleteT`, through the same write path as REST.

use std::sync::Arc;

use async_graphql::dynamic::{FieldFuture, FieldValue, ResolverContext};
use serde_json::Value;

use super::failure;
use super::resolve::{parse_id, prefetched, scope};
use crate::access::{Reader, Write};
use crate::catalog::Resource;
use crate::error::Error;
use crate::follow::Node;
use crate::storage::Commit;
use crate::table::Precondition;

/// A mutation of table records.
#[derive(Clone, Copy, Debug)]
pub enum Mutation {
    Put,
    Patch,
    Create,
    Delete,
}

/// `putT`, `patchT`, `createT`, `deleteT`: through the same write path as REST.
pub fn mutate(
    table: Arc<str>,
    mutation: Mutation,
) -> impl for<'a> Fn(ResolverContext<'a>) -> FieldFuture<'a> + Send + Sync {
    move |ctx| {
        let table = table.clone();
        FieldFuture::new(async move {
            let scope = scope(&ctx)?;
            let identity = &scope.identity;
            let resource = scope.catalog.resource(&table).map_err(failure)?;
            let body = |name: &str| -> async_graphql::Result<Value> {
                Ok(ctx.args.try_get(name)?.as_value().clone().into_json()?)
            };
            let records = resource.table();
            let (commit, reader) = match (resource, mutation) {
                (Resource::Local(records), Mutation::Put | Mutation::Patch | Mutation::Delete) => {
                    let key = parse_id(scope, &table, &ctx.args)?;
                    let write = match mutation {
                        Mutation::Put => Write::Put,
                        Mutation::Patch => Write::Patch,
                        _ => Write::Delete,
                    };
                    let (guard, reader) = identity.write_guard(records, write).map_err(failure)?;
                    let precondition = Precondition {
                        guard,
                        ..Precondition::default()
                    };
                    let commit = match mutation {
                        Mutation::Put => records.put(key, body("record")?, precondition).await,
                        Mutation::Patch => records.patch(key, body("patch")?, precondition).await,
                        _ => records.delete(key, precondition).await,
                    };
                    (commit.map_err(failure)?, reader)
                }
                (Resource::Local(records), Mutation::Create) => {
                    let (guard, reader) = identity
                        .write_guard(records, Write::Create)
                        .map_err(failure)?;
                    let commit = records
                        .create(body("record")?, guard)
                        .await
                        .map_err(failure)?;
                    (commit, reader)
                }
                (Resource::Cached(cache), Mutation::Put) => {
                    let key = parse_id(scope, &table, &ctx.args)?;
                    identity
                        .may_write_cache(records, Write::Put)
                        .map_err(failure)?;
                    let commit = cache
                        .push(key, body("record")?, Precondition::default(), None)
                        .await
                        .map_err(failure)?;
                    (commit, identity.reader(records))
                }
                (Resource::Cached(cache), Mutation::Delete) => {
                    let key = parse_id(scope, &table, &ctx.args)?;
                    identity
                        .may_write_cache(records, Write::Delete)
                        .map_err(failure)?;
                    cache
                        .evict(key, Precondition::default())
                        .await
                        .map_err(failure)?;
                    return Ok(Some(FieldValue::value(true)));
                }
                (Resource::Cached(_), _) => {
                    return Err(async_graphql::Error::new("not a mutation of a cache table"));
                }
            };
            if let Mutation::Delete = mutation {
                return Ok(Some(FieldValue::value(true)));
            }
            match written(commit, &reader).map_err(failure)? {
                Some(node) => prefetched(scope, node, ctx.ctx.field().selection_set()).await,
                None => Ok(None),
            }
        })
    }
}

/// The record a write stored, as its writer may read it.
fn written(commit: Commit, reader: &Reader) -> Result<Option<Node>, Error> {
    let Some(record) = commit.record else {
        return Ok(None);
    };
    Node::shown(
        &commit.table,
        commit.key,
        record.version,
        &record.value,
        reader,
    )
}
