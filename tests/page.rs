//! The node's page (`GET /` on its HTTP listener) in a real browser, Debian's headless
//! Chromium driven over the DevTools protocol by tests/support/page_check.py, against a
//! running devnet: the page loads with no console error and no request beyond the node
//! itself, draws the node's contacts, and typing a key and pressing Enter draws that key's
//! lookup. The screenshot is kept in target/page-test/. And `kademlia routes --svg` writes
//! the same picture.

use crate::common;

use std::path::Path;
use std::process::Command;

use common::process::{Devnet, cli, free_port_range};
use common::tools::tool;
use kademlia::NodeId;

/// Contacts in the routing table of the node at `addr`, as `kademlia routes` counts them.
fn contacts(addr: &str) -> usize {
    let out = cli(&["routes", "-a", addr]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // "node <id>: N contacts in M buckets"
    let first = text.lines().next().unwrap_or_default();
    first
        .split(": ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no contact count in {text}"))
}

#[test]
fn the_page_draws_the_contacts_and_the_lookup_of_a_typed_key() {
    let nodes = 20;
    let base = free_port_range(nodes);
    let http_base = base + 1000;
    let net = Devnet::start(nodes, base, &["--http-base-port", &http_base.to_string()]);
    let url = format!("http://127.0.0.1:{http_base}/");
    assert!(
        net.lines[0].ends_with(&url),
        "devnet prints each node's page: {:?}",
        net.lines
    );
    let node0 = format!("127.0.0.1:{base}");
    for i in 0..5 {
        let put = cli(&[
            "put",
            &format!("page-{i}"),
            "v",
            "-a",
            &format!("127.0.0.1:{}", base + 7),
        ]);
        assert!(
            put.status.success(),
            "{}",
            String::from_utf8_lossy(&put.stderr)
        );
    }
    let known = contacts(&node0);
    assert_eq!(
        known,
        usize::from(nodes) - 1,
        "node 0 knows every other node"
    );

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/page-test");
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join("page.png");
    let _ = std::fs::remove_file(&shot);
    let key = "page-3";
    let out = Command::new(tool("python3"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/page_check.py"))
        .args([&url, "--key", key, "--contacts", &known.to_string()])
        .arg("--screenshot")
        .arg(&shot)
        .output()
        .expect("run tests/support/page_check.py (scripts/setup-tools.sh installs Chromium)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "page_check.py failed:\n{stderr}");
    let seen: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert_eq!(
        seen["errors"],
        serde_json::json!([]),
        "console errors: {seen}"
    );
    for r in seen["requests"].as_array().unwrap() {
        assert!(
            r.as_str().unwrap().starts_with(&url),
            "the page loaded something from elsewhere: {seen}"
        );
    }
    assert_eq!(seen["contacts"], known, "{seen}");
    assert_eq!(seen["live"], known, "{seen}");
    let lit = &seen["highlight"];
    assert_eq!(
        lit["target"],
        NodeId::hash(key.as_bytes()).to_hex(),
        "the highlighted lookup is the typed key's: {seen}"
    );
    assert!(lit["hops"].as_u64().unwrap() >= 1, "{seen}");
    assert!(lit["rounds"].as_u64().unwrap() >= 1, "{seen}");
    assert!(
        seen["status"].as_str().unwrap().contains("hold its value")
            && !seen["status"].as_str().unwrap().starts_with("0 "),
        "{seen}"
    );
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    println!("page: {seen}");
}

#[test]
fn routes_svg_writes_the_picture_with_the_lookup_of_a_key() {
    let nodes = 6;
    let base = free_port_range(nodes);
    let _net = Devnet::start(nodes, base, &[]);
    let node0 = format!("127.0.0.1:{base}");
    assert!(cli(&["put", "svg-key", "v", "-a", &node0]).status.success());
    assert!(cli(&["locate", "svg-key", "-a", &node0]).status.success());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.svg");
    let out = cli(&[
        "routes",
        "-a",
        &node0,
        "--svg",
        file.to_str().unwrap(),
        "--highlight",
        "svg-key",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = std::fs::read_to_string(&file).unwrap();
    assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(
        svg.matches(r#"class="contact live""#).count(),
        contacts(&node0)
    );
    let lit = r#"class="lookup highlight" data-seq="#;
    let at = svg.find(lit).expect("the key's lookup stands out");
    assert!(
        svg[at..].contains(&format!(
            r#"data-target="{}""#,
            NodeId::hash(b"svg-key").to_hex()
        )),
        "{}",
        &svg[at..at + 200]
    );
    // Well-formed XML, as a file viewer needs it.
    let parse = Command::new(tool("python3"))
        .args([
            "-c",
            "import sys, xml.etree.ElementTree as E; E.parse(sys.argv[1])",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        parse.status.success(),
        "{}",
        String::from_utf8_lossy(&parse.stderr)
    );
    // To standard output with "-".
    let out = cli(&["routes", "-a", &node0, "--svg", "-"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("<svg "));
}

/// One HTTP/1.1 request with a body over a plain socket; returns the status and the body.
fn request(addr: &str, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let status = raw.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn bad_lookups_and_pictures_get_clear_errors() {
    let base = free_port_range(2);
    let _net = Devnet::start(2, base, &["--http-base-port", &(base + 1000).to_string()]);
    let http = format!("127.0.0.1:{}", base + 1000);
    let (status, body) = request(&http, "POST", "/lookup", b"");
    assert_eq!(
        (status, body.contains("key must not be empty")),
        (400, true),
        "{body}"
    );
    let (status, body) = request(&http, "POST", "/lookup", &[b'x'; 2000]);
    assert_eq!(
        (status, body.contains("at most 1024 bytes")),
        (413, true),
        "{body}"
    );
    let (status, body) = request(&http, "POST", "/lookup", &[0xff, 0xfe]);
    assert_eq!((status, body.contains("UTF-8")), (400, true), "{body}");
    let (status, body) = request(&http, "GET", "/lookup", b"");
    assert_eq!((status, body.contains("only POST")), (405, true), "{body}");
    let (status, body) = request(&http, "GET", "/picture.svg?highlight=zz", b"");
    assert_eq!(
        (status, body.contains("40 hex digits")),
        (400, true),
        "{body}"
    );
    let (status, body) = request(&http, "GET", "/picture.svg?size=3", b"");
    assert_eq!(
        (status, body.contains("unknown query parameter")),
        (400, true),
        "{body}"
    );
    let (status, body) = request(&http, "GET", "/picture.svg", b"");
    assert_eq!(status, 200);
    assert!(body.contains(r#"class="contact live""#), "{body}");
    let (status, body) = request(&http, "GET", "/", b"");
    assert_eq!(status, 200);
    assert!(body.contains("<form id=\"lookup\">"), "{body}");
    // Self-contained: nothing is loaded from another host.
    assert!(
        !body.contains("http://") && !body.contains("https://") && !body.contains("src="),
        "{body}"
    );
}
