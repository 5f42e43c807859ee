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

/// Parses OpenMetrics text with the Prometheus project's reference parser (Python's
/// `prometheus_client.openmetrics.parser`, in .tools/); returns the metric families' names,
/// or the parser's complaint.
pub fn parse_openmetrics(text: &str) -> Result<Vec<String>, String> {
    use std::io::Write;
    let python = tool("python3");
    let script = "import sys\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
        for f in text_string_to_metric_families(sys.stdin.read()):\n    print(f.name)\n";
    let mut child = Command::new(&python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python} ({e}); run scripts/setup-tools.sh"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
