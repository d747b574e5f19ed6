//! What the fields of the generated schema read and write: records by id, pages of a query,
//! properties, references and relations, and the mutations.
//!
//! A resolver that produces records (a root field, a mutation) follows every reference and
//! relation its selection asks for before returning them, a level at a time for all of them
//! together (`Scope::follow`); the reference and relation fields then only hand out what was
//! read. Everything read is noted in the request's [`Scope`], for the answer's `ETag`,
//! freshness and invalidation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_graphql::dynamic::{FieldFuture, FieldValue, ObjectAccessor, ResolverContext};
use async_graphql::{ErrorExtensions, Name, SelectionField, Value as GqlValue};
use serde_json::Value;

use super::arguments::{
    Cursor, bound, decode_cursor, encode_cursor, page_size, related_query, where_conditions,
};
use super::failure;
use super::page::Page;
use super::shape::Shape;
use crate::access::Identity;
use crate::catalog::Catalog;
use crate::error::{Cause, Error};
use crate::follow::{Follower, Linked, Node, Reads, Step};
use crate::query::Query;
use crate::query::executor::{self, Content};
use crate::storage::Key;

type Resolved<'a> = async_graphql::Result<Option<FieldValue<'a>>>;

/// What one request reads with, and what it read.
pub struct Scope {
    pub catalog: Arc<Catalog>,
    pub identity: Arc<Identity>,
    /// What was read; `None` on a WebSocket connection, whose answers are not cached.
    reads: Option<Mutex<Reads>>,
}

impl Scope {
    /// A scope for `identity`'s request, noting what it reads.
    pub fn new(catalog: Arc<Catalog>, identity: Arc<Identity>) -> Scope {
        Scope {
            catalog,
            identity,
            reads: Some(Mutex::default()),
        }
    }

    /// A scope for `identity`'s WebSocket connection.
    pub fn streaming(catalog: Arc<Catalog>, identity: Arc<Identity>) -> Scope {
        Scope {
            catalog,
            identity,
            reads: None,
        }
    }

    fn follower(&self) -> Follower<'_> {
        Follower {
            catalog: &self.catalog,
            identity: &self.identity,
        }
    }

    /// Follows from `nodes` (records of `table`) the links `selection` asks for, a level at a
    /// time, noting what is read.
    async fn follow<'a>(
        &self,
        nodes: &mut [&mut Node],
        table: &str,
        selection: impl Iterator<Item = SelectionField<'a>>,
    ) -> async_graphql::Result<()> {
        let steps = steps(&self.catalog, table, selection)?;
        if steps.is_empty() {
            return Ok(());
        }
        let mut reads = Reads::default();
        let followed = self.follower().follow(nodes, &steps, &mut reads).await;
        self.note(reads);
        followed.map_err(failure)
    }

    fn note(&self, reads: Reads) {
        if let Some(noted) = &self.reads {
            noted
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .merge(reads);
        }
    }

    /// What the request read, taken out of the scope.
    pub fn take_reads(&self) -> Reads {
        match &self.reads {
            Some(noted) => {
                std::mem::take(&mut *noted.lock().unwrap_or_else(PoisonError::into_inner))
            }
            None => Reads::default(),
        }
    }
}

pub(super) fn scope<'a>(ctx: &ResolverContext<'a>) -> async_graphql::Result<&'a Scope> {
    Ok(ctx.data::<Arc<Scope>>()?.as_ref())
}

/// Where a link field's records are kept in its record's [`Node::linked`]: its place in the
/// answer, with the arguments it was asked with, so that two fields of one record that share
/// an alias (under `nodes` and under `edges { node }`) keep what each asked for.
fn step_name(field: &SelectionField<'_>) -> async_graphql::Result<String> {
    let key = field.alias().unwrap_or(field.name());
    let mut arguments = field.arguments()?;
    arguments.sort_by(|(a, _), (b, _)| a.cmp(b));
    let arguments: Vec<String> = arguments.iter().map(|(n, v)| format!("{n}:{v}")).collect();
    Ok(format!(
        "{key}\u{0}{}\u{0}{}",
        field.name(),
        arguments.join(",")
    ))
}

/// `T(id:)`: one record, or null.
pub fn record(
    table: Arc<str>,
) -> impl for<'a> Fn(ResolverContext<'a>) -> FieldFuture<'a> + Send + Sync {
    move |ctx| {
        let table = table.clone();
        FieldFuture::new(async move {
            let scope = scope(&ctx)?;
            let key = parse_id(scope, &table, &ctx.args)?;
            let mut reads = Reads::default();
            let mut found = scope
                .follower()
                .load(&table, vec![key.clone()], &mut reads)
                .await
                .map_err(failure)?;
            let node = found.remove(&key);
            scope.note(reads);
            match node {
                Some(node) => prefetched(scope, node, ctx.ctx.field().selection_set()).await,
                None => Ok(None),
            }
        })
    }
}

/// `node` with the links its selection follows, as the field's value.
pub(super) async fn prefetched<'a>(
    scope: &Scope,
    mut node: Node,
    selection: impl Iterator<Item = SelectionField<'a>>,
) -> Resolved<'a> {
    let table = node.table.clone();
    scope.follow(&mut [&mut node], &table, selection).await?;
    Ok(Some(FieldValue::owned_any(node)))
}

/// The steps that `selection`, made on records of `table`, asks for: its reference and
/// relation fields, and theirs in turn.
fn steps<'a>(
    catalog: &Catalog,
    table: &str,
    selection: impl Iterator<Item = SelectionField<'a>>,
) -> async_graphql::Result<Vec<Step>> {
    let settings = &catalog
        .resource(table)
        .map_err(failure)?
        .table()
        .schema()
        .settings;
    let mut steps = Vec::new();
    for field in selection {
        let link = field.name();
        let (target, related) = if let Some(target) = settings.references.get(link) {
            (target.as_str(), Query::default())
        } else if let Some(relation) = settings.relations.get(link) {
            let arguments: HashMap<Name, GqlValue> = field.arguments()?.into_iter().collect();
            let argument = |name: &str| arguments.get(name).filter(|v| **v != GqlValue::Null);
            let related = related_query(
                catalog,
                &relation.table,
                argument("filter"),
                argument("sort"),
                argument("first"),
            )?;
            (relation.table.as_str(), related)
        } else {
            continue;
        };
        steps.push(Step {
            link: link.to_owned(),
            name: step_name(&field)?,
            related,
            then: self::steps(catalog, target, field.selection_set())?,
        });
    }
    Ok(steps)
}

/// `TList(filter:, where:, sort:, first:, after:)`: a page of the records that match.
pub fn list(
    table: Arc<str>,
    wheres: Arc<Vec<(String, Vec<String>)>>,
) -> impl for<'a> Fn(ResolverContext<'a>) -> FieldFuture<'a> + Send + Sync {
    move |ctx| {
        let (table, wheres) = (table.clone(), wheres.clone());
        FieldFuture::new(async move {
            let scope = scope(&ctx)?;
            let resource = scope.catalog.resource(&table).map_err(failure)?;
            let records = resource.table().clone();
            let reader = scope.identity.reader(&records);
            if reader.nothing() {
                return Err(failure(
                    scope.identity.refusal(format!("read table `{table}`")),
                ));
            }
            let arg = |name: &str| ctx.args.get(name).filter(|v| !v.is_null());
            let text = |name: &str| arg(name).map(|v| v.string().map(str::to_owned)).transpose();
            let wanted = match arg("where") {
                Some(wanted) => where_conditions(&wanted.object()?, &wheres)?,
                None => Vec::new(),
            };
            let first = arg("first").map(|v| v.i64()).transpose()?;
            let first = page_size(first)?;
            let document = records.schema().document();
            let filter = text("filter")?;
            let sort = text("sort")?;
            let mut query = bound(&document, filter.as_deref(), wanted, sort.as_deref())?;
            query.limit = Some(first + 1);
            let key_order = executor::key_order(&records, &query).is_some();
            if let Some(cursor) = text("after")? {
                match decode_cursor(&cursor) {
                    Some(Cursor::After(id)) if key_order => query.after = Some((id, 0)),
                    Some(Cursor::Offset(n)) => query.offset = n,
                    _ => {
                        return Err(async_graphql::Error::new(format!(
                            "`after` is {cursor:?}: give the `endCursor` of the previous page of this query"
                        ))
                        .extend_with(|_, e| e.set("code", "bad-request")));
                    }
                }
            }
            reader.check_query(&query).map_err(failure)?;
            reader.restrict(&mut query);
            let want_total = ctx.look_ahead().field("totalCount").exists();
            let offset = query.offset;
            let read = tokio::task::spawn_blocking(move || {
                let total = match want_total {
                    true => {
                        let mut counted = query.clone();
                        counted.offset = 0;
                        counted.after = None;
                        Some(executor::count(&records, &counted)?)
                    }
                    false => None,
                };
                let name = records.schema().name.clone();
                let mut nodes = Vec::new();
                for listed in executor::execute(&records, query)? {
                    let listed = listed?;
                    let Content::Stored(bytes) = listed.content else {
                        continue;
                    };
                    let shown = Node::shown(&name, listed.key, listed.version, &bytes, &reader)?;
                    nodes.extend(shown);
                }
                Ok::<_, Error>((nodes, total))
            })
            .await
            .map_err(|e| failure(Error::Internal(Cause::of("a GraphQL list task failed", e))))?;
            let (mut nodes, total) = read.map_err(failure)?;
            let has_next = nodes.len() > first;
            nodes.truncate(first);
            let mut reads = Reads::default();
            reads.tables.insert(table.clone());
            reads.batches += 1;
            for node in &nodes {
                reads.record(node);
            }
            scope.note(reads);
            // The records' own selection: under `nodes`, and under `edges { node }`.
            let mut selections = Vec::new();
            for field in ctx.ctx.field().selection_set() {
                match field.name() {
                    "nodes" => selections.extend(field.selection_set()),
                    "edges" => {
                        for edge in field.selection_set().filter(|f| f.name() == "node") {
                            selections.extend(edge.selection_set());
                        }
                    }
                    _ => {}
                }
            }
            let mut refs: Vec<&mut Node> = nodes.iter_mut().collect();
            scope
                .follow(&mut refs, &table, selections.into_iter())
                .await?;
            let edges = nodes
                .into_iter()
                .enumerate()
                .map(|(i, node)| {
                    let cursor = match key_order {
                        true => Cursor::After(node.key.to_string()),
                        false => Cursor::Offset(offset + i + 1),
                    };
                    (encode_cursor(&cursor), node)
                })
                .collect();
            Ok(Some(FieldValue::owned_any(Page {
                edges,
                has_next,
                total,
            })))
        })
    }
}

/// The JSON a parent field value holds: a record's, or a nested object's.
fn json_of<'a>(parent: &'a FieldValue<'a>) -> Option<&'a Value> {
    parent
        .downcast_ref::<Node>()
        .map(|node| &node.value)
        .or_else(|| parent.downcast_ref::<Value>())
}

/// A property of a record or nested object, as `shape` says.
pub fn property(
    name: String,
    shape: Shape,
) -> impl for<'a> Fn(ResolverContext<'a>) -> FieldFuture<'a> + Send + Sync {
    move |ctx| {
        let value = json_of(ctx.parent_value).and_then(|json| json.get(&name));
        FieldFuture::Value(value.and_then(|value| output(&shape, value)))
    }
}

/// `value` as a field of `shape`: null stays null.
fn output<'a>(shape: &Shape, value: &'a Value) -> Option<FieldValue<'a>> {
    match (shape, value) {
        (_, Value::Null) => None,
        (Shape::Object(_), Value::Object(_)) => Some(FieldValue::borrowed_any(value)),
        (Shape::List(inner), Value::Array(elements)) => {
            Some(FieldValue::list(elements.iter().map(|element| {
                output(inner, element).unwrap_or(FieldValue::NULL)
            })))
        }
        _ => Some(FieldValue::value(GqlValue::from_json(value.clone()).ok()?)),
    }
}

/// The primary key, as an `ID`.
pub fn id(ctx: ResolverContext<'_>) -> FieldFuture<'_> {
    let key = ctx
        .parent_value
        .downcast_ref::<Node>()
        .map(|node| node.key.to_string());
    FieldFuture::Value(key.map(FieldValue::value))
}

/// A reference or relation field: what the producer of the record followed.
pub fn linked(ctx: ResolverContext<'_>) -> FieldFuture<'_> {
    FieldFuture::new(async move {
        let node = ctx.parent_value.try_downcast_ref::<Node>()?;
        let field = ctx.ctx.field();
        let key = step_name(&field)?;
        if let Some(linked) = node.linked.get(&key) {
            return Ok(linked_value(linked));
        }
        // Not followed beforehand (a selection reached another way): followed now, alone.
        let scope = scope(&ctx)?;
        let mut single = Node {
            linked: HashMap::new(),
            ..node.clone()
        };
        let once = std::iter::once(field);
        scope.follow(&mut [&mut single], &node.table, once).await?;
        Ok(match single.linked.remove(&key) {
            Some(Linked::One(Some(one))) => Some(FieldValue::owned_any(*one)),
            Some(Linked::Many(many)) => Some(FieldValue::list(
                many.into_iter().map(FieldValue::owned_any),
            )),
            _ => None,
        })
    })
}

fn linked_value(linked: &Linked) -> Option<FieldValue<'_>> {
    match linked {
        Linked::One(Some(one)) => Some(FieldValue::borrowed_any(one.as_ref())),
        Linked::One(None) => None,
        Linked::Many(many) => Some(FieldValue::list(
            many.iter().map(|n| FieldValue::borrowed_any(n)),
        )),
    }
}

/// The record of a change, with the links its selection follows.
pub fn change_record(ctx: ResolverContext<'_>) -> FieldFuture<'_> {
    FieldFuture::new(async move {
        let change = ctx
            .parent_value
            .try_downcast_ref::<super::subscribe::Change>()?;
        let Some(node) = &change.node else {
            return Ok(None);
        };
        let scope = scope(&ctx)?;
        prefetched(scope, node.clone(), ctx.ctx.field().selection_set()).await
    })
}

/// The key of the record an `id` argument names in `table`: an `ID` may come as a string or an
/// integer.
pub fn parse_id(
    scope: &Scope,
    table: &str,
    args: &ObjectAccessor<'_>,
) -> async_graphql::Result<Key> {
    let id = args.try_get("id")?;
    let text = match id.as_value() {
        GqlValue::Number(n) => n.to_string(),
        _ => id.string()?.to_owned(),
    };
    let resource = scope.catalog.resource(table).map_err(failure)?;
    resource.table().parse_id(&text).map_err(failure)
}

/// For an identity with no table to read: how it is refused.
pub fn refused(identity: &Identity, table: &str) -> async_graphql::Error {
    failure(identity.refusal(format!("read table `{table}`")))
}
