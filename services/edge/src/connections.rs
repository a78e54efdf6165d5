//! The live connections of this edge node, by device: how a takeover, a disable or a shutdown
//! reaches a connection that lives on another worker thread.
//!
//! A sub-device logged in through a gateway maps to the gateway's connection (its messages
//! travel there) and carries its own session; ending such a session logs the sub-device out and
//! leaves the gateway's connection alone.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tether_bus::Subscription;
use tether_bus::downlink::Downlink;
use tether_contract::{DeviceSession, now_ms};
use tether_model::{DeviceKey, ProductKey};
use tokio::sync::mpsc;

use crate::EdgeShared;
use crate::session::ClosedSession;

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
    /// Boxed: the channel allocates its first block of 32 slots with the connection, so a small
    /// command keeps that at ~0.5 KB instead of ~6 KB per idle device.
    Deliver(Box<Downlink>),
}

/// How to reach one connection.
#[derive(Debug)]
pub struct ConnHandle {
    pub conn_id: u64,
    /// The route the session was recorded with (for re-registering after a routes outage).
    pub route: tether_store::Route,
    pub commands: mpsc::UnboundedSender<ConnCommand>,
    /// Set for a sub-device logged in through a gateway (whose connection `conn_id` is).
    pub sub_device: Option<DeviceSession>,
}

/// Device → its live connection on this node.
pub struct Connections {
    by_device: Mutex<HashMap<DeviceKey, ConnHandle>>,
    /// Gateway connection → the sub-devices it logged in; an entry is live while `by_device`
    /// still maps the sub-device to that connection (lock order: `by_device` first).
    sub_devices: Mutex<HashMap<u64, HashSet<DeviceKey>>>,
    /// Where ended sub-device sessions are reported (the presence recorder).
    closed: mpsc::UnboundedSender<ClosedSession>,
}

// === impl Connections ===

impl Connections {
    pub fn new(closed: mpsc::UnboundedSender<ClosedSession>) -> Self {
        Self { by_device: Mutex::default(), sub_devices: Mutex::default(), closed }
    }

    /// Registers a new connection and kicks the one it replaces (a sub-device session it
    /// replaces just ends here: the new session has its route, the gateway stays).
    pub fn insert(&self, device: &DeviceKey, handle: ConnHandle) {
        let previous = self.by_device.lock().insert(device.clone(), handle);
        if let Some(previous) = previous.filter(|p| p.sub_device.is_none()) {
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

    /// Closes the device's session: its connection, or its login through a gateway.
    pub fn kick(&self, device: &DeviceKey, reason: KickReason) -> bool {
        let map = self.by_device.lock();
        match map.get(device) {
            Some(handle) if handle.sub_device.is_some() => {
                let conn_id = handle.conn_id;
                drop(map);
                self.log_out_sub_device(device, conn_id)
            }
            Some(handle) => handle.commands.send(ConnCommand::Kick(reason)).is_ok(),
            None => false,
        }
    }

    /// Kicks `conn_id` only if it is still the device's connection here.
    pub fn kick_connection(&self, device: &DeviceKey, conn_id: u64, reason: KickReason) -> bool {
        let map = self.by_device.lock();
        match map.get(device) {
            Some(handle) if handle.conn_id == conn_id && handle.sub_device.is_some() => {
                drop(map);
                self.log_out_sub_device(device, conn_id)
            }
            Some(handle) if handle.conn_id == conn_id => handle.commands.send(ConnCommand::Kick(reason)).is_ok(),
            _ => false,
        }
    }

    /// Logs `session`'s device in through the gateway connection `conn_id` (replacing any
    /// session it had here); false when that connection is no longer the gateway's.
    pub fn log_in_sub_device(
        &self,
        gateway: &DeviceKey,
        conn_id: u64,
        session: DeviceSession,
        route: tether_store::Route,
    ) -> bool {
        let commands = match self.by_device.lock().get(gateway) {
            Some(handle) if handle.conn_id == conn_id && handle.sub_device.is_none() => handle.commands.clone(),
            _ => return false,
        };
        let device = session.device.clone();
        self.sub_devices.lock().entry(conn_id).or_default().insert(device.clone());
        self.insert(&device, ConnHandle { conn_id, route, commands, sub_device: Some(session) });
        true
    }

    /// The id of the device's own connection here.
    pub fn connection_of(&self, device: &DeviceKey) -> Option<u64> {
        self.by_device.lock().get(device).filter(|h| h.sub_device.is_none()).map(|h| h.conn_id)
    }

    /// The session of a sub-device logged in through connection `conn_id`.
    pub fn sub_device(&self, device: &DeviceKey, conn_id: u64) -> Option<DeviceSession> {
        match self.by_device.lock().get(device) {
            Some(handle) if handle.conn_id == conn_id => handle.sub_device.clone(),
            _ => None,
        }
    }

    /// The sessions of the sub-devices logged in through connection `conn_id`.
    pub fn sub_devices(&self, conn_id: u64) -> Vec<DeviceSession> {
        let map = self.by_device.lock();
        let subs = self.sub_devices.lock();
        let logged_in = subs.get(&conn_id).into_iter().flatten();
        logged_in.filter_map(|d| map.get(d).filter(|h| h.conn_id == conn_id)?.sub_device.clone()).collect()
    }

    /// Ends a sub-device's session through connection `conn_id` and reports it closed (the
    /// recorder flips it OFFLINE unless it is online elsewhere by now); false when it was not
    /// logged in there.
    pub fn log_out_sub_device(&self, device: &DeviceKey, conn_id: u64) -> bool {
        let mut map = self.by_device.lock();
        let Some(handle) = map.get(device).filter(|h| h.conn_id == conn_id && h.sub_device.is_some()) else {
            return false;
        };
        let client_ip = handle.route.client_ip.clone();
        let Some(session) = map.remove(device).and_then(|h| h.sub_device) else {
            return false;
        };
        drop(map);
        if let Some(subs) = self.sub_devices.lock().get_mut(&conn_id) {
            subs.remove(device);
        }
        let _ = self.closed.send(ClosedSession::new(session, conn_id, client_ip, now_ms()));
        true
    }

    /// Logs out every sub-device of the gateway connection `conn_id` (it has ended).
    pub fn log_out_sub_devices(&self, conn_id: u64) {
        let Some(subs) = self.sub_devices.lock().remove(&conn_id) else {
            return;
        };
        for device in subs {
            self.log_out_sub_device(&device, conn_id);
        }
    }

    /// Hands a message to the device's connection; false when it is not connected here.
    pub fn deliver(&self, downlink: Downlink) -> bool {
        match self.by_device.lock().get(&downlink.device) {
            Some(handle) => handle.commands.send(ConnCommand::Deliver(Box::new(downlink))).is_ok(),
            None => false,
        }
    }

    /// The sessions here of `product_key`'s devices, each with its connection (a sub-device's is
    /// its gateway's): `(device, conn_id, commands)`.
    pub fn sessions_of_product(
        &self,
        product_key: &ProductKey,
    ) -> Vec<(DeviceKey, u64, mpsc::UnboundedSender<ConnCommand>)> {
        let map = self.by_device.lock();
        let of_product = map.iter().filter(|(device, _)| &device.product_key == product_key);
        of_product.map(|(device, handle)| (device.clone(), handle.conn_id, handle.commands.clone())).collect()
    }

    /// Every live session's route on this node.
    pub fn routes(&self) -> Vec<(DeviceKey, tether_store::Route)> {
        self.by_device.lock().iter().map(|(device, handle)| (device.clone(), handle.route.clone())).collect()
    }

    /// The devices with a connection of their own here (sub-devices go with their gateway's).
    pub fn devices(&self) -> Vec<DeviceKey> {
        self.by_device.lock().iter().filter(|(_, h)| h.sub_device.is_none()).map(|(d, _)| d.clone()).collect()
    }

    pub fn kick_all(&self, reason: KickReason) {
        for handle in self.by_device.lock().values().filter(|h| h.sub_device.is_none()) {
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
