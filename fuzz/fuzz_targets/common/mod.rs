//! What both fuzz targets read: a peer message given as a kind and its protobuf bytes, through
//! the same decoding and validation as on the wire (`net::grpc::convert`).

use kademlia::kad::{Envelope, Reply};
use kademlia::net::grpc::convert::{self, BadMessage, PbReply};
use kademlia::pb;
use prost::Message;

/// A request of kind `kind % 4` (PING, STORE, FIND_NODE, FIND_VALUE): `None` when the bytes are
/// no protobuf of that type, else what validation makes of them.
pub fn request(kind: u8, bytes: &[u8]) -> Option<Result<Envelope, BadMessage>> {
    Some(match kind % 4 {
        0 => convert::ping_from_pb(pb::PingRequest::decode(bytes).ok()?),
        1 => convert::store_from_pb(pb::StoreRequest::decode(bytes).ok()?),
        2 => convert::find_node_from_pb(pb::FindNodeRequest::decode(bytes).ok()?),
        _ => convert::find_value_from_pb(pb::FindValueRequest::decode(bytes).ok()?),
    })
}

/// A reply of kind `kind % 4`, likewise.
pub fn reply(kind: u8, bytes: &[u8]) -> Option<Result<Reply, BadMessage>> {
    let pb = match kind % 4 {
        0 => PbReply::Ping(pb::PingResponse::decode(bytes).ok()?),
        1 => PbReply::Store(pb::StoreResponse::decode(bytes).ok()?),
        2 => PbReply::FindNode(pb::FindNodeResponse::decode(bytes).ok()?),
        _ => PbReply::FindValue(pb::FindValueResponse::decode(bytes).ok()?),
    };
    Some(convert::reply_from_pb(pb))
}
