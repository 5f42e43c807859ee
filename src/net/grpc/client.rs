//! The gRPC side of [`Transport`]: one reusable HTTP/2 channel per peer address, and on it
//! one `Exchange` stream (`super::session`) that carries the peer requests as frames; requests
//! the stream cannot take, and all requests to peers without streams, go as unary calls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tonic::transport::{Channel, Endpoint};

use super::convert::{self, PbReply, PbRequest};
use super::pb::kademlia_client::KademliaClient;
use super::pb::reply_frame;
use super::session::{Session, Unanswered};
use crate::kad::{Envelope, Reply};
use crate::net::tls::{PeerSeen, PeerTls};
use crate::net::{Transport, TransportError};

/// Channels kept open at most; beyond this the pool is cleared (peers reconnect lazily).
const MAX_CHANNELS: usize = 4096;

/// What the transport keeps for one peer address.
struct Peer {
    channel: Channel,
    /// The node id of the certificate the connection presented (mTLS).
    seen: PeerSeen,
    /// The open stream, once a request went on one.
    session: Option<Arc<Session>>,
    /// The peer answered UNIMPLEMENTED to a stream: unary calls only.
    unary_only: bool,
}

/// Sends peer requests over gRPC.
#[derive(Clone)]
pub struct GrpcTransport {
    channels: Arc<Mutex<HashMap<String, Peer>>>,
    /// Whether requests go as frames on streams (`super::session`) where peers allow.
    streams: bool,
    /// Peer mTLS: channels dial with it, and a reply must come from the id whose certificate
    /// the connection presented.
    tls: Option<Arc<PeerTls>>,
    timeout: Duration,
    default_port: u16,
    /// Largest reply accepted and request sent ([`super::message_limit`]).
    max_message_bytes: usize,
}

impl GrpcTransport {
    /// `timeout` bounds each RPC (connection set-up included); `default_port` completes
    /// bootstrap names given without a port.
    pub fn new(timeout: Duration, default_port: u16) -> Self {
        GrpcTransport {
            channels: Arc::default(),
            streams: true,
            tls: None,
            timeout,
            default_port,
            max_message_bytes: super::message_limit(0),
        }
    }

    /// The same transport for nodes whose values may be `max_value_bytes` long (tonic's
    /// default 4 MiB would leave larger values unreadable from other nodes).
    pub fn with_max_value_bytes(mut self, max_value_bytes: usize) -> Self {
        self.max_message_bytes = super::message_limit(max_value_bytes);
        self
    }

    /// The same transport dialling peers over mTLS (`crate::net::tls`).
    pub fn with_tls(mut self, tls: Arc<PeerTls>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The same transport sending every request as a unary call (`streams` false).
    pub fn with_streams(mut self, streams: bool) -> Self {
        self.streams = streams;
        self
    }

    /// The channel to `addr`, the id its certificate showed, and its open stream (opened
    /// now if needed) unless requests to it go as unary calls.
    fn channel(
        &self,
        addr: &str,
    ) -> Result<(Channel, PeerSeen, Option<Arc<Session>>), TransportError> {
        let mut pool = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if !pool.contains_key(addr) {
            let peer = self.dial(addr)?;
            if pool.len() >= MAX_CHANNELS {
                pool.clear();
            }
            pool.insert(addr.to_string(), peer);
        }
        let peer = pool.get_mut(addr).expect("inserted above");
        if peer.session.as_ref().is_some_and(|s| s.ended()) {
            let session = peer.session.take().expect("checked");
            peer.unary_only = session.unsupported();
        }
        if self.streams && !peer.unary_only && peer.session.is_none() {
            let session = Session::open(peer.channel.clone(), self.max_message_bytes);
            peer.session = Some(Arc::new(session));
        }
        Ok((
            peer.channel.clone(),
            peer.seen.clone(),
            peer.session.clone(),
        ))
    }

    /// A lazy channel to `addr` (it connects on its first request), without a stream yet.
    fn dial(&self, addr: &str) -> Result<Peer, TransportError> {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| TransportError::Unreachable(addr.to_string(), e.to_string()))?
            .connect_timeout(self.timeout)
            .timeout(self.timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(false);
        let seen = PeerSeen::default();
        let channel = match &self.tls {
            Some(tls) => endpoint.connect_with_connector_lazy(tls.connector(seen.clone())),
            None => endpoint.connect_lazy(),
        };
        Ok(Peer {
            channel,
            seen,
            session: None,
            unary_only: false,
        })
    }

    fn forget(&self, addr: &str) {
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(addr);
    }
}

impl GrpcTransport {
    /// With mTLS, a reply counts only when the id it claims is the id of the certificate its
    /// connection presented.
    fn authenticate(
        &self,
        addr: &str,
        seen: &PeerSeen,
        reply: Reply,
    ) -> Result<Reply, TransportError> {
        if self.tls.is_none() {
            return Ok(reply);
        }
        let certified = *seen.lock().unwrap_or_else(|e| e.into_inner());
        match certified {
            Some(id) if id == reply.responder.id => Ok(reply),
            Some(id) => Err(TransportError::Invalid(
                addr.to_string(),
                format!(
                    "the reply claims node {} but the peer's certificate is node {id}'s",
                    reply.responder.id
                ),
            )),
            None => Err(TransportError::Invalid(
                addr.to_string(),
                "the peer presented no certificate".into(),
            )),
        }
    }
}

/// A request carrying the trace context of the span it is sent in (the driver's span for
/// this RPC; see `crate::telemetry::propagation`).
fn traced<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    crate::telemetry::propagation::inject(&tracing::Span::current(), request.metadata_mut());
    request
}

/// The transport error a peer's gRPC status stands for (shared with the in-memory transport,
/// so that both report a peer's refusals alike).
pub(crate) fn status_error(addr: &str, s: tonic::Status) -> TransportError {
    use tonic::Code;
    match s.code() {
        Code::Unavailable | Code::Unknown | Code::Cancelled => {
            TransportError::Unreachable(addr.to_string(), s.message().to_string())
        }
        Code::DeadlineExceeded => TransportError::Timeout(addr.to_string()),
        Code::ResourceExhausted => {
            TransportError::Overloaded(addr.to_string(), s.message().to_string())
        }
        _ => TransportError::Rejected(addr.to_string(), format!("{:?}: {}", s.code(), s.message())),
    }
}

/// The reply a reply frame carries: its status when it is a failure, and an invalid reply
/// when it answers another RPC than `method` ([`convert::request_method`]).
fn from_frame(
    addr: &str,
    method: &'static str,
    reply: reply_frame::Reply,
) -> Result<PbReply, TransportError> {
    let reply = convert::reply_from_frame(reply).map_err(|f| {
        status_error(
            addr,
            tonic::Status::new(tonic::Code::from(f.code), f.message),
        )
    })?;
    let replied = convert::reply_method(&reply);
    if replied != method {
        return Err(TransportError::Invalid(
            addr.to_string(),
            format!("a {method} request answered with a {replied} reply"),
        ));
    }
    Ok(reply)
}

/// Sends `request` as a unary call.
async fn unary(
    mut client: KademliaClient<Channel>,
    request: PbRequest,
) -> Result<PbReply, tonic::Status> {
    Ok(match request {
        PbRequest::Ping(m) => PbReply::Ping(client.ping(traced(m)).await?.into_inner()),
        PbRequest::Store(m) => PbReply::Store(client.store(traced(m)).await?.into_inner()),
        PbRequest::FindNode(m) => {
            PbReply::FindNode(client.find_node(traced(m)).await?.into_inner())
        }
        PbRequest::FindValue(m) => {
            PbReply::FindValue(client.find_value(traced(m)).await?.into_inner())
        }
    })
}

impl Transport for GrpcTransport {
    fn send(&self, addr: &str, env: Envelope) -> BoxFuture<'static, Result<Reply, TransportError>> {
        let addr = addr.to_string();
        let this = self.clone();
        async move {
            let (channel, seen, session) = this.channel(&addr)?;
            let client = KademliaClient::new(channel)
                .max_decoding_message_size(this.max_message_bytes)
                .max_encoding_message_size(this.max_message_bytes);
            let call = async {
                let request = convert::request_to_pb(&env);
                let unary = |request| async {
                    unary(client, request)
                        .await
                        .map_err(|status| status_error(&addr, status))
                };
                let Some(session) = session else {
                    return unary(request).await;
                };
                let method = convert::request_method(&request);
                match session.send(request).await {
                    Ok(reply) => from_frame(&addr, method, reply),
                    Err(Unanswered::NotSent(request)) => unary(request).await,
                    Err(Unanswered::Unread) => unary(convert::request_to_pb(&env)).await,
                    Err(Unanswered::Failed(status)) => Err(status_error(&addr, status)),
                }
            };
            let result = match tokio::time::timeout(this.timeout, call).await {
                Err(_) => Err(TransportError::Timeout(addr.clone())),
                Ok(Err(e)) => Err(e),
                Ok(Ok(reply)) => convert::reply_from_pb(reply)
                    .map_err(|e| TransportError::Invalid(addr.clone(), e.0))
                    .and_then(|reply| this.authenticate(&addr, &seen, reply)),
            };
            if matches!(result, Err(TransportError::Unreachable(..))) {
                this.forget(&addr);
            }
            result
        }
        .boxed()
    }

    fn resolve(&self, name: &str) -> BoxFuture<'static, Result<Vec<String>, TransportError>> {
        let name = name.trim().to_string();
        let with_port = if name
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            name.clone()
        } else {
            format!("{name}:{}", self.default_port)
        };
        async move {
            let addrs = tokio::net::lookup_host(with_port.as_str())
                .await
                .map_err(|e| TransportError::Resolve(name.clone(), e.to_string()))?;
            let mut out: Vec<String> = addrs.map(|a| a.to_string()).collect();
            out.sort();
            out.dedup();
            if out.is_empty() {
                return Err(TransportError::Resolve(name, "no addresses".into()));
            }
            Ok(out)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_frame_for_another_rpc_is_an_invalid_reply_and_a_failure_is_its_status() {
        let store = reply_frame::Reply::Store(Default::default());
        match from_frame("10.0.0.1:1", "Ping", store) {
            Err(TransportError::Invalid(_, why)) => {
                assert_eq!(why, "a Ping request answered with a Store reply")
            }
            other => panic!("{other:?}"),
        }
        let ping = reply_frame::Reply::Ping(Default::default());
        assert!(matches!(
            from_frame("10.0.0.1:1", "Ping", ping),
            Ok(PbReply::Ping(_))
        ));
        let shed = reply_frame::Reply::Failure(super::super::pb::Failure {
            code: tonic::Code::ResourceExhausted as i32,
            message: "node is overloaded".into(),
        });
        assert_eq!(
            from_frame("10.0.0.1:1", "Store", shed).unwrap_err(),
            TransportError::Overloaded("10.0.0.1:1".into(), "node is overloaded".into())
        );
    }
}
