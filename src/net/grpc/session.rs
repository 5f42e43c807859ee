//! The client side of `Exchange`: one long-lived stream per peer connection that carries this
//! node's peer requests as frames and brings their replies back, matched by id. The server
//! side, and why, is `super::exchange`.
//!
//! A request goes as a unary call instead ([`Unanswered`]) when the peer has no `Exchange` (it
//! answered UNIMPLEMENTED: an older version, during a rolling upgrade), when
//! [`super::exchange::FRAMES_IN_FLIGHT`] requests are already waiting on the stream, when it is
//! larger than [`STREAM_REQUEST_MAX_BYTES`] (so that a large STORE does not hold up the small
//! requests behind it), or when the stream ended before the peer read it (the peer shuts down).
//!
//! A stream ends when the peer ends it, when it fails, or when the transport drops the
//! session (this closes the request side, and the peer then ends its side).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tracing::debug;

use super::exchange::FRAMES_IN_FLIGHT;
use super::pb::kademlia_client::KademliaClient;
use super::pb::{self, reply_frame, request_frame};

/// Requests larger than this (encoded) go as unary calls.
pub const STREAM_REQUEST_MAX_BYTES: usize = 64 * 1024;

/// Why a request got no reply on the stream.
pub(crate) enum Unanswered {
    /// Not sent; the request comes back, to go as a unary call.
    NotSent(request_frame::Request),
    /// Sent, but the peer never read it (it has no streams, or ended the stream first): it
    /// may go again as a unary call.
    Unread,
    /// Sent, then the stream failed with this status.
    Failed(Status),
}

/// How a stream ended.
#[derive(Clone, Debug)]
enum Ended {
    /// The peer answered UNIMPLEMENTED: it serves unary calls only.
    Unsupported,
    /// The peer ended the stream (it is shutting down).
    Closed,
    /// The stream failed with this status.
    Failed(Status),
}

type ReplySender = oneshot::Sender<Result<reply_frame::Reply, Ended>>;

#[derive(Default)]
struct Waiting {
    next_id: u64,
    replies: HashMap<u64, ReplySender>,
    ended: Option<Ended>,
}

fn lock(w: &Mutex<Waiting>) -> std::sync::MutexGuard<'_, Waiting> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

/// One peer stream; dropping it closes the stream.
pub(crate) struct Session {
    requests: mpsc::Sender<pb::RequestFrame>,
    waiting: Arc<Mutex<Waiting>>,
}

impl Session {
    /// Opens a stream on `channel` in a task of its own. Frames can be sent at once: they
    /// travel while the stream is being opened.
    pub fn open(channel: Channel, max_message_bytes: usize) -> Session {
        let (requests, rx) = mpsc::channel(FRAMES_IN_FLIGHT);
        let waiting = Arc::new(Mutex::new(Waiting::default()));
        let client = KademliaClient::new(channel)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        tokio::spawn(read(client, ReceiverStream::new(rx), waiting.clone()));
        Session { requests, waiting }
    }

    /// Whether the peer answered that it has no streams.
    pub fn unsupported(&self) -> bool {
        matches!(lock(&self.waiting).ended, Some(Ended::Unsupported))
    }

    /// Whether the stream has ended (a new one is needed).
    pub fn ended(&self) -> bool {
        lock(&self.waiting).ended.is_some()
    }

    /// Sends `request` as a frame and waits for its reply frame.
    pub async fn send(
        &self,
        request: request_frame::Request,
    ) -> Result<reply_frame::Reply, Unanswered> {
        if request.encoded_len() > STREAM_REQUEST_MAX_BYTES {
            return Err(Unanswered::NotSent(request));
        }
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut w = lock(&self.waiting);
            if w.ended.is_some() || w.replies.len() >= FRAMES_IN_FLIGHT {
                return Err(Unanswered::NotSent(request));
            }
            let id = w.next_id;
            w.next_id += 1;
            w.replies.insert(id, tx);
            id
        };
        // Forgets the reply if this future is dropped (the caller's timeout).
        let _forget = Forget {
            waiting: &self.waiting,
            id,
        };
        let (traceparent, tracestate) =
            crate::telemetry::propagation::fields(&tracing::Span::current());
        let frame = pb::RequestFrame {
            id,
            traceparent,
            tracestate,
            request: Some(request),
        };
        if let Err(e) = self.requests.try_send(frame) {
            let request = e.into_inner().request.expect("set above");
            return Err(Unanswered::NotSent(request));
        }
        match rx.await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(Ended::Failed(status))) => Err(Unanswered::Failed(status)),
            Ok(Err(Ended::Closed | Ended::Unsupported)) | Err(_) => Err(Unanswered::Unread),
        }
    }
}

/// Removes a waiting reply when its sender stops waiting.
struct Forget<'a> {
    waiting: &'a Mutex<Waiting>,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(self.waiting).replies.remove(&self.id);
    }
}

/// Opens the stream, then hands each reply frame to its waiting sender until the stream ends;
/// then fails the senders still waiting.
async fn read(
    mut client: KademliaClient<Channel>,
    requests: ReceiverStream<pb::RequestFrame>,
    waiting: Arc<Mutex<Waiting>>,
) {
    let ended = match client.exchange(requests).await {
        Err(s) if s.code() == Code::Unimplemented => Ended::Unsupported,
        Err(s) => Ended::Failed(s),
        Ok(response) => {
            let mut replies = response.into_inner();
            loop {
                match replies.message().await {
                    Ok(Some(frame)) => {
                        let sender = lock(&waiting).replies.remove(&frame.id);
                        match (sender, frame.reply) {
                            (Some(sender), Some(reply)) => {
                                let _ = sender.send(Ok(reply));
                            }
                            (Some(sender), None) => {
                                let _ = sender.send(Err(Ended::Failed(Status::internal(
                                    "the peer's reply frame carries no reply",
                                ))));
                            }
                            // Its sender gave up waiting.
                            (None, _) => debug!(id = frame.id, "late reply frame"),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn store(value_bytes: usize) -> request_frame::Request {
        request_frame::Request::Store(pb::StoreRequest {
            record: Some(pb::Record {
                value: vec![7; value_bytes],
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn a_request_over_the_frame_limit_comes_back_unsent_and_a_dead_stream_fails() {
        // Nothing listens on port 9 of loopback: the stream fails to open.
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
        let session = Session::open(channel, 8 << 20);
        match session.send(store(STREAM_REQUEST_MAX_BYTES)).await {
            Err(Unanswered::NotSent(request_frame::Request::Store(m))) => {
                assert_eq!(m.record.unwrap().value.len(), STREAM_REQUEST_MAX_BYTES)
            }
            _ => panic!("a request over the limit must come back unsent"),
        }
        // A small request goes on the stream, which fails: its status comes back, or the
        // request unsent if the stream had already ended.
        match session.send(store(10)).await {
            Err(Unanswered::Failed(status)) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}")
            }
            Err(Unanswered::NotSent(_)) => assert!(session.ended()),
            _ => panic!("a stream to a closed port cannot answer"),
        }
        assert!(session.ended() && !session.unsupported());
    }
}
