//! Handlers for cache tables: reads through the cache with RFC 9111 / RFC 9211 headers, pushes,
//! evictions, and the `/_cache/T/...` routes.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::extract::{JsonBody, UrlPath};
use super::headers;
use super::response::{self, set, set_cache_status};
use crate::access::Identity;
use crate::cache::{
    CacheStatus, CachedTable, Detail, Entry, Found, RequestDirectives, seconds_left,
};
use crate::catalog::Resource;
use crate::error::Error;
use crate::storage::Key;

/// `GET /T/id` on a cache table: the entry is shared; `caller`'s rules apply to what is served.
pub async fn get(
    cache: &CachedTable,
    caller: &Identity,
    id: &str,
    request: &HeaderMap,
) -> Response {
    let key = match cache.table().parse_id(id) {
        Ok(key) => key,
        Err(error) => return problem(error, &CacheStatus::default()),
    };
    let reader = caller.reader(cache.table());
    if reader.nothing() {
        let refused = response::unseen(caller, &reader, (cache.table().name(), id));
        return problem(refused, &CacheStatus::default());
    }
    let served = cache.get(key, &request_directives(request)).await;
    let mut response = match served.outcome {
        Ok(Found::Stored(record, entry)) => {
            let shown =
                response::visible(caller, &reader, (cache.table().name(), id), Some(record));
            let mut response = match shown {
                Ok(record) => {
                    response::read(request, &record).unwrap_or_else(IntoResponse::into_response)
                }
                Err(error) => ApiError::from(error).into_response(),
            };
            let control = freshness_control(&entry, served.status.ttl.unwrap_or(0));
            set(response.headers_mut(), header::CACHE_CONTROL, &control);
            response
        }
        Ok(Found::Unstored(body)) if !reader.sees_all() => {
            // Not stored, so not a record the rules can be checked on as one.
            drop(body);
            let refused = response::unseen(caller, &reader, (cache.table().name(), id));
            ApiError::from(refused).into_response()
        }
        Ok(Found::Unstored(body)) => {
            let mut response = (StatusCode::OK, body).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(error) => {
            // A remembered 404 may be cached downstream as long as it is remembered here.
            let remembered = served
                .status
                .ttl
                .filter(|&ttl| ttl > 0 && matches!(error, Error::RecordNotFound { .. }));
            let control = remembered.map_or("no-store".to_owned(), |ttl| {
                format!("max-age={}", seconds_left(ttl))
            });
            let mut response = ApiError::from(error).into_response();
            set(response.headers_mut(), header::CACHE_CONTROL, &control);
            response
        }
    };
    let headers = response.headers_mut();
    if let Some(age) = served.age {
        set(headers, header::AGE, &(age / 1000).to_string());
    }
    if let Some(took) = served.origin_time {
        set(headers, "server-timing", &server_timing(took));
    }
    set_cache_status(headers, &served.status);
    response
}

/// `PUT /T/id` on a cache table: pushes a value, fresh for the request's `Cache-Control:
/// max-age` or the table's expiration.
pub async fn put(cache: &CachedTable, id: &str, request: &HeaderMap, body: Value) -> Response {
    let pushed = async {
        let key = cache.table().parse_id(id)?;
        let max_age = request_directives(request).max_age;
        cache
            .push(key, body, headers::precondition(request), max_age)
            .await
    };
    let status = CacheStatus {
        stored: true,
        ..CacheStatus::detail(Detail::Pushed)
    };
    match pushed.await {
        Ok(commit) => {
            let mut response = response::written(request, &commit);
            set_cache_status(response.headers_mut(), &status);
            response
        }
        Err(error) => problem(error, &CacheStatus::default()),
    }
}

/// `DELETE /T/id` on a cache table: evicts the entry.
pub async fn delete(cache: &CachedTable, id: &str, request: &HeaderMap) -> Response {
    let evicted = async {
        let key = cache.table().parse_id(id)?;
        cache.evict(key, headers::precondition(request)).await
    };
    match evicted.await {
        Ok(()) => {
            let mut response = StatusCode::NO_CONTENT.into_response();
            set_cache_status(
                response.headers_mut(),
                &CacheStatus::detail(Detail::Evicted),
            );
            response
        }
        Err(error) => problem(error, &CacheStatus::default()),
    }
}

/// `POST /_cache/T/invalidate` with `{"ids": [...]}` or `{"all": true}`: marks entries stale.
pub async fn cache_invalidate(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath(name): UrlPath<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    caller.require_admin(&format!("invalidate entries of `{name}`"))?;
    let cache = cache_table(&state, &name)?;
    let keys = match (&body, body.get("all")) {
        (Value::Object(fields), Some(Value::Bool(true))) if fields.len() == 1 => None,
        _ => Some(ids(cache, &body)?),
    };
    let invalidated = cache.invalidate(keys).await?;
    Ok(axum::Json(json!({ "invalidated": invalidated })).into_response())
}

/// `POST /_cache/T/warm` with `{"ids": [...]}`: fetches the ids that are not fresh now.
pub async fn cache_warm(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath(name): UrlPath<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    caller.require_admin(&format!("warm entries of `{name}`"))?;
    let cache = cache_table(&state, &name)?;
    let keys = ids(cache, &body)?;
    let report = cache.warm(keys).await;
    Ok(axum::Json(report).into_response())
}

fn cache_table<'a>(state: &'a AppState, name: &str) -> Result<&'a CachedTable, ApiError> {
    match state.catalog.resource(name)? {
        Resource::Cached(cache) => Ok(cache),
        Resource::Local(_) => Err(ApiError::BadRequest(format!(
            "table `{name}` is not a cache table (its schema has no x-table.cache)"
        ))),
    }
}

/// The keys of `{"ids": [...]}`; a bad one is named by its JSON pointer.
fn ids(cache: &CachedTable, body: &Value) -> Result<Vec<Key>, ApiError> {
    let usage = "the body must be {\"ids\": [...]} (or {\"all\": true} to invalidate everything)";
    let Some(Value::Array(ids)) = body.get("ids") else {
        return Err(ApiError::BadRequest(usage.to_owned()));
    };
    if body.as_object().is_some_and(|fields| fields.len() != 1) {
        return Err(ApiError::BadRequest(usage.to_owned()));
    }
    let key_type = cache.table().schema().settings.key_type;
    ids.iter()
        .enumerate()
        .map(|(i, id)| {
            key_type
                .from_json(id)
                .map_err(|reason| ApiError::BadRequest(format!("/ids/{i}: {reason}")))
        })
        .collect()
}

fn request_directives(request: &HeaderMap) -> RequestDirectives {
    RequestDirectives::parse(
        request
            .get_all(header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    )
}

/// `Cache-Control` for a stored entry with `ttl` ms of freshness left (negative: stale), so a
/// shared cache in front keeps it no longer than this one would.
fn freshness_control(entry: &Entry, ttl: i64) -> String {
    let mut control = format!("max-age={}", seconds_left(ttl.max(0)));
    for (name, window) in [
        ("stale-while-revalidate", entry.stale_while_revalidate),
        ("stale-if-error", entry.stale_if_error),
    ] {
        if window >= 1000 {
            control.push_str(&format!(", {name}={}", window / 1000));
        }
    }
    control
}

fn server_timing(took: Duration) -> String {
    format!("origin;dur={:.1}", took.as_secs_f64() * 1000.0)
}

fn problem(error: Error, status: &CacheStatus) -> Response {
    let mut response = ApiError::from(error).into_response();
    set_cache_status(response.headers_mut(), status);
    response
}
