//! Rate limits per identity (governor's GCRA): `"50/s"` lets an identity make 50 requests in a
//! burst and 50 more every second after.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{Quota, RateLimiter};

type Limiter = RateLimiter<
    String,
    governor::state::keyed::DefaultKeyedStateStore<String>,
    DefaultClock,
    StateInformationMiddleware,
>;

/// How many checks pass between sweeps of identities that are back to a full burst.
const SWEEP_EVERY: u64 = 4096;

/// One role's rate, shared by every identity of the role (each has its own budget).
pub struct RateLimit {
    /// As written, e.g. `50/s`.
    text: String,
    count: u32,
    window: Duration,
    limiter: Limiter,
    checks: AtomicU64,
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RateLimit({})", self.text)
    }
}

/// The answer to a request within its rate.
pub struct Allowed {
    pub limit: u32,
    pub remaining: u32,
    pub window: Duration,
}

/// The answer to a request past its rate.
pub struct Refused {
    pub limit: u32,
    pub window: Duration,
    pub retry_after: Duration,
    pub text: String,
}

impl RateLimit {
    /// Reads `N/s`, `N/m` or `N/h`.
    pub fn parse(text: &str) -> Result<RateLimit, String> {
        let usage = || format!("`{text}` is not a rate such as 50/s, 600/m or 1000/h");
        let (count, unit) = text.trim().split_once('/').ok_or_else(usage)?;
        let count: u32 = count.trim().parse().map_err(|_| usage())?;
        let count = NonZeroU32::new(count).ok_or_else(usage)?;
        let window = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(usage()),
        };
        let quota = Quota::with_period(window / count.get())
            .ok_or_else(usage)?
            .allow_burst(count);
        Ok(RateLimit {
            text: text.trim().to_owned(),
            count: count.get(),
            window,
            limiter: RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
            checks: AtomicU64::new(0),
        })
    }

    /// Requests per second, to compare rates.
    pub fn per_second(&self) -> f64 {
        f64::from(self.count) / self.window.as_secs_f64()
    }

    /// Counts one request of `identity`.
    pub fn check(&self, identity: &str) -> Result<Allowed, Refused> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            // Identities seen once (anonymous clients by address) would otherwise stay forever.
            self.limiter.retain_recent();
        }
        match self.limiter.check_key(&identity.to_owned()) {
            Ok(state) => Ok(Allowed {
                limit: self.count,
                remaining: state.remaining_burst_capacity(),
                window: self.window,
            }),
            Err(not_until) => Err(Refused {
                limit: self.count,
                window: self.window,
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
                text: self.text.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_refusal_per_identity() {
        let rate = RateLimit::parse("3/m").expect("a rate");
        for remaining in [2, 1, 0] {
            assert_eq!(rate.check("alice").ok().unwrap().remaining, remaining);
        }
        let refused = rate.check("alice").err().expect("past the rate");
        assert!(refused.retry_after > Duration::from_secs(10));
        assert!(
            rate.check("bob").is_ok(),
            "each identity has its own budget"
        );
    }

    #[test]
    fn rates_are_read_strictly() {
        for bad in ["50", "0/s", "x/s", "5/d", "-1/s"] {
            assert!(RateLimit::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(RateLimit::parse("50/s").unwrap().per_second(), 50.0);
    }
}
