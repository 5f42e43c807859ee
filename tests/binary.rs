//! Black-box tests of the `kademlia` binary: grpcurl through reflection, the CLI client and
//! shell, logs for an unreachable bootstrap host, and SIGTERM.

use crate::common;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::free_port;
use common::process::{
    BIN, Devnet, NodeProc, cli, free_port_range, sigterm, start_node_env, wait_exit,
};
use common::tools::grpcurl;

fn start_node(remote: &str) -> NodeProc {
    start_node_with(remote, &[])
}

/// A node on a free client port, with more flags.
fn start_node_with(remote: &str, flags: &[&str]) -> NodeProc {
    start_node_env(remote, flags, &[])
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn grpcurl_lists_services_checks_health_puts_and_gets() {
    let node = start_node("");
    node.wait_healthy();
    let list = grpcurl(&["-plaintext", &node.addr, "list"]);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let services = stdout(&list);
    for s in [
        "kademlia.v1.Dht",
        "kademlia.v1.Kademlia",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.lines().any(|l| l == s),
            "{s} missing from:\n{services}"
        );
    }
    let health = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"service":""}"#,
        &node.addr,
        "grpc.health.v1.Health/Check",
    ]);
    assert!(
        stdout(&health).contains("\"SERVING\""),
        "{}",
        stdout(&health)
    );

    // "aGVsbG8gZ3JwY3VybA==" is base64 for "hello grpcurl" (protobuf JSON encodes bytes so).
    let put = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"key":"greeting","value":"aGVsbG8gZ3JwY3VybA=="}"#,
        &node.addr,
        "kademlia.v1.Dht/Put",
    ]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    assert!(stdout(&put).contains("\"replicas\": 1"), "{}", stdout(&put));
    let get = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"key":"greeting"}"#,
        &node.addr,
        "kademlia.v1.Dht/Get",
    ]);
    assert!(
        stdout(&get).contains("\"value\": \"aGVsbG8gZ3JwY3VybA==\""),
        "{}",
        stdout(&get)
    );
    let missing = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"key":"nope"}"#,
        &node.addr,
        "kademlia.v1.Dht/Get",
    ]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("NotFound"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    let describe = grpcurl(&["-plaintext", &node.addr, "describe", "kademlia.v1.Dht"]);
    assert!(
        stdout(&describe).contains("rpc Locate"),
        "{}",
        stdout(&describe)
    );
    // Frames on the Stream call: a put, a get of what it put, and a get of a missing key,
    // each answered by the frame with its id (a uint64, so a string in protobuf JSON).
    let stream = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"id":1,"put":{"key":"streamed","value":"aGk="}}
           {"id":2,"get":{"key":"greeting"}}
           {"id":3,"get":{"key":"nope"}}"#,
        &node.addr,
        "kademlia.v1.Dht/Stream",
    ]);
    let out = stdout(&stream);
    assert!(
        stream.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&stream.stderr)
    );
    let frames: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&out)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{e}: {out}"));
    let by_id = |id: &str| {
        frames
            .iter()
            .find(|f| f["id"] == id)
            .unwrap_or_else(|| panic!("no reply frame {id}: {out}"))
    };
    assert_eq!(by_id("1")["put"]["replicas"], 1, "{out}");
    assert_eq!(by_id("2")["get"]["value"], "aGVsbG8gZ3JwY3VybA==", "{out}");
    assert_eq!(by_id("3")["failure"]["code"], 5, "NOT_FOUND: {out}");
    assert_eq!(frames.len(), 3, "{out}");
}

#[test]
fn cli_client_and_shell_against_two_nodes() {
    let a = start_node("");
    a.wait_healthy();
    let b = start_node(&a.addr);
    b.wait_healthy();
    let put = cli(&["put", "colour", "blue", "-a", &a.addr]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    assert!(
        stdout(&put).starts_with("OK stored on 2 node(s)"),
        "{}",
        stdout(&put)
    );
    assert_eq!(stdout(&cli(&["get", "colour", "-a", &b.addr])), "blue\n");
    let locate = stdout(&cli(&["locate", "colour", "-a", &b.addr]));
    assert_eq!(locate.matches(" has v").count(), 2, "{locate}");
    let routes = stdout(&cli(&["routes", "-a", &a.addr]));
    assert!(
        routes.contains("1 contacts") && routes.contains(&b.addr),
        "{routes}"
    );
    let info = stdout(&cli(&["info", "-a", &b.addr]));
    assert!(
        info.contains("joined:   true") && info.contains("peers:    1"),
        "{info}"
    );
    assert!(stdout(&cli(&["ping", "-a", &a.addr])).starts_with("pong from"));
    assert!(cli(&["delete", "colour", "-a", &b.addr]).status.success());
    let gone = cli(&["get", "colour", "-a", &a.addr]);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("NotFound"));

    let mut shell = Command::new(BIN)
        .args(["shell", "-a", &a.addr])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    shell
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"set fruit ripe mango\nget fruit\nset spaced  a  b  \nget spaced\nget nothing\nlocate fruit\nhelp\nfrobnicate\nquit\n",
        )
        .unwrap();
    let out = shell.wait_with_output().unwrap();
    let text = stdout(&out);
    assert!(out.status.success());
    assert!(text.contains("OK stored on 2 node(s)"), "{text}");
    assert!(text.contains("ripe mango\n"), "{text}");
    // A value is kept as typed: the spaces after the one separating it from the key, inside
    // and at the end.
    assert!(text.contains("kademlia>  a  b  \n"), "{text}");
    assert!(text.contains("(not found)"), "{text}");
    assert!(text.contains("unknown command \"frobnicate\""), "{text}");
    assert!(text.contains("set KEY VALUE"), "{text}");
}

#[test]
fn unreachable_remote_host_is_logged_and_retried() {
    let node = start_node("no-such-host.invalid");
    let line = node.wait_log("cannot join yet", Duration::from_secs(10));
    assert!(line.contains("no-such-host.invalid"), "{line}");
    node.wait_log("cannot join yet", Duration::from_secs(10));
    let info = cli(&["info", "-a", &node.addr]);
    assert!(
        stdout(&info).contains("joined:   false"),
        "{}",
        stdout(&info)
    );
    assert!(!cli(&["health", "-a", &node.addr]).status.success());
}

#[test]
fn sigterm_stops_the_node_gracefully() {
    let mut node = start_node("");
    node.wait_healthy();
    sigterm(&node.child);
    let status = wait_exit(&mut node.child, Duration::from_secs(5), "SIGTERM");
    assert!(status.success(), "exit status {status}");
    node.wait_log("SIGTERM received", Duration::from_secs(1));
}

/// `log_format = json`: every line the node logs is one JSON object with a timestamp, a
/// level and the message, through SIGTERM and the drain.
#[test]
fn json_logs_are_one_object_per_line() {
    let mut node = start_node_with("", &["--set", "log_format=json"]);
    node.wait_healthy();
    sigterm(&node.child);
    wait_exit(&mut node.child, Duration::from_secs(5), "SIGTERM");
    // The process has exited: its stderr ends, and with it the reader thread.
    let lines: Vec<String> = node.stderr.iter().collect();
    assert!(lines.len() >= 2, "{lines:?}");
    let mut messages = Vec::new();
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string(),
            "{line}"
        );
        messages.push(
            v["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    assert!(
        messages.iter().any(|m| m.contains("SIGTERM received")),
        "{messages:?}"
    );
}

/// The variables the README documents for commands (`KADEMLIA_CONFIG_FILE` for `node`,
/// `KADEMLIA_ADDR` and `KADEMLIA_TIMEOUT_MS` for client calls) do what it says, and a node
/// started with all of them set starts: they are not taken for settings.
#[test]
fn documented_command_variables_work_and_never_stop_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kad.toml");
    std::fs::write(&file, "network_id = \"from-the-file\"\n").unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(BIN)
        .args(["node", "--host", "127.0.0.1", "--port", &port.to_string()])
        .env("KADEMLIA_CONFIG_FILE", &file)
        .env("KADEMLIA_ADDR", &addr)
        .env("KADEMLIA_TIMEOUT_MS", "5000")
        .env("P2P_REMOTE_HOST", "")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kademlia node");
    let (_tx, stderr) = mpsc::channel();
    let node = NodeProc {
        child,
        addr: addr.clone(),
        stderr,
    };
    node.wait_healthy();
    // Client calls find the node through KADEMLIA_ADDR, and the node read its file.
    let info = Command::new(BIN)
        .arg("info")
        .env("KADEMLIA_ADDR", &addr)
        .env("KADEMLIA_TIMEOUT_MS", "5000")
        .output()
        .unwrap();
    assert!(info.status.success(), "{info:?}");
    assert!(stdout(&info).contains("from-the-file"), "{}", stdout(&info));
}

/// Binary values round-trip through the CLI: `put --file`, `put -` (standard input),
/// `get --raw` and `get -o FILE` carry every byte value unchanged.
#[test]
fn binary_values_round_trip_through_files_and_standard_streams() {
    let node = start_node("");
    node.wait_healthy();
    let dir = tempfile::tempdir().unwrap();
    let bytes: Vec<u8> = (0..=255u8).chain([0, 10, 13, 255]).collect();
    let input = dir.path().join("in.bin");
    std::fs::write(&input, &bytes).unwrap();
    let put = cli(&[
        "put",
        "from-file",
        "--file",
        input.to_str().unwrap(),
        "-a",
        &node.addr,
    ]);
    assert!(put.status.success(), "{put:?}");
    let mut piped = Command::new(BIN)
        .args(["put", "from-stdin", "-", "-a", &node.addr])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    piped.stdin.take().unwrap().write_all(&bytes).unwrap();
    assert!(piped.wait_with_output().unwrap().status.success());
    for key in ["from-file", "from-stdin"] {
        let raw = cli(&["get", key, "--raw", "-a", &node.addr]);
        assert!(raw.status.success(), "{raw:?}");
        assert_eq!(raw.stdout, bytes, "{key} via --raw");
        let out = dir.path().join(format!("{key}.out"));
        let got = cli(&["get", key, "-o", out.to_str().unwrap(), "-a", &node.addr]);
        assert!(got.status.success(), "{got:?}");
        assert!(got.stdout.is_empty());
        assert_eq!(std::fs::read(&out).unwrap(), bytes, "{key} via -o");
    }
    // A file that cannot be read is an error naming it, and nothing is stored.
    let missing = dir.path().join("missing.bin");
    let put = cli(&[
        "put",
        "nothing",
        "--file",
        missing.to_str().unwrap(),
        "-a",
        &node.addr,
    ]);
    assert!(!put.status.success());
    assert!(
        String::from_utf8_lossy(&put.stderr).contains("missing.bin"),
        "{put:?}"
    );
    assert!(!cli(&["get", "nothing", "-a", &node.addr]).status.success());
}

/// Lowering k alone starts a node: alpha and the quorums, left at their defaults, follow it
/// down; set explicitly above k they are still refused.
#[test]
fn lowering_k_alone_is_accepted() {
    let node = start_node_with("", &["--set", "k=2"]);
    node.wait_healthy();
    assert_eq!(info_line(&node.addr, "k/alpha:"), "2/2");
    let out = Command::new(BIN)
        .args(["node", "--set", "k=2", "--set", "quorum=3"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("quorum") && err.contains("between 1 and k (2)"),
        "{err}"
    );
}

#[test]
fn invalid_settings_are_refused_with_the_setting_named() {
    let out = Command::new(BIN)
        .args(["node", "--set", "quorum=99"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("quorum") && err.contains("between 1 and k"),
        "{err}"
    );
    let out = Command::new(BIN)
        .args(["node"])
        .env("KADEMLIA_K", "zero")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains('k'),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn devnet_starts_serves_and_stops() {
    let base = free_port_range(6);
    let info = devnet_round_trip(base, &[]);
    assert!(
        info.contains(&format!("address:  127.0.0.1:{}", base + 5)),
        "{info}"
    );
}

#[test]
fn devnet_with_peer_mtls_starts_serves_and_stops() {
    let base = free_port_range(6);
    let ca = tempfile::tempdir().unwrap();
    let info = devnet_round_trip(base, &["--tls-dir", ca.path().to_str().unwrap()]);
    // Peers are on base + 1000 + i; the CA was made in the dir.
    assert!(
        info.contains(&format!("address:  127.0.0.1:{}", base + 1005)),
        "{info}"
    );
    assert!(ca.path().join("ca.pem").exists() && ca.path().join("ca-key.pem").exists());
}

/// `kademlia bench --nodes 4 --base-port BASE --quiet --json` with `args`: its JSON report.
fn bench_json(base: u16, args: &[&str]) -> serde_json::Value {
    let base = base.to_string();
    let mut all = vec![
        "bench",
        "--nodes",
        "4",
        "--base-port",
        &base,
        "--quiet",
        "--json",
    ];
    all.extend_from_slice(args);
    let out = cli(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

/// `kademlia bench` of 2 puts and 2 gets on the 4 nodes from `base`, with `args`, which must
/// fail: its stderr.
fn bench_fails(base: u16, args: &[&str]) -> String {
    let base = base.to_string();
    let mut all = vec!["bench", "--nodes", "4", "--base-port", &base, "--quiet"];
    all.extend_from_slice(&["--puts", "2", "--gets", "2"]);
    all.extend_from_slice(args);
    let out = cli(&all);
    assert!(!out.status.success(), "bench {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `kademlia bench --json` against a devnet: every ping, put and get counted, none wrong, and
/// the put and get latencies also given in pings measured in the same run.
#[test]
fn bench_reports_json_with_latencies_in_pings() {
    let base = free_port_range(4);
    let mut net = Devnet::start(4, base, &[]);
    let r = bench_json(
        base,
        &["--pings", "30", "--puts", "30", "--gets", "30", "-c", "4"],
    );
    assert_eq!(r["nodes"], 4);
    for phase in ["ping", "put", "get"] {
        assert_eq!(r[phase]["ok"], 30, "{phase}: {r}");
        assert_eq!(r[phase]["errors"], 0, "{phase}: {r}");
        assert!(r[phase]["p50_ms"].as_f64().unwrap() > 0.0, "{phase}: {r}");
    }
    assert_eq!(r["get"]["wrong"], 0, "{r}");
    let ping = r["ping"]["p50_ms"].as_f64().unwrap();
    for phase in ["put", "get"] {
        let in_pings = r[phase]["p50_pings"].as_f64().expect("p50 in pings");
        let ms = r[phase]["p50_ms"].as_f64().unwrap();
        assert!(
            (in_pings * ping - ms).abs() < 1e-6 * ms.max(1.0),
            "{phase}: {r}"
        );
    }
    // --keys: 12 puts over 3 keys, 9 of them overwrites (one at a time: concurrent writes
    // of one key may abort each other), and the gets read the 3 keys back.
    let r = bench_json(
        base,
        &[
            "--pings",
            "5",
            "--puts",
            "12",
            "--keys",
            "3",
            "--gets",
            "6",
            "--value-size",
            "20000",
        ],
    );
    assert_eq!(r["keys"], 3, "{r}");
    assert_eq!(r["put"]["ok"], 12, "{r}");
    assert_eq!(r["get"]["ok"], 6, "{r}");
    assert_eq!(r["get"]["wrong"], 0, "{r}");
    // --stream: the puts and gets go as frames on one Stream per node, and say so.
    let r = bench_json(
        base,
        &[
            "--pings", "5", "--puts", "30", "--gets", "30", "-c", "8", "--stream",
        ],
    );
    assert_eq!(r["stream"], true, "{r}");
    for phase in ["put", "get"] {
        assert_eq!(r[phase]["ok"], 30, "{phase}: {r}");
        assert_eq!(r[phase]["errors"], 0, "{phase}: {r}");
    }
    assert_eq!(r["get"]["wrong"], 0, "{r}");
    // --before-gets runs between the puts and the gets, and --get-addrs sends the gets to the
    // nodes it names only (scripts/measure-kill.sh kills nodes with the one and leaves them
    // out with the other).
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let touch = format!("touch {}", marker.display());
    let only = format!("127.0.0.1:{base},127.0.0.1:{}", base + 1);
    let r = bench_json(
        base,
        &[
            "--pings",
            "3",
            "--puts",
            "8",
            "--gets",
            "8",
            "--before-gets",
            &touch,
            "--get-addrs",
            &only,
        ],
    );
    assert!(marker.exists(), "--before-gets did not run");
    assert_eq!(r["get"]["ok"], 8, "{r}");
    assert_eq!(r["get"]["wrong"], 0, "{r}");
    // Gets through an address where nothing listens fail: they do go where --get-addrs says.
    let nobody = format!("127.0.0.1:{}", free_port_range(1));
    let err = bench_fails(base, &["--get-addrs", &nobody]);
    assert!(
        err.contains(&format!("cannot connect to {nobody}")),
        "{err}"
    );
    // A command that fails stops the run before the gets.
    let err = bench_fails(base, &["--before-gets", "exit 3"]);
    assert!(
        err.contains("--before-gets") && err.contains("failed"),
        "{err}"
    );
    assert!(net.interrupt().success());
}

/// Starts a 6-node devnet with `extra` flags, puts through the first node and gets through
/// the last, checks the last knows the other 5, stops it with ctrl-c; returns the last's info.
fn devnet_round_trip(base: u16, extra: &[&str]) -> String {
    let mut net = Devnet::start(6, base, extra);
    assert_eq!(
        net.lines.iter().filter(|l| l.starts_with("node ")).count(),
        6,
        "{:?}",
        net.lines
    );
    let first = format!("127.0.0.1:{base}");
    let last = format!("127.0.0.1:{}", base + 5);
    assert!(cli(&["put", "dev", "net", "-a", &first]).status.success());
    assert_eq!(stdout(&cli(&["get", "dev", "-a", &last])), "net\n");
    let info = stdout(&cli(&["info", "-a", &last]));
    assert!(info.contains("peers:    5"), "{info}");
    let status = net.interrupt();
    assert!(status.success(), "devnet exited with {status}");
    info
}

/// A client call to a host that accepts the connection and then says nothing ends at
/// `--timeout` with an error, instead of hanging.
#[test]
fn client_calls_end_at_their_timeout() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    // Accept and hold connections without answering, until the call ended (or 5 s).
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let holder = std::thread::spawn({
        let done = done.clone();
        move || {
            let mut held = Vec::new();
            silent.set_nonblocking(true).unwrap();
            let until = std::time::Instant::now() + Duration::from_secs(5);
            while std::time::Instant::now() < until
                && !done.load(std::sync::atomic::Ordering::SeqCst)
            {
                if let Ok((c, _)) = silent.accept() {
                    held.push(c);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    });
    let started = std::time::Instant::now();
    let out = cli(&["get", "k", "-a", &addr, "--timeout", "300"]);
    let took = started.elapsed();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(!out.status.success());
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Timeout expired") || err.contains("cannot connect"),
        "{err}"
    );
    holder.join().unwrap();
}

/// The value of `info`'s line starting with `label`.
fn info_line(addr: &str, label: &str) -> String {
    let info = stdout(&cli(&["info", "-a", addr]));
    info.lines()
        .find_map(|l| l.strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} in {info}"))
        .trim()
        .to_string()
}

#[test]
fn peer_mtls_as_the_binary_runs_it() {
    let ca = tempfile::tempdir().unwrap();
    let dir = ca.path().to_str().unwrap();
    let made = cli(&["cert", "ca", "--dir", dir]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let again = cli(&["cert", "ca", "--dir", dir]);
    assert!(
        !again.status.success(),
        "a second CA must not overwrite the first"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("--if-missing"));
    assert!(
        cli(&["cert", "ca", "--dir", dir, "--if-missing"])
            .status
            .success()
    );

    let ca_cert = format!("tls_ca_cert={dir}/ca.pem");
    let ca_key = format!("tls_ca_key={dir}/ca-key.pem");
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap().to_string();
    let seed_peer = free_port().to_string();
    let seed_flags = [
        "--peer-port",
        &seed_peer,
        "--set",
        &ca_cert,
        "--set",
        &ca_key,
        "--data-dir",
        &data_dir,
    ];
    let seed = start_node_with("", &seed_flags);
    seed.wait_healthy();
    let seed_id = info_line(&seed.addr, "node id:");
    let seed_peer_addr = format!("127.0.0.1:{seed_peer}");
    assert_eq!(info_line(&seed.addr, "address:"), seed_peer_addr);

    let joiner_peer = free_port().to_string();
    let joiner = start_node_with(
        &seed_peer_addr,
        &[
            "--peer-port",
            &joiner_peer,
            "--set",
            &ca_cert,
            "--set",
            &ca_key,
        ],
    );
    joiner.wait_healthy();
    let put = cli(&["put", "sealed", "by tls", "-a", &joiner.addr]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    assert_eq!(
        stdout(&cli(&["get", "sealed", "-a", &seed.addr])),
        "by tls\n"
    );

    // Without the CA a node cannot join, and the seed never learns it.
    let outsider_peer = free_port().to_string();
    let outsider = start_node_with(&seed_peer_addr, &["--peer-port", &outsider_peer]);
    outsider.wait_log("cannot join yet", Duration::from_secs(20));
    assert_eq!(info_line(&outsider.addr, "joined:"), "false");
    let routes = stdout(&cli(&["routes", "-a", &seed.addr]));
    assert!(!routes.contains(&outsider_peer), "{routes}");

    // The id is the key's, and the key stays in the data dir: the same id after a restart.
    drop(seed);
    assert!(data.path().join("node-key.pem").exists());
    let seed = start_node_with("", &seed_flags);
    seed.wait_healthy();
    assert_eq!(info_line(&seed.addr, "node id:"), seed_id);

    // Pinning an id, or TLS without a peer port, is refused with the setting named.
    let pinned = cli(&[
        "node",
        "--peer-port",
        "1",
        "--node-id",
        "x",
        "--set",
        &ca_cert,
        "--set",
        &ca_key,
    ]);
    assert!(String::from_utf8_lossy(&pinned.stderr).contains("node_id"));
    let shared = cli(&["node", "--set", &ca_cert, "--set", &ca_key]);
    assert!(String::from_utf8_lossy(&shared.stderr).contains("peer_port"));
}
