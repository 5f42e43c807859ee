//! Maintenance work (bucket refresh, replication) as jobs that run at most
//! [`MAX_MAINTENANCE_LOOKUPS`] at a time.
//!
//! Every job is one lookup. Timers and events only *queue* jobs; a job is queued once however
//! often it is asked for, and the queue holds at most [`JOB_QUEUE_CAPACITY`] (work that finds
//! it full stays due and is asked for again at the next tick). So a burst of triggers (a
//! partition healing opens many ranges at once, a slow network makes every refresh late)
//! costs a bounded number of lookups in flight, and the node's own upkeep can never crowd
//! out its clients' requests. Refreshes go before record jobs: a node with many records to
//! replicate still keeps its routing table fresh.

use std::collections::{HashSet, VecDeque};

use crate::kad::Key;

/// Maintenance lookups one node runs at once (each keeps up to alpha RPCs in flight).
pub const MAX_MAINTENANCE_LOOKUPS: usize = 4;
/// Jobs that may wait; more are not queued until there is room.
pub const JOB_QUEUE_CAPACITY: usize = 4096;

/// One maintenance lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Job {
    /// Refresh bucket `index` (paper section 2.3).
    Refresh(usize),
    /// Look up this node's own id again (the join's first step, section 2.3): finds nodes
    /// closer than its closest neighbour that joined after its first self-lookup.
    SelfLookup,
    /// Store the held records of a group of nearby keys (named by the group's key) again at
    /// their k closest nodes, with one lookup (section 2.5, `crate::kad::replication`).
    Replicate(Key),
}

/// Counters of the maintenance queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobStats {
    /// Maintenance lookups running now.
    pub running: usize,
    /// Jobs waiting now.
    pub queued: usize,
}

/// The queue of maintenance jobs.
#[derive(Default)]
pub(crate) struct Jobs {
    routing: VecDeque<Job>,
    records: VecDeque<Job>,
    queued: HashSet<Job>,
    running: usize,
}

impl Jobs {
    /// Queues `job` unless it is already queued or the queue is full; says whether it was.
    pub fn push(&mut self, job: Job) -> bool {
        if self.queued.len() >= JOB_QUEUE_CAPACITY || !self.queued.insert(job) {
            return false;
        }
        match job {
            Job::Refresh(_) | Job::SelfLookup => self.routing.push_back(job),
            Job::Replicate(_) => self.records.push_back(job),
        }
        true
    }

    /// The next job to start, if fewer than [`MAX_MAINTENANCE_LOOKUPS`] run (it counts as
    /// running until [`done`](Self::done)).
    pub fn start_next(&mut self) -> Option<Job> {
        if self.running >= MAX_MAINTENANCE_LOOKUPS {
            return None;
        }
        let job = self
            .routing
            .pop_front()
            .or_else(|| self.records.pop_front())?;
        self.queued.remove(&job);
        self.running += 1;
        Some(job)
    }

    /// A job's lookup finished (or the job had nothing to do).
    pub fn done(&mut self) {
        self.running = self.running.saturating_sub(1);
    }

    pub fn stats(&self) -> JobStats {
        JobStats {
            running: self.running,
            queued: self.queued.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kad::NodeId;

    #[test]
    fn a_job_is_queued_once_and_refreshes_go_first() {
        let mut j = Jobs::default();
        let key = NodeId([1; 20]);
        assert!(j.push(Job::Replicate(key)));
        assert!(!j.push(Job::Replicate(key)), "already queued");
        assert!(j.push(Job::Refresh(150)));
        assert!(!j.push(Job::Refresh(150)));
        assert_eq!(j.start_next(), Some(Job::Refresh(150)));
        assert_eq!(j.start_next(), Some(Job::Replicate(key)));
        assert!(
            j.push(Job::Replicate(key)),
            "running, not queued: may be asked again"
        );
        assert_eq!(
            j.stats(),
            JobStats {
                running: 2,
                queued: 1
            }
        );
    }

    #[test]
    fn at_most_the_maximum_run_at_once_and_the_queue_is_bounded() {
        let mut j = Jobs::default();
        for i in 0..JOB_QUEUE_CAPACITY {
            let mut id = [0u8; 20];
            id[..8].copy_from_slice(&(i as u64).to_be_bytes());
            assert!(j.push(Job::Replicate(NodeId(id))));
        }
        assert_eq!(j.stats().queued, JOB_QUEUE_CAPACITY);
        assert!(!j.push(Job::Refresh(3)), "full");
        for _ in 0..MAX_MAINTENANCE_LOOKUPS {
            assert!(j.start_next().is_some());
        }
        assert_eq!(j.start_next(), None, "the maximum runs");
        assert_eq!(
            j.stats().queued,
            JOB_QUEUE_CAPACITY - MAX_MAINTENANCE_LOOKUPS,
            "started jobs leave the queue"
        );
        j.done();
        assert!(j.start_next().is_some());
        assert_eq!(j.stats().running, MAX_MAINTENANCE_LOOKUPS);
    }
}
