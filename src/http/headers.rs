//! Header conventions: entity tags, conditional requests, `Prefer`, dates.

use std::time::{Duration, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderValue, header};

use crate::storage::Envelope;
use crate::table::{Precondition, Tags};

/// The strong entity tag of a record version.
pub fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version:x}\"")).expect("hex digits are a valid header value")
}

/// `Last-Modified` for a record.
pub fn last_modified(record: &Envelope) -> HeaderValue {
    let at = UNIX_EPOCH + Duration::from_millis(record.updated);
    HeaderValue::from_str(&httpdate::fmt_http_date(at))
        .expect("an HTTP date is a valid header value")
}

/// The media ranges of `Accept`, lower-cased, in the client's order, without those it refuses
/// (`q=0`). Empty if there is no `Accept` header.
pub fn accepted(headers: &HeaderMap) -> impl Iterator<Item = String> + '_ {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next()?.to_ascii_lowercase();
            let refused = parts.any(|p| p.replace(' ', "") == "q=0");
            (!refused).then_some(media)
        })
}

/// Reads `If-Match` and `If-None-Match`.
pub fn precondition(headers: &HeaderMap) -> Precondition {
    Precondition {
        if_match: tags(headers, header::IF_MATCH, false),
        if_none_match: tags(headers, header::IF_NONE_MATCH, true),
        guard: None,
    }
}

/// Parses every instance of a tag-list header. `If-Match` uses the strong comparison, so weak
/// tags can never match there; `If-None-Match` uses the weak one (RFC 9110 section 8.8.3.2).
fn tags(headers: &HeaderMap, name: header::HeaderName, weak_matches: bool) -> Option<Tags> {
    let mut versions = Vec::new();
    let mut present = false;
    for value in headers.get_all(name) {
        present = true;
        for tag in value.to_str().unwrap_or_default().split(',').map(str::trim) {
            if tag == "*" {
                return Some(Tags::Any);
            }
            let (weak, tag) = match tag.strip_prefix("W/") {
                Some(rest) => (true, rest),
                None => (false, tag),
            };
            if weak && !weak_matches {
                continue;
            }
            let version = tag
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .and_then(|hex| u64::from_str_radix(hex, 16).ok());
            versions.extend(version);
        }
    }
    present.then_some(Tags::Versions(versions))
}

/// Whether the request carries this `Prefer` preference (RFC 7240), e.g. `return=representation`.
pub fn prefers(headers: &HeaderMap, preference: &str) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .flat_map(|v| v.to_str().unwrap_or_default().split(','))
        .any(|given| given.trim().eq_ignore_ascii_case(preference))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn entity_tags() {
        assert_eq!(etag(255), "\"ff\"");
        let c = precondition(&headers(&[
            ("if-match", "\"ff\", W/\"10\", \"zz\""),
            ("if-none-match", "W/\"10\""),
        ]));
        assert_eq!(c.if_match, Some(Tags::Versions(vec![255])));
        assert_eq!(c.if_none_match, Some(Tags::Versions(vec![16])));
        assert_eq!(
            precondition(&headers(&[("if-none-match", "*")])).if_none_match,
            Some(Tags::Any)
        );
        assert_eq!(precondition(&headers(&[])), Precondition::default());
    }

    #[test]
    fn prefer() {
        let representation = "return=representation";
        let strict = headers(&[("prefer", "handling=strict, return=representation")]);
        assert!(prefers(&strict, representation));
        assert!(!prefers(
            &headers(&[("prefer", "return=minimal")]),
            representation
        ));
    }
}
