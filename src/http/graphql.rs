//! `/graphql` over HTTP, as the GraphQL-over-HTTP specification has it: `POST` with a JSON
//! body, `GET` with `?query=...&variables=...` (queries only), answered as
//! `application/graphql-response+json` or, for clients that ask for it, `application/json`; a
//! WebSocket upgrade speaks `graphql-transport-ws`.
//!
//! A request that is not a GraphQL request at all (no JSON body, a bad `variables` parameter) is
//! answered with a problem+json like any other; a GraphQL request that fails as a whole (it does
//! not parse, breaks a limit, names no field of the schema) with a GraphQL response of errors,
//! status 400 when the client accepts `application/graphql-response+json`, 200 otherwise.

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::extract::JsonBody;
use super::headers;
use super::response::set;
use crate::graphql::{Answer, Ask, GraphQl, Outcome, ws};

/// The path of the endpoint.
pub const PATH: &str = "/graphql";

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";

/// `GET /graphql?query=...`: a query; with `Upgrade: websocket`, the subscription protocol.
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    request: Request,
) -> Result<Response, ApiError> {
    let graphql = engine(&state)?;
    let (mut parts, _) = request.into_parts();
    let upgrade = parts.headers.get(header::UPGRADE);
    if upgrade.is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket")) {
        let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &state)
            .await
            .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
        let graphql = graphql.clone();
        return Ok(upgrade
            .protocols([ws::SUBPROTOCOL])
            .on_upgrade(move |socket| ws::serve(socket, graphql, caller.0))
            .into_response());
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Params {
        query: Option<String>,
        variables: Option<String>,
        operation_name: Option<String>,
        extensions: Option<String>,
    }
    let Query(params) = Query::<Params>::try_from_uri(&parts.uri)
        .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let json = |name: &str, text: Option<String>| -> Result<Option<Value>, ApiError> {
        text.map(|text| {
            serde_json::from_str(&text).map_err(|e| {
                ApiError::BadRequest(format!("the `{name}` parameter is not JSON: {e}"))
            })
        })
        .transpose()
    };
    let ask = Ask {
        query: params.query,
        variables: json("variables", params.variables)?,
        operation_name: params.operation_name,
        extensions: json("extensions", params.extensions)?,
        by_get: true,
    };
    let accept = accepted(&parts.headers)?;
    let answer = graphql.answer(ask, caller.0).await;
    Ok(respond(answer, accept, Some(&parts.headers)))
}

/// `POST /graphql` with `{"query", "variables", "operationName", "extensions"}`.
pub async fn post(
    State(state): State<AppState>,
    caller: Caller,
    request: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let graphql = engine(&state)?;
    let accept = accepted(&request)?;
    let field = |name: &str| body.get(name).filter(|v| !v.is_null());
    let text = |name: &str| -> Result<Option<String>, ApiError> {
        match field(name) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(_) => Err(ApiError::BadRequest(format!("`{name}` must be a string"))),
        }
    };
    let object = |name: &str| -> Result<Option<Value>, ApiError> {
        match field(name) {
            None => Ok(None),
            Some(value @ Value::Object(_)) => Ok(Some(value.clone())),
            Some(_) => Err(ApiError::BadRequest(format!("`{name}` must be an object"))),
        }
    };
    if !body.is_object() {
        return Err(ApiError::BadRequest(
            "a GraphQL request is a JSON object: {\"query\": \"{ ... }\", \"variables\": {...}}"
                .to_owned(),
        ));
    }
    let ask = Ask {
        query: text("query")?,
        variables: object("variables")?,
        operation_name: text("operationName")?,
        extensions: object("extensions")?,
        by_get: false,
    };
    let answer = graphql.answer(ask, caller.0).await;
    Ok(respond(answer, accept, None))
}

fn engine(state: &AppState) -> Result<&GraphQl, ApiError> {
    state.graphql.as_ref().ok_or(ApiError::NoRoute)
}

/// The media type to answer in: `application/graphql-response+json` unless the client prefers
/// `application/json`; 406 if it accepts neither.
fn accepted(request: &HeaderMap) -> Result<&'static str, ApiError> {
    if !request.contains_key(header::ACCEPT) {
        return Ok("application/json");
    }
    headers::accepted(request)
        .find_map(|media| match media.as_str() {
            GRAPHQL_RESPONSE | "application/*" | "*/*" => Some(GRAPHQL_RESPONSE),
            "application/json" => Some("application/json"),
            _ => None,
        })
        .ok_or(ApiError::NotAcceptable)
}

/// The response to `answer` in `media`; `conditional` holds the headers of a GET, whose
/// `If-None-Match` may make it a 304 (a POST's is not looked at).
fn respond(answer: Answer, media: &'static str, conditional: Option<&HeaderMap>) -> Response {
    let status = match answer.outcome {
        Outcome::MutationByGet => StatusCode::METHOD_NOT_ALLOWED,
        Outcome::RequestError if media == GRAPHQL_RESPONSE => StatusCode::BAD_REQUEST,
        Outcome::RequestError | Outcome::Data => StatusCode::OK,
    };
    let not_modified = match (answer.etag.as_deref(), conditional) {
        (Some(etag), Some(request)) if status == StatusCode::OK => request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|candidate| {
                let candidate = candidate.trim();
                candidate == "*" || candidate.trim_start_matches("W/") == etag
            }),
        _ => false,
    };
    let mut response = match not_modified {
        true => StatusCode::NOT_MODIFIED.into_response(),
        false => (status, answer.body).into_response(),
    };
    let headers = response.headers_mut();
    if !not_modified {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    }
    if answer.outcome == Outcome::MutationByGet {
        headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
    }
    if let Some(etag) = &answer.etag {
        set(headers, header::ETAG, etag);
    }
    set(headers, header::CACHE_CONTROL, &answer.cache_control);
    headers.insert(header::VARY, HeaderValue::from_static("accept"));
    if let Some(status) = answer.cache_status {
        headers.insert("cache-status", HeaderValue::from_static(status));
    }
    if let Some((batches, records)) = answer.reads {
        let timing = format!("storage;desc=\"{batches} batches, {records} records\"");
        set(headers, "server-timing", &timing);
    }
    response
}
