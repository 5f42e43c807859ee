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
//! One stream answers at most [`FRAMES_IN_FLIGHT`] frames at once; beyond that it stops
//! reading, and HTTP/2 flow control holds the sender back. Replies wait in a queue of the
//! same size; a peer that stops reading them stops its own stream. One connection may hold
//! at most [`STREAMS_PER_CONNECTION`] streams open (a sender needs one): without that bound,
//! a peer could open a thousand streams on one connection, read no replies, and have the
//! node hold a thousand full reply queues. When the node shuts down,
//! each stream stops reading, answers the frames it took, and ends, so that the server's
//! graceful shutdown is not held up by streams that would otherwise stay open.
//!
//! # Implementation notes
//! - Replies on one stream are serialised: a large FIND_VALUE reply delays the replies queued
//!   behind it on that stream. Clients send large requests as unary calls
//!   (`super::session::STREAM_REQUEST_MAX_BYTES`), but a reply's size is the server's.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};
use tracing::{Instrument, debug};

use super::admission::AdmissionLayer;
use super::convert::{self, PbReply};
use super::pb::{self, reply_frame, request_frame};
use super::peer_service::{Answer, PeerService};
use super::rate::RateLimitLayer;
use crate::error::rejection_status;
use crate::kad::NodeId;
use crate::metrics::Metrics;

/// Frames one stream answers at once at most (and replies it queues for the peer).
pub const FRAMES_IN_FLIGHT: usize = 64;

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

/// Counts the streams open on each connection, keyed by its remote address.
#[derive(Clone, Default)]
pub(crate) struct OpenStreams(Arc<Mutex<HashMap<SocketAddr, usize>>>);

/// One stream counted in [`OpenStreams`] until it is dropped.
pub(crate) struct Opened {
    open: OpenStreams,
    remote: SocketAddr,
}

impl OpenStreams {
    /// Counts one more stream on the connection from `remote`, or refuses it when that
    /// connection already holds [`STREAMS_PER_CONNECTION`].
    pub fn open(&self, remote: SocketAddr) -> Result<Opened, Status> {
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(remote).or_default();
        if *n >= STREAMS_PER_CONNECTION {
            return Err(Status::resource_exhausted(format!(
                "this connection already holds {STREAMS_PER_CONNECTION} peer streams; send \
                 on those"
            )));
        }
        *n += 1;
        Ok(Opened {
            open: self.clone(),
            remote,
        })
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        let mut open = self.open.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.remote) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.remote);
            }
        }
    }
}

/// The reply frames of one stream, as tonic sends them.
pub type Replies = ReceiverStream<Result<pb::ReplyFrame, Status>>;

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
    let (tx, rx) = mpsc::channel(FRAMES_IN_FLIGHT);
    let stream = Stream {
        service,
        guards,
        source,
        certified,
    };
    tokio::spawn(async move {
        stream.run(frames, tx).await;
        drop(opened);
    });
    ReceiverStream::new(rx)
}

/// One open stream.
struct Stream {
    service: PeerService,
    guards: Arc<FrameGuards>,
    source: Option<IpAddr>,
    certified: Option<NodeId>,
}

impl Stream {
    async fn run(
        self,
        mut frames: Streaming<pb::RequestFrame>,
        tx: mpsc::Sender<Result<pb::ReplyFrame, Status>>,
    ) {
        let mut answering = FuturesUnordered::new();
        let mut stopping = self.guards.stopping.clone();
        let mut reading = !*stopping.borrow_and_update();
        let mut watching = true;
        let mut broken = None;
        while reading || !answering.is_empty() {
            tokio::select! {
                Some(reply) = answering.next(), if !answering.is_empty() => {
                    if tx.send(Ok(reply)).await.is_err() {
                        return; // the peer closed the stream
                    }
                }
                frame = frames.message(), if reading && answering.len() < FRAMES_IN_FLIGHT => {
                    match frame {
                        Ok(Some(frame)) => answering.push(self.answer(frame)),
                        Ok(None) => reading = false,
                        Err(status) => {
                            debug!(error = %status, "peer stream broke");
                            reading = false;
                            broken = Some(status);
                        }
                    }
                }
                changed = stopping.changed(), if reading && watching => match changed {
                    Ok(()) => reading = !*stopping.borrow_and_update(),
                    Err(_) => watching = false,
                },
            }
        }
        if let Some(status) = broken {
            let _ = tx.send(Err(status)).await;
        }
    }

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
                        Err(_) => Err(Status::deadline_exceeded(format!(
                            "not answered within {:?}",
                            guards.request_timeout
                        ))),
                        Ok(Err(_)) => Err(Status::unavailable("node is shutting down")),
                        Ok(Ok(answer)) => answer
                            .map(|reply| convert::reply_to_pb(&reply))
                            .map_err(rejection_status),
                    };
                    drop(permit);
                    result
                }
            };
            let code = result.as_ref().err().map_or(0, |s| s.code() as i32);
            guards.metrics.observe_frame();
            guards.metrics.observe_call(
                SERVICE,
                method,
                &code.to_string(),
                started.elapsed().as_secs_f64(),
            );
            super::trace::record_status(&tracing::Span::current(), code);
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
        Err(status) => reply_frame::Reply::Failure(pb::Failure {
            code: status.code() as i32,
            message: status.message().to_string(),
        }),
    };
    pb::ReplyFrame {
        id,
        reply: Some(reply),
    }
}
