//! The `thing` service: thing models (TSL) per product, each device's latest properties, tags,
//! desired properties and shadow, and the device requests about them.
//!
//! Callers are trusted platform services: the gateway checks that a product or device belongs
//! to the calling tenant (through the auth service) before it calls here, so these methods take
//! product and device keys only.

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tether_model::{DeviceKey, ProductKey, TenantId, Tsl};

use crate::ServiceError;

mod grpc;
pub(crate) mod wire;

pub use grpc::{ThingGrpcClient, ThingGrpcServer};

/// A property value with the time it was measured (the device's `time`, else when it arrived).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimedValue {
    pub value: Value,
    pub time: i64,
}

/// A device's latest property values by identifier.
pub type PropertySnapshot = BTreeMap<String, TimedValue>;

/// A device tag (`thing.deviceinfo.update`): Aliyun's `{attrKey, attrValue}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tag {
    pub attr_key: String,
    pub attr_value: String,
}

/// A desired property value set from the cloud, with its version (`thing.property.desired.get`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredValue {
    pub value: Value,
    pub version: i64,
    pub time: i64,
}

/// Who sent a device request: the identity the edge authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRef {
    pub tenant: TenantId,
    pub device: DeviceKey,
    pub iot_id: String,
}

/// A device's request the thing service answers (tags, desired properties, TSL fetch, shadow).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRequest {
    pub from: DeviceRef,
    /// The PUBLISH topic, as sent.
    pub topic: String,
    pub payload: Bytes,
}

/// A message for a device: the answer to its request, or a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceMessage {
    pub topic: String,
    pub payload: Bytes,
}

/// The `thing` service.
#[async_trait]
pub trait ThingService: Send + Sync + 'static {
    /// Stores a product's thing model, replacing the previous one; edges drop their cached copy.
    async fn put_thing_model(&self, product_key: &ProductKey, tsl: Tsl) -> Result<(), ServiceError>;

    /// A product's thing model; `None` when it has none (then any property is accepted).
    async fn get_thing_model(&self, product_key: &ProductKey) -> Result<Option<Tsl>, ServiceError>;

    /// The latest value of each property the device reported.
    async fn latest_properties(&self, device: &DeviceKey) -> Result<PropertySnapshot, ServiceError>;

    /// The device's tags, in key order.
    async fn tags(&self, device: &DeviceKey) -> Result<Vec<Tag>, ServiceError>;

    /// The desired property values set for the device.
    async fn desired_properties(&self, device: &DeviceKey) -> Result<BTreeMap<String, DesiredValue>, ServiceError>;

    /// Sets desired values from the cloud; each identifier's version goes up by one.
    async fn set_desired_properties(
        &self,
        device: &DeviceKey,
        items: Map<String, Value>,
    ) -> Result<BTreeMap<String, DesiredValue>, ServiceError>;

    /// The device's shadow document (Aliyun's JSON); `None` when it never had one.
    async fn get_shadow(&self, device: &DeviceKey) -> Result<Option<Value>, ServiceError>;

    /// Sets the shadow's desired state from the cloud with Aliyun's version rule (the version
    /// must exceed the stored one; -1 resets), and pushes a `control` message to the device if
    /// it is online. Returns the stored document.
    async fn update_shadow(
        &self,
        device: &DeviceKey,
        desired: Map<String, Value>,
        version: i64,
    ) -> Result<Value, ServiceError>;

    /// Answers a device's request on a topic the thing service owns; `None` when the request
    /// has no answer.
    async fn device_request(&self, request: DeviceRequest) -> Result<Option<DeviceMessage>, ServiceError>;
}
