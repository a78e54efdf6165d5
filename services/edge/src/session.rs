//! One device session: admission at CONNECT, the connection state the MQTT adapters share, and
//! what happens when it ends.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tether_bus::events::{self, Origin};
use tether_contract::{DeviceAuthError, DeviceCredentials, DeviceSession, now_ms};
use tether_model::topic::{SubscribeFilter, may_subscribe};
use tokio::sync::mpsc;

use tether_bus::subject;

use crate::connections::{ConnCommand, ConnHandle, KickReason, KickRequest};
use crate::downlinks::ConnDownlinks;
use crate::{EdgeDeps, EdgeShared};

/// Keepalive values Aliyun accepts, in seconds (PROTOCOL.md E).
pub const KEEPALIVE_RANGE: std::ops::RangeInclusive<u16> = 30..=1200;

/// The CONNECT fields admission looks at.
pub struct ConnectRequest {
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<Bytes>,
    pub keep_alive: u16,
    pub peer: Option<SocketAddr>,
}

/// Why a CONNECT is refused; each adapter maps it to its CONNACK code.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("client id refused: {0}")]
    ClientId(String),
    #[error("keepalive {0} s is outside 30..=1200")]
    KeepAlive(u16),
    #[error("bad credentials: {0}")]
    BadCredentials(DeviceAuthError),
    #[error("device is disabled")]
    NotAuthorized,
    #[error("{0}")]
    Unavailable(String),
}

/// The MQTT sink of a connection, whichever protocol version it speaks.
#[derive(Clone)]
pub enum Sink {
    V3(ntex_mqtt::v3::MqttSink),
    V5(ntex_mqtt::v5::MqttSink),
}

/// A connection's state; cloned into every service of the connection (it is `!Send`).
#[derive(Clone)]
pub struct Connection {
    inner: Rc<ConnState>,
}

pub struct ConnState {
    pub shared: Arc<EdgeShared>,
    pub session: DeviceSession,
    pub conn_id: u64,
    pub client_ip: String,
    pub sink: Sink,
    /// Explicit SUBSCRIBEs (the implicit ones are implied by the device's identity); shared
    /// with the downlink side, which delivers custom and broadcast topics only to subscribers.
    pub subscriptions: Rc<RefCell<Vec<SubscribeFilter>>>,
    /// The downlink side: what the device is sent, and the calls whose answers it follows.
    pub downlinks: Rc<ConnDownlinks>,
    /// Taken by each PUBLISH for its whole handling, in arrival order (the lock is fair): QoS 1
    /// PUBACKs leave in the order the PUBLISHes came (MQTT 3.1.1 §4.6) and a device's uplinks
    /// reach the bus in order, however many PUBLISHes the client pipelines.
    pub publish_turn: tokio::sync::Mutex<()>,
}

/// A finished session, handed to the presence recorder.
pub struct ClosedSession {
    session: DeviceSession,
    conn_id: u64,
    client_ip: String,
    at: i64,
}

// === impl Sink ===

impl Sink {
    /// Sends a QoS 0 message (replies and errors to the device).
    pub fn send(&self, topic: &str, payload: Vec<u8>) {
        let payload = ntex_bytes::Bytes::from(payload);
        let result = match self {
            Self::V3(sink) => sink.publish(topic).send_at_most_once(payload),
            Self::V5(sink) => sink.publish(topic).send_at_most_once(payload),
        };
        if let Err(error) = result {
            tracing::debug!(%topic, %error, "message to a closing connection dropped");
        }
    }

    /// Sends a QoS 1 message now (in order with what is sent after it, unless the device's
    /// in-flight window is full); the future tells whether the device acknowledged it, once its
    /// PUBACK came (or the connection ended).
    pub fn send_at_least_once(&self, topic: &str, payload: Vec<u8>) -> impl Future<Output = bool> + 'static {
        use futures::future::Either;
        let payload = ntex_bytes::Bytes::from(payload);
        let acked = match self {
            Self::V3(sink) => Either::Left(sink.publish(topic).send_at_least_once(payload)),
            Self::V5(sink) => Either::Right(sink.publish(topic).send_at_least_once(payload)),
        };
        let topic = topic.to_owned();
        async move {
            let result = match acked {
                Either::Left(acked) => acked.await.map_err(|e| e.to_string()),
                Either::Right(acked) => acked.await.map(|_| ()).map_err(|e| e.to_string()),
            };
            if let Err(error) = &result {
                tracing::debug!(%topic, %error, "qos 1 message to a closing connection not acknowledged");
            }
            result.is_ok()
        }
    }

    /// Closes the connection; v5 clients are told why (and where to go, when shutting down).
    pub fn kick(&self, reason: KickReason, server_reference: Option<&str>) {
        use ntex_mqtt::v5::codec::{Disconnect, DisconnectReasonCode};
        match self {
            Self::V3(sink) => sink.close(),
            Self::V5(sink) => {
                let reason_code = match reason {
                    KickReason::SessionTakenOver => DisconnectReasonCode::SessionTakenOver,
                    KickReason::NotAuthorized => DisconnectReasonCode::NotAuthorized,
                    KickReason::ServerShuttingDown => DisconnectReasonCode::ServerShuttingDown,
                };
                let server_reference = match reason {
                    KickReason::ServerShuttingDown => server_reference.map(Into::into),
                    _ => None,
                };
                sink.close_with_reason(Disconnect { reason_code, server_reference, ..Default::default() });
            }
        }
    }
}

// === impl Connection ===

impl Connection {
    /// Admits a CONNECT: checks it, authenticates it, takes over an older session of the same
    /// device and records the device ONLINE.
    pub async fn admit(shared: &Arc<EdgeShared>, request: ConnectRequest, sink: Sink) -> Result<Self, Refusal> {
        if request.client_id.is_empty() {
            return Err(Refusal::ClientId("client id is empty".into()));
        }
        if !KEEPALIVE_RANGE.contains(&request.keep_alive) {
            return Err(Refusal::KeepAlive(request.keep_alive));
        }
        let credentials = DeviceCredentials {
            client_id: request.client_id,
            username: request.username.unwrap_or_default(),
            password: request.password.map(|p| p.to_vec()).unwrap_or_default(),
        };
        let session = match shared.deps.auth.authenticate_device(credentials).await {
            Ok(session) => session,
            Err(DeviceAuthError::ClientId(e)) => return Err(Refusal::ClientId(e.to_string())),
            Err(DeviceAuthError::Disabled) => return Err(Refusal::NotAuthorized),
            Err(DeviceAuthError::Unavailable(e)) => return Err(Refusal::Unavailable(e)),
            Err(other) => return Err(Refusal::BadCredentials(other)),
        };
        let conn_id = shared.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let client_ip = request.peer.map(|p| p.ip().to_string()).unwrap_or_default();
        let connected_at = now_ms();

        let route = tether_store::Route {
            node: shared.config.node_id.clone(),
            conn_id,
            connected_at,
            client_ip: client_ip.clone(),
        };
        let subscriptions = Rc::new(RefCell::new(Vec::new()));
        let downlinks =
            Rc::new(ConnDownlinks::new(shared, session.clone(), conn_id, sink.clone(), subscriptions.clone()));
        let (commands, command_rx) = mpsc::unbounded_channel();
        shared
            .connections
            .insert(&session.device, ConnHandle { conn_id, route: route.clone(), commands, sub_device: None });
        ntex_rt::spawn(run_commands(
            command_rx,
            sink.clone(),
            downlinks.clone(),
            shared.config.server_reference.clone(),
        ));

        match shared.deps.routes.connect(&session.device, route).await {
            Ok(Some(previous)) if previous.node != shared.config.node_id => {
                kick_remote(shared, &session.device, &previous).await;
            }
            Ok(Some(own)) if own.conn_id == conn_id => {
                // A session that connected later already holds the device: this one must drop.
                shared.connections.remove(&session.device, conn_id);
                return Err(Refusal::Unavailable("a later session of this device holds it".into()));
            }
            Ok(_) => {}
            Err(error) => {
                shared.connections.remove(&session.device, conn_id);
                return Err(Refusal::Unavailable(error.to_string()));
            }
        }
        let origin = Origin { tenant: &session.tenant, device: &session.device, iot_id: &session.iot_id };
        publish_status(&shared.deps, events::status(origin, true, connected_at, &client_ip)).await;
        tracing::debug!(device = %session.device, conn_id, %client_ip, "device online");

        let state = ConnState {
            shared: shared.clone(),
            session,
            conn_id,
            client_ip,
            sink,
            subscriptions,
            downlinks,
            publish_turn: tokio::sync::Mutex::new(()),
        };
        Ok(Self { inner: Rc::new(state) })
    }

    /// Grants or refuses one SUBSCRIBE filter; granted filters are remembered.
    pub fn subscribe(&self, filter: &str) -> bool {
        let session = &self.inner.session;
        match SubscribeFilter::parse(filter) {
            Ok(parsed)
                if may_subscribe(&session.device, &session.topic_classes, &parsed)
                    || self.may_subscribe_for_sub_device(&parsed) =>
            {
                self.inner.subscriptions.borrow_mut().push(parsed);
                true
            }
            _ => {
                tracing::warn!(device = %session.device, %filter, "subscribe denied");
                false
            }
        }
    }

    pub fn unsubscribe(&self, filter: &str) {
        self.inner.subscriptions.borrow_mut().retain(|f| f.to_string() != filter);
    }
}

impl std::ops::Deref for Connection {
    type Target = ConnState;

    fn deref(&self) -> &ConnState {
        &self.inner
    }
}

/// Asks the edge holding `previous` (another node) to close that session of `device`.
pub(crate) async fn kick_remote(shared: &EdgeShared, device: &tether_model::DeviceKey, previous: &tether_store::Route) {
    let request = KickRequest {
        product_key: device.product_key.to_string(),
        device_name: device.device_name.to_string(),
        conn_id: previous.conn_id,
    };
    let body = serde_json::to_vec(&request).expect("kick request serializes");
    let message = tether_bus::BusMessage::new(subject::edge_kick(&previous.node), body);
    if let Err(error) = shared.deps.bus.publish(message).await {
        tracing::warn!(%device, node = %previous.node, %error, "remote takeover kick not sent");
    }
}

// === impl ConnState ===

impl Drop for ConnState {
    fn drop(&mut self) {
        self.shared.connections.remove(&self.session.device, self.conn_id);
        // Its sub-devices end with the gateway's connection, however it ended.
        self.shared.connections.log_out_sub_devices(self.conn_id);
        let closed = ClosedSession {
            session: self.session.clone(),
            conn_id: self.conn_id,
            client_ip: std::mem::take(&mut self.client_ip),
            at: now_ms(),
        };
        let _ = self.shared.closed.send(closed);
    }
}

/// Runs a connection's commands on its own worker until the connection is gone.
async fn run_commands(
    mut commands: mpsc::UnboundedReceiver<ConnCommand>,
    sink: Sink,
    downlinks: Rc<ConnDownlinks>,
    server_reference: Option<String>,
) {
    // A closed channel means the connection has ended (or been replaced) without a kick.
    while let Some(command) = commands.recv().await {
        match command {
            ConnCommand::Kick(reason) => {
                sink.kick(reason, server_reference.as_deref());
                return;
            }
            // A QoS 1 PUBACK is not awaited here: a device slow to acknowledge must not hold
            // back a kick.
            ConnCommand::Deliver(downlink) => downlinks.deliver(*downlink),
        }
    }
}

// === impl ClosedSession ===

impl ClosedSession {
    pub fn new(session: DeviceSession, conn_id: u64, client_ip: String, at: i64) -> Self {
        Self { session, conn_id, client_ip, at }
    }
}

/// Records each closed session: OFFLINE, unless the device has already reconnected.
pub async fn record_closed_sessions(deps: EdgeDeps, node: String, mut closed: mpsc::UnboundedReceiver<ClosedSession>) {
    while let Some(ClosedSession { session, conn_id, client_ip, at }) = closed.recv().await {
        match deps.routes.disconnect(&session.device, &node, conn_id, at).await {
            Ok(true) => {
                let origin = Origin { tenant: &session.tenant, device: &session.device, iot_id: &session.iot_id };
                publish_status(&deps, events::status(origin, false, at, &client_ip)).await;
                tracing::debug!(device = %session.device, conn_id, "device offline");
            }
            Ok(false) => {}
            Err(error) => tracing::warn!(device = %session.device, %error, "offline not recorded"),
        }
    }
}

pub(crate) async fn publish_status(deps: &EdgeDeps, message: tether_bus::BusMessage) {
    if let Err(error) = deps.bus.publish_durable(message).await {
        tracing::warn!(%error, "status event not published");
    }
}
