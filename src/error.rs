//! The domain error type. It knows nothing of HTTP or sled: `http::error` maps every variant to a
//! status, and `storage` turns its own failures into [`Error::Storage`].

use std::fmt;

/// One schema violation: where in the record, and what is wrong there.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// JSON pointer into the record (`""` is the whole record).
    pub pointer: String,
    /// What the schema requires there.
    pub message: String,
}

/// Everything that can go wrong serving a request, as the domain sees it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("there is no table named `{0}`")]
    UnknownTable(String),

    #[error("table `{table}` has no record with id `{id}`")]
    RecordNotFound { table: String, id: String },

    #[error("`{id}` is not a valid {key_type} id: {reason}")]
    InvalidId {
        id: String,
        key_type: &'static str,
        reason: String,
    },

    #[error("the body is not valid JSON: {reason} (line {line}, column {column})")]
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

    #[error("the origin of table `{table}` gave no usable answer for `{id}`: {reason}")]
    OriginFailed {
        table: String,
        id: String,
        reason: String,
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

    #[error("{method} is not supported on cache table `{table}`: {why}")]
    NotOnCacheTable {
        table: String,
        method: &'static str,
        why: &'static str,
        allow: &'static str,
    },

    #[error("the server is shutting down")]
    ShuttingDown,

    #[error("storage failure: {0}")]
    Storage(String),
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

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
