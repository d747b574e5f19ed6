//! Problem details (RFC 9457): the one mapping from error codes to HTTP statuses.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::error::{CacheTableWrite, Chain, Error, ErrorCode};

/// The challenges of a 401: a user's password, or a token.
pub const WWW_AUTHENTICATE: &str = r#"Basic realm="tablecast", Bearer realm="tablecast""#;

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error answered over HTTP: a domain error, or one only the HTTP layer can detect.
#[derive(Debug)]
pub enum ApiError {
    /// What the domain refused or failed to do.
    Domain(Error),
    /// A body that is not JSON, of this media type (`None`: no `Content-Type`).
    UnsupportedMediaType(Option<String>),
    /// A method the route does not serve (the router adds `Allow`).
    MethodNotAllowed,
    /// A listing in a format not offered.
    NotAcceptable,
    /// A path that names no resource.
    NoRoute,
    /// A request the HTTP layer cannot read (an undecodable path, a malformed upgrade), with why.
    BadRequest(String),
    /// The server serves its limit of connections (the limit given).
    TooManyConnections(usize),
    /// The bodies being read hold the memory they may (the limit given, in bytes).
    BodiesInFlight(usize),
    /// A body did not arrive within the time given.
    BodyTimeout(std::time::Duration),
    /// A request hyper could not parse, answered before any handler ran (its status).
    Unparsable(StatusCode),
}

impl From<Error> for ApiError {
    fn from(error: Error) -> ApiError {
        ApiError::Domain(error)
    }
}

/// The status of each code.
pub fn status(code: ErrorCode) -> StatusCode {
    use StatusCode as S;
    match code {
        ErrorCode::UnknownTable | ErrorCode::RecordNotFound | ErrorCode::NoRoute => S::NOT_FOUND,
        ErrorCode::InvalidId
        | ErrorCode::MalformedJson
        | ErrorCode::KeyMismatch
        | ErrorCode::KeyInBody
        | ErrorCode::BadQuery
        | ErrorCode::BadRequest => S::BAD_REQUEST,
        ErrorCode::Unauthenticated => S::UNAUTHORIZED,
        ErrorCode::Forbidden => S::FORBIDDEN,
        ErrorCode::RateLimited => S::TOO_MANY_REQUESTS,
        ErrorCode::MethodNotAllowed => S::METHOD_NOT_ALLOWED,
        ErrorCode::NotAcceptable => S::NOT_ACCEPTABLE,
        ErrorCode::PreconditionFailed => S::PRECONDITION_FAILED,
        ErrorCode::PayloadTooLarge => S::PAYLOAD_TOO_LARGE,
        ErrorCode::UnsupportedMediaType => S::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::SchemaViolation | ErrorCode::InexactNumber | ErrorCode::TooManyIndexEntries => {
            S::UNPROCESSABLE_ENTITY
        }
        ErrorCode::OriginFailed | ErrorCode::OriginInvalid => S::BAD_GATEWAY,
        ErrorCode::OriginTimeout | ErrorCode::NotCached | ErrorCode::NotReplicated => {
            S::GATEWAY_TIMEOUT
        }
        ErrorCode::TooManyConnections
        | ErrorCode::TooManySubscribers
        | ErrorCode::ServerBusy
        | ErrorCode::ShuttingDown => S::SERVICE_UNAVAILABLE,
        ErrorCode::RequestTimeout => S::REQUEST_TIMEOUT,
        ErrorCode::UriTooLong => S::URI_TOO_LONG,
        ErrorCode::HeadersTooLarge => S::REQUEST_HEADER_FIELDS_TOO_LARGE,
        ErrorCode::StorageFailure | ErrorCode::Internal => S::INTERNAL_SERVER_ERROR,
        ErrorCode::InsufficientStorage => S::INSUFFICIENT_STORAGE,
    }
}

impl ApiError {
    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::Domain(error) => error.code(),
            ApiError::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            ApiError::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            ApiError::NotAcceptable => ErrorCode::NotAcceptable,
            ApiError::NoRoute => ErrorCode::NoRoute,
            ApiError::BadRequest(_) => ErrorCode::BadRequest,
            ApiError::TooManyConnections(_) => ErrorCode::TooManyConnections,
            ApiError::BodiesInFlight(_) => ErrorCode::ServerBusy,
            ApiError::BodyTimeout(_) => ErrorCode::RequestTimeout,
            ApiError::Unparsable(StatusCode::URI_TOO_LONG) => ErrorCode::UriTooLong,
            ApiError::Unparsable(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE) => {
                ErrorCode::HeadersTooLarge
            }
            ApiError::Unparsable(_) => ErrorCode::BadRequest,
        }
    }

    fn detail(&self) -> String {
        match self {
            ApiError::Domain(error) => error.public_message(),
            ApiError::UnsupportedMediaType(Some(found)) => format!(
                "the body must be JSON (Content-Type: application/json), not `{found}`; with curl, use --json"
            ),
            ApiError::UnsupportedMediaType(None) => "the body must be JSON, and the request has no Content-Type: send Content-Type: application/json (with curl, use --json)".to_owned(),
            ApiError::MethodNotAllowed => {
                "this resource does not support the method; the Allow header lists those it does"
                    .to_owned()
            }
            ApiError::NotAcceptable => {
                "listings are available as application/json, application/x-ndjson and text/csv"
                    .to_owned()
            }
            ApiError::NoRoute => {
                "no resource here: tables are at /<Table>, /<Table>/ and /<Table>/<id>".to_owned()
            }
            ApiError::BadRequest(detail) => detail.clone(),
            ApiError::TooManyConnections(limit) => {
                format!("the server is serving its limit of {limit} connections; retry shortly")
            }
            ApiError::BodiesInFlight(limit) => format!(
                "the request bodies being received hold the {limit} bytes of memory they may (--body-memory); retry shortly"
            ),
            ApiError::BodyTimeout(after) => format!(
                "the request body did not arrive within {after:?} (--body-timeout)"
            ),
            ApiError::Unparsable(StatusCode::URI_TOO_LONG) => {
                "the request's URI is longer than the server reads".to_owned()
            }
            ApiError::Unparsable(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE) => {
                "the request's headers are larger than the server reads".to_owned()
            }
            ApiError::Unparsable(_) => "the request line or a header is not valid HTTP/1.1 (a path must be percent-encoded: no spaces, control characters or bytes that are not UTF-8)".to_owned(),
        }
    }

    /// The problem's status and its JSON body; a failure inside the server is logged here.
    pub fn problem(&self) -> (StatusCode, String) {
        if let ApiError::Domain(error) = self
            && error.is_internal()
        {
            tracing::error!(error = %Chain(error), "a request failed");
        }
        let code = self.code();
        let status = status(code);
        let mut body = Map::new();
        body.insert(
            "type".into(),
            format!("urn:tablecast:problem:{}", code.as_str()).into(),
        );
        body.insert("title".into(), code.title().into());
        body.insert("status".into(), status.as_u16().into());
        body.insert("detail".into(), self.detail().into());
        if let ApiError::Domain(error) = self {
            add_fields(&mut body, error);
        }
        (status, Value::Object(body).to_string())
    }
}

/// The fields a problem carries beyond the standard ones.
fn add_fields(body: &mut Map<String, Value>, error: &Error) {
    let mut add = |name: &str, value: Value| {
        body.insert(name.to_owned(), value);
    };
    match error {
        Error::MalformedJson { line, column, .. } => {
            add("line", json!(line));
            add("column", json!(column));
        }
        Error::SchemaViolation { violations, .. } | Error::OriginInvalid { violations, .. } => {
            add("errors", json!(violations));
        }
        Error::BadQuery(query) => {
            add("position", json!(query.position));
            add("token", json!(query.token));
            add("expected", json!(query.expected));
        }
        Error::PayloadTooLarge { limit } => add("limit", json!(limit)),
        Error::InexactNumber { number, offset } => {
            add("number", json!(number));
            add("offset", json!(offset));
        }
        Error::TooManyIndexEntries { entries, limit, .. } => {
            add("entries", json!(entries));
            add("limit", json!(limit));
        }
        Error::OriginTimeout { after_ms, .. } => add("timeoutMs", json!(after_ms)),
        Error::RateLimited { retry_after, .. } => {
            add("retryAfter", json!(retry_after.as_secs().max(1)));
        }
        Error::UnknownTable(_)
        | Error::RecordNotFound { .. }
        | Error::Unauthenticated(_)
        | Error::Forbidden(_)
        | Error::InvalidId { .. }
        | Error::KeyMismatch { .. }
        | Error::KeyInBody { .. }
        | Error::PreconditionFailed(_)
        | Error::OriginFailed { .. }
        | Error::NotCached { .. }
        | Error::NotOnCacheTable { .. }
        | Error::TooManySubscribers { .. }
        | Error::ShuttingDown
        | Error::NotReplicated(_)
        | Error::Storage(_)
        | Error::DiskFull(_)
        | Error::Internal(_) => {}
    }
}

/// The methods a resource allows when it refuses `write`: a 405 the router did not produce.
fn allowed(write: CacheTableWrite) -> &'static str {
    match write {
        // `/T/id` of a cache table.
        CacheTableWrite::Patch => "GET, HEAD, PUT, DELETE",
        // `/T/` of a cache table.
        CacheTableWrite::Post => "GET, HEAD",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = self.problem();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let ApiError::Domain(Error::NotOnCacheTable { write, .. }) = &self {
            headers.insert(header::ALLOW, HeaderValue::from_static(allowed(*write)));
        }
        match &self {
            _ if status == StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::Domain(Error::Unauthenticated(_)) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(WWW_AUTHENTICATE),
                );
            }
            ApiError::Domain(Error::RateLimited { retry_after, .. }) => {
                let seconds = retry_after.as_secs().max(1).to_string();
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_str(&seconds).expect("digits"),
                );
            }
            _ => {}
        }
        response
    }
}
