//! `/metrics` on the HTTP listener of a node in a small network over real gRPC: served calls
//! counted by service, method and status; routing table and store as they are; the text
//! parses with the Prometheus project's OpenMetrics parser; other paths and methods refused.

use crate::common;

use std::time::Duration;

use common::{http, sample, tools};
use kademlia::pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_calls_and_show_the_node_and_parse_with_the_reference_parser() {
    let (nodes, http_addrs) = common::network_with_http(3).await;
    // Every node knows the other two.
    for n in &nodes {
        assert_eq!(common::peers_once(&n.handle, 2).await, 2);
    }
    let mut dht = nodes[0].client().await;
    for i in 0..5 {
        let key = format!("key-{i}");
        let value = b"v".to_vec();
        dht.put(pb::PutRequest {
            key: key.clone(),
            value,
            ttl_seconds: None,
        })
        .await
        .unwrap();
        dht.get(pb::GetRequest { key }).await.unwrap();
    }
    let missing = dht
        .get(pb::GetRequest {
            key: "absent".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    let (status, head, text) = http(&http_addrs[0], "GET", "/metrics").await;
    assert_eq!(status, 200, "{head}\n{text}");
    assert!(
        head.contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    let call = |service: &str, method: &str, code: u8| {
        format!(
            "rpc_server_call_duration_seconds_count{{rpc_system=\"grpc\",rpc_service=\"{service}\",\
             rpc_method=\"{method}\",rpc_grpc_status_code=\"{code}\"}}"
        )
    };
    assert_eq!(
        sample(&text, &call("kademlia.v1.Dht", "Put", 0)),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, &call("kademlia.v1.Dht", "Get", 0)),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, &call("kademlia.v1.Dht", "Get", 5)),
        Some(1.0),
        "{text}"
    );
    // The other nodes' lookups reached this one as peer calls; their STOREs reached them.
    let peer_calls: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("rpc_server_call_duration_seconds_count{")
                && l.contains("kademlia.v1.Kademlia")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(peer_calls > 0.0, "{text}");
    let (_, _, other) = http(&http_addrs[1], "GET", "/metrics").await;
    assert!(
        sample(&other, &call("kademlia.v1.Kademlia", "Store", 0)).is_some_and(|n| n >= 5.0),
        "{other}"
    );
    assert_eq!(
        sample(&text, "kademlia_routing_contacts{state=\"live\"}"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "kademlia_routing_contacts{state=\"stale\"}"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(sample(&text, "kademlia_store_records"), Some(5.0), "{text}");
    let per_bucket: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("kademlia_routing_bucket_contacts{") && l.contains("state=\"live\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(per_bucket, 2.0, "{text}");

    // Lookups: the puts' surveys and the gets' FIND_VALUEs went one round at least, and
    // queried a peer each.
    let lookups = |name: &str, kind: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}_count{{kind=\"{kind}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(
        lookups("kademlia_lookup_rounds", "find_value") >= 1.0,
        "{text}"
    );
    assert!(
        lookups("kademlia_lookup_queries", "find_node")
            + lookups("kademlia_lookup_queries", "survey")
            >= 5.0,
        "{text}"
    );
    // The gets' lookups (read_quorum 2: each asks a peer for a second copy) went a round each.
    let of_gets = |part: &str| -> f64 {
        text.lines()
            .filter(|l| {
                l.starts_with(&format!(
                    "kademlia_lookup_rounds_{part}{{kind=\"find_value\""
                ))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(
        of_gets("count") >= 5.0 && of_gets("sum") >= of_gets("count"),
        "{text}"
    );

    let families = tools::parse_openmetrics(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    for name in [
        "rpc_server_call_duration_seconds",
        "kademlia_routing_contacts",
        "kademlia_store_records",
        "kademlia_peer_rpcs_refused",
        "kademlia_lookup_rounds",
        "kademlia_lookup_queries",
    ] {
        assert!(
            families.iter().any(|f| f == name),
            "{name} not in {families:?}"
        );
    }

    assert_eq!(http(&http_addrs[0], "GET", "/nothing-here").await.0, 404);
    assert_eq!(http(&http_addrs[0], "POST", "/metrics").await.0, 405);
    for n in nodes {
        n.stop().await;
    }
}

/// Replication over real gRPC with a 1 s replicate interval: every record's replication is
/// counted with its delay, its STOREs by outcome, and the backlog and lag gauges are there
/// (and read zero once the node has caught up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_is_counted_with_its_delay_backlog_and_lag() {
    let (nodes, http_addrs) = common::network_with_http_tweaked(3, |cfg| {
        cfg.replicate_interval = Duration::from_secs(1);
    })
    .await;
    for n in &nodes {
        assert_eq!(common::peers_once(&n.handle, 2).await, 2);
    }
    let mut dht = nodes[0].client().await;
    for i in 0..5 {
        dht.put(pb::PutRequest {
            key: format!("replicated-{i}"),
            value: b"v".to_vec(),
            ttl_seconds: None,
        })
        .await
        .unwrap();
    }
    // Each of the 5 records falls due on all 3 holders within 1.5 s; one of them at least
    // replicates it (the first one's STOREs refresh the others' copies). Sum over the nodes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let texts = loop {
        let mut texts = Vec::new();
        for a in &http_addrs {
            texts.push(http(a, "GET", "/metrics").await.2);
        }
        let total = |series: &str| -> f64 { texts.iter().filter_map(|t| sample(t, series)).sum() };
        let replicated = total("kademlia_replication_delay_seconds_count");
        let stored = total("kademlia_replication_stores_total{outcome=\"ok\"}");
        let behind = total("kademlia_replication_backlog_records");
        if replicated >= 5.0 && stored >= 10.0 && behind == 0.0 {
            break texts;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "replicated {replicated}, STOREs {stored}, backlog {behind}\n{}",
            texts[0]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for text in &texts {
        assert_eq!(
            sample(text, "kademlia_replication_lag_seconds"),
            Some(0.0),
            "{text}"
        );
        let families = tools::parse_openmetrics(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        for name in [
            "kademlia_replication_backlog_records",
            "kademlia_replication_lag_seconds",
            "kademlia_replication_delay_seconds",
        ] {
            assert!(
                families.iter().any(|f| f == name),
                "{name} not in {families:?}"
            );
        }
    }
    // Delays are measured from when a record fell due: on an idle loopback network, well
    // under the interval (the sum of the delays over their count).
    let (sum, count): (f64, f64) = texts.iter().fold((0.0, 0.0), |(s, c), t| {
        (
            s + sample(t, "kademlia_replication_delay_seconds_sum").unwrap_or(0.0),
            c + sample(t, "kademlia_replication_delay_seconds_count").unwrap_or(0.0),
        )
    });
    assert!(
        count >= 5.0 && sum / count < 1.0,
        "mean delay {} s",
        sum / count
    );
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_no_request_is_closed_and_others_are_served() {
    use tokio::io::AsyncReadExt;
    let (_nodes, http_addrs) = common::network_with_http(1).await;
    let mut silent = tokio::net::TcpStream::connect(&http_addrs[0])
        .await
        .unwrap();
    let started = std::time::Instant::now();
    // Served meanwhile.
    let (status, _, _) = http(&http_addrs[0], "GET", "/metrics").await;
    assert_eq!(status, 200);
    let mut buf = Vec::new();
    let read = tokio::time::timeout(
        kademlia::net::http::HEADER_READ_TIMEOUT + Duration::from_secs(5),
        silent.read_to_end(&mut buf),
    )
    .await
    .expect("the node closes a connection that sends no request");
    assert!(read.is_ok() || buf.is_empty(), "{read:?}");
    assert!(
        started.elapsed() >= kademlia::net::http::HEADER_READ_TIMEOUT - Duration::from_millis(500),
        "closed after {:?}, before the timeout",
        started.elapsed()
    );
}
