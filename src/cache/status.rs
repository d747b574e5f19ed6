//! What the cache did for one request, in the terms of RFC 9211: the `Cache-Status` value.

use std::fmt;

/// What the cache did for one request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheStatus {
    /// Served from storage without asking the origin.
    pub hit: bool,
    /// Why the origin was asked.
    pub forward: Option<Forward>,
    /// The origin's status, when it answered.
    pub origin_status: Option<u16>,
    /// The origin's answer was stored.
    pub stored: bool,
    /// The request waited on an origin request already under way.
    pub collapsed: bool,
    /// Freshness left in ms; negative when stale.
    pub ttl: Option<i64>,
    /// More detail.
    pub detail: Option<Detail>,
}

/// Why the origin was asked (RFC 9211 section 2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forward {
    /// Nothing was stored.
    Miss,
    /// What was stored is stale.
    Stale,
    /// The client asked for it (`no-cache`).
    Request,
}

/// Why the answer is what it is, beyond hit and forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detail {
    /// Served stale while one background refresh runs.
    StaleWhileRevalidate,
    /// Served stale because the origin failed.
    StaleIfError,
    /// Nothing usable is stored, and the request said `only-if-cached`.
    OnlyIfCached,
    /// A remembered origin 404.
    NotFound,
    /// A value pushed by a client (`PUT`).
    Pushed,
    /// The entry was evicted (`DELETE`).
    Evicted,
    /// A listing: what is stored, fresh or not; the origin is never asked.
    StoredEntries,
}

impl Forward {
    fn as_str(self) -> &'static str {
        match self {
            Forward::Miss => "miss",
            Forward::Stale => "stale",
            Forward::Request => "request",
        }
    }
}

impl Detail {
    fn as_str(self) -> &'static str {
        match self {
            Detail::StaleWhileRevalidate => "stale-while-revalidate",
            Detail::StaleIfError => "stale-if-error",
            Detail::OnlyIfCached => "only-if-cached",
            Detail::NotFound => "not-found",
            Detail::Pushed => "pushed",
            Detail::Evicted => "evicted",
            Detail::StoredEntries => "stored-entries",
        }
    }
}

impl CacheStatus {
    /// Only a detail: what a push, an eviction or a listing did.
    pub fn detail(detail: Detail) -> CacheStatus {
        CacheStatus {
            detail: Some(detail),
            ..CacheStatus::default()
        }
    }
}

impl fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tablecast")?;
        if self.hit {
            f.write_str("; hit")?;
        }
        if let Some(forward) = self.forward {
            write!(f, "; fwd={}", forward.as_str())?;
        }
        if let Some(status) = self.origin_status {
            write!(f, "; fwd-status={status}")?;
        }
        if let Some(ttl) = self.ttl {
            write!(f, "; ttl={}", seconds_left(ttl))?;
        }
        if self.stored {
            f.write_str("; stored")?;
        }
        if self.collapsed {
            f.write_str("; collapsed")?;
        }
        if let Some(detail) = self.detail {
            write!(f, "; detail={}", detail.as_str())?;
        }
        Ok(())
    }
}

/// Freshness left in whole seconds, for `ttl` and `max-age`: rounded up, so it is the lifetime
/// less the `Age` header (which rounds down), and a fill of a 60 s entry says 60, not 59.
pub fn seconds_left(ttl_ms: i64) -> i64 {
    (ttl_ms + 999).div_euclid(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_in_the_order_of_rfc_9211() {
        let status = CacheStatus {
            forward: Some(Forward::Stale),
            origin_status: Some(500),
            ttl: Some(-40_500),
            detail: Some(Detail::StaleIfError),
            ..CacheStatus::default()
        };
        assert_eq!(
            status.to_string(),
            "tablecast; fwd=stale; fwd-status=500; ttl=-40; detail=stale-if-error"
        );
        let stored = CacheStatus {
            forward: Some(Forward::Miss),
            stored: true,
            collapsed: true,
            ttl: Some(60_000),
            ..CacheStatus::default()
        };
        assert_eq!(
            stored.to_string(),
            "tablecast; fwd=miss; ttl=60; stored; collapsed"
        );
        assert_eq!(seconds_left(59_950), 60);
        assert_eq!(seconds_left(0), 0);
        assert_eq!(seconds_left(-999), 0);
        assert_eq!(seconds_left(-1000), -1);
        assert_eq!(
            CacheStatus::detail(Detail::Pushed).to_string(),
            "tablecast; detail=pushed"
        );
    }
}
