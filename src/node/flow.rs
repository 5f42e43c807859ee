//! Flow control of outbound RPCs: a node never has more than [`MAX_RPCS_IN_FLIGHT`] peer RPCs
//! under way.
//!
//! Without a bound, a slow network feeds on itself: requests wait in queues past their
//! timeout, a lookup whose request timed out sends another one, and the node piles up tasks
//! and memory faster than its peers can answer. Here every RPC takes a slot until it
//! finishes (its reply, an error, or the timeout the driver puts on every send). When no slot
//! is free:
//! - a lookup is *parked*: it sends nothing more until a slot frees, so timeouts cannot make
//!   it spray requests (its requests are what it asks for next, not a queue to catch up on);
//! - any other RPC (a STORE of a write, a hand-off, a ping) waits in a FIFO outbox of at most
//!   [`OUTBOX_CAPACITY`]; beyond that it is refused at once, as a failed send that does not
//!   count against the peer (`TransportError::NotSent`).
//!
//! Freed slots go to the outbox first (those RPCs were promised), then to parked lookups in
//! the order they parked. This struct only keeps the books; the driver sends.

use std::collections::VecDeque;

use crate::kad::{NodeId, Request};

use super::state::Purpose;

/// Peer RPCs one node has under way at most. A put stores at k = 20 nodes and a lookup keeps
/// alpha = 3 requests in flight, so this serves a dozen concurrent puts or 80 concurrent gets
/// without waiting; the rest wait their turn.
pub const MAX_RPCS_IN_FLIGHT: usize = 256;
/// RPCs other than lookups' that may wait for a slot; more are refused.
pub const OUTBOX_CAPACITY: usize = 4096;
/// Operations (lookups, writes waiting for their STOREs, joins) one node runs at once. A
/// client request beyond it is refused with RESOURCE_EXHAUSTED rather than queued behind
/// work that already cannot get enough RPC slots.
pub const MAX_OPERATIONS: usize = 512;

/// An RPC the driver will send.
pub(crate) struct Outgoing {
    pub op: Option<u64>,
    pub purpose: Purpose,
    pub addr: String,
    pub to_id: Option<NodeId>,
    pub body: Request,
    /// The span it is sent under (`super::trace`), and its lookup round, if a lookup's.
    pub parent: tracing::Span,
    pub round: Option<u32>,
}

/// What [`Flow::offer`] decided.
pub(crate) enum Admit {
    /// A slot was taken: send it now.
    Send(Outgoing),
    /// It waits in the outbox.
    Queued,
    /// The outbox is full: fail it without sending.
    Refused(Outgoing),
}

/// Counters of the flow control, since the node started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// RPCs under way now.
    pub in_flight: usize,
    /// RPCs waiting in the outbox now.
    pub queued: usize,
    /// Lookups waiting for a slot now.
    pub parked: usize,
    /// RPCs refused because the outbox was full.
    pub refused: u64,
    /// Peer requests dropped unanswered because their sender had stopped waiting.
    pub shed: u64,
}

/// The books of outbound RPCs.
#[derive(Default)]
pub(crate) struct Flow {
    in_flight: usize,
    outbox: VecDeque<Outgoing>,
    parked: VecDeque<u64>,
    refused: u64,
    shed: u64,
}

impl Flow {
    /// Whether a lookup may send a request now (a slot is free and nothing waits before it).
    pub fn lookup_may_send(&self) -> bool {
        self.in_flight < MAX_RPCS_IN_FLIGHT && self.outbox.is_empty()
    }

    /// Takes the slot a lookup's request will use (after [`lookup_may_send`](Self::lookup_may_send)).
    pub fn take_slot(&mut self) {
        self.in_flight += 1;
    }

    /// Parks lookup `op` until a slot frees (once, however often it is parked).
    pub fn park(&mut self, op: u64) {
        if !self.parked.contains(&op) {
            self.parked.push_back(op);
        }
    }

    /// Admits an RPC that is not a lookup's.
    pub fn offer(&mut self, rpc: Outgoing) -> Admit {
        if self.in_flight < MAX_RPCS_IN_FLIGHT && self.outbox.is_empty() {
            self.in_flight += 1;
            Admit::Send(rpc)
        } else if self.outbox.len() < OUTBOX_CAPACITY {
            self.outbox.push_back(rpc);
            Admit::Queued
        } else {
            self.refused += 1;
            Admit::Refused(rpc)
        }
    }

    /// An RPC finished and gave back its slot.
    pub fn finished(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// The next queued RPC to send, if a slot is free (the slot is taken).
    pub fn next_queued(&mut self) -> Option<Outgoing> {
        if self.in_flight >= MAX_RPCS_IN_FLIGHT {
            return None;
        }
        let rpc = self.outbox.pop_front()?;
        self.in_flight += 1;
        Some(rpc)
    }

    /// The next parked lookup to resume, if it may send now.
    pub fn next_parked(&mut self) -> Option<u64> {
        if !self.lookup_may_send() {
            return None;
        }
        self.parked.pop_front()
    }

    /// A peer request was dropped because its sender had stopped waiting.
    pub fn note_shed(&mut self) {
        self.shed += 1;
    }

    pub fn stats(&self) -> FlowStats {
        FlowStats {
            in_flight: self.in_flight,
            queued: self.outbox.len(),
            parked: self.parked.len(),
            refused: self.refused,
            shed: self.shed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ping(n: usize) -> Outgoing {
        Outgoing {
            op: None,
            purpose: Purpose::Oneway,
            addr: format!("n{n}:1"),
            to_id: None,
            body: Request::Ping,
            parent: tracing::Span::none(),
            round: None,
        }
    }

    #[test]
    fn sends_until_the_slots_are_taken_then_queues_then_refuses() {
        let mut f = Flow::default();
        for i in 0..MAX_RPCS_IN_FLIGHT {
            assert!(matches!(f.offer(ping(i)), Admit::Send(_)));
        }
        assert!(!f.lookup_may_send());
        for i in 0..OUTBOX_CAPACITY {
            assert!(matches!(f.offer(ping(i)), Admit::Queued));
        }
        assert!(matches!(f.offer(ping(0)), Admit::Refused(_)));
        let s = f.stats();
        assert_eq!(
            (s.in_flight, s.queued, s.refused),
            (MAX_RPCS_IN_FLIGHT, OUTBOX_CAPACITY, 1)
        );
    }

    #[test]
    fn a_freed_slot_goes_to_the_outbox_before_parked_lookups() {
        let mut f = Flow::default();
        for i in 0..MAX_RPCS_IN_FLIGHT {
            let _ = f.offer(ping(i));
        }
        f.park(7);
        f.park(7);
        f.park(9);
        assert_eq!(f.stats().parked, 2, "parked once each");
        assert!(matches!(f.offer(ping(1000)), Admit::Queued));
        f.finished();
        assert_eq!(f.next_parked(), None, "the outbox goes first");
        let next = f.next_queued().expect("a slot is free");
        assert_eq!(next.addr, "n1000:1");
        assert!(f.next_queued().is_none());
        f.finished();
        assert_eq!(f.next_parked(), Some(7));
        f.take_slot();
        assert_eq!(f.next_parked(), None, "no slot left");
        f.finished();
        assert_eq!(f.next_parked(), Some(9));
        assert_eq!(f.stats().in_flight, MAX_RPCS_IN_FLIGHT - 1);
    }
}
