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
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use super::failure;
use super::shape::Shape;
use crate::access::{Identity, Write};
use crate::catalog::{Catalog, Resource};
use crate::error::{Cause, Error, QueryError};
use crate::follow::{Follower, Linked, Node, Reads, Step};
use crate::query::executor::{self, Content};
use crate::query::{self, Condition, Filter, Literal, Op, Query};
use crate::storage::{Commit, Key};
use crate::table::Precondition;

/// Records a page holds when `first` is not given.
pub const DEFAULT_PAGE: usize = 100;
/// The most records one page (`first`) or one relation may hold.
pub const MAX_PAGE: usize = 1_000;

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

fn scope<'a>(ctx: &ResolverContext<'a>) -> async_graphql::Result<&'a Scope> {
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

/// A page of a list query.
pub struct Page {
    /// Each record with its cursor.
    pub edges: Vec<(String, Node)>,
    pub has_next: bool,
    pub total: Option<u64>,
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
async fn prefetched<'a>(
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

/// The query of a relation field's arguments.
fn related_query(
    catalog: &Catalog,
    table: &str,
    filter: Option<&GqlValue>,
    sort: Option<&GqlValue>,
    first: Option<&GqlValue>,
) -> async_graphql::Result<Query> {
    let text = |value: Option<&GqlValue>| match value {
        Some(GqlValue::String(text)) => Some(text.clone()),
        _ => None,
    };
    let document = catalog
        .resource(table)
        .map_err(failure)?
        .table()
        .schema()
        .document();
    let mut query = bound(
        &document,
        text(filter).as_deref(),
        Vec::new(),
        text(sort).as_deref(),
    )?;
    query.limit = Some(page_size(match first {
        Some(GqlValue::Number(n)) => n.as_i64(),
        _ => None,
    })?);
    Ok(query)
}

/// The query of `filter`, typed `where` conditions and `sort` arguments, bound to the table of
/// `document`; an error names the argument it is in.
fn bound(
    document: &Value,
    filter: Option<&str>,
    wheres: Vec<Filter>,
    sort: Option<&str>,
) -> async_graphql::Result<Query> {
    let bind = |query: Query, argument: &'static str| {
        query::bind(query, document).map_err(|e| argument_error(argument, e))
    };
    let filter = Query {
        filter: conditions(filter)?,
        ..Query::default()
    };
    let wheres = Query {
        filter: all_of(None, wheres),
        ..Query::default()
    };
    let sort = Query {
        sort: sort_keys(sort)?,
        ..Query::default()
    };
    let filter = bind(filter, "filter")?.filter;
    let wheres = bind(wheres, "where")?.filter;
    Ok(Query {
        filter: all_of(filter, wheres.into_iter().collect()),
        sort: bind(sort, "sort")?.sort,
        ..Query::default()
    })
}

/// `first`, checked: at least 0, at most [`MAX_PAGE`].
fn page_size(first: Option<i64>) -> async_graphql::Result<usize> {
    match first {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (0..=MAX_PAGE as i64).contains(&n) => Ok(n as usize),
        Some(n) => Err(async_graphql::Error::new(format!(
            "`first` is {n}: give 0 to {MAX_PAGE} (records per page)"
        ))
        .extend_with(|_, e| e.set("code", "bad-request"))),
    }
}

/// The conditions of a `filter` argument, in the URL query language.
fn conditions(filter: Option<&str>) -> async_graphql::Result<Option<Filter>> {
    let Some(filter) = filter.filter(|f| !f.is_empty()) else {
        return Ok(None);
    };
    let parsed = query::parse(filter).map_err(|e| argument_error("filter", e))?;
    if parsed.select.is_some()
        || !parsed.sort.is_empty()
        || parsed.limit.is_some()
        || parsed.after.is_some()
    {
        return Err(async_graphql::Error::new(
            "`filter` takes conditions only (`category=lighting&price=lt=50`): order with `sort`, page with `first` and `after`",
        )
        .extend_with(|_, e| e.set("code", "bad-query")));
    }
    Ok(parsed.filter)
}

/// The keys of a `sort` argument: `-price,+name`.
fn sort_keys(sort: Option<&str>) -> async_graphql::Result<Vec<query::SortKey>> {
    let Some(sort) = sort.filter(|s| !s.is_empty()) else {
        return Ok(Vec::new());
    };
    const OPEN: &str = "sort(";
    let parsed = query::parse(&format!("{OPEN}{sort})")).map_err(|mut e| {
        e.position = e.position.saturating_sub(OPEN.len());
        argument_error("sort", e)
    })?;
    let mut keys = parsed.sort;
    for key in &mut keys {
        key.position -= OPEN.len();
    }
    Ok(keys)
}

/// A query language error in argument `name`, with its position in the argument.
fn argument_error(name: &'static str, error: QueryError) -> async_graphql::Error {
    let QueryError {
        position,
        token,
        expected,
    } = &error;
    let (position, token) = (*position, token.clone());
    async_graphql::Error::new(format!("argument `{name}`: {error}"))
        .extend_with(move |_, e| {
            e.set("code", "bad-query");
            e.set("argument", name);
            e.set("position", position as u64);
            e.set("token", token.clone());
        })
        .extend_with({
            let expected = expected.clone();
            move |_, e| e.set("expected", expected.clone())
        })
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

fn all_of(filter: Option<Filter>, more: Vec<Filter>) -> Option<Filter> {
    let mut parts = match filter {
        None => Vec::new(),
        Some(Filter::All(parts)) => parts,
        Some(other) => vec![other],
    };
    parts.extend(more);
    match parts.len() {
        0 => None,
        1 => parts.pop(),
        _ => Some(Filter::All(parts)),
    }
}

/// The conditions of a typed `where` argument: `{price: {gt: 10, lt: 20}}`.
fn where_conditions(
    wanted: &ObjectAccessor<'_>,
    wheres: &[(String, Vec<String>)],
) -> async_graphql::Result<Vec<Filter>> {
    let mut conditions = Vec::new();
    for (field, range) in wanted.iter() {
        let Some((_, path)) = wheres.iter().find(|(name, _)| name == field.as_str()) else {
            continue;
        };
        for (op, value) in range.object()?.iter() {
            let op = match op.as_str() {
                "eq" => Op::Eq,
                "ne" => Op::Ne,
                "lt" => Op::Lt,
                "le" => Op::Le,
                "gt" => Op::Gt,
                "ge" => Op::Ge,
                _ => Op::StartsWith,
            };
            let value = match value.as_value() {
                GqlValue::Null => Literal::Null,
                GqlValue::Number(n) => Literal::Number(n.as_f64().unwrap_or(f64::NAN)),
                GqlValue::Boolean(b) => Literal::Bool(*b),
                GqlValue::String(s) => Literal::Text(s.clone()),
                GqlValue::Enum(name) => Literal::Text(name.to_string()),
                other => Literal::Text(other.to_string()),
            };
            conditions.push(Filter::Condition(Condition {
                path: path.clone(),
                op,
                value,
                position: 0,
                value_position: 0,
            }));
        }
    }
    Ok(conditions)
}

enum Cursor {
    /// Key order: the page starts after this key.
    After(String),
    /// Another order: the page starts after this many records.
    Offset(usize),
}

fn encode_cursor(cursor: &Cursor) -> String {
    let text = match cursor {
        Cursor::After(id) => format!("k{id}"),
        Cursor::Offset(n) => format!("o{n}"),
    };
    URL_SAFE_NO_PAD.encode(text)
}

fn decode_cursor(cursor: &str) -> Option<Cursor> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    match text.split_at_checked(1)? {
        ("k", id) => Some(Cursor::After(id.to_owned())),
        ("o", n) => n.parse().ok().map(Cursor::Offset),
        _ => None,
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

/// `TConnection.totalCount`, `.nodes`, `.edges`, `.pageInfo` and their fields.
pub mod page {
    use super::*;

    pub fn total_count(ctx: ResolverContext<'_>) -> FieldFuture<'_> {
        let total = ctx
            .parent_value
            .downcast_ref::<Page>()
            .and_then(|page| page.total);
        FieldFuture::Value(total.map(FieldValue::value))
    }

    pub fn nodes(ctx: ResolverContext<'_>) -> FieldFuture<'_> {
        let page = ctx.parent_value.downcast_ref::<Page>();
        FieldFuture::Value(page.map(|page| {
            FieldValue::list(
                page.edges
                    .iter()
                    .map(|(_, node)| FieldValue::borrowed_any(node)),
            )
        }))
    }

    pub fn edges(ctx: ResolverContext<'_>) -> FieldFuture<'_> {
        let page = ctx.parent_value.downcast_ref::<Page>();
        FieldFuture::Value(page.map(|page| {
            FieldValue::list(page.edges.iter().map(|edge| FieldValue::borrowed_any(edge)))
        }))
    }

    pub fn page_info(ctx: ResolverContext<'_>) -> FieldFuture<'_> {
        let page = ctx.parent_value.downcast_ref::<Page>();
        FieldFuture::Value(page.map(|page| FieldValue::borrowed_any(page)))
    }

    pub fn has_next_page(ctx: ResolverContext<'_>) -> FieldFuture<'_> {
        let page = ctx.parent_value.downcast_ref::<Page>();
        FieldFuture::Value(page.map(|page| FieldValue::value(page.has_next)))
    }

    pub fn end_cursor(ctx: ResolverContext<'_>) -> FieldFuture<'_> {
        let page = ctx.parent_value.downcast_ref::<Page>();
        let last = page.and_then(|page| page.edges.last());
        FieldFuture::Value(last.map(|(cursor, _)| FieldValue::value(cursor.clone())))
    }

    pub fn cursor(ctx: ResolverContext<'_>) -> FieldFuture<'_> {
        let edge = ctx.parent_value.downcast_ref::<(String, Node)>();
        FieldFuture::Value(edge.map(|(cursor, _)| FieldValue::value(cursor.clone())))
    }

    pub fn node(ctx: ResolverContext<'_>) -> FieldFuture<'_> {
        let edge = ctx.parent_value.downcast_ref::<(String, Node)>();
        FieldFuture::Value(edge.map(|(_, node)| FieldValue::borrowed_any(node)))
    }
}

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
fn written(commit: Commit, reader: &crate::access::Reader) -> Result<Option<Node>, Error> {
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
