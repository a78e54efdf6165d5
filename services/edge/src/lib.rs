//! The `edge` service: the MQTT listener devices connect to.
//!
//! It admits devices with the Aliyun sign (through [`AuthService`]), enforces each device's topic
//! ACL, answers thing-model requests itself, hands uplinks to the bus before acknowledging them,
//! keeps one session per device (a second CONNECT takes over) and records presence in the
//! [`SessionRoutes`]. It delivers the commands and broadcasts other services send to devices and
//! reports their PUBACKs and answers ([`downlinks`], docs/commands.md).
//!
//! MQTT 3.1.1 and 5.0 are served by ntex-mqtt on its own runtime thread ([`mqtt`]); the
//! protocol-independent behaviour lives in [`session`], [`uplink`] and [`downlinks`].

mod connections;
mod downlinks;
mod models;
mod mqtt;
mod session;
mod subdevices;
mod uplink;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use tether_bus::{Bus, subject};
use tether_contract::{AuthService, ThingService};
use tether_store::SessionRoutes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::connections::{Connections, KickReason};
use crate::models::ThingModels;
use crate::session::ClosedSession;

/// Aliyun's largest accepted payload, the default of [`EdgeConfig::max_payload_bytes`].
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 256 * 1024;

/// How the edge listens.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub mqtt_addr: SocketAddr,
    /// This node's name in the session routes.
    pub node_id: String,
    /// Larger payloads are refused with an Alink 400 reply.
    pub max_payload_bytes: usize,
    /// MQTT worker threads.
    pub workers: usize,
    /// Sent to MQTT 5 clients with DISCONNECT 0x8B when this edge shuts down.
    pub server_reference: Option<String>,
}

/// The services the edge talks to.
#[derive(Clone)]
pub struct EdgeDeps {
    pub auth: Arc<dyn AuthService>,
    pub thing: Arc<dyn ThingService>,
    pub bus: Arc<dyn Bus>,
    pub routes: Arc<dyn SessionRoutes>,
}

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("cannot listen for MQTT on {addr} (--mqtt-addr)")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("MQTT runtime failed to start: {0}")]
    Runtime(String),
}

/// A running edge.
pub struct Edge {
    local_addr: SocketAddr,
    shared: Arc<EdgeShared>,
    server: mqtt::ServerHandle,
    presence: JoinHandle<()>,
    lifecycle: JoinHandle<()>,
    remote_kicks: JoinHandle<()>,
    model_changes: JoinHandle<()>,
    downlinks: JoinHandle<()>,
    topo_changes: JoinHandle<()>,
}

/// The live sessions of an edge, reachable from any thread.
#[derive(Clone)]
pub struct LiveSessions {
    shared: Arc<EdgeShared>,
}

impl LiveSessions {
    /// Each connected device with the route its session was recorded with.
    pub fn routes(&self) -> Vec<(tether_model::DeviceKey, tether_store::Route)> {
        self.shared.connections.routes()
    }

    /// Closes `conn_id` of `device` if it is still live here (its route was lost to another session).
    pub fn kick(&self, device: &tether_model::DeviceKey, conn_id: u64) {
        self.shared.connections.kick_connection(device, conn_id, KickReason::SessionTakenOver);
    }
}

/// What the edge counts, served on `/metrics` in cluster mode.
#[derive(Default)]
pub(crate) struct EdgeMetrics {
    /// Properties dropped from posts because the thing model does not define them.
    pub unknown_properties: prometheus_client::metrics::counter::Counter,
    /// Device replies to service calls whose data does not conform to the thing model.
    pub nonconforming_replies: prometheus_client::metrics::counter::Counter,
}

/// What every connection of this edge shares; `Send + Sync`, reached from every worker.
pub(crate) struct EdgeShared {
    pub config: EdgeConfig,
    pub deps: EdgeDeps,
    pub connections: Connections,
    pub models: Arc<ThingModels>,
    pub metrics: EdgeMetrics,
    pub next_conn_id: AtomicU64,
    pub closed: mpsc::UnboundedSender<ClosedSession>,
}

// === impl Edge ===

impl Edge {
    /// Binds the MQTT listener and starts serving.
    pub async fn start(config: EdgeConfig, deps: EdgeDeps) -> Result<Self, EdgeError> {
        let (closed, closed_rx) = mpsc::unbounded_channel();
        let lifecycle_events =
            deps.bus.subscribe(subject::ALL_LIFECYCLE).await.map_err(|e| EdgeError::Runtime(e.to_string()))?;
        let kicks = deps
            .bus
            .subscribe(&subject::edge_kick(&config.node_id))
            .await
            .map_err(|e| EdgeError::Runtime(e.to_string()))?;
        let model_changes =
            deps.bus.subscribe(subject::THING_MODEL_CHANGED).await.map_err(|e| EdgeError::Runtime(e.to_string()))?;
        let downlinks = deps
            .bus
            .subscribe(&subject::edge_down(&config.node_id))
            .await
            .map_err(|e| EdgeError::Runtime(e.to_string()))?;
        let broadcasts =
            deps.bus.subscribe(subject::EDGE_BROADCAST).await.map_err(|e| EdgeError::Runtime(e.to_string()))?;
        let topo_changes =
            deps.bus.subscribe(subject::ALL_TOPO).await.map_err(|e| EdgeError::Runtime(e.to_string()))?;
        let models = Arc::new(ThingModels::new(deps.thing.clone()));
        let shared = Arc::new(EdgeShared {
            config,
            deps,
            connections: Connections::new(closed.clone()),
            models: models.clone(),
            metrics: EdgeMetrics::default(),
            next_conn_id: AtomicU64::new(1),
            closed,
        });
        let (server, local_addr) = mqtt::serve(shared.clone())?;
        let presence = tokio::spawn(session::record_closed_sessions(
            shared.deps.clone(),
            shared.config.node_id.clone(),
            closed_rx,
        ));
        let lifecycle = tokio::spawn(connections::kick_on_lifecycle(shared.clone(), lifecycle_events));
        let remote_kicks = tokio::spawn(connections::kick_on_request(shared.clone(), kicks));
        let model_changes = tokio::spawn(models::forget_changed(models, model_changes));
        let downlinks = tokio::spawn(downlinks::deliver_downlinks(shared.clone(), downlinks, broadcasts));
        let topo_changes = tokio::spawn(subdevices::log_out_detached(shared.clone(), topo_changes));
        tracing::info!(addr = %local_addr, node = %shared.config.node_id, "mqtt listener started");
        Ok(Self {
            local_addr,
            shared,
            server,
            presence,
            lifecycle,
            remote_kicks,
            model_changes,
            downlinks,
            topo_changes,
        })
    }

    /// Adds the edge's metrics to `registry`.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        let metrics = &self.shared.metrics;
        registry.register(
            "edge_unknown_properties",
            "Properties dropped from posts because the thing model does not define them",
            metrics.unknown_properties.clone(),
        );
        registry.register(
            "edge_nonconforming_service_replies",
            "Device replies to service calls whose data does not conform to the thing model",
            metrics.nonconforming_replies.clone(),
        );
    }

    /// A handle on this edge's live sessions, for the cluster's route keeper.
    pub fn sessions(&self) -> LiveSessions {
        LiveSessions { shared: self.shared.clone() }
    }

    /// The address the listener is bound to (useful when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Disconnects every device (v5: reason 0x8B), stops the listener and waits until each
    /// device's OFFLINE has been recorded.
    pub async fn stop(self) {
        self.drain(std::time::Duration::ZERO).await;
    }

    /// Stops accepting, disconnects the devices spread evenly over `over` (so they reconnect to
    /// other edges gradually; v5 clients get 0x8B and the server reference), then stops.
    pub async fn drain(self, over: std::time::Duration) {
        let Self { shared, server, presence, lifecycle, remote_kicks, model_changes, downlinks, topo_changes, .. } =
            self;
        server.pause().await;
        let devices = shared.connections.devices();
        let pause = over.checked_div(u32::try_from(devices.len()).unwrap_or(u32::MAX).max(1)).unwrap_or_default();
        tracing::info!(devices = devices.len(), seconds = over.as_secs(), "draining edge");
        for device in devices {
            shared.connections.kick(&device, KickReason::ServerShuttingDown);
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
        shared.connections.kick_all(KickReason::ServerShuttingDown);
        server.stop().await;
        for task in [lifecycle, remote_kicks, model_changes, downlinks, topo_changes] {
            task.abort();
            let _ = task.await;
        }
        drop(shared);
        // The presence task ends once every connection has reported its close.
        let _ = presence.await;
    }
}
