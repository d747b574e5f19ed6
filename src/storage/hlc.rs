//! The hybrid logical clock that versions commits.

/// Issues versions `ms << 16 | counter` that strictly increase, even when the wall clock stands
/// still or steps back: a version is never lower than one already issued (persisted across restarts).
#[derive(Debug)]
pub struct Hlc {
    last: u64,
}

impl Hlc {
    /// A clock that continues after `last`, the highest version issued so far.
    pub fn resume(last: u64) -> Hlc {
        Hlc { last }
    }

    /// The next version for a commit at wall-clock time `now_ms`.
    pub fn next(&mut self, now_ms: u64) -> u64 {
        self.last = (now_ms << 16).max(self.last + 1);
        self.last
    }

    /// Takes `version`, issued by another node's clock, as seen: every later version is above
    /// it, so a commit made after applying another's follows it. Returns `version`.
    pub fn observe(&mut self, version: u64) -> u64 {
        self.last = self.last.max(version);
        version
    }

    /// The highest version issued so far.
    pub fn last(&self) -> u64 {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictly_increasing_when_the_clock_stalls_or_steps_back() {
        let mut clock = Hlc::resume(0);
        let a = clock.next(1_000);
        let b = clock.next(1_000);
        let c = clock.next(999);
        let d = clock.next(1_001);
        assert!(a < b && b < c && c < d);
        assert_eq!(a, 1_000 << 16);
        assert_eq!(d, 1_001 << 16);
    }

    #[test]
    fn versions_issued_after_an_observed_one_follow_it() {
        let mut clock = Hlc::resume(0);
        let local = clock.next(1_000);
        assert_eq!(clock.observe(9_000 << 16), 9_000 << 16);
        clock.observe(local);
        assert_eq!(clock.next(1_001), (9_000 << 16) + 1);
    }

    #[test]
    fn resumes_above_the_persisted_version() {
        let mut clock = Hlc::resume(5_000 << 16);
        assert_eq!(clock.next(10), (5_000 << 16) + 1);
    }
}
