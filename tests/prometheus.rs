//! A real Prometheus (Debian's, unpacked into .tools/ by scripts/setup-tools.sh) scrapes the
//! `/metrics` of a small network of nodes on loopback: every target is up, and a query for
//! the rate of peer calls served returns a series per node.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, try_http};
use kademlia::pb;

/// The Prometheus process, killed on drop.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn prometheus_bin() -> String {
    format!(
        "{}/.tools/prometheus/usr/bin/prometheus",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Polls Prometheus' HTTP API at `path` until `done` accepts the JSON answer (20 s at most).
async fn until(
    addr: &str,
    path: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok((200, _, body)) = try_http(addr, "GET", path).await
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&body)
            && done(&v)
        {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never answered {path} as expected"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_every_node_and_sees_peer_calls_on_each() {
    let (nodes, targets) = common::network_with_http(3).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    let quoted: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  \
             - job_name: kademlia\n    static_configs:\n      - targets: [{}]\n",
            quoted.join(", ")
        ),
    )
    .unwrap();
    let web = format!("127.0.0.1:{}", free_port());
    let _prometheus = Prometheus(
        Command::new(prometheus_bin())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}); run scripts/setup-tools.sh",
                    prometheus_bin()
                )
            }),
    );
    // Traffic between the nodes while Prometheus scrapes: puts through each node.
    let traffic = async {
        for round in 0..20 {
            for (i, n) in nodes.iter().enumerate() {
                let mut dht = n.client().await;
                let req = pb::PutRequest {
                    key: format!("k-{round}-{i}"),
                    value: b"v".to_vec(),
                    ttl_seconds: None,
                };
                dht.put(req).await.expect("a put");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    let up = async {
        until(&web, "/api/v1/targets", |v| {
            let active = v["data"]["activeTargets"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            active.len() == 3 && active.iter().all(|t| t["health"] == "up")
        })
        .await
    };
    let (_, targets_answer) = tokio::join!(traffic, up);
    assert_eq!(
        targets_answer["data"]["activeTargets"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let query = "/api/v1/query?query=sum%20by%20(instance)%20(rate(rpc_server_call_duration_seconds_count%7Brpc_service%3D%22kademlia.v1.Kademlia%22%7D%5B5s%5D))";
    let answer = until(&web, query, |v| {
        let series = v["data"]["result"].as_array().cloned().unwrap_or_default();
        series.len() == 3
    })
    .await;
    let instances: Vec<&str> = answer["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["metric"]["instance"].as_str().unwrap())
        .collect();
    for t in &targets {
        assert!(
            instances.contains(&t.as_str()),
            "{t} missing from {instances:?}"
        );
    }
    for n in nodes {
        n.stop().await;
    }
}
