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
//! | `resolve.rs`, `mutate.rs` | what each field reads; the mutations |
//! | `arguments.rs`, `page.rs` | list and relation arguments, cursors; the page types |
//! | `subscribe.rs` | subscriptions, fed by the change bus |
//! | `guard.rs`, `errors.rs` | the size limits and the parsed documents; errors as GraphQL answers them |
//! | `ws.rs` | the `graphql-transport-ws` protocol over a WebSocket |
//! | `results.rs`, `persisted.rs` | the result cache; automatic persisted queries |

mod arguments;
mod errors;
mod guard;
mod mutate;
mod page;
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
use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType};
use async_graphql::{ServerError, Variables};
use bytes::Bytes;
use serde_json::Value;

use results::Kept;
pub use results::Results;

use crate::access::Identity;
use crate::catalog::{Catalog, Resource};
use crate::clock::Clock;
use crate::follow::Reads;
use crate::realtime::Realtime;
pub(crate) use errors::failure;
use errors::{null_at, with_code};
use guard::{Checked, Documents, Guard};
use persisted::{Persisted, Refusal, sha256_hex};
use resolve::Scope;

/// Limits on what one operation may ask, and whether introspection is answered.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Whether the schema answers introspection queries.
    pub introspection: bool,
    /// The deepest nesting of selections.
    pub max_depth: usize,
    /// The most fields, counted once per use of their fragment.
    pub max_complexity: usize,
    /// The most aliased fields, counted likewise.
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
    /// Whether answers depend on who asks (an access file is in force).
    personal: bool,
    /// The root fields whose type is non-null: a failure there nulls `data`.
    non_null_roots: std::collections::HashSet<String>,
    /// The size limits, checked before anything runs.
    guard: Guard,
    /// Recently parsed documents that passed the guard, by query text.
    documents: Documents,
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
    /// Whether it has data, or failed as a whole and how.
    pub outcome: Outcome,
    /// The `ETag` value (quoted) of a query's answer without errors.
    pub etag: Option<String>,
    /// The `Cache-Control` value.
    pub cache_control: String,
    /// The `Cache-Status` value of a query's answer without errors.
    pub cache_status: Option<&'static str>,
    /// What computing it read: batches of storage reads, and records.
    pub reads: Option<(usize, usize)>,
}

/// How a request was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// With `data` (perhaps with errors of some fields).
    Data,
    /// A request error: it failed as a whole, no `data`.
    RequestError,
    /// A mutation asked for by GET: a request error HTTP answers 405.
    MutationByGet,
}

impl Answer {
    /// `body` with data, not to be stored downstream.
    fn of(body: Bytes) -> Answer {
        Answer {
            body,
            outcome: Outcome::Data,
            etag: None,
            cache_control: "no-store".to_owned(),
            cache_status: None,
            reads: None,
        }
    }
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
        let schema = schema::build(&catalog, settings)?;
        let non_null_roots = catalog
            .resources()
            .flat_map(|resource| {
                let name = &resource.table().schema().name;
                [
                    format!("{}List", shape::field_of_table(name)),
                    format!("delete{name}"),
                ]
            })
            .collect();
        Ok(GraphQl(Arc::new(Shared {
            schema,
            catalog,
            realtime,
            results,
            persisted: Persisted::default(),
            clock,
            personal,
            non_null_roots,
            guard: Guard::new(settings),
            documents: Documents::default(),
        })))
    }

    /// The schema in SDL.
    pub fn sdl(&self) -> String {
        self.0.schema.sdl()
    }

    /// Answers `ask` for `identity`.
    pub async fn answer(&self, ask: Ask, identity: Arc<Identity>) -> Answer {
        let shared = &self.0;
        let persisted = ask
            .extensions
            .as_ref()
            .and_then(|e| e.get("persistedQuery"));
        let (query, to_persist): (Arc<str>, bool) = match (persisted, ask.query.as_deref()) {
            (Some(persisted), query) => match shared.persisted.resolve(persisted, query) {
                Ok(resolved) => (resolved, query.is_some()),
                Err(Refusal::NotFound) => {
                    // Apollo's clients look for this message and code, then send the text.
                    return request_error("PersistedQueryNotFound", "PERSISTED_QUERY_NOT_FOUND");
                }
                Err(Refusal::Mismatch) => {
                    return request_error(
                        "the query's SHA-256 is not `persistedQuery.sha256Hash`",
                        "PERSISTED_QUERY_HASH_MISMATCH",
                    );
                }
                Err(Refusal::Malformed(reason)) => return request_error(&reason, "bad-request"),
            },
            (None, Some(query)) => (query.into(), false),
            (None, None) => {
                return request_error(
                    "no `query`: send {\"query\": \"{ ... }\"} (POST) or ?query=... (GET)",
                    "bad-request",
                );
            }
        };
        let variables = ask.variables.clone().filter(|v| !v.is_null());
        let who = match shared.personal {
            true => serde_json::to_string(&(&identity.user, identity.roles(), &identity.claims))
                .unwrap_or_default(),
            false => String::new(),
        };
        let key = {
            let variables = variables.as_ref().map(Value::to_string).unwrap_or_default();
            let operation = ask.operation_name.as_deref().unwrap_or_default();
            format!("{who}\u{0}{operation}\u{0}{variables}\u{0}{query}")
        };
        // Only queries are kept, so a kept answer needs no parse to be served.
        let now = shared.clock.now_ms();
        if let Some(kept) = shared.results.get(&key, now) {
            let fresh_for = kept.fresh_until.map(|until| until.saturating_sub(now));
            return Answer {
                etag: Some(kept.etag.clone()),
                cache_control: cache_control(ask.by_get, fresh_for, kept.max_age),
                cache_status: Some("tablecast; hit"),
                ..Answer::of(kept.body.clone())
            };
        }
        let document = match shared.documents.parsed(&query, &shared.guard) {
            Ok(document) => document,
            Err(error) => return errors_only(vec![error]),
        };
        if to_persist {
            shared.persisted.remember(query.clone());
        }
        let operation = match &document.operations {
            DocumentOperations::Single(op) => Some(op.node.ty),
            DocumentOperations::Multiple(ops) => match &ask.operation_name {
                Some(name) => ops.get(name.as_str()).map(|op| op.node.ty),
                None if ops.len() == 1 => ops.values().next().map(|op| op.node.ty),
                None => None,
            },
        };
        match operation {
            Some(OperationType::Mutation) if ask.by_get => {
                let mut answer = request_error(
                    "a mutation is sent by POST: GET answers queries only",
                    "bad-request",
                );
                answer.outcome = Outcome::MutationByGet;
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
        let started = shared.results.generations();
        let scope = Arc::new(Scope::new(shared.catalog.clone(), identity));
        let mut request = async_graphql::Request::new(&*query)
            .data(scope.clone())
            .data(shared.realtime.clone())
            .data(Checked);
        // Parsed once: async-graphql takes the document rather than parsing the text again.
        request.set_parsed_query(ExecutableDocument::clone(&document));
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
        self.null_failed_fields(&mut response);
        let failed = !response.errors.is_empty();
        let read = Some((reads.batches, reads.records.len()));
        let body = Bytes::from(serde_json::to_vec(&response).unwrap_or_default());
        if !is_query || failed {
            return Answer {
                reads: read,
                ..Answer::of(body)
            };
        }
        let etag = etag(&key, &reads, &body);
        let fresh_for = reads.fresh_for.map(|ttl| u64::try_from(ttl).unwrap_or(0));
        let fresh_until = fresh_for.map(|ms| now + ms);
        let max_age = self.max_age(&reads);
        let kept = Kept::answer(body.clone(), etag.clone(), fresh_until, max_age);
        let kept = shared.results.keep(key, kept, &reads, &started);
        let cache_status = match kept {
            true => "tablecast; fwd=miss; stored",
            false => "tablecast; fwd=miss",
        };
        Answer {
            etag: Some(etag),
            cache_control: cache_control(ask.by_get, fresh_for, max_age),
            cache_status: Some(cache_status),
            reads: read,
            ..Answer::of(body)
        }
    }

    /// Puts `null` where a field failed (async-graphql leaves the field out), and makes `data`
    /// null when the field was a non-null root field, as the GraphQL specification has a null
    /// propagate to the nearest nullable parent.
    fn null_failed_fields(&self, response: &mut async_graphql::Response) {
        let non_null_root = response.errors.iter().any(|error| {
            matches!(&error.path[..], [async_graphql::PathSegment::Field(name)] if self.0.non_null_roots.contains(name))
        });
        if non_null_root {
            response.data = async_graphql::Value::Null;
            return;
        }
        for error in &response.errors {
            null_at(&mut response.data, &error.path);
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

/// The quoted `ETag` of an answer: of the request's key (who asked, the operation, the
/// variables and the query), the version of every record it read, and the answer itself (a
/// count or a page's end can change while the records shown do not).
fn etag(key: &str, reads: &Reads, body: &[u8]) -> String {
    let mut basis = Vec::with_capacity(key.len() + 32 * reads.records.len() + body.len());
    basis.extend_from_slice(key.as_bytes());
    for (table, key, version) in &reads.records {
        basis.push(0);
        basis.extend_from_slice(table.as_bytes());
        basis.push(0);
        basis.extend_from_slice(&key.encode());
        basis.extend_from_slice(&version.to_be_bytes());
    }
    basis.push(0);
    basis.extend_from_slice(body);
    format!("\"g{}\"", &sha256_hex(&basis)[..32])
}

/// A request error: `{"errors": [...]}`, no `data`.
fn request_error(message: &str, code: &str) -> Answer {
    errors_only(vec![with_code(ServerError::new(message, None), code)])
}

fn errors_only(errors: Vec<ServerError>) -> Answer {
    let body = serde_json::to_vec(&BTreeMap::from([("errors", errors)])).unwrap_or_default();
    Answer {
        outcome: Outcome::RequestError,
        ..Answer::of(Bytes::from(body))
    }
}
