//! The log n curve as SVG: rounds and messages per lookup against network size, from a
//! [`super::sweep`] (what `kademlia simulate --svg FILE` writes).
//!
//! Two panels share the x axis, the network size on a log scale (so the paper's O(log n)
//! lookups show as straight lines): rounds (p50 and p99) on the left, RPCs per lookup on the
//! right. Each point carries `class="point"` and `data-nodes`, which the tests count. Plain
//! SVG with no script and no external resource.

use std::fmt::Write;

use super::Report;

const PANEL_W: f64 = 420.0;
const PANEL_H: f64 = 260.0;
const MARGIN: f64 = 60.0;
const GAP: f64 = 80.0;

/// One plotted series: its name, colour, and the value of each report.
struct Series {
    name: &'static str,
    colour: &'static str,
    value: fn(&Report) -> f64,
}

/// The chart of `reports` (one per network size, any order).
pub fn chart(reports: &[Report]) -> String {
    let mut rs: Vec<&Report> = reports.iter().collect();
    rs.sort_by_key(|r| r.nodes);
    let width = 2.0 * PANEL_W + GAP + 2.0 * MARGIN;
    let height = PANEL_H + 2.0 * MARGIN + 20.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r##"<rect width="100%" height="100%" fill="#fff"/><text x="{MARGIN}" y="24" font-size="15">Lookups against network size (kademlia simulate, k = 20, alpha = 3)</text>"##
    );
    let rounds = [
        Series {
            name: "rounds p50",
            colour: "#1f77b4",
            value: |r| f64::from(r.rounds_p50),
        },
        Series {
            name: "rounds p99",
            colour: "#d62728",
            value: |r| f64::from(r.rounds_p99),
        },
    ];
    let messages = [Series {
        name: "RPCs per lookup (mean)",
        colour: "#2ca02c",
        value: |r| r.messages_per_lookup,
    }];
    panel(&mut out, &rs, MARGIN, "rounds per lookup", &rounds);
    panel(
        &mut out,
        &rs,
        MARGIN + PANEL_W + GAP,
        "RPCs per lookup",
        &messages,
    );
    out.push_str("</svg>\n");
    out
}

/// One panel at `left`: axes, ticks, and a line of points per series.
fn panel(out: &mut String, rs: &[&Report], left: f64, title: &str, series: &[Series]) {
    let top = MARGIN + 10.0;
    let bottom = top + PANEL_H;
    let (lo, hi) = match (rs.first(), rs.last()) {
        (Some(a), Some(b)) => ((a.nodes as f64).log10(), (b.nodes as f64).log10()),
        _ => (0.0, 1.0),
    };
    let span = if hi > lo { hi - lo } else { 1.0 };
    let x = |n: usize| left + 20.0 + ((n as f64).log10() - lo) / span * (PANEL_W - 40.0);
    let ymax = rs
        .iter()
        .flat_map(|r| series.iter().map(move |s| (s.value)(r)))
        .fold(1.0f64, f64::max)
        .ceil();
    let y = |v: f64| bottom - v / ymax * (PANEL_H - 10.0);
    let _ = writeln!(
        out,
        r##"<g class="panel"><text x="{left}" y="{}" font-size="13">{title}</text><line x1="{left}" y1="{bottom}" x2="{}" y2="{bottom}" stroke="#333"/><line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="#333"/>"##,
        top - 8.0,
        left + PANEL_W
    );
    for r in rs {
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"##,
            x(r.nodes),
            bottom + 16.0,
            r.nodes
        );
    }
    let _ = writeln!(
        out,
        r##"<text x="{}" y="{}" text-anchor="middle">nodes (log scale)</text>"##,
        left + PANEL_W / 2.0,
        bottom + 34.0
    );
    for tick in 0..=4 {
        let v = ymax * f64::from(tick) / 4.0;
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{:.1}" text-anchor="end">{v:.1}</text>"##,
            left - 4.0,
            y(v) + 4.0
        );
    }
    for (i, s) in series.iter().enumerate() {
        let points: Vec<String> = rs
            .iter()
            .map(|r| format!("{:.1},{:.1}", x(r.nodes), y((s.value)(r))))
            .collect();
        let _ = writeln!(
            out,
            r##"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"##,
            s.colour,
            points.join(" ")
        );
        for r in rs {
            let _ = writeln!(
                out,
                r##"<circle class="point" data-nodes="{}" data-series="{}" cx="{:.1}" cy="{:.1}" r="3.5" fill="{}"><title>{} nodes: {} = {:.2}</title></circle>"##,
                r.nodes,
                s.name,
                x(r.nodes),
                y((s.value)(r)),
                s.colour,
                r.nodes,
                s.name,
                (s.value)(r)
            );
        }
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{}" fill="{}">{}</text>"##,
            left + 30.0,
            top + 14.0 + 16.0 * i as f64,
            s.colour,
            s.name
        );
    }
    out.push_str("</g>\n");
}
