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
    let stderr = lines(child.stderr.take().unwrap());
    NodeProc {
        child,
        addr: format!("127.0.0.1:{port}"),
        stderr,
    }
}

/// The lines of `output`, read on a thread of their own until it ends or nobody listens.
fn lines(output: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
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
    signal(child, "-TERM");
}

/// Sends a signal (`-TERM`, `-INT`) to `child` with kill(1).
fn signal(child: &Child, which: &str) {
    let pid = child.id().to_string();
    let sent = Command::new("kill").args([which, &pid]).status().unwrap();
    assert!(sent.success(), "kill {which} {pid}: {sent}");
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

/// A base port below the kernel's ephemeral range with `base..base + n` and
/// `base + 1000..base + 1000 + n` free right now (tests run side by side in other processes).
pub fn free_port_range(n: u16) -> u16 {
    use rand::Rng;
    let mut rng = rand::rng();
    loop {
        let base = 20_000 + rng.random_range(0..700u16) * 16;
        let free = (0..n)
            .flat_map(|i| [base + i, base + 1000 + i])
            .all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free {
            return base;
        }
    }
}

/// A `kademlia devnet` process, killed on drop.
pub struct Devnet {
    pub child: Child,
    /// What it printed up to its "ready:" line.
    pub lines: Vec<String>,
    /// What it prints after (kept, so that its standard output stays open).
    pub output: mpsc::Receiver<String>,
}

impl Devnet {
    /// Starts `n` nodes on `base..` with `extra` flags; returns once it prints "ready:"
    /// (30 s at most).
    pub fn start(n: u16, base: u16, extra: &[&str]) -> Devnet {
        let mut child = Command::new(BIN)
            .args([
                "devnet",
                "--nodes",
                &n.to_string(),
                "--base-port",
                &base.to_string(),
            ])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn devnet");
        let rx = lines(child.stdout.take().unwrap());
        let mut lines = Vec::new();
        let ready = format!("ready: {n} nodes");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !lines.iter().any(|l: &String| l.starts_with(&ready)) {
            let left = deadline
                .checked_duration_since(Instant::now())
                .expect("devnet did not get ready in 30 s");
            lines.push(rx.recv_timeout(left).expect("devnet output"));
        }
        Devnet {
            child,
            lines,
            output: rx,
        }
    }

    /// Stops it with ctrl-c (SIGINT); returns how it exited (10 s at most).
    pub fn interrupt(&mut self) -> std::process::ExitStatus {
        signal(&self.child, "-INT");
        wait_exit(&mut self.child, Duration::from_secs(10), "ctrl-c")
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
