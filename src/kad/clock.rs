//! The hybrid logical clock that versions a node's writes.
//!
//! A version is the writer's wall clock in microseconds since the Unix epoch, moved past
//! every version the writer issued or saw before: a writer whose clock lags still orders its
//! write after every version its pre-write lookup found, and two writes from one node never
//! share a version. Peers refuse versions that lie more than `max_clock_skew` ahead of their
//! own clocks (`Core::handle`), so the logical part cannot run away from real time.
//!
//! Implementation notes (departures from the paper): the paper has no versions at all; a
//! record is whatever the last STORE said. Versions order writes and deletes here (see
//! [`super::write`]).

/// The clock's state: the last version issued or seen.
#[derive(Clone, Debug, Default)]
pub struct HybridClock {
    last: u64,
}

impl HybridClock {
    /// A version above every version issued before, and above `seen` (the versions of the
    /// key that the writer saw), at least `wall_us` (the wall clock, microseconds).
    pub fn issue(&mut self, wall_us: u64, seen: Option<u64>) -> u64 {
        let floor = self.last.max(seen.unwrap_or(0)).saturating_add(1);
        self.last = wall_us.max(floor);
        self.last
    }

    /// The last version issued or seen.
    pub fn last(&self) -> u64 {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_wall_clock_when_it_is_ahead() {
        let mut c = HybridClock::default();
        assert_eq!(c.issue(1_000, None), 1_000);
        assert_eq!(c.issue(2_000, None), 2_000);
        assert_eq!(c.last(), 2_000);
    }

    #[test]
    fn never_issues_a_version_twice_or_backwards() {
        let mut c = HybridClock::default();
        assert_eq!(c.issue(5_000, None), 5_000);
        // The wall clock stepped back (NTP) or did not move: versions still grow.
        assert_eq!(c.issue(4_000, None), 5_001);
        assert_eq!(c.issue(5_001, None), 5_002);
    }

    #[test]
    fn orders_after_what_the_writer_saw() {
        let mut c = HybridClock::default();
        // A copy from a writer whose clock is 30 s ahead.
        assert_eq!(c.issue(1_000, Some(31_000_000)), 31_000_001);
        // Later versions stay above it until the wall clock catches up.
        assert_eq!(c.issue(2_000, None), 31_000_002);
        assert_eq!(c.issue(40_000_000, Some(3)), 40_000_000);
    }

    #[test]
    fn saturates_instead_of_overflowing() {
        let mut c = HybridClock::default();
        assert_eq!(c.issue(1, Some(u64::MAX)), u64::MAX);
    }
}
