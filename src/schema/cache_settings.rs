//! `x-table.cache`: the origin a cache table mirrors and how long its answers are kept.

use std::time::Duration;

use serde_json::{Map, Value};

use super::LoadError;
use super::settings::escape_pointer;
use crate::config::parse_duration;

const KNOWN_KEYS: &str = "origin, headers, expiration, staleWhileRevalidate, staleIfError, \
                          notFound, timeout, maxEntries, honorOriginCacheControl";
/// How long an origin request may take when `timeout` is not given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The settings of a cache table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheSettings {
    /// The origin URL template: `http(s)://host/...{id}...`, `{id}` exactly once, after the host.
    pub origin: String,
    /// Headers sent with every origin request, `${NAME}` already replaced by the environment.
    pub headers: Vec<(String, String)>,
    /// How long a fill stays fresh.
    pub expiration: Duration,
    /// How long past freshness an entry is served while one background refresh runs.
    pub stale_while_revalidate: Duration,
    /// How long past freshness an entry is served when the origin fails or times out.
    pub stale_if_error: Duration,
    /// How long an origin 404 is remembered (zero: not at all).
    pub not_found: Duration,
    /// The longest wait for an origin answer.
    pub timeout: Duration,
    /// The most entries kept; the least recently used beyond it are evicted.
    pub max_entries: Option<u64>,
    /// Whether the origin's `Cache-Control` (max-age, s-maxage, no-store, no-cache, private,
    /// stale-while-revalidate, stale-if-error) overrides the durations above.
    pub honor_origin_cache_control: bool,
}

/// Reads `x-table.cache` (`value`, found at `pointer`); on failure, every problem found.
pub fn read(
    value: &Value,
    pointer: &str,
    fail: &dyn Fn(&str, String) -> LoadError,
) -> Result<CacheSettings, Vec<LoadError>> {
    let Value::Object(fields) = value else {
        return Err(vec![fail(pointer, "`cache` must be an object".to_owned())]);
    };
    let at = |name: &str| format!("{pointer}/{}", escape_pointer(name));
    let duration = |name: &str| -> Result<Option<Duration>, LoadError> {
        match fields.get(name) {
            None => Ok(None),
            Some(Value::String(text)) => parse_duration(text).map(Some).map_err(|reason| {
                fail(&at(name), format!("{reason} (a duration such as \"30s\")"))
            }),
            Some(_) => Err(fail(
                &at(name),
                "must be a duration string such as \"30s\", \"10m\" or \"1h\"".to_owned(),
            )),
        }
    };
    let mut problems: Vec<LoadError> = fields
        .keys()
        .filter(|k| !KNOWN_KEYS.split(", ").any(|known| known == k.as_str()))
        .map(|unknown| {
            fail(
                &at(unknown),
                format!("unknown cache setting `{unknown}`; expected one of {KNOWN_KEYS}"),
            )
        })
        .collect();
    let origin = match fields.get("origin") {
        Some(Value::String(origin)) => check_origin(origin)
            .map(|()| origin.clone())
            .map_err(|reason| fail(&at("origin"), reason)),
        Some(_) => Err(fail(&at("origin"), "must be a URL string".to_owned())),
        None => Err(fail(
            pointer,
            "a cache needs `origin`, a URL with `{id}`, e.g. \"https://api.example/v1/items/{id}\""
                .to_owned(),
        )),
    };
    let headers = match fields.get("headers") {
        None => Ok(Vec::new()),
        Some(Value::Object(headers)) => read_headers(headers, &at("headers"), fail),
        Some(_) => Err(vec![fail(
            &at("headers"),
            "must be an object of header names to string values".to_owned(),
        )]),
    };
    let expiration = duration("expiration").and_then(|expiration| {
        expiration.ok_or_else(|| {
            fail(
                pointer,
                "a cache needs `expiration`: how long a fetched record stays fresh, e.g. \"60s\""
                    .to_owned(),
            )
        })
    });
    let timeout = duration("timeout").and_then(|timeout| match timeout {
        Some(zero) if zero.is_zero() => {
            Err(fail(&at("timeout"), "must be longer than 0".to_owned()))
        }
        timeout => Ok(timeout.unwrap_or(DEFAULT_TIMEOUT)),
    });
    let max_entries = match fields.get("maxEntries") {
        None => Ok(None),
        Some(value) => value
            .as_u64()
            .filter(|&n| n > 0)
            .map(Some)
            .ok_or_else(|| fail(&at("maxEntries"), "must be a positive integer".to_owned())),
    };
    let honor_origin_cache_control = match fields.get("honorOriginCacheControl") {
        None => Ok(false),
        Some(Value::Bool(on)) => Ok(*on),
        Some(_) => Err(fail(
            &at("honorOriginCacheControl"),
            "must be true or false".to_owned(),
        )),
    };
    let origin = noted(&mut problems, origin);
    let headers = headers.map_err(|found| problems.extend(found)).ok();
    let expiration = noted(&mut problems, expiration);
    let timeout = noted(&mut problems, timeout);
    let max_entries = noted(&mut problems, max_entries);
    let honor_origin_cache_control = noted(&mut problems, honor_origin_cache_control);
    let windows = ["staleWhileRevalidate", "staleIfError", "notFound"]
        .map(|name| noted(&mut problems, duration(name)).map(Option::unwrap_or_default));
    let (
        Some(origin),
        Some(headers),
        Some(expiration),
        Some(timeout),
        Some(max_entries),
        Some(honor_origin_cache_control),
        [
            Some(stale_while_revalidate),
            Some(stale_if_error),
            Some(not_found),
        ],
        true,
    ) = (
        origin,
        headers,
        expiration,
        timeout,
        max_entries,
        honor_origin_cache_control,
        windows,
        problems.is_empty(),
    )
    else {
        return Err(problems);
    };
    Ok(CacheSettings {
        origin,
        headers,
        expiration,
        stale_while_revalidate,
        stale_if_error,
        not_found,
        timeout,
        max_entries,
        honor_origin_cache_control,
    })
}

/// `found`'s value, or `None` with its problem noted.
fn noted<T>(problems: &mut Vec<LoadError>, found: Result<T, LoadError>) -> Option<T> {
    found.map_err(|problem| problems.push(problem)).ok()
}

/// An origin template is an absolute http(s) URL with `{id}` once, after the host, so an id
/// can never change where the request goes.
fn check_origin(origin: &str) -> Result<(), String> {
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or_else(|| format!("`{origin}` must start with http:// or https://"))?;
    if origin.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{origin}` contains whitespace"));
    }
    if origin.matches("{id}").count() != 1 {
        return Err(format!(
            "`{origin}` must contain `{{id}}` exactly once, where the record id goes"
        ));
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if authority_end == 0 || rest[..authority_end].contains("{id}") {
        return Err(format!(
            "`{origin}` must name a host, and `{{id}}` must come after it"
        ));
    }
    if rest.contains('#') {
        return Err(format!("`{origin}` must not have a fragment (#...)"));
    }
    Ok(())
}

/// Header names must be HTTP tokens; values may name environment variables as `${NAME}`, read
/// now, so a missing secret stops the server at start rather than failing every request.
fn read_headers(
    headers: &Map<String, Value>,
    pointer: &str,
    fail: &dyn Fn(&str, String) -> LoadError,
) -> Result<Vec<(String, String)>, Vec<LoadError>> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (name, value) in headers {
        let at = format!("{pointer}/{}", escape_pointer(name));
        let header = if name.is_empty() || !name.bytes().all(is_token_byte) {
            Err(format!("`{name}` is not a valid header name"))
        } else if let Value::String(template) = value {
            expand(template, |var| std::env::var(var).ok()).and_then(|value| {
                match value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
                    true => Err(
                        "the header value contains control characters (after ${...} expansion)"
                            .to_owned(),
                    ),
                    false => Ok(value),
                }
            })
        } else {
            Err("a header value must be a string".to_owned())
        };
        match header {
            Ok(value) => out.push((name.clone(), value)),
            Err(reason) => problems.push(fail(&at, reason)),
        }
    }
    match problems.is_empty() {
        true => Ok(out),
        false => Err(problems),
    }
}

/// Replaces every `${NAME}` in `template` with `lookup(NAME)`.
fn expand(template: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("`{template}` has `${{` without a closing `}}`"))?;
        let var = &after[..end];
        let value = lookup(var).ok_or_else(|| {
            format!("environment variable `{var}` is not set (named by `${{{var}}}`)")
        })?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_templates() {
        for good in [
            "https://api.example/v1/{id}",
            "http://127.0.0.1:8080/quotes/{id}.json",
            "https://api.example/search?symbol={id}&full=1",
        ] {
            assert_eq!(check_origin(good), Ok(()), "{good}");
        }
        for (bad, says) in [
            ("ftp://x/{id}", "http://"),
            ("https://{id}.example/", "after it"),
            ("https:///{id}", "name a host"),
            ("https://x/a", "exactly once"),
            ("https://x/{id}/{id}", "exactly once"),
            ("https://x/{id} ", "whitespace"),
            ("https://x/{id}#top", "fragment"),
        ] {
            let reason = check_origin(bad).expect_err(bad);
            assert!(reason.contains(says), "{bad}: {reason}");
        }
    }

    #[test]
    fn environment_expansion() {
        let lookup = |var: &str| (var == "TOKEN").then(|| "s3cret".to_owned());
        assert_eq!(
            expand("Bearer ${TOKEN}", lookup).as_deref(),
            Ok("Bearer s3cret")
        );
        assert_eq!(
            expand("${TOKEN}${TOKEN}", lookup).as_deref(),
            Ok("s3crets3cret")
        );
        assert_eq!(
            expand("plain $ sign", lookup).as_deref(),
            Ok("plain $ sign")
        );
        assert!(
            expand("${MISSING}", lookup)
                .unwrap_err()
                .contains("`MISSING` is not set")
        );
        assert!(
            expand("${TOKEN", lookup)
                .unwrap_err()
                .contains("without a closing")
        );
    }
}
