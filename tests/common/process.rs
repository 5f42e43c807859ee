//! `kademlia` node processes for the black-box tests: started on a free loopback port with
//! their stderr collected, killed on drop; and the CLI run as a client.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::free_port;

pub const BIN: &str = env!("CARGO_BIN_EXE_kademlia");

/// A node process, killed on drop.
pub struct NodeProc {
    pub child: Child,
    pub addr: String,
    pub stderr: mpsc::Receiver<String>,
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node on a free client port that joins through `remote` ("" creates a network), with
/// more flags and environment variables.
pub fn start_node_env(remote: &str, flags: &[&str], env: &[(&str, &str)]) -> NodeProc {
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["node", "--host", "127.0.0.1", "--port", &port.to_string()])
        .args(flags)
        .env("P2P_REMOTE_HOST", remote)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kademlia node");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    NodeProc {
        child,
        addr: format!("127.0.0.1:{port}"),
        stderr: rx,
    }
}

impl NodeProc {
    /// Waits for a log line containing `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("no log line containing {needle:?} within {timeout:?}");
    }

    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if cli(&["health", "-a", &self.addr]).status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("node at {} never became healthy", self.addr);
    }
}

/// Sends SIGTERM to `child`.
pub fn sigterm(child: &Child) {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
}

/// Waits for `child` to exit after `signal`; fails the test if it is still running `within`.
pub fn wait_exit(child: &mut Child, within: Duration, signal: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "still running {within:?} after {signal}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the CLI (without a `KADEMLIA_ADDR` from the environment).
pub fn cli(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("KADEMLIA_ADDR")
        .output()
        .expect("run kademlia")
}
