//! Response builders the handlers share: a record with its validators, the answer to a
//! conditional read, the answer to a write, and the `Cache-Status` header.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::headers;
use crate::access::{Identity, Reader};
use crate::cache::CacheStatus;
use crate::error::{Error, Result};
use crate::storage::{Commit, Envelope};
use crate::table::Verdict;

/// `record` (the record `table/id`, if there is one) as `caller` may see it with `reader`. A
/// record it may not read does not exist for it (404); without credentials, any record it does
/// not see needs them (401: whether it exists is not told).
pub fn visible(
    caller: &Identity,
    reader: &Reader,
    (table, id): (&str, &str),
    record: Option<Envelope>,
) -> Result<Envelope> {
    let shown = match record {
        Some(record) => reader
            .show(&record.value)?
            .map(|value| Envelope { value, ..record }),
        None => None,
    };
    shown.ok_or_else(|| unseen(caller, reader, (table, id)))
}

/// The error for a record `caller` does not see with `reader`: see [`visible`].
pub fn unseen(caller: &Identity, reader: &Reader, (table, id): (&str, &str)) -> Error {
    if !caller.authenticated && !reader.sees_all() {
        caller.refusal(format!("read `{table}/{id}`"))
    } else {
        Error::RecordNotFound {
            table: table.to_owned(),
            id: id.to_owned(),
        }
    }
}

/// A commit's record as `reader` shows it (a write's `Prefer: return=representation`).
pub fn shown(reader: &Reader, mut commit: Commit) -> Result<Commit> {
    if let Some(record) = commit.record.take() {
        commit.record = reader
            .show(&record.value)?
            .map(|value| Envelope { value, ..record });
    }
    Ok(commit)
}

/// `record`'s JSON bytes as they are stored, with its `ETag` and `Last-Modified`.
pub fn record(status: StatusCode, record: &Envelope) -> Response {
    let mut response = (status, record.value.clone()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    set_validators(headers, record);
    response
}

/// The answer to a read of `record` under the request's preconditions: the record, 304 Not
/// Modified, or 412.
pub fn read(request: &HeaderMap, record: &Envelope) -> Result<Response, ApiError> {
    match headers::precondition(request).evaluate(Some(record.version), true) {
        Verdict::Proceed => Ok(self::record(StatusCode::OK, record)),
        Verdict::NotModified => {
            let mut response = StatusCode::NOT_MODIFIED.into_response();
            set_validators(response.headers_mut(), record);
            Ok(response)
        }
        Verdict::Failed => Err(Error::PreconditionFailed(
            "the record's current ETag does not satisfy If-Match".to_owned(),
        )
        .into()),
    }
}

/// The answer to a put or patch: 204 with the new validators, or 200 with the record under
/// `Prefer: return=representation`.
pub fn written(request: &HeaderMap, commit: &Commit) -> Response {
    let Some(stored) = commit.record.as_ref() else {
        // Stored, but not a record the writer may read.
        return StatusCode::NO_CONTENT.into_response();
    };
    if headers::prefers(request, "return=representation") {
        let mut response = record(StatusCode::OK, stored);
        response.headers_mut().insert(
            "preference-applied",
            HeaderValue::from_static("return=representation"),
        );
        response
    } else {
        let mut response = StatusCode::NO_CONTENT.into_response();
        set_validators(response.headers_mut(), stored);
        response
    }
}

/// Adds `Cache-Status` (RFC 9211).
pub fn set_cache_status(headers: &mut HeaderMap, status: &CacheStatus) {
    set(headers, "cache-status", &status.to_string());
}

/// Sets a header whose value is computed text; text that is not a valid value is left out.
pub fn set(headers: &mut HeaderMap, name: impl header::IntoHeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

fn set_validators(headers: &mut HeaderMap, record: &Envelope) {
    headers.insert(header::ETAG, headers::etag(record.version));
    headers.insert(header::LAST_MODIFIED, headers::last_modified(record));
}
