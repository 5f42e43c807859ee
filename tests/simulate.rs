//! `kademlia simulate`: the binary runs a 2,000-node network with 30 % churn on a simulated
//! clock and reports what it measured as JSON; `--svg` draws the sweep of sizes.
//!
//! The figures asserted here are floors that catch a regression, not the goals (those
//! are for `kademlia simulate --nodes 10000 --churn 0.3`, reported in the closing notes).

use crate::common;

use std::process::Command;

use serde_json::Value;

fn simulate(args: &[&str]) -> (Value, String) {
    let out = Command::new(common::process::BIN)
        .arg("simulate")
        .args(args)
        .output()
        .expect("run kademlia simulate");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "simulate failed: {stderr}");
    let stdout = String::from_utf8(out.stdout).expect("UTF-8");
    let report = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {stdout}"));
    (report, stderr)
}

#[test]
fn two_thousand_nodes_with_churn_keep_every_key_and_find_their_nodes() {
    let (r, stderr) = simulate(&[
        "--nodes",
        "2000",
        "--churn",
        "0.3",
        "--lookups",
        "300",
        "--keys",
        "200",
        "--minutes",
        "30",
        "--idle-minutes",
        "0",
        "--seed",
        "3",
        "--json",
    ]);
    eprintln!("{r}");
    let n = |f: &str| {
        r[f].as_f64()
            .unwrap_or_else(|| panic!("{f} is missing or not a number: {r}"))
    };
    assert_eq!(n("nodes"), 2000.0);
    assert_eq!(n("churned"), 600.0, "30 % of the nodes left");
    assert_eq!(n("lookups"), 300.0);
    assert_eq!(n("lookup_errors"), 0.0);
    assert_eq!(n("keys_stored"), 200.0, "every put reached its quorum");
    assert_eq!(n("keys_lost"), 0.0, "no key lost to churn");
    // Each key on about its k = 20 replicas: churn took some that replication had not replaced
    // yet, and nodes pushed out of a key's k closest hand it over only when they replicate it
    // (19.2 on average, 29 at most, at this seed). A key spreading beyond its replicas (or
    // replicas going missing) shows here.
    let copies = n("copies_per_key_mean");
    assert!((15.0..=25.0).contains(&copies), "{r}");
    assert!(n("copies_per_key_max") <= 60.0, "{r}");
    // Issue 12's goal is 99.9 % (measured at 10,000 nodes); 300 lookups here, so at most 3
    // may miss. Before lookups asked for spare contacts this run found 75-88 %.
    assert!(n("lookup_success_pct") >= 99.0, "{r}");
    assert!(n("rounds_p50") >= 1.0 && n("rounds_p99") <= 5.0, "{r}");
    // The histogram counts every lookup that answered, once, at the rounds it went.
    let histogram: Vec<u64> = r["rounds_histogram"]
        .as_array()
        .unwrap_or_else(|| panic!("rounds_histogram is missing: {r}"))
        .iter()
        .map(|v| v.as_u64().expect("a count"))
        .collect();
    assert_eq!(histogram.iter().sum::<u64>(), 300, "{r}");
    assert_eq!(histogram.len() as f64 - 1.0, n("rounds_max"), "{r}");
    let per_lookup = n("messages_per_lookup");
    assert!((10.0..=60.0).contains(&per_lookup), "{r}");
    assert!(
        n("simulated_seconds") >= 1800.0,
        "the run covered 30 simulated minutes: {r}"
    );
    assert!(
        r["idle_messages_per_node_minute"].is_null(),
        "the idle phase was skipped"
    );
    assert!(
        stderr.contains("churn+lookups"),
        "progress is shown: {stderr}"
    );
}

#[test]
fn a_quiet_network_of_500_nodes_sends_few_messages_per_node_per_minute() {
    let (r, _) = simulate(&[
        "--nodes",
        "500",
        "--lookups",
        "0",
        "--keys",
        "0",
        "--minutes",
        "1",
        "--seed",
        "2",
        "--json",
    ]);
    eprintln!("{r}");
    let idle = r["idle_messages_per_node_minute"]
        .as_f64()
        .unwrap_or_else(|| panic!("no idle figure: {r}"));
    // A refresh lookup for every bucket each hour, as the paper has it, measured 5.1 here
    // (and grew by about 0.5 per doubling of the network: with seed 1, 3.3 at 125 nodes, 4.6
    // at 500, 5.1 at 1,000). A full bucket's refresh is a PING of its oldest contact: 3.5
    // here (seed 1: 2.4, 3.0, 3.1).
    assert!(
        idle > 0.5 && idle < 4.25,
        "{idle:.2} messages per node per minute: {r}"
    );
}

#[test]
fn hostile_nodes_are_counted_and_honest_lookups_get_past_most_of_their_lies() {
    let (r, stderr) = simulate(&[
        "--nodes",
        "300",
        "--adversarial",
        "0.3",
        "--lookups",
        "100",
        "--keys",
        "20",
        "--idle-minutes",
        "0",
        "--minutes",
        "5",
        // The lies go through the wire format too: they are valid protobuf.
        "--wire",
        "--json",
    ]);
    eprintln!("{r}");
    assert_eq!(r["adversaries"].as_u64(), Some(90), "{r}");
    assert_eq!(r["lookups"].as_u64(), Some(100), "{r}");
    assert_eq!(r["lookup_errors"].as_u64(), Some(0), "{r}");
    assert_eq!(r["keys_stored"].as_u64(), Some(20), "{r}");
    // A floor, not a goal: 500 nodes with 30 % adversaries and churn found 89 % (and lost 3
    // of 50 keys) with one lookup path.
    let found = r["lookup_success_pct"].as_f64().unwrap_or(0.0);
    assert!(found >= 50.0, "{r}");
    assert!(stderr.contains("churn+lookups"), "{stderr}");
}

#[test]
fn the_sweep_draws_rounds_and_messages_against_network_size() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("curve.svg");
    let (r, stderr) = simulate(&[
        "--nodes",
        "300",
        "--lookups",
        "60",
        "--keys",
        "20",
        "--idle-minutes",
        "10",
        "--minutes",
        "5",
        "--svg",
        svg.to_str().unwrap(),
        "--sizes",
        "75,150,300",
        "--json",
    ]);
    assert!(
        r["idle_messages_per_node_minute"]
            .as_f64()
            .is_some_and(|m| m > 0.0),
        "{r}"
    );
    assert_eq!(
        r["lookup_success_pct"].as_f64(),
        Some(100.0),
        "no churn: {r}"
    );
    let text = std::fs::read_to_string(&svg).expect("the SVG was written");
    assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"));
    // Three sizes, three series (rounds p50, rounds p99, RPCs per lookup).
    assert_eq!(text.matches("class=\"point\"").count(), 9, "{text}");
    for n in ["75", "150", "300"] {
        assert!(
            text.contains(&format!("data-nodes=\"{n}\"")),
            "size {n} drawn"
        );
        assert!(stderr.contains(&format!("sweep: {n:>6} nodes")), "{stderr}");
    }
}
