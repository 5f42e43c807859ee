//! The client side of `Exchange`: one long-lived stream per peer connection that carries this
//! node's peer requests as frames and brings their replies back, matched by id. The server
//! side, and why, is `super::exchange`.
//!
//! A request goes as a unary call instead ([`Unanswered`]) when the peer has no `Exchange` (it
//! answered UNIMPLEMENTED: an older version, during a rolling upgrade), when
//! [`super::frames::FRAMES_IN_FLIGHT`] requests are already waiting on the stream, when it is
//! larger than [`STREAM_REQUEST_MAX_BYTES`] (so that a large STORE does not hold up the small
//! requests behind it), or when the stream ended before the peer read it (the peer shuts down).
//!
//! The stream itself (ids, waiting replies, how it ends) is `super::mux`'s; it ends when the
//! peer ends it, when it fails, or when the transport drops the session.

use tonic::Status;
use tonic::transport::Channel;

use super::mux::{self, Mux, ReplyFrame};
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

impl ReplyFrame for pb::ReplyFrame {
    type Reply = reply_frame::Reply;

    fn id(&self) -> u64 {
        self.id
    }

    fn into_reply(self) -> Option<reply_frame::Reply> {
        self.reply
    }
}

/// One peer stream; dropping it closes the stream.
pub(crate) struct Session(Mux<pb::RequestFrame, pb::ReplyFrame>);

impl Session {
    /// Opens a stream on `channel` in a task of its own. Frames can be sent at once: they
    /// travel while the stream is being opened.
    pub fn open(channel: Channel, max_message_bytes: usize) -> Session {
        let mut client = KademliaClient::new(channel)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        Session(Mux::open(move |requests| async move {
            client.exchange(requests).await
        }))
    }

    /// Whether the peer answered that it has no streams.
    pub fn unsupported(&self) -> bool {
        self.0.unsupported()
    }

    /// Whether the stream has ended (a new one is needed).
    pub fn ended(&self) -> bool {
        self.0.ended()
    }

    /// Sends `request` as a frame and waits for its reply frame.
    pub async fn send(
        &self,
        request: request_frame::Request,
    ) -> Result<reply_frame::Reply, Unanswered> {
        if request.encoded_len() > STREAM_REQUEST_MAX_BYTES {
            return Err(Unanswered::NotSent(request));
        }
        let (traceparent, tracestate) =
            crate::telemetry::propagation::fields(&tracing::Span::current());
        let frame = |id| pb::RequestFrame {
            id,
            traceparent,
            tracestate,
            request: Some(request),
        };
        self.0.send(frame).await.map_err(|e| match e {
            mux::Unanswered::NotSent(frame) => {
                Unanswered::NotSent(frame.request.expect("set above"))
            }
            mux::Unanswered::Unread => Unanswered::Unread,
            mux::Unanswered::Failed(status) => Unanswered::Failed(status),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

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
