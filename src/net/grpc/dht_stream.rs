//! A client of the `Stream` call (`super::client_stream` serves it): put, get and delete as
//! frames on one long-lived stream to one node, for a program that keeps many requests in
//! flight (`kademlia bench --stream`). Each call answers what the unary call would: its
//! response, or the status the node answered with.
//!
//! A request beyond [`super::frames::FRAMES_IN_FLIGHT`] waiting on the stream is refused with
//! RESOURCE_EXHAUSTED without being sent; once the stream has ended, every call answers
//! UNAVAILABLE and a new stream is needed ([`DhtStream::ended`]).

use tonic::transport::Channel;
use tonic::{Code, Status};

use super::mux::{Mux, ReplyFrame, Unanswered};
use super::pb::dht_client::DhtClient;
use super::pb::{self, client_reply_frame, client_request_frame};

impl ReplyFrame for pb::ClientReplyFrame {
    type Reply = client_reply_frame::Reply;

    fn id(&self) -> u64 {
        self.id
    }

    fn into_reply(self) -> Option<client_reply_frame::Reply> {
        self.reply
    }
}

/// One client stream to a node; dropping it closes the stream.
pub struct DhtStream(Mux<pb::ClientRequestFrame, pb::ClientReplyFrame>);

impl DhtStream {
    /// Opens a stream on `channel` in a task of its own (a tokio runtime must be running).
    /// Requests can be sent at once: they travel while the stream is being opened.
    pub fn open(channel: Channel, max_message_bytes: usize) -> DhtStream {
        let mut client = DhtClient::new(channel)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        DhtStream(Mux::open(move |requests| async move {
            client.stream(requests).await
        }))
    }

    /// Whether the stream has ended (a new one is needed).
    pub fn ended(&self) -> bool {
        self.0.ended()
    }

    /// Sends `request` and waits for its answer.
    pub async fn call(
        &self,
        request: client_request_frame::Request,
    ) -> Result<client_reply_frame::Reply, Status> {
        let (traceparent, tracestate) =
            crate::telemetry::propagation::fields(&tracing::Span::current());
        let frame = |id| pb::ClientRequestFrame {
            id,
            traceparent,
            tracestate,
            request: Some(request),
        };
        match self.0.send(frame).await {
            Ok(client_reply_frame::Reply::Failure(f)) => {
                Err(Status::new(Code::from_i32(f.code), f.message))
            }
            Ok(reply) => Ok(reply),
            Err(Unanswered::NotSent(_)) if self.0.ended() => {
                Err(Status::unavailable("the stream has ended; open a new one"))
            }
            Err(Unanswered::NotSent(_)) => Err(Status::resource_exhausted(format!(
                "{} requests already wait on this stream",
                super::frames::FRAMES_IN_FLIGHT
            ))),
            Err(Unanswered::Unread) => Err(Status::unavailable(
                "the node ended the stream before reading the request (it is shutting down, \
                 or serves unary calls only)",
            )),
            Err(Unanswered::Failed(status)) => Err(status),
        }
    }

    /// Put, as the unary `Put`.
    pub async fn put(&self, m: pb::PutRequest) -> Result<pb::PutResponse, Status> {
        match self.call(client_request_frame::Request::Put(m)).await? {
            client_reply_frame::Reply::Put(r) => Ok(r),
            _ => Err(mismatched("Put")),
        }
    }

    /// Get, as the unary `Get`.
    pub async fn get(&self, m: pb::GetRequest) -> Result<pb::GetResponse, Status> {
        match self.call(client_request_frame::Request::Get(m)).await? {
            client_reply_frame::Reply::Get(r) => Ok(r),
            _ => Err(mismatched("Get")),
        }
    }

    /// Delete, as the unary `Delete`.
    pub async fn delete(&self, m: pb::DeleteRequest) -> Result<pb::DeleteResponse, Status> {
        match self.call(client_request_frame::Request::Delete(m)).await? {
            client_reply_frame::Reply::Delete(r) => Ok(r),
            _ => Err(mismatched("Delete")),
        }
    }
}

fn mismatched(call: &str) -> Status {
    Status::internal(format!(
        "the node answered a {call} frame with another call's reply"
    ))
}
