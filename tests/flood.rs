//! A flood of concurrent client and peer requests against one `kademlia node` process
//! (bounded in count, loopback only): the node sheds what it cannot take with
//! RESOURCE_EXHAUSTED saying it is overloaded, answers health throughout, keeps its memory
//! bounded (peak RSS, read from /proc, within what the pods' 128 MiB limit leaves beside a
//! full store), and every put it
//! acknowledged reads back afterwards.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::free_port;
use kademlia::pb;
use tonic::Code;

const BIN: &str = env!("CARGO_BIN_EXE_kademlia");
/// Peer requests (PING and FIND_NODE), gets and puts sent at once.
const PEER_REQUESTS: usize = 6000;
const GETS: usize = 3000;
const PUTS: usize = 600;
/// Connections each side spreads its requests over (a connection takes 1024 streams).
const CONNECTIONS: usize = 8;
/// The pods' memory limit (deploy/base) less what their records may take there
/// (`max_store_bytes`, 64 MiB): the room everything else must fit in, under a flood too.
const ROOM_BESIDE_RECORDS: u64 = (128 << 20) - (64 << 20);

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `VmHWM` (peak resident set) and `VmRSS` of a process, in bytes.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmHWM:"), field("VmRSS:"))
}

async fn channels(addr: &str) -> Vec<tonic::transport::Channel> {
    let mut out = Vec::new();
    for _ in 0..CONNECTIONS {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();
        out.push(endpoint.connect().await.expect("connect"));
    }
    out
}

fn header(i: usize) -> Option<pb::Header> {
    let mut id = vec![0xaa; 20];
    id[..8].copy_from_slice(&(i as u64).to_be_bytes());
    Some(pb::Header {
        sender: Some(pb::Contact {
            node_id: id,
            address: format!("127.0.0.2:{}", 1000 + i % 50_000),
            incarnation: 0,
        }),
        network_id: "kademlia".into(),
    })
}

/// Whether the node's health service answers SERVING.
async fn serving(addr: &str) -> bool {
    kademlia::cli::client::health_status(addr, "")
        .await
        .is_ok_and(|s| s as i32 == 1)
}

/// Sorts an outcome: answered, or shed with a status that says the node is overloaded.
/// Anything else fails the test.
fn shed<T>(what: &str, r: Result<T, tonic::Status>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(s) if s.code() == Code::ResourceExhausted && s.message().contains("overloaded") => None,
        Err(s) => panic!("a {what} failed with neither an answer nor a shed: {s}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_shed_clearly_with_bounded_memory_and_no_acknowledged_write_lost() {
    let (port, peer_port) = (free_port(), free_port());
    let node = Node(
        Command::new(BIN)
            .args(["node", "--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--peer-port", &peer_port.to_string()])
            .env("P2P_REMOTE_HOST", "")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn kademlia node"),
    );
    let pid = node.0.id();
    let client_addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !serving(&client_addr).await {
        assert!(Instant::now() < deadline, "the node never became healthy");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (idle_peak, _) = memory(pid);
    let peers = channels(&format!("127.0.0.1:{peer_port}")).await;
    let clients = channels(&client_addr).await;

    let peer_flood = futures::future::join_all((0..PEER_REQUESTS).map(|i| {
        let mut peer = pb::kademlia_client::KademliaClient::new(peers[i % CONNECTIONS].clone());
        async move {
            let r = if i % 2 == 0 {
                peer.ping(pb::PingRequest { header: header(i) })
                    .await
                    .map(|_| ())
            } else {
                let target = vec![(i % 256) as u8; 20];
                let req = pb::FindNodeRequest {
                    header: header(i),
                    target,
                    count: 0,
                };
                peer.find_node(req).await.map(|_| ())
            };
            shed("peer request", r).is_some()
        }
    }));
    let gets = futures::future::join_all((0..GETS).map(|i| {
        let mut dht = pb::dht_client::DhtClient::new(clients[i % CONNECTIONS].clone());
        async move {
            let r = dht
                .get(pb::GetRequest {
                    key: format!("absent-{i}"),
                })
                .await;
            match r {
                Err(s) if s.code() == Code::NotFound => true,
                other => shed("get", other).is_some(),
            }
        }
    }));
    let puts = futures::future::join_all((0..PUTS).map(|i| {
        let mut dht = pb::dht_client::DhtClient::new(clients[i % CONNECTIONS].clone());
        async move {
            let key = format!("flood-{i}");
            let req = pb::PutRequest {
                key: key.clone(),
                value: key.clone().into_bytes(),
                ttl_seconds: None,
            };
            shed("put", dht.put(req).await).map(|_| key)
        }
    }));
    // Health, asked while the flood is under way.
    let health = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        serving(&client_addr).await
    };
    let started = Instant::now();
    let (peer_answers, get_answers, acked, health) = tokio::join!(peer_flood, gets, puts, health);
    let took = started.elapsed();
    assert!(health, "health during the flood");
    let (peak, rss) = memory(pid);
    let count = |v: &[bool]| v.iter().filter(|a| **a).count();
    let acked: Vec<String> = acked.into_iter().flatten().collect();
    eprintln!(
        "flood of {} requests in {took:?}: peers {} answered / {PEER_REQUESTS}, gets {} / {GETS}, \
         puts {} acknowledged / {PUTS}; peak RSS {:.1} MiB (idle {:.1} MiB), RSS after {:.1} MiB",
        PEER_REQUESTS + GETS + PUTS,
        count(&peer_answers),
        count(&get_answers),
        acked.len(),
        peak as f64 / 1048576.0,
        idle_peak as f64 / 1048576.0,
        rss as f64 / 1048576.0,
    );
    assert!(
        peak < ROOM_BESIDE_RECORDS,
        "peak RSS {peak} bytes under the flood"
    );
    // Clients keep a share: some of every kind got through.
    assert!(count(&get_answers) > 0 && !acked.is_empty() && count(&peer_answers) > 0);

    // Every acknowledged put reads back.
    let mut dht = pb::dht_client::DhtClient::new(clients[0].clone());
    for key in &acked {
        let got = dht
            .get(pb::GetRequest { key: key.clone() })
            .await
            .unwrap_or_else(|s| panic!("acknowledged {key} is lost: {s}"));
        assert_eq!(got.into_inner().value, key.as_bytes());
    }
    drop(node);
}
