//! Separate client and peer ports, and peer mTLS with key-bound ids, over real gRPC on
//! loopback: only nodes with a certificate from the cluster CA join, and no node speaks for an
//! id whose key it does not hold.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::{GrpcNode, loopback_listener};
use kademlia::kad::{Contact, Envelope, Request};
use kademlia::net::tls::{ClusterCa, PeerTls, generate_ca};
use kademlia::net::{Transport, TransportError, grpc::GrpcTransport};
use kademlia::node::NodeConfig;
use kademlia::{Listeners, NodeId, pb};
use tonic::Code;

fn ca() -> ClusterCa {
    let (cert, key) = generate_ca("test cluster CA").unwrap();
    ClusterCa::from_pem(&cert, &key).unwrap()
}

fn tls_for(ca: &ClusterCa) -> Arc<PeerTls> {
    let key = rcgen::KeyPair::generate().unwrap();
    Arc::new(PeerTls::new(ca, &key).unwrap())
}

/// A node with its own peer port; `tls` sets its id to its key's.
async fn start(remote: Option<String>, tls: Option<Arc<PeerTls>>) -> GrpcNode {
    start_with_http(remote, tls, None).await
}

/// [`start`] with an HTTP listener (`/metrics`).
async fn start_with_http(
    remote: Option<String>,
    tls: Option<Arc<PeerTls>>,
    http: Option<tokio::net::TcpListener>,
) -> GrpcNode {
    let (client, _) = loopback_listener().await;
    let (peer, addr) = loopback_listener().await;
    let id = tls
        .as_ref()
        .map_or_else(|| NodeId::random(&mut rand::rng()), |t| t.id());
    let mut cfg = NodeConfig::new(id, addr);
    cfg.remote_host = remote;
    cfg.bootstrap_backoff_max = Duration::from_millis(300);
    cfg.peer_tls = tls;
    let listeners = Listeners {
        client,
        peer: Some(peer),
        http,
    };
    GrpcNode::start(listeners, cfg).await
}

async fn joined(node: &GrpcNode) {
    let ok = tokio::time::timeout(Duration::from_secs(30), node.handle.wait_joined()).await;
    assert!(matches!(ok, Ok(true)), "{} did not join", node.addr);
}

/// The addresses in `node`'s routing table.
async fn table(node: &GrpcNode) -> Vec<String> {
    node.client()
        .await
        .routing_table(pb::RoutingTableRequest {})
        .await
        .unwrap()
        .into_inner()
        .buckets
        .iter()
        .flat_map(|b| b.contacts.iter().map(|c| c.address.clone()))
        .collect()
}

/// Waits until every node knows every other.
async fn all_know_each_other(nodes: &[GrpcNode]) {
    let started = std::time::Instant::now();
    loop {
        let mut missing = None;
        for n in nodes {
            let t = table(n).await;
            if let Some(m) = nodes
                .iter()
                .find(|m| m.addr != n.addr && !t.contains(&m.addr))
            {
                missing = Some(format!("{} does not know {}", n.addr, m.addr));
            }
        }
        match missing {
            None => return,
            Some(m) if started.elapsed() > Duration::from_secs(20) => panic!("{m}"),
            Some(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn put_and_get_across(nodes: &[GrpcNode]) {
    let mut writer = nodes[0].client().await;
    writer
        .put(pb::PutRequest {
            key: "across".into(),
            value: b"the ports".to_vec(),
            ..Default::default()
        })
        .await
        .expect("put through the client port");
    for n in &nodes[1..] {
        let got = n
            .client()
            .await
            .get(pb::GetRequest {
                key: "across".into(),
            })
            .await
            .expect("get through the client port")
            .into_inner();
        assert_eq!(got.value, b"the ports");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_and_clients_are_served_on_their_own_ports() {
    let seed = start(None, None).await;
    let a = start(Some(seed.addr.clone()), None).await;
    let b = start(Some(seed.addr.clone()), None).await;
    for n in [&seed, &a, &b] {
        joined(n).await;
    }
    let nodes = [seed, a, b];
    all_know_each_other(&nodes).await;
    // Contacts carry peer ports: nobody advertises a client port.
    for n in &nodes {
        assert!(
            !table(n)
                .await
                .iter()
                .any(|a| nodes.iter().any(|m| &m.client_addr == a))
        );
    }
    put_and_get_across(&nodes).await;

    // The client port has no peer service, the peer port no client service.
    let n = &nodes[1];
    let mut peer_on_client_port =
        pb::kademlia_client::KademliaClient::connect(format!("http://{}", n.client_addr))
            .await
            .unwrap();
    let err = peer_on_client_port
        .ping(pb::PingRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err}");
    let mut client_on_peer_port = pb::dht_client::DhtClient::connect(format!("http://{}", n.addr))
        .await
        .unwrap();
    let err = client_on_peer_port
        .get(pb::GetRequest {
            key: "across".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err}");
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_certificates_from_the_cluster_ca_form_a_network() {
    let ca = ca();
    let seed = start(None, Some(tls_for(&ca))).await;
    let mut nodes = vec![seed];
    for _ in 0..3 {
        nodes.push(start(Some(nodes[0].addr.clone()), Some(tls_for(&ca))).await);
    }
    for n in &nodes {
        joined(n).await;
    }
    all_know_each_other(&nodes).await;
    put_and_get_across(&nodes).await;
    // Each node's id is its key's: the routing tables hold exactly those ids.
    let info = nodes[1]
        .client()
        .await
        .routing_table(pb::RoutingTableRequest {})
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<String> = info
        .buckets
        .iter()
        .flat_map(|b| b.contacts.iter().map(|c| c.node_id.to_lowercase()))
        .collect();
    for n in nodes.iter().filter(|n| n.addr != nodes[1].addr) {
        let want = n.handle.info().await.unwrap().id.to_hex();
        assert!(ids.contains(&want), "{want} missing from {ids:?}");
    }
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_certificate_from_the_cluster_ca_cannot_join_or_store() {
    let ca = ca();
    let (http, metrics_addr) = loopback_listener().await;
    let seed = start_with_http(None, Some(tls_for(&ca)), Some(http)).await;
    let member = start(Some(seed.addr.clone()), Some(tls_for(&ca))).await;
    joined(&member).await;

    // Another CA's certificate, and no TLS at all.
    let outsider = start(Some(seed.addr.clone()), Some(tls_for(&self::ca()))).await;
    let plaintext = start(Some(seed.addr.clone()), None).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for n in [&outsider, &plaintext] {
        assert!(!*n.handle.joined_watch().borrow(), "{} joined", n.addr);
    }
    for n in [&seed, &member] {
        let t = table(n).await;
        assert!(
            !t.contains(&outsider.addr) && !t.contains(&plaintext.addr),
            "{t:?}"
        );
    }

    // A STORE sent with another CA's certificate never reaches the node.
    let foreign = GrpcTransport::new(Duration::from_secs(2), 0).with_tls(tls_for(&self::ca()));
    let tls = tls_for(&self::ca());
    let store = Envelope {
        sender: Contact::new(tls.id(), "127.0.0.1:9"),
        network_id: "kademlia".into(),
        body: Request::FindNode {
            target: tls.id(),
            count: 0,
        },
    };
    let err = foreign.send(&seed.addr, store).await.unwrap_err();
    assert!(matches!(err, TransportError::Unreachable(..)), "{err}");

    // The seed counted the member's handshakes as accepted and the outsiders' as failed.
    let (_, _, text) = common::http(&metrics_addr, "GET", "/metrics").await;
    let count = |outcome: &str| -> f64 {
        let series = format!("kademlia_peer_tls_handshakes_total{{outcome=\"{outcome}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .map_or(0.0, |v| v.parse().unwrap())
    };
    assert!(count("accepted") >= 1.0, "{text}");
    // The other CA's node, the plaintext node (each retrying its join) and the foreign STORE.
    assert!(count("failed") >= 3.0, "{text}");
    for n in [seed, member, outsider, plaintext] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_certificate_is_not_for_its_claimed_id_is_refused() {
    let ca = ca();
    let honest = start(None, Some(tls_for(&ca))).await;
    joined(&honest).await;

    // A request claiming another id than the certificate's key: UNAUTHENTICATED, as a unary
    // call and as a frame on a stream.
    let mine = tls_for(&ca);
    for streams in [false, true] {
        let transport = GrpcTransport::new(Duration::from_secs(2), 0)
            .with_tls(mine.clone())
            .with_streams(streams);
        let claimed = NodeId::random(&mut rand::rng());
        let forged = Envelope {
            sender: Contact::new(claimed, "127.0.0.1:9"),
            network_id: "kademlia".into(),
            body: Request::Ping,
        };
        let err = transport.send(&honest.addr, forged).await.unwrap_err();
        match &err {
            TransportError::Rejected(_, why) => {
                assert!(
                    why.contains("Unauthenticated") && why.contains("certificate"),
                    "streams {streams}: {why}"
                )
            }
            other => panic!("streams {streams}: expected a refusal, got {other}"),
        }
        // The same request under the certificate's own id is answered.
        let honest_request = Envelope {
            sender: Contact::new(mine.id(), "127.0.0.1:9"),
            network_id: "kademlia".into(),
            body: Request::Ping,
        };
        transport.send(&honest.addr, honest_request).await.unwrap();
    }
    let transport = GrpcTransport::new(Duration::from_secs(2), 0).with_tls(mine.clone());

    // A node whose header claims another id than its certificate's: its replies are refused.
    let (client, _) = loopback_listener().await;
    let (peer, addr) = loopback_listener().await;
    let mut cfg = NodeConfig::new(NodeId::random(&mut rand::rng()), addr);
    cfg.peer_tls = Some(tls_for(&ca));
    let liar = GrpcNode::start(
        Listeners {
            client,
            peer: Some(peer),
            http: None,
        },
        cfg,
    )
    .await;
    let ping = Envelope {
        sender: Contact::new(mine.id(), "127.0.0.1:9"),
        network_id: "kademlia".into(),
        body: Request::Ping,
    };
    let err = transport.send(&liar.addr, ping).await.unwrap_err();
    match &err {
        TransportError::Invalid(_, why) => assert!(why.contains("certificate"), "{why}"),
        other => panic!("expected an invalid reply, got {other}"),
    }
    liar.stop().await;
    honest.stop().await;
}
