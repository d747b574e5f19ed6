//! `Cache-Control` directives (RFC 9111 section 5.2, RFC 5861), as a request sends them and as
//! an origin answers with them.

/// What a client's request asks of the cache.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestDirectives {
    /// `no-cache`: revalidate with the origin before serving.
    pub no_cache: bool,
    /// `no-store`: do not store the answer to this request.
    pub no_store: bool,
    /// `only-if-cached`: never contact the origin; 504 if nothing stored will do.
    pub only_if_cached: bool,
    /// `max-age`: accept nothing older than this many seconds.
    pub max_age: Option<u64>,
    /// `max-stale`: accept a stale answer up to this many seconds past freshness (`u64::MAX`
    /// when no limit is given).
    pub max_stale: Option<u64>,
    /// `min-fresh`: accept only answers fresh for at least this many more seconds.
    pub min_fresh: Option<u64>,
}

/// What an origin's answer says about storing it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OriginDirectives {
    /// `no-store` or `private`: a shared cache must not keep the answer.
    pub no_store: bool,
    /// `no-cache`: keep it, but revalidate before every use.
    pub no_cache: bool,
    /// `max-age` in seconds.
    pub max_age: Option<u64>,
    /// `s-maxage` in seconds; wins over `max-age` in a shared cache.
    pub s_maxage: Option<u64>,
    /// `stale-while-revalidate` in seconds (RFC 5861).
    pub stale_while_revalidate: Option<u64>,
    /// `stale-if-error` in seconds (RFC 5861).
    pub stale_if_error: Option<u64>,
}

impl RequestDirectives {
    /// Reads every `Cache-Control` header value of a request. Unknown directives are ignored.
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> RequestDirectives {
        let mut out = RequestDirectives::default();
        for (name, argument) in values.into_iter().flat_map(directives) {
            match name.as_str() {
                "no-cache" => out.no_cache = true,
                "no-store" => out.no_store = true,
                "only-if-cached" => out.only_if_cached = true,
                "max-age" => out.max_age = seconds(argument).or(out.max_age),
                "max-stale" => out.max_stale = Some(seconds(argument).unwrap_or(u64::MAX)),
                "min-fresh" => out.min_fresh = seconds(argument).or(out.min_fresh),
                _ => {}
            }
        }
        out
    }
}

impl OriginDirectives {
    /// Reads every `Cache-Control` header value of an origin answer.
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> OriginDirectives {
        let mut out = OriginDirectives::default();
        for (name, argument) in values.into_iter().flat_map(directives) {
            match name.as_str() {
                "no-store" | "private" => out.no_store = true,
                "no-cache" => out.no_cache = true,
                "max-age" => out.max_age = seconds(argument),
                "s-maxage" => out.s_maxage = seconds(argument),
                "stale-while-revalidate" => out.stale_while_revalidate = seconds(argument),
                "stale-if-error" => out.stale_if_error = seconds(argument),
                _ => {}
            }
        }
        out
    }
}

/// Splits one header value into lower-cased directive names and their arguments (quotes
/// removed). Commas inside quoted strings do not split.
fn directives(value: &str) -> Vec<(String, Option<String>)> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in value.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ',' if !quoted => parts.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    parts.push(current);
    parts
        .into_iter()
        .filter_map(|part| {
            let part = part.trim();
            if part.is_empty() {
                return None;
            }
            let (name, argument) = match part.split_once('=') {
                Some((name, argument)) => (name, Some(argument.trim().trim_matches('"'))),
                None => (part, None),
            };
            Some((
                name.trim().to_ascii_lowercase(),
                argument.map(str::to_owned),
            ))
        })
        .collect()
}

/// A delta-seconds argument; values too large saturate (RFC 9111 section 1.2.2).
fn seconds(argument: Option<String>) -> Option<u64> {
    let digits = argument?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.parse().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_directives() {
        let parsed =
            RequestDirectives::parse(["No-Cache, max-age=30", "max-stale, min-fresh=\"5\""]);
        assert_eq!(
            parsed,
            RequestDirectives {
                no_cache: true,
                max_age: Some(30),
                max_stale: Some(u64::MAX),
                min_fresh: Some(5),
                ..RequestDirectives::default()
            }
        );
        let parsed = RequestDirectives::parse(["only-if-cached,no-store, max-stale=10, x=\"a,b\""]);
        assert!(parsed.only_if_cached && parsed.no_store);
        assert_eq!(parsed.max_stale, Some(10));
        assert_eq!(
            RequestDirectives::parse(["max-age=-1, max-age=abc"]).max_age,
            None
        );
        assert_eq!(
            RequestDirectives::parse(["max-age=99999999999999999999999"]).max_age,
            Some(u64::MAX)
        );
    }

    #[test]
    fn origin_directives() {
        let parsed = OriginDirectives::parse([
            "public, max-age=60, s-maxage=120, stale-while-revalidate=30, stale-if-error=600",
        ]);
        assert_eq!(
            parsed,
            OriginDirectives {
                max_age: Some(60),
                s_maxage: Some(120),
                stale_while_revalidate: Some(30),
                stale_if_error: Some(600),
                ..OriginDirectives::default()
            }
        );
        assert!(OriginDirectives::parse(["private"]).no_store);
        assert!(OriginDirectives::parse(["no-store"]).no_store);
        assert!(OriginDirectives::parse(["no-cache=\"Set-Cookie\""]).no_cache);
    }
}
