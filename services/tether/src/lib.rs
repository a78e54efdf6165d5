//! `tether run`: every service in one process, on the in-process bus and the embedded store.
//!
//! [`Platform::start`] wires auth, thing, command, edge and gateway exactly as cluster mode does,
//! only with the embedded adapters behind the `Bus`, `KvStore` and `SessionRoutes` traits. Tests
//! start it in-process on free ports.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tether_auth::Auth;
use tether_bus::{Bus, InProcessBus};
use tether_command::{CommandConfig, CommandDeps, CommandTasks, Commands};
use tether_contract::{AuthService, CommandService, ThingService, now_ms};
use tether_edge::{Edge, EdgeConfig, EdgeDeps};
use tether_gateway::{Gateway, GatewayAddrs, GatewayDeps};
use tether_store::{FjallStore, KvStore, LocalRoutes, SessionRoutes};
use tether_thing::Thing;

pub mod cluster;
pub mod config;

/// Settings of an embedded platform.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    pub data_dir: PathBuf,
    pub mqtt_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// The tenant API over gRPC (`tether.v1.Gateway`).
    pub grpc_addr: SocketAddr,
    /// The operator's key; generated once and kept in the data directory when `None`.
    pub admin_key: Option<String>,
    pub max_payload_bytes: usize,
    pub mqtt_workers: usize,
}

/// Where the admin key came from, for the start-up banner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminKeySource {
    Environment,
    File(PathBuf),
}

/// A running embedded platform.
pub struct Platform {
    pub admin_key: String,
    pub admin_key_source: AdminKeySource,
    pub bus: Arc<InProcessBus>,
    edge: Edge,
    gateway: Gateway,
    routes: LocalRoutes,
    /// The thing service's consumer groups (latest properties, deleted devices and products).
    thing_consumers: tokio::task::JoinHandle<()>,
    command: Arc<dyn CommandService>,
    /// The command service's consumers, sweeper and answer routing.
    command_tasks: CommandTasks,
    store: std::sync::Weak<dyn KvStore>,
}

// === impl EmbeddedConfig ===

impl EmbeddedConfig {
    /// Defaults for `data_dir`, listening on the given addresses; gRPC on a free loopback port
    /// (set `grpc_addr` for another).
    pub fn new(data_dir: impl Into<PathBuf>, mqtt_addr: SocketAddr, http_addr: SocketAddr) -> Self {
        Self {
            data_dir: data_dir.into(),
            mqtt_addr,
            http_addr,
            grpc_addr: ([127, 0, 0, 1], 0).into(),
            admin_key: None,
            max_payload_bytes: tether_edge::DEFAULT_MAX_PAYLOAD_BYTES,
            mqtt_workers: 1,
        }
    }
}

// === impl Platform ===

impl Platform {
    pub async fn start(config: EmbeddedConfig) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create --data-dir {}", config.data_dir.display()))?;
        let (admin_key, admin_key_source) = admin_key(&config)?;
        let store: Arc<dyn KvStore> = Arc::new(
            FjallStore::open(&config.data_dir.join("store"))
                .with_context(|| format!("cannot open the store in --data-dir {}", config.data_dir.display()))?,
        );
        let bus = Arc::new(
            InProcessBus::open(&config.data_dir.join("bus"))
                .with_context(|| format!("cannot open the bus in --data-dir {}", config.data_dir.display()))?,
        );
        let bus_dyn: Arc<dyn Bus> = bus.clone();
        let auth: Arc<dyn AuthService> = Arc::new(Auth::open(store.clone(), bus_dyn.clone(), &admin_key).await?);
        let store_ref = Arc::downgrade(&store);
        let routes = LocalRoutes::open(store.clone(), now_ms()).await?;
        let routes_dyn: Arc<dyn SessionRoutes> = Arc::new(routes.clone());
        let thing = Arc::new(Thing::new(store.clone(), bus_dyn.clone(), routes_dyn.clone()));
        let thing_consumers = thing.run_consumers().await?;
        let thing: Arc<dyn ThingService> = thing;
        let command_deps = CommandDeps {
            store: store.clone(),
            bus: bus_dyn.clone(),
            routes: routes_dyn.clone(),
            thing: thing.clone(),
            auth: auth.clone(),
        };
        let (command, command_tasks) = Commands::start(command_deps, CommandConfig::default()).await?;
        let command: Arc<dyn CommandService> = command;

        let edge_config = EdgeConfig {
            mqtt_addr: config.mqtt_addr,
            node_id: "embedded".into(),
            max_payload_bytes: config.max_payload_bytes,
            workers: config.mqtt_workers,
            server_reference: None,
        };
        let edge_deps = EdgeDeps { auth: auth.clone(), thing: thing.clone(), bus: bus_dyn, routes: routes_dyn.clone() };
        let edge = Edge::start(edge_config, edge_deps).await?;
        let gateway_deps = GatewayDeps { auth, thing, routes: routes_dyn, command: command.clone() };
        let gateway_addrs = GatewayAddrs { http: config.http_addr, grpc: config.grpc_addr };
        let gateway = match Gateway::start(gateway_addrs, gateway_deps).await {
            Ok(gateway) => gateway,
            Err(error) => {
                edge.stop().await;
                thing_consumers.abort();
                command_tasks.stop().await;
                return Err(error.into());
            }
        };
        Ok(Self {
            admin_key,
            admin_key_source,
            bus,
            edge,
            gateway,
            routes,
            thing_consumers,
            command,
            command_tasks,
            store: store_ref,
        })
    }

    pub fn mqtt_addr(&self) -> SocketAddr {
        self.edge.local_addr()
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.gateway.local_addr()
    }

    /// Where the tenant API serves gRPC.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.gateway.grpc_addr()
    }

    /// The command service, as the gateway calls it. It holds the store: drop it before
    /// [`Platform::stop`], which waits for the store to be let go.
    pub fn command(&self) -> Arc<dyn CommandService> {
        self.command.clone()
    }

    /// Disconnects every device, records it OFFLINE, stops the listeners and closes the bus and the
    /// store.
    pub async fn stop(self) {
        let Self { edge, gateway, routes, thing_consumers, command, command_tasks, store, bus, .. } = self;
        edge.stop().await;
        gateway.stop().await;
        thing_consumers.abort();
        let _ = thing_consumers.await;
        command_tasks.stop().await;
        drop(command);
        routes.close().await;
        bus.close().await;
        // Every service lets go of the store as it stops: wait for fjall to sync and unlock, so
        // the data directory can be opened again at once.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while store.strong_count() > 0 {
            if tokio::time::Instant::now() > deadline {
                tracing::warn!("store still in use after shutdown");
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}

/// `TETHER_ADMIN_KEY`-style override, else the key kept in `<data-dir>/admin.key` (made once).
fn admin_key(config: &EmbeddedConfig) -> anyhow::Result<(String, AdminKeySource)> {
    if let Some(key) = &config.admin_key {
        return Ok((key.clone(), AdminKeySource::Environment));
    }
    let path = config.data_dir.join("admin.key");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let key = existing.trim().to_owned();
        if !key.is_empty() {
            return Ok((key, AdminKeySource::File(path)));
        }
    }
    let key = format!("tk_admin_{}", hex::encode(rand::random::<[u8; 20]>()));
    write_private(&path, &key).with_context(|| format!("cannot write the admin key to {}", path.display()))?;
    Ok((key, AdminKeySource::File(path)))
}

fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path)?;
    file.write_all(content.as_bytes())?;
    file.sync_all()
}
