//! How long this node's peers take to answer a lookup's request: a smoothed round-trip time
//! and its variation, as TCP keeps them (RFC 6298), from which a get's hedged spare request
//! takes its delay (`kad::lookup::Lookup::hedged`).
//!
//! A get among holders sends as many FIND_VALUEs as copies it still wants, and a spare only
//! when one of them is late: later than the smoothed time plus four times its variation,
//! which few answers exceed when the peers are well (TCP's retransmission timeout). A silent
//! peer then costs a get that delay rather than a whole `rpc_timeout`, and a get among
//! healthy peers sends no spare at all.
//!
//! Implementation notes: only lookups' requests are sampled (a STORE's answer may wait for a
//! disk). The delay is at least [`HEDGE_MIN`], so that the jitter of a fast network does not
//! send spares that are not needed, and at most half of `rpc_timeout`.

use std::time::Duration;

/// The least delay before a hedged spare request.
pub const HEDGE_MIN: Duration = Duration::from_millis(1);

/// The smoothed round trip of lookup requests and its mean deviation.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RoundTrips {
    smoothed: Option<Duration>,
    deviation: Duration,
}

impl RoundTrips {
    /// Takes one answered request's round trip into account (RFC 6298, section 2).
    pub fn observe(&mut self, sample: Duration) {
        match self.smoothed {
            None => {
                self.smoothed = Some(sample);
                self.deviation = sample / 2;
            }
            Some(srtt) => {
                let diff = srtt.abs_diff(sample);
                self.deviation = (self.deviation * 3 + diff) / 4;
                self.smoothed = Some((srtt * 7 + sample) / 8);
            }
        }
    }

    /// How long a request may go unanswered before a hedged spare goes out, clamped to
    /// [`HEDGE_MIN`] and half of `rpc_timeout`; `None` before any request was answered.
    pub fn hedge(&self, rpc_timeout: Duration) -> Option<Duration> {
        let srtt = self.smoothed?;
        let max = (rpc_timeout / 2).max(HEDGE_MIN);
        Some((srtt + self.deviation * 4).clamp(HEDGE_MIN, max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn no_hedge_before_an_answer() {
        assert_eq!(RoundTrips::default().hedge(2000 * MS), None);
    }

    #[test]
    fn steady_round_trips_hedge_near_them_and_jitter_widens_it() {
        let mut r = RoundTrips::default();
        r.observe(10 * MS);
        // The first sample: srtt 10, deviation 5.
        assert_eq!(r.hedge(2000 * MS), Some(30 * MS));
        for _ in 0..100 {
            r.observe(10 * MS);
        }
        let steady = r.hedge(2000 * MS).unwrap();
        assert!(steady >= 10 * MS && steady < 11 * MS, "{steady:?}");
        for i in 0..100 {
            r.observe(if i % 2 == 0 { 5 * MS } else { 15 * MS });
        }
        let jittery = r.hedge(2000 * MS).unwrap();
        assert!(jittery > 25 * MS, "{jittery:?}");
    }

    #[test]
    fn the_hedge_is_clamped() {
        let mut r = RoundTrips::default();
        r.observe(Duration::ZERO);
        assert_eq!(r.hedge(2000 * MS), Some(HEDGE_MIN));
        r.observe(10_000 * MS);
        assert_eq!(r.hedge(2000 * MS), Some(1000 * MS));
    }
}
