//! A picture of one node, as SVG: what the node's page (`GET /` on the HTTP listener) shows
//! live and what `kademlia routes --svg FILE` writes.
//!
//! - **The key space** as a ring: position on the ring is an id's top 64 bits, so the ring is
//!   the 160-bit space read as a fraction of 2^160 (numeric order, not XOR distance). This
//!   node, its contacts (live filled, stale hollow, replacement-cache entries small) and the
//!   keys of its records (ticks outside the ring) are drawn at their ids.
//! - **Lookups** as paths converging on their targets (the idea of the paper's Fig. 2): a
//!   lookup's round 1 goes from this node to the contacts it queried from its own table,
//!   round r from the closest answer of round r-1 to the contacts learned in it; the target
//!   is a cross on the ring. The highlighted lookup (the page's typed key) is drawn round by
//!   round, each appearing after the one before it (CSS animation, no script).
//! - **The k-buckets by distance**: one column per bucket index (0: the closest, 159: the
//!   farthest half of the space), stacked live and stale, at most k high.
//!
//! Plain text, no external resource: the page works offline. Each drawn thing carries a class
//! (`contact live`, `record`, `lookup highlight`, `hop`, `bucket`...) and `data-*` ids, which
//! the tests count.
//!
//! Implementation notes: the picture draws the newest [`DRAWN_LOOKUPS`] lookups, and at most
//! [`crate::node::MAX_PICTURE_RECORDS`] record keys.

use std::fmt::Write;

use crate::kad::NodeId;
use crate::node::{LookupPath, Snapshot};

/// Lookups drawn besides the highlighted one (the newest).
pub const DRAWN_LOOKUPS: usize = 5;

const WIDTH: f64 = 980.0;
const HEIGHT: f64 = 620.0;
const CX: f64 = 300.0;
const CY: f64 = 310.0;
const RING: f64 = 250.0;
/// Where the bucket chart starts.
const CHART_X: f64 = 610.0;
const CHART_Y: f64 = 80.0;
const CHART_H: f64 = 180.0;
const COLUMN: f64 = 2.0;
/// Seconds between the rounds of the highlighted lookup.
const ROUND_DELAY_S: f64 = 0.6;

const STYLE: &str = "
text { font: 12px sans-serif; fill: #222; }
.title { font-size: 15px; font-weight: bold; }
.ring { fill: none; stroke: #bbb; stroke-width: 1.5; }
.self { fill: #1f5fbf; }
.contact.live { fill: #2a9d3a; }
.contact.stale { fill: #fff; stroke: #888; stroke-width: 1.5; }
.replacement { fill: #bbb; }
.record { stroke: #e0a000; stroke-width: 1; }
.target { stroke: #c0392b; stroke-width: 2.5; }
.lookup .hop { fill: none; stroke: #999; stroke-width: 0.8; opacity: 0.5; }
.lookup .best { fill: none; stroke: #777; stroke-width: 1.5; opacity: 0.6; }
.lookup.highlight .hop { stroke: #d35400; opacity: 0.8; }
.lookup.highlight .best { stroke: #c0392b; stroke-width: 2.5; opacity: 1; }
.lookup.highlight.animate .round { opacity: 0; animation: appear 0.4s ease-out forwards; }
.lookup .failed { stroke-dasharray: 3 3; }
.bucket-live { fill: #2a9d3a; }
.bucket-stale { fill: #bbb; }
.axis { stroke: #444; stroke-width: 1; }
@keyframes appear { from { opacity: 0; } to { opacity: 1; } }
";

/// Where an id sits on the ring, at `radius` from the centre.
fn point(id: &NodeId, radius: f64) -> (f64, f64) {
    let mut top = [0u8; 8];
    top.copy_from_slice(&id.0[..8]);
    let fraction = u64::from_be_bytes(top) as f64 / 2f64.powi(64);
    let angle = fraction * std::f64::consts::TAU - std::f64::consts::FRAC_PI_2;
    (CX + radius * angle.cos(), CY + radius * angle.sin())
}

/// A chord from `a` to `b`, bent towards the centre.
fn chord(a: (f64, f64), b: (f64, f64)) -> String {
    let mid = ((a.0 + b.0) / 2.0, (a.1 + b.1) / 2.0);
    let c = (CX + (mid.0 - CX) * 0.4, CY + (mid.1 - CY) * 0.4);
    format!(
        "M{:.1},{:.1} Q{:.1},{:.1} {:.1},{:.1}",
        a.0, a.1, c.0, c.1, b.0, b.1
    )
}

/// Text made safe for XML.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The picture of `s`. `highlight`: the target (a key's id) whose newest lookup stands out,
/// drawn round by round when `animate` (the page animates it once, right after the lookup).
pub fn render(s: &Snapshot, highlight: Option<NodeId>, animate: bool) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" data-node="{}">"#,
        s.id.to_hex()
    );
    let _ = write!(out, "<style>{STYLE}</style>");
    let _ = write!(
        out,
        r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/><circle class="ring" cx="{CX}" cy="{CY}" r="{RING}"/>"#
    );
    let live: usize = s
        .buckets
        .iter()
        .map(|b| b.contacts.iter().filter(|e| !e.is_stale()).count())
        .sum();
    let stale: usize = s
        .buckets
        .iter()
        .map(|b| b.contacts.iter().filter(|e| e.is_stale()).count())
        .sum();
    let _ = write!(
        out,
        r#"<text class="title" x="20" y="26">node {}</text><text x="20" y="46">{live} live and {stale} stale contacts, {} records, {} lookups kept</text>"#,
        s.id.short(),
        s.records,
        s.lookups.len()
    );
    records(&mut out, s);
    let chosen = highlighted(s, highlight);
    lookups(&mut out, s, chosen, animate);
    contacts(&mut out, s);
    let (x, y) = point(&s.id, RING);
    let _ = write!(
        out,
        r#"<circle class="self" cx="{x:.1}" cy="{y:.1}" r="8"><title>this node {}</title></circle>"#,
        s.id.to_hex()
    );
    buckets(&mut out, s);
    lookup_list(&mut out, s, chosen);
    out.push_str("</svg>\n");
    out
}

fn records(out: &mut String, s: &Snapshot) {
    out.push_str(r#"<g class="records">"#);
    for key in &s.keys {
        let (x1, y1) = point(key, RING + 6.0);
        let (x2, y2) = point(key, RING + 16.0);
        let _ = write!(
            out,
            r#"<line class="record" data-key="{}" x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}"/>"#,
            key.to_hex()
        );
    }
    out.push_str("</g>");
}

fn contacts(out: &mut String, s: &Snapshot) {
    out.push_str(r#"<g class="contacts">"#);
    for b in &s.buckets {
        for (entries, replacement) in [(&b.replacements, true), (&b.contacts, false)] {
            for e in entries {
                let (x, y) = point(&e.contact.id, RING);
                let (class, r) = match (replacement, e.is_stale()) {
                    (true, _) => ("replacement", 3),
                    (false, true) => ("contact stale", 5),
                    (false, false) => ("contact live", 5),
                };
                let _ = write!(
                    out,
                    r#"<circle class="{class}" data-id="{}" data-bucket="{}" cx="{x:.1}" cy="{y:.1}" r="{r}"><title>{} {} (bucket {}, seen {} s ago)</title></circle>"#,
                    e.contact.id.to_hex(),
                    b.index,
                    e.contact.id.short(),
                    escape(&e.contact.addr),
                    b.index,
                    e.last_seen_ago.as_secs()
                );
            }
        }
    }
    out.push_str("</g>");
}

/// The lookup drawn round by round: the newest whose target is `highlight`.
fn highlighted(s: &Snapshot, highlight: Option<NodeId>) -> Option<u64> {
    let target = highlight?;
    s.lookups
        .iter()
        .rev()
        .find(|l| l.target == target)
        .map(|l| l.seq)
}

/// `chosen`: the `seq` of the highlighted lookup.
fn lookups(out: &mut String, s: &Snapshot, chosen: Option<u64>, animate: bool) {
    let newest: Vec<&LookupPath> = s.lookups.iter().rev().take(DRAWN_LOOKUPS).collect();
    for l in s.lookups.iter() {
        let lit = Some(l.seq) == chosen;
        if !lit && !newest.iter().any(|n| n.seq == l.seq) {
            continue;
        }
        path(out, s, l, lit, lit && animate);
    }
}

/// One lookup: per round, chords from the previous round's closest answer to each contact
/// queried, and the path of closest answers to the target.
fn path(out: &mut String, s: &Snapshot, l: &LookupPath, lit: bool, animate: bool) {
    let _ = write!(
        out,
        r#"<g class="lookup{}{}" data-seq="{}" data-target="{}" data-kind="{}">"#,
        if lit { " highlight" } else { "" },
        if animate { " animate" } else { "" },
        l.seq,
        l.target.to_hex(),
        l.kind
    );
    let rounds = l.visits.iter().map(|v| v.round).max().unwrap_or(0);
    let mut from = point(&s.id, RING);
    let mut best = vec![from];
    for round in 1..=rounds {
        let delay = f64::from(round - 1) * ROUND_DELAY_S;
        let _ = write!(
            out,
            r#"<g class="round" data-round="{round}" style="animation-delay: {delay:.1}s">"#
        );
        // Visits are closest to the target first: the first answer is the round's best.
        let mut next = None;
        for v in l.visits.iter().filter(|v| v.round == round) {
            let to = point(&v.id, RING);
            let _ = write!(
                out,
                r#"<path class="hop{}" data-id="{}" d="{}"/>"#,
                if v.answered { "" } else { " failed" },
                v.id.to_hex(),
                chord(from, to)
            );
            if v.answered && next.is_none() {
                next = Some(to);
            }
        }
        out.push_str("</g>");
        if let Some(n) = next {
            best.push(n);
            from = n;
        }
    }
    let (tx, ty) = point(&l.target, RING);
    best.push((tx, ty));
    let d: Vec<String> = best.windows(2).map(|w| chord(w[0], w[1])).collect();
    let delay = f64::from(rounds) * ROUND_DELAY_S;
    let _ = write!(
        out,
        r#"<g class="round" style="animation-delay: {delay:.1}s"><path class="best" d="{}"/><path class="target" d="M{:.1},{:.1} l10,10 m0,-10 l-10,10"/></g>"#,
        d.join(" "),
        tx - 5.0,
        ty - 5.0
    );
    out.push_str("</g>");
}

fn buckets(out: &mut String, s: &Snapshot) {
    let k = s.k.max(1) as f64;
    let unit = CHART_H / k;
    let base = CHART_Y + CHART_H;
    let _ = write!(
        out,
        r#"<g class="buckets"><text class="title" x="{CHART_X}" y="{}">k-buckets by distance (k = {})</text>"#,
        CHART_Y - 20.0,
        s.k
    );
    let _ = write!(
        out,
        r#"<line class="axis" x1="{CHART_X}" y1="{base}" x2="{}" y2="{base}"/>"#,
        CHART_X + 160.0 * COLUMN
    );
    for b in &s.buckets {
        let stale = b.contacts.iter().filter(|e| e.is_stale()).count() as f64;
        let live = b.contacts.len() as f64 - stale;
        let x = CHART_X + b.index as f64 * COLUMN;
        let _ = write!(
            out,
            r#"<g class="bucket" data-bucket="{}" data-live="{live}" data-stale="{stale}"><title>bucket {}: {live} live, {stale} stale, {} waiting</title><rect class="bucket-live" x="{x}" y="{:.1}" width="{COLUMN}" height="{:.1}"/><rect class="bucket-stale" x="{x}" y="{:.1}" width="{COLUMN}" height="{:.1}"/></g>"#,
            b.index,
            b.index,
            b.replacements.len(),
            base - live * unit,
            live * unit,
            base - (live + stale) * unit,
            stale * unit
        );
    }
    let _ = write!(
        out,
        r#"<text x="{CHART_X}" y="{}">0: closest</text><text x="{}" y="{}" text-anchor="end">159: farthest</text></g>"#,
        base + 16.0,
        CHART_X + 160.0 * COLUMN,
        base + 16.0
    );
}

fn lookup_list(out: &mut String, s: &Snapshot, chosen: Option<u64>) {
    let x = CHART_X;
    let mut y = CHART_Y + CHART_H + 60.0;
    let _ = write!(
        out,
        r#"<text class="title" x="{x}" y="{y}">last lookups</text>"#
    );
    for l in s.lookups.iter().rev().take(12) {
        y += 18.0;
        let rounds = l.visits.iter().map(|v| v.round).max().unwrap_or(0);
        let _ = write!(
            out,
            r#"<text x="{x}" y="{y}"{}>{} {}: {} queried in {} rounds{}</text>"#,
            if Some(l.seq) == chosen {
                r#" font-weight="bold""#
            } else {
                ""
            },
            l.kind,
            l.target.short(),
            l.visits.len(),
            rounds,
            if l.found { ", found" } else { "" }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kad::Contact;
    use crate::kad::lookup::Visit;
    use crate::node::{BucketDump, RouteEntry};
    use std::time::Duration;

    fn entry(n: u8, failures: u32) -> RouteEntry {
        RouteEntry {
            contact: Contact::new(NodeId::hash(&[n]), format!("10.0.0.{n}:50051")),
            last_seen_ago: Duration::from_secs(3),
            failures,
        }
    }

    fn snapshot() -> Snapshot {
        let stale = crate::kad::routing::MAX_FAILURES;
        let lookup = |seq: u64, target: NodeId| LookupPath {
            seq,
            target,
            kind: "find_value",
            visits: vec![
                Visit {
                    id: NodeId::hash(&[1]),
                    round: 1,
                    answered: true,
                },
                Visit {
                    id: NodeId::hash(&[2]),
                    round: 1,
                    answered: false,
                },
                Visit {
                    id: NodeId::hash(&[9]),
                    round: 2,
                    answered: true,
                },
            ],
            found: true,
        };
        Snapshot {
            id: NodeId::hash(b"me"),
            k: 20,
            buckets: vec![
                BucketDump {
                    index: 150,
                    contacts: vec![entry(1, 0), entry(2, stale)],
                    replacements: vec![entry(3, 0)],
                },
                BucketDump {
                    index: 159,
                    contacts: vec![entry(4, 0), entry(5, 0)],
                    replacements: vec![],
                },
            ],
            keys: vec![NodeId::hash(b"a"), NodeId::hash(b"b")],
            records: 2,
            lookups: (0..8)
                .map(|i| lookup(i, NodeId::hash(&[100 + i as u8])))
                .collect(),
        }
    }

    #[test]
    fn draws_every_contact_record_and_bucket() {
        let svg = render(&snapshot(), None, false);
        assert_eq!(svg.matches(r#"class="contact live""#).count(), 3);
        assert_eq!(svg.matches(r#"class="contact stale""#).count(), 1);
        assert_eq!(svg.matches(r#"class="replacement""#).count(), 1);
        assert_eq!(svg.matches(r#"class="record""#).count(), 2);
        assert_eq!(svg.matches(r#"<g class="bucket" "#).count(), 2);
        assert!(svg.contains(r#"data-bucket="150" data-live="1" data-stale="1""#));
        assert!(svg.contains("3 live and 1 stale contacts, 2 records, 8 lookups kept"));
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>\n"));
    }

    #[test]
    fn draws_the_newest_lookups_and_the_highlighted_one_round_by_round() {
        let s = snapshot();
        let plain = render(&s, None, false);
        assert_eq!(plain.matches(r#"<g class="lookup""#).count(), DRAWN_LOOKUPS);
        assert!(!plain.contains("lookup highlight"));
        // The oldest lookup is not among the newest five: highlighting it draws it as well.
        let lit = render(&s, Some(NodeId::hash(&[100])), true);
        assert_eq!(
            lit.matches(r#"<g class="lookup"#).count(),
            DRAWN_LOOKUPS + 1
        );
        let start = lit
            .find(r#"class="lookup highlight animate" data-seq="0""#)
            .expect("the lit lookup");
        let group = &lit[start..];
        let group = &group[..group.find(r#"<g class="lookup"#).unwrap_or(group.len())];
        assert_eq!(group.matches(r#"class="hop""#).count(), 2);
        assert_eq!(group.matches(r#"class="hop failed""#).count(), 1);
        assert!(group.contains(r#"data-round="2" style="animation-delay: 0.6s""#));
        assert_eq!(group.matches(r#"class="target""#).count(), 1);
        // The path of closest answers goes me -> round 1's answer -> round 2's -> target.
        let best = &group[group.find(r#"class="best" d=""#).unwrap()..];
        assert_eq!(best[..best.find("/>").unwrap()].matches('M').count(), 3);
        // Redrawn later, it stands out without replaying.
        let settled = render(&s, Some(NodeId::hash(&[100])), false);
        assert!(settled.contains(r#"class="lookup highlight" data-seq="0""#));
        assert!(!settled.contains("highlight animate"));
    }

    #[test]
    fn addresses_are_escaped() {
        let mut s = snapshot();
        s.buckets[0].contacts[0].contact.addr = "<a&b>".into();
        let svg = render(&s, None, false);
        assert!(svg.contains("&lt;a&amp;b&gt;") && !svg.contains("<a&b>"));
    }
}
