//! End-to-end tests over real gRPC on loopback.

use crate::common;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use common::{GrpcNode, loopback_listener};
use futures::StreamExt;
use kademlia::NodeId;
use kademlia::node::NodeConfig;
use kademlia::pb;
use rand::{Rng, SeedableRng, rngs::StdRng};
use tonic::Code;

fn config(addr: &str, remote: Option<String>) -> NodeConfig {
    let mut cfg = NodeConfig::new(NodeId::random(&mut rand::rng()), addr);
    cfg.remote_host = remote;
    cfg.bootstrap_backoff_max = Duration::from_millis(500);
    cfg
}

/// Starts `n` nodes at the same moment; node 0 creates the network and starts last, so the
/// others must retry until it is up.
async fn start_network(n: usize) -> Vec<GrpcNode> {
    let mut listeners = Vec::new();
    for _ in 0..n {
        listeners.push(loopback_listener().await);
    }
    let seed = listeners[0].1.clone();
    let starts = listeners.into_iter().enumerate().map(|(i, (l, addr))| {
        let remote = (i != 0).then(|| seed.clone());
        async move {
            if i == 0 {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            GrpcNode::start(l, config(&addr, remote)).await
        }
    });
    let nodes: Vec<GrpcNode> = futures::future::join_all(starts).await;
    let joins = futures::future::join_all(nodes.iter().map(|n| n.handle.wait_joined()));
    let joined = tokio::time::timeout(Duration::from_secs(60), joins)
        .await
        .expect("all nodes joined in time");
    assert!(joined.into_iter().all(|j| j));
    nodes
}

/// Every node is reachable from every other through routing-table links, within a few
/// seconds of joining: a node learns a joiner once the joiner answered its PING (see
/// `Core::heard_from`), one round trip after the joiner's own lookup may have ended.
async fn assert_one_network(nodes: &[GrpcNode]) {
    let started = std::time::Instant::now();
    loop {
        match one_network(nodes).await {
            Ok(()) => return,
            Err(e) if started.elapsed() > Duration::from_secs(10) => panic!("{e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn one_network(nodes: &[GrpcNode]) -> Result<(), String> {
    let mut edges: HashMap<String, Vec<String>> = HashMap::new();
    for n in nodes {
        let table = n
            .client()
            .await
            .routing_table(pb::RoutingTableRequest {})
            .await
            .unwrap()
            .into_inner();
        let peers = table
            .buckets
            .iter()
            .flat_map(|b| b.contacts.iter().map(|c| c.address.clone()))
            .collect();
        edges.insert(n.addr.clone(), peers);
    }
    for start in nodes {
        let mut seen = HashSet::from([start.addr.clone()]);
        let mut queue = VecDeque::from([start.addr.clone()]);
        while let Some(a) = queue.pop_front() {
            for b in edges.get(&a).into_iter().flatten() {
                if seen.insert(b.clone()) {
                    queue.push_back(b.clone());
                }
            }
        }
        if seen.len() != nodes.len() {
            return Err(format!(
                "{} reaches only {} of {} nodes",
                start.addr,
                seen.len(),
                nodes.len()
            ));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_nodes_started_together_form_one_network_and_serve_500_keys() {
    let nodes = start_network(50).await;
    assert_one_network(&nodes).await;

    let mut clients = Vec::new();
    for n in &nodes {
        clients.push(n.client().await);
    }
    let mut rng = StdRng::seed_from_u64(50);
    let picks: Vec<(usize, usize)> = (0..500)
        .map(|_| (rng.random_range(0..50), rng.random_range(0..50)))
        .collect();

    let puts = picks.iter().enumerate().map(|(i, (p, _))| {
        let mut c = clients[*p].clone();
        async move {
            let req = pb::PutRequest {
                key: format!("key-{i}"),
                value: format!("value-{i}").into_bytes(),
                ttl_seconds: None,
            };
            (i, c.put(req).await)
        }
    });
    for (i, r) in futures::stream::iter(puts)
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
    {
        let r = r
            .unwrap_or_else(|s| panic!("put key-{i}: {s}"))
            .into_inner();
        assert!(r.replicas >= 3, "key-{i} on {} replicas", r.replicas);
    }
    let gets = picks.iter().enumerate().map(|(i, (_, g))| {
        let mut c = clients[*g].clone();
        async move {
            (
                i,
                c.get(pb::GetRequest {
                    key: format!("key-{i}"),
                })
                .await,
            )
        }
    });
    for (i, r) in futures::stream::iter(gets)
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
    {
        let r = r
            .unwrap_or_else(|s| panic!("get key-{i}: {s}"))
            .into_inner();
        assert_eq!(r.value, format!("value-{i}").into_bytes());
    }

    // Delete through one node; every node then answers NOT_FOUND, after at most a moment of
    // the old value (the delete answers at its quorum, its other STOREs land just after).
    clients[3]
        .delete(pb::DeleteRequest {
            key: "key-7".into(),
        })
        .await
        .unwrap();
    for c in clients.iter_mut().step_by(5) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match c
                .get(pb::GetRequest {
                    key: "key-7".into(),
                })
                .await
            {
                Err(s) if s.code() == Code::NotFound => break,
                Err(s) => panic!("get key-7 after its delete: {s}"),
                Ok(r) => {
                    assert_eq!(
                        r.into_inner().value,
                        b"value-7",
                        "neither deleted nor the old value"
                    );
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "key-7 still read 10 s after its delete"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
    for n in nodes {
        n.stop().await;
    }
}

fn header(id: Vec<u8>, addr: &str, network: &str) -> Option<pb::Header> {
    Some(pb::Header {
        sender: Some(pb::Contact {
            node_id: id,
            address: addr.into(),
            incarnation: 0,
        }),
        network_id: network.into(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_statuses_and_the_node_keeps_serving() {
    let (l, addr) = loopback_listener().await;
    // Quorum 1: the node learns one well-formed sender below (127.0.0.1:9, where nothing
    // listens), and a quorum counts every node this node knows, answering or not.
    let mut cfg = config(&addr, None);
    cfg.quorum = 1;
    let node = GrpcNode::start(l, cfg).await;
    node.handle.wait_joined().await;
    let mut dht = node.client().await;

    let s = dht
        .put(pb::PutRequest {
            key: String::new(),
            value: b"x".to_vec(),
            ttl_seconds: None,
        })
        .await
        .unwrap_err();
    assert_eq!(
        (s.code(), s.message()),
        (Code::InvalidArgument, "key must not be empty")
    );
    let s = dht
        .put(pb::PutRequest {
            key: "big".into(),
            value: vec![7; 65_537],
            ttl_seconds: None,
        })
        .await
        .unwrap_err();
    assert_eq!(
        (s.code(), s.message()),
        (
            Code::InvalidArgument,
            "value is 65537 bytes, the maximum is 65536"
        )
    );
    // A TTL above max_ttl_secs (a year by default) is refused, and nothing is stored.
    let s = dht
        .put(pb::PutRequest {
            key: "forever-and-a-day".into(),
            value: b"x".to_vec(),
            ttl_seconds: Some(366 * 86_400),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s}");
    assert!(
        s.message().contains("exceeds max_ttl_secs (31536000)"),
        "{}",
        s.message()
    );
    let s = dht
        .get(pb::GetRequest { key: String::new() })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);

    let channel = kademlia::cli::client::endpoint(&addr)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut peer = pb::kademlia_client::KademliaClient::new(channel);
    let s = peer
        .ping(pb::PingRequest {
            header: header(vec![1; 19], "127.0.0.1:9", "kademlia"),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(
        s.message().contains("exactly 20 bytes, got 19"),
        "{}",
        s.message()
    );
    let s = peer
        .find_node(pb::FindNodeRequest {
            header: header(vec![1; 20], "127.0.0.1:9", "kademlia"),
            target: vec![0; 21],
            count: 0,
        })
        .await
        .unwrap_err();
    assert!(
        s.code() == Code::InvalidArgument && s.message().starts_with("target"),
        "{s}"
    );
    let s = peer
        .ping(pb::PingRequest {
            header: header(vec![1; 20], "127.0.0.1:9", "another-net"),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::FailedPrecondition);
    assert!(
        s.message().contains("network id mismatch"),
        "{}",
        s.message()
    );
    let s = peer
        .ping(pb::PingRequest { header: None })
        .await
        .unwrap_err();
    assert_eq!(
        (s.code(), s.message()),
        (Code::InvalidArgument, "header: missing")
    );
    // A STORE of a record bigger than the node allows is refused, not stored.
    let record = pb::Record {
        key: vec![3; 20],
        value: vec![0; 70_000],
        version: 1,
        expires_at_ms: u64::MAX,
        tombstone: false,
        publisher: vec![1; 20],
        user_key: "x".into(),
    };
    let s = peer
        .store(pb::StoreRequest {
            header: header(vec![1; 20], "127.0.0.1:9", "kademlia"),
            record: Some(record),
            cached: false,
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s}");

    // None of that hurt the node: it still stores and serves, and learned no malformed contacts.
    dht.put(pb::PutRequest {
        key: "still".into(),
        value: b"alive".to_vec(),
        ttl_seconds: None,
    })
    .await
    .unwrap();
    let got = dht
        .get(pb::GetRequest {
            key: "still".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.value, b"alive");
    let info = dht.info(pb::InfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.records, 1);
    // Only the well-formed sender from the right network (whose STORE was merely too big)
    // was learned: its connection came from 127.0.0.1, the IP of the address it claims. The
    // malformed and foreign ones were not.
    let table = dht
        .routing_table(pb::RoutingTableRequest {})
        .await
        .unwrap()
        .into_inner();
    let learned: Vec<String> = table
        .buckets
        .iter()
        .flat_map(|b| b.contacts.iter().map(|c| c.node_id.clone()))
        .collect();
    assert_eq!(learned, vec!["01".repeat(20)]);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_remote_host_keeps_node_serving_but_not_joined() {
    let (l, addr) = loopback_listener().await;
    // Port 9 on loopback: nothing listens there.
    let node = GrpcNode::start(l, config(&addr, Some("127.0.0.1:9".into()))).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut dht = node.client().await;
    let info = dht.info(pb::InfoRequest {}).await.unwrap().into_inner();
    assert!(!info.joined);
    let s = dht
        .put(pb::PutRequest {
            key: "k".into(),
            value: b"v".to_vec(),
            ttl_seconds: None,
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unavailable);
    assert!(s.message().contains("not joined"), "{}", s.message());
    use tonic_health::pb::health_check_response::ServingStatus;
    let readiness = kademlia::cli::client::health_status(&addr, "")
        .await
        .unwrap();
    assert_eq!(readiness, ServingStatus::NotServing);
    // Liveness is separate from readiness: the process is alive while it waits to join.
    let liveness = kademlia::net::grpc::server::LIVENESS_SERVICE;
    let live = kademlia::cli::client::health_status(&addr, liveness)
        .await
        .unwrap();
    assert_eq!(live, ServingStatus::Serving);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_reports_not_serving_and_stops() {
    let (l, addr) = loopback_listener().await;
    let node = GrpcNode::start(l, config(&addr, None)).await;
    node.handle.wait_joined().await;
    let started = std::time::Instant::now();
    node.stop().await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        kademlia::cli::client::connect(&addr).await.is_err(),
        "server still accepts after shutdown"
    );
}

/// Values above tonic's default 4 MiB message limit are readable from other nodes when
/// `max_value_bytes` allows them (peers' replies are decoded up to the same bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_of_5_mib_is_readable_from_another_node() {
    let mut nodes = Vec::new();
    let mut seed = None;
    for _ in 0..3 {
        let (l, addr) = loopback_listener().await;
        let mut cfg = config(&addr, seed.clone());
        cfg.max_value_bytes = 6 << 20;
        cfg.quorum = 2;
        seed.get_or_insert(addr);
        let node = GrpcNode::start(l, cfg).await;
        assert!(node.handle.wait_joined().await);
        nodes.push(node);
    }
    let value: Vec<u8> = (0..5 << 20).map(|i| (i % 251) as u8).collect();
    let w = nodes[0]
        .handle
        .put("big".into(), value.clone(), None)
        .await
        .expect("put 5 MiB");
    assert!(w.stored_at.len() >= 2, "{:?}", w.stored_at);
    for n in &nodes[1..] {
        let got = n.handle.get("big".into()).await.expect("get 5 MiB");
        assert_eq!(got.value.len(), value.len());
        assert!(got.value == value, "{} read another value", n.addr);
    }
    for n in nodes {
        n.stop().await;
    }
}

/// A flood of peer requests (4,000 PINGs at once over 4 connections, bounded in count) does
/// not starve clients: puts and gets made during it succeed, health answers, and every PING
/// answers OK or RESOURCE_EXHAUSTED ("overloaded"), never an unknown transport error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_flood_is_shed_clearly_and_clients_keep_their_share() {
    let (l, addr) = loopback_listener().await;
    let node = GrpcNode::start(l, config(&addr, None)).await;
    node.handle.wait_joined().await;
    let mut peers = Vec::new();
    for _ in 0..4 {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        peers.push(pb::kademlia_client::KademliaClient::new(channel));
    }
    let flood = futures::future::join_all((0..4000u32).map(|i| {
        let mut peer = peers[i as usize % 4].clone();
        async move {
            let mut id = vec![0u8; 20];
            id[..4].copy_from_slice(&i.to_be_bytes());
            peer.ping(pb::PingRequest {
                header: header(id, "127.0.0.2:9", "kademlia"),
            })
            .await
        }
    }));
    let client = async {
        let mut dht = node.client().await;
        let mut ok = 0;
        for i in 0..20 {
            let key = format!("during-flood-{i}");
            dht.put(pb::PutRequest {
                key: key.clone(),
                value: b"v".to_vec(),
                ttl_seconds: None,
            })
            .await
            .expect("a put during the flood");
            let got = dht
                .get(pb::GetRequest { key })
                .await
                .expect("a get during the flood");
            assert_eq!(got.into_inner().value, b"v");
            ok += 1;
        }
        ok
    };
    let (pings, ok) = tokio::join!(flood, client);
    assert_eq!(ok, 20);
    let mut answered = 0;
    let mut shed = 0;
    for r in pings {
        match r {
            Ok(_) => answered += 1,
            Err(s) if s.code() == Code::ResourceExhausted => {
                assert!(s.message().contains("overloaded"), "{s}");
                shed += 1;
            }
            Err(s) => panic!("a PING failed with {s}"),
        }
    }
    eprintln!("peer flood: {answered} answered, {shed} shed");
    assert_eq!(answered + shed, 4000);
    let status = kademlia::cli::client::health_status(&addr, "")
        .await
        .unwrap();
    assert_eq!(status as i32, 1, "health: {status:?}"); // SERVING
    node.stop().await;
}

/// One source beyond `peer_rate_limit` is refused with RESOURCE_EXHAUSTED naming the limit,
/// while the client service (not rate limited) keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_beyond_its_peer_rate_is_refused_and_clients_are_served() {
    let (l, addr) = loopback_listener().await;
    let mut cfg = config(&addr, None);
    cfg.peer_rate_limit = 20;
    let node = GrpcNode::start(l, cfg).await;
    node.handle.wait_joined().await;
    let mut peer = pb::kademlia_client::KademliaClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let (mut answered, mut limited) = (0, 0);
    for i in 0..200u32 {
        let mut id = vec![0u8; 20];
        id[..4].copy_from_slice(&i.to_be_bytes());
        let r = peer
            .ping(pb::PingRequest {
                header: header(id, "127.0.0.2:9", "kademlia"),
            })
            .await;
        match r {
            Ok(_) => answered += 1,
            Err(s) if s.code() == Code::ResourceExhausted => {
                assert!(s.message().contains("20 peer requests per second"), "{s}");
                limited += 1;
            }
            Err(s) => panic!("a PING failed with {s}"),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!("rate limit: {answered} answered, {limited} refused in {secs:.2} s");
    // A burst of 40, then 20 per second.
    assert!(answered >= 40, "{answered}");
    assert!(
        f64::from(answered) <= 40.0 + 20.0 * secs + 1.0,
        "{answered} in {secs} s"
    );
    assert_eq!(answered + limited, 200);
    let mut dht = node.client().await;
    for i in 0..50 {
        dht.get(pb::GetRequest {
            key: format!("k{i}"),
        })
        .await
        .map(|_| ())
        .or_else(|s| (s.code() == Code::NotFound).then_some(()).ok_or(s))
        .expect("the client service is not rate limited");
    }
    node.stop().await;
}
