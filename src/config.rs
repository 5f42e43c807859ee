//! Typed settings, layered with the `config` crate: defaults < config file < environment
//! (`P2P_REMOTE_HOST`, and `KADEMLIA_*` for everything else) < command-line flags.
//!
//! Every setting is listed in the README's configuration table; [`Settings::validate`] rejects
//! bad values with a message naming the setting.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::kad::lookup::MAX_DISJOINT_PATHS;
use crate::kad::{NodeId, Params};
use crate::node::NodeConfig;
use crate::storage::{DataDir, StorageError};

/// Prefix of the environment variables (`KADEMLIA_PORT`, ...).
pub const ENV_PREFIX: &str = "KADEMLIA";
/// Variables with the settings' prefix that belong to the command line, not to settings:
/// `kademlia node --config` (`KADEMLIA_CONFIG_FILE`) and the client subcommands' `-a` and
/// `--timeout`. The settings' layer skips them, so that setting one never stops a node.
pub const COMMAND_LINE_ENV: &[&str] = &[
    "KADEMLIA_CONFIG_FILE",
    "KADEMLIA_ADDR",
    "KADEMLIA_TIMEOUT_MS",
];
/// The bootstrap variable, named exactly so.
pub const REMOTE_HOST_ENV: &str = "P2P_REMOTE_HOST";
/// The default gRPC port.
pub const DEFAULT_PORT: u16 = 50051;

/// All settings of a node.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Settings {
    /// Interface to listen on.
    pub host: String,
    /// gRPC port of the client service (put/get), health and reflection; also of the peer
    /// service unless `peer_port` is set.
    pub port: u16,
    /// gRPC port of the peer service (PING, STORE, FIND_NODE, FIND_VALUE); 0: share `port`.
    pub peer_port: u16,
    /// Port of the HTTP listener (`/metrics`); 0: none.
    pub http_port: u16,
    /// Address peers use to reach this node ("host:port"); empty = derived from the host name.
    pub advertise_addr: String,
    /// Empty: create a new network. Otherwise a host name, "host:port" or address to join
    /// through, or a comma-separated list of them.
    pub remote_host: String,
    /// Requests from other networks are refused.
    pub network_id: String,
    /// 40 hex digits, or any other string whose SHA-1 becomes the id; empty = random.
    pub node_id: String,
    pub k: usize,
    pub alpha: usize,
    pub quorum: usize,
    /// Copies a get waits for (the local one included) before it answers the newest.
    pub read_quorum: usize,
    pub rpc_timeout_ms: u64,
    /// A STORE whose version (the writer's clock, µs) is further ahead of this node's clock is
    /// refused.
    pub max_clock_skew_ms: u64,
    /// Contacts from one /24 (IPv4) or /64 (IPv6) of public addresses per bucket; 0: no cap.
    pub subnet_bucket_limit: usize,
    /// The same per routing table.
    pub subnet_table_limit: usize,
    /// A lookup ends after this long, found or not.
    pub lookup_timeout_ms: u64,
    /// RPCs one lookup sends at most.
    pub lookup_max_queries: u32,
    /// Disjoint paths each lookup runs along (S/Kademlia section 4.4); 1: the paper's lookup.
    pub lookup_disjoint_paths: usize,
    /// A put's lookup ends at convergence and its STOREs check versions (`kad::write`; the
    /// default). `false`: a put surveys all of the k closest first.
    pub conditional_puts: bool,
    pub refresh_interval_secs: u64,
    pub replicate_interval_secs: u64,
    /// Lifetime of a put that gives no TTL; 0: until deleted.
    pub record_ttl_secs: u64,
    /// Longest TTL a put may ask for, and longest finite lifetime a STORE may carry.
    pub max_ttl_secs: u64,
    /// Shortest life of a tombstone (a delete).
    pub tombstone_grace_secs: u64,
    pub cache_ttl_secs: u64,
    pub max_value_bytes: usize,
    pub max_records: usize,
    /// Memory the records may take at most (values, keys and 352 bytes per record, 56 more
    /// for one that expires).
    pub max_store_bytes: usize,
    /// Percent of `max_store_bytes` that one peer outside this node's neighbourhood may fill
    /// with its STOREs; 100: no quota.
    pub peer_store_quota_pct: u8,
    pub rebootstrap_interval_secs: u64,
    pub bootstrap_backoff_max_ms: u64,
    /// Longest wait for in-flight calls after SIGTERM before the process exits.
    pub drain_timeout_secs: u64,
    /// Peer requests per second admitted from one remote IP (bursts of twice that); 0: no
    /// limit.
    pub peer_rate_limit: u32,
    /// Peer requests go as frames on one stream per peer (`Exchange`) where the peer serves
    /// it; false: unary calls only, and this node's `Exchange` answers UNIMPLEMENTED.
    pub peer_streams: bool,
    /// Directory for records, identity and contacts (redb); empty keeps everything in memory.
    pub data_dir: String,
    /// PEM certificate of the cluster CA: when set, peers talk mTLS on `peer_port` and only
    /// nodes with a certificate from this CA may join; the node id derives from its key.
    pub tls_ca_cert: String,
    /// PEM private key of the cluster CA, with which the node issues its own certificate at
    /// start (`kademlia cert ca` makes both files).
    pub tls_ca_key: String,
    /// tracing env-filter directive (RUST_LOG overrides it).
    pub log: String,
    /// `text` (one line per event, for people) or `json` (one JSON object per line, for
    /// log collectors).
    pub log_format: String,
}

impl Default for Settings {
    /// The node's defaults ([`NodeConfig::new`]), and a listener on every interface.
    fn default() -> Self {
        let n = NodeConfig::new(NodeId([0; 20]), "");
        let ms = |d: Duration| d.as_millis() as u64;
        Settings {
            host: "0.0.0.0".into(),
            port: DEFAULT_PORT,
            peer_port: 0,
            http_port: 0,
            advertise_addr: String::new(),
            remote_host: String::new(),
            network_id: n.network_id,
            node_id: String::new(),
            k: n.params.k,
            alpha: n.params.alpha,
            quorum: n.quorum,
            read_quorum: n.read_quorum,
            rpc_timeout_ms: ms(n.params.rpc_timeout),
            max_clock_skew_ms: ms(n.params.max_clock_skew),
            subnet_bucket_limit: n.params.diversity.per_bucket,
            subnet_table_limit: n.params.diversity.per_table,
            lookup_timeout_ms: ms(n.lookup_timeout),
            lookup_max_queries: n.lookup_max_queries,
            lookup_disjoint_paths: n.lookup_disjoint_paths,
            conditional_puts: n.conditional_puts,
            refresh_interval_secs: n.refresh_interval.as_secs(),
            replicate_interval_secs: n.replicate_interval.as_secs(),
            record_ttl_secs: n.record_ttl.map_or(0, |t| t.as_secs()),
            max_ttl_secs: n.max_ttl.as_secs(),
            tombstone_grace_secs: n.tombstone_grace.as_secs(),
            cache_ttl_secs: n.cache_ttl.as_secs(),
            max_value_bytes: n.max_value_bytes,
            max_records: n.max_records,
            max_store_bytes: n.max_store_bytes,
            peer_store_quota_pct: n.peer_store_quota_pct,
            rebootstrap_interval_secs: n.rebootstrap_interval.as_secs(),
            bootstrap_backoff_max_ms: ms(n.bootstrap_backoff_max),
            drain_timeout_secs: n.drain_timeout.as_secs(),
            peer_rate_limit: n.peer_rate_limit,
            peer_streams: n.peer_streams,
            data_dir: String::new(),
            tls_ca_cert: String::new(),
            tls_ca_key: String::new(),
            log: "info".into(),
            log_format: "text".into(),
        }
    }
}

/// Largest value a node accepts at most (gRPC messages must hold it).
pub const MAX_VALUE_BYTES_LIMIT: usize = 16 * 1024 * 1024;

fn invalid(name: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name,
        reason: reason.into(),
    }
}

impl Settings {
    /// Loads settings from the layers, `overrides` (from flags) last.
    pub fn load(
        file: Option<&Path>,
        overrides: &[(String, String)],
    ) -> Result<Settings, ConfigError> {
        let defaults = config::Config::try_from(&Settings::default())?;
        let known: HashSet<String> = match &defaults.cache.kind {
            config::ValueKind::Table(t) => t.keys().cloned().collect(),
            _ => HashSet::new(),
        };
        // The user's layers, then the same over the defaults: the first tells which settings
        // were given, so that those that follow k by default can follow a lowered k.
        let layers = |mut b: config::ConfigBuilder<config::builder::DefaultState>| {
            if let Some(path) = file {
                b = b.add_source(config::File::from(path).required(true));
            }
            let environment: config::Map<String, String> = std::env::vars()
                .filter(|(name, _)| !COMMAND_LINE_ENV.contains(&name.as_str()))
                .collect();
            b = b.add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator("_")
                    .try_parsing(true)
                    .source(Some(environment)),
            );
            if let Ok(v) = std::env::var(REMOTE_HOST_ENV) {
                b = b.set_override("remote_host", v)?;
            }
            for (k, v) in overrides {
                b = b.set_override(k.as_str(), v.as_str())?;
            }
            b.build()
        };
        let given: HashSet<String> = match &layers(config::Config::builder())?.cache.kind {
            config::ValueKind::Table(t) => t.keys().cloned().collect(),
            _ => HashSet::new(),
        };
        let merged = layers(config::Config::builder().add_source(defaults))?;
        if let config::ValueKind::Table(t) = &merged.cache.kind {
            let mut unknown: Vec<&String> = t.keys().filter(|k| !known.contains(*k)).collect();
            unknown.sort();
            if let Some(k) = unknown.first() {
                return Err(invalid(
                    "(unknown)",
                    format!(
                        "no setting is called {k:?} (from a file, a flag or {ENV_PREFIX}_{})",
                        k.to_uppercase()
                    ),
                ));
            }
        }
        let mut s: Settings = merged.try_deserialize()?;
        // Lowering k alone is fine: alpha and the quorums, unless given, are at most k.
        for (name, value) in [
            ("alpha", &mut s.alpha),
            ("quorum", &mut s.quorum),
            ("read_quorum", &mut s.read_quorum),
        ] {
            if !given.contains(name) {
                *value = (*value).min(s.k.max(1));
            }
        }
        s.validate()?;
        Ok(s)
    }

    /// Checks ranges and relations between settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.port == 0 {
            return Err(invalid("port", "must be between 1 and 65535"));
        }
        if self.http_port != 0 && (self.http_port == self.port || self.http_port == self.peer_port)
        {
            return Err(invalid(
                "http_port",
                "must differ from port and peer_port, or be 0 for no HTTP listener",
            ));
        }
        if self.peer_port == self.port {
            return Err(invalid(
                "peer_port",
                format!("must differ from port ({}), or be 0 to share it", self.port),
            ));
        }
        if !self.tls_ca_cert.is_empty() {
            if self.peer_port == 0 {
                return Err(invalid(
                    "peer_port",
                    "must be set when tls_ca_cert is: peers talk TLS on their own port while \
                     clients keep the plaintext one",
                ));
            }
            if self.tls_ca_key.is_empty() {
                return Err(invalid(
                    "tls_ca_key",
                    "must be set when tls_ca_cert is: the node issues its own certificate with it",
                ));
            }
            if !self.node_id.is_empty() {
                return Err(invalid(
                    "node_id",
                    "cannot be pinned when tls_ca_cert is set: the id derives from the node's key",
                ));
            }
        } else if !self.tls_ca_key.is_empty() {
            return Err(invalid("tls_ca_key", "is only used with tls_ca_cert"));
        }
        if self.host.is_empty() {
            return Err(invalid(
                "host",
                "must not be empty (use 0.0.0.0 for every interface)",
            ));
        }
        if !self.advertise_addr.is_empty() {
            let ok = self.advertise_addr.rsplit_once(':').is_some_and(|(h, p)| {
                !h.is_empty()
                    && p.parse::<u16>().is_ok_and(|p| p != 0)
                    && h != "0.0.0.0"
                    && h != "[::]"
            });
            if !ok {
                return Err(invalid(
                    "advertise_addr",
                    format!("{:?} is not a reachable host:port", self.advertise_addr),
                ));
            }
        }
        if self.network_id.is_empty() || self.network_id.len() > 64 {
            return Err(invalid("network_id", "must be 1 to 64 characters"));
        }
        if !(1..=256).contains(&self.k) {
            return Err(invalid("k", "must be between 1 and 256"));
        }
        if !(1..=self.k).contains(&self.alpha) {
            return Err(invalid(
                "alpha",
                format!("must be between 1 and k ({})", self.k),
            ));
        }
        if !(1..=self.k).contains(&self.quorum) {
            return Err(invalid(
                "quorum",
                format!("must be between 1 and k ({})", self.k),
            ));
        }
        if !(1..=self.k).contains(&self.read_quorum) {
            return Err(invalid(
                "read_quorum",
                format!("must be between 1 and k ({})", self.k),
            ));
        }
        for (name, v) in [
            ("rpc_timeout_ms", self.rpc_timeout_ms),
            ("max_clock_skew_ms", self.max_clock_skew_ms),
            ("refresh_interval_secs", self.refresh_interval_secs),
            ("replicate_interval_secs", self.replicate_interval_secs),
            ("max_ttl_secs", self.max_ttl_secs),
            ("tombstone_grace_secs", self.tombstone_grace_secs),
            ("rebootstrap_interval_secs", self.rebootstrap_interval_secs),
            ("bootstrap_backoff_max_ms", self.bootstrap_backoff_max_ms),
            ("max_records", self.max_records as u64),
            ("lookup_max_queries", u64::from(self.lookup_max_queries)),
            ("max_store_bytes", self.max_store_bytes as u64),
        ] {
            if v == 0 {
                return Err(invalid(name, "must be greater than 0"));
            }
        }
        if crate::telemetry::LogFormat::parse(&self.log_format).is_none() {
            return Err(invalid("log_format", "must be text or json"));
        }
        if !(1..=MAX_DISJOINT_PATHS).contains(&self.lookup_disjoint_paths) {
            return Err(invalid(
                "lookup_disjoint_paths",
                format!("must be from 1 (the paper's single lookup) to {MAX_DISJOINT_PATHS}"),
            ));
        }
        if !(1..=100).contains(&self.peer_store_quota_pct) {
            return Err(invalid(
                "peer_store_quota_pct",
                "must be a percentage from 1 to 100 (100: no quota)",
            ));
        }
        let one_record = self.max_value_bytes + crate::kad::store::RECORD_OVERHEAD_BYTES;
        if self.max_store_bytes < one_record {
            return Err(invalid(
                "max_store_bytes",
                format!("must hold at least one record of max_value_bytes ({one_record} bytes)"),
            ));
        }
        if self.lookup_timeout_ms < self.rpc_timeout_ms {
            return Err(invalid(
                "lookup_timeout_ms",
                format!(
                    "must be at least rpc_timeout_ms ({}): a lookup waits for its requests",
                    self.rpc_timeout_ms
                ),
            ));
        }
        if !(1..=MAX_VALUE_BYTES_LIMIT).contains(&self.max_value_bytes) {
            return Err(invalid(
                "max_value_bytes",
                format!("must be between 1 and {MAX_VALUE_BYTES_LIMIT}"),
            ));
        }
        for (name, v) in [
            ("record_ttl_secs", self.record_ttl_secs),
            ("tombstone_grace_secs", self.tombstone_grace_secs),
        ] {
            if v > self.max_ttl_secs {
                return Err(invalid(
                    name,
                    format!("must not exceed max_ttl_secs ({})", self.max_ttl_secs),
                ));
            }
        }
        Ok(())
    }

    /// The node id these settings ask for (random when `node_id` is empty).
    pub fn node_id(&self) -> NodeId {
        if self.node_id.is_empty() {
            NodeId::random(&mut rand::rng())
        } else {
            NodeId::from_hex(&self.node_id).unwrap_or_else(|| NodeId::hash(self.node_id.as_bytes()))
        }
    }

    /// The port peers reach this node on: `peer_port`, or `port` when they share it.
    pub fn peer_listen_port(&self) -> u16 {
        if self.peer_port == 0 {
            self.port
        } else {
            self.peer_port
        }
    }

    /// The remote host, `None` when empty.
    pub fn remote(&self) -> Option<String> {
        let r = self.remote_host.trim();
        (!r.is_empty()).then(|| r.to_string())
    }

    /// The driver's configuration, given the advertised address.
    pub fn node_config(&self, addr: String) -> NodeConfig {
        let secs = Duration::from_secs;
        NodeConfig {
            id: self.node_id(),
            addr,
            network_id: self.network_id.clone(),
            remote_host: self.remote(),
            params: Params {
                k: self.k,
                alpha: self.alpha,
                rpc_timeout: Duration::from_millis(self.rpc_timeout_ms),
                max_clock_skew: Duration::from_millis(self.max_clock_skew_ms),
                max_ttl: secs(self.max_ttl_secs),
                diversity: crate::kad::diversity::DiversityLimits {
                    per_bucket: self.subnet_bucket_limit,
                    per_table: self.subnet_table_limit,
                },
            },
            quorum: self.quorum,
            read_quorum: self.read_quorum,
            lookup_timeout: Duration::from_millis(self.lookup_timeout_ms),
            lookup_max_queries: self.lookup_max_queries,
            lookup_disjoint_paths: self.lookup_disjoint_paths,
            conditional_puts: self.conditional_puts,
            refresh_interval: secs(self.refresh_interval_secs),
            replicate_interval: secs(self.replicate_interval_secs),
            record_ttl: (self.record_ttl_secs > 0).then(|| secs(self.record_ttl_secs)),
            max_ttl: secs(self.max_ttl_secs),
            tombstone_grace: secs(self.tombstone_grace_secs),
            cache_ttl: secs(self.cache_ttl_secs),
            max_value_bytes: self.max_value_bytes,
            max_records: self.max_records,
            max_store_bytes: self.max_store_bytes,
            peer_store_quota_pct: self.peer_store_quota_pct,
            rebootstrap_interval: secs(self.rebootstrap_interval_secs),
            bootstrap_backoff_max: Duration::from_millis(self.bootstrap_backoff_max_ms),
            drain_timeout: secs(self.drain_timeout_secs),
            data_dir: None,
            clock_offset_ms: 0,
            peer_rate_limit: self.peer_rate_limit,
            peer_streams: self.peer_streams,
            peer_tls: None,
        }
    }

    /// The id `node_id` pins, if set.
    pub fn pinned_node_id(&self) -> Option<NodeId> {
        (!self.node_id.is_empty()).then(|| self.node_id())
    }

    /// [`Settings::node_config`], with the data dir opened when `data_dir` is set (the node
    /// takes the id stored there, its records and its saved contacts) and peer TLS set up when
    /// `tls_ca_cert` is (the id is then its key's, and replaces a stored one).
    pub fn open_node_config(&self, addr: String) -> Result<NodeConfig, anyhow::Error> {
        let mut cfg = self.open_data_dir(addr)?;
        if !self.tls_ca_cert.is_empty() {
            use crate::net::tls;
            let ca =
                tls::ClusterCa::load(Path::new(&self.tls_ca_cert), Path::new(&self.tls_ca_key))?;
            let key = tls::load_or_create_key(cfg.data_dir.as_ref().map(|d| d.path()))?;
            let peer_tls = tls::PeerTls::new(&ca, &key)?;
            cfg.id = peer_tls.id();
            if let Some(dir) = cfg.data_dir.as_mut() {
                std::sync::Arc::get_mut(dir)
                    .expect("the data dir was just opened")
                    .set_id(cfg.id)?;
            }
            cfg.peer_tls = Some(std::sync::Arc::new(peer_tls));
        }
        Ok(cfg)
    }

    fn open_data_dir(&self, addr: String) -> Result<NodeConfig, StorageError> {
        let mut cfg = self.node_config(addr);
        if !self.data_dir.is_empty() {
            let dir = DataDir::open(&self.data_dir, self.pinned_node_id(), cfg.store_limits())?;
            cfg.id = dir.id();
            cfg.data_dir = Some(std::sync::Arc::new(dir));
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_settings_give_the_node_defaults() {
        let from_settings = Settings::default().node_config("a:1".into());
        let direct = NodeConfig::new(from_settings.id, "a:1");
        assert_eq!(format!("{from_settings:?}"), format!("{direct:?}"));
    }

    #[test]
    fn defaults_are_valid_and_match_the_paper() {
        let s = Settings::default();
        s.validate().unwrap();
        assert_eq!((s.k, s.alpha, s.port), (20, 3, 50051));
        assert_eq!(s.refresh_interval_secs, 3600);
        assert_eq!(s.replicate_interval_secs, 3600);
        assert_eq!(
            s.record_ttl_secs, 0,
            "a put without a TTL lives until deleted"
        );
    }

    #[test]
    fn peer_ports_and_tls_settings_are_checked_together() {
        let err = |s: Settings| s.validate().unwrap_err().to_string();
        let shared = Settings {
            peer_port: DEFAULT_PORT,
            ..Settings::default()
        };
        assert!(err(shared).contains("peer_port"));
        let tls = Settings {
            tls_ca_cert: "ca.pem".into(),
            tls_ca_key: "ca-key.pem".into(),
            ..Settings::default()
        };
        assert!(err(tls.clone()).contains("peer_port"));
        let tls = Settings {
            peer_port: 50052,
            ..tls
        };
        tls.validate().unwrap();
        assert_eq!(tls.peer_listen_port(), 50052);
        assert_eq!(Settings::default().peer_listen_port(), DEFAULT_PORT);
        assert!(
            err(Settings {
                tls_ca_key: String::new(),
                ..tls.clone()
            })
            .contains("tls_ca_key")
        );
        assert!(
            err(Settings {
                node_id: "pinned".into(),
                ..tls
            })
            .contains("node_id")
        );
        assert!(
            err(Settings {
                tls_ca_key: "k".into(),
                ..Settings::default()
            })
            .contains("tls_ca_key")
        );
    }

    #[test]
    fn validation_names_the_setting() {
        let s = Settings {
            quorum: 50,
            ..Settings::default()
        };
        assert!(s.validate().unwrap_err().to_string().contains("quorum"));
        let s = Settings {
            advertise_addr: "0.0.0.0:50051".into(),
            ..Settings::default()
        };
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("advertise_addr")
        );
        let s = Settings {
            record_ttl_secs: 10,
            max_ttl_secs: 5,
            ..Settings::default()
        };
        let err = s.validate().unwrap_err().to_string();
        assert!(
            err.contains("record_ttl_secs") && err.contains("max_ttl_secs"),
            "{err}"
        );
    }

    #[test]
    fn flags_override_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, "port = 6000\nk = 8\nnetwork_id = \"filenet\"\n").unwrap();
        let s = Settings::load(Some(&path), &[("port".into(), "7000".into())]).unwrap();
        assert_eq!((s.port, s.k, s.network_id.as_str()), (7000, 8, "filenet"));
    }

    #[test]
    fn unknown_settings_are_rejected() {
        let err = Settings::load(None, &[("qourum".into(), "2".into())]).unwrap_err();
        assert!(err.to_string().contains("qourum"), "{err}");
    }

    #[test]
    fn node_id_from_hex_or_hash() {
        let hex = "00112233445566778899aabbccddeeff00112233";
        let s = Settings {
            node_id: hex.into(),
            ..Settings::default()
        };
        assert_eq!(s.node_id().to_hex(), hex);
        let s = Settings {
            node_id: "kademlia-0".into(),
            ..Settings::default()
        };
        assert_eq!(s.node_id(), NodeId::hash(b"kademlia-0"));
    }
}
