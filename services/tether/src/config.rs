//! Cluster-mode configuration: one TOML file for every role, each key overridable by an
//! environment variable `TETHER_<SECTION>_<KEY>` (e.g. `TETHER_EDGE_MQTT_ADDR`). Unknown keys are
//! warned about; invalid values refuse to start, naming the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, bail};
use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ClusterConfig {
    pub node: NodeConfig,
    pub nats: NatsConfig,
    pub redis: RedisConfig,
    pub auth: AuthConfig,
    pub thing: ThingConfig,
    pub command: CommandSection,
    pub edge: EdgeSection,
    pub gateway: GatewaySection,
    pub health: HealthConfig,
    #[serde(flatten)]
    unknown: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct NodeConfig {
    /// This process's name in session routes and consumer groups (default: the host name).
    pub id: String,
    #[serde(flatten)]
    unknown: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct NatsConfig {
    pub url: String,
    /// JetStream stream and KV replicas (3 in production, see docs/cluster.md).
    pub replicas: usize,
    pub kv_bucket: String,
    /// Seconds a consumer group's delivery may stay unacked (e.g. held by a replica that died)
    /// before JetStream hands it to another member.
    pub ack_wait_seconds: u64,
    #[serde(flatten)]
    unknown: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RedisConfig {
    pub url: String,
    #[serde(flatten)]
    unknown: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    /// Where the auth role serves gRPC.
    pub grpc_addr: SocketAddr,
    /// Where the other roles reach auth.
    pub url: String,
    /// The operator's admin API key (auth role); required in cluster mode.
    pub admin_key: String,
    #[serde(flatten)]
    unknown: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ThingConfig {
    /// Where the thing role serves gRPC.
    pub grpc_addr: SocketAddr,
    /// Where the other roles reach thing.
    pub url: String,
    #[serde(flatten)]
    unknown: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct CommandSection {
    /// Where the command role serves gRPC.
    pub grpc_addr: SocketAddr,
    /// Where the gateway reaches command.
    pub url: String,
    #[serde(flatten)]
    unknown: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct EdgeSection {
    pub mqtt_addr: SocketAddr,
    pub max_payload_bytes: usize,
    pub workers: usize,
    /// Seconds over which a draining edge disconnects its devices.
    pub drain_seconds: u64,
    /// Sent to MQTT 5 clients with DISCONNECT 0x8B while draining, if set.
    pub server_reference: Option<String>,
    /// Seconds a dead edge's routes survive before the reaper marks its devices OFFLINE.
    pub heartbeat_ttl_seconds: u64,
    #[serde(flatten)]
    unknown: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct GatewaySection {
    pub http_addr: SocketAddr,
    /// The tenant API over gRPC (`tether.v1.Gateway`).
    pub grpc_addr: SocketAddr,
    #[serde(flatten)]
    unknown: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct HealthConfig {
    /// `/healthz`, `/readyz`, `/metrics`.
    pub addr: SocketAddr,
    #[serde(flatten)]
    unknown: BTreeMap<String, toml::Value>,
}

// === defaults ===

impl Default for NodeConfig {
    fn default() -> Self {
        let id = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
        Self { id: if id.is_empty() { "tether".into() } else { id }, unknown: BTreeMap::new() }
    }
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            replicas: 1,
            kv_bucket: "tether".into(),
            ack_wait_seconds: 30,
            unknown: BTreeMap::new(),
        }
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self { url: "redis://127.0.0.1:6379".into(), unknown: BTreeMap::new() }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            grpc_addr: ([0, 0, 0, 0], 50051).into(),
            url: "http://127.0.0.1:50051".into(),
            admin_key: String::new(),
            unknown: BTreeMap::new(),
        }
    }
}

impl Default for ThingConfig {
    fn default() -> Self {
        Self { grpc_addr: ([0, 0, 0, 0], 50052).into(), url: "http://127.0.0.1:50052".into(), unknown: BTreeMap::new() }
    }
}

impl Default for CommandSection {
    fn default() -> Self {
        Self { grpc_addr: ([0, 0, 0, 0], 50053).into(), url: "http://127.0.0.1:50053".into(), unknown: BTreeMap::new() }
    }
}

impl Default for EdgeSection {
    fn default() -> Self {
        Self {
            mqtt_addr: ([0, 0, 0, 0], 1883).into(),
            max_payload_bytes: tether_edge::DEFAULT_MAX_PAYLOAD_BYTES,
            workers: 2,
            drain_seconds: 10,
            server_reference: None,
            heartbeat_ttl_seconds: 10,
            unknown: BTreeMap::new(),
        }
    }
}

impl Default for GatewaySection {
    fn default() -> Self {
        Self {
            http_addr: ([0, 0, 0, 0], 8080).into(),
            grpc_addr: ([0, 0, 0, 0], 50054).into(),
            unknown: BTreeMap::new(),
        }
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self { addr: ([0, 0, 0, 0], 9090).into(), unknown: BTreeMap::new() }
    }
}

// === loading ===

impl ClusterConfig {
    /// Reads `path` (if given), applies `TETHER_*` overrides from `env`, validates.
    pub fn load(path: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<Self> {
        let mut table = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                text.parse::<toml::Table>().with_context(|| format!("{} is not valid TOML", path.display()))?
            }
            None => toml::Table::new(),
        };
        apply_env(&mut table, env);
        let config: Self = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| anyhow::anyhow!("invalid configuration key {}: {}", e.path(), e.inner().message().trim()))?;
        config.warn_unknown();
        config.validate()?;
        Ok(config)
    }

    fn warn_unknown(&self) {
        let sections: [(&str, &BTreeMap<String, toml::Value>); 10] = [
            ("", &self.unknown),
            ("node.", &self.node.unknown),
            ("nats.", &self.nats.unknown),
            ("redis.", &self.redis.unknown),
            ("auth.", &self.auth.unknown),
            ("thing.", &self.thing.unknown),
            ("command.", &self.command.unknown),
            ("edge.", &self.edge.unknown),
            ("gateway.", &self.gateway.unknown),
            ("health.", &self.health.unknown),
        ];
        for (prefix, unknown) in sections {
            for key in unknown.keys() {
                let path = format!("{prefix}{key}");
                tracing::warn!(key = %path, "unknown configuration key ignored");
            }
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.node.id.is_empty() || self.node.id.contains(['.', '*', '>', ' ']) {
            bail!("invalid node.id {:?}: must be non-empty without '.', '*', '>' or spaces", self.node.id);
        }
        if self.nats.replicas == 0 || self.nats.replicas > 5 {
            bail!("invalid nats.replicas {}: must be 1 to 5", self.nats.replicas);
        }
        if self.nats.ack_wait_seconds == 0 {
            bail!("invalid nats.ack_wait_seconds: must be positive");
        }
        if self.edge.max_payload_bytes == 0 {
            bail!("invalid edge.max_payload_bytes: must be positive");
        }
        if self.edge.heartbeat_ttl_seconds < 2 {
            bail!("invalid edge.heartbeat_ttl_seconds {}: must be at least 2", self.edge.heartbeat_ttl_seconds);
        }
        Ok(())
    }
}

/// `TETHER_EDGE_MQTT_ADDR=..` → `[edge] mqtt_addr = ..`; values are read as TOML when they parse
/// (numbers, booleans), else as strings.
fn apply_env(table: &mut toml::Table, env: impl IntoIterator<Item = (String, String)>) {
    const SECTIONS: [&str; 9] = ["node", "nats", "redis", "auth", "thing", "command", "edge", "gateway", "health"];
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix("TETHER_") else {
            continue;
        };
        let rest = rest.to_ascii_lowercase();
        let Some((section, key)) = rest.split_once('_') else {
            continue;
        };
        if !SECTIONS.contains(&section) {
            continue;
        }
        let value = format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        let entry = table.entry(section.to_owned()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(section_table) = entry {
            section_table.insert(key.to_owned(), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn file_values_and_env_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tether.toml");
        std::fs::write(&path, "[edge]\nmqtt_addr = \"127.0.0.1:1999\"\nworkers = 4\n[nats]\nurl = \"nats://n:4222\"\n")
            .unwrap();
        let config = ClusterConfig::load(
            Some(&path),
            env(&[("TETHER_EDGE_WORKERS", "8"), ("TETHER_NODE_ID", "edge-7"), ("OTHER", "x")]),
        )
        .unwrap();
        assert_eq!(config.edge.mqtt_addr, "127.0.0.1:1999".parse().unwrap());
        assert_eq!(config.edge.workers, 8);
        assert_eq!(config.node.id, "edge-7");
        assert_eq!(config.nats.url, "nats://n:4222");
    }

    #[test]
    fn invalid_values_name_the_key() {
        let error = ClusterConfig::load(None, env(&[("TETHER_EDGE_MQTT_ADDR", "not-an-address")])).unwrap_err();
        let message = format!("{error:#}");
        assert!(message.contains("mqtt_addr"), "{message}");
        let error = ClusterConfig::load(None, env(&[("TETHER_EDGE_WORKERS", "many")])).unwrap_err();
        assert!(format!("{error:#}").contains("workers"), "{error:#}");
        let error = ClusterConfig::load(None, env(&[("TETHER_NODE_ID", "a.b")])).unwrap_err();
        assert!(format!("{error:#}").contains("node.id"));
    }

    #[test]
    fn unknown_keys_are_kept_aside_not_fatal() {
        let config = ClusterConfig::load(None, env(&[("TETHER_EDGE_COLOUR", "blue")])).unwrap();
        assert!(config.edge.unknown.contains_key("colour"));
        let config = ClusterConfig::load(None, env(&[("TETHER_THING_COLOUR", "blue")])).unwrap();
        assert!(config.thing.unknown.contains_key("colour"));
    }

    #[test]
    fn ack_wait_from_defaults_file_and_env() {
        let config = ClusterConfig::load(None, env(&[])).unwrap();
        assert_eq!(config.nats.ack_wait_seconds, 30);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tether.toml");
        std::fs::write(&path, "[nats]\nack_wait_seconds = 5\n").unwrap();
        let config = ClusterConfig::load(Some(&path), env(&[])).unwrap();
        assert_eq!(config.nats.ack_wait_seconds, 5);
        let config = ClusterConfig::load(Some(&path), env(&[("TETHER_NATS_ACK_WAIT_SECONDS", "2")])).unwrap();
        assert_eq!(config.nats.ack_wait_seconds, 2);
        let error = ClusterConfig::load(None, env(&[("TETHER_NATS_ACK_WAIT_SECONDS", "0")])).unwrap_err();
        assert!(format!("{error:#}").contains("nats.ack_wait_seconds"), "{error:#}");
    }

    #[test]
    fn thing_addresses_from_file_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tether.toml");
        std::fs::write(&path, "[thing]\ngrpc_addr = \"127.0.0.1:50062\"\nurl = \"http://thing:50062\"\n").unwrap();
        let config = ClusterConfig::load(Some(&path), env(&[])).unwrap();
        assert_eq!(config.thing.grpc_addr, "127.0.0.1:50062".parse().unwrap());
        assert_eq!(config.thing.url, "http://thing:50062");
        let overrides = env(&[("TETHER_THING_GRPC_ADDR", "127.0.0.1:6000"), ("TETHER_THING_URL", "http://t:6000")]);
        let config = ClusterConfig::load(Some(&path), overrides).unwrap();
        assert_eq!(
            (config.thing.grpc_addr, config.thing.url.as_str()),
            ("127.0.0.1:6000".parse().unwrap(), "http://t:6000")
        );
        let error = ClusterConfig::load(None, env(&[("TETHER_THING_GRPC_ADDR", "nowhere")])).unwrap_err();
        assert!(format!("{error:#}").contains("thing.grpc_addr"), "{error:#}");
    }

    #[test]
    fn command_addresses_from_defaults_file_and_env() {
        let config = ClusterConfig::load(None, env(&[])).unwrap();
        assert_eq!(config.command.grpc_addr, "0.0.0.0:50053".parse().unwrap());
        assert_eq!(config.command.url, "http://127.0.0.1:50053");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tether.toml");
        std::fs::write(&path, "[command]\ngrpc_addr = \"127.0.0.1:50063\"\nurl = \"http://command:50063\"\n").unwrap();
        let config = ClusterConfig::load(Some(&path), env(&[("TETHER_COMMAND_URL", "http://c:7000")])).unwrap();
        assert_eq!(
            (config.command.grpc_addr, config.command.url.as_str()),
            ("127.0.0.1:50063".parse().unwrap(), "http://c:7000")
        );
        let error = ClusterConfig::load(None, env(&[("TETHER_COMMAND_GRPC_ADDR", "nowhere")])).unwrap_err();
        assert!(format!("{error:#}").contains("command.grpc_addr"), "{error:#}");
        let config = ClusterConfig::load(None, env(&[("TETHER_COMMAND_COLOUR", "blue")])).unwrap();
        assert!(config.command.unknown.contains_key("colour"));
    }

    #[test]
    fn the_gateway_grpc_address_from_defaults_file_and_env() {
        let config = ClusterConfig::load(None, env(&[])).unwrap();
        assert_eq!(config.gateway.grpc_addr, "0.0.0.0:50054".parse().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tether.toml");
        std::fs::write(&path, "[gateway]\ngrpc_addr = \"127.0.0.1:50064\"\n").unwrap();
        let config = ClusterConfig::load(Some(&path), env(&[])).unwrap();
        assert_eq!(config.gateway.grpc_addr, "127.0.0.1:50064".parse().unwrap());
        let config = ClusterConfig::load(Some(&path), env(&[("TETHER_GATEWAY_GRPC_ADDR", "127.0.0.1:7001")])).unwrap();
        assert_eq!(config.gateway.grpc_addr, "127.0.0.1:7001".parse().unwrap());
        let error = ClusterConfig::load(None, env(&[("TETHER_GATEWAY_GRPC_ADDR", "nowhere")])).unwrap_err();
        assert!(format!("{error:#}").contains("gateway.grpc_addr"), "{error:#}");
    }
}
