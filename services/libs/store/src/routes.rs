//! Session routes and presence: which edge node and connection holds each device, and when it
//! last came and went.
//!
//! [`LocalRoutes`] serves embedded mode: the routes live in memory (they die with the process,
//! as the connections do) and each presence transition is written behind to the [`KvStore`], so
//! a restart still knows when a device was last seen and from where.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tether_model::DeviceKey;
use tokio::sync::{mpsc, oneshot};

use crate::{Expect, KvStore, StoreError};

/// Where a device's live session is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    pub node: String,
    pub conn_id: u64,
    pub connected_at: i64,
    pub client_ip: String,
}

/// A device's presence: its live route, if any, and its last transitions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Presence {
    pub route: Option<Route>,
    pub last_online_at: Option<i64>,
    pub last_offline_at: Option<i64>,
    pub client_ip: Option<String>,
}

/// Device → session routes, with presence.
#[async_trait]
pub trait SessionRoutes: Send + Sync + 'static {
    /// Records a new session and returns the route it replaced (whose session must be kicked).
    async fn connect(&self, device: &DeviceKey, route: Route) -> Result<Option<Route>, StoreError>;

    /// Ends the session `(node, conn_id)` at `at`. Only the current route's session flips the
    /// device OFFLINE (so a fast reconnect never ends as OFFLINE); returns whether it did.
    async fn disconnect(&self, device: &DeviceKey, node: &str, conn_id: u64, at: i64) -> Result<bool, StoreError>;

    async fn presence(&self, device: &DeviceKey) -> Result<Option<Presence>, StoreError>;
}

/// Embedded [`SessionRoutes`].
#[derive(Clone)]
pub struct LocalRoutes {
    presence: Arc<Mutex<HashMap<DeviceKey, Presence>>>,
    writer: mpsc::UnboundedSender<WriterMsg>,
}

enum WriterMsg {
    Put(String, Bytes),
    Flush(oneshot::Sender<()>),
    /// Write what is queued, then let go of the store.
    Close(oneshot::Sender<()>),
}

// === impl Presence ===

impl Presence {
    pub fn is_online(&self) -> bool {
        self.route.is_some()
    }
}

// === impl LocalRoutes ===

impl LocalRoutes {
    /// Loads the recorded presence from `store`; every device starts offline.
    pub async fn open(store: Arc<dyn KvStore>, now: i64) -> Result<Self, StoreError> {
        let mut presence = HashMap::new();
        for entry in store.list("presence/").await? {
            let Ok(mut record) = serde_json::from_slice::<Presence>(&entry.value) else {
                tracing::warn!(key = %entry.key, "skipping unreadable presence record");
                continue;
            };
            let Some(device) = device_from_key(&entry.key) else {
                continue;
            };
            if record.route.take().is_some() {
                // The process stopped without recording the disconnect.
                record.last_offline_at = Some(now);
            }
            presence.insert(device, record);
        }
        let (writer, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_behind(store, rx));
        Ok(Self { presence: Arc::new(Mutex::new(presence)), writer })
    }

    /// Waits until every recorded transition is on disk.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.writer.send(WriterMsg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Writes every recorded transition and releases the store; later transitions are not saved.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.writer.send(WriterMsg::Close(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    fn record(&self, device: &DeviceKey, presence: &Presence) {
        let key = format!("presence/{}/{}", device.product_key, device.device_name);
        let value = serde_json::to_vec(presence).expect("presence always serializes");
        let _ = self.writer.send(WriterMsg::Put(key, Bytes::from(value)));
    }
}

#[async_trait]
impl SessionRoutes for LocalRoutes {
    async fn connect(&self, device: &DeviceKey, route: Route) -> Result<Option<Route>, StoreError> {
        let mut map = self.presence.lock();
        let entry = map.entry(device.clone()).or_default();
        entry.last_online_at = Some(route.connected_at);
        entry.client_ip = Some(route.client_ip.clone());
        let previous = entry.route.replace(route);
        self.record(device, entry);
        Ok(previous)
    }

    async fn disconnect(&self, device: &DeviceKey, node: &str, conn_id: u64, at: i64) -> Result<bool, StoreError> {
        let mut map = self.presence.lock();
        let Some(entry) = map.get_mut(device) else {
            return Ok(false);
        };
        let current = entry.route.as_ref().is_some_and(|r| r.node == node && r.conn_id == conn_id);
        if current {
            entry.route = None;
            entry.last_offline_at = Some(at);
            self.record(device, entry);
        }
        Ok(current)
    }

    async fn presence(&self, device: &DeviceKey) -> Result<Option<Presence>, StoreError> {
        Ok(self.presence.lock().get(device).cloned())
    }
}

async fn write_behind(store: Arc<dyn KvStore>, mut rx: mpsc::UnboundedReceiver<WriterMsg>) {
    while let Some(msg) = rx.recv().await {
        match msg {
            WriterMsg::Put(key, value) => {
                if let Err(error) = store.put(&key, value, Expect::Any).await {
                    tracing::warn!(%key, %error, "presence record not saved");
                }
            }
            WriterMsg::Flush(done) => {
                let _ = done.send(());
            }
            WriterMsg::Close(done) => {
                drop(store);
                let _ = done.send(());
                return;
            }
        }
    }
}

fn device_from_key(key: &str) -> Option<DeviceKey> {
    let rest = key.strip_prefix("presence/")?;
    let (pk, dn) = rest.split_once('/')?;
    DeviceKey::parse(pk, dn).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FjallStore;

    fn route(conn_id: u64, at: i64) -> Route {
        Route { node: "n1".into(), conn_id, connected_at: at, client_ip: "127.0.0.1".into() }
    }

    #[tokio::test]
    async fn a_stale_disconnect_never_takes_a_reconnected_device_offline() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn KvStore> = Arc::new(FjallStore::open(dir.path()).unwrap());
        let routes = LocalRoutes::open(store.clone(), 0).await.unwrap();
        let dev = DeviceKey::parse("pk", "dn").unwrap();
        assert_eq!(routes.connect(&dev, route(1, 10)).await.unwrap(), None);
        assert_eq!(routes.connect(&dev, route(2, 20)).await.unwrap(), Some(route(1, 10)));
        assert!(!routes.disconnect(&dev, "n1", 1, 21).await.unwrap());
        assert!(routes.presence(&dev).await.unwrap().unwrap().is_online());
        assert!(routes.disconnect(&dev, "n1", 2, 30).await.unwrap());
        routes.flush().await;

        let reopened = LocalRoutes::open(store, 40).await.unwrap();
        let presence = reopened.presence(&dev).await.unwrap().unwrap();
        assert!(!presence.is_online());
        assert_eq!((presence.last_online_at, presence.last_offline_at), (Some(20), Some(30)));
    }
}
