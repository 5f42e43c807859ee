//! The replication backlog: records due for replication (paper section 2.5) whose STOREs this
//! node has not sent yet, and how late the oldest of them is.
//!
//! A record enters when `replicate_due` finds it due: it joins a queued replication group
//! ([`Backlog::queue`]), or, when the job queue has no room, it stays due in the store and is
//! counted from that scan ([`Backlog::left_due`]). It leaves when its STOREs are sent to the
//! k closest nodes that its group's lookup found ([`Backlog::sent`], which gives its delay:
//! from the moment it fell due to then), or when its job finds it gone (deleted, expired,
//! [`Backlog::forget`]).
//!
//! A node that falls behind (more records than its maintenance slots replicate in an
//! interval, a slow or partitioned network) shows a growing backlog and lag: the metrics
//! `kademlia_replication_backlog_records` and `kademlia_replication_lag_seconds`.
//!
//! Implementation notes:
//! - The count of records left due is as old as the last scan of the store (every
//!   `replicate_interval / 4k`, 45 s by default); the queued part is exact.
//! - A record leaves when its STOREs are sent, not when they are answered: at most
//!   `REPLICATION_STORES_IN_FLIGHT` are in flight, so the two are one round trip apart.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use crate::kad::Key;

/// The backlog's figures, as `NodeInfo` reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BacklogStats {
    /// Records due for replication whose STOREs were not sent yet.
    pub records: usize,
    /// How long ago the oldest of them fell due (zero when there are none).
    pub lag: Duration,
}

/// Records due for replication, by when they fell due (wall-clock ms since the epoch, as the
/// store keeps `refreshed_at_ms`).
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    queued: HashMap<Key, u64>,
    by_due: BTreeSet<(u64, Key)>,
    /// Records due that found no room in the job queue at the last scan, and the oldest due
    /// time among them.
    left: usize,
    left_oldest: Option<u64>,
}

impl Backlog {
    /// `key`, due since `due_ms`, joined a queued replication group (queued twice, it keeps
    /// the earlier time).
    pub fn queue(&mut self, key: Key, due_ms: u64) {
        match self.queued.get_mut(&key) {
            Some(due) if *due <= due_ms => {}
            Some(due) => {
                self.by_due.remove(&(*due, key));
                *due = due_ms;
                self.by_due.insert((due_ms, key));
            }
            None => {
                self.queued.insert(key, due_ms);
                self.by_due.insert((due_ms, key));
            }
        }
    }

    /// The last scan of the store left `count` due records unqueued, the oldest due since
    /// `oldest_ms`.
    pub fn left_due(&mut self, count: usize, oldest_ms: Option<u64>) {
        self.left = count;
        self.left_oldest = oldest_ms.filter(|_| count > 0);
    }

    /// The STOREs of `key` were sent at `now_ms`: how late that was, if it was queued.
    pub fn sent(&mut self, key: &Key, now_ms: u64) -> Option<Duration> {
        let due = self.take(key)?;
        Some(Duration::from_millis(now_ms.saturating_sub(due)))
    }

    /// `key`'s job found no record to replicate (deleted or expired meanwhile).
    pub fn forget(&mut self, key: &Key) {
        self.take(key);
    }

    fn take(&mut self, key: &Key) -> Option<u64> {
        let due = self.queued.remove(key)?;
        self.by_due.remove(&(due, *key));
        Some(due)
    }

    pub fn stats(&self, now_ms: u64) -> BacklogStats {
        let oldest = self
            .by_due
            .first()
            .map(|(due, _)| *due)
            .into_iter()
            .chain(self.left_oldest)
            .min();
        BacklogStats {
            records: self.queued.len() + self.left,
            lag: oldest.map_or(Duration::ZERO, |due| {
                Duration::from_millis(now_ms.saturating_sub(due))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kad::NodeId;

    fn key(b: u8) -> Key {
        NodeId([b; 20])
    }

    #[test]
    fn records_count_from_queueing_until_sent_and_the_oldest_sets_the_lag() {
        let mut b = Backlog::default();
        assert_eq!(b.stats(1_000), BacklogStats::default());
        b.queue(key(1), 1_000);
        b.queue(key(2), 400);
        b.queue(key(2), 900); // queued again: keeps the earlier time
        assert_eq!(
            b.stats(1_500),
            BacklogStats {
                records: 2,
                lag: Duration::from_millis(1_100)
            }
        );
        assert_eq!(b.sent(&key(2), 1_600), Some(Duration::from_millis(1_200)));
        assert_eq!(b.sent(&key(2), 1_700), None, "sent once");
        assert_eq!(
            b.stats(1_600),
            BacklogStats {
                records: 1,
                lag: Duration::from_millis(600)
            }
        );
        b.forget(&key(1));
        assert_eq!(b.stats(2_000), BacklogStats::default());
    }

    #[test]
    fn records_left_due_by_the_last_scan_count_until_the_next() {
        let mut b = Backlog::default();
        b.queue(key(1), 5_000);
        b.left_due(30, Some(2_000));
        assert_eq!(
            b.stats(6_000),
            BacklogStats {
                records: 31,
                lag: Duration::from_millis(4_000)
            }
        );
        b.left_due(0, Some(2_000));
        assert_eq!(
            b.stats(6_000),
            BacklogStats {
                records: 1,
                lag: Duration::from_millis(1_000)
            }
        );
        // A clock that went back never gives a negative lag.
        assert_eq!(b.stats(10).lag, Duration::ZERO);
    }

    #[test]
    fn an_earlier_due_time_moves_the_record_forward() {
        let mut b = Backlog::default();
        b.queue(key(1), 900);
        b.queue(key(1), 100);
        assert_eq!(b.stats(1_000).lag, Duration::from_millis(900));
        assert_eq!(b.sent(&key(1), 1_000), Some(Duration::from_millis(900)));
        assert_eq!(b.stats(1_000), BacklogStats::default());
    }
}
