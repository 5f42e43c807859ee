//! Fuzz target: the wire conversions of the four peer RPCs, requests and replies.
//!
//! The first byte picks a message type, the rest is its protobuf encoding as a peer might send
//! it. Whatever the bytes, decoding and validation (`net::grpc::convert`) must not panic, and
//! a message they accept must survive encoding and validating again unchanged: a node never
//! sends what a node refuses, and never reads back something else than what was sent.

#![no_main]

#[path = "common/mod.rs"]
mod common;

use kademlia::net::grpc::convert;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    if kind % 8 < 4 {
        if let Some(Ok(env)) = common::request(kind, bytes) {
            assert_eq!(convert::roundtrip_request(&env), Ok(env.clone()));
        }
    } else if let Some(Ok(reply)) = common::reply(kind, bytes) {
        assert_eq!(convert::roundtrip_reply(&reply), Ok(reply.clone()));
    }
});
