//! Links followed for `select()` in a REST listing: `select(name,category{name})` puts the
//! referenced record in place of the key, `select(name,products{name})` the related records.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::{Follower, Linked, Node, Reads, Step};
use crate::access::Identity;
use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::query::evaluate::project;
use crate::query::executor::{Content, ListedRecord, Listing};
use crate::query::{Field, Query, Select};

/// The most related records a relation expanded by `select()` in a listing holds per record.
pub const LISTING_RELATED_LIMIT: usize = 100;

/// Records of a listing expanded a chunk at a time, so that a chunk costs one batch of reads
/// per link and level.
const LISTING_CHUNK: usize = 256;

/// The steps a listing's `select` asks of `table`: every selected reference property with
/// nested properties (`category{name}`), and every selected relation (`products{name}`).
pub fn steps(catalog: &Catalog, table: &str, fields: &[Field]) -> Result<Vec<Step>> {
    let settings = &catalog.resource(table)?.table().schema().settings;
    let mut steps = Vec::new();
    for field in fields {
        let (target, related) = if let Some(target) = settings.references.get(&field.name) {
            if field.children.is_empty() {
                continue;
            }
            (target, Query::default())
        } else if let Some(relation) = settings.relations.get(&field.name) {
            let related = Query {
                limit: Some(LISTING_RELATED_LIMIT),
                ..Query::default()
            };
            (&relation.table, related)
        } else {
            continue;
        };
        steps.push(Step {
            link: field.name.clone(),
            name: field.name.clone(),
            related,
            then: self::steps(catalog, target, &field.children)?,
        });
    }
    Ok(steps)
}

/// `node`'s record with what `steps` reached put in place: a reference property holds the
/// record it names (or null), a relation the array of related records.
pub fn expanded(mut node: Node, steps: &[Step]) -> Value {
    let mut value = std::mem::take(&mut node.value);
    if let Value::Object(fields) = &mut value {
        for step in steps {
            let linked = match node.linked.remove(&step.name) {
                Some(Linked::One(Some(one))) => expanded(*one, &step.then),
                Some(Linked::Many(many)) => {
                    Value::Array(many.into_iter().map(|n| expanded(n, &step.then)).collect())
                }
                Some(Linked::One(None)) | None => Value::Null,
            };
            fields.insert(step.link.clone(), linked);
        }
    }
    value
}

/// `records` (of `table`, read whole) with `steps` taken from them and `select` applied, for
/// `identity`. Call it on the blocking pool: each chunk waits for its reads.
pub fn expand_listing(
    records: Listing,
    (catalog, identity): (Arc<Catalog>, Arc<Identity>),
    table: Arc<str>,
    steps: Vec<Step>,
    select: Select,
) -> Listing {
    let runtime = tokio::runtime::Handle::current();
    let mut records = records.peekable();
    Box::new(
        std::iter::from_fn(move || {
            records.peek()?;
            let mut chunk: Vec<Result<ListedRecord>> = Vec::new();
            let mut nodes: Vec<Node> = Vec::new();
            for listed in records.by_ref().take(LISTING_CHUNK) {
                let listed = match listed {
                    Ok(listed) => listed,
                    Err(error) => {
                        chunk.push(Err(error));
                        break;
                    }
                };
                let value = match listed.content {
                    Content::Stored(bytes) => {
                        serde_json::from_slice(&bytes).map_err(Error::stored_not_json)
                    }
                    Content::Value(value) => Ok(value),
                };
                match value {
                    Ok(value) => nodes.push(Node {
                        table: table.clone(),
                        key: listed.key,
                        version: listed.version,
                        value,
                        linked: HashMap::new(),
                    }),
                    Err(error) => chunk.push(Err(error)),
                }
            }
            let follower = Follower {
                catalog: &catalog,
                identity: &identity,
            };
            let mut refs: Vec<&mut Node> = nodes.iter_mut().collect();
            let followed =
                runtime.block_on(follower.follow(&mut refs, &steps, &mut Reads::default()));
            if let Err(error) = followed {
                return Some(vec![Err(error)]);
            }
            let mut done: Vec<Result<ListedRecord>> = nodes
                .into_iter()
                .map(|node| {
                    let (key, version) = (node.key.clone(), node.version);
                    let value = expanded(node, &steps);
                    Ok(ListedRecord {
                        key,
                        version,
                        content: Content::Value(project(&select, &value)),
                    })
                })
                .collect();
            done.extend(chunk);
            Some(done)
        })
        .flatten(),
    )
}
