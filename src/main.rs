//! The `kademlia` binary: parse the command line and hand over to [`kademlia::cli`].
//!
//! The allocator is mimalloc (a well-kept allocator crate), not the system's: a node's work
//! is many small short-lived allocations per RPC (HTTP/2 frames, headers, protobuf
//! messages, futures), and glibc's malloc and free were 18 % of a busy devnet's CPU. With
//! mimalloc, `scripts/measure.sh` (100 nodes, two runs of each, same bench client) gave
//! puts/s at 32 in flight 415-487 -> 656-676, gets/s 2,838-3,391 -> 4,037-4,391, put p50 at
//! concurrency 1 2.10-2.28 -> 1.78-1.82 ms, and `kademlia simulate` at 3,000 nodes ran in
//! 20 s instead of 27 s at the same peak memory. Its `no_thp` feature keeps it from asking for
//! transparent huge pages: with them an idle node's resident memory was 19.6 MiB instead of
//! 10.2 (12.5 without).

use clap::Parser;

/// See the module doc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = kademlia::cli::Cli::parse();
    if !matches!(
        cli.command,
        kademlia::cli::Command::Node(_) | kademlia::cli::Command::Devnet(_)
    ) {
        kademlia::telemetry::init("warn", kademlia::telemetry::LogFormat::Text);
    }
    match kademlia::cli::dispatch(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
