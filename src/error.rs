//! The domain error and its stable codes. It knows nothing of HTTP, MQTT or sled.
//!
//! [`Error::code`] is the one table from each variant to a stable [`ErrorCode`]; every transport
//! maps codes with one exhaustive match of its own (`http::error` to statuses, the MQTT publish
//! path to reason codes). What a client is told is [`Error::public_message`]: the `Display` of the
//! variant, except for failures inside the server, whose [`Cause`] goes to the log only.

mod code;

use std::fmt;
use std::sync::Arc;

pub use code::ErrorCode;

/// One schema violation: where in the record, and what is wrong there.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// JSON pointer into the record (`""` is the whole record).
    pub pointer: String,
    /// What the schema requires there.
    pub message: String,
}

/// Everything that can go wrong serving a request, as the domain sees it. Each variant's message
/// (its `Display`) says what was wrong and where, for the client.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    #[error("there is no table named `{0}`")]
    UnknownTable(String),

    #[error("table `{table}` has no record with id `{id}`")]
    RecordNotFound { table: String, id: String },

    /// No identity, or credentials that do not prove one (why, safe to tell).
    #[error("{0}")]
    Unauthenticated(String),

    /// An identity that may not do what it asked (what, and where).
    #[error("{0}")]
    Forbidden(String),

    /// An identity past its rate: what the rate is, and when to retry.
    #[error("{detail}; retry in {} s", .retry_after.as_secs().max(1))]
    RateLimited {
        detail: String,
        retry_after: std::time::Duration,
    },

    #[error("`{id}` is not a valid {key_type} id: {reason}")]
    InvalidId {
        id: String,
        key_type: &'static str,
        reason: String,
    },

    #[error("the payload is not JSON: {reason} (line {line}, column {column})")]
    MalformedJson {
        line: usize,
        column: usize,
        reason: String,
    },

    #[error("the record does not match the schema of table `{table}`")]
    SchemaViolation {
        table: String,
        violations: Vec<Violation>,
    },

    #[error("the body's `{field}` is {body} but the URL names {url}")]
    KeyMismatch {
        field: String,
        body: String,
        url: String,
    },

    #[error("`{field}` is generated on POST; to choose the id, PUT the record to /{table}/<id>")]
    KeyInBody { table: String, field: String },

    #[error("{0}")]
    PreconditionFailed(String),

    #[error("{0}")]
    BadQuery(QueryError),

    #[error(
        "the number `{number}` (at byte {offset}) cannot be stored exactly: numbers are 64-bit floating point, about 15 significant digits; send it as a string to keep every digit"
    )]
    InexactNumber { number: String, offset: usize },

    #[error("the payload is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },

    #[error(
        "the record would have {entries} entries in the indexes of table `{table}`; a record may have at most {limit} (--max-index-entries)"
    )]
    TooManyIndexEntries {
        table: String,
        entries: usize,
        limit: usize,
    },

    #[error("the origin of table `{table}` gave no usable answer for `{id}`: {failure}")]
    OriginFailed {
        table: String,
        id: String,
        failure: OriginFailure,
    },

    #[error("the origin of table `{table}` did not answer for `{id}` within {after_ms} ms")]
    OriginTimeout {
        table: String,
        id: String,
        after_ms: u128,
    },

    #[error("the origin's answer for `{id}` {reason}; it was not stored")]
    OriginInvalid {
        table: String,
        id: String,
        reason: String,
        violations: Vec<Violation>,
    },

    #[error("`{table}/{id}` is not cached, and the request said only-if-cached")]
    NotCached { table: String, id: String },

    #[error("{} is not supported on cache table `{table}`: {}", .write.method(), .write.why())]
    NotOnCacheTable {
        table: String,
        write: CacheTableWrite,
    },

    #[error("the server serves its limit of {limit} subscriptions; retry shortly")]
    TooManySubscribers { limit: usize },

    #[error("the server is shutting down")]
    ShuttingDown,

    /// A write durable on this node that the cluster's stream did not store in time
    /// (`--replication-ack cluster`).
    #[error("the write is durable on this node, but the cluster's stream did not store it within {} ms; it is published as soon as NATS can be reached", .0.as_millis())]
    NotReplicated(std::time::Duration),

    /// The store failed: the disk, or data that does not decode.
    #[error("storage failure")]
    Storage(#[source] Cause),

    /// The disk is full (or a file may grow no more): nothing was stored.
    #[error("disk full")]
    DiskFull(#[source] Cause),

    /// A failure of the server itself: a task that died, an invariant that did not hold.
    #[error("internal failure")]
    Internal(#[source] Cause),
}

/// A write that cache tables do not take: their entries mirror the origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheTableWrite {
    /// A JSON merge patch.
    Patch,
    /// A create under a generated key.
    Post,
}

impl CacheTableWrite {
    /// The HTTP method that asks for it.
    pub fn method(self) -> &'static str {
        match self {
            CacheTableWrite::Patch => "PATCH",
            CacheTableWrite::Post => "POST",
        }
    }

    /// Why a cache table does not take it, and what to do instead.
    pub fn why(self) -> &'static str {
        match self {
            CacheTableWrite::Patch => {
                "a cache entry mirrors the origin and is replaced whole; PUT pushes a new value"
            }
            CacheTableWrite::Post => {
                "cache entries are keyed by the origin's ids; PUT /<Table>/<id> pushes one"
            }
        }
    }
}

/// Why an origin gave no usable answer, as a client may be told it: the origin's own text
/// (a connection error, a redirect's target) goes to the log only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OriginFailure {
    /// It answered with a status other than 200, 304, 404 or 410.
    Status(u16),
    /// It redirected to another host, which is not followed.
    Redirected,
    /// Its answer is larger than the body limit.
    TooLarge { limit: usize },
    /// It could not be reached, or the connection broke mid-answer.
    Unreachable,
}

impl fmt::Display for OriginFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OriginFailure::Status(status) => write!(f, "the origin answered {status}"),
            OriginFailure::Redirected => {
                f.write_str("the origin redirected to another host, which is not followed")
            }
            OriginFailure::TooLarge { limit } => {
                write!(f, "the origin's answer is larger than {limit} bytes")
            }
            OriginFailure::Unreachable => f.write_str("the origin is unreachable"),
        }
    }
}

/// What failed inside the server, and the underlying error if there is one. Shared, so one
/// failed commit can be reported to every write it carried.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{context}")]
pub struct Cause {
    context: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl Cause {
    /// A failure described by `context` alone.
    pub fn new(context: impl Into<String>) -> Cause {
        Cause {
            context: context.into(),
            source: None,
        }
    }

    /// A failure of `source` while doing what `context` says.
    pub fn of(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Cause {
        Cause {
            context: context.into(),
            source: Some(Arc::new(source)),
        }
    }
}

impl Error {
    /// A client's JSON that does not parse, with where.
    pub fn malformed_json(error: &serde_json::Error) -> Error {
        let reason = error.to_string();
        // serde_json appends " at line L column C"; the error carries those as fields.
        let reason = reason.split(" at line ").next().unwrap_or(&reason);
        Error::MalformedJson {
            line: error.line(),
            column: error.column(),
            reason: reason.to_owned(),
        }
    }

    /// A stored record that does not parse: the store holds corrupt data.
    pub fn stored_not_json(error: serde_json::Error) -> Error {
        Error::Storage(Cause::of("a stored record is not JSON", error))
    }

    /// The stable code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::UnknownTable(_) => ErrorCode::UnknownTable,
            Error::RecordNotFound { .. } => ErrorCode::RecordNotFound,
            Error::Unauthenticated(_) => ErrorCode::Unauthenticated,
            Error::Forbidden(_) => ErrorCode::Forbidden,
            Error::RateLimited { .. } => ErrorCode::RateLimited,
            Error::InvalidId { .. } => ErrorCode::InvalidId,
            Error::MalformedJson { .. } => ErrorCode::MalformedJson,
            Error::InexactNumber { .. } => ErrorCode::InexactNumber,
            Error::SchemaViolation { .. } => ErrorCode::SchemaViolation,
            Error::KeyMismatch { .. } => ErrorCode::KeyMismatch,
            Error::KeyInBody { .. } => ErrorCode::KeyInBody,
            Error::PreconditionFailed(_) => ErrorCode::PreconditionFailed,
            Error::BadQuery(_) => ErrorCode::BadQuery,
            Error::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            Error::TooManyIndexEntries { .. } => ErrorCode::TooManyIndexEntries,
            Error::OriginFailed { .. } => ErrorCode::OriginFailed,
            Error::OriginTimeout { .. } => ErrorCode::OriginTimeout,
            Error::OriginInvalid { .. } => ErrorCode::OriginInvalid,
            Error::NotCached { .. } => ErrorCode::NotCached,
            Error::NotOnCacheTable { .. } => ErrorCode::MethodNotAllowed,
            Error::TooManySubscribers { .. } => ErrorCode::TooManySubscribers,
            Error::ShuttingDown => ErrorCode::ShuttingDown,
            Error::NotReplicated(_) => ErrorCode::NotReplicated,
            Error::Storage(_) => ErrorCode::StorageFailure,
            Error::DiskFull(_) => ErrorCode::InsufficientStorage,
            Error::Internal(_) => ErrorCode::Internal,
        }
    }

    /// What a client may be told, on any transport.
    pub fn public_message(&self) -> String {
        match self.code().internal_message() {
            Some(message) => message.to_owned(),
            None => self.to_string(),
        }
    }

    /// [`Error::public_message`] with every schema violation after it (`/price: ...; /name:
    /// ...`), for the transports and reports that have no `errors` field to carry them.
    pub fn public_detail(&self) -> String {
        let message = self.public_message();
        let (Error::SchemaViolation { violations, .. } | Error::OriginInvalid { violations, .. }) =
            self
        else {
            return message;
        };
        if violations.is_empty() {
            return message;
        }
        let listed: Vec<String> = violations
            .iter()
            .map(|v| {
                let at = if v.pointer.is_empty() {
                    "/"
                } else {
                    &v.pointer
                };
                format!("{at}: {}", v.message)
            })
            .collect();
        format!("{message}: {}", listed.join("; "))
    }

    /// Whether the cause belongs in the server log (a failure inside the server).
    pub fn is_internal(&self) -> bool {
        self.code().internal_message().is_some()
    }
}

/// A query that cannot be parsed: where, which token, and what was expected instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryError {
    /// Character offset in the (percent-decoded) query string.
    pub position: usize,
    /// The text found there (empty at the end of the query).
    pub token: String,
    /// What would have been valid.
    pub expected: String,
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.token.is_empty() {
            write!(
                f,
                "query ends at position {}; expected {}",
                self.position, self.expected
            )
        } else {
            write!(
                f,
                "unexpected `{}` at position {}; expected {}",
                self.token, self.position, self.expected
            )
        }
    }
}

/// An error and every error under it, `: `-separated: how failures are logged.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            write!(f, ": {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_causes_are_logged_not_told() {
        let disk = std::io::Error::other("File too large (os error 27)");
        let error = Error::Storage(Cause::of("the commit failed", disk));
        assert_eq!(error.code().as_str(), "storage-failure");
        assert!(error.is_internal());
        assert!(!error.public_message().contains("os error"));
        assert_eq!(
            Chain(&error).to_string(),
            "storage failure: the commit failed: File too large (os error 27)"
        );
        let origin = Error::OriginFailed {
            table: "Quote".into(),
            id: "A".into(),
            failure: OriginFailure::Redirected,
        };
        assert!(!origin.is_internal());
        assert_eq!(origin.public_message(), origin.to_string());
    }
}
