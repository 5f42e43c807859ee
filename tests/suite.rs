//! The integration tests, one module per file of `tests/`, built as one test binary.
//!
//! Each file used to be a test binary of its own: 26 binaries that each compiled the shared
//! helpers (`common/`) and the generic gRPC, tokio and testcontainers code they use, and each
//! linked the whole node. Built as one, that work is done once: this is a build-time choice
//! only. cargo-nextest still runs every test in a process of its own, so the tests share no
//! state; `cargo nextest run -E 'test(/^flood::/)'` runs one file's tests. The container
//! tests are `compose::`, `containers::` and `deploy::` (see .config/nextest.toml).

#[path = "common/mod.rs"]
mod common;

#[path = "binary.rs"]
mod binary;
#[path = "compose.rs"]
mod compose;
#[path = "containers.rs"]
mod containers;
#[path = "deploy.rs"]
mod deploy;
#[path = "docs.rs"]
mod docs;
#[path = "durable.rs"]
mod durable;
#[path = "flood.rs"]
mod flood;
#[path = "grpc_network.rs"]
mod grpc_network;
#[path = "metrics.rs"]
mod metrics;
#[path = "otlp.rs"]
mod otlp;
#[path = "overload.rs"]
mod overload;
#[path = "page.rs"]
mod page;
#[path = "peer_tls.rs"]
mod peer_tls;
#[path = "prometheus.rs"]
mod prometheus;
#[path = "sim_background.rs"]
mod sim_background;
#[path = "sim_blind_spot.rs"]
mod sim_blind_spot;
#[path = "sim_consistency.rs"]
mod sim_consistency;
#[path = "sim_disjoint.rs"]
mod sim_disjoint;
#[path = "sim_hostile.rs"]
mod sim_hostile;
#[path = "sim_maintenance.rs"]
mod sim_maintenance;
#[path = "sim_network.rs"]
mod sim_network;
#[path = "sim_outage.rs"]
mod sim_outage;
#[path = "sim_slow.rs"]
mod sim_slow;
#[path = "sim_versions.rs"]
mod sim_versions;
#[path = "sim_write_quorum.rs"]
mod sim_write_quorum;
#[path = "simulate.rs"]
mod simulate;
