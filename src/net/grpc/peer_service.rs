//! The `kademlia.v1.Kademlia` service: decodes and validates peer requests, hands them to the
//! node's driver, and encodes its answers. With peer mTLS, a request whose header claims an id
//! other than its client certificate's is refused with UNAUTHENTICATED. When the driver's inbound queue is full the request
//! is refused with RESOURCE_EXHAUSTED instead of waiting for room.

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};
use tracing::debug;

use super::convert::{self, BadMessage, PbReply};
use super::pb;
use crate::error::rejection_status;
use crate::kad::Envelope;
use crate::net::Inbound;

/// Serves peer RPCs for one node.
#[derive(Clone)]
pub struct PeerService {
    inbound: mpsc::Sender<Inbound>,
    /// Peer mTLS: a request must come with a certificate for the id its header claims.
    authenticate: bool,
}

impl PeerService {
    pub fn new(inbound: mpsc::Sender<Inbound>, authenticate: bool) -> Self {
        PeerService {
            inbound,
            authenticate,
        }
    }

    async fn call<T>(
        &self,
        req: Request<T>,
        convert: fn(T) -> Result<Envelope, BadMessage>,
    ) -> Result<PbReply, Status> {
        // The IP the connection comes from (TCP's handshake vouches for it).
        let source = req.remote_addr().map(|a| a.ip());
        let certified = if self.authenticate {
            Some(certified_id(&req)?)
        } else {
            None
        };
        let env = convert(req.into_inner())
            .inspect_err(|e| debug!(error = %e, "rejected malformed peer request"))?;
        // The sender, on this call's span (`super::trace`).
        tracing::Span::current()
            .record("kademlia.peer.id", tracing::field::display(&env.sender.id));
        if let Some(id) = certified.filter(|id| *id != env.sender.id) {
            debug!(claimed = %env.sender.id, certified = %id, "refused a request for another node's id");
            return Err(Status::unauthenticated(format!(
                "the request claims node {} but its certificate's key is node {id}'s",
                env.sender.id
            )));
        }
        let (tx, rx) = oneshot::channel();
        let inbound = Inbound {
            envelope: env,
            source,
            reply: tx,
        };
        // A full queue sheds the request at once: the sender tries another peer instead of
        // waiting on a node that is already behind (see `crate::node::flow`).
        self.inbound.try_send(inbound).map_err(|e| match e {
            TrySendError::Full(_) => Status::resource_exhausted(format!(
                "node is overloaded: {} peer requests already queued",
                self.inbound.max_capacity()
            )),
            TrySendError::Closed(_) => Status::unavailable("node is shutting down"),
        })?;
        let reply = rx
            .await
            .map_err(|_| Status::unavailable("node is shutting down"))?;
        Ok(convert::reply_to_pb(&reply.map_err(rejection_status)?))
    }
}

/// The node id the client certificate of `req`'s connection stands for.
fn certified_id<T>(req: &Request<T>) -> Result<crate::kad::NodeId, Status> {
    let certs = req
        .peer_certs()
        .ok_or_else(|| Status::unauthenticated("peer RPCs need a client certificate"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("peer RPCs need a client certificate"))?;
    crate::net::tls::id_of_cert(leaf).map_err(|e| Status::unauthenticated(e.to_string()))
}

fn wrong(kind: &str) -> Status {
    Status::internal(format!(
        "driver answered {kind} with the wrong response type"
    ))
}

#[tonic::async_trait]
impl pb::kademlia_server::Kademlia for PeerService {
    async fn ping(
        &self,
        req: Request<pb::PingRequest>,
    ) -> Result<Response<pb::PingResponse>, Status> {
        match self.call(req, convert::ping_from_pb).await? {
            PbReply::Ping(m) => Ok(Response::new(m)),
            _ => Err(wrong("PING")),
        }
    }

    async fn store(
        &self,
        req: Request<pb::StoreRequest>,
    ) -> Result<Response<pb::StoreResponse>, Status> {
        match self.call(req, convert::store_from_pb).await? {
            PbReply::Store(m) => Ok(Response::new(m)),
            _ => Err(wrong("STORE")),
        }
    }

    async fn find_node(
        &self,
        req: Request<pb::FindNodeRequest>,
    ) -> Result<Response<pb::FindNodeResponse>, Status> {
        match self.call(req, convert::find_node_from_pb).await? {
            PbReply::FindNode(m) => Ok(Response::new(m)),
            _ => Err(wrong("FIND_NODE")),
        }
    }

    async fn find_value(
        &self,
        req: Request<pb::FindValueRequest>,
    ) -> Result<Response<pb::FindValueResponse>, Status> {
        match self.call(req, convert::find_value_from_pb).await? {
            PbReply::FindValue(m) => Ok(Response::new(m)),
            _ => Err(wrong("FIND_VALUE")),
        }
    }
}
