//! Traces over OTLP from real node processes, received by a real OTLP receiver built from
//! the official protocol definitions (tests/support/otlp_receiver.py: PyPI's
//! opentelemetry-proto with grpcio, installed into .tools/ by scripts/setup-tools.sh).
//!
//! - Over gRPC, four nodes: a put and a get sent with a W3C `traceparent` are each one trace,
//!   with spans from several nodes, each peer call's server span parented on the client span
//!   of the node that sent it.
//! - Over HTTP (the specification's default protocol), one node: the spans still buffered at
//!   SIGTERM are exported before the process exits.
//! - A protocol this node cannot speak stops it at start, naming the variable.

use crate::common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::process::{BIN, NodeProc, sigterm, start_node_env, wait_exit};
use common::tools::tool;
use kademlia::pb;
use serde_json::Value;

/// The receiver process, killed on drop, and the file its spans go to.
struct Receiver {
    child: Child,
    out: PathBuf,
    grpc: u16,
    http: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn receiver() -> Receiver {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("spans.jsonl");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/otlp_receiver.py");
    let python = tool("python3");
    let mut child = Command::new(&python)
        .arg(&script)
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python} ({e}); run scripts/setup-tools.sh"));
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut port = |proto: &str| -> u16 {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("the receiver exited before listening"))
            .unwrap();
        let (p, n) = line.split_once(' ').unwrap();
        assert_eq!(p, proto, "{line}");
        n.parse().unwrap()
    };
    let (grpc, http) = (port("grpc"), port("http"));
    Receiver {
        child,
        out,
        grpc,
        http,
        _dir: dir,
    }
}

impl Receiver {
    fn spans(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The spans of trace `trace_id` once `done` accepts them (20 s at most).
    fn trace(&self, trace_id: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let spans: Vec<Value> = self
                .spans()
                .into_iter()
                .filter(|s| s["trace_id"] == trace_id)
                .collect();
            if done(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "trace {trace_id} incomplete after 20 s: {}",
                names(&spans)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn names(spans: &[Value]) -> String {
    let names: Vec<String> = spans
        .iter()
        .map(|s| format!("{} ({})", s["name"], s["instance"]))
        .collect();
    names.join(", ")
}

/// OTLP's span kinds.
const SERVER: i64 = 2;
const CLIENT: i64 = 3;

fn attr<'a>(span: &'a Value, key: &str) -> &'a str {
    span["attributes"][key].as_str().unwrap_or("")
}

fn named<'a>(spans: &'a [Value], name: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["name"] == name).collect()
}

fn children<'a>(spans: &'a [Value], parent: &Value) -> Vec<&'a Value> {
    spans
        .iter()
        .filter(|s| s["parent_span_id"] == parent["span_id"])
        .collect()
}

/// A W3C traceparent for a new sampled trace, and its trace id and span id.
fn traceparent() -> (String, String, String) {
    let trace: u128 = rand::random();
    let span: u64 = rand::random::<u64>() | 1;
    let (trace, span) = (format!("{trace:032x}"), format!("{span:016x}"));
    (format!("00-{trace}-{span}-01"), trace, span)
}

fn with_trace<T>(message: T, header: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("traceparent", header.parse().unwrap());
    request
}

async fn client(addr: &str) -> pb::dht_client::DhtClient<tonic::transport::Channel> {
    pb::dht_client::DhtClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

/// Checks that each of `client_spans` (peer calls of `method` that one node sent) is a
/// well-formed client span, and that every server span under it in `spans` is the peer's, on
/// another process; returns how many server spans there were.
fn check_hops(spans: &[Value], client_spans: &[&Value], method: &str) -> usize {
    let mut hops = 0;
    for sent in client_spans {
        assert_eq!(sent["kind"], CLIENT, "{sent}");
        assert_eq!(sent["name"], format!("kademlia.v1.Kademlia/{method}"));
        assert_eq!(attr(sent, "rpc.method"), method);
        assert!(!attr(sent, "kademlia.peer.id").is_empty(), "{sent}");
        assert!(!attr(sent, "kademlia.bucket").is_empty(), "{sent}");
        for served in children(spans, sent) {
            assert_eq!(served["kind"], SERVER, "{served}");
            assert_eq!(served["name"], sent["name"]);
            assert_ne!(
                served["instance"], sent["instance"],
                "a hop is another process"
            );
            assert_eq!(
                attr(served, "kademlia.node.id"),
                attr(sent, "kademlia.peer.id"),
                "the server span is the peer's"
            );
            hops += 1;
        }
    }
    hops
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_and_a_get_are_each_one_trace_across_the_nodes_they_touched() {
    let rx = receiver();
    let endpoint = format!("http://127.0.0.1:{}", rx.grpc);
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    // k = 2 of 4 nodes: some node holds no copy, and its get goes over the network.
    let flags = ["--set", "k=2"];
    let first = start_node_env("", &flags, &env);
    first.wait_log("exporting traces over OTLP", Duration::from_secs(20));
    first.wait_healthy();
    let mut nodes: Vec<NodeProc> = vec![first];
    for _ in 0..3 {
        let n = start_node_env(&nodes[0].addr, &flags, &env);
        n.wait_healthy();
        nodes.push(n);
    }
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for n in &nodes {
            let info = client(&n.addr)
                .await
                .info(pb::InfoRequest {})
                .await
                .unwrap()
                .into_inner();
            ids.push(info.node_id);
        }
        ids
    };
    // Every node knows two others before the writes (k = 2 contacts per bucket).
    let deadline = Instant::now() + Duration::from_secs(20);
    for n in &nodes {
        loop {
            let info = client(&n.addr)
                .await
                .info(pb::InfoRequest {})
                .await
                .unwrap();
            if info.into_inner().peers >= 2 {
                break;
            }
            assert!(Instant::now() < deadline, "the network never formed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // The put: its STOREs are children of its write, and each is served on another node.
    let (header, put_trace, put_parent) = traceparent();
    let put = pb::PutRequest {
        key: "traced".into(),
        value: b"across hops".to_vec(),
        ttl_seconds: None,
    };
    client(&nodes[0].addr)
        .await
        .put(with_trace(put, &header))
        .await
        .unwrap();
    let spans = rx.trace(&put_trace, |spans| {
        named(spans, "kademlia.v1.Kademlia/Store")
            .iter()
            .any(|s| s["kind"] == SERVER)
    });
    let roots = named(&spans, "kademlia.v1.Dht/Put");
    assert_eq!(roots.len(), 1, "{}", names(&spans));
    let root = roots[0];
    assert_eq!(
        root["parent_span_id"], put_parent,
        "the put continues the caller's trace"
    );
    assert_eq!(root["kind"], SERVER);
    assert_eq!(root["service"], "kademlia", "the default service name");
    assert_eq!(attr(root, "kademlia.node.id"), ids[0]);
    assert_eq!(attr(root, "rpc.grpc.status_code"), "0");
    let writes: Vec<&Value> = children(&spans, root)
        .into_iter()
        .filter(|s| s["name"] == "write")
        .collect();
    assert_eq!(writes.len(), 1, "{}", names(&spans));
    let stores: Vec<&Value> = children(&spans, writes[0])
        .into_iter()
        .filter(|s| s["kind"] == CLIENT)
        .collect();
    assert!(!stores.is_empty(), "{}", names(&spans));
    assert!(check_hops(&spans, &stores, "Store") >= 1);

    // The get, from a node that holds no copy.
    let mut traced_get = None;
    for (i, n) in nodes.iter().enumerate() {
        let (header, trace, parent) = traceparent();
        let got = client(&n.addr)
            .await
            .get(with_trace(
                pb::GetRequest {
                    key: "traced".into(),
                },
                &header,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.value, b"across hops");
        if !got.local {
            traced_get = Some((i, trace, parent));
            break;
        }
    }
    let (at, trace, parent) = traced_get.expect("with k = 2 of 4, some node holds no copy");
    let spans = rx.trace(&trace, |spans| {
        named(spans, "kademlia.v1.Kademlia/FindValue")
            .iter()
            .any(|s| s["kind"] == SERVER)
            && !named(spans, "lookup").is_empty()
    });
    let roots = named(&spans, "kademlia.v1.Dht/Get");
    assert_eq!(roots.len(), 1, "{}", names(&spans));
    let root = roots[0];
    assert_eq!(root["parent_span_id"], parent);
    assert_eq!(attr(root, "kademlia.node.id"), ids[at]);
    let lookups: Vec<&Value> = children(&spans, root)
        .into_iter()
        .filter(|s| s["name"] == "lookup")
        .collect();
    assert_eq!(lookups.len(), 1, "{}", names(&spans));
    let lookup = lookups[0];
    assert_eq!(attr(lookup, "kademlia.lookup.kind"), "find_value");
    assert_eq!(attr(lookup, "kademlia.lookup.outcome"), "found");
    let rounds = children(&spans, lookup);
    assert!(!rounds.is_empty(), "{}", names(&spans));
    let mut queries = Vec::new();
    for round in &rounds {
        assert_eq!(round["name"], "lookup round");
        assert!(!attr(round, "kademlia.round").is_empty());
        queries.extend(children(&spans, round));
    }
    assert!(!queries.is_empty(), "{}", names(&spans));
    for q in &queries {
        assert_eq!(
            attr(q, "kademlia.round"),
            attr(
                rounds
                    .iter()
                    .find(|r| r["span_id"] == q["parent_span_id"])
                    .unwrap(),
                "kademlia.round"
            )
        );
    }
    assert!(check_hops(&spans, &queries, "FindValue") >= 1);
    let answered: Vec<&&Value> = queries
        .iter()
        .filter(|q| attr(q, "kademlia.outcome") == "ok")
        .collect();
    assert!(!answered.is_empty(), "some FIND_VALUE was answered");
    let processes: HashSet<&str> = spans
        .iter()
        .filter_map(|s| s["instance"].as_str())
        .collect();
    assert!(
        processes.len() >= 2,
        "spans from at least two nodes: {}",
        names(&spans)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_go_over_http_by_default_and_are_flushed_at_sigterm() {
    let rx = receiver();
    let endpoint = format!("http://127.0.0.1:{}", rx.http);
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        // Nothing is exported on a timer during the test: only the flush at exit.
        ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
        ("OTEL_SERVICE_NAME", "dht-under-test"),
    ];
    let mut node = start_node_env("", &[], &env);
    node.wait_healthy();
    let (header, trace, parent) = traceparent();
    let put = pb::PutRequest {
        key: "flushed".into(),
        value: b"at exit".to_vec(),
        ttl_seconds: None,
    };
    client(&node.addr)
        .await
        .put(with_trace(put, &header))
        .await
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        rx.spans().is_empty(),
        "nothing is exported before the schedule delay or the exit"
    );
    sigterm(&node.child);
    let status = wait_exit(&mut node.child, Duration::from_secs(20), "SIGTERM");
    assert!(status.success(), "{status}");
    let spans = rx.trace(&trace, |spans| {
        !named(spans, "kademlia.v1.Dht/Put").is_empty()
    });
    let root = named(&spans, "kademlia.v1.Dht/Put")[0];
    assert_eq!(root["parent_span_id"], parent);
    assert_eq!(
        root["service"], "dht-under-test",
        "OTEL_SERVICE_NAME is honoured"
    );
}

#[test]
fn a_protocol_the_node_cannot_speak_stops_it_at_start() {
    let port = common::free_port().to_string();
    let out = Command::new(BIN)
        .args(["node", "--host", "127.0.0.1", "--port", &port])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .env("P2P_REMOTE_HOST", "")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL=http/json is not supported"),
        "{stderr}"
    );
}
