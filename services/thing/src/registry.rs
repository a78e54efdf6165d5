//! Forgetting what belonged to deleted devices and products: the thing service follows the
//! registry's lifecycle events (consumer group [`CONSUMER_GROUP`]) and deletes a device's latest
//! properties, tags, desired properties and shadow, or a product's thing model, so a device or
//! product created again under the same key (by any tenant) starts empty.

use serde::Deserialize;
use tether_bus::{BusMessage, Consumer, subject};
use tether_contract::ServiceError;
use tether_model::{DeviceKey, DeviceName, ProductKey};
use tether_store::Expect;

use crate::Thing;
use crate::records;

/// The durable consumer group that follows the registry.
pub const CONSUMER_GROUP: &str = "thing-registry";

/// The device records the thing service keeps.
const DEVICE_RECORDS: [&str; 4] = ["props", "tags", "desired", "shadow"];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Lifecycle {
    action: String,
    product_key: ProductKey,
    #[serde(default)]
    device_name: Option<DeviceName>,
}

// === impl Thing ===

impl Thing {
    /// Deletes the records of deleted devices and products until the bus closes; an event is
    /// acked once its records are gone.
    pub(crate) async fn forget_deleted(&self, mut consumer: Consumer) {
        while let Some(delivery) = consumer.next().await {
            let event = match serde_json::from_slice::<Lifecycle>(&delivery.message.payload) {
                Ok(event) => event,
                Err(error) => {
                    tracing::warn!(subject = %delivery.message.subject, %error, "unreadable lifecycle event skipped");
                    let _ = delivery.ack().await;
                    continue;
                }
            };
            if event.action == "delete"
                && let Err(error) = self.forget(event).await
            {
                tracing::warn!(%error, "records of a deleted device not removed, retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
            if let Err(error) = delivery.ack().await {
                tracing::warn!(%error, "lifecycle event ack failed");
            }
        }
    }

    async fn forget(&self, event: Lifecycle) -> Result<(), ServiceError> {
        match event.device_name {
            Some(device_name) => {
                let device = DeviceKey { product_key: event.product_key, device_name };
                for kind in DEVICE_RECORDS {
                    self.records.delete(&records::device_key(kind, &device), Expect::Any).await?;
                }
                tracing::debug!(%device, "records of a deleted device removed");
            }
            None => {
                self.records.delete(&records::model_key(&event.product_key), Expect::Any).await?;
                let changed = BusMessage::new(subject::THING_MODEL_CHANGED, event.product_key.to_string());
                if let Err(error) = self.bus.publish(changed).await {
                    tracing::warn!(product_key = %event.product_key, %error, "thing model change not announced");
                }
            }
        }
        Ok(())
    }
}
