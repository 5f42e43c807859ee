//! A put's or delete's write to its replica set, as a state machine without I/O.
//!
//! The driver runs a survey lookup (FIND_VALUE with `omit_value`, collecting every version),
//! then [`Write::plan`] decides everything that follows:
//! - the version: the node's [`HybridClock`], moved past every version the survey saw and the
//!   local copy's, so the write is ordered after them whatever this node's clock says;
//! - a delete's lifetime: [`tombstone_expiry`] of the copies the survey saw;
//! - where the record goes: STOREs to the replica set (the k closest, this node included
//!   when it is one of them), and one-way STOREs to holders of older copies outside it;
//! - how many must succeed: `min(quorum, nodes this node knows)`, counting stale contacts and
//!   the nodes its lookup found, so nodes that did not answer do not lower it.
//!
//! The driver then feeds each STORE's answer to [`Write::on_ack`], performs what
//! [`Write::poll`] asks for, and answers the client with the [`Verdict`]: as soon as the
//! quorum has stored the record ([`Step::Answer`]), while the other replicas' STOREs finish in
//! the background, and otherwise once every replica has answered ([`Step::Done`]).
//!
//! **Two kinds of write** ([`WriteSettings::conditional`]):
//! - A *conditional* write (puts, with the `conditional_puts` setting on, its default) follows a
//!   survey that ended at convergence ([`super::lookup::Lookup::until_converged`], at the first
//!   answer from one of the alpha closest it knew): the k closest
//!   seen, some not queried, are sent STOREs at once, and each STORE's answer is the version check
//!   the survey's last round would have made (a replica holding a newer version refuses and says
//!   which). The put then costs about k + 5 RPCs instead of 2k + 5, and one round less. Its
//!   version was picked without hearing from every replica, so the write answers at the quorum
//!   only once it has also heard the versions of `n - quorum + 1` of its `n` replicas
//!   ([`Write::confirm`]): every acknowledged write is on at least `quorum` of them, so that many
//!   answers include one from each such write's replicas, and a newer one would have been
//!   reported. A replica that answered the survey counts as heard (it said which version it held,
//!   after every write acknowledged before this put began, and the put's version is above it), so
//!   the put waits for that many fewer STORE answers (on a 100-node devnet, 3.6 FIND_VALUEs a
//!   put, and 17.6 of its 20 STOREs answered before the put did).
//!   A write that hears of a newer version is not acknowledged, even at the quorum; once its
//!   STOREs have answered it asks to be written again after a full survey ([`Step::Retry`]),
//!   above the version it heard of. Otherwise a conditional write that did not hear from enough
//!   replicas (some failed) is settled, like a surveyed one, once every STORE has answered: it
//!   then heard from every replica that is alive.
//! - A *surveyed* write (deletes, puts with `conditional_puts = false`, and a conditional put's
//!   retry) follows a survey that heard from all of the k closest: it knows every version there
//!   before it picks its own, and its replica set is the k closest that answered.
//!
//!   What a conditional put gives up against a surveyed one: a version on fewer than `quorum`
//!   replicas (a write that failed its quorum, or one still under way) can sit on one of the
//!   `quorum - 1` replicas the put did not hear before answering. When that version is ahead of
//!   the put's (its writer's clock ran ahead, within `max_clock_skew`), it wins over the
//!   acknowledged put; a surveyed put would have seen it, if that replica answered its survey,
//!   and been ordered after it. And a conditional put waits for the STOREs of all but
//!   `quorum - 1` of the replicas its survey did not hear, where a surveyed put waits for every
//!   replica's FIND_VALUE (a read) and then its quorum's STOREs: with durable replicas, whose
//!   STOREs wait for the disk, one slow disk among k then slows the put. It is the default
//!   because it keeps what an acknowledgement promises (the write is on `quorum` replicas and
//!   ordered after every acknowledged write: the read and write quorums intersect, as in
//!   Dynamo-style stores) at about half the RPCs: on a 100-node devnet, put p50 10.4 -> 7.1-7.4
//!   pings and puts/s at 32 in flight 1,251 -> 1,721-1,828 in memory, and 5.7 -> 4.8 ms and 230
//!   -> 277 puts/s with every STORE fsynced (README, the setting). Waiting for every replica's
//!   STORE answer instead of `n - quorum + 1` (the surveyed put's knowledge at the conditional
//!   put's RPCs) cost 7.8-7.9 pings: tried, not kept.
//!
//! This node's own copy is written only after a peer accepted the record (or at once when no
//! peer is in the replica set). Every peer checks the version against its own clock; a node
//! whose clock runs far ahead has its STOREs refused by every correct peer, and must not keep
//! the far-future version itself: it would win over every later write once its clock's lead
//! is no longer "ahead" of anyone.
//!
//! Implementation notes (departures from the paper): the paper's STORE is fire-and-forget with
//! no quorum and no versions. Here a write is acknowledged only at a quorum, and a write that
//! misses it is reported as possibly partially applied; it is not rolled back (versions order
//! it, and a retry or a later write supersedes it). The client is answered at the quorum rather
//! than after all k STOREs: the slowest of k replicas (one far away, one busy, one dead and
//! timing out) no longer sets the latency of every put; the rest still get the record, and
//! replication repairs any that did not. All k STOREs go out at once: sending the quorum's
//! STOREs and two spares first, and the rest once the quorum stored it (so that on a busy
//! machine the quorum's answers do not queue behind the other STOREs) was tried; put p50 at
//! concurrency 1 on a 100-node devnet moved within the machine's noise (five alternating pairs
//! in one devnet: 1.10-1.61 ms against 1.18-1.74 ms), and a put would then wait for the third
//! fastest of five replicas rather than of k. A conditional put's lookup ends at convergence,
//! and its STOREs go to the k closest *seen* (the paper stores at the k closest that answered):
//! a dead one among them fails its STORE, leaving one copy fewer until replication restores it.
//! A put still runs that lookup when this node's table seems to hold every node near the key:
//! skipping it there (when the buckets around the key's k closest had room, so nobody was
//! turned away) and sending the STOREs to the table's k closest at once was tried. On a
//! 100-node devnet put p50 went from 3.8-4.2 to 2.6-3.8 pings in three alternating pairs, but
//! a table that turned nobody away may still never have heard of nodes nearer the key: in
//! simulations of 200 and 1,000 nodes puts then missed some of the true k closest, and a get
//! after 30 % of the nodes died found no copy. The first answers of a lookup, from the nodes
//! nearest the key, are what tells a node of its blind spots there. Not kept.

use std::sync::Arc;

use super::clock::HybridClock;
use super::lookup::{Outcome, replica_set};
use super::message::Contact;
use super::store::{Record, tombstone_expiry};

/// What a write needs to know besides the survey.
#[derive(Clone, Copy, Debug)]
pub struct WriteSettings {
    pub k: usize,
    /// STOREs that must succeed.
    pub quorum: usize,
    /// Nodes this node knows: its contacts (stale ones included) and itself.
    pub known: usize,
    pub tombstone_grace_ms: u64,
    /// A conditional write: its survey ended at convergence, so it stores at the k closest
    /// seen and answers only once enough replicas reported their versions (see the module
    /// doc).
    pub conditional: bool,
}

/// The answer to one STORE of the write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ack {
    Stored,
    /// The replica holds a newer version.
    Newer(u64),
    /// The replica refused the record (why, as it said).
    Refused(String),
    /// The replica had no room or capacity for it (RESOURCE_EXHAUSTED: its store is full, or
    /// it is overloaded).
    Exhausted(String),
    /// No answer (unreachable, timed out, not sent).
    Failed,
}

/// How a write ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// At least the quorum stored it.
    Acknowledged { stored_at: Vec<String> },
    /// Short of the quorum, because a replica holds a newer version.
    Superseded { newer: u64 },
    /// Short of the quorum because every replica that answered without storing it was out of
    /// room or capacity; the nodes that stored it keep it.
    Exhausted {
        stored: usize,
        needed: usize,
        /// The first such answer, as the replica put it.
        why: String,
    },
    /// Short of the quorum; the nodes that stored it keep it.
    ShortOfQuorum {
        stored: usize,
        needed: usize,
        /// The first refusal, as the replica put it.
        refused: Option<String>,
    },
}

/// What the driver does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Store the record in this node's own store and report the result to
    /// [`Write::on_local`].
    StoreLocal,
    /// Wait for STORE answers.
    Wait,
    /// The quorum has stored the record (and this node's own copy, when it is a replica, is
    /// settled): answer the client with this [`Verdict::Acknowledged`] now. The write goes on
    /// until the other STOREs have answered, then says [`Step::Done`].
    Answer(Verdict),
    /// Every STORE has answered. After an [`Step::Answer`], the verdict only reports how the
    /// background STOREs went (the client has its answer).
    Done(Verdict),
    /// Every STORE has answered, the client has not been, and a replica holds a `newer`
    /// version than this conditional write picked without hearing from it: write the record
    /// again after a full survey, which orders it after every version there. The write is
    /// over.
    Retry { newer: u64 },
}

/// The STOREs a planned write sends.
#[derive(Debug)]
pub struct Plan {
    pub write: Write,
    /// The replicas whose answers count ([`Write::on_ack`] each).
    pub replicas: Vec<Contact>,
    /// Holders of older copies outside the replica set: sent the record, answers not counted.
    pub also: Vec<Contact>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Local {
    /// This node is not in the replica set.
    NotReplica,
    /// Waits for a peer to accept the record first.
    Waiting,
    /// Asked for, not reported yet.
    Storing,
    /// Stored, or given up.
    Settled,
}

/// One write under way.
#[derive(Debug)]
pub struct Write {
    record: Record,
    me: String,
    needed: usize,
    /// See [`WriteSettings::conditional`].
    conditional: bool,
    /// Replicas (this node included) whose versions must be known before the client is
    /// answered at the quorum; 0 for a surveyed write.
    confirm: usize,
    /// Replicas whose versions are known: those that answered the survey, stored the record
    /// or said they hold a newer one, and this node when it is a replica.
    heard: usize,
    /// Replicas (addresses) that answered the survey: their STORE answers are not counted
    /// again in `heard`.
    surveyed: Vec<Arc<str>>,
    /// STOREs sent to replicas other than this node.
    remote: usize,
    pending: usize,
    stored_at: Vec<String>,
    newer: u64,
    refused: Option<String>,
    /// The first RESOURCE_EXHAUSTED answer, and whether any replica failed otherwise.
    exhausted: Option<String>,
    other_failure: bool,
    local: Local,
    /// [`Step::Answer`] was given.
    answered: bool,
}

impl Write {
    /// Settles the record's version (and a tombstone's expiry) after the survey `outcome` and
    /// this node's copy `local`, and says where it goes.
    pub fn plan(
        mut record: Record,
        outcome: &Outcome,
        local: Option<&Record>,
        me: &Contact,
        settings: WriteSettings,
        clock: &mut HybridClock,
        wall_us: u64,
    ) -> Plan {
        let seen = outcome
            .holders
            .iter()
            .map(|(_, r)| r.version)
            .chain(local.map(|r| r.version))
            .max();
        record.version = clock.issue(wall_us, seen);
        if record.tombstone {
            // Shadow the key as long as any copy this delete saw could live.
            let copies = outcome
                .holders
                .iter()
                .map(|(_, r)| r.expires_at_ms)
                .chain(local.map(|r| r.expires_at_ms));
            let now_ms = wall_us / 1000;
            record.expires_at_ms = tombstone_expiry(now_ms, settings.tombstone_grace_ms, copies);
        }
        let found = if settings.conditional {
            &outcome.candidates
        } else {
            &outcome.closest
        };
        let mut replicas = replica_set(found, &outcome.target, me, settings.k);
        let local_replica = replicas.iter().any(|c| c.id == me.id);
        // Nodes the lookup found count as known: a node that learned a peer only from the
        // lookup's answers (not proven by a PING yet) still sends it the record.
        let needed = settings
            .quorum
            .min(settings.known.max(replicas.len()))
            .max(1);
        // Replicas whose version the write must hear before it answers (module doc). This
        // node's own copy's version is known already.
        let confirm = if settings.conditional {
            (replicas.len() + 1).saturating_sub(needed)
        } else {
            0
        };
        let local_step = if local_replica {
            Local::Waiting
        } else {
            Local::NotReplica
        };
        replicas.retain(|c| c.id != me.id);
        // A replica that answered the survey said which version it held: a conditional write
        // need not hear it again from its STORE.
        let surveyed: Vec<Arc<str>> = if settings.conditional {
            replicas
                .iter()
                .filter(|c| outcome.closest.iter().any(|a| a.id == c.id))
                .map(|c| c.addr.clone())
                .collect()
        } else {
            Vec::new()
        };
        let also = outcome
            .holders
            .iter()
            .filter(|(h, r)| {
                r.version < record.version
                    && h.id != me.id
                    && !replicas.iter().any(|c| c.id == h.id)
            })
            .map(|(h, _)| h.clone())
            .collect();
        let write = Write {
            record,
            me: me.addr.to_string(),
            needed,
            conditional: settings.conditional,
            confirm,
            heard: usize::from(local_replica) + surveyed.len(),
            surveyed,
            remote: replicas.len(),
            pending: replicas.len(),
            stored_at: Vec::new(),
            newer: 0,
            refused: None,
            exhausted: None,
            other_failure: false,
            local: local_step,
            answered: false,
        };
        Plan {
            write,
            replicas,
            also,
        }
    }

    /// The record as planned (its version settled).
    pub fn record(&self) -> &Record {
        &self.record
    }

    /// STOREs that must succeed.
    pub fn needed(&self) -> usize {
        self.needed
    }

    /// Replicas (this node included) whose versions a conditional write must know before it
    /// answers at the quorum; 0 for a surveyed write.
    pub fn confirm(&self) -> usize {
        self.confirm
    }

    /// The client has been answered ([`Step::Answer`]); the STOREs still awaited run in the
    /// background.
    pub fn answered(&self) -> bool {
        self.answered
    }

    /// The answer of replica `addr` to its STORE.
    pub fn on_ack(&mut self, addr: &str, ack: Ack) {
        self.pending = self.pending.saturating_sub(1);
        if matches!(ack, Ack::Stored | Ack::Newer(_)) && !self.surveyed.iter().any(|a| **a == *addr)
        {
            self.heard += 1;
        }
        self.count(addr, ack);
    }

    /// The result of this node's own store, asked for by [`Step::StoreLocal`].
    pub fn on_local(&mut self, ack: Ack) {
        self.local = Local::Settled;
        let me = self.me.clone();
        self.count(&me, ack);
    }

    fn count(&mut self, addr: &str, ack: Ack) {
        match ack {
            Ack::Stored => self.stored_at.push(addr.to_string()),
            Ack::Newer(v) => self.newer = self.newer.max(v),
            Ack::Refused(why) => {
                self.refused.get_or_insert(format!("{addr}: {why}"));
                self.other_failure = true;
            }
            Ack::Exhausted(why) => {
                self.exhausted.get_or_insert(format!("{addr}: {why}"));
            }
            Ack::Failed => self.other_failure = true,
        }
    }

    /// What to do next.
    pub fn poll(&mut self) -> Step {
        if self.local == Local::Waiting {
            // A peer that stored the record vouched for its version; with no peer in the
            // replica set (a network of one, as far as the survey saw) nobody can, and
            // nobody else would keep it.
            if !self.stored_at.is_empty() || self.remote == 0 {
                self.local = Local::Storing;
                return Step::StoreLocal;
            }
            if self.pending == 0 {
                // Every replica answered and none stored it: keep nothing here either.
                self.local = Local::Settled;
            }
        }
        match (self.pending, self.local) {
            (0, Local::NotReplica | Local::Settled) if self.superseded() && !self.answered => {
                Step::Retry { newer: self.newer }
            }
            (0, Local::NotReplica | Local::Settled) => Step::Done(self.verdict()),
            (_, Local::NotReplica | Local::Settled)
                if !self.answered
                    && self.stored_at.len() >= self.needed
                    && self.heard >= self.confirm
                    && !self.superseded() =>
            {
                self.answered = true;
                Step::Answer(self.verdict())
            }
            _ => Step::Wait,
        }
    }

    /// A replica holds a newer version than the write's. A conditional write picked its
    /// version without every replica's, so it is not acknowledged then, even at the quorum:
    /// its copies are older than that one, and reads would answer that one.
    fn superseded(&self) -> bool {
        self.conditional && self.newer > self.record.version
    }

    fn verdict(&self) -> Verdict {
        if self.superseded() {
            Verdict::Superseded { newer: self.newer }
        } else if self.stored_at.len() >= self.needed {
            Verdict::Acknowledged {
                stored_at: self.stored_at.clone(),
            }
        } else if self.newer > self.record.version {
            Verdict::Superseded { newer: self.newer }
        } else if let Some(why) = self.exhausted.clone().filter(|_| !self.other_failure) {
            Verdict::Exhausted {
                stored: self.stored_at.len(),
                needed: self.needed,
                why,
            }
        } else {
            Verdict::ShortOfQuorum {
                stored: self.stored_at.len(),
                needed: self.needed,
                refused: self.refused.clone(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kad::NodeId;
    use crate::kad::store::NEVER;

    const WALL_US: u64 = 1_000_000_000;

    fn contact(i: u8) -> Contact {
        Contact::new(NodeId([i; 20]), format!("n{i}:1"))
    }

    fn record(tombstone: bool) -> Record {
        Record {
            key: NodeId([0; 20]),
            value: if tombstone { vec![] } else { b"v".to_vec() },
            version: 0,
            expires_at_ms: if tombstone { 0 } else { NEVER },
            tombstone,
            publisher: NodeId([9; 20]),
            user_key: "k".into(),
        }
    }

    fn copy(version: u64, expires_at_ms: u64) -> Record {
        Record {
            version,
            expires_at_ms,
            ..record(false)
        }
    }

    /// A survey that found `closest` (ids: a lower byte is closer to the key) and `holders`.
    fn survey(closest: &[u8], holders: &[(u8, Record)]) -> Outcome {
        Outcome {
            target: NodeId([0; 20]),
            closest: closest.iter().map(|i| contact(*i)).collect(),
            candidates: closest.iter().map(|i| contact(*i)).collect(),
            found: None,
            holders: holders
                .iter()
                .map(|(i, r)| (contact(*i), r.clone()))
                .collect(),
            cache_at: None,
            queried: closest.len() as u32,
            rounds: 1,
            gave_up: false,
        }
    }

    fn settings(k: usize, quorum: usize, known: usize) -> WriteSettings {
        WriteSettings {
            k,
            quorum,
            known,
            tombstone_grace_ms: 1_000,
            conditional: false,
        }
    }

    fn plan(
        rec: Record,
        outcome: &Outcome,
        local: Option<&Record>,
        me: u8,
        s: WriteSettings,
    ) -> Plan {
        let mut clock = HybridClock::default();
        Write::plan(rec, outcome, local, &contact(me), s, &mut clock, WALL_US)
    }

    #[test]
    fn the_version_is_ordered_after_every_copy_seen() {
        let ahead = WALL_US + 30_000_000;
        let o = survey(&[1, 2], &[(1, copy(ahead, NEVER)), (2, copy(5, NEVER))]);
        let p = plan(record(false), &o, None, 3, settings(20, 2, 3));
        assert_eq!(p.write.record().version, ahead + 1);
        let local = copy(ahead + 10, NEVER);
        let p = plan(record(false), &o, Some(&local), 3, settings(20, 2, 3));
        assert_eq!(p.write.record().version, ahead + 11);
        // Nothing seen: the wall clock.
        let p = plan(
            record(false),
            &survey(&[1], &[]),
            None,
            3,
            settings(20, 2, 3),
        );
        assert_eq!(p.write.record().version, WALL_US);
    }

    #[test]
    fn a_tombstone_outlives_every_copy_it_saw() {
        let now_ms = WALL_US / 1000;
        let o = survey(&[1, 2], &[(1, copy(5, now_ms + 50_000))]);
        let p = plan(record(true), &o, None, 3, settings(20, 2, 3));
        assert_eq!(p.write.record().expires_at_ms, now_ms + 50_000);
        // The grace when the copies expire sooner.
        let o = survey(&[1, 2], &[(1, copy(5, now_ms + 10))]);
        let p = plan(record(true), &o, None, 3, settings(20, 2, 3));
        assert_eq!(p.write.record().expires_at_ms, now_ms + 1_000);
        // A local copy without a TTL makes the tombstone permanent.
        let local = copy(5, NEVER);
        let p = plan(record(true), &o, Some(&local), 3, settings(20, 2, 3));
        assert_eq!(p.write.record().expires_at_ms, NEVER);
    }

    #[test]
    fn the_quorum_shrinks_only_for_a_small_network() {
        let o = survey(&[1], &[]);
        assert_eq!(
            plan(record(false), &o, None, 3, settings(20, 3, 2))
                .write
                .needed(),
            2
        );
        assert_eq!(
            plan(record(false), &o, None, 3, settings(20, 3, 9))
                .write
                .needed(),
            3
        );
        assert_eq!(
            plan(record(false), &o, None, 3, settings(20, 0, 9))
                .write
                .needed(),
            1
        );
        // The table holds one peer, the lookup found two: with this node, three know of it.
        let o = survey(&[1, 2], &[]);
        assert_eq!(
            plan(record(false), &o, None, 3, settings(20, 3, 2))
                .write
                .needed(),
            3
        );
    }

    #[test]
    fn replicas_and_older_holders_outside_them_are_sent_the_record() {
        // k = 2: the replica set is 1 and 2 (this node, 5, is farther).
        let o = survey(&[1, 2, 3], &[(3, copy(5, NEVER)), (1, copy(6, NEVER))]);
        let p = plan(record(false), &o, None, 5, settings(2, 2, 4));
        let ids = |cs: &[Contact]| cs.iter().map(|c| c.id.0[0]).collect::<Vec<_>>();
        assert_eq!(ids(&p.replicas), vec![1, 2]);
        assert_eq!(ids(&p.also), vec![3]);
    }

    #[test]
    fn the_own_copy_waits_for_a_peer_to_accept_the_version() {
        let o = survey(&[2, 3], &[]);
        let mut p = plan(record(false), &o, None, 1, settings(20, 3, 3));
        assert_eq!(p.replicas.len(), 2);
        let w = &mut p.write;
        assert_eq!(w.poll(), Step::Wait);
        w.on_ack("n2:1", Ack::Stored);
        assert_eq!(w.poll(), Step::StoreLocal);
        assert_eq!(w.poll(), Step::Wait, "the local store is under way");
        w.on_local(Ack::Stored);
        assert_eq!(w.poll(), Step::Wait, "one replica has not answered");
        w.on_ack("n3:1", Ack::Stored);
        let Step::Done(Verdict::Acknowledged { stored_at }) = w.poll() else {
            panic!("not acknowledged");
        };
        assert_eq!(stored_at, vec!["n2:1", "n1:1", "n3:1"]);
    }

    #[test]
    fn the_client_is_answered_at_the_quorum_and_the_rest_finish_after() {
        // Five replicas and this node; a quorum of 2.
        let o = survey(&[2, 3, 4, 5, 6], &[]);
        let mut p = plan(record(false), &o, None, 1, settings(20, 2, 6));
        let w = &mut p.write;
        w.on_ack("n2:1", Ack::Stored);
        assert_eq!(w.poll(), Step::StoreLocal);
        assert_eq!(w.poll(), Step::Wait, "the own copy is not settled yet");
        w.on_local(Ack::Stored);
        assert_eq!(
            w.poll(),
            Step::Answer(Verdict::Acknowledged {
                stored_at: vec!["n2:1".into(), "n1:1".into()]
            })
        );
        assert!(w.answered());
        assert_eq!(w.poll(), Step::Wait, "answered once; 4 STOREs still out");
        w.on_ack("n3:1", Ack::Stored);
        w.on_ack("n4:1", Ack::Failed);
        w.on_ack("n5:1", Ack::Stored);
        assert_eq!(w.poll(), Step::Wait);
        w.on_ack("n6:1", Ack::Stored);
        let Step::Done(Verdict::Acknowledged { stored_at }) = w.poll() else {
            panic!("not done");
        };
        assert_eq!(
            stored_at.len(),
            5,
            "every STORE that succeeded: {stored_at:?}"
        );
    }

    #[test]
    fn a_write_that_is_not_a_replica_is_answered_at_the_quorum_too() {
        // k = 3: the replicas are 1, 2 and 3; this node (9) is not one of them.
        let o = survey(&[1, 2, 3], &[]);
        let mut p = plan(record(false), &o, None, 9, settings(3, 2, 4));
        let w = &mut p.write;
        w.on_ack("n1:1", Ack::Stored);
        assert_eq!(w.poll(), Step::Wait);
        w.on_ack("n3:1", Ack::Stored);
        assert!(matches!(
            w.poll(),
            Step::Answer(Verdict::Acknowledged { .. })
        ));
        w.on_ack("n2:1", Ack::Failed);
        assert!(matches!(w.poll(), Step::Done(Verdict::Acknowledged { .. })));
    }

    #[test]
    fn a_version_every_peer_refuses_is_not_kept_here_either() {
        let o = survey(&[2, 3], &[]);
        let mut p = plan(record(false), &o, None, 1, settings(20, 2, 3));
        let w = &mut p.write;
        let why = "version is 600000 ms ahead of this node's clock".to_string();
        w.on_ack("n2:1", Ack::Refused(why.clone()));
        assert_eq!(w.poll(), Step::Wait);
        w.on_ack("n3:1", Ack::Refused(why.clone()));
        assert_eq!(
            w.poll(),
            Step::Done(Verdict::ShortOfQuorum {
                stored: 0,
                needed: 2,
                refused: Some(format!("n2:1: {why}")),
            })
        );
    }

    #[test]
    fn a_write_short_only_for_lack_of_room_says_so() {
        let o = survey(&[2, 3], &[]);
        let mut p = plan(record(false), &o, None, 1, settings(20, 2, 3));
        let w = &mut p.write;
        w.on_ack("n2:1", Ack::Exhausted("store is full".into()));
        w.on_ack("n3:1", Ack::Exhausted("store is full".into()));
        assert_eq!(
            w.poll(),
            Step::Done(Verdict::Exhausted {
                stored: 0,
                needed: 2,
                why: "n2:1: store is full".into(),
            })
        );
        // A replica that did not answer makes it a plain shortfall: retrying may help.
        let mut p = plan(record(false), &o, None, 1, settings(20, 2, 3));
        let w = &mut p.write;
        w.on_ack("n2:1", Ack::Exhausted("store is full".into()));
        w.on_ack("n3:1", Ack::Failed);
        assert!(matches!(
            w.poll(),
            Step::Done(Verdict::ShortOfQuorum { .. })
        ));
    }

    #[test]
    fn a_network_of_one_stores_at_once() {
        let o = survey(&[], &[]);
        let mut p = plan(record(false), &o, None, 1, settings(20, 3, 1));
        assert!(p.replicas.is_empty());
        assert_eq!(p.write.poll(), Step::StoreLocal);
        p.write.on_local(Ack::Stored);
        assert_eq!(
            p.write.poll(),
            Step::Done(Verdict::Acknowledged {
                stored_at: vec!["n1:1".into()]
            })
        );
    }

    #[test]
    fn a_newer_copy_supersedes_the_write() {
        let o = survey(&[2, 3], &[]);
        let mut p = plan(record(false), &o, None, 9, settings(2, 2, 3));
        let v = p.write.record().version;
        p.write.on_ack("n2:1", Ack::Newer(v + 5));
        p.write.on_ack("n3:1", Ack::Failed);
        assert_eq!(
            p.write.poll(),
            Step::Done(Verdict::Superseded { newer: v + 5 })
        );
    }

    /// A conditional write's plan: stores at `candidates` (the survey answered from
    /// `closest` only), `me` outside the replica set.
    fn conditional(closest: &[u8], candidates: &[u8], k: usize, quorum: usize) -> Plan {
        let mut o = survey(closest, &[]);
        o.candidates = candidates.iter().map(|i| contact(*i)).collect();
        let s = WriteSettings {
            conditional: true,
            ..settings(k, quorum, 20)
        };
        plan(record(false), &o, None, 99, s)
    }

    #[test]
    fn a_conditional_write_stores_at_the_candidates_not_only_at_those_that_answered() {
        let p = conditional(&[1, 2], &[1, 2, 3, 4], 3, 2);
        let ids: Vec<u8> = p.replicas.iter().map(|c| c.id.0[0]).collect();
        assert_eq!(ids, vec![1, 2, 3]);
        // Three replicas, a quorum of 2: it must hear 3 - 2 + 1 of them.
        assert_eq!(p.write.confirm(), 2);
        let surveyed = plan(
            record(false),
            &survey(&[1, 2], &[]),
            None,
            99,
            settings(3, 2, 20),
        );
        assert_eq!(surveyed.write.confirm(), 0);
    }

    #[test]
    fn a_conditional_write_answers_at_the_quorum_once_it_heard_enough_versions() {
        // Five replicas, a quorum of 2: it answers once 4 have said which version they hold.
        let mut p = conditional(&[2, 3], &[2, 3, 4, 5, 6], 5, 2);
        let w = &mut p.write;
        assert_eq!(w.confirm(), 4);
        w.on_ack("n2:1", Ack::Stored);
        w.on_ack("n3:1", Ack::Stored);
        assert_eq!(
            w.poll(),
            Step::Wait,
            "the quorum stored it, but a 4th may hold newer"
        );
        w.on_ack("n4:1", Ack::Failed);
        w.on_ack("n5:1", Ack::Refused("no".into()));
        assert_eq!(
            w.poll(),
            Step::Wait,
            "failures and refusals say nothing of versions"
        );
        w.on_ack("n6:1", Ack::Stored);
        // Every replica answered: like a surveyed write, it heard every live one.
        let Step::Done(Verdict::Acknowledged { stored_at }) = w.poll() else {
            panic!("not acknowledged");
        };
        assert_eq!(stored_at.len(), 3);

        let mut p = conditional(&[2, 3], &[2, 3, 4, 5, 6], 5, 2);
        let w = &mut p.write;
        for r in ["n2:1", "n3:1", "n4:1"] {
            w.on_ack(r, Ack::Stored);
            assert_eq!(w.poll(), Step::Wait);
        }
        w.on_ack("n5:1", Ack::Stored);
        assert!(matches!(
            w.poll(),
            Step::Answer(Verdict::Acknowledged { .. })
        ));
    }

    #[test]
    fn replicas_that_answered_the_survey_count_as_heard_once() {
        // Six replicas, a quorum of 2: it must hear 5. Three answered the survey (2, 3, 4).
        let mut p = conditional(&[2, 3, 4], &[2, 3, 4, 5, 6, 7], 6, 2);
        let w = &mut p.write;
        assert_eq!(w.confirm(), 5);
        // Their STOREs tell nothing new about versions: stored at the quorum, heard 3 of 5.
        w.on_ack("n2:1", Ack::Stored);
        w.on_ack("n3:1", Ack::Newer(0));
        assert_eq!(
            w.poll(),
            Step::Wait,
            "heard 3, not 5: the survey's are not counted twice"
        );
        w.on_ack("n5:1", Ack::Stored);
        assert_eq!(w.poll(), Step::Wait, "heard 4");
        w.on_ack("n6:1", Ack::Stored);
        // Heard 5 (three in the survey, two by STORE) while 4 and 7 are still to answer.
        assert!(matches!(
            w.poll(),
            Step::Answer(Verdict::Acknowledged { .. })
        ));
        w.on_ack("n4:1", Ack::Stored);
        w.on_ack("n7:1", Ack::Stored);
        let Step::Done(Verdict::Acknowledged { stored_at }) = w.poll() else {
            panic!("not acknowledged");
        };
        assert_eq!(stored_at.len(), 5);
    }

    #[test]
    fn a_conditional_write_that_meets_a_newer_version_is_superseded_even_at_the_quorum() {
        let mut p = conditional(&[2, 3], &[2, 3, 4, 5, 6], 5, 2);
        let v = p.write.record().version;
        let w = &mut p.write;
        w.on_ack("n2:1", Ack::Newer(v + 5));
        for r in ["n3:1", "n4:1", "n5:1"] {
            w.on_ack(r, Ack::Stored);
        }
        assert_eq!(
            w.poll(),
            Step::Wait,
            "stored at 3 and heard 4, but one is newer"
        );
        w.on_ack("n6:1", Ack::Stored);
        assert_eq!(w.poll(), Step::Retry { newer: v + 5 });
        // The same version again (a STORE that arrived twice) is not newer.
        let mut p = conditional(&[2], &[2, 3], 2, 2);
        let v = p.write.record().version;
        p.write.on_ack("n2:1", Ack::Newer(v));
        p.write.on_ack("n3:1", Ack::Stored);
        assert!(matches!(
            p.write.poll(),
            Step::Done(Verdict::ShortOfQuorum { stored: 1, .. })
        ));
    }

    #[test]
    fn short_of_the_quorum_counts_what_was_stored() {
        let o = survey(&[2, 3, 4], &[]);
        let mut p = plan(record(false), &o, None, 1, settings(20, 3, 4));
        p.write.on_ack("n2:1", Ack::Failed);
        p.write.on_ack("n3:1", Ack::Stored);
        assert_eq!(p.write.poll(), Step::StoreLocal);
        p.write.on_local(Ack::Stored);
        p.write.on_ack("n4:1", Ack::Failed);
        assert_eq!(
            p.write.poll(),
            Step::Done(Verdict::ShortOfQuorum {
                stored: 2,
                needed: 3,
                refused: None
            })
        );
    }
}
