//! The `kademlia` binary: parse the command line and hand over to [`kademlia::cli`].

use clap::Parser;

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
