//! An in-memory transport: every node of a simulated network lives in one process.
//!
//! Each message is encoded to protobuf bytes and decoded again, so simulations exercise the
//! same conversions and validation as the gRPC transport. Nodes can be taken down and links
//! cut (one way or both) to inject failures; names can be registered to stand for several
//! addresses, like a DNS name with many A records.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

use super::grpc::convert;
use super::{Inbound, Transport, TransportError};
use crate::kad::{Envelope, Reply};

#[derive(Default)]
struct State {
    nodes: HashMap<String, mpsc::Sender<Inbound>>,
    cut: HashSet<(String, String)>,
    names: HashMap<String, Vec<String>>,
}

/// The shared "network" that in-memory transports send through.
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    state: Arc<Mutex<State>>,
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

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
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
        let target = {
            let st = self.net.lock();
            if st.cut.contains(&(env.sender.addr.clone(), addr.clone())) {
                None
            } else {
                st.nodes.get(&addr).cloned()
            }
        };
        async move {
            let Some(tx) = target else {
                return Err(TransportError::Unreachable(
                    addr,
                    "connection refused".into(),
                ));
            };
            // Round-trip through the wire format, as the gRPC transport would.
            let env = convert::roundtrip_request(&env)
                .map_err(|e| TransportError::Rejected(addr.clone(), e.to_string()))?;
            let (reply_tx, reply_rx) = oneshot::channel();
            if tx
                .send(Inbound {
                    envelope: env,
                    reply: reply_tx,
                })
                .await
                .is_err()
            {
                return Err(TransportError::Unreachable(addr, "node stopped".into()));
            }
            match reply_rx.await {
                Err(_) => Err(TransportError::Unreachable(addr, "node stopped".into())),
                Ok(Err(rejection)) => Err(TransportError::Rejected(addr, rejection.to_string())),
                Ok(Ok(reply)) => convert::roundtrip_reply(&reply)
                    .map_err(|e| TransportError::Invalid(addr, e.to_string())),
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
