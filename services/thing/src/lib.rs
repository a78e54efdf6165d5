//! The `thing` service: each product's thing model (TSL) and, per device, the latest property
//! values, tags, desired properties and shadow.
//!
//! Everything is kept in the [`KvStore`] (`thing/model/{pk}`, `thing/{props|tags|desired|shadow}/
//! {pk}/{dn}`), written with compare-and-set. Latest properties come from the property posts on
//! the bus (durable consumer group [`properties::CONSUMER_GROUP`]); the edge validates posts and
//! answers them itself, and asks this service for the requests that need stored state
//! ([`ThingService::device_request`]). A thing-model change is announced on
//! [`subject::THING_MODEL_CHANGED`] so edges drop their cached copy.

mod properties;
mod records;
mod registry;
mod requests;
mod shadow;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::{Map, Value};
use tether_bus::downlink::Downlink;
use tether_bus::{Bus, BusError, BusMessage, subject};
use tether_contract::{
    DesiredValue, DeviceMessage, DeviceRequest, PropertySnapshot, ServiceError, Tag, ThingService, now_ms,
};
use tether_model::{DeviceKey, ProductKey, Tsl};
use tether_store::records::{Change, Records};
use tether_store::{Expect, KvStore, SessionRoutes};
use tokio::task::JoinHandle;

pub use properties::{CONSUMER_GROUP, PROPERTY_POSTS};

/// The `thing` service.
pub struct Thing {
    records: Records,
    bus: Arc<dyn Bus>,
    routes: Arc<dyn SessionRoutes>,
}

// === impl Thing ===

impl Thing {
    pub fn new(store: Arc<dyn KvStore>, bus: Arc<dyn Bus>, routes: Arc<dyn SessionRoutes>) -> Self {
        Self { records: Records::new(store), bus, routes }
    }

    /// Joins the service's consumer groups and runs them until the bus closes: the latest
    /// properties from property posts ([`CONSUMER_GROUP`]), and the removal of what deleted
    /// devices and products left ([`registry::CONSUMER_GROUP`]).
    pub async fn run_consumers(self: &Arc<Self>) -> Result<JoinHandle<()>, BusError> {
        let posts = self.bus.consume(CONSUMER_GROUP, PROPERTY_POSTS).await?;
        let lifecycles = self.bus.consume(registry::CONSUMER_GROUP, subject::ALL_REGISTRY).await?;
        let thing = self.clone();
        Ok(tokio::spawn(async move {
            tokio::join!(properties::keep_latest(thing.records.clone(), posts), thing.forget_deleted(lifecycles));
        }))
    }

    async fn thing_model(&self, product_key: &ProductKey) -> Result<Option<Tsl>, ServiceError> {
        let stored: Option<Value> = self.records.get(&records::model_key(product_key)).await?;
        stored
            .map(|json| {
                Tsl::from_json(&json)
                    .map_err(|e| ServiceError::Internal(format!("stored thing model of {product_key}: {e}")))
            })
            .transpose()
    }

    async fn desired(&self, device: &DeviceKey) -> Result<BTreeMap<String, DesiredValue>, ServiceError> {
        Ok(self.records.get(&records::device_key("desired", device)).await?.unwrap_or_default())
    }

    /// Sends `payload` to the device on `topic` if it is online; a push to an offline device is
    /// dropped (the stored state is what it reads when it comes back).
    async fn push(&self, device: &DeviceKey, topic: String, payload: Bytes) {
        let node = match self.routes.presence(device).await {
            Ok(Some(presence)) => presence.route.map(|route| route.node),
            Ok(None) => None,
            Err(error) => {
                tracing::warn!(%device, %error, "push not sent: session route unknown");
                return;
            }
        };
        let Some(node) = node else {
            tracing::debug!(%device, %topic, "device offline, push not sent");
            return;
        };
        let downlink = Downlink { device: device.clone(), topic, payload, qos: 0, correlation: None };
        if let Err(error) = self.bus.publish(downlink.to_message(&node)).await {
            tracing::warn!(%device, %error, "push not sent");
        }
    }

    async fn publish_event(&self, message: BusMessage) {
        if let Err(error) = self.bus.publish_durable(message).await {
            tracing::warn!(%error, "thing event not published");
        }
    }
}

#[async_trait]
impl ThingService for Thing {
    async fn put_thing_model(&self, product_key: &ProductKey, tsl: Tsl) -> Result<(), ServiceError> {
        self.records.put(&records::model_key(product_key), &tsl.to_json(), Expect::Any).await?;
        let changed = BusMessage::new(subject::THING_MODEL_CHANGED, product_key.to_string());
        if let Err(error) = self.bus.publish(changed).await {
            tracing::warn!(%product_key, %error, "thing model change not announced");
        }
        Ok(())
    }

    async fn get_thing_model(&self, product_key: &ProductKey) -> Result<Option<Tsl>, ServiceError> {
        self.thing_model(product_key).await
    }

    async fn latest_properties(&self, device: &DeviceKey) -> Result<PropertySnapshot, ServiceError> {
        Ok(self.records.get(&records::device_key("props", device)).await?.unwrap_or_default())
    }

    async fn tags(&self, device: &DeviceKey) -> Result<Vec<Tag>, ServiceError> {
        Ok(self.records.get(&records::device_key("tags", device)).await?.unwrap_or_default())
    }

    async fn desired_properties(&self, device: &DeviceKey) -> Result<BTreeMap<String, DesiredValue>, ServiceError> {
        self.desired(device).await
    }

    async fn set_desired_properties(
        &self,
        device: &DeviceKey,
        items: Map<String, Value>,
    ) -> Result<BTreeMap<String, DesiredValue>, ServiceError> {
        if items.is_empty() {
            return Err(ServiceError::invalid("items", "must name at least one property"));
        }
        let key = records::device_key("desired", device);
        let now = now_ms();
        self.records
            .update(&key, |stored: Option<BTreeMap<String, DesiredValue>>| {
                let mut all = stored.unwrap_or_default();
                for (id, value) in &items {
                    let version = all.get(id).map_or(0, |d| d.version) + 1;
                    all.insert(id.clone(), DesiredValue { value: value.clone(), version, time: now });
                }
                Ok::<_, ServiceError>((Change::Put(all.clone()), all))
            })
            .await
    }

    async fn get_shadow(&self, device: &DeviceKey) -> Result<Option<Value>, ServiceError> {
        self.shadow_document(device).await
    }

    async fn update_shadow(
        &self,
        device: &DeviceKey,
        desired: Map<String, Value>,
        version: i64,
    ) -> Result<Value, ServiceError> {
        self.set_shadow_desired(device, desired, version).await
    }

    async fn device_request(&self, request: DeviceRequest) -> Result<Option<DeviceMessage>, ServiceError> {
        self.answer(request).await
    }
}
