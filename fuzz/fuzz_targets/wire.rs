//! Fuzz target: the wire conversions of the four peer RPCs, requests and replies.
//!
//! The first byte picks a message type, the rest is its protobuf encoding as a peer might send
//! it. Whatever the bytes, decoding and validation (`net::grpc::convert`) must not panic, and
//! a message they accept must survive encoding and validating again unchanged: a node never
//! sends what a node refuses, and never reads back something else than what was sent.

#![no_main]

use kademlia::net::grpc::convert::{self, PbReply};
use kademlia::pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % 8 {
        0..=3 => {
            let env = match kind % 8 {
                0 => pb::PingRequest::decode(bytes)
                    .ok()
                    .map(convert::ping_from_pb),
                1 => pb::StoreRequest::decode(bytes)
                    .ok()
                    .map(convert::store_from_pb),
                2 => pb::FindNodeRequest::decode(bytes)
                    .ok()
                    .map(convert::find_node_from_pb),
                _ => pb::FindValueRequest::decode(bytes)
                    .ok()
                    .map(convert::find_value_from_pb),
            };
            if let Some(Ok(env)) = env {
                assert_eq!(convert::roundtrip_request(&env), Ok(env.clone()));
            }
        }
        _ => {
            let reply = match kind % 8 {
                4 => pb::PingResponse::decode(bytes).ok().map(PbReply::Ping),
                5 => pb::StoreResponse::decode(bytes).ok().map(PbReply::Store),
                6 => pb::FindNodeResponse::decode(bytes)
                    .ok()
                    .map(PbReply::FindNode),
                _ => pb::FindValueResponse::decode(bytes)
                    .ok()
                    .map(PbReply::FindValue),
            };
            if let Some(Ok(reply)) = reply.map(convert::reply_from_pb) {
                assert_eq!(convert::roundtrip_reply(&reply), Ok(reply.clone()));
            }
        }
    }
});
