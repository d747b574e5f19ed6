//! The stable codes of errors, with their names, titles, and the safe sentence of those that are
//! failures inside the server.

/// A stable, transport-neutral name for what went wrong: the last part of a problem's `type` on
/// HTTP; the source of the reason code on MQTT. Each variant is described by its
/// [`title`](ErrorCode::title) and named by [`as_str`](ErrorCode::as_str).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    UnknownTable,
    RecordNotFound,
    Unauthenticated,
    Forbidden,
    RateLimited,
    NoRoute,
    InvalidId,
    MalformedJson,
    InexactNumber,
    SchemaViolation,
    KeyMismatch,
    KeyInBody,
    BadQuery,
    BadRequest,
    MethodNotAllowed,
    NotAcceptable,
    PreconditionFailed,
    PayloadTooLarge,
    TooManyIndexEntries,
    UnsupportedMediaType,
    OriginFailed,
    OriginInvalid,
    OriginTimeout,
    NotCached,
    TooManyConnections,
    TooManySubscribers,
    ServerBusy,
    RequestTimeout,
    UriTooLong,
    HeadersTooLarge,
    ShuttingDown,
    NotReplicated,
    StorageFailure,
    InsufficientStorage,
    Internal,
}

impl ErrorCode {
    /// The stable name, e.g. `record-not-found`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::UnknownTable => "unknown-table",
            ErrorCode::RecordNotFound => "record-not-found",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RateLimited => "rate-limited",
            ErrorCode::NoRoute => "no-route",
            ErrorCode::InvalidId => "invalid-id",
            ErrorCode::MalformedJson => "malformed-json",
            ErrorCode::InexactNumber => "inexact-number",
            ErrorCode::SchemaViolation => "schema-violation",
            ErrorCode::KeyMismatch => "key-mismatch",
            ErrorCode::KeyInBody => "key-in-body",
            ErrorCode::BadQuery => "bad-query",
            ErrorCode::BadRequest => "bad-request",
            ErrorCode::MethodNotAllowed => "method-not-allowed",
            ErrorCode::NotAcceptable => "not-acceptable",
            ErrorCode::PreconditionFailed => "precondition-failed",
            ErrorCode::PayloadTooLarge => "payload-too-large",
            ErrorCode::TooManyIndexEntries => "too-many-index-entries",
            ErrorCode::UnsupportedMediaType => "unsupported-media-type",
            ErrorCode::OriginFailed => "origin-failed",
            ErrorCode::OriginInvalid => "origin-invalid",
            ErrorCode::OriginTimeout => "origin-timeout",
            ErrorCode::NotCached => "not-cached",
            ErrorCode::TooManyConnections => "too-many-connections",
            ErrorCode::TooManySubscribers => "too-many-subscribers",
            ErrorCode::ServerBusy => "server-busy",
            ErrorCode::RequestTimeout => "request-timeout",
            ErrorCode::UriTooLong => "uri-too-long",
            ErrorCode::HeadersTooLarge => "headers-too-large",
            ErrorCode::ShuttingDown => "shutting-down",
            ErrorCode::NotReplicated => "not-replicated",
            ErrorCode::StorageFailure => "storage-failure",
            ErrorCode::InsufficientStorage => "insufficient-storage",
            ErrorCode::Internal => "internal-error",
        }
    }

    /// A short human-readable summary of the code.
    pub fn title(self) -> &'static str {
        match self {
            ErrorCode::UnknownTable => "Unknown table",
            ErrorCode::RecordNotFound => "Record not found",
            ErrorCode::Unauthenticated => "Authentication required",
            ErrorCode::Forbidden => "Forbidden",
            ErrorCode::RateLimited => "Too many requests",
            ErrorCode::NoRoute => "Not found",
            ErrorCode::InvalidId => "Invalid record id",
            ErrorCode::MalformedJson => "Malformed JSON",
            ErrorCode::InexactNumber => "Number cannot be stored exactly",
            ErrorCode::SchemaViolation => "Schema violation",
            ErrorCode::KeyMismatch => "Primary key does not match the URL",
            ErrorCode::KeyInBody => "Primary key given on POST",
            ErrorCode::BadQuery => "Bad query",
            ErrorCode::BadRequest => "Bad request",
            ErrorCode::MethodNotAllowed => "Method not allowed",
            ErrorCode::NotAcceptable => "Not acceptable",
            ErrorCode::PreconditionFailed => "Precondition failed",
            ErrorCode::PayloadTooLarge => "Payload too large",
            ErrorCode::TooManyIndexEntries => "Too many index entries",
            ErrorCode::UnsupportedMediaType => "Unsupported media type",
            ErrorCode::OriginFailed => "Origin failed",
            ErrorCode::OriginInvalid => "Invalid origin answer",
            ErrorCode::OriginTimeout => "Origin timeout",
            ErrorCode::NotCached => "Not cached",
            ErrorCode::TooManyConnections => "Too many connections",
            ErrorCode::TooManySubscribers => "Too many subscribers",
            ErrorCode::ServerBusy => "Server busy",
            ErrorCode::RequestTimeout => "Request timeout",
            ErrorCode::UriTooLong => "URI too long",
            ErrorCode::HeadersTooLarge => "Request headers too large",
            ErrorCode::ShuttingDown => "Shutting down",
            ErrorCode::NotReplicated => "Not stored in the cluster in time",
            ErrorCode::StorageFailure => "Storage failure",
            ErrorCode::InsufficientStorage => "Insufficient storage",
            ErrorCode::Internal => "Internal error",
        }
    }

    /// For failures inside the server, the one sentence a client is told (the cause is logged);
    /// `None` for every other code, whose own message is safe to send.
    pub fn internal_message(self) -> Option<&'static str> {
        match self {
            ErrorCode::StorageFailure => {
                Some("the store failed to complete the request; the server log has the cause")
            }
            ErrorCode::InsufficientStorage => Some(
                "the server's disk is full, so nothing was stored; the server log has the cause",
            ),
            ErrorCode::Internal => {
                Some("the server failed to complete the request; the server log has the cause")
            }
            ErrorCode::UnknownTable
            | ErrorCode::RecordNotFound
            | ErrorCode::Unauthenticated
            | ErrorCode::Forbidden
            | ErrorCode::RateLimited
            | ErrorCode::NoRoute
            | ErrorCode::InvalidId
            | ErrorCode::MalformedJson
            | ErrorCode::InexactNumber
            | ErrorCode::SchemaViolation
            | ErrorCode::KeyMismatch
            | ErrorCode::KeyInBody
            | ErrorCode::BadQuery
            | ErrorCode::BadRequest
            | ErrorCode::MethodNotAllowed
            | ErrorCode::NotAcceptable
            | ErrorCode::PreconditionFailed
            | ErrorCode::PayloadTooLarge
            | ErrorCode::TooManyIndexEntries
            | ErrorCode::UnsupportedMediaType
            | ErrorCode::OriginFailed
            | ErrorCode::OriginInvalid
            | ErrorCode::OriginTimeout
            | ErrorCode::NotCached
            | ErrorCode::TooManyConnections
            | ErrorCode::TooManySubscribers
            | ErrorCode::ServerBusy
            | ErrorCode::RequestTimeout
            | ErrorCode::UriTooLong
            | ErrorCode::HeadersTooLarge
            | ErrorCode::ShuttingDown
            | ErrorCode::NotReplicated => None,
        }
    }
}
