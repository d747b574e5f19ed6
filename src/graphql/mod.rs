//! `/graphql`: a GraphQL schema generated from the tables' JSON Schemas (the only user of
//! async-graphql), answering from the same records, rules and write path as REST.
//!
//! Every answer is assembled from the stored records (and the hot records in front of them):
//! the normalized cache. An answer to a query carries an `ETag` computed from the query, its
//! variables and the version of every record it read, and the least remaining freshness of the
//! cache-table entries it read; the [`Results`] cache keeps recent answers and drops each the
//! moment a record it read changes, so a repeated query is answered without executing it.
//!
//! | file | holds |
//! | --- | --- |
//! | `mod.rs` | [`GraphQl`]: a request in, an answer out (persisted queries, limits, the result cache) |
//! | `schema.rs`, `shape.rs` | the generated schema; what GraphQL type each JSON Schema property becomes |
//! | `resolve.rs` | what each field reads or writes |
//! | `subscribe.rs` | subscriptions, fed by the change bus |
//! | `ws.rs` | the `graphql-transport-ws` protocol over a WebSocket |
//! | `results.rs`, `persisted.rs` | the result cache; automatic persisted queries |

mod persisted;
mod resolve;
mod results;
mod schema;
mod shape;
mod subscribe;
pub mod ws;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_graphql::dynamic::Schema;
use async_graphql::parser::types::{DocumentOperations, OperationType, Selection, SelectionSet};
use async_graphql::{ErrorExtensionValues, ServerError, Variables};
use bytes::Bytes;
use serde_json::Value;

use results::Kept;
pub use results::Results;
pub use schema::Limits;

use crate::access::Identity;
use crate::catalog::{Catalog, Resource};
use crate::clock::Clock;
use crate::error::Error;
use crate::follow::Reads;
use crate::realtime::Realtime;
use persisted::{Persisted, Refusal, sha256_hex};
use resolve::Scope;

/// How `/graphql` serves.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Depth, complexity and introspection.
    pub limits: Limits,
    /// The most aliased fields one operation may have.
    pub max_aliases: usize,
}

/// The GraphQL endpoint's engine. Cloning shares it.
#[derive(Clone)]
pub struct GraphQl(Arc<Shared>);

struct Shared {
    schema: Schema,
    catalog: Arc<Catalog>,
    realtime: Realtime,
    results: Arc<Results>,
    persisted: Persisted,
    clock: Clock,
    max_aliases: usize,
    /// Whether answers depend on who asks (an access file is in force).
    personal: bool,
}

/// A GraphQL request, however it arrived.
#[derive(Debug, Default)]
pub struct Ask {
    pub query: Option<String>,
    pub variables: Option<Value>,
    pub operation_name: Option<String>,
    pub extensions: Option<Value>,
    /// Whether it came by GET: only queries may, and their answers may be cached downstream.
    pub by_get: bool,
}

/// What a request is answered with.
#[derive(Debug)]
pub struct Answer {
    /// The GraphQL response.
    pub body: Bytes,
    /// Whether the request failed as a whole (no `data`): a request error.
    pub request_error: bool,
    /// A mutation asked for by GET.
    pub mutation_by_get: bool,
    /// The `ETag` value (quoted) of a query's answer without errors.
    pub etag: Option<String>,
    /// The `Cache-Control` value.
    pub cache_control: String,
    /// Whether the result cache answered; `None` if the answer could not be kept at all.
    pub hit: Option<bool>,
    /// Whether the answer was kept for the next request.
    pub kept: bool,
    /// What computing it read: batches of storage reads, and records.
    pub reads: Option<(usize, usize)>,
}

impl GraphQl {
    /// The engine for `realtime`'s tables, keeping answers in `results`.
    pub fn new(
        realtime: Realtime,
        results: Arc<Results>,
        clock: Clock,
        settings: Settings,
        personal: bool,
    ) -> Result<GraphQl, String> {
        let catalog = realtime.catalog().clone();
        let schema = schema::build(&catalog, settings.limits)?;
        Ok(GraphQl(Arc::new(Shared {
            schema,
            catalog,
            realtime,
            results,
            persisted: Persisted::default(),
            clock,
            max_aliases: settings.max_aliases,
            personal,
        })))
    }

    /// The schema in SDL.
    pub fn sdl(&self) -> String {
        self.0.schema.sdl()
    }

    /// Answers `ask` for `identity`.
    pub async fn answer(&self, ask: Ask, identity: Arc<Identity>) -> Answer {
        let shared = &self.0;
        let query: Arc<str> = match (&ask.extensions, ask.query.as_deref()) {
            (Some(extensions), query) if extensions.get("persistedQuery").is_some() => {
                match shared
                    .persisted
                    .resolve(&extensions["persistedQuery"], query)
                {
                    Ok(query) => query,
                    Err(Refusal::NotFound) => {
                        // Apollo's clients look for this message and code, then send the text.
                        return request_error(
                            "PersistedQueryNotFound",
                            "PERSISTED_QUERY_NOT_FOUND",
                        );
                    }
                    Err(Refusal::Mismatch) => {
                        return request_error(
                            "the query's SHA-256 is not `persistedQuery.sha256Hash`",
                            "PERSISTED_QUERY_HASH_MISMATCH",
                        );
                    }
                    Err(Refusal::Malformed(reason)) => {
                        return request_error(&reason, "bad-request");
                    }
                }
            }
            (_, Some(query)) => query.into(),
            (_, None) => {
                return request_error(
                    "no `query`: send {\"query\": \"{ ... }\"} (POST) or ?query=... (GET)",
                    "bad-request",
                );
            }
        };
        let document = match async_graphql::parser::parse_query(&*query) {
            Ok(document) => document,
            Err(error) => {
                let error: ServerError = error.into();
                return errors_only(vec![with_code(error, "GRAPHQL_PARSE_FAILED")]);
            }
        };
        let operation = match &document.operations {
            DocumentOperations::Single(op) => Some(op.node.ty),
            DocumentOperations::Multiple(ops) => match &ask.operation_name {
                Some(name) => ops.get(name.as_str()).map(|op| op.node.ty),
                None if ops.len() == 1 => ops.values().next().map(|op| op.node.ty),
                None => None,
            },
        };
        let aliases: usize = document
            .operations
            .iter()
            .map(|(_, op)| aliases(&op.node.selection_set.node, &document.fragments, 0))
            .sum::<usize>();
        if aliases > shared.max_aliases {
            let message = format!(
                "the operation has {aliases} aliases; at most {} are answered",
                shared.max_aliases
            );
            return request_error(&message, "LIMIT_EXCEEDED");
        }
        match operation {
            Some(OperationType::Mutation) if ask.by_get => {
                let mut answer = request_error(
                    "a mutation is sent by POST: GET answers queries only",
                    "bad-request",
                );
                answer.mutation_by_get = true;
                return answer;
            }
            Some(OperationType::Subscription) => {
                return request_error(
                    "a subscription needs a WebSocket: connect to /graphql with the graphql-transport-ws protocol",
                    "bad-request",
                );
            }
            _ => {}
        }
        let is_query = operation == Some(OperationType::Query);
        let variables = ask.variables.clone().filter(|v| !v.is_null());
        let key = is_query.then(|| {
            let who = match shared.personal {
                true => {
                    serde_json::to_string(&(&identity.user, identity.roles(), &identity.claims))
                        .unwrap_or_default()
                }
                false => String::new(),
            };
            let variables = variables.as_ref().map(Value::to_string).unwrap_or_default();
            let operation = ask.operation_name.as_deref().unwrap_or_default();
            format!("{who}\u{0}{operation}\u{0}{variables}\u{0}{query}")
        });
        let now = shared.clock.now_ms();
        if let Some(kept) = key.as_deref().and_then(|key| shared.results.get(key, now)) {
            let fresh_for = kept.fresh_until.map(|until| until.saturating_sub(now));
            return Answer {
                body: kept.body.clone(),
                request_error: false,
                mutation_by_get: false,
                etag: Some(kept.etag.clone()),
                cache_control: cache_control(ask.by_get, fresh_for, kept.max_age),
                hit: Some(true),
                kept: true,
                reads: None,
            };
        }
        let started = shared.results.generations();
        let scope = Arc::new(Scope::new(shared.catalog.clone(), identity));
        let mut request = async_graphql::Request::new(&*query)
            .data(scope.clone())
            .data(shared.realtime.clone());
        if let Some(variables) = variables.clone() {
            request = request.variables(Variables::from_json(variables));
        }
        if let Some(name) = &ask.operation_name {
            request = request.operation_name(name);
        }
        let mut response = shared.schema.execute(request).await;
        let reads = scope.take_reads();
        // Errors without a path came before execution: the request failed as a whole.
        if !response.errors.is_empty() && response.errors.iter().all(|e| e.path.is_empty()) {
            let errors = response.errors.into_iter();
            return errors_only(
                errors
                    .map(|e| with_code(e, "GRAPHQL_VALIDATION_FAILED"))
                    .collect(),
            );
        }
        for error in &response.errors {
            null_at(&mut response.data, &error.path);
        }
        let failed = !response.errors.is_empty();
        let read = Some((reads.batches, reads.records.len()));
        let body = Bytes::from(serde_json::to_vec(&response).unwrap_or_default());
        if !is_query || failed {
            return Answer {
                body,
                request_error: false,
                mutation_by_get: false,
                etag: None,
                cache_control: "no-store".to_owned(),
                hit: None,
                kept: false,
                reads: read,
            };
        }
        let etag = etag(
            &query,
            variables.as_ref(),
            ask.operation_name.as_deref(),
            &reads,
        );
        let fresh_for = reads.fresh_for.map(|ttl| u64::try_from(ttl).unwrap_or(0));
        let fresh_until = fresh_for.map(|ms| now + ms);
        let max_age = self.max_age(&reads);
        let kept = match key {
            Some(key) => {
                let kept = Kept::answer(body.clone(), etag.clone(), fresh_until, max_age);
                shared.results.keep(key, kept, &reads, &started)
            }
            None => false,
        };
        Answer {
            body,
            request_error: false,
            mutation_by_get: false,
            etag: Some(etag),
            cache_control: cache_control(ask.by_get, fresh_for, max_age),
            hit: Some(false),
            kept,
            reads: read,
        }
    }

    /// How long downstream caches may keep an answer, by the tables of our own it `read`:
    /// the least of their `maxAge` (0 if one has none); `None` if it read none.
    fn max_age(&self, read: &Reads) -> Option<u64> {
        let tables = read
            .records
            .iter()
            .map(|(table, _, _)| table)
            .chain(&read.tables);
        let mut least: Option<u64> = None;
        for table in tables {
            let Ok(Resource::Local(own)) = self.0.catalog.resource(table) else {
                continue;
            };
            let ms = own
                .schema()
                .settings
                .max_age
                .map_or(0, |d| d.as_millis() as u64);
            least = Some(least.map_or(ms, |least| least.min(ms)));
        }
        least
    }

    /// The engine's parts a WebSocket connection needs.
    pub fn schema(&self) -> &Schema {
        &self.0.schema
    }

    /// What a WebSocket connection of `identity` reads with.
    fn streaming_scope(&self, identity: Arc<Identity>) -> Arc<Scope> {
        Arc::new(Scope::streaming(self.0.catalog.clone(), identity))
    }

    fn realtime(&self) -> &Realtime {
        &self.0.realtime
    }
}

/// `Cache-Control` of a query's answer: cacheable downstream if it came by GET, for as long as
/// the cache-table entries it read stay fresh (`fresh_for`) and the `maxAge` of the tables of
/// our own it read allows (`max_age`); revalidated with its `ETag` when one of those has no
/// `maxAge`. An answer to a request with credentials is made private where every answer is.
fn cache_control(by_get: bool, fresh_for: Option<u64>, max_age: Option<u64>) -> String {
    if !by_get {
        return "no-store".to_owned();
    }
    match [fresh_for, max_age].into_iter().flatten().min() {
        Some(ms) if max_age != Some(0) => format!("max-age={}", ms / 1000),
        _ => "no-cache".to_owned(),
    }
}

/// The quoted `ETag` of an answer: the query, its variables and operation, and the version of
/// every record it read.
fn etag(query: &str, variables: Option<&Value>, operation: Option<&str>, reads: &Reads) -> String {
    let mut basis = Vec::with_capacity(query.len() + 64 * reads.records.len());
    basis.extend_from_slice(query.as_bytes());
    basis.push(0);
    if let Some(variables) = variables {
        basis.extend_from_slice(variables.to_string().as_bytes());
    }
    basis.push(0);
    basis.extend_from_slice(operation.unwrap_or_default().as_bytes());
    for (table, key, version) in &reads.records {
        basis.push(0);
        basis.extend_from_slice(table.as_bytes());
        basis.push(0);
        basis.extend_from_slice(&key.encode());
        basis.extend_from_slice(&version.to_be_bytes());
    }
    format!("\"g{}\"", &sha256_hex(&basis)[..32])
}

/// How many fields of `selection` (and the fragments it spreads) have an alias.
fn aliases(
    selection: &SelectionSet,
    fragments: &std::collections::HashMap<
        async_graphql::Name,
        async_graphql::Positioned<async_graphql::parser::types::FragmentDefinition>,
    >,
    depth: usize,
) -> usize {
    if depth > 64 {
        // Deeper than the depth limit lets run; counted as over any limit.
        return usize::MAX / 2;
    }
    selection
        .items
        .iter()
        .map(|item| match &item.node {
            Selection::Field(field) => {
                usize::from(field.node.alias.is_some())
                    + aliases(&field.node.selection_set.node, fragments, depth + 1)
            }
            Selection::InlineFragment(fragment) => {
                aliases(&fragment.node.selection_set.node, fragments, depth + 1)
            }
            Selection::FragmentSpread(spread) => fragments
                .get(&spread.node.fragment_name.node)
                .map_or(0, |fragment| {
                    aliases(&fragment.node.selection_set.node, fragments, depth + 1)
                }),
        })
        .fold(0, usize::saturating_add)
}

/// A domain error as a GraphQL error: its safe message, and in `extensions` its stable `code`,
/// and what it concerns (the JSON pointers of a record's violations, a query's position).
pub(crate) fn failure(error: Error) -> async_graphql::Error {
    let message = error.public_detail();
    let code = error.code().as_str();
    let mut extensions = ErrorExtensionValues::default();
    extensions.set("code", code);
    match &error {
        Error::SchemaViolation { violations, .. } | Error::OriginInvalid { violations, .. } => {
            let listed: Vec<async_graphql::Value> = violations
                .iter()
                .map(|v| {
                    let mut fields = async_graphql::indexmap::IndexMap::new();
                    fields.insert(
                        async_graphql::Name::new("pointer"),
                        v.pointer.clone().into(),
                    );
                    fields.insert(
                        async_graphql::Name::new("message"),
                        v.message.clone().into(),
                    );
                    async_graphql::Value::Object(fields)
                })
                .collect();
            if let Some(first) = violations.first() {
                extensions.set("pointer", first.pointer.clone());
            }
            extensions.set("violations", async_graphql::Value::List(listed));
        }
        Error::BadQuery(query) => {
            extensions.set("position", query.position as u64);
            extensions.set("token", query.token.clone());
            extensions.set("expected", query.expected.clone());
        }
        _ => {}
    }
    async_graphql::Error {
        message,
        source: None,
        extensions: Some(extensions),
    }
}

/// `error` with `extensions.code`, unless it has one.
fn with_code(mut error: ServerError, code: &str) -> ServerError {
    let extensions = error
        .extensions
        .get_or_insert_with(ErrorExtensionValues::default);
    if extensions.get("code").is_none() {
        extensions.set("code", code);
    }
    error
}

/// Puts `null` where a field failed (async-graphql leaves the field out), so the answer has
/// every field asked for, as the GraphQL specification requires.
fn null_at(data: &mut async_graphql::Value, path: &[async_graphql::PathSegment]) {
    use async_graphql::{PathSegment, Value as GqlValue};
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    if *data == GqlValue::Null {
        *data = GqlValue::Object(Default::default());
    }
    let mut current = data;
    for segment in parents {
        let next = match (segment, current) {
            (PathSegment::Field(name), GqlValue::Object(fields)) => fields.get_mut(name.as_str()),
            (PathSegment::Index(i), GqlValue::List(items)) => items.get_mut(*i),
            _ => None,
        };
        match next {
            Some(next) => current = next,
            None => return,
        }
    }
    if let (PathSegment::Field(name), GqlValue::Object(fields)) = (last, current) {
        fields
            .entry(async_graphql::Name::new(name))
            .or_insert(GqlValue::Null);
    }
}

/// A request error: `{"errors": [...]}`, no `data`.
fn request_error(message: &str, code: &str) -> Answer {
    errors_only(vec![with_code(ServerError::new(message, None), code)])
}

fn errors_only(errors: Vec<ServerError>) -> Answer {
    let body = serde_json::to_vec(&BTreeMap::from([("errors", errors)])).unwrap_or_default();
    Answer {
        body: Bytes::from(body),
        request_error: true,
        mutation_by_get: false,
        etag: None,
        cache_control: "no-store".to_owned(),
        hit: None,
        kept: false,
        reads: None,
    }
}

/// Gives a resolver's error the path of its field: async-graphql's dynamic schema leaves it
/// out, and without it the answer could not say which field failed (nor put its `null` in).
struct ErrorPaths;

impl async_graphql::extensions::ExtensionFactory for ErrorPaths {
    fn create(&self) -> Arc<dyn async_graphql::extensions::Extension> {
        Arc::new(ErrorPaths)
    }
}

#[async_trait::async_trait]
impl async_graphql::extensions::Extension for ErrorPaths {
    async fn resolve(
        &self,
        ctx: &async_graphql::extensions::ExtensionContext<'_>,
        info: async_graphql::extensions::ResolveInfo<'_>,
        next: async_graphql::extensions::NextResolve<'_>,
    ) -> async_graphql::ServerResult<Option<async_graphql::Value>> {
        let node = info.path_node;
        next.run(ctx, info).await.map_err(|mut error| {
            if error.path.is_empty() {
                let mut path = Vec::new();
                let mut current = Some(node);
                while let Some(node) = current {
                    path.push(match node.segment {
                        async_graphql::QueryPathSegment::Name(name) => {
                            async_graphql::PathSegment::Field(name.to_owned())
                        }
                        async_graphql::QueryPathSegment::Index(i) => {
                            async_graphql::PathSegment::Index(i)
                        }
                    });
                    current = node.parent;
                }
                path.reverse();
                error.path = path;
            }
            error
        })
    }
}
