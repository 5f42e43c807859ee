//! The server side of the client `Stream` call: put, get and delete as frames on one
//! long-lived stream, for a client that keeps many requests in flight (`kademlia bench
//! --stream` is one). The stream itself, its bounds and why frames cost less than unary calls
//! are `super::frames`'s.
//!
//! Every frame passes the checks a unary client call passes, in the same order:
//! 1. admission (`super::admission`): each frame holds one of the client budget's permits
//!    (the one unary calls take) until it is answered; none left, it answers
//!    RESOURCE_EXHAUSTED at once;
//! 2. validation: a frame without a request answers INVALID_ARGUMENT; the operation checks
//!    its key and value as the unary call does;
//! 3. a deadline (`request_timeout`), as the server gives each unary call: then
//!    DEADLINE_EXCEEDED.
//!
//! Each frame is counted in `rpc_server_call_duration_seconds` under the call it carries
//! (`Put`, `Get`, `Delete`) and in `kademlia_client_frames_total`, and gets that call's span
//! (`kademlia.v1.Dht/Put`, ...), continuing the trace context of its `traceparent` field, so
//! metrics and traces read the same whichever way a request came. One connection holds at
//! most [`STREAMS_PER_CONNECTION`] client streams.
//!
//! # Implementation notes
//! - Large values should go as unary calls: replies on one stream are serialised, so a large
//!   get's reply delays the replies queued behind it on that stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::watch;
use tonic::{Status, Streaming};
use tracing::Instrument;

use super::admission::AdmissionLayer;
use super::frames::{self, OpenStreams, Opened};
use super::pb::{self, client_reply_frame, client_request_frame};
use crate::metrics::Metrics;
use crate::node::NodeHandle;

/// Client streams one connection may hold open at once; more are refused with
/// RESOURCE_EXHAUSTED.
pub const STREAMS_PER_CONNECTION: usize = 4;

/// The service name frames are counted and traced under.
const SERVICE: &str = pb::dht_server::SERVICE_NAME;

/// What every frame is checked against: the client service's admission budget, where it is
/// counted, and the server's deadline and shutdown signal.
pub(crate) struct ClientFrameGuards {
    pub admission: AdmissionLayer,
    pub metrics: Arc<Metrics>,
    pub request_timeout: Duration,
    /// Turns true when the node starts shutting down.
    pub stopping: watch::Receiver<bool>,
    /// Streams open per connection (its remote address).
    pub open: OpenStreams,
}

impl ClientFrameGuards {
    /// Guards counting open streams against [`STREAMS_PER_CONNECTION`].
    pub fn new(
        admission: AdmissionLayer,
        metrics: Arc<Metrics>,
        request_timeout: Duration,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        ClientFrameGuards {
            admission,
            metrics,
            request_timeout,
            stopping,
            open: OpenStreams::new(STREAMS_PER_CONNECTION, "client"),
        }
    }
}

/// The reply frames of one stream, as tonic sends them.
pub type Replies = frames::Replies<pb::ClientReplyFrame>;

/// Serves one `Stream` for `node` in a task of its own, counted in its connection's streams
/// while it lasts; returns its replies.
pub(crate) fn serve(
    node: NodeHandle,
    guards: Arc<ClientFrameGuards>,
    frames: Streaming<pb::ClientRequestFrame>,
    opened: Option<Opened>,
) -> Replies {
    let stopping = guards.stopping.clone();
    frames::serve(frames, stopping, opened, move |frame| {
        answer(&node, &guards, frame)
    })
}

/// Checks and answers one frame; the future ends with its reply frame.
fn answer(
    node: &NodeHandle,
    guards: &Arc<ClientFrameGuards>,
    frame: pb::ClientRequestFrame,
) -> BoxFuture<'static, pb::ClientReplyFrame> {
    let id = frame.id;
    let (name, method) = names(frame.request.as_ref());
    let span = super::trace::call_span(name, SERVICE, method, &node.id());
    crate::telemetry::propagation::continue_from_fields(
        &span,
        &frame.traceparent,
        &frame.tracestate,
    );
    let started = Instant::now();
    let admitted = guards.admission.try_permit();
    let (node, guards) = (node.clone(), guards.clone());
    async move {
        let result = match (admitted, frame.request) {
            (Err(status), _) => Err(status),
            (Ok(_), None) => Err(Status::invalid_argument("the frame carries no request")),
            (Ok(permit), Some(request)) => {
                let result = tokio::time::timeout(guards.request_timeout, run(&node, request))
                    .await
                    .unwrap_or_else(|_| Err(frames::deadline_exceeded(guards.request_timeout)));
                drop(permit);
                result
            }
        };
        frames::record(&guards.metrics, SERVICE, method, started, &result);
        pb::ClientReplyFrame {
            id,
            reply: Some(match result {
                Ok(reply) => reply,
                Err(status) => client_reply_frame::Reply::Failure(frames::failure(&status)),
            }),
        }
    }
    .instrument(span)
    .boxed()
}

/// Runs the operation a frame carries, as the unary call would.
async fn run(
    node: &NodeHandle,
    request: client_request_frame::Request,
) -> Result<client_reply_frame::Reply, Status> {
    use super::dht_service::{delete, get, put};
    use client_reply_frame::Reply;
    use client_request_frame::Request;
    match request {
        Request::Put(m) => put(node, m).await.map(Reply::Put),
        Request::Get(m) => get(node, m).await.map(Reply::Get),
        Request::Delete(m) => delete(node, m).await.map(Reply::Delete),
    }
}

/// The span name and the method of the call a frame carries.
fn names(request: Option<&client_request_frame::Request>) -> (&'static str, &'static str) {
    use client_request_frame::Request;
    match request {
        Some(Request::Put(_)) => ("kademlia.v1.Dht/Put", "Put"),
        Some(Request::Get(_)) => ("kademlia.v1.Dht/Get", "Get"),
        Some(Request::Delete(_)) => ("kademlia.v1.Dht/Delete", "Delete"),
        None => ("kademlia.v1.Dht/Stream", "Stream"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::memory::MemoryNetwork;
    use crate::node::{NodeConfig, PendingNode};
    use tonic::Code;

    /// A node that is never started: its operations wait for as long as it is kept.
    fn idle_node() -> PendingNode {
        let cfg = NodeConfig::new(crate::kad::NodeId::hash(b"idle"), "idle:1");
        PendingNode::new(cfg, Arc::new(MemoryNetwork::new().transport()))
    }

    fn guards(permits: usize, timeout: Duration) -> Arc<ClientFrameGuards> {
        let (_, stopping) = watch::channel(false);
        Arc::new(ClientFrameGuards::new(
            AdmissionLayer::new(permits, "client"),
            Arc::new(Metrics::new()),
            timeout,
            stopping,
        ))
    }

    fn get(id: u64) -> pb::ClientRequestFrame {
        pb::ClientRequestFrame {
            id,
            request: Some(client_request_frame::Request::Get(pb::GetRequest {
                key: "k".into(),
            })),
            ..Default::default()
        }
    }

    fn failure(reply: pb::ClientReplyFrame) -> (u64, Code, String) {
        match reply.reply {
            Some(client_reply_frame::Reply::Failure(f)) => {
                (reply.id, Code::from_i32(f.code), f.message)
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn each_frame_takes_a_client_permit_until_answered_and_has_a_deadline() {
        let idle = idle_node();
        let node = idle.handle.clone();
        let g = guards(1, Duration::from_millis(100));
        // Two frames at once, one permit: one is shed at once, the other runs out its
        // deadline (the node never answers).
        let (first, second) = tokio::join!(answer(&node, &g, get(1)), answer(&node, &g, get(2)));
        let (first, second) = (failure(first), failure(second));
        let mut codes = [first.1, second.1];
        codes.sort_by_key(|c| *c as i32);
        assert_eq!(codes, [Code::DeadlineExceeded, Code::ResourceExhausted]);
        for (id, code, message) in [first, second] {
            assert!((1..=2).contains(&id));
            match code {
                Code::ResourceExhausted => assert!(message.contains("overloaded"), "{message}"),
                _ => assert!(message.contains("not answered within"), "{message}"),
            }
        }
        // The permit came back with the answer.
        let (_, code, _) = failure(answer(&node, &g, get(3)).await);
        assert_eq!(code, Code::DeadlineExceeded);
    }

    #[tokio::test]
    async fn a_frame_without_a_request_is_invalid() {
        let idle = idle_node();
        let node = idle.handle.clone();
        let g = guards(1, Duration::from_secs(5));
        let frame = pb::ClientRequestFrame {
            id: 9,
            ..Default::default()
        };
        let (id, code, message) = failure(answer(&node, &g, frame).await);
        assert_eq!((id, code), (9, Code::InvalidArgument));
        assert!(message.contains("no request"), "{message}");
    }
}
