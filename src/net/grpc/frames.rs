//! Requests as frames on one long-lived bidirectional stream, the server's half: what the
//! peer `Exchange` stream (`super::exchange`) and the client `Stream` call
//! (`super::client_stream`) share. Each request frame carries an id chosen by the sender; the
//! reply frame with the same id answers it, in whatever order the answers come.
//!
//! Why: a unary gRPC call costs a new HTTP/2 stream, a HEADERS frame each way, trailers and a
//! task; a frame on an open stream costs one message. `examples/rpc_cost.rs` measured an
//! exchange at about a quarter of a unary call's CPU this way.
//!
//! The bounds every such stream keeps:
//! - it answers at most [`FRAMES_IN_FLIGHT`] frames at once; beyond that it stops reading,
//!   and HTTP/2 flow control holds the sender back;
//! - replies wait in a queue of the same size; a sender that stops reading them stops its
//!   own stream;
//! - one connection holds a bounded number of streams of a kind open ([`OpenStreams`]):
//!   without that, a sender could open a thousand streams on one connection, read no
//!   replies, and have the node hold a thousand full reply queues;
//! - when the node shuts down, each stream stops reading, answers the frames it took, and
//!   ends, so that the server's graceful shutdown is not held up by streams that would
//!   otherwise stay open.
//!
//! What each frame is checked against (rate limits, admission, deadlines) is the caller's:
//! the `answer` function [`serve`] is given.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};
use tracing::debug;

use super::pb;
use crate::metrics::Metrics;

/// Frames one stream answers at once at most (and replies it queues for the sender).
pub const FRAMES_IN_FLIGHT: usize = 64;

/// Counts the streams of one kind open on each connection, keyed by its remote address.
#[derive(Clone)]
pub(crate) struct OpenStreams {
    open: Arc<Mutex<HashMap<SocketAddr, usize>>>,
    limit: usize,
    what: &'static str,
}

/// One stream counted in [`OpenStreams`] until it is dropped.
pub(crate) struct Opened {
    open: OpenStreams,
    remote: SocketAddr,
}

impl OpenStreams {
    /// At most `limit` streams on one connection; `what` names them in the refusal.
    pub fn new(limit: usize, what: &'static str) -> Self {
        OpenStreams {
            open: Arc::default(),
            limit,
            what,
        }
    }

    /// Counts one more stream on the connection from `remote`, or refuses it with
    /// RESOURCE_EXHAUSTED when that connection already holds the limit.
    pub fn open(&self, remote: SocketAddr) -> Result<Opened, Status> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(remote).or_default();
        if *n >= self.limit {
            return Err(Status::resource_exhausted(format!(
                "this connection already holds {} {} streams; send on those",
                self.limit, self.what
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
        let mut open = self.open.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.remote) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.remote);
            }
        }
    }
}

/// The reply frames of one stream, as tonic sends them.
pub type Replies<R> = ReceiverStream<Result<R, Status>>;

/// Serves one stream of request frames in a task of its own, counted in its connection's
/// streams (`opened`) while it lasts: each frame read becomes the future `answer` makes of
/// it, and what that future ends with is sent back. Stops reading when `stopping` turns true.
pub(crate) fn serve<F, R, A>(
    frames: Streaming<F>,
    stopping: watch::Receiver<bool>,
    opened: Option<Opened>,
    answer: A,
) -> Replies<R>
where
    F: Send + 'static,
    R: Send + 'static,
    A: FnMut(F) -> BoxFuture<'static, R> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(FRAMES_IN_FLIGHT);
    tokio::spawn(async move {
        pump(frames, tx, stopping, answer).await;
        drop(opened);
    });
    ReceiverStream::new(rx)
}

/// Reads frames (at most [`FRAMES_IN_FLIGHT`] answered at once) and sends their answers back
/// until the sender ends the stream, it breaks, or the node stops; then answers what it took.
async fn pump<F, R, A>(
    mut frames: Streaming<F>,
    tx: mpsc::Sender<Result<R, Status>>,
    mut stopping: watch::Receiver<bool>,
    mut answer: A,
) where
    A: FnMut(F) -> BoxFuture<'static, R>,
{
    let mut answering = FuturesUnordered::new();
    let mut reading = !*stopping.borrow_and_update();
    let mut watching = true;
    let mut broken = None;
    while reading || !answering.is_empty() {
        tokio::select! {
            Some(reply) = answering.next(), if !answering.is_empty() => {
                if tx.send(Ok(reply)).await.is_err() {
                    return; // the sender closed the stream
                }
            }
            frame = frames.message(), if reading && answering.len() < FRAMES_IN_FLIGHT => {
                match frame {
                    Ok(Some(frame)) => answering.push(answer(frame)),
                    Ok(None) => reading = false,
                    Err(status) => {
                        debug!(error = %status, "request stream broke");
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

/// The status of a frame not answered within the server's request deadline.
pub(crate) fn deadline_exceeded(timeout: Duration) -> Status {
    Status::deadline_exceeded(format!("not answered within {timeout:?}"))
}

/// A failed frame's answer: the status the unary call would have ended with.
pub(crate) fn failure(status: &Status) -> pb::Failure {
    pb::Failure {
        code: status.code() as i32,
        message: status.message().to_string(),
    }
}

/// Counts a frame of `service` carrying `method`, answered with `result` after it was read at
/// `started`, as a frame and as the call it carries, and records its status on the current
/// span (the frame's).
pub(crate) fn record<T>(
    metrics: &Metrics,
    service: &'static str,
    method: &str,
    started: Instant,
    result: &Result<T, Status>,
) {
    let code = result.as_ref().err().map_or(0, |s| s.code() as i32);
    metrics.observe_frame(service);
    metrics.observe_call(
        service,
        method,
        &code.to_string(),
        started.elapsed().as_secs_f64(),
    );
    super::trace::record_status(&tracing::Span::current(), code);
}
