//! What the command service follows on the bus, and its sweeper:
//!
//! - devices' status events ([`STATUS_GROUP`]): an `online` device gets its queued commands;
//! - the edge's `downlink` events ([`DOWNLINK_GROUP`]): `delivered` (the QoS 1 PUBACK) and
//!   `reply` (the device's Alink reply, in Aliyun's `thing/downlink/reply/message` shape) move
//!   a command to DELIVERED, SUCCEEDED or FAILED;
//! - device lifecycles ([`REGISTRY_GROUP`]): a deleted device's commands are forgotten, so a
//!   device created again under its name (by any tenant) neither sees nor receives them;
//! - the sweeper: queued commands past their TTL become EXPIRED; records past the retention go.
//!
//! The bus joins a group with one subject filter, so each kind of event has its own group: one
//! group over `tether.up.>` would take every property post too, only to drop it.
//!
//! An event is acked once handled. When the store fails, the event is left unacked (it comes
//! back) after a pause. Every change is a compare-and-set of a forward-only status, so an event
//! handled twice changes nothing the second time.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tether_bus::{BusMessage, Consumer, events};
use tether_contract::{ServiceError, now_ms};
use tether_model::{DeviceKey, DeviceName, ProductKey};

use crate::Commands;
use crate::status::Step;

/// The group following status events.
pub const STATUS_GROUP: &str = "command-status";

/// Every device's status events.
pub const STATUS_EVENTS: &str = "tether.up.*.*.*.status";

/// The group following the edge's reports on downlinks.
pub const DOWNLINK_GROUP: &str = "command-downlink";

/// Every device's `downlink` events.
pub const DOWNLINK_EVENTS: &str = "tether.up.*.*.*.downlink";

/// The group following device lifecycles.
pub const REGISTRY_GROUP: &str = "command-registry";

/// How long to wait before an event that failed is handled again.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// The part of a status event (`events::status`) the queue needs.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusEvent {
    status: String,
    product_key: ProductKey,
    device_name: DeviceName,
}

/// A `downlink` event (`events::downlink_reply`, Aliyun's downlink reply shape, PROTOCOL.md B.4;
/// or `events::downlink_delivered`, which names the command `messageId`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DownlinkEvent {
    product_key: ProductKey,
    device_name: DeviceName,
    /// The command's message id.
    #[serde(alias = "messageId")]
    request_id: String,
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Lifecycle {
    action: String,
    product_key: ProductKey,
    device_name: DeviceName,
}

/// What one event asks for.
enum Handled {
    Done,
    /// The store failed: hand the event back and pause.
    Retry(ServiceError),
}

// === impl Commands ===

impl Commands {
    /// Sends queued commands to devices that come online, until the bus closes.
    pub(crate) async fn follow_statuses(self: Arc<Self>, consumer: Consumer) {
        self.follow(consumer, "status", |commands, message| async move {
            let Some(event) = read::<StatusEvent>(&message) else {
                return Handled::Done;
            };
            if event.status != "online" {
                return Handled::Done;
            }
            let device = DeviceKey::new(event.product_key, event.device_name);
            // An old event (a new group reads the whole stream) finds the device offline or
            // its queue empty: flushing checks both.
            match commands.deliver_queued(&device).await {
                Ok(()) => Handled::Done,
                Err(error) => Handled::Retry(error),
            }
        })
        .await;
    }

    /// Records what became of sent commands, until the bus closes.
    pub(crate) async fn follow_downlinks(self: Arc<Self>, consumer: Consumer) {
        self.follow(consumer, "downlink", |commands, message| async move {
            let Some(event) = read::<DownlinkEvent>(&message) else {
                return Handled::Done;
            };
            let step = match message.headers.get(events::header::EVENT).map(String::as_str) {
                Some(events::DOWNLINK_DELIVERED) => Step::Delivered,
                Some(events::DOWNLINK_REPLY) => Step::Reply {
                    code: event.code.unwrap_or_default(),
                    data: event.data.unwrap_or(Value::Null),
                    message: event.message.unwrap_or_default(),
                },
                other => {
                    tracing::debug!(event = ?other, "unknown downlink event skipped");
                    return Handled::Done;
                }
            };
            let device = DeviceKey::new(event.product_key, event.device_name);
            // Replies to commands this service did not record (sync services, other
            // downlinks) find no record and change nothing.
            match commands.records.advance(&device, &event.request_id, &step, now_ms()).await {
                Ok(_) => Handled::Done,
                Err(error) => Handled::Retry(error),
            }
        })
        .await;
    }

    /// Forgets the commands of deleted devices, until the bus closes.
    pub(crate) async fn forget_deleted(self: Arc<Self>, consumer: Consumer) {
        self.follow(consumer, "lifecycle", |commands, message| async move {
            let Some(event) = read::<Lifecycle>(&message) else {
                return Handled::Done;
            };
            if event.action != "delete" {
                return Handled::Done;
            }
            let device = DeviceKey::new(event.product_key, event.device_name);
            match commands.forget_device(&device).await {
                Ok(()) => Handled::Done,
                Err(error) => Handled::Retry(error),
            }
        })
        .await;
    }

    /// Expires queued commands every `sweep_interval` and drops old records every
    /// `retention_interval`, forever.
    pub(crate) async fn sweep(self: Arc<Self>) {
        let mut expiry = tokio::time::interval(self.config.sweep_interval);
        let mut retention = tokio::time::interval(self.config.retention_interval);
        expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = expiry.tick() => {
                    if let Err(error) = self.expire_queued().await {
                        tracing::warn!(%error, "queued commands not checked for expiry");
                    }
                }
                _ = retention.tick() => {
                    if let Err(error) = self.forget_old().await {
                        tracing::warn!(%error, "old command records not removed");
                    }
                }
            }
        }
    }

    /// Runs `handle` on each message of `consumer` in turn, acking what it handled.
    async fn follow<F, Fut>(self: Arc<Self>, mut consumer: Consumer, what: &'static str, handle: F)
    where
        F: Fn(Arc<Self>, BusMessage) -> Fut,
        Fut: std::future::Future<Output = Handled>,
    {
        while let Some(delivery) = consumer.next().await {
            match handle(self.clone(), delivery.message.clone()).await {
                Handled::Done => {
                    if let Err(error) = delivery.ack().await {
                        tracing::warn!(event = what, %error, "event ack failed");
                    }
                }
                Handled::Retry(error) => {
                    tracing::warn!(event = what, %error, "event not handled, handed back");
                    drop(delivery);
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }

    async fn expire_queued(&self) -> Result<(), ServiceError> {
        let now = now_ms();
        for (device, queue) in self.records.all_queues().await? {
            let expired = queue.expired(now);
            for message_id in &expired {
                self.records.advance(&device, message_id, &Step::Expire, now).await?;
            }
            if !expired.is_empty() {
                tracing::debug!(%device, expired = expired.len(), "queued commands expired");
            }
            self.records.dequeue(&device, &expired).await?;
        }
        Ok(())
    }

    async fn forget_old(&self) -> Result<(), ServiceError> {
        let retention = i64::try_from(self.config.retention.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now_ms().saturating_sub(retention);
        let mut forgotten = 0;
        for entry in self.records.all_history().await? {
            if crate::records::seq_ms(entry.seq) < cutoff {
                self.records.forget(&entry).await?;
                forgotten += 1;
            }
        }
        if forgotten > 0 {
            tracing::info!(forgotten, "old command records removed");
        }
        Ok(())
    }

    async fn forget_device(&self, device: &DeviceKey) -> Result<(), ServiceError> {
        self.records.delete_queue(device).await?;
        let history = self.records.history(device).await?;
        for entry in &history {
            self.records.forget(entry).await?;
        }
        tracing::debug!(%device, commands = history.len(), "commands of a deleted device forgotten");
        Ok(())
    }
}

/// The event's body, or `None` (logged) when it cannot be read: such an event is acked and
/// skipped, as retrying would not help.
fn read<T: serde::de::DeserializeOwned>(message: &BusMessage) -> Option<T> {
    match serde_json::from_slice(&message.payload) {
        Ok(event) => Some(event),
        Err(error) => {
            tracing::warn!(subject = %message.subject, %error, "unreadable event skipped");
            None
        }
    }
}
