//! An in-memory transport: every node of a simulated network lives in one process.
//!
//! Each message is encoded to protobuf bytes and decoded again, so simulations exercise the
//! same conversions and validation as the gRPC transport (a large simulation can turn that
//! off: [`MemoryNetwork::set_wire_roundtrip`]). Nodes can be taken down and links
//! cut (one way or both) to inject failures; names can be registered to stand for several
//! addresses, like a DNS name with many A records. Nodes can be made slow (each request costs
//! its receiver a service time, as on a CPU-starved machine), STOREs to some nodes can be
//! delayed (a slow disk, a far-away replica), and the network counts the
//! messages it carries, so that tests can bound a network's traffic.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::grpc::client::status_error;
use super::grpc::convert;
use super::{Inbound, Transport, TransportError};
use crate::error::rejection_status;
use crate::kad::{Envelope, Reply, Request};

/// Requests a slow node lets wait for it at most (see [`MemoryNetwork::set_service_time`]);
/// more are refused as overloaded, as a full accept queue would.
pub const SLOW_BACKLOG: u32 = 1024;

#[derive(Default)]
struct State {
    nodes: HashMap<String, mpsc::Sender<Inbound>>,
    cut: HashSet<(String, String)>,
    names: HashMap<String, Vec<String>>,
    /// Time every request costs its receiver (zero: free).
    service_time: Duration,
    /// When each node is done with the requests already sent to it.
    busy_until: HashMap<String, Instant>,
    /// STOREs to these nodes reach them this much later (a slow disk, a far-away replica).
    store_delay: HashMap<String, Duration>,
    /// Messages are handed over as they are, not encoded to protobuf and decoded again.
    skip_wire: bool,
}

impl State {
    /// The moment a request sent to `addr` at `now` reaches it: `Ok(None)` at once when nodes
    /// cost nothing, `Err(backlog)` when the node already has [`SLOW_BACKLOG`] waiting.
    fn reserve(&mut self, addr: &str, now: Instant) -> Result<Option<Instant>, u32> {
        if self.service_time.is_zero() {
            return Ok(None);
        }
        let free_at = self.busy_until.get(addr).map_or(now, |t| (*t).max(now));
        let backlog = (free_at - now).as_nanos() / self.service_time.as_nanos().max(1);
        if backlog >= u128::from(SLOW_BACKLOG) {
            return Err(backlog as u32);
        }
        let done = free_at + self.service_time;
        self.busy_until.insert(addr.to_string(), done);
        Ok(Some(done))
    }
}

/// Message counters of a [`MemoryNetwork`], for tests that bound a network's traffic.
#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    in_flight: AtomicU64,
    find_node: AtomicU64,
    store: AtomicU64,
}

/// A snapshot of a [`MemoryNetwork`]'s counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Requests handed to the network (including those refused by a cut or a missing node).
    pub sent: u64,
    /// Requests sent whose reply (or failure) has not come back yet.
    pub in_flight: u64,
    /// FIND_NODE requests among `sent` (lookups for joins, refreshes and replication).
    pub find_node: u64,
    /// STORE requests among `sent`.
    pub store: u64,
}

/// The shared "network" that in-memory transports send through.
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    state: Arc<Mutex<State>>,
    counters: Arc<Counters>,
}

impl MemoryNetwork {
    pub fn new() -> Self {
        Self::default()
    }

    /// A transport handle for nodes on this network.
    pub fn transport(&self) -> MemoryTransport {
        MemoryTransport { net: self.clone() }
    }

    /// Makes `addr` reachable, delivering its requests to `inbound`.
    pub fn attach(&self, addr: &str, inbound: mpsc::Sender<Inbound>) {
        self.lock().nodes.insert(addr.to_string(), inbound);
    }

    /// Takes `addr` off the network (as if its process died).
    pub fn detach(&self, addr: &str) {
        self.lock().nodes.remove(addr);
    }

    /// Drops every message from `from` to `to`.
    pub fn cut(&self, from: &str, to: &str) {
        self.lock().cut.insert((from.to_string(), to.to_string()));
    }

    /// Restores the link from `from` to `to`.
    pub fn heal(&self, from: &str, to: &str) {
        self.lock().cut.remove(&(from.to_string(), to.to_string()));
    }

    /// Registers a name that resolves to `addrs` (like a DNS name with many A records).
    pub fn register_name(&self, name: &str, addrs: Vec<String>) {
        self.lock().names.insert(name.to_string(), addrs);
    }

    /// Makes every node slow: each request costs its receiver `per_request`, one request at a
    /// time, like a node starved of CPU. A request waits for those sent before it (also when
    /// its sender has stopped waiting: the receiver still pays for it); at most
    /// [`SLOW_BACKLOG`] wait, more are refused as overloaded. `Duration::ZERO` ends it.
    pub fn set_service_time(&self, per_request: Duration) {
        let mut st = self.lock();
        st.service_time = per_request;
        if per_request.is_zero() {
            st.busy_until.clear();
        }
    }

    /// Delays every STORE sent to `addr` by `delay` before it reaches it (other requests are
    /// not delayed): a replica with a slow disk, or far away. `Duration::ZERO` ends it.
    pub fn delay_stores(&self, addr: &str, delay: Duration) {
        let mut st = self.lock();
        if delay.is_zero() {
            st.store_delay.remove(addr);
        } else {
            st.store_delay.insert(addr.to_string(), delay);
        }
    }

    /// Whether each message is encoded to protobuf and decoded again (on by default); off,
    /// messages are handed over as they are. The conversions cost a simulation of thousands of nodes
    /// about a third of its time and allocations, and test nothing new after the first few
    /// thousand messages: their own tests, the fuzz targets and the gRPC tests cover them.
    pub fn set_wire_roundtrip(&self, on: bool) {
        self.lock().skip_wire = !on;
    }

    /// Message counts so far.
    pub fn stats(&self) -> NetStats {
        let c = &self.counters;
        NetStats {
            sent: c.sent.load(Ordering::Relaxed),
            in_flight: c.in_flight.load(Ordering::Relaxed),
            find_node: c.find_node.load(Ordering::Relaxed),
            store: c.store.load(Ordering::Relaxed),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Counts one request in flight until dropped (answered, failed or abandoned by its sender).
struct InFlight(Arc<Counters>);

impl InFlight {
    fn new(counters: Arc<Counters>) -> Self {
        counters.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(counters)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One node's view of a [`MemoryNetwork`].
#[derive(Clone)]
pub struct MemoryTransport {
    net: MemoryNetwork,
}

impl Transport for MemoryTransport {
    fn send(&self, addr: &str, env: Envelope) -> BoxFuture<'static, Result<Reply, TransportError>> {
        let addr = addr.to_string();
        let (target, slot, delay, wire) = {
            let mut st = self.net.lock();
            let delay = match env.body {
                Request::Store { .. } if !st.store_delay.is_empty() => {
                    st.store_delay.get(&addr).copied()
                }
                _ => None,
            };
            let wire = !st.skip_wire;
            if !st.cut.is_empty()
                && st
                    .cut
                    .contains(&(env.sender.addr.to_string(), addr.clone()))
            {
                (None, Ok(None), delay, wire)
            } else {
                let target = st.nodes.get(&addr).cloned();
                let slot = st.reserve(&addr, Instant::now());
                (target, slot, delay, wire)
            }
        };
        let counters = self.net.counters.clone();
        counters.sent.fetch_add(1, Ordering::Relaxed);
        match env.body {
            Request::FindNode { .. } => counters.find_node.fetch_add(1, Ordering::Relaxed),
            Request::Store { .. } => counters.store.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        let in_flight = InFlight::new(counters.clone());
        async move {
            let _in_flight = in_flight;
            let Some(tx) = target else {
                return Err(TransportError::Unreachable(
                    addr,
                    "connection refused".into(),
                ));
            };
            match slot {
                Err(backlog) => {
                    let why = format!("{backlog} requests waiting for a slow node");
                    return Err(TransportError::Overloaded(addr, why));
                }
                Ok(Some(at)) => tokio::time::sleep_until(at).await,
                Ok(None) => {}
            }
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            // Round-trip through the wire format, as the gRPC transport would.
            let env = if wire {
                convert::roundtrip_request(&env)
                    .map_err(|e| TransportError::Rejected(addr.clone(), e.to_string()))?
            } else {
                env
            };
            let (reply_tx, reply_rx) = oneshot::channel();
            let inbound = Inbound {
                envelope: env,
                source: None,
                reply: reply_tx,
            };
            // As the gRPC peer service: a full queue refuses at once.
            match tx.try_send(inbound) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    let why = "inbound queue full".to_string();
                    return Err(TransportError::Overloaded(addr, why));
                }
                Err(TrySendError::Closed(_)) => {
                    return Err(TransportError::Unreachable(addr, "node stopped".into()));
                }
            }
            match reply_rx.await {
                Err(_) => Err(TransportError::Unreachable(addr, "node stopped".into())),
                Ok(Err(rejection)) => Err(status_error(&addr, rejection_status(rejection))),
                Ok(Ok(reply)) if wire => convert::roundtrip_reply(&reply)
                    .map_err(|e| TransportError::Invalid(addr, e.to_string())),
                Ok(Ok(reply)) => Ok(reply),
            }
        }
        .boxed()
    }

    fn resolve(&self, name: &str) -> BoxFuture<'static, Result<Vec<String>, TransportError>> {
        let st = self.net.lock();
        let result = if let Some(addrs) = st.names.get(name) {
            Ok(addrs.clone())
        } else if st.nodes.contains_key(name) || name.contains(':') {
            Ok(vec![name.to_string()])
        } else {
            Err(TransportError::Resolve(
                name.to_string(),
                "no such host".into(),
            ))
        };
        futures::future::ready(result).boxed()
    }
}
