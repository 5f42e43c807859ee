//! `kademlia simulate`: a network of many nodes in this process on a simulated clock
//! ([`crate::sim`]); prints what it measured, as text or (`--json`) as one JSON object.
//!
//! A progress bar goes to standard error (redrawn in place on a terminal, a line per phase
//! otherwise), so standard output carries only the report.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::sim::{self, Phase, Report, SimConfig};

#[derive(clap::Args, Debug, Clone)]
pub struct SimulateArgs {
    /// Nodes in the network
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    /// Fraction of the nodes that leave without notice during the run (as many new ones join)
    #[arg(long, default_value_t = 0.0)]
    pub churn: f64,
    /// FIND_NODE lookups of random targets, from random live nodes, spread over the run
    #[arg(long, default_value_t = 1000)]
    pub lookups: usize,
    /// Keys put before the churn and read back after it
    #[arg(long, default_value_t = 100)]
    pub keys: usize,
    /// Fraction of the nodes that turn hostile once the network is built: they answer PINGs
    /// but lie to FIND_NODE, FIND_VALUE (only other adversaries, never a value) and STORE
    /// ("stored", without storing)
    #[arg(long, default_value_t = 0.0)]
    pub adversarial: f64,
    /// Disjoint paths per lookup on every node (the `lookup_disjoint_paths` setting; 1: one
    /// path, as in the paper)
    #[arg(long, default_value_t = 1)]
    pub disjoint_paths: usize,
    /// Every node's `conditional_puts` setting: true (the default), a put's lookup ends at
    /// convergence and its STOREs check versions; false, puts survey all of the k closest first
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub conditional_puts: bool,
    /// Seed of node ids and of every choice the simulation makes
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Simulated minutes over which churn and lookups are spread
    #[arg(long, default_value_t = 60)]
    pub minutes: u64,
    /// Simulated minutes of the idle phase whose traffic is measured (0 skips it)
    #[arg(long, default_value_t = 60)]
    pub idle_minutes: u64,
    /// Encode and decode every message as protobuf, as between real nodes (slower: the
    /// conversions cost about a third of a large run's time; they have tests of their own)
    #[arg(long)]
    pub wire: bool,
    /// Print the report as one JSON object
    #[arg(long)]
    pub json: bool,
    /// Also run a sweep of sizes up to --nodes (no churn) and write rounds and RPCs per
    /// lookup against network size to FILE as SVG
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// The sizes of the --svg sweep [default: 125, doubling, up to --nodes]
    #[arg(long, value_delimiter = ',', requires = "svg")]
    pub sizes: Vec<usize>,
}

/// Runs the simulation (and the sweep) on a thread of its own, with its own runtime.
pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || run_blocking(&args))
        .await
        .context("the simulation's thread")?
}

fn run_blocking(args: &SimulateArgs) -> anyhow::Result<()> {
    let cfg = SimConfig {
        nodes: args.nodes,
        churn: args.churn,
        lookups: args.lookups,
        keys: args.keys,
        seed: args.seed,
        duration: Duration::from_secs(args.minutes.saturating_mul(60)),
        idle: Duration::from_secs(args.idle_minutes.saturating_mul(60)),
        adversarial: args.adversarial,
        wire: args.wire,
        disjoint_paths: args.disjoint_paths,
        conditional_puts: args.conditional_puts,
    };
    let mut bar = Bar::new(args.nodes);
    let report = sim::run(&cfg, &mut |p, d, t| bar.show(p, d, t))?;
    bar.end();
    if let Some(file) = &args.svg {
        let sizes = if args.sizes.is_empty() {
            default_sizes(args.nodes)
        } else {
            args.sizes.clone()
        };
        let mut sweep = Vec::new();
        for &n in &sizes {
            let mut bar = Bar::new(n);
            let base = SimConfig {
                lookups: args.lookups.min(500),
                idle: Duration::ZERO,
                ..cfg.clone()
            };
            sweep.extend(sim::sweep(&base, &[n], &mut |p, d, t| bar.show(p, d, t))?);
            bar.end();
        }
        std::fs::write(file, sim::svg::chart(&sweep))
            .with_context(|| format!("cannot write {}", file.display()))?;
        for r in &sweep {
            eprintln!(
                "sweep: {:>6} nodes: rounds p50 {} p99 {}, {:.1} RPCs per lookup, {:.1}% found",
                r.nodes, r.rounds_p50, r.rounds_p99, r.messages_per_lookup, r.lookup_success_pct
            );
        }
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_text(&report);
    }
    Ok(())
}

/// 125, 250, ... doubling below `nodes`, then `nodes`.
fn default_sizes(nodes: usize) -> Vec<usize> {
    let mut sizes: Vec<usize> = std::iter::successors(Some(125usize), |n| Some(n * 2))
        .take_while(|n| *n < nodes)
        .collect();
    sizes.push(nodes);
    sizes
}

fn print_text(r: &Report) {
    println!(
        "{} nodes ({} hostile), {} left and {} joined, over {} simulated s in {:.1} s",
        r.nodes, r.adversaries, r.churned, r.churned, r.simulated_seconds, r.seconds
    );
    println!(
        "lookups: {} ({} errors), {:.2}% found the k closest live nodes; rounds p50 {} p99 {} max {}; {:.1} RPCs per lookup",
        r.lookups,
        r.lookup_errors,
        r.lookup_success_pct,
        r.rounds_p50,
        r.rounds_p99,
        r.rounds_max,
        r.messages_per_lookup
    );
    let spread: Vec<String> = (r.rounds_histogram.iter().enumerate())
        .filter(|(_, n)| **n > 0)
        .map(|(rounds, n)| format!("{rounds}: {n}"))
        .collect();
    println!("lookups by rounds: {}", spread.join(", "));
    println!(
        "keys: {} put, {} stored, {} lost ({} of them still held by a live honest node); gets' rounds p50 {}",
        r.keys, r.keys_stored, r.keys_lost, r.keys_lost_still_held, r.get_rounds_p50
    );
    println!(
        "copies of a stored key on live nodes: {:.1} on average, {} at most",
        r.copies_per_key_mean, r.copies_per_key_max
    );
    match r.idle_messages_per_node_minute {
        Some(idle) => println!(
            "background: {idle:.2} messages per node per minute while idle; {} messages in all",
            r.messages
        ),
        None => println!("{} messages in all (no idle phase)", r.messages),
    }
    if let Some(after) = r.idle_after_churn_messages_per_node_minute {
        println!("background after the churn: {after:.2} messages per node per minute");
    }
}

/// The progress display on standard error.
struct Bar {
    tty: bool,
    nodes: usize,
    last: Option<(Phase, usize)>,
    started: std::time::Instant,
}

impl Bar {
    fn new(nodes: usize) -> Bar {
        Bar {
            tty: std::io::stderr().is_terminal(),
            nodes,
            last: None,
            started: std::time::Instant::now(),
        }
    }

    fn show(&mut self, phase: Phase, done: usize, total: usize) {
        let tenth = (done * 10 / total.max(1)).min(10);
        let mut err = std::io::stderr().lock();
        if self.tty {
            let filled = done * 30 / total.max(1);
            let _ = write!(
                err,
                "\r{:>6} nodes {:<14} [{:<30}] {done}/{total} {:>5.1} s ",
                self.nodes,
                phase.label(),
                "#".repeat(filled.min(30)),
                self.started.elapsed().as_secs_f64()
            );
        } else if self.last != Some((phase, tenth)) {
            // Off a terminal, a line at each tenth of each phase.
            let _ = writeln!(
                err,
                "{} nodes: {} {done}/{total} ({:.1} s)",
                self.nodes,
                phase.label(),
                self.started.elapsed().as_secs_f64()
            );
        }
        self.last = Some((phase, tenth));
    }

    fn end(&self) {
        if self.tty {
            eprintln!();
        }
    }
}
