//! The real docker-compose.yml at 20 replicas, driven from the host with grpcurl, a rolling
//! restart of it under writes, and the p2p_setup.md walkthrough. They run one at a time (each starts 20 containers on a 2-core
//! machine); each tears down what it started, also when it fails.

use crate::common;

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

/// A container started by a test, removed on drop.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
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

/// The 127.0.0.1 address where container `id` publishes the gRPC port.
fn port_of(id: &str) -> String {
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
}

/// Waits until `n` replicas of `project` are healthy.
fn wait_healthy(project: &str, n: usize, limit: Duration) {
    let started = Instant::now();
    while healthy_count(project) < n {
        assert!(
            started.elapsed() < limit,
            "only {} of {n} healthy after {limit:?}",
            healthy_count(project)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn container_health(id: &str) -> String {
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{.State.Health.Status}}", id])
        .output()
        .expect("docker inspect");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A grpcurl call to `addr` with `body`; stdout on success.
fn call(addr: &str, method: &str, body: &str) -> Result<String, String> {
    let out = grpcurl(&["-plaintext", "-d", body, addr, method]);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn node_id(addr: &str) -> String {
    let info = call(addr, "kademlia.v1.Dht/Info", "{}").expect("info");
    info.lines()
        .find(|l| l.contains("\"nodeId\""))
        .unwrap_or_else(|| panic!("no nodeId in {info}"))
        .to_string()
}

/// A rolling restart of the Compose deployment, one replica at a time (`docker restart`:
/// SIGTERM, then start on the same volume), while writers keep putting keys through the
/// replicas that are up. Every put that was acknowledged reads back from every replica
/// afterwards, and every replica kept its id.
#[test]
fn rolling_restart_with_writes_throughout_loses_nothing_acknowledged() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, RwLock};

    const REPLICAS: usize = 6;
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let project = Project {
        name: format!("kadroll{}", std::process::id()),
        program: compose_program(),
    };
    project.ok(&["up", "-d", "--scale", &format!("node={REPLICAS}")]);
    wait_healthy(&project.name, REPLICAS, Duration::from_secs(120));
    let ids: Vec<String> = project
        .ok(&["ps", "-q", "node"])
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(ids.len(), REPLICAS);
    // `None` while the replica restarts (its host port may change).
    let addrs: Arc<RwLock<Vec<Option<String>>>> = Arc::new(RwLock::new(
        ids.iter().map(|id| Some(port_of(id))).collect(),
    ));
    let ids_before: Vec<String> = addrs
        .read()
        .unwrap()
        .iter()
        .map(|a| node_id(a.as_deref().unwrap()))
        .collect();

    let stop = AtomicBool::new(false);
    let restarting = AtomicBool::new(false);
    let attempts = AtomicUsize::new(0);
    let acked_during_restarts = AtomicUsize::new(0);
    let acked: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for w in 0..2 {
            let (addrs, stop, restarting, attempts, acked, during) = (
                &addrs,
                &stop,
                &restarting,
                &attempts,
                &acked,
                &acked_during_restarts,
            );
            s.spawn(move || {
                let mut i = 0usize;
                // Bounded: the restarts end the loop, and so does this count.
                while !stop.load(Ordering::SeqCst) && i < 5_000 {
                    i += 1;
                    let live: Vec<String> =
                        addrs.read().unwrap().iter().flatten().cloned().collect();
                    let addr = &live[i % live.len()];
                    let key = format!("roll-{w}-{i}");
                    let was_restarting = restarting.load(Ordering::SeqCst);
                    let body = format!(r#"{{"key":"{key}","value":"{}"}}"#, base64(key.as_bytes()));
                    attempts.fetch_add(1, Ordering::SeqCst);
                    if call(addr, "kademlia.v1.Dht/Put", &body).is_ok() {
                        acked.lock().unwrap().push(key);
                        if was_restarting && restarting.load(Ordering::SeqCst) {
                            during.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            });
        }
        // Let the writers get going, then restart each replica in turn.
        std::thread::sleep(Duration::from_secs(2));
        for (i, id) in ids.iter().enumerate() {
            addrs.write().unwrap()[i] = None;
            restarting.store(true, Ordering::SeqCst);
            let out = Command::new("docker")
                .args(["restart", id])
                .output()
                .expect("docker restart");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let started = Instant::now();
            while container_health(id) != "healthy" {
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "replica {i} not healthy 60 s after its restart"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            restarting.store(false, Ordering::SeqCst);
            addrs.write().unwrap()[i] = Some(port_of(id));
            // Writes continue with every replica up for a moment before the next restart.
            std::thread::sleep(Duration::from_secs(1));
        }
        stop.store(true, Ordering::SeqCst);
    });

    let acked = acked.into_inner().unwrap();
    let during = acked_during_restarts.load(Ordering::SeqCst);
    eprintln!(
        "rolling restart: {} of {} puts acknowledged, {during} while a replica was restarting",
        acked.len(),
        attempts.load(Ordering::SeqCst)
    );
    assert!(
        during >= REPLICAS,
        "only {during} puts were acknowledged while replicas restarted: the writes did not go on throughout"
    );
    let addrs: Vec<String> = addrs.read().unwrap().iter().flatten().cloned().collect();
    assert_eq!(addrs.len(), REPLICAS);
    let ids_after: Vec<String> = addrs.iter().map(|a| node_id(a)).collect();
    assert_eq!(ids_before, ids_after, "a replica changed its id");
    let keyed: Vec<(usize, String)> = acked.into_iter().enumerate().collect();
    let failures = parallel(&keyed, 8, |(i, key)| {
        // Each key from two replicas, so every replica answers for a share of the keys.
        for from in [&addrs[i % REPLICAS], &addrs[(i + 1) % REPLICAS]] {
            let got = call(
                from,
                "kademlia.v1.Dht/Get",
                &format!(r#"{{"key":"{key}"}}"#),
            )
            .map_err(|e| format!("get {key} from {from}: {e}"))?;
            let want = format!(r#""value": "{}""#, base64(key.as_bytes()));
            if !got.contains(&want) {
                return Err(format!("get {key} from {from}: {got}"));
            }
        }
        Ok(())
    });
    assert!(
        failures.is_empty(),
        "{} acknowledged keys lost or unreadable after the rolling restart: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
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
    wait_healthy(&project.name, 20, Duration::from_secs(120));
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

    // Peers talk mTLS: every node advertises its peer port, and a node without the cluster
    // CA's certificate on the same network never joins, and no replica learns it.
    let info = call(&addrs[0], "kademlia.v1.Dht/Info", "{}").expect("info");
    assert!(info.contains(":50052\""), "{info}");
    let outsider = Container(format!("kadci-outsider-{}", std::process::id()));
    let network = format!("{}_kademlia", project.name);
    let run = Command::new("docker")
        .args([
            "run",
            "-d",
            "--name",
            &outsider.0,
            "--network",
            &network,
            "-e",
            "P2P_REMOTE_HOST=node:50052",
            "-e",
            "KADEMLIA_NETWORK_ID=compose",
            "-p",
            "127.0.0.1::50051",
            "kademlia:latest",
        ])
        .output()
        .expect("docker run");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    std::thread::sleep(Duration::from_secs(6));
    let outsider_info = call(&port_of(&outsider.0), "kademlia.v1.Dht/Info", "{}").expect("info");
    assert!(
        !outsider_info.contains("\"joined\": true"),
        "{outsider_info}"
    );
    let ip = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &outsider.0,
        ])
        .output()
        .expect("docker inspect");
    let ip = String::from_utf8_lossy(&ip.stdout).trim().to_string();
    assert!(!ip.is_empty());
    for a in &addrs {
        let table = call(a, "kademlia.v1.Dht/RoutingTable", "{}").expect("routing table");
        assert!(
            !table.contains(&format!("\"{ip}:")),
            "{a} learned the outsider: {table}"
        );
    }
    drop(outsider);

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
