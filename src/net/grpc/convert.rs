//! Conversions between protobuf messages and domain types, with input validation.
//!
//! Everything that arrives from the wire is checked here: ids and keys must be 20 bytes,
//! addresses non-empty "host:port". Failures become `INVALID_ARGUMENT` with a message naming
//! the field.

use std::fmt::Display;

use prost::Message;

use super::pb;
use crate::kad::{Contact, Envelope, NodeId, Record, Reply, Request, Response};

/// Longest accepted address ("host:port").
pub const MAX_ADDRESS_LEN: usize = 255;
/// Most contacts accepted in one FIND_NODE / FIND_VALUE reply.
pub const MAX_CONTACTS: usize = 1024;

/// A message from the wire that does not make sense.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadMessage(pub String);

impl From<BadMessage> for tonic::Status {
    fn from(e: BadMessage) -> Self {
        tonic::Status::invalid_argument(e.0)
    }
}

// The field names are `Display` so that callers can pass `format_args!` for nested fields: a
// reply's every contact is checked, and naming the field costs only when the check fails.
fn id(field: impl Display, bytes: &[u8]) -> Result<NodeId, BadMessage> {
    NodeId::from_slice(bytes).map_err(|e| BadMessage(format!("{field}: {e}")))
}

fn address(field: impl Display, addr: String) -> Result<String, BadMessage> {
    if addr.is_empty() {
        return Err(BadMessage(format!("{field}: address must not be empty")));
    }
    if addr.len() > MAX_ADDRESS_LEN {
        return Err(BadMessage(format!(
            "{field}: address is longer than {MAX_ADDRESS_LEN} bytes"
        )));
    }
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0) => {
            Ok(addr)
        }
        _ => Err(BadMessage(format!(
            "{field}: address {addr:?} is not host:port"
        ))),
    }
}

pub fn contact_from_pb(field: &str, c: Option<pb::Contact>) -> Result<Contact, BadMessage> {
    let c = c.ok_or_else(|| BadMessage(format!("{field}: missing")))?;
    Ok(Contact {
        id: id(format_args!("{field}.node_id"), &c.node_id)?,
        addr: address(format_args!("{field}.address"), c.address)?.into(),
        incarnation: c.incarnation,
    })
}

pub fn contact_to_pb(c: &Contact) -> pb::Contact {
    pb::Contact {
        node_id: c.id.0.to_vec(),
        address: c.addr.to_string(),
        incarnation: c.incarnation,
    }
}

fn contacts_from_pb(field: &str, v: Vec<pb::Contact>) -> Result<Vec<Contact>, BadMessage> {
    if v.len() > MAX_CONTACTS {
        return Err(BadMessage(format!(
            "{field}: more than {MAX_CONTACTS} contacts"
        )));
    }
    v.into_iter()
        .map(|c| contact_from_pb(field, Some(c)))
        .collect()
}

pub fn record_from_pb(r: Option<pb::Record>) -> Result<Record, BadMessage> {
    let r = r.ok_or_else(|| BadMessage("record: missing".into()))?;
    if r.tombstone && !r.value.is_empty() {
        return Err(BadMessage("record: a tombstone carries no value".into()));
    }
    Ok(Record {
        key: id("record.key", &r.key)?,
        value: r.value,
        version: r.version,
        expires_at_ms: r.expires_at_ms,
        tombstone: r.tombstone,
        publisher: id("record.publisher", &r.publisher)?,
        user_key: r.user_key,
    })
}

pub fn record_to_pb(r: &Record) -> pb::Record {
    pb::Record {
        key: r.key.0.to_vec(),
        value: r.value.clone(),
        version: r.version,
        expires_at_ms: r.expires_at_ms,
        tombstone: r.tombstone,
        publisher: r.publisher.0.to_vec(),
        user_key: r.user_key.clone(),
    }
}

fn header(h: Option<pb::Header>) -> Result<(Contact, String), BadMessage> {
    let h = h.ok_or_else(|| BadMessage("header: missing".into()))?;
    Ok((contact_from_pb("header.sender", h.sender)?, h.network_id))
}

fn header_to_pb(env: &Envelope) -> Option<pb::Header> {
    Some(pb::Header {
        sender: Some(contact_to_pb(&env.sender)),
        network_id: env.network_id.clone(),
    })
}

fn envelope(h: Option<pb::Header>, body: Request) -> Result<Envelope, BadMessage> {
    let (sender, network_id) = header(h)?;
    Ok(Envelope {
        sender,
        network_id,
        body,
    })
}

// Requests, one conversion per RPC.

pub fn ping_from_pb(m: pb::PingRequest) -> Result<Envelope, BadMessage> {
    envelope(m.header, Request::Ping)
}
pub fn store_from_pb(m: pb::StoreRequest) -> Result<Envelope, BadMessage> {
    let record = record_from_pb(m.record)?;
    envelope(
        m.header,
        Request::Store {
            record,
            cached: m.cached,
        },
    )
}
pub fn find_node_from_pb(m: pb::FindNodeRequest) -> Result<Envelope, BadMessage> {
    let target = id("target", &m.target)?;
    envelope(
        m.header,
        Request::FindNode {
            target,
            count: m.count,
        },
    )
}
pub fn find_value_from_pb(m: pb::FindValueRequest) -> Result<Envelope, BadMessage> {
    let key = id("key", &m.key)?;
    envelope(
        m.header,
        Request::FindValue {
            key,
            count: m.count,
            omit_value: m.omit_value,
        },
    )
}

/// A request in wire form: the request an `Exchange` frame carries, or a unary call's.
pub type PbRequest = pb::request_frame::Request;

/// The peer RPC a request is for ("Ping", "Store", "FindNode", "FindValue").
pub fn request_method(r: &PbRequest) -> &'static str {
    match r {
        PbRequest::Ping(_) => "Ping",
        PbRequest::Store(_) => "Store",
        PbRequest::FindNode(_) => "FindNode",
        PbRequest::FindValue(_) => "FindValue",
    }
}

/// Validates a request in wire form, as an `Exchange` frame carries it.
pub fn request_from_pb(r: PbRequest) -> Result<Envelope, BadMessage> {
    match r {
        PbRequest::Ping(m) => ping_from_pb(m),
        PbRequest::Store(m) => store_from_pb(m),
        PbRequest::FindNode(m) => find_node_from_pb(m),
        PbRequest::FindValue(m) => find_value_from_pb(m),
    }
}

pub fn request_to_pb(env: &Envelope) -> PbRequest {
    let header = header_to_pb(env);
    match &env.body {
        Request::Ping => PbRequest::Ping(pb::PingRequest { header }),
        Request::Store { record, cached } => PbRequest::Store(pb::StoreRequest {
            header,
            record: Some(record_to_pb(record)),
            cached: *cached,
        }),
        Request::FindNode { target, count } => PbRequest::FindNode(pb::FindNodeRequest {
            header,
            target: target.0.to_vec(),
            count: *count,
        }),
        Request::FindValue {
            key,
            count,
            omit_value,
        } => PbRequest::FindValue(pb::FindValueRequest {
            header,
            key: key.0.to_vec(),
            count: *count,
            omit_value: *omit_value,
        }),
    }
}

// Replies.

/// A reply in wire form.
#[derive(Clone, Debug)]
pub enum PbReply {
    Ping(pb::PingResponse),
    Store(pb::StoreResponse),
    FindNode(pb::FindNodeResponse),
    FindValue(pb::FindValueResponse),
}

/// The peer RPC a reply answers, named as by [`request_method`].
pub fn reply_method(r: &PbReply) -> &'static str {
    match r {
        PbReply::Ping(_) => "Ping",
        PbReply::Store(_) => "Store",
        PbReply::FindNode(_) => "FindNode",
        PbReply::FindValue(_) => "FindValue",
    }
}

/// What a reply frame carries: the reply, or the failure the unary call would have ended
/// with.
pub fn reply_from_frame(r: pb::reply_frame::Reply) -> Result<PbReply, pb::Failure> {
    use pb::reply_frame::Reply as Frame;
    Ok(match r {
        Frame::Ping(m) => PbReply::Ping(m),
        Frame::Store(m) => PbReply::Store(m),
        Frame::FindNode(m) => PbReply::FindNode(m),
        Frame::FindValue(m) => PbReply::FindValue(m),
        Frame::Failure(f) => return Err(f),
    })
}

pub fn reply_to_pb(r: &Reply) -> PbReply {
    let responder = Some(contact_to_pb(&r.responder));
    match &r.body {
        Response::Pong => PbReply::Ping(pb::PingResponse { responder }),
        Response::Stored {
            stored,
            current_version,
        } => PbReply::Store(pb::StoreResponse {
            responder,
            stored: *stored,
            current_version: *current_version,
        }),
        Response::Nodes { closer } => PbReply::FindNode(pb::FindNodeResponse {
            responder,
            closer: closer.iter().map(contact_to_pb).collect(),
        }),
        Response::Value { record, closer } => PbReply::FindValue(pb::FindValueResponse {
            responder,
            record: record.as_ref().map(record_to_pb),
            closer: closer.iter().map(contact_to_pb).collect(),
        }),
    }
}

pub fn reply_from_pb(r: PbReply) -> Result<Reply, BadMessage> {
    let (responder, body) = match r {
        PbReply::Ping(m) => (m.responder, Response::Pong),
        PbReply::Store(m) => (
            m.responder,
            Response::Stored {
                stored: m.stored,
                current_version: m.current_version,
            },
        ),
        PbReply::FindNode(m) => (
            m.responder,
            Response::Nodes {
                closer: contacts_from_pb("closer", m.closer)?,
            },
        ),
        PbReply::FindValue(m) => {
            let record = m.record.map(|r| record_from_pb(Some(r))).transpose()?;
            (
                m.responder,
                Response::Value {
                    record,
                    closer: contacts_from_pb("closer", m.closer)?,
                },
            )
        }
    };
    Ok(Reply {
        responder: contact_from_pb("responder", responder)?,
        body,
    })
}

fn wire<M: Message + Default>(m: &M) -> Result<M, BadMessage> {
    M::decode(m.encode_to_vec().as_slice()).map_err(|e| BadMessage(format!("decode: {e}")))
}

/// Encodes a request to bytes and decodes it again with full validation (in-memory transport).
pub fn roundtrip_request(env: &Envelope) -> Result<Envelope, BadMessage> {
    request_from_pb(match request_to_pb(env) {
        PbRequest::Ping(m) => PbRequest::Ping(wire(&m)?),
        PbRequest::Store(m) => PbRequest::Store(wire(&m)?),
        PbRequest::FindNode(m) => PbRequest::FindNode(wire(&m)?),
        PbRequest::FindValue(m) => PbRequest::FindValue(wire(&m)?),
    })
}

/// Encodes a reply to bytes and decodes it again with full validation (in-memory transport).
pub fn roundtrip_reply(r: &Reply) -> Result<Reply, BadMessage> {
    let pb = match reply_to_pb(r) {
        PbReply::Ping(m) => PbReply::Ping(wire(&m)?),
        PbReply::Store(m) => PbReply::Store(wire(&m)?),
        PbReply::FindNode(m) => PbReply::FindNode(wire(&m)?),
        PbReply::FindValue(m) => PbReply::FindValue(wire(&m)?),
    };
    reply_from_pb(pb)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(body: Request) -> Envelope {
        Envelope {
            sender: Contact::new(NodeId([1; 20]), "10.0.0.1:50051"),
            network_id: "n".into(),
            body,
        }
    }

    #[test]
    fn requests_round_trip() {
        let record = Record {
            key: NodeId([2; 20]),
            value: b"v".to_vec(),
            version: 3,
            expires_at_ms: 4,
            tombstone: false,
            publisher: NodeId([5; 20]),
            user_key: "k".into(),
        };
        for body in [
            Request::Ping,
            Request::Store {
                record,
                cached: true,
            },
            Request::FindNode {
                target: NodeId([6; 20]),
                count: 30,
            },
            Request::FindValue {
                key: NodeId([7; 20]),
                count: 0,
                omit_value: false,
            },
            Request::FindValue {
                key: NodeId([7; 20]),
                count: 30,
                omit_value: true,
            },
        ] {
            let e = env(body);
            assert_eq!(roundtrip_request(&e).unwrap(), e);
        }
    }

    #[test]
    fn rejects_short_ids_and_bad_addresses() {
        let bad_id = pb::FindNodeRequest {
            header: Some(pb::Header {
                sender: Some(pb::Contact {
                    node_id: vec![1; 19],
                    address: "a:1".into(),
                    incarnation: 0,
                }),
                network_id: "n".into(),
            }),
            target: vec![0; 20],
            count: 0,
        };
        let err = find_node_from_pb(bad_id).unwrap_err();
        assert!(
            err.0.contains("header.sender.node_id") && err.0.contains("got 19"),
            "{err}"
        );

        let bad_target = pb::FindNodeRequest {
            header: Some(pb::Header {
                sender: Some(pb::Contact {
                    node_id: vec![1; 20],
                    address: "a:1".into(),
                    incarnation: 0,
                }),
                network_id: "n".into(),
            }),
            target: vec![0; 3],
            count: 0,
        };
        assert!(
            find_node_from_pb(bad_target)
                .unwrap_err()
                .0
                .starts_with("target")
        );

        for addr in ["", "nohost", ":50051", "host:0", "host:99999"] {
            let m = pb::PingRequest {
                header: Some(pb::Header {
                    sender: Some(pb::Contact {
                        node_id: vec![1; 20],
                        address: addr.into(),
                        incarnation: 0,
                    }),
                    network_id: "n".into(),
                }),
            };
            assert!(ping_from_pb(m).is_err(), "{addr:?} accepted");
        }
        assert_eq!(
            ping_from_pb(pb::PingRequest { header: None })
                .unwrap_err()
                .0,
            "header: missing"
        );
    }
}
