//! Failed sign-ins, throttled per user name and per client address: past an allowance of
//! failures, attempts are refused (429) until the next one is allowed, so passwords cannot be
//! guessed quickly, while users who sign in correctly are never held up.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::rate::RateLimit;
use crate::error::{Error, Result};

/// Failed attempts allowed per user name, and per client address.
const FAILURES_PER_USER: &str = "10/m";
const FAILURES_PER_ADDRESS: &str = "30/m";
/// Blocked names and addresses kept before those whose block ended are dropped.
const SWEEP_ABOVE: usize = 10_000;

pub struct Throttle {
    per_user: RateLimit,
    per_address: RateLimit,
    /// Until when each blocked user name or address is refused.
    blocked: Mutex<HashMap<String, Instant>>,
}

impl Throttle {
    pub fn new() -> Throttle {
        Throttle {
            per_user: RateLimit::parse(FAILURES_PER_USER).expect("a rate"),
            per_address: RateLimit::parse(FAILURES_PER_ADDRESS).expect("a rate"),
            blocked: Mutex::new(HashMap::new()),
        }
    }

    /// Refuses an attempt for `user` from `address` while either is blocked.
    pub fn admit(&self, user: &str, address: IpAddr) -> Result<()> {
        let now = Instant::now();
        let (user_key, address_key) = keys(user, address);
        let blocked = self.blocked.lock().expect("throttle lock");
        let until = [user_key, address_key]
            .iter()
            .filter_map(|key| blocked.get(key))
            .filter(|until| **until > now)
            .max()
            .copied();
        match until {
            Some(until) => Err(Error::RateLimited {
                detail: "too many failed sign-ins for this user or from this address".to_owned(),
                retry_after: until - now,
            }),
            None => Ok(()),
        }
    }

    /// Counts a failed attempt; past the allowance, blocks the user or the address until its
    /// next attempt is allowed.
    pub fn failed(&self, user: &str, address: IpAddr) {
        let (user_key, address_key) = keys(user, address);
        let refusals = [
            (self.per_user.check(&user_key).err(), user_key),
            (self.per_address.check(&address_key).err(), address_key),
        ];
        let now = Instant::now();
        let mut blocked = self.blocked.lock().expect("throttle lock");
        if blocked.len() > SWEEP_ABOVE {
            blocked.retain(|_, until| *until > now);
        }
        for (refused, key) in refusals {
            if let Some(refused) = refused {
                let wait = refused.retry_after.max(Duration::from_secs(1));
                blocked.insert(key, now + wait);
            }
        }
    }
}

fn keys(user: &str, address: IpAddr) -> (String, String) {
    (format!("user:{user}"), format!("address:{address}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_past_the_allowance_block_the_user_not_others() {
        let throttle = Throttle::new();
        let here: IpAddr = "192.0.2.1".parse().unwrap();
        let elsewhere: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..11 {
            assert!(throttle.admit("bob", here).is_ok());
            throttle.failed("bob", here);
        }
        assert!(
            throttle.admit("bob", elsewhere).is_err(),
            "the user is blocked anywhere"
        );
        assert!(throttle.admit("alice", elsewhere).is_ok());
    }
}
