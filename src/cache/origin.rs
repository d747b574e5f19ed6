//! The origin: the HTTP API a cache table mirrors. The only module that uses reqwest.
//!
//! A client can never steer the request: the id fills `{id}` as one percent-encoded segment,
//! the ids `.` and `..` are refused, the built URL must keep the template's scheme, host and
//! port, redirects are followed only on that same origin, and bodies are size-limited. Nothing
//! of the origin's headers reaches clients but the validators and cache directives read here.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{StatusCode, Url, redirect};

use super::control::OriginDirectives;
use crate::schema::CacheSettings;

/// Everything but RFC 3986's unreserved characters is escaped, `/` included.
const ID: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
const MAX_REDIRECTS: usize = 5;

/// The origin's validators of a stored answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Validators {
    /// `ETag`.
    pub etag: Option<String>,
    /// `Last-Modified`.
    pub last_modified: Option<String>,
}

/// What the origin answered.
#[derive(Debug)]
pub enum Reply {
    /// 200: the record's JSON bytes.
    Record {
        body: Bytes,
        validators: Validators,
        directives: OriginDirectives,
        /// The answer's `Age` in ms.
        age: u64,
    },
    /// 304 to a conditional request: what is stored is still current.
    NotModified {
        validators: Validators,
        directives: OriginDirectives,
        age: u64,
    },
    /// 404 or 410: there is no such record.
    NotFound { directives: OriginDirectives },
}

/// Why the origin gave no usable answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OriginError {
    /// No answer within the table's timeout.
    Timeout(Duration),
    /// An answer with a status that is not 200, 304, 404 or 410.
    Status(u16),
    /// A redirect to another host, which is not followed.
    Redirected(String),
    /// The body exceeds the size limit.
    TooLarge(usize),
    /// No connection, or the connection failed mid-answer.
    Unreachable(String),
}

impl std::fmt::Display for OriginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OriginError::Timeout(after) => write!(f, "no answer within {} ms", after.as_millis()),
            OriginError::Status(status) => write!(f, "the origin answered {status}"),
            OriginError::Redirected(to) => {
                write!(
                    f,
                    "the origin redirected to another host ({to}), which is not followed"
                )
            }
            OriginError::TooLarge(limit) => {
                write!(f, "the origin's answer is larger than {limit} bytes")
            }
            OriginError::Unreachable(reason) => write!(f, "the origin is unreachable: {reason}"),
        }
    }
}

/// A cache table's origin: its URL template and a pooled HTTP client.
pub struct Origin {
    client: reqwest::Client,
    /// The template around `{id}`.
    before: String,
    after: String,
    /// The template's scheme, host and port, which every request must keep.
    base: Url,
    headers: HeaderMap,
    timeout: Duration,
    max_body: usize,
}

impl Origin {
    /// An origin for `settings`, accepting bodies of at most `max_body` bytes.
    pub fn new(settings: &CacheSettings, max_body: usize) -> Result<Origin, String> {
        let (before, after) = settings
            .origin
            .split_once("{id}")
            .ok_or("the origin has no `{id}`")?;
        let base = Url::parse(&format!("{before}id{after}"))
            .map_err(|e| format!("the origin `{}` is not a valid URL: {e}", settings.origin))?;
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        for (name, value) in &settings.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| format!("header `{name}`: {e}"))?;
            let value =
                HeaderValue::from_str(value).map_err(|e| format!("header `{name}`: {e}"))?;
            headers.insert(name, value);
        }
        let same_origin = base.clone();
        let client = reqwest::Client::builder()
            .user_agent(concat!("tablecast/", env!("CARGO_PKG_VERSION")))
            .timeout(settings.timeout)
            .redirect(redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() > MAX_REDIRECTS {
                    attempt.error("too many redirects")
                } else if same_host(attempt.url(), &same_origin) {
                    attempt.follow()
                } else {
                    attempt.stop()
                }
            }))
            .build()
            .map_err(|e| format!("cannot build the origin client: {e}"))?;
        Ok(Origin {
            client,
            before: before.to_owned(),
            after: after.to_owned(),
            base,
            headers,
            timeout: settings.timeout,
            max_body,
        })
    }

    /// The URL of record `id`, or why `id` cannot name a record on the origin.
    pub fn url(&self, id: &str) -> Result<Url, String> {
        if id == "." || id == ".." {
            return Err(format!(
                "`{id}` cannot name a record on the origin (it is a relative path)"
            ));
        }
        let url = format!(
            "{}{}{}",
            self.before,
            utf8_percent_encode(id, ID),
            self.after
        );
        match Url::parse(&url) {
            Ok(url) if same_host(&url, &self.base) => Ok(url),
            _ => Err(format!("`{id}` does not make a valid origin URL")),
        }
    }

    /// Asks the origin for `url`, conditionally if `validators` has any. Returns the answer and
    /// how long the origin took.
    pub async fn fetch(
        &self,
        url: Url,
        validators: &Validators,
    ) -> (Result<Reply, OriginError>, Duration) {
        let started = Instant::now();
        let reply = self.exchange(url, validators).await;
        (reply, started.elapsed())
    }

    async fn exchange(&self, url: Url, validators: &Validators) -> Result<Reply, OriginError> {
        let mut request = self.client.get(url).headers(self.headers.clone());
        if let Some(etag) = validators
            .etag
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            request = request.header(header::IF_NONE_MATCH, etag);
        }
        if let Some(date) = validators
            .last_modified
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            request = request.header(header::IF_MODIFIED_SINCE, date);
        }
        let mut response = request.send().await.map_err(|e| self.failure(&e))?;
        let headers = response.headers();
        let directives = OriginDirectives::parse(
            headers
                .get_all(header::CACHE_CONTROL)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        );
        let age = headers
            .get(header::AGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(0, |s| s.saturating_mul(1000));
        let text = |name: header::HeaderName| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let received = Validators {
            etag: text(header::ETAG),
            last_modified: text(header::LAST_MODIFIED),
        };
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_MODIFIED => {
                return Ok(Reply::NotModified {
                    validators: received,
                    directives,
                    age,
                });
            }
            StatusCode::NOT_FOUND | StatusCode::GONE => {
                return Ok(Reply::NotFound { directives });
            }
            status if status.is_redirection() => {
                let to = text(header::LOCATION).unwrap_or_default();
                return Err(OriginError::Redirected(to));
            }
            status => return Err(OriginError::Status(status.as_u16())),
        }
        if response
            .content_length()
            .is_some_and(|n| n > u64::try_from(self.max_body).unwrap_or(u64::MAX))
        {
            return Err(OriginError::TooLarge(self.max_body));
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.failure(&e))? {
            if body.len() + chunk.len() > self.max_body {
                return Err(OriginError::TooLarge(self.max_body));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Reply::Record {
            body: body.freeze(),
            validators: received,
            directives,
            age,
        })
    }

    fn failure(&self, error: &reqwest::Error) -> OriginError {
        if error.is_timeout() {
            return OriginError::Timeout(self.timeout);
        }
        // The innermost cause says what happened ("connection refused"); the outer ones only
        // repeat the URL.
        let mut cause: &dyn std::error::Error = error;
        while let Some(inner) = cause.source() {
            cause = inner;
        }
        OriginError::Unreachable(cause.to_string())
    }
}

fn same_host(url: &Url, base: &Url) -> bool {
    url.scheme() == base.scheme()
        && url.host_str() == base.host_str()
        && url.port_or_known_default() == base.port_or_known_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(template: &str) -> Origin {
        let settings = CacheSettings {
            origin: template.to_owned(),
            headers: vec![("Authorization".into(), "Bearer t".into())],
            expiration: Duration::from_secs(1),
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            not_found: Duration::ZERO,
            timeout: Duration::from_secs(1),
            max_entries: None,
            honor_origin_cache_control: false,
        };
        Origin::new(&settings, 1 << 20).expect("a valid origin")
    }

    #[test]
    fn ids_cannot_steer_the_request() {
        let origin = origin("https://api.example/v1/{id}.json?full=1");
        let url = |id: &str| origin.url(id).map(String::from);
        assert_eq!(
            url("ACME").as_deref(),
            Ok("https://api.example/v1/ACME.json?full=1")
        );
        for (id, encoded) in [
            ("a/b", "a%2Fb"),
            ("../admin", "..%2Fadmin"),
            ("x?y=1#z", "x%3Fy%3D1%23z"),
            ("100%", "100%25"),
            ("@evil.example", "%40evil.example"),
            ("ünï", "%C3%BCn%C3%AF"),
        ] {
            assert_eq!(
                url(id),
                Ok(format!("https://api.example/v1/{encoded}.json?full=1")),
                "{id}"
            );
        }
        let bare = self::origin("http://127.0.0.1:9/{id}");
        assert!(bare.url("..").is_err());
        assert!(bare.url(".").is_err());
        assert_eq!(
            bare.url("...").map(String::from).as_deref(),
            Ok("http://127.0.0.1:9/...")
        );
    }
}
