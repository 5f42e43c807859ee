//! The test tools scripts/setup-tools.sh installs into .tools/.

use std::process::{Command, Output};

/// Path of a tool in the project's virtualenv.
pub fn tool(name: &str) -> String {
    format!("{}/.tools/venv/bin/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Runs grpcurl (`$GRPCURL`, else the one in .tools/).
pub fn grpcurl(args: &[&str]) -> Output {
    let bin = std::env::var("GRPCURL").unwrap_or_else(|_| tool("grpcurl"));
    Command::new(&bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run grpcurl at {bin} ({e}); run scripts/setup-tools.sh"))
}
