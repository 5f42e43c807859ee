//! Caps on how many contacts of one network neighbourhood a routing table holds, so that one
//! operator with a block of addresses cannot own a bucket or the table (an eclipse).
//!
//! A contact's neighbourhood is the /24 of its IPv4 address or the /64 of its IPv6 address
//! ([`subnet_of`]). At most [`DiversityLimits::per_bucket`] contacts of one neighbourhood share
//! a bucket and at most [`DiversityLimits::per_table`] share the table (geth's discovery uses
//! 2 and 10, the defaults here). Addresses that cannot be told apart by network (loopback,
//! private, link-local and shared ranges, and host names) are exempt: a devnet on 127.0.0.1,
//! a Compose network on one private /24 and a Kubernetes pod network all form as before.
//!
//! Implementation notes (departures from the paper): the paper has no such caps; they come
//! from S/Kademlia's and Ethereum's experience with eclipse attacks.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Contacts of one neighbourhood allowed per bucket and per table (0: no cap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiversityLimits {
    pub per_bucket: usize,
    pub per_table: usize,
}

impl DiversityLimits {
    /// No caps.
    pub const NONE: DiversityLimits = DiversityLimits {
        per_bucket: 0,
        per_table: 0,
    };
}

/// A network neighbourhood: the first 24 bits of an IPv4 address or 64 of an IPv6 one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Subnet {
    V4([u8; 3]),
    V6([u16; 4]),
}

/// The IP address of a contact at `addr` ("ip:port" or "[ipv6]:port"; an IPv4-mapped IPv6
/// address is its IPv4 address), or `None` for a host name.
pub fn ip_of(addr: &str) -> Option<IpAddr> {
    let host = match addr.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// The neighbourhood of the contact at `addr`, or `None` when it is exempt from the caps
/// (not a public IP address).
pub fn subnet_of(addr: &str) -> Option<Subnet> {
    match ip_of(addr)? {
        IpAddr::V4(ip) if is_public_v4(&ip) => {
            let o = ip.octets();
            Some(Subnet::V4([o[0], o[1], o[2]]))
        }
        IpAddr::V6(ip) if is_public_v6(&ip) => {
            let s = ip.segments();
            Some(Subnet::V6([s[0], s[1], s[2], s[3]]))
        }
        _ => None,
    }
}

fn is_public_v4(ip: &Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    let shared = a == 100 && (64..128).contains(&b); // 100.64.0.0/10, carrier-grade NAT
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_documentation()
        || shared)
}

fn is_public_v6(ip: &Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    let unique_local = first & 0xfe00 == 0xfc00;
    let link_local = first & 0xffc0 == 0xfe80;
    !(ip.is_loopback() || ip.is_unspecified() || unique_local || link_local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_addresses_group_by_slash_24_and_slash_64() {
        assert_eq!(subnet_of("8.8.8.8:50051"), Some(Subnet::V4([8, 8, 8])));
        assert_eq!(subnet_of("8.8.8.200:1"), subnet_of("8.8.8.8:50051"));
        assert_ne!(subnet_of("8.8.9.8:1"), subnet_of("8.8.8.8:1"));
        assert_eq!(
            subnet_of("[2001:4860:4860:1::8888]:50051"),
            Some(Subnet::V6([0x2001, 0x4860, 0x4860, 1]))
        );
        // An IPv4-mapped IPv6 address is its IPv4 address.
        assert_eq!(subnet_of("[::ffff:8.8.8.8]:1"), Some(Subnet::V4([8, 8, 8])));
        assert_eq!(ip_of("[::ffff:10.0.0.1]:1"), "10.0.0.1".parse().ok());
        assert_eq!(ip_of("node:50051"), None);
    }

    #[test]
    fn local_and_private_addresses_and_names_are_exempt() {
        for addr in [
            "127.0.0.1:50051",
            "10.1.2.3:50051",
            "172.20.0.5:50051",
            "192.168.1.9:1",
            "169.254.1.1:1",
            "100.64.3.4:1",
            "[::1]:50051",
            "[fd00::1]:1",
            "[fe80::1]:1",
            "kademlia-0.kademlia-peers:50051",
            "node:50051",
            "sim-3:50051",
        ] {
            assert_eq!(subnet_of(addr), None, "{addr}");
        }
    }
}
