//! Handlers for `/T`, `/T/` and `/T/id`.

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonBody, UrlPath};
use super::headers;
use super::listing::{self, Chunks};
use crate::catalog::Resource;
use crate::error::Error;
use crate::query::{self, Select};
use crate::storage::{Commit, Envelope};
use crate::table::{Table, Verdict};

type Answer = Result<Response, ApiError>;

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
    .add(b'|');

fn table<'a>(state: &'a AppState, name: &str) -> Result<&'a Table, ApiError> {
    match state.catalog.resource(name)? {
        Resource::Local(table) => Ok(table),
    }
}

/// `GET /T/id`: the stored JSON bytes as they are.
pub async fn records_get(
    State(state): State<AppState>,
    UrlPath((name, id)): UrlPath<(String, String)>,
    request: HeaderMap,
) -> Answer {
    let table = table(&state, &name)?;
    let key = table.parse_id(&id)?;
    let record = table
        .get(&key)?
        .ok_or(Error::RecordNotFound { table: name, id })?;
    match headers::condition(&request).evaluate(Some(record.version), true) {
        Verdict::Proceed => Ok(record_response(StatusCode::OK, &record)),
        Verdict::NotModified => {
            let mut response = StatusCode::NOT_MODIFIED.into_response();
            set_validators(response.headers_mut(), &record);
            Ok(response)
        }
        Verdict::Failed => Err(Error::PreconditionFailed(
            "the record's current ETag does not satisfy If-Match".to_owned(),
        )
        .into()),
    }
}

/// `PUT /T/id`: create or replace.
pub async fn records_put(
    State(state): State<AppState>,
    UrlPath((name, id)): UrlPath<(String, String)>,
    request: HeaderMap,
    JsonBody(body): JsonBody,
) -> Answer {
    let table = table(&state, &name)?;
    let key = table.parse_id(&id)?;
    let commit = table.put(key, body, headers::condition(&request)).await?;
    Ok(write_response(&request, &commit))
}

/// `PATCH /T/id`: JSON merge patch, then validation.
pub async fn records_patch(
    State(state): State<AppState>,
    UrlPath((name, id)): UrlPath<(String, String)>,
    request: HeaderMap,
    JsonBody(patch): JsonBody,
) -> Answer {
    let table = table(&state, &name)?;
    let key = table.parse_id(&id)?;
    let commit = table
        .patch(key, patch, headers::condition(&request))
        .await?;
    Ok(write_response(&request, &commit))
}

/// `DELETE /T/id`.
pub async fn records_delete(
    State(state): State<AppState>,
    UrlPath((name, id)): UrlPath<(String, String)>,
    request: HeaderMap,
) -> Answer {
    let table = table(&state, &name)?;
    let key = table.parse_id(&id)?;
    table.delete(key, headers::condition(&request)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /T/`: create under a generated key.
pub async fn records_post(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
    JsonBody(body): JsonBody,
) -> Answer {
    let table = table(&state, &name)?;
    let commit = table.create(body).await?;
    let record = commit.record.as_ref().expect("a create stores a record");
    let mut response = record_response(StatusCode::CREATED, record);
    let location = format!(
        "/{name}/{}",
        utf8_percent_encode(&commit.key.to_string(), SEGMENT)
    );
    response.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&location).expect("percent-encoded path"),
    );
    Ok(response)
}

/// `GET /T/?query`: the matching records, streamed as JSON, NDJSON or CSV by `Accept`.
pub async fn records_list(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
    RawQuery(raw): RawQuery,
    request: HeaderMap,
) -> Answer {
    let table = table(&state, &name)?;
    let schema = table.schema();
    let query = query::parse(raw.as_deref().unwrap_or_default())
        .and_then(|query| query::filter::bind(query, &schema.document))
        .map_err(Error::BadQuery)?;
    let format = listing::negotiate(&request, || csv_columns(&query, &schema.document))
        .ok_or(ApiError::NotAcceptable)?;
    let rows = query::executor::execute(table, query)?;
    let body = Body::from_stream(tokio_stream::iter(Chunks::new(rows, format.clone())));
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        )],
        body,
    )
        .into_response())
}

/// CSV columns: the selected properties, or every property the schema declares.
fn csv_columns(query: &query::Query, schema: &serde_json::Value) -> Vec<String> {
    match &query.select {
        Some(Select::Value(path)) => vec![path.join(".")],
        Some(Select::Fields(fields)) => fields.iter().map(|f| f.name.clone()).collect(),
        None => schema
            .get("properties")
            .and_then(serde_json::Value::as_object)
            .map(|properties| properties.keys().cloned().collect())
            .unwrap_or_default(),
    }
}

/// `GET /T`: what the table is.
pub async fn tables_describe(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> Answer {
    let table = table(&state, &name)?;
    let schema = table.schema();
    let settings = &schema.settings;
    let description = json!({
        "name": table.name(),
        "primaryKey": settings.primary_key,
        "keyType": settings.key_type.name(),
        "indexes": settings.indexes,
        "timestamps": settings.timestamps,
        "recordCount": table.count(),
        "schemaFile": schema.file.display().to_string(),
        "schema": schema.document,
    });
    Ok(axum::Json(description).into_response())
}

fn record_response(status: StatusCode, record: &Envelope) -> Response {
    let mut response = (status, record.value.clone()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    set_validators(headers, record);
    response
}

fn set_validators(headers: &mut HeaderMap, record: &Envelope) {
    headers.insert(header::ETAG, headers::etag(record.version));
    headers.insert(header::LAST_MODIFIED, headers::last_modified(record));
}

/// 204 with the new validators, or 200 with the record under `Prefer: return=representation`.
fn write_response(request: &HeaderMap, commit: &Commit) -> Response {
    let record = commit
        .record
        .as_ref()
        .expect("a put or patch stores a record");
    if headers::wants_representation(request) {
        let mut response = record_response(StatusCode::OK, record);
        response.headers_mut().insert(
            "preference-applied",
            HeaderValue::from_static("return=representation"),
        );
        response
    } else {
        let mut response = StatusCode::NO_CONTENT.into_response();
        set_validators(response.headers_mut(), record);
        response
    }
}
