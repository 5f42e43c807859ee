//! The `kademlia.v1.Kademlia` service: decodes and validates peer requests, hands them to the
//! node's driver, and encodes its answers. With peer mTLS, a request whose header claims an id
//! other than its client certificate's is refused with UNAUTHENTICATED. When the driver's inbound queue is full the request
//! is refused with RESOURCE_EXHAUSTED instead of waiting for room.
//!
//! The four RPCs also arrive as frames on `Exchange` streams, served by `super::exchange` with
//! the same checks; a service built without [`PeerService::with_streams`] answers `Exchange`
//! with UNIMPLEMENTED, as a node of an older version would.

use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use super::convert::{self, BadMessage, PbReply};
use super::exchange::{self, FrameGuards};
use super::pb;
use crate::error::rejection_status;
use crate::kad::{Envelope, NodeId, Rejection, Reply};
use crate::net::Inbound;

/// Where the driver's answer to one submitted request arrives.
pub(crate) type Answer = oneshot::Receiver<Result<Reply, Rejection>>;

/// Serves peer RPCs for one node.
#[derive(Clone)]
pub struct PeerService {
    inbound: mpsc::Sender<Inbound>,
    /// Peer mTLS: a request must come with a certificate for the id its header claims.
    authenticate: bool,
    /// What frames on `Exchange` streams are checked against; `None`: no streams.
    streams: Option<Arc<FrameGuards>>,
}

impl PeerService {
    pub fn new(inbound: mpsc::Sender<Inbound>, authenticate: bool) -> Self {
        PeerService {
            inbound,
            authenticate,
            streams: None,
        }
    }

    /// The same service serving `Exchange` streams, each frame checked by `guards`.
    pub(crate) fn with_streams(mut self, guards: FrameGuards) -> Self {
        self.streams = Some(Arc::new(guards));
        self
    }

    /// The node id a request's connection is certified for, when peers use mTLS.
    fn certified<T>(&self, req: &Request<T>) -> Result<Option<NodeId>, Status> {
        if self.authenticate {
            certified_id(req).map(Some)
        } else {
            Ok(None)
        }
    }

    async fn call<T>(
        &self,
        req: Request<T>,
        convert: fn(T) -> Result<Envelope, BadMessage>,
    ) -> Result<PbReply, Status> {
        // The IP the connection comes from (TCP's handshake vouches for it).
        let source = req.remote_addr().map(|a| a.ip());
        let certified = self.certified(&req)?;
        let env = convert(req.into_inner())
            .inspect_err(|e| debug!(error = %e, "rejected malformed peer request"))?;
        let answer = self.submit(source, certified, env)?;
        let reply = answer
            .await
            .map_err(|_| Status::unavailable("node is shutting down"))?;
        Ok(convert::reply_to_pb(&reply.map_err(rejection_status)?))
    }

    /// Hands a decoded request to the driver, after checking the id it claims against the
    /// connection's certificate; refuses it at once when the driver's queue is full.
    pub(crate) fn submit(
        &self,
        source: Option<IpAddr>,
        certified: Option<NodeId>,
        env: Envelope,
    ) -> Result<Answer, Status> {
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
        Ok(rx)
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
    type ExchangeStream = exchange::Replies;

    async fn exchange(
        &self,
        req: Request<Streaming<pb::RequestFrame>>,
    ) -> Result<Response<Self::ExchangeStream>, Status> {
        let Some(guards) = self.streams.clone() else {
            return Err(Status::unimplemented(
                "this node serves the peer RPCs as unary calls only",
            ));
        };
        let remote = req.remote_addr();
        let certified = self.certified(&req)?;
        let opened = remote.map(|r| guards.open.open(r)).transpose()?;
        Ok(Response::new(exchange::serve(
            self.clone(),
            guards,
            remote.map(|a| a.ip()),
            certified,
            req.into_inner(),
            opened,
        )))
    }

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
