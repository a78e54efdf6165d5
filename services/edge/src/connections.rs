//! The live connections of this edge node, by device: how a takeover, a disable or a shutdown
//! reaches a connection that lives on another worker thread.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tether_bus::Subscription;
use tether_bus::downlink::Downlink;
use tether_model::DeviceKey;
use tokio::sync::mpsc;

use crate::EdgeShared;

/// Why the platform closes a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KickReason {
    /// A newer CONNECT of the same device (v5 0x8E).
    SessionTakenOver,
    /// The device was disabled or deleted (v5 0x87).
    NotAuthorized,
    /// The edge is stopping (v5 0x8B).
    ServerShuttingDown,
}

/// A command for a connection, run on the connection's own worker.
#[derive(Debug)]
pub enum ConnCommand {
    Kick(KickReason),
    /// Publish a message to the device.
    Deliver(Downlink),
}

/// How to reach one connection.
#[derive(Debug)]
pub struct ConnHandle {
    pub conn_id: u64,
    /// The route the session was recorded with (for re-registering after a routes outage).
    pub route: tether_store::Route,
    pub commands: mpsc::UnboundedSender<ConnCommand>,
}

/// Device → its live connection on this node.
#[derive(Default)]
pub struct Connections {
    by_device: Mutex<HashMap<DeviceKey, ConnHandle>>,
}

// === impl Connections ===

impl Connections {
    /// Registers a new connection and kicks the one it replaces.
    pub fn insert(&self, device: &DeviceKey, handle: ConnHandle) {
        let previous = self.by_device.lock().insert(device.clone(), handle);
        if let Some(previous) = previous {
            let _ = previous.commands.send(ConnCommand::Kick(KickReason::SessionTakenOver));
        }
    }

    /// Forgets `conn_id`, unless a newer connection of the device has replaced it.
    pub fn remove(&self, device: &DeviceKey, conn_id: u64) {
        let mut map = self.by_device.lock();
        if map.get(device).is_some_and(|h| h.conn_id == conn_id) {
            map.remove(device);
        }
    }

    pub fn kick(&self, device: &DeviceKey, reason: KickReason) -> bool {
        match self.by_device.lock().get(device) {
            Some(handle) => handle.commands.send(ConnCommand::Kick(reason)).is_ok(),
            None => false,
        }
    }

    /// Kicks `conn_id` only if it is still the device's connection here.
    pub fn kick_connection(&self, device: &DeviceKey, conn_id: u64, reason: KickReason) -> bool {
        match self.by_device.lock().get(device) {
            Some(handle) if handle.conn_id == conn_id => handle.commands.send(ConnCommand::Kick(reason)).is_ok(),
            _ => false,
        }
    }

    /// Hands a message to the device's connection; false when it is not connected here.
    pub fn deliver(&self, downlink: Downlink) -> bool {
        match self.by_device.lock().get(&downlink.device) {
            Some(handle) => handle.commands.send(ConnCommand::Deliver(downlink)).is_ok(),
            None => false,
        }
    }

    /// Every live session's route on this node.
    pub fn routes(&self) -> Vec<(DeviceKey, tether_store::Route)> {
        self.by_device.lock().iter().map(|(device, handle)| (device.clone(), handle.route.clone())).collect()
    }

    pub fn devices(&self) -> Vec<DeviceKey> {
        self.by_device.lock().keys().cloned().collect()
    }

    pub fn kick_all(&self, reason: KickReason) {
        for handle in self.by_device.lock().values() {
            let _ = handle.commands.send(ConnCommand::Kick(reason));
        }
    }
}

/// A request from another edge to close a session it has taken over.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KickRequest {
    pub product_key: String,
    pub device_name: String,
    pub conn_id: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LifecycleEvent {
    action: String,
    product_key: String,
    device_name: String,
}

/// Disconnects devices that are disabled or deleted while connected.
pub async fn kick_on_lifecycle(shared: Arc<EdgeShared>, mut events: Subscription) {
    while let Some(message) = events.next().await {
        let Ok(event) = serde_json::from_slice::<LifecycleEvent>(&message.payload) else {
            tracing::warn!(subject = %message.subject, "unreadable lifecycle event skipped");
            continue;
        };
        if event.action != "disable" && event.action != "delete" {
            continue;
        }
        let Ok(device) = DeviceKey::parse(&event.product_key, &event.device_name) else {
            continue;
        };
        if shared.connections.kick(&device, KickReason::NotAuthorized) {
            tracing::info!(%device, action = %event.action, "disconnecting device");
        }
    }
}

/// Delivers the messages other services send to devices connected here.
pub async fn deliver_downlinks(shared: Arc<EdgeShared>, mut downlinks: Subscription) {
    while let Some(message) = downlinks.next().await {
        let subject = message.subject.clone();
        let Some(downlink) = Downlink::from_message(message) else {
            tracing::warn!(%subject, "unreadable downlink skipped");
            continue;
        };
        let (device, topic) = (downlink.device.clone(), downlink.topic.clone());
        if !shared.connections.deliver(downlink) {
            tracing::debug!(%device, %topic, "downlink for a device not connected here dropped");
        }
    }
}

/// Closes sessions that CONNECTs on other edges have taken over.
pub async fn kick_on_request(shared: Arc<EdgeShared>, mut requests: Subscription) {
    while let Some(message) = requests.next().await {
        let Ok(request) = serde_json::from_slice::<KickRequest>(&message.payload) else {
            tracing::warn!(subject = %message.subject, "unreadable kick request skipped");
            continue;
        };
        let Ok(device) = DeviceKey::parse(&request.product_key, &request.device_name) else {
            continue;
        };
        shared.connections.kick_connection(&device, request.conn_id, KickReason::SessionTakenOver);
    }
}
