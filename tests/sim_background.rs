//! Background traffic of a quiet network whose nodes advertise DNS names while the bootstrap
//! name resolves to IP addresses, as on Kubernetes (a headless Service's pod IPs, pods
//! advertising `pod.service` names): re-bootstrap must not ping every pod and rerun its
//! self-lookup every interval because no contact's address matches an IP (issue 12, part 3).
//!
//! Runs on tokio's paused clock: minutes of maintenance take no real time.

use crate::common;

use std::time::Duration;

use common::{SimNet, sim_config};
use kademlia::NodeId;
use rand::SeedableRng;

const NODES: usize = 12;
const REBOOTSTRAP: Duration = Duration::from_secs(30);

#[tokio::test(start_paused = true)]
async fn a_quiet_network_behind_a_name_of_pod_ips_stays_quiet() {
    let mut sim = SimNet::new(5);
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let ip = |i: usize| format!("10.0.0.{}:50051", i + 1);
    for i in 0..NODES {
        let addr = format!("node-{i}.peers.default.svc:50051");
        let mut cfg = sim_config(NodeId::random(&mut rng), &addr, Some("peers".into()));
        cfg.rebootstrap_interval = REBOOTSTRAP;
        cfg.bootstrap_backoff_max = Duration::from_millis(500);
        // The name lists the pods created so far, this one included.
        sim.net.register_name("peers", (0..=i).map(ip).collect());
        let n = sim.add_with(cfg);
        sim.net.attach(&ip(i), sim.nodes[n].inbound.clone());
        assert!(
            tokio::time::timeout(Duration::from_secs(60), sim.nodes[n].handle.wait_joined())
                .await
                .expect("joined in time")
        );
    }
    for n in &sim.nodes {
        assert_eq!(
            common::peers_once(&n.handle, NODES - 1).await,
            NODES - 1,
            "{} knows every other node",
            n.addr
        );
    }
    // Let the joins' follow-up work settle, then count five minutes: ten re-bootstraps.
    tokio::time::sleep(Duration::from_secs(120)).await;
    let before = sim.net.stats();
    let window = Duration::from_secs(300);
    tokio::time::sleep(window).await;
    let after = sim.net.stats();
    let sent = after.sent - before.sent;
    let per_node_minute = sent as f64 / NODES as f64 / (window.as_secs_f64() / 60.0);
    eprintln!(
        "{sent} messages in {window:?} ({} FIND_NODE): {per_node_minute:.2} per node per minute",
        after.find_node - before.find_node
    );
    // Pinging every pod at each re-bootstrap alone would be (NODES - 1) * 2 per node per
    // minute, 22 here, before the self-lookups it triggers.
    assert!(
        per_node_minute < 2.0,
        "{per_node_minute:.2} messages per node per minute in a quiet network"
    );
    sim.shutdown().await;
}
