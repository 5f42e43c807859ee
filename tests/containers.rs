//! Container tests with testcontainers, against the image scripts/build-image.sh builds
//! offline (scripts/test.sh builds it first). Each test uses its own user-defined network and
//! container names; testcontainers removes containers and networks when they drop.

use std::process::Command;
use std::time::Duration;

use kademlia::pb;
use rand::Rng;
use rand::seq::IndexedRandom;
use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

const IMAGE: &str = "kademlia";
const TAG: &str = "latest";

fn require_image() {
    let ok = Command::new("docker")
        .args(["image", "inspect", &format!("{IMAGE}:{TAG}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "image {IMAGE}:{TAG} is missing: run scripts/build-image.sh (scripts/test.sh does)"
    );
}

fn suffix() -> String {
    format!("{:06x}", rand::rng().random::<u32>() & 0xff_ffff)
}

async fn start_node(network: &str, name: &str, remote: &str) -> ContainerAsync<GenericImage> {
    GenericImage::new(IMAGE, TAG)
        .with_exposed_port(50051.tcp())
        .with_wait_for(WaitFor::message_on_stderr("gRPC server listening"))
        .with_network(network)
        .with_container_name(name)
        .with_env_var("P2P_REMOTE_HOST", remote)
        .with_env_var("KADEMLIA_NODE_ID", name)
        .with_env_var("KADEMLIA_NETWORK_ID", "containers")
        .with_env_var("KADEMLIA_BOOTSTRAP_BACKOFF_MAX_MS", "1000")
        .with_env_var("KADEMLIA_REBOOTSTRAP_INTERVAL_SECS", "2")
        .start()
        .await
        .unwrap_or_else(|e| panic!("start container {name}: {e}"))
}

/// The container's gRPC port as published on the host's loopback.
async fn addr(c: &ContainerAsync<GenericImage>) -> String {
    format!(
        "127.0.0.1:{}",
        c.get_host_port_ipv4(50051.tcp())
            .await
            .expect("published port")
    )
}

async fn info(addr: &str) -> Option<pb::InfoResponse> {
    let mut c = kademlia::cli::client::connect(addr).await.ok()?;
    c.info(pb::InfoRequest {})
        .await
        .ok()
        .map(|r| r.into_inner())
}

async fn wait_joined(addr: &str, within: Duration) -> pb::InfoResponse {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(i) = info(addr)
            .await
            .filter(|i| i.joined && (i.peers > 0 || i.address.is_empty()))
        {
            return i;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node at {addr} did not join within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn put(addr: &str, key: &str, value: &str) {
    let mut c = kademlia::cli::client::connect(addr).await.unwrap();
    let req = pb::PutRequest {
        key: key.into(),
        value: value.as_bytes().to_vec(),
        ttl_seconds: None,
    };
    c.put(req)
        .await
        .unwrap_or_else(|s| panic!("put {key} via {addr}: {s}"));
}

async fn get(addr: &str, key: &str) -> Result<Vec<u8>, tonic::Status> {
    let mut c = kademlia::cli::client::connect(addr)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    c.get(pb::GetRequest { key: key.into() })
        .await
        .map(|r| r.into_inner().value)
}

fn sigkill(c: &ContainerAsync<GenericImage>) {
    let out = Command::new("docker")
        .args(["kill", "--signal", "KILL", c.id()])
        .output()
        .expect("docker kill");
    assert!(
        out.status.success(),
        "docker kill: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_containers_survive_sigkill_and_a_restarted_node_rejoins() {
    require_image();
    let tag = suffix();
    let network = format!("kad-tc-{tag}");
    let names: Vec<String> = (0..10).map(|i| format!("kad-{tag}-{i}")).collect();
    // Node 0 creates the network; the others join by name through any listed peer.
    let joiners_remote = names.join(",");
    let first = start_node(&network, &names[0], "").await;
    let rest = futures::future::join_all(
        names[1..]
            .iter()
            .map(|n| start_node(&network, n, &joiners_remote)),
    )
    .await;
    let mut nodes = vec![first];
    nodes.extend(rest);
    let mut addrs = Vec::new();
    for c in &nodes {
        addrs.push(addr(c).await);
    }
    for a in &addrs {
        let i = wait_joined(a, Duration::from_secs(30)).await;
        assert_eq!(i.network_id, "containers");
    }

    // Put through one container, get through another.
    let keys: Vec<String> = (0..60).map(|i| format!("tc-key-{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        put(&addrs[i % 10], k, &format!("v-{k}")).await;
    }
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(
            get(&addrs[(i + 5) % 10], k).await.unwrap(),
            format!("v-{k}").into_bytes(),
            "{k}"
        );
    }

    // SIGKILL three random containers: every value is still readable through the survivors.
    let mut rng = rand::rng();
    let killed: Vec<usize> = rand::seq::index::sample(&mut rng, 10, 3).into_vec();
    for &i in &killed {
        sigkill(&nodes[i]);
    }
    let survivors: Vec<usize> = (0..10).filter(|i| !killed.contains(i)).collect();
    for k in &keys {
        let via = &addrs[*survivors.choose(&mut rng).unwrap()];
        assert_eq!(
            get(via, k)
                .await
                .unwrap_or_else(|s| panic!("{k} via {via}: {s}")),
            format!("v-{k}").into_bytes()
        );
    }

    // Restart a killed joiner: it rejoins through the live peers and serves gets.
    let again = *killed
        .iter()
        .find(|i| **i != 0)
        .expect("at least two joiners were killed");
    nodes[again].start().await.expect("restart container");
    let restarted = addr(&nodes[again]).await;
    let i = wait_joined(&restarted, Duration::from_secs(30)).await;
    assert!(i.peers >= 6, "restarted node knows only {} peers", i.peers);
    for k in &keys {
        assert_eq!(
            get(&restarted, k)
                .await
                .unwrap_or_else(|s| panic!("{k} via restarted node: {s}")),
            format!("v-{k}").into_bytes()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_waits_for_a_bootstrap_host_that_does_not_exist_yet() {
    require_image();
    let tag = suffix();
    let network = format!("kad-tc-{tag}");
    let seed_name = format!("kad-{tag}-seed");
    let joiner = start_node(&network, &format!("kad-{tag}-joiner"), &seed_name).await;
    let joiner_addr = addr(&joiner).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = info(&joiner_addr)
        .await
        .expect("joiner answers while waiting");
    assert!(!before.joined, "joined a network that does not exist yet");
    let logs = String::from_utf8_lossy(&joiner.stderr_to_vec().await.unwrap()).into_owned();
    assert!(
        logs.contains("cannot join yet") && logs.contains(&seed_name),
        "{logs}"
    );

    let seed = start_node(&network, &seed_name, "").await;
    let after = wait_joined(&joiner_addr, Duration::from_secs(20)).await;
    assert_eq!(after.peers, 1);
    put(&joiner_addr, "late", "but joined").await;
    assert_eq!(
        get(&addr(&seed).await, "late").await.unwrap(),
        b"but joined"
    );
}
