//! The gRPC transport: generated code (in [`pb`], and nowhere else), conversions to and from
//! domain types, the peer and client services, and the client pool.

pub mod admission;
pub mod client;
pub mod client_stream;
pub mod convert;
pub mod dht_service;
pub mod dht_stream;
pub mod exchange;
pub mod frames;
pub mod mux;
pub mod peer_service;
pub mod rate;
pub mod server;
pub mod session;
pub mod trace;

/// Code generated from proto/kademlia/v1 by tonic-prost-build.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("kademlia.v1");

    /// Encoded descriptor set, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("kademlia_descriptor");
}

pub use client::GrpcTransport;

/// The largest gRPC message for values of up to `max_value_bytes`: the value plus room for
/// the rest of a record and a FIND_VALUE reply's k contacts, and never below tonic's 4 MiB.
pub fn message_limit(max_value_bytes: usize) -> usize {
    (max_value_bytes + 256 * 1024).max(4 * 1024 * 1024)
}
pub use server::{Listeners, ServeOptions, serve};
