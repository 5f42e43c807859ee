//! The server side of `Exchange`: peer RPCs as frames on one long-lived stream.
//!
//! A unary gRPC call costs a new HTTP/2 stream, a HEADERS frame each way, trailers and a task;
//! a frame on an open stream costs one message. `examples/rpc_cost.rs` measured a FIND_NODE
//! exchange at about a quarter of a unary call's CPU this way. The client side is
//! `super::session`.
//!
//! Every frame passes the checks a unary peer call passes in the tower layers and in
//! `super::peer_service`, in the same order:
//! 1. the per-IP rate limit (`super::rate`): each frame takes a token;
//! 2. admission (`super::admission`): each frame holds one of the peer budget's permits
//!    until it is answered;
//! 3. decoding and validation (`super::convert`): a bad request answers INVALID_ARGUMENT;
//! 4. mTLS: the id a frame's header claims must be the id of the certificate the stream's
//!    connection presented;
//! 5. the driver's inbound queue: full, the frame answers RESOURCE_EXHAUSTED at once;
//! 6. a deadline (`request_timeout`), as the server gives each unary call.
//!
//! Each frame is counted in `rpc_server_call_duration_seconds` (and in
//! `kademlia_peer_frames_total`) and gets a span under the RPC
//! it carries (`kademlia.v1.Kademlia/Store`, ...), continuing the trace context of its
//! `traceparent` field, so metrics and traces read the same whichever way a request came.
//!
//! The stream itself (frames in flight, reply queue, shutdown) is `super::frames`'s; one
//! connection may hold at most [`STREAMS_PER_CONNECTION`] peer streams open (a sender needs
//! one).
//!
//! # Implementation notes
//! - Replies on one stream are serialised: a large FIND_VALUE reply delays the replies queued
//!   behind it on that stream. Clients send large requests as unary calls
//!   (`super::session::STREAM_REQUEST_MAX_BYTES`), but a reply's size is the server's.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tonic::{Status, Streaming};
use tracing::{Instrument, debug};

use super::admission::AdmissionLayer;
use super::convert::{self, PbReply};
use super::frames::{self, OpenStreams, Opened};
use super::pb::{self, reply_frame, request_frame};
use super::peer_service::{Answer, PeerService};
use super::rate::RateLimitLayer;
use crate::error::rejection_status;
use crate::kad::NodeId;
use crate::metrics::Metrics;

/// `Exchange` streams one connection may hold open at once; more are refused with
/// RESOURCE_EXHAUSTED.
pub const STREAMS_PER_CONNECTION: usize = 4;

/// The service name frames are counted and traced under.
const SERVICE: &str = pb::kademlia_server::SERVICE_NAME;

/// What every frame is checked against: the peer service's own rate limit and admission
/// budget, where it is counted, and the server's deadline and shutdown signal.
pub(crate) struct FrameGuards {
    pub rate: RateLimitLayer,
    pub admission: AdmissionLayer,
    pub metrics: Arc<Metrics>,
    /// The serving node (on each frame's span).
    pub node: NodeId,
    pub request_timeout: Duration,
    /// Turns true when the node starts shutting down.
    pub stopping: watch::Receiver<bool>,
    /// Streams open per connection (its remote address).
    pub open: OpenStreams,
}

/// The reply frames of one stream, as tonic sends them.
pub type Replies = frames::Replies<pb::ReplyFrame>;

/// Serves one `Exchange` stream from `source` (certified as node `certified` with mTLS) in a
/// task of its own, counted in its connection's streams while it lasts; returns its replies.
pub(crate) fn serve(
    service: PeerService,
    guards: Arc<FrameGuards>,
    source: Option<IpAddr>,
    certified: Option<NodeId>,
    frames: Streaming<pb::RequestFrame>,
    opened: Option<Opened>,
) -> Replies {
    let stopping = guards.stopping.clone();
    let stream = Stream {
        service,
        guards,
        source,
        certified,
    };
    frames::serve(frames, stopping, opened, move |frame| stream.answer(frame))
}

/// One open stream.
struct Stream {
    service: PeerService,
    guards: Arc<FrameGuards>,
    source: Option<IpAddr>,
    certified: Option<NodeId>,
}

impl Stream {
    /// Checks and answers one frame; the future ends with its reply frame.
    fn answer(&self, frame: pb::RequestFrame) -> BoxFuture<'static, pb::ReplyFrame> {
        let id = frame.id;
        let (name, method) = names(frame.request.as_ref());
        let span = super::trace::call_span(name, SERVICE, method, &self.guards.node);
        crate::telemetry::propagation::continue_from_fields(
            &span,
            &frame.traceparent,
            &frame.tracestate,
        );
        let started = Instant::now();
        let admitted = span.in_scope(|| self.admit(frame.request));
        let guards = self.guards.clone();
        async move {
            let result = match admitted {
                Err(status) => Err(status),
                Ok((answer, permit)) => {
                    let result = match tokio::time::timeout(guards.request_timeout, answer).await {
                        Err(_) => Err(frames::deadline_exceeded(guards.request_timeout)),
                        Ok(Err(_)) => Err(Status::unavailable("node is shutting down")),
                        Ok(Ok(answer)) => answer
                            .map(|reply| convert::reply_to_pb(&reply))
                            .map_err(rejection_status),
                    };
                    drop(permit);
                    result
                }
            };
            frames::record(&guards.metrics, SERVICE, method, started, &result);
            reply_frame(id, result)
        }
        .instrument(span)
        .boxed()
    }

    /// Steps 1 to 5 of the module doc: the driver's answer to come, and the permit the frame
    /// holds until then.
    fn admit(
        &self,
        request: Option<request_frame::Request>,
    ) -> Result<(Answer, OwnedSemaphorePermit), Status> {
        if let Some(ip) = self.source {
            self.guards.rate.check(ip)?;
        }
        let permit = self.guards.admission.try_permit()?;
        let request =
            request.ok_or_else(|| Status::invalid_argument("the frame carries no request"))?;
        let env = convert::request_from_pb(request)
            .inspect_err(|e| debug!(error = %e, "rejected malformed peer frame"))?;
        let answer = self.service.submit(self.source, self.certified, env)?;
        Ok((answer, permit))
    }
}

/// The span name and the method of the RPC a frame carries.
fn names(request: Option<&request_frame::Request>) -> (&'static str, &'static str) {
    match request {
        Some(request_frame::Request::Ping(_)) => ("kademlia.v1.Kademlia/Ping", "Ping"),
        Some(request_frame::Request::Store(_)) => ("kademlia.v1.Kademlia/Store", "Store"),
        Some(request_frame::Request::FindNode(_)) => ("kademlia.v1.Kademlia/FindNode", "FindNode"),
        Some(request_frame::Request::FindValue(_)) => {
            ("kademlia.v1.Kademlia/FindValue", "FindValue")
        }
        None => ("kademlia.v1.Kademlia/Exchange", "Exchange"),
    }
}

/// The reply frame for request `id`.
fn reply_frame(id: u64, result: Result<PbReply, Status>) -> pb::ReplyFrame {
    let reply = match result {
        Ok(PbReply::Ping(m)) => reply_frame::Reply::Ping(m),
        Ok(PbReply::Store(m)) => reply_frame::Reply::Store(m),
        Ok(PbReply::FindNode(m)) => reply_frame::Reply::FindNode(m),
        Ok(PbReply::FindValue(m)) => reply_frame::Reply::FindValue(m),
        Err(status) => reply_frame::Reply::Failure(frames::failure(&status)),
    };
    pb::ReplyFrame {
        id,
        reply: Some(reply),
    }
}
