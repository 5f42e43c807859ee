//! The integration tests, one module per file of `tests/`, built as one test binary.
//!
//! Each file used to be a test binary of its own: 26 binaries that each compiled the shared
//! helpers (`common/`) and the generic gRPC, tokio and testcontainers code they use, and each
//! linked the whole node. Built as one, that work is done once: this is a build-time choice
//! only. cargo-nextest still runs every test in a process of its own, so the tests share no
//! state; `cargo nextest run -E 'test(/^flood::/)'` runs one file's tests. The container
//! tests are `compose::`, `containers::` and `deploy::` (see .config/nextest.toml).

mod common;

mod binary;
mod client_stream;
mod compare;
mod compose;
mod containers;
mod deploy;
mod docs;
mod durable;
mod exchange;
mod flood;
mod grpc_network;
mod metrics;
mod otlp;
mod overload;
mod page;
mod peer_tls;
mod prometheus;
mod sim_background;
mod sim_blind_spot;
mod sim_consistency;
mod sim_disjoint;
mod sim_hostile;
mod sim_maintenance;
mod sim_network;
mod sim_outage;
mod sim_slow;
mod sim_versions;
mod sim_write_quorum;
mod simulate;
