//! Disjoint lookup paths (S/Kademlia section 4.4) against colluding adversaries that try to
//! eclipse every target, measured on the real lookup state machine (`support/adversarial.rs`).
//! Without adversaries every get finds its value whatever the paths; with them, a single
//! path often does not, and four disjoint paths nearly always do. `cargo run --release --example disjoint_paths` prints
//! the figures at a larger size.

#[path = "support/adversarial.rs"]
mod adversarial;

use adversarial::Network;

const NODES: usize = 1000;
const LOOKUPS: usize = 300;
const K: usize = 20;
const ALPHA: usize = 3;

#[test]
fn without_adversaries_every_lookup_finds_the_value() {
    let net = Network::new(NODES, 0.0, K, 1);
    let one = net.lookups(LOOKUPS, 1, ALPHA, 2);
    let four = net.lookups(LOOKUPS, 4, ALPHA, 2);
    assert_eq!(one.success_pct, 100.0, "{one:?}");
    assert_eq!(four.success_pct, 100.0, "{four:?}");
    // Each path costs about what one lookup does: no more than that in all.
    assert!(
        four.messages_per_lookup <= 4.0 * one.messages_per_lookup + 1.0,
        "1 path {one:?}, 4 paths {four:?}"
    );
}

#[test]
fn disjoint_paths_get_past_colluding_adversaries() {
    for (fraction, single_path_at_most) in [(0.1, 95.0), (0.3, 85.0)] {
        let net = Network::new(NODES, fraction, K, 3);
        let one = net.lookups(LOOKUPS, 1, ALPHA, 4);
        let four = net.lookups(LOOKUPS, 4, ALPHA, 4);
        eprintln!(
            "{:.0} % adversarial: 1 path {one:?}, 4 paths {four:?}",
            fraction * 100.0
        );
        // The attack works on a single path...
        assert!(one.success_pct < single_path_at_most, "{one:?}");
        // ...and disjoint paths take back most of what it took.
        assert!(
            four.success_pct >= 95.0 && four.success_pct > one.success_pct + 5.0,
            "1 path {one:?}, 4 paths {four:?}"
        );
    }
}
