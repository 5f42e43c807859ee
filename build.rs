//! Compiles proto/kademlia/v1 with tonic-prost-build and writes the descriptor set that server
//! reflection serves. protoc comes from the protoc-bin-vendored crate unless PROTOC is set, so a
//! fresh machine needs nothing installed by hand.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
        unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = [
        "proto/kademlia/v1/peer.proto",
        "proto/kademlia/v1/dht.proto",
    ];
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("kademlia_descriptor.bin"))
        .compile_protos(&protos, &["proto"])?;
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
