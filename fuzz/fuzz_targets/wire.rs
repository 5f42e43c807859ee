//! Fuzz target: the wire conversions of the four peer RPCs, requests and replies.
//!
//! The first byte picks a message type, the rest is its protobuf encoding as a peer might send
//! it: one of the four requests or replies as a unary call's message, or (first byte 8 to 15,
//! modulo 16) a request or reply frame of the `Exchange` stream. Whatever the bytes, decoding
//! and validation (`net::grpc::convert`) must not panic, and a message they accept must
//! survive encoding and validating again unchanged: a node never sends what a node refuses,
//! and never reads back something else than what was sent.

#![no_main]

#[path = "common/mod.rs"]
mod common;

use kademlia::kad::{Envelope, Reply};
use kademlia::net::grpc::convert::{self, BadMessage};
use kademlia::pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    let (request, reply) = match kind % 16 {
        0..4 => (common::request(kind, bytes), None),
        4..8 => (None, common::reply(kind, bytes)),
        8..12 => (request_frame(bytes), None),
        _ => (None, reply_frame(bytes)),
    };
    if let Some(Ok(env)) = request {
        assert_eq!(convert::roundtrip_request(&env), Ok(env.clone()));
    }
    if let Some(Ok(reply)) = reply {
        assert_eq!(convert::roundtrip_reply(&reply), Ok(reply.clone()));
    }
});

/// A request in an `Exchange` frame: `None` when the bytes are no `RequestFrame` or the frame
/// carries no request (which the server refuses before any conversion), else what validation
/// makes of the request.
fn request_frame(bytes: &[u8]) -> Option<Result<Envelope, BadMessage>> {
    let frame = pb::RequestFrame::decode(bytes).ok()?;
    Some(convert::request_from_pb(frame.request?))
}

/// A reply frame, likewise: `None` also for a `Failure` frame (a status, not a reply).
fn reply_frame(bytes: &[u8]) -> Option<Result<Reply, BadMessage>> {
    let frame = pb::ReplyFrame::decode(bytes).ok()?;
    let reply = convert::reply_from_frame(frame.reply?).ok()?;
    Some(convert::reply_from_pb(reply))
}
