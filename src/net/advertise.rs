//! Choosing the address a node advertises to its peers.
//!
//! Never a wildcard: an explicit `advertise_addr` wins; a specific listen host is used as is;
//! otherwise the node resolves its own host name (in a container, its address on the container
//! network) and prefers a non-loopback IPv4 address.

use std::net::{IpAddr, SocketAddr};

use tracing::warn;

/// This machine's host name (from the kernel, else `$HOSTNAME`).
pub fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
}

fn is_wildcard(host: &str) -> bool {
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified())
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified())
}

/// Picks the preferred address: non-loopback IPv4, then any non-loopback, then anything.
fn pick(addrs: &[SocketAddr]) -> Option<SocketAddr> {
    addrs
        .iter()
        .find(|a| a.is_ipv4() && !a.ip().is_loopback())
        .or_else(|| addrs.iter().find(|a| !a.ip().is_loopback()))
        .or_else(|| addrs.first())
        .copied()
}

/// The address to advertise for a node listening on `host:port`.
pub async fn advertise_address(explicit: &str, host: &str, port: u16) -> String {
    if !explicit.is_empty() {
        return explicit.to_string();
    }
    if !is_wildcard(host) {
        return if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
    }
    if let Some(name) = hostname() {
        match tokio::net::lookup_host((name.as_str(), port)).await {
            Ok(addrs) => {
                let addrs: Vec<SocketAddr> = addrs.collect();
                if let Some(a) = pick(&addrs) {
                    return a.to_string();
                }
            }
            Err(e) => warn!(host = %name, error = %e, "cannot resolve own host name"),
        }
    }
    warn!(
        "cannot determine an address to advertise; using 127.0.0.1 (set KADEMLIA_ADVERTISE_ADDR)"
    );
    format!("127.0.0.1:{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn never_advertises_a_wildcard() {
        assert_eq!(
            advertise_address("node-1:7000", "0.0.0.0", 50051).await,
            "node-1:7000"
        );
        assert_eq!(
            advertise_address("", "127.0.0.5", 50051).await,
            "127.0.0.5:50051"
        );
        let a = advertise_address("", "0.0.0.0", 50051).await;
        assert!(!a.starts_with("0.0.0.0"), "{a}");
        assert!(a.ends_with(":50051"), "{a}");
    }

    #[test]
    fn prefers_non_loopback_ipv4() {
        let addrs: Vec<SocketAddr> = vec![
            "127.0.1.1:1".parse().unwrap(),
            "[fe80::1]:1".parse().unwrap(),
            "10.1.2.3:1".parse().unwrap(),
        ];
        assert_eq!(pick(&addrs), Some("10.1.2.3:1".parse().unwrap()));
    }
}
