//! scripts/compare/'s verdicts on issue 12's goals, from figures made up for the purpose:
//! table.py figures each goal's margin from the bench files, and summary.py judges the goals
//! over several runs by the median margin. (scripts/compare.sh itself runs the three DHTs for
//! minutes; these tests check only the arithmetic that turns their figures into verdicts.)

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts/compare")
        .join(name)
}

/// Runs a script of scripts/compare/ with the `python3` on PATH (as compare.sh runs table.py
/// and summary.py); its stdout.
fn run(name: &str, args: &[&Path]) -> String {
    let out = Command::new("python3")
        .arg(script(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e})"));
    assert!(
        out.status.success(),
        "{name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn phase(p50_ms: f64, ops_per_sec: f64) -> Value {
    json!({"p50_ms": p50_ms, "p99_ms": p50_ms * 2.0, "ops_per_sec": ops_per_sec,
           "ok": 1000, "errors": 0})
}

/// One run's goals file, as table.py writes it: `(goal, margin, strict)`.
fn goals(dir: &Path, name: &str, margins: &[(&str, f64, bool)]) -> PathBuf {
    let list: Vec<Value> = margins
        .iter()
        .map(|&(goal, margin, strict)| {
            let met = if strict { margin > 1.0 } else { margin >= 1.0 };
            json!({"goal": goal, "met": met, "margin": margin, "strict": strict})
        })
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, Value::Array(list).to_string()).unwrap();
    path
}

#[test]
fn table_figures_each_goal_s_margin_and_whether_1x_misses_it() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, v: Value| {
        let path = dir.path().join(name);
        std::fs::write(&path, v.to_string()).unwrap();
        path
    };
    // Ping 0.2 ms; this node: get 0.4 ms, put 1.0 ms, 12,000 gets/s, 2,000 puts/s.
    let c1 = write(
        "ours-c1.json",
        json!({"nodes": 100, "ping": {"p50_ms": 0.2},
               "get": phase(0.4, 2500.0), "put": phase(1.0, 1000.0)}),
    );
    let c32 = write(
        "ours-c32.json",
        json!({"nodes": 100, "ping": {"p50_ms": 0.2},
               "get": phase(0.3, 12000.0), "put": phase(1.2, 2000.0)}),
    );
    let peer = |get_c32: f64, put_c1: f64, put_c32: f64| {
        json!({"get_c1": phase(2.0, 500.0), "put_c1": phase(put_c1, 100.0),
               "get_c32": phase(1.0, get_c32), "put_c32": phase(1.0, put_c32)})
    };
    // python: 3,000 gets/s (this node's 12,000 is exactly 4x), puts 12.5 ms and 125/s;
    // OpenDHT: puts exactly this node's 1.0 ms, and 4,000 puts/s.
    let pykad = write("pykad.json", peer(3000.0, 12.5, 125.0));
    let odht = write("opendht.json", peer(500.0, 1.0, 4000.0));
    let goals_file = dir.path().join("goals.json");
    run(
        "table.py",
        &[&c1, &c32, &pykad, &odht, goals_file.as_path()],
    );
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&goals_file).unwrap()).unwrap();
    let by_name = |name: &str| {
        written
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["goal"] == name)
            .unwrap_or_else(|| panic!("no goal {name} in {written}"))
            .clone()
    };
    let close = |v: &Value, want: f64| (v.as_f64().unwrap() - want).abs() < 1e-9;
    // 4 pings = 0.8 ms against 0.4 ms.
    let g = by_name("get p50 <= 4 pings");
    assert!(
        close(&g["margin"], 2.0) && g["met"] == true && g["strict"] == false,
        "{g}"
    );
    // Exactly 4x python's gets/s meets "at least 4x".
    let g = by_name("gets/s (32) >= 4x python's");
    assert!(
        close(&g["margin"], 1.0) && g["met"] == true && g["strict"] == false,
        "{g}"
    );
    // Exactly OpenDHT's put p50 does not meet "below OpenDHT's".
    let g = by_name("put p50 below OpenDHT's");
    assert!(
        close(&g["margin"], 1.0) && g["met"] == false && g["strict"] == true,
        "{g}"
    );
    // 10x python's put is 1.25 ms against 1.0 ms.
    let g = by_name("put p50 >= 10x faster than python's");
    assert!(close(&g["margin"], 1.25) && g["met"] == true, "{g}");
    // Half of OpenDHT's puts/s.
    let g = by_name("puts/s (32) above OpenDHT's");
    assert!(close(&g["margin"], 0.5) && g["met"] == false, "{g}");
}

#[test]
fn summary_judges_each_goal_by_its_median_margin() {
    let dir = tempfile::tempdir().unwrap();
    let runs = [
        goals(
            dir.path(),
            "run1.json",
            &[("a", 0.9, false), ("b", 1.0, true), ("c", 0.5, false)],
        ),
        goals(
            dir.path(),
            "run2.json",
            &[("a", 1.2, false), ("b", 1.0, true), ("c", 0.95, false)],
        ),
        goals(
            dir.path(),
            "run3.json",
            &[("a", 1.3, false), ("b", 0.8, true), ("c", 1.5, false)],
        ),
    ];
    let paths: Vec<&Path> = runs.iter().map(PathBuf::as_path).collect();
    let out = run("summary.py", &paths);
    let line = |goal: &str| {
        out.lines()
            .find(|l| l.split_whitespace().any(|w| w == goal))
            .unwrap_or_else(|| panic!("no line for goal {goal} in:\n{out}"))
            .to_string()
    };
    // Missed in one run of three: met at the median.
    let a = line("a");
    assert!(
        a.contains("met in 2 of 3") && a.contains("met at the median (1.20x)"),
        "{a}"
    );
    assert!(a.contains("smallest 0.90x"), "{a}");
    // A strict goal's median of exactly 1.00x misses it.
    let b = line("b");
    assert!(
        b.contains("met in 0 of 3") && b.contains("NOT met at the median (1.00x)"),
        "{b}"
    );
    // Met in one run of three, far past the goal: still not met at the median.
    let c = line("c");
    assert!(
        c.contains("met in 1 of 3") && c.contains("NOT met at the median (0.95x)"),
        "{c}"
    );
    assert!(out.contains("1 of 3 goals met at the median run"), "{out}");
}

#[test]
fn summary_counts_a_run_without_a_table_and_an_even_count_s_median() {
    let dir = tempfile::tempdir().unwrap();
    let one = goals(dir.path(), "run1.json", &[("a", 0.9, false)]);
    let two = goals(dir.path(), "run2.json", &[("a", 1.2, false)]);
    let missing = dir.path().join("run3.json");
    let out = run("summary.py", &[&one, &two, &missing]);
    assert!(
        out.contains("over 3 runs (1 of them produced no table)"),
        "{out}"
    );
    // Two margins: their mean, 1.05x.
    assert!(
        out.contains("met in 1 of 3") && out.contains("met at the median (1.05x)"),
        "{out}"
    );
}
