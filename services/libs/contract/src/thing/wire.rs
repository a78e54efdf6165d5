//! Conversions between the thing service's domain types and its protobuf messages. Proto types
//! stop here: what comes off the wire is validated once, in `TryFrom`, and JSON text (thing
//! models, property values, shadow documents) is parsed here and nowhere else.

use bytes::Bytes;
use serde_json::{Map, Value};
use tether_model::{DeviceKey, DeviceName, ProductKey, TenantId, Tsl, TslError};
use tether_proto::v1 as pb;

use super::{DesiredValue, DeviceMessage, DeviceRef, DeviceRequest, Tag, TimedValue};
use crate::ServiceError;

// The id parsers repeat auth's (`auth::wire`, private to that module): the field names are the
// API's, so a refusal reads the same whichever service made it.

pub(crate) fn product_key(raw: &str) -> Result<ProductKey, ServiceError> {
    ProductKey::new(raw).map_err(|e| ServiceError::invalid("productKey", e))
}

pub(crate) fn device_key(product: &str, device: &str) -> Result<DeviceKey, ServiceError> {
    let device_name = DeviceName::new(device).map_err(|e| ServiceError::invalid("deviceName", e))?;
    Ok(DeviceKey::new(product_key(product)?, device_name))
}

fn tenant_id(raw: &str) -> Result<TenantId, ServiceError> {
    TenantId::new(raw).map_err(|e| ServiceError::invalid("tenantId", e))
}

// === JSON text ===

/// A thing model sent as TSL JSON; refused naming the offending path, as the REST API does.
pub(crate) fn tsl(raw: &str) -> Result<Tsl, ServiceError> {
    Tsl::parse(raw.as_bytes()).map_err(|error| match error {
        TslError::Invalid { path, reason } => ServiceError::invalid(path, reason),
        TslError::Json(reason) => ServiceError::invalid("tsl", reason),
    })
}

pub(crate) fn json_value(field: &str, raw: &str) -> Result<Value, ServiceError> {
    serde_json::from_str(raw).map_err(|e| ServiceError::invalid(field, e))
}

pub(crate) fn json_object(field: &str, raw: &str) -> Result<Map<String, Value>, ServiceError> {
    serde_json::from_str(raw).map_err(|e| ServiceError::invalid(field, format!("not a JSON object: {e}")))
}

pub(crate) fn shadow_document(raw: &str) -> Result<Value, ServiceError> {
    json_value("document", raw)
}

// === device-scoped requests ===

/// A request that names one device and nothing else.
pub(crate) trait DeviceScoped: Sized {
    fn for_device(device: &DeviceKey) -> Self;

    /// The device, validated.
    fn device(self) -> Result<DeviceKey, ServiceError>;
}

macro_rules! device_requests {
    ($($request:ident),+) => {$(
        impl DeviceScoped for pb::$request {
            fn for_device(device: &DeviceKey) -> Self {
                Self { product_key: device.product_key.to_string(), device_name: device.device_name.to_string() }
            }

            fn device(self) -> Result<DeviceKey, ServiceError> {
                device_key(&self.product_key, &self.device_name)
            }
        }
    )+};
}

device_requests!(LatestPropertiesRequest, TagsRequest, DesiredPropertiesRequest, GetShadowRequest);

// === records ===

impl From<TimedValue> for pb::TimedValue {
    fn from(v: TimedValue) -> Self {
        Self { value_json: v.value.to_string(), time: v.time }
    }
}

impl TryFrom<pb::TimedValue> for TimedValue {
    type Error = ServiceError;

    fn try_from(v: pb::TimedValue) -> Result<Self, ServiceError> {
        Ok(Self { value: json_value("value", &v.value_json)?, time: v.time })
    }
}

impl From<DesiredValue> for pb::DesiredValue {
    fn from(v: DesiredValue) -> Self {
        Self { value_json: v.value.to_string(), version: v.version, time: v.time }
    }
}

impl TryFrom<pb::DesiredValue> for DesiredValue {
    type Error = ServiceError;

    fn try_from(v: pb::DesiredValue) -> Result<Self, ServiceError> {
        Ok(Self { value: json_value("value", &v.value_json)?, version: v.version, time: v.time })
    }
}

impl From<Tag> for pb::DeviceTag {
    fn from(t: Tag) -> Self {
        Self { attr_key: t.attr_key, attr_value: t.attr_value }
    }
}

impl From<pb::DeviceTag> for Tag {
    fn from(t: pb::DeviceTag) -> Self {
        Self { attr_key: t.attr_key, attr_value: t.attr_value }
    }
}

impl From<DeviceMessage> for pb::DeviceMessage {
    fn from(m: DeviceMessage) -> Self {
        Self { topic: m.topic, payload: m.payload.into() }
    }
}

impl From<pb::DeviceMessage> for DeviceMessage {
    fn from(m: pb::DeviceMessage) -> Self {
        Self { topic: m.topic, payload: Bytes::from(m.payload) }
    }
}

impl From<DeviceRequest> for pb::DeviceRequestRequest {
    fn from(r: DeviceRequest) -> Self {
        let DeviceRequest { from: DeviceRef { tenant, device, iot_id }, topic, payload } = r;
        Self {
            tenant_id: tenant.to_string(),
            product_key: device.product_key.to_string(),
            device_name: device.device_name.to_string(),
            iot_id,
            topic,
            payload: payload.into(),
        }
    }
}

impl TryFrom<pb::DeviceRequestRequest> for DeviceRequest {
    type Error = ServiceError;

    fn try_from(r: pb::DeviceRequestRequest) -> Result<Self, ServiceError> {
        Ok(Self {
            from: DeviceRef {
                tenant: tenant_id(&r.tenant_id)?,
                device: device_key(&r.product_key, &r.device_name)?,
                iot_id: r.iot_id,
            },
            topic: r.topic,
            payload: Bytes::from(r.payload),
        })
    }
}
