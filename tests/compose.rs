//! The real docker-compose.yml at 20 replicas, driven from the host with grpcurl, and the
//! p2p_setup.md walkthrough. They run one at a time (each starts 20 containers on a 2-core
//! machine); each tears down what it started, also when it fails.

mod common;

use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::tools::grpcurl;
use rand::seq::SliceRandom;

/// Serializes the tests of this file.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn root() -> &'static str {
    env!("CARGO_MANIFEST_DIR")
}

/// `docker compose` where the plugin exists, else the standalone `docker-compose`.
fn compose_program() -> Vec<String> {
    let plugin = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if plugin {
        vec!["docker".into(), "compose".into()]
    } else {
        vec!["docker-compose".into()]
    }
}

struct Project {
    name: String,
    program: Vec<String>,
}

impl Project {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.program[0])
            .args(&self.program[1..])
            .args([
                "-p",
                &self.name,
                "-f",
                &format!("{}/docker-compose.yml", root()),
            ])
            .args(args)
            .output()
            .expect("run compose")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "compose {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        // Also deletes each replica's data volume.
        let out = Command::new(format!("{}/scripts/compose-down.sh", root()))
            .args([
                "-p",
                &self.name,
                "-f",
                &format!("{}/docker-compose.yml", root()),
            ])
            .output()
            .expect("run scripts/compose-down.sh");
        if !out.status.success() {
            eprintln!(
                "compose down failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Runs `f` over `items` on `threads` threads; returns the failures.
fn parallel<T: Sync, F: Fn(&T) -> Result<(), String> + Sync>(
    items: &[T],
    threads: usize,
    f: F,
) -> Vec<String> {
    let chunks: Vec<&[T]> = items.chunks(items.len().div_ceil(threads)).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|c| s.spawn(|| c.iter().filter_map(|x| f(x).err()).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("worker"))
            .collect()
    })
}

fn healthy_count(project: &str) -> usize {
    let out = Command::new("docker")
        .args([
            "ps",
            "-q",
            "--filter",
            &format!("label=com.docker.compose.project={project}"),
            "--filter",
            "health=healthy",
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn compose_scales_to_20_and_survives_5_kills() {
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let project = Project {
        name: format!("kadci{}", std::process::id()),
        program: compose_program(),
    };
    let started = Instant::now();
    project.ok(&["up", "-d", "--scale", "node=20"]);
    while healthy_count(&project.name) < 20 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "only {} of 20 healthy after 120 s",
            healthy_count(&project.name)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!(
        "compose: 20 nodes healthy {} ms after `up`",
        started.elapsed().as_millis()
    );

    let ids: Vec<String> = project
        .ok(&["ps", "-q", "node"])
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(ids.len(), 20);
    let port_of = |id: &str| {
        let out = Command::new("docker")
            .args(["port", id, "50051"])
            .output()
            .expect("docker port");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let addr = text.lines().next().unwrap_or_default().to_string();
        assert!(
            addr.starts_with("127.0.0.1:"),
            "published on {addr:?}, not loopback"
        );
        addr
    };
    let addrs: Vec<String> = ids.iter().map(|id| port_of(id)).collect();

    let keys: Vec<(usize, String)> = (0..200).map(|i| (i, format!("compose-{i}"))).collect();
    let failures = parallel(&keys, 8, |(i, k)| {
        let body = format!(
            r#"{{"key":"{k}","value":"{}"}}"#,
            base64(format!("value of {k}").as_bytes())
        );
        let out = grpcurl(&[
            "-plaintext",
            "-d",
            &body,
            &addrs[i % 20],
            "kademlia.v1.Dht/Put",
        ]);
        out.status
            .success()
            .then_some(())
            .ok_or_else(|| format!("put {k}: {}", String::from_utf8_lossy(&out.stderr)))
    });
    assert!(failures.is_empty(), "{failures:?}");
    let read_all = |from: &[String]| {
        parallel(&keys, 8, |(i, k)| {
            let out = grpcurl(&[
                "-plaintext",
                "-d",
                &format!(r#"{{"key":"{k}"}}"#),
                &from[(i * 7) % from.len()],
                "kademlia.v1.Dht/Get",
            ]);
            let want = format!(
                r#""value": "{}""#,
                base64(format!("value of {k}").as_bytes())
            );
            let text = String::from_utf8_lossy(&out.stdout);
            text.contains(&want)
                .then_some(())
                .ok_or_else(|| format!("get {k}: {text} {}", String::from_utf8_lossy(&out.stderr)))
        })
    };
    let failures = read_all(&addrs);
    assert!(failures.is_empty(), "{failures:?}");

    // Kill five random replicas; every key is still readable through the others.
    let mut order: Vec<usize> = (0..20).collect();
    order.shuffle(&mut rand::rng());
    for &i in &order[..5] {
        let out = Command::new("docker")
            .args(["kill", &ids[i]])
            .output()
            .expect("docker kill");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let survivors: Vec<String> = order[5..].iter().map(|i| addrs[*i].clone()).collect();
    let failures = read_all(&survivors);
    assert!(
        failures.is_empty(),
        "{} of 200 keys unreadable after killing 5: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
}

#[test]
fn p2p_setup_walkthrough_runs_as_written() {
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new(format!("{}/scripts/walkthrough.sh", root()))
        .env(
            "COMPOSE_PROJECT_NAME",
            format!("kadwalk{}", std::process::id()),
        )
        .output()
        .expect("run scripts/walkthrough.sh");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "walkthrough failed:\n{}",
        &err[err.len().saturating_sub(4000)..]
    );
    let blocks = std::fs::read_to_string(format!("{}/p2p_setup.md", root()))
        .unwrap()
        .lines()
        .filter(|l| *l == "```sh")
        .count();
    assert!(
        blocks >= 15,
        "p2p_setup.md has only {blocks} runnable blocks"
    );
    assert!(
        err.contains(&format!("walkthrough: all {blocks} blocks ran")),
        "{err}"
    );
    // What the page promises, seen in its output.
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"value\": \"aGVsbG8gd29ybGQ=\""), "{text}");
    assert!(text.contains("blue"), "{text}");
    // Read after the put, after killing five, and after stopping and recreating them all.
    assert_eq!(
        text.matches("\"value\": \"MjAgbm9kZXM=\"").count(),
        3,
        "{text}"
    );
}

#[test]
fn base64_matches_known_vectors() {
    assert_eq!(base64(b"hello world"), "aGVsbG8gd29ybGQ=");
    assert_eq!(base64(b"20 nodes"), "MjAgbm9kZXM=");
    assert_eq!(base64(b"ab"), "YWI=");
}
