//! Handlers for `/T`, `/T/` and `/T/id`.

use std::sync::Arc;

use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde_json::json;

use super::AppState;
use super::auth::Caller;
use super::cached;
use super::error::ApiError;
use super::extract::{JsonBody, UrlPath};
use super::headers;
use super::listing;
use super::response;
use super::subscribe::{self, Subscription};
use crate::access::{Identity, Reader, Write};
use crate::cache::{CacheStatus, Detail};
use crate::catalog::{Catalog, Resource};
use crate::error::{CacheTableWrite, Cause, Error};
use crate::follow;
use crate::query::executor::{self, ListedRecord};
use crate::query::{self, Select};
use crate::realtime::{Matching, TopicFilter};
use crate::storage::{Commit, Key};
use crate::table::{Precondition, Table};

/// Characters escaped in a path segment (RFC 3986 `pchar` keeps the rest).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\')
    .add(b'^')
    .add(b'|')
    .add(b'(')
    .add(b')')
    .add(b'&')
    .add(b'=')
    .add(b'[')
    .add(b']')
    .add(b',');

/// The table of our own named `name`; cache tables refuse `write`.
fn local<'a>(
    catalog: &'a Catalog,
    name: &str,
    write: CacheTableWrite,
) -> Result<&'a Table, ApiError> {
    match catalog.resource(name)? {
        Resource::Local(table) => Ok(table),
        Resource::Cached(_) => Err(Error::NotOnCacheTable {
            table: name.to_owned(),
            write,
        }
        .into()),
    }
}

/// `GET /T/id`: the stored JSON bytes as they are; through the cache on a cache table.
pub async fn records_get(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath((name, id)): UrlPath<(String, String)>,
    Subscription(subscribe): Subscription,
    request: Request,
) -> Result<Response, ApiError> {
    // The request itself rather than a `HeaderMap`, which would be a copy of its headers.
    let request = request.headers();
    if let Some(transport) = subscribe {
        let table = state.catalog.resource(&name)?.table();
        let key = table.parse_id(&id)?;
        let filter = TopicFilter::record(table.name(), &key);
        return subscribe::start(&state, &caller, table, filter, None, transport);
    }
    let table = match state.catalog.resource(&name)? {
        Resource::Local(table) => table,
        Resource::Cached(cache) => return Ok(cached::get(cache, &caller, &id, request).await),
    };
    let key = table.parse_id(&id)?;
    let reader = caller.reader(table);
    let record = response::visible(&caller, &reader, (&name, &id), table.get(&key)?)?;
    response::read(request, &record)
}

/// The request's preconditions with the guard of `write` by `caller` on `table`.
fn guarded(
    caller: &Identity,
    table: &Table,
    write: Write,
    request: &HeaderMap,
) -> Result<(Precondition, Reader), ApiError> {
    let (guard, reader) = caller.write_guard(table, write)?;
    let precondition = Precondition {
        guard,
        ..headers::precondition(request)
    };
    Ok((precondition, reader))
}

/// `PUT /T/id`: create or replace; on a cache table, push a value.
pub async fn records_put(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath((name, id)): UrlPath<(String, String)>,
    request: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let table = match state.catalog.resource(&name)? {
        Resource::Local(table) => table,
        Resource::Cached(cache) => {
            caller.may_write_cache(cache.table(), Write::Put)?;
            return Ok(cached::put(cache, &id, &request, body).await);
        }
    };
    let key = table.parse_id(&id)?;
    let (precondition, reader) = guarded(&caller, table, Write::Put, &request)?;
    let (commit, applied) = durable(&request, table, table.put(key, body, precondition)).await?;
    let response = response::written(&request, &response::shown(&reader, commit)?);
    Ok(durability_applied(response, applied))
}

/// `PATCH /T/id`: JSON merge patch, then validation.
pub async fn records_patch(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath((name, id)): UrlPath<(String, String)>,
    request: HeaderMap,
    JsonBody(patch): JsonBody,
) -> Result<Response, ApiError> {
    let table = local(&state.catalog, &name, CacheTableWrite::Patch)?;
    let key = table.parse_id(&id)?;
    let (precondition, reader) = guarded(&caller, table, Write::Patch, &request)?;
    let (commit, applied) = durable(&request, table, table.patch(key, patch, precondition)).await?;
    let response = response::written(&request, &response::shown(&reader, commit)?);
    Ok(durability_applied(response, applied))
}

/// `DELETE /T/id`; on a cache table, evict the entry.
pub async fn records_delete(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath((name, id)): UrlPath<(String, String)>,
    request: HeaderMap,
) -> Result<Response, ApiError> {
    let table = match state.catalog.resource(&name)? {
        Resource::Local(table) => table,
        Resource::Cached(cache) => {
            caller.may_write_cache(cache.table(), Write::Delete)?;
            return Ok(cached::delete(cache, &id, &request).await);
        }
    };
    let key = table.parse_id(&id)?;
    let (precondition, _) = guarded(&caller, table, Write::Delete, &request)?;
    let (_, applied) = durable(&request, table, table.delete(key, precondition)).await?;
    Ok(durability_applied(
        StatusCode::NO_CONTENT.into_response(),
        applied,
    ))
}

/// `POST /T/`: create under a generated key.
pub async fn records_post(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath(name): UrlPath<String>,
    request: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let table = local(&state.catalog, &name, CacheTableWrite::Post)?;
    let (guard, reader) = caller.write_guard(table, Write::Create)?;
    let (commit, applied) = durable(&request, table, table.create(body, guard)).await?;
    let commit = response::shown(&reader, commit)?;
    let location = format!(
        "/{name}/{}",
        utf8_percent_encode(&commit.key.to_string(), SEGMENT)
    );
    let mut response = match &commit.record {
        Some(record) => response::record(StatusCode::CREATED, record),
        None => StatusCode::CREATED.into_response(),
    };
    response.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&location).expect("percent-encoded path"),
    );
    Ok(durability_applied(response, applied))
}

/// The preference a write may state to be answered only once the cluster's stream stores it,
/// as `--replication-ack cluster` makes every write.
const CLUSTER_DURABILITY: &str = "durability=cluster";

/// The outcome of `write` once as durable as the request prefers (see [`CLUSTER_DURABILITY`]),
/// and whether that preference was applied (not on a node that does not replicate).
async fn durable(
    request: &HeaderMap,
    table: &Table,
    write: impl Future<Output = Result<Commit, Error>>,
) -> Result<(Commit, bool), ApiError> {
    let commit = write.await?;
    if !headers::prefers(request, CLUSTER_DURABILITY) {
        return Ok((commit, false));
    }
    Ok(table.durable_in_cluster(commit).await?)
}

/// `response` saying, if `applied`, that it honoured the request's durability preference.
fn durability_applied(mut response: Response, applied: bool) -> Response {
    if applied {
        response.headers_mut().append(
            "preference-applied",
            HeaderValue::from_static(CLUSTER_DURABILITY),
        );
    }
    response
}

/// `GET /T/?query`: the matching records, streamed as JSON, NDJSON or CSV by `Accept`;
/// `Prefer: count=exact` adds `Content-Range`; a full page in key order links to the next one.
///
/// Counting, sorting and holding a page can read a whole table, so the answer is prepared on the
/// blocking pool, and each chunk of the body is produced there too: no request stalls the
/// threads that serve the others.
pub async fn records_list(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath(name): UrlPath<String>,
    RawQuery(raw): RawQuery,
    Subscription(subscribe): Subscription,
    request: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(transport) = subscribe {
        let table = state.catalog.resource(&name)?.table();
        let matching = match raw.as_deref() {
            None | Some("") => None,
            Some(raw) => subscription_query(table, &caller, raw)?,
        };
        let filter = TopicFilter::table(table.name());
        return subscribe::start(&state, &caller, table, filter, matching, transport);
    }
    let catalog = state.catalog.clone();
    tokio::task::spawn_blocking(move || {
        let raw = raw.unwrap_or_default();
        list((&catalog, &caller.0), &name, &raw, &request)
    })
    .await
    .map_err(|e| Error::Internal(Cause::of("the listing task failed", e)))?
}

/// The query of a subscription to `table`: conditions only, as the records a subscriber watches
/// have no order, page or projection.
fn subscription_query(
    table: &Table,
    caller: &Identity,
    raw: &str,
) -> Result<Option<Matching>, ApiError> {
    let query = query::parse(raw)
        .and_then(|query| query::bind(query, &table.schema().document()))
        .map_err(Error::BadQuery)?;
    caller.reader(table).check_query(&query)?;
    if query.select.is_some()
        || !query.sort.is_empty()
        || query.limit.is_some()
        || query.after.is_some()
        || query.offset > 0
    {
        return Err(ApiError::BadRequest(
            "a subscription takes conditions only (`status=pending&total=gt=10`): select(), sort(), limit() and after() shape a listing, not a stream of changes".to_owned(),
        ));
    }
    Ok(query
        .filter
        .map(|filter| Matching::new(table.schema().name.clone(), filter)))
}

fn list(
    (catalog, caller): (&Arc<Catalog>, &Arc<Identity>),
    name: &str,
    raw: &str,
    request: &HeaderMap,
) -> Result<Response, ApiError> {
    let resource = catalog.resource(name)?;
    let table = resource.table();
    let schema = table.schema();
    let reader = caller.reader(table);
    if reader.nothing() {
        return Err(caller.refusal(format!("read table `{name}`")).into());
    }
    let mut query = query::parse(raw)
        .and_then(|query| query::bind(query, &schema.document()))
        .map_err(Error::BadQuery)?;
    reader.check_query(&query)?;
    reader.restrict(&mut query);
    // References and relations in `select()` are followed after the records are read whole.
    let steps = match &query.select {
        Some(Select::Fields(fields)) => follow::steps(catalog, name, fields)?,
        _ => Vec::new(),
    };
    let expand = match steps.is_empty() {
        true => None,
        false => query.select.clone().map(|select| (steps, select)),
    };
    let format = listing::negotiate(request, || csv_columns(&query, &schema.document(), &reader))
        .ok_or(ApiError::NotAcceptable)?;
    let total = headers::prefers(request, "count=exact")
        .then(|| executor::count(table, &query))
        .transpose()?;
    let (offset, limit) = (query.offset, query.limit);
    // A page small enough to hold is read before answering, so its last key can be linked.
    let linked_page = limit
        .filter(|&n| n > 0 && n <= MAX_LINKED_PAGE && executor::key_order(table, &query).is_some());
    let paging = query.paging.clone();
    if expand.is_some() {
        query.select = None;
    }
    let mut listed = listing::shown(executor::execute(table, query)?, reader);
    if let Some((steps, select)) = expand {
        let readers = (catalog.clone(), caller.clone());
        listed = follow::expand_listing(listed, readers, schema.name.clone(), steps, select);
    }
    let mut response_headers = HeaderMap::new();
    let mut returned = total.map(|total| {
        limit
            .unwrap_or(usize::MAX)
            .min(to_usize(total).saturating_sub(offset))
    });
    if let Some(page) = linked_page {
        let held: Vec<ListedRecord> = listed.collect::<crate::error::Result<_>>()?;
        returned = Some(held.len());
        if let Some(last) = held.last().filter(|_| held.len() == page) {
            let link = format!(
                "<{}>; rel=\"next\"",
                next_page(name, raw, &paging, page, &last.key)
            );
            response_headers.insert(
                header::LINK,
                HeaderValue::from_str(&link).expect("percent-encoded link"),
            );
        }
        listed = Box::new(held.into_iter().map(Ok));
    }
    if let (Some(total), Some(returned)) = (total, returned) {
        let range = match returned {
            0 => format!("items */{total}"),
            n => format!("items {offset}-{}/{total}", offset + n - 1),
        };
        response_headers.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&range).expect("digits"),
        );
        response_headers.insert(
            "preference-applied",
            HeaderValue::from_static("count=exact"),
        );
    }
    response_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if let Resource::Cached(_) = resource {
        // A listing reads what is stored, fresh or not, and never asks the origin.
        response::set_cache_status(
            &mut response_headers,
            &CacheStatus::detail(Detail::StoredEntries),
        );
    }
    let body = listing::body(listed, format)?;
    Ok((response_headers, body).into_response())
}

/// The largest page (`limit(n)`) that gets a link to the next page.
const MAX_LINKED_PAGE: usize = 10_000;

/// The query of the next page: the same query with `limit(page)&after(last)` instead of its own
/// `limit(...)` and `after(...)`.
fn next_page(
    table: &str,
    raw: &str,
    paging: &[std::ops::Range<usize>],
    page: usize,
    last: &Key,
) -> String {
    let mut kept = String::new();
    let mut at = 0;
    for span in paging {
        kept.push_str(&raw[at..span.start]);
        at = span.end;
    }
    kept.push_str(&raw[at..]);
    let kept = kept.trim_matches('&');
    let separator = if kept.is_empty() { "" } else { "&" };
    let last = last.to_string();
    let after = utf8_percent_encode(&last, SEGMENT);
    format!("/{table}/?{kept}{separator}limit({page})&after({after})")
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// CSV columns: the selected properties, or every property the schema declares that the
/// reader may see.
fn csv_columns(query: &query::Query, schema: &serde_json::Value, reader: &Reader) -> Vec<String> {
    match &query.select {
        Some(Select::Value(path)) => vec![path.join(".")],
        Some(Select::Fields(fields)) => fields.iter().map(|f| f.name.clone()).collect(),
        None => schema
            .get("properties")
            .and_then(serde_json::Value::as_object)
            .map(|properties| {
                properties
                    .keys()
                    .filter(|name| !reader.hides(name))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// `GET /T`: what the table is.
pub async fn tables_describe(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath(name): UrlPath<String>,
) -> Result<Response, ApiError> {
    let resource = state.catalog.resource(&name)?;
    let table = resource.table();
    let schema = table.schema();
    let reader = caller.reader(table);
    if reader.nothing() {
        return Err(caller.refusal(format!("read table `{name}`")).into());
    }
    let mut document = serde_json::Value::clone(&schema.document());
    if let Some(properties) = document.get_mut("properties") {
        reader.strip(properties);
    }
    // How many records there are, and what the cache holds, are the table's, not the reader's.
    let whole = reader.sees_all();
    let settings = &schema.settings;
    let cache = match resource {
        Resource::Cached(cache) if whole => Some(cache.describe()),
        Resource::Cached(_) | Resource::Local(_) => None,
    };
    let description = json!({
        "name": table.name(),
        "primaryKey": settings.primary_key,
        "keyType": settings.key_type.name(),
        "indexes": settings.indexes,
        "timestamps": settings.timestamps,
        "recordCount": whole.then(|| table.count()),
        "schemaFile": schema.file.display().to_string(),
        "cache": cache,
        // What the start's check of the stored records against a changed schema found.
        "schemaCheck": whole.then(|| table.conformance()).flatten(),
        "schema": document,
    });
    Ok(axum::Json(description).into_response())
}
