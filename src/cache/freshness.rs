//! Pure decisions: may a stored entry be served now, and how long is a new answer kept.

use std::time::Duration;

use super::control::{OriginDirectives, RequestDirectives};
use super::entry::Entry;
use crate::schema::CacheSettings;

/// What the read path may do with what is stored for a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// Serve it; it stays fresh for `ttl` more ms.
    Fresh { ttl: u64 },
    /// Past freshness by `stale_for` ms but usable as it is (stale-while-revalidate, or the
    /// request's `max-stale`): serve it and refresh in the background.
    Usable { stale_for: u64 },
    /// Ask the origin before answering. `fallback`: if the origin fails or times out, the
    /// entry may still be served (it is within stale-if-error).
    Revalidate { fallback: bool },
    /// Nothing is stored.
    Missing,
}

/// Decides what `entry` is good for at `now` (ms since the epoch), given the request's
/// directives (RFC 9111 section 5.2.1, RFC 5861).
pub fn freshness(entry: Option<&Entry>, request: &RequestDirectives, now: u64) -> Freshness {
    let Some(entry) = entry else {
        return Freshness::Missing;
    };
    let fallback = now < entry.fresh_until.saturating_add(entry.stale_if_error);
    let age = now.saturating_sub(entry.fetched_at);
    let too_old = request
        .max_age
        .is_some_and(|max_age| age > max_age.saturating_mul(1000));
    if request.no_cache || too_old {
        return Freshness::Revalidate { fallback };
    }
    if now < entry.fresh_until {
        let ttl = entry.fresh_until - now;
        if request
            .min_fresh
            .is_some_and(|min| ttl < min.saturating_mul(1000))
        {
            return Freshness::Revalidate { fallback };
        }
        return Freshness::Fresh { ttl };
    }
    let stale_for = now - entry.fresh_until;
    let accepted = request
        .max_stale
        .is_some_and(|max| stale_for <= max.saturating_mul(1000));
    if stale_for < entry.stale_while_revalidate || accepted {
        Freshness::Usable { stale_for }
    } else {
        Freshness::Revalidate { fallback }
    }
}

/// How long the table keeps answers, in ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Freshness of a fill.
    pub expiration: u64,
    /// See [`Entry::stale_while_revalidate`].
    pub stale_while_revalidate: u64,
    /// See [`Entry::stale_if_error`].
    pub stale_if_error: u64,
    /// How long an origin 404 is remembered.
    pub not_found: u64,
    /// Whether the origin's directives override the above.
    pub honor_origin: bool,
}

impl Policy {
    /// The policy of a cache table's settings.
    pub fn of(settings: &CacheSettings) -> Policy {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Policy {
            expiration: ms(settings.expiration),
            stale_while_revalidate: ms(settings.stale_while_revalidate),
            stale_if_error: ms(settings.stale_if_error),
            not_found: ms(settings.not_found),
            honor_origin: settings.honor_origin_cache_control,
        }
    }

    /// The entry for an origin answer received at `now` that was `age` ms old (its `Age`
    /// header), or `None` if it must not be stored.
    pub fn entry(&self, origin: &OriginDirectives, now: u64, age: u64) -> Option<Entry> {
        let seconds = |s: Option<u64>| s.map(|s| s.saturating_mul(1000));
        let mut entry = Entry {
            fetched_at: now,
            stamped_at: now,
            fresh_until: now.saturating_add(self.expiration),
            stale_while_revalidate: self.stale_while_revalidate,
            stale_if_error: self.stale_if_error,
            ..Entry::default()
        };
        if self.honor_origin {
            if origin.no_store {
                return None;
            }
            entry.fetched_at = now.saturating_sub(age);
            let lifetime = if origin.no_cache {
                Some(0)
            } else {
                seconds(origin.s_maxage.or(origin.max_age))
            };
            entry.fresh_until = entry
                .fetched_at
                .saturating_add(lifetime.unwrap_or(self.expiration));
            entry.stale_while_revalidate =
                seconds(origin.stale_while_revalidate).unwrap_or(self.stale_while_revalidate);
            entry.stale_if_error = seconds(origin.stale_if_error).unwrap_or(self.stale_if_error);
        }
        Some(entry)
    }

    /// Until when an origin 404 received at `now` is remembered, if at all.
    pub fn not_found_until(&self, origin: &OriginDirectives, now: u64) -> Option<u64> {
        let lifetime = if self.honor_origin {
            if origin.no_store || origin.no_cache {
                return None;
            }
            origin
                .s_maxage
                .or(origin.max_age)
                .map_or(self.not_found, |s| s.saturating_mul(1000))
        } else {
            self.not_found
        };
        (lifetime > 0).then(|| now.saturating_add(lifetime))
    }

    /// The entry for a value pushed by a client at `now`, fresh for `max_age` seconds if the
    /// request said so, else for the table's expiration. A push may ask for less than the
    /// expiration, never more: a client cannot hide the origin for longer than the table says.
    pub fn pushed(&self, max_age: Option<u64>, now: u64) -> Entry {
        let asked = max_age.map_or(self.expiration, |s| s.saturating_mul(1000));
        let lifetime = asked.min(self.expiration);
        Entry {
            fetched_at: now,
            stamped_at: now,
            fresh_until: now.saturating_add(lifetime),
            stale_while_revalidate: self.stale_while_revalidate,
            stale_if_error: self.stale_if_error,
            ..Entry::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Freshness::{Fresh, Missing, Revalidate, Usable};
    use super::*;

    /// Fetched at 0, fresh until 60 s, then 30 s of stale-while-revalidate and 600 s of
    /// stale-if-error.
    fn entry() -> Entry {
        Entry {
            fetched_at: 0,
            fresh_until: 60_000,
            stale_while_revalidate: 30_000,
            stale_if_error: 600_000,
            ..Entry::default()
        }
    }

    fn request(text: &str) -> RequestDirectives {
        RequestDirectives::parse([text])
    }

    #[test]
    fn freshness_over_time_and_directives() {
        let fallback = Revalidate { fallback: true };
        let cases: &[(&str, u64, Freshness)] = &[
            ("", 0, Fresh { ttl: 60_000 }),
            ("", 59_999, Fresh { ttl: 1 }),
            ("", 60_000, Usable { stale_for: 0 }),
            ("", 89_999, Usable { stale_for: 29_999 }),
            ("", 90_000, fallback),
            ("", 659_999, fallback),
            ("", 660_000, Revalidate { fallback: false }),
            // The client's own limits.
            ("no-cache", 0, fallback),
            ("max-age=10", 10_000, Fresh { ttl: 50_000 }),
            ("max-age=10", 10_001, fallback),
            ("max-age=100", 70_000, Usable { stale_for: 10_000 }),
            ("min-fresh=30", 20_000, Fresh { ttl: 40_000 }),
            ("min-fresh=30", 40_000, fallback),
            ("max-stale=100", 160_000, Usable { stale_for: 100_000 }),
            ("max-stale=100", 160_001, fallback),
            (
                "max-stale",
                10_000_000,
                Usable {
                    stale_for: 9_940_000,
                },
            ),
        ];
        for &(directives, now, expected) in cases {
            assert_eq!(
                freshness(Some(&entry()), &request(directives), now),
                expected,
                "`{directives}` at {now} ms"
            );
        }
        assert_eq!(freshness(None, &request(""), 0), Missing);
    }

    #[test]
    fn windows_of_zero_mean_no_stale_answers() {
        let strict = Entry {
            fresh_until: 1_000,
            ..Entry::default()
        };
        assert_eq!(
            freshness(Some(&strict), &request(""), 1_000),
            Revalidate { fallback: false }
        );
    }

    fn policy(honor_origin: bool) -> Policy {
        Policy {
            expiration: 60_000,
            stale_while_revalidate: 30_000,
            stale_if_error: 600_000,
            not_found: 10_000,
            honor_origin,
        }
    }

    #[test]
    fn lifetimes_from_settings_or_origin() {
        let origin = OriginDirectives::parse(["max-age=5, stale-if-error=1"]);
        let plain = policy(false).entry(&origin, 1_000, 2_000).expect("stored");
        assert_eq!((plain.fetched_at, plain.fresh_until), (1_000, 61_000));
        assert_eq!(plain.stale_if_error, 600_000);

        let honored = policy(true).entry(&origin, 10_000, 2_000).expect("stored");
        assert_eq!((honored.fetched_at, honored.fresh_until), (8_000, 13_000));
        assert_eq!(honored.stale_while_revalidate, 30_000);
        assert_eq!(honored.stale_if_error, 1_000);

        let shared = OriginDirectives::parse(["max-age=5, s-maxage=50"]);
        assert_eq!(
            policy(true)
                .entry(&shared, 0, 0)
                .expect("stored")
                .fresh_until,
            50_000
        );
        let revalidate = OriginDirectives::parse(["no-cache"]);
        assert_eq!(
            policy(true)
                .entry(&revalidate, 7, 0)
                .expect("stored")
                .fresh_until,
            7
        );
        for never in ["no-store", "private, max-age=60"] {
            let origin = OriginDirectives::parse([never]);
            assert_eq!(policy(true).entry(&origin, 0, 0), None, "{never}");
            assert!(policy(false).entry(&origin, 0, 0).is_some(), "{never}");
        }
    }

    #[test]
    fn not_found_and_pushed_lifetimes() {
        let none = OriginDirectives::default();
        assert_eq!(policy(false).not_found_until(&none, 5), Some(10_005));
        let short = OriginDirectives::parse(["max-age=1"]);
        assert_eq!(policy(true).not_found_until(&short, 5), Some(1_005));
        let never = OriginDirectives::parse(["no-store"]);
        assert_eq!(policy(true).not_found_until(&never, 5), None);
        let off = Policy {
            not_found: 0,
            ..policy(false)
        };
        assert_eq!(off.not_found_until(&none, 5), None);

        assert_eq!(policy(false).pushed(None, 100).fresh_until, 60_100);
        assert_eq!(policy(false).pushed(Some(5), 100).fresh_until, 5_100);
        let forever = policy(false).pushed(Some(u64::MAX), 100);
        assert_eq!(forever.fresh_until, 60_100, "bounded by the expiration");
    }
}
