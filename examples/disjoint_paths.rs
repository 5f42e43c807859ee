//! Lookup success against colluding adversaries, with and without disjoint lookup paths
//! (S/Kademlia section 4.4), on the real lookup state machine (see
//! `tests/support/adversarial.rs` for the network and the attack).
//!
//! `cargo run --release --example disjoint_paths -- [nodes] [lookups] [seed]`
//! (default 2,000 nodes, 1,000 lookups); prints one line per adversarial fraction and
//! number of paths: lookups that found the honest node closest to the target, and RPCs per
//! lookup.

#[path = "../tests/support/adversarial.rs"]
mod adversarial;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut next = |default: u64| {
        args.next()
            .map_or(default, |a| a.parse().expect("a number"))
    };
    let (nodes, lookups, seed) = (next(2000) as usize, next(1000) as usize, next(1));
    println!("{nodes} nodes, k = 20, alpha = 3 per path, {lookups} lookups each");
    println!("adversarial | paths | success | RPCs per lookup");
    for fraction in [0.0, 0.1, 0.3] {
        let net = adversarial::Network::new(nodes, fraction, 20, seed);
        for paths in [1, 2, 4, 8] {
            let f = net.lookups(lookups, paths, 3, seed + 1);
            println!(
                "{:>10.0} % | {paths:>5} | {:>6.1} % | {:>6.1}",
                fraction * 100.0,
                f.success_pct,
                f.messages_per_lookup
            );
        }
    }
}
