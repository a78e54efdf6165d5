//! Each device's latest property values, kept from the property posts on the bus (consumer
//! group `thing`). A value is replaced only by one measured at the same time or later, so
//! backfilled history and posts that arrive out of order never overwrite a newer value.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use serde::Deserialize;
use serde_json::{Map, Value};
use tether_bus::{Consumer, Delivery};
use tether_contract::ServiceError;
use tether_contract::{PropertySnapshot, TimedValue};
use tether_model::{DeviceKey, DeviceName, ProductKey};
use tether_store::records::Records;
use tether_store::{Expect, StoreError};

use crate::records;

/// The durable consumer group of the thing service.
pub const CONSUMER_GROUP: &str = "thing";

/// Property posts of every tenant and device.
pub const PROPERTY_POSTS: &str = "tether.up.*.*.*.property";

/// Most deliveries merged into one round of writes.
const MAX_BATCH: usize = 256;

/// How often a batch's writes are retried after losing compare-and-set races.
const MAX_ATTEMPTS: usize = 32;

/// How long to wait before handing a batch back after the store failed.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// The part of a forwarded property post (`events::property_post`) the snapshot needs.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PropertyPost {
    product_key: ProductKey,
    device_name: DeviceName,
    items: Map<String, Value>,
}

/// Merges `items` (`{id: {value, time}}`) into `snapshot`; returns whether anything changed.
pub(crate) fn merge(snapshot: &mut PropertySnapshot, items: &Map<String, Value>) -> bool {
    let mut changed = false;
    for (identifier, item) in items {
        let Ok(incoming) = serde_json::from_value::<TimedValue>(item.clone()) else {
            continue;
        };
        match snapshot.get(identifier) {
            Some(stored) if stored.time > incoming.time || *stored == incoming => {}
            _ => {
                snapshot.insert(identifier.clone(), incoming);
                changed = true;
            }
        }
    }
    changed
}

/// Takes property posts off the bus and merges them into the snapshots until the bus closes.
/// A batch is acked only once every snapshot it touches is written.
pub(crate) async fn keep_latest(records: Records, mut consumer: Consumer) {
    while let Some(first) = consumer.next().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match consumer.next().now_or_never() {
                Some(Some(delivery)) => batch.push(delivery),
                _ => break,
            }
        }
        if let Err(error) = write_batch(&records, &batch).await {
            tracing::warn!(%error, messages = batch.len(), "latest properties not written, batch handed back");
            tokio::time::sleep(RETRY_PAUSE).await;
            continue;
        }
        for delivery in batch {
            if let Err(error) = delivery.ack().await {
                tracing::warn!(%error, "property post ack failed");
            }
        }
    }
}

async fn write_batch(records: &Records, batch: &[Delivery]) -> Result<(), ServiceError> {
    let mut by_device: BTreeMap<DeviceKey, Vec<Map<String, Value>>> = BTreeMap::new();
    for delivery in batch {
        match serde_json::from_slice::<PropertyPost>(&delivery.message.payload) {
            Ok(post) => by_device
                .entry(DeviceKey { product_key: post.product_key, device_name: post.device_name })
                .or_default()
                .push(post.items),
            Err(error) => {
                tracing::warn!(subject = %delivery.message.subject, %error, "unreadable property post skipped")
            }
        }
    }
    // Every snapshot of the batch is written in one go (the embedded store syncs once), each with
    // compare-and-set; the ones that lost a race are read and merged again.
    let mut pending: Vec<(String, Vec<Map<String, Value>>)> =
        by_device.into_iter().map(|(device, posts)| (records::device_key("props", &device), posts)).collect();
    for _ in 0..MAX_ATTEMPTS {
        let mut writes = Vec::with_capacity(pending.len());
        let mut written = Vec::with_capacity(pending.len());
        for (key, posts) in pending {
            let entry = records.store().get(&key).await?;
            let (mut snapshot, expect) = match &entry {
                Some(entry) => {
                    (Records::decode::<PropertySnapshot>(&key, &entry.value)?, Expect::Revision(entry.revision))
                }
                None => (PropertySnapshot::new(), Expect::Absent),
            };
            let changed = posts.iter().fold(false, |changed, items| merge(&mut snapshot, items) | changed);
            if changed {
                let value = serde_json::to_vec(&snapshot).map_err(|e| ServiceError::Internal(e.to_string()))?;
                writes.push((key.clone(), Bytes::from(value), expect));
                written.push((key, posts));
            }
        }
        let outcomes = records.store().put_many(writes).await;
        pending = Vec::new();
        for ((key, posts), outcome) in written.into_iter().zip(outcomes) {
            match outcome {
                Ok(_) => {}
                Err(StoreError::Conflict { .. }) => pending.push((key, posts)),
                Err(error) => return Err(error.into()),
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
    }
    Err(ServiceError::Conflict { what: "latest properties".into() })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn items(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn an_older_value_never_replaces_a_newer_one() {
        let mut snapshot = PropertySnapshot::new();
        assert!(merge(&mut snapshot, &items(json!({"T": {"value": 20, "time": 200}}))));
        assert!(!merge(&mut snapshot, &items(json!({"T": {"value": 10, "time": 100}}))));
        assert_eq!(snapshot["T"].value, json!(20));
        assert!(merge(&mut snapshot, &items(json!({"T": {"value": 30, "time": 200}, "H": {"value": 1, "time": 5}}))));
        assert_eq!(snapshot["T"].value, json!(30));
        assert_eq!(snapshot["H"].time, 5);
    }

    #[test]
    fn items_without_value_and_time_are_ignored() {
        let mut snapshot = PropertySnapshot::new();
        assert!(!merge(&mut snapshot, &items(json!({"T": 5}))));
        assert!(snapshot.is_empty());
    }
}
