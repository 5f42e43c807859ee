//! Requests as frames on one long-lived bidirectional stream, the client's half: sends each
//! request as a frame with an id of its own and hands the reply frame with the same id back
//! to the one waiting for it. The peer session (`super::session`) and the client stream
//! ([`super::dht_stream`]) are both this; the server's half is `super::frames`.
//!
//! At most [`FRAMES_IN_FLIGHT`] requests wait on one stream (the server answers no more at
//! once); a request beyond that comes back unsent. A stream ends when the server ends it,
//! when it fails, or when the [`Mux`] is dropped (this closes the request side, and the
//! server then ends its side); the requests still waiting then fail.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};
use tracing::debug;

use super::frames::FRAMES_IN_FLIGHT;

/// A reply frame: the id of the request it answers, and the answer it carries.
pub trait ReplyFrame: Send + 'static {
    /// What the frame carries.
    type Reply: Send + 'static;
    /// The id of the request frame it answers.
    fn id(&self) -> u64;
    /// Its answer; `None` when the frame carries none (a broken server).
    fn into_reply(self) -> Option<Self::Reply>;
}

/// Why a request got no reply on the stream.
#[derive(Debug)]
pub enum Unanswered<Q> {
    /// Not sent (the stream has ended, or too many requests wait on it); the frame comes
    /// back.
    NotSent(Q),
    /// Sent, but the server never read it (it has no such streams, or ended the stream
    /// first): it may go again.
    Unread,
    /// Sent, then the stream failed with this status.
    Failed(Status),
}

/// How a stream ended.
#[derive(Clone, Debug)]
enum Ended {
    /// The server answered UNIMPLEMENTED: it has no such streams.
    Unsupported,
    /// The server ended the stream (it is shutting down).
    Closed,
    /// The stream failed with this status.
    Failed(Status),
}

type ReplySender<R> = oneshot::Sender<Result<R, Ended>>;

struct Waiting<R> {
    next_id: u64,
    replies: HashMap<u64, ReplySender<R>>,
    ended: Option<Ended>,
}

fn lock<R>(w: &Mutex<Waiting<R>>) -> std::sync::MutexGuard<'_, Waiting<R>> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

/// One stream of request frames `Q` and reply frames `A`; dropping it closes the stream.
pub struct Mux<Q, A: ReplyFrame> {
    requests: mpsc::Sender<Q>,
    waiting: Arc<Mutex<Waiting<A::Reply>>>,
}

impl<Q: Send + 'static, A: ReplyFrame> Mux<Q, A> {
    /// Opens a stream with `open` (the generated client's streaming call, given the request
    /// frames to send) in a task of its own. Frames can be sent at once: they travel while
    /// the stream is being opened.
    pub fn open<O, F>(open: O) -> Self
    where
        O: FnOnce(ReceiverStream<Q>) -> F + Send + 'static,
        F: Future<Output = Result<tonic::Response<Streaming<A>>, Status>> + Send + 'static,
    {
        let (requests, rx) = mpsc::channel(FRAMES_IN_FLIGHT);
        let waiting = Arc::new(Mutex::new(Waiting {
            next_id: 0,
            replies: HashMap::new(),
            ended: None,
        }));
        tokio::spawn(read(open(ReceiverStream::new(rx)), waiting.clone()));
        Mux { requests, waiting }
    }

    /// Whether the server answered that it has no such streams.
    pub fn unsupported(&self) -> bool {
        matches!(lock(&self.waiting).ended, Some(Ended::Unsupported))
    }

    /// Whether the stream has ended (a new one is needed).
    pub fn ended(&self) -> bool {
        lock(&self.waiting).ended.is_some()
    }

    /// Sends the frame `frame(id)` makes and waits for the reply to it.
    pub async fn send(&self, frame: impl FnOnce(u64) -> Q) -> Result<A::Reply, Unanswered<Q>> {
        let (tx, rx) = oneshot::channel();
        let (id, frame) = {
            let mut w = lock(&self.waiting);
            let id = w.next_id;
            let frame = frame(id);
            if w.ended.is_some() || w.replies.len() >= FRAMES_IN_FLIGHT {
                return Err(Unanswered::NotSent(frame));
            }
            w.next_id += 1;
            w.replies.insert(id, tx);
            (id, frame)
        };
        // Forgets the reply if this future is dropped (the caller's timeout).
        let _forget = Forget {
            waiting: &self.waiting,
            id,
        };
        if let Err(e) = self.requests.try_send(frame) {
            return Err(Unanswered::NotSent(e.into_inner()));
        }
        match rx.await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(Ended::Failed(status))) => Err(Unanswered::Failed(status)),
            Ok(Err(Ended::Closed | Ended::Unsupported)) | Err(_) => Err(Unanswered::Unread),
        }
    }
}

/// Removes a waiting reply when its sender stops waiting.
struct Forget<'a, R> {
    waiting: &'a Mutex<Waiting<R>>,
    id: u64,
}

impl<R> Drop for Forget<'_, R> {
    fn drop(&mut self) {
        lock(self.waiting).replies.remove(&self.id);
    }
}

/// Waits for the stream to open, then hands each reply frame to its waiting sender until the
/// stream ends; then fails the senders still waiting.
async fn read<A: ReplyFrame>(
    opened: impl Future<Output = Result<tonic::Response<Streaming<A>>, Status>>,
    waiting: Arc<Mutex<Waiting<A::Reply>>>,
) {
    let ended = match opened.await {
        Err(s) if s.code() == Code::Unimplemented => Ended::Unsupported,
        Err(s) => Ended::Failed(s),
        Ok(response) => {
            let mut replies = response.into_inner();
            loop {
                match replies.message().await {
                    Ok(Some(frame)) => {
                        let id = frame.id();
                        let sender = lock(&waiting).replies.remove(&id);
                        match (sender, frame.into_reply()) {
                            (Some(sender), Some(reply)) => {
                                let _ = sender.send(Ok(reply));
                            }
                            (Some(sender), None) => {
                                let _ = sender.send(Err(Ended::Failed(Status::internal(
                                    "the server's reply frame carries no reply",
                                ))));
                            }
                            // Its sender gave up waiting.
                            (None, _) => debug!(id, "late reply frame"),
                        }
                    }
                    Ok(None) => break Ended::Closed,
                    Err(s) => break Ended::Failed(s),
                }
            }
        }
    };
    let left = {
        let mut w = lock(&waiting);
        w.ended = Some(ended.clone());
        std::mem::take(&mut w.replies)
    };
    for (_, sender) in left {
        let _ = sender.send(Err(ended.clone()));
    }
}
