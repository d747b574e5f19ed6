//! Problem details (RFC 9457): the one mapping from errors to HTTP statuses.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::error::Error;

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error answered over HTTP: a domain error, or one only the HTTP layer can detect.
#[derive(Debug)]
pub enum ApiError {
    Domain(Error),
    UnsupportedMediaType(String),
    PayloadTooLarge(usize),
    MethodNotAllowed,
    NotAcceptable,
    NoRoute,
    BadRequest(String),
    /// The server serves its limit of subscribers (the limit given).
    TooManySubscribers(usize),
}

impl From<Error> for ApiError {
    fn from(error: Error) -> ApiError {
        ApiError::Domain(error)
    }
}

struct Problem {
    status: StatusCode,
    /// Stable identifier, the last part of the `type` URI.
    code: &'static str,
    title: &'static str,
    detail: String,
    extra: Map<String, Value>,
    /// The `Allow` header of a 405 the router did not produce.
    allow: Option<&'static str>,
}

impl Problem {
    fn new(
        status: StatusCode,
        code: &'static str,
        title: &'static str,
        detail: impl ToString,
    ) -> Problem {
        Problem {
            status,
            code,
            title,
            detail: detail.to_string(),
            extra: Map::new(),
            allow: None,
        }
    }

    fn allowing(mut self, methods: &'static str) -> Problem {
        self.allow = Some(methods);
        self
    }

    fn with(mut self, name: &str, value: Value) -> Problem {
        self.extra.insert(name.to_owned(), value);
        self
    }
}

impl ApiError {
    fn problem(self) -> Problem {
        use StatusCode as S;
        match self {
            ApiError::Domain(error) => {
                let detail = error.to_string();
                match error {
                    Error::UnknownTable(_) => {
                        Problem::new(S::NOT_FOUND, "unknown-table", "Unknown table", detail)
                    }
                    Error::RecordNotFound { .. } => {
                        Problem::new(S::NOT_FOUND, "record-not-found", "Record not found", detail)
                    }
                    Error::InvalidId { .. } => {
                        Problem::new(S::BAD_REQUEST, "invalid-id", "Invalid record id", detail)
                    }
                    Error::MalformedJson { line, column, .. } => {
                        Problem::new(S::BAD_REQUEST, "malformed-json", "Malformed JSON", detail)
                            .with("line", line.into())
                            .with("column", column.into())
                    }
                    Error::SchemaViolation { violations, .. } => Problem::new(
                        S::UNPROCESSABLE_ENTITY,
                        "schema-violation",
                        "Schema violation",
                        detail,
                    )
                    .with("errors", json!(violations)),
                    Error::KeyMismatch { .. } => Problem::new(
                        S::BAD_REQUEST,
                        "key-mismatch",
                        "Primary key does not match the URL",
                        detail,
                    ),
                    Error::KeyInBody { .. } => Problem::new(
                        S::BAD_REQUEST,
                        "key-in-body",
                        "Primary key given on POST",
                        detail,
                    ),
                    Error::PreconditionFailed(_) => Problem::new(
                        S::PRECONDITION_FAILED,
                        "precondition-failed",
                        "Precondition failed",
                        detail,
                    ),
                    Error::BadQuery(query) => {
                        Problem::new(S::BAD_REQUEST, "bad-query", "Bad query", detail)
                            .with("position", query.position.into())
                            .with("token", query.token.into())
                            .with("expected", query.expected.into())
                    }
                    Error::OriginFailed { .. } => {
                        Problem::new(S::BAD_GATEWAY, "origin-failed", "Origin failed", detail)
                    }
                    Error::OriginTimeout { after_ms, .. } => Problem::new(
                        S::GATEWAY_TIMEOUT,
                        "origin-timeout",
                        "Origin timeout",
                        detail,
                    )
                    .with("timeoutMs", json!(after_ms)),
                    Error::OriginInvalid { violations, .. } => Problem::new(
                        S::BAD_GATEWAY,
                        "origin-invalid",
                        "Invalid origin answer",
                        detail,
                    )
                    .with("errors", json!(violations)),
                    Error::NotCached { .. } => {
                        Problem::new(S::GATEWAY_TIMEOUT, "not-cached", "Not cached", detail)
                    }
                    Error::NotOnCacheTable { allow, .. } => Problem::new(
                        S::METHOD_NOT_ALLOWED,
                        "method-not-allowed",
                        "Method not allowed",
                        detail,
                    )
                    .allowing(allow),
                    Error::ShuttingDown => Problem::new(
                        S::SERVICE_UNAVAILABLE,
                        "shutting-down",
                        "Shutting down",
                        detail,
                    ),
                    Error::Storage(cause) => {
                        tracing::error!(%cause, "storage failure");
                        Problem::new(
                            S::INTERNAL_SERVER_ERROR,
                            "storage-failure",
                            "Storage failure",
                            "the store failed to complete the request; the server log has the cause",
                        )
                    }
                }
            }
            ApiError::UnsupportedMediaType(found) => Problem::new(
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                format!(
                    "the body must be JSON (Content-Type: application/json), not `{found}`; with curl, use --json"
                ),
            ),
            ApiError::PayloadTooLarge(limit) => Problem::new(
                S::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
                format!("the body is larger than the limit of {limit} bytes"),
            )
            .with("limit", limit.into()),
            ApiError::MethodNotAllowed => Problem::new(
                S::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
                "this resource does not support the method; the Allow header lists those it does",
            ),
            ApiError::NotAcceptable => Problem::new(
                S::NOT_ACCEPTABLE,
                "not-acceptable",
                "Not acceptable",
                "listings are available as application/json, application/x-ndjson and text/csv",
            ),
            ApiError::NoRoute => Problem::new(
                S::NOT_FOUND,
                "no-route",
                "Not found",
                "no resource here: tables are at /<Table>, /<Table>/ and /<Table>/<id>",
            ),
            ApiError::BadRequest(detail) => {
                Problem::new(S::BAD_REQUEST, "bad-request", "Bad request", detail)
            }
            ApiError::TooManySubscribers(limit) => Problem::new(
                S::SERVICE_UNAVAILABLE,
                "too-many-subscribers",
                "Too many subscribers",
                format!("the server serves its limit of {limit} subscriptions; retry shortly"),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let Problem {
            status,
            code,
            title,
            detail,
            extra,
            allow,
        } = self.problem();
        let mut body = json!({
            "type": format!("urn:tablecast:problem:{code}"),
            "title": title,
            "status": status.as_u16(),
            "detail": detail,
        });
        if let Value::Object(fields) = &mut body {
            fields.extend(extra);
        }
        let mut response = (status, body.to_string()).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(methods) = allow {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(methods));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
