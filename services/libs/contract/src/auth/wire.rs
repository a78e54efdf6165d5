//! Conversions between the auth service's domain types and its protobuf messages. Proto types
//! stop here: what comes off the wire is validated once, in `TryFrom`.

use tether_model::{DeviceKey, DeviceName, ProductKey, SignMethod, TenantId, TopicClass, TopicOperation};
use tether_proto::v1 as pb;

use super::{
    Caller, DataFormat, Device, DeviceSession, Dialect, IssuedApiKey, NodeType, Product, SubDevice, SubDeviceSign,
    Tenant,
};
use crate::ServiceError;

pub(crate) fn tenant_id(raw: &str) -> Result<TenantId, ServiceError> {
    TenantId::new(raw).map_err(|e| ServiceError::invalid("tenantId", e))
}

pub(crate) fn product_key(raw: &str) -> Result<ProductKey, ServiceError> {
    ProductKey::new(raw).map_err(|e| ServiceError::invalid("productKey", e))
}

pub(crate) fn device_name(raw: &str) -> Result<DeviceName, ServiceError> {
    DeviceName::new(raw).map_err(|e| ServiceError::invalid("deviceName", e))
}

pub(crate) fn device_key(product: &str, device: &str) -> Result<DeviceKey, ServiceError> {
    Ok(DeviceKey::new(product_key(product)?, device_name(device)?))
}

// === enums ===

impl From<NodeType> for pb::NodeType {
    fn from(v: NodeType) -> Self {
        match v {
            NodeType::Device => Self::Device,
            NodeType::Gateway => Self::Gateway,
        }
    }
}

impl From<pb::NodeType> for NodeType {
    fn from(v: pb::NodeType) -> Self {
        match v {
            pb::NodeType::Device => Self::Device,
            pb::NodeType::Gateway => Self::Gateway,
        }
    }
}

impl From<DataFormat> for pb::DataFormat {
    fn from(v: DataFormat) -> Self {
        match v {
            DataFormat::Alink => Self::Alink,
            DataFormat::Raw => Self::Raw,
        }
    }
}

impl From<pb::DataFormat> for DataFormat {
    fn from(v: pb::DataFormat) -> Self {
        match v {
            pb::DataFormat::Alink => Self::Alink,
            pb::DataFormat::Raw => Self::Raw,
        }
    }
}

impl From<Dialect> for pb::Dialect {
    fn from(v: Dialect) -> Self {
        match v {
            Dialect::Alink => Self::Alink,
            Dialect::Thingscloud => Self::Thingscloud,
            Dialect::Iotda => Self::Iotda,
        }
    }
}

impl From<pb::Dialect> for Dialect {
    fn from(v: pb::Dialect) -> Self {
        match v {
            pb::Dialect::Alink => Self::Alink,
            pb::Dialect::Thingscloud => Self::Thingscloud,
            pb::Dialect::Iotda => Self::Iotda,
        }
    }
}

fn sign_method_to_wire(v: SignMethod) -> pb::SignMethod {
    match v {
        SignMethod::HmacMd5 => pb::SignMethod::HmacMd5,
        SignMethod::HmacSha1 => pb::SignMethod::HmacSha1,
        SignMethod::HmacSha256 => pb::SignMethod::HmacSha256,
    }
}

pub(crate) fn sign_method(raw: i32) -> Result<SignMethod, ServiceError> {
    match pb::SignMethod::try_from(raw) {
        Ok(pb::SignMethod::HmacMd5) => Ok(SignMethod::HmacMd5),
        Ok(pb::SignMethod::HmacSha1) => Ok(SignMethod::HmacSha1),
        Ok(pb::SignMethod::HmacSha256) => Ok(SignMethod::HmacSha256),
        Ok(pb::SignMethod::Unspecified) | Err(_) => Err(ServiceError::invalid("signMethod", raw)),
    }
}

pub(crate) fn node_type(raw: i32) -> Result<NodeType, ServiceError> {
    pb::NodeType::try_from(raw).map(Into::into).map_err(|_| ServiceError::invalid("nodeType", raw))
}

pub(crate) fn data_format(raw: i32) -> Result<DataFormat, ServiceError> {
    pb::DataFormat::try_from(raw).map(Into::into).map_err(|_| ServiceError::invalid("dataFormat", raw))
}

pub(crate) fn dialect(raw: i32) -> Result<Dialect, ServiceError> {
    pb::Dialect::try_from(raw).map(Into::into).map_err(|_| ServiceError::invalid("dialect", raw))
}

// === topic classes ===

pub(crate) fn topic_class_to_wire(c: &TopicClass) -> pb::TopicClass {
    let operation = match c.operation {
        TopicOperation::Pub => pb::TopicOperation::Pub,
        TopicOperation::Sub => pb::TopicOperation::Sub,
        TopicOperation::All => pb::TopicOperation::All,
    };
    pb::TopicClass { short: c.short.clone(), operation: operation.into() }
}

pub(crate) fn topic_class(c: pb::TopicClass) -> Result<TopicClass, ServiceError> {
    let operation = match pb::TopicOperation::try_from(c.operation) {
        Ok(pb::TopicOperation::Pub) => TopicOperation::Pub,
        Ok(pb::TopicOperation::Sub) => TopicOperation::Sub,
        Ok(pb::TopicOperation::All) => TopicOperation::All,
        Err(_) => return Err(ServiceError::invalid("operation", c.operation)),
    };
    Ok(TopicClass { short: c.short, operation })
}

fn topic_classes(raw: Vec<pb::TopicClass>) -> Result<Vec<TopicClass>, ServiceError> {
    raw.into_iter().map(topic_class).collect()
}

// === records ===

impl From<Caller> for pb::Caller {
    fn from(c: Caller) -> Self {
        Self { tenant_id: c.tenant.to_string(), admin: c.admin }
    }
}

impl TryFrom<pb::Caller> for Caller {
    type Error = ServiceError;

    fn try_from(c: pb::Caller) -> Result<Self, ServiceError> {
        Ok(Self { tenant: tenant_id(&c.tenant_id)?, admin: c.admin })
    }
}

impl From<Tenant> for pb::Tenant {
    fn from(t: Tenant) -> Self {
        Self { tenant_id: t.tenant_id.to_string(), name: t.name, created_at: t.created_at }
    }
}

impl TryFrom<pb::Tenant> for Tenant {
    type Error = ServiceError;

    fn try_from(t: pb::Tenant) -> Result<Self, ServiceError> {
        Ok(Self { tenant_id: tenant_id(&t.tenant_id)?, name: t.name, created_at: t.created_at })
    }
}

impl From<IssuedApiKey> for pb::IssuedApiKey {
    fn from(k: IssuedApiKey) -> Self {
        Self { key_id: k.key_id, api_key: k.api_key }
    }
}

impl From<pb::IssuedApiKey> for IssuedApiKey {
    fn from(k: pb::IssuedApiKey) -> Self {
        Self { key_id: k.key_id, api_key: k.api_key }
    }
}

impl From<Product> for pb::Product {
    fn from(p: Product) -> Self {
        Self {
            tenant_id: p.tenant_id.to_string(),
            product_key: p.product_key.to_string(),
            product_secret: p.product_secret,
            name: p.name,
            node_type: pb::NodeType::from(p.node_type).into(),
            data_format: pb::DataFormat::from(p.data_format).into(),
            dialect: pb::Dialect::from(p.dialect).into(),
            topic_classes: p.topic_classes.iter().map(topic_class_to_wire).collect(),
            created_at: p.created_at,
        }
    }
}

impl TryFrom<pb::Product> for Product {
    type Error = ServiceError;

    fn try_from(p: pb::Product) -> Result<Self, ServiceError> {
        Ok(Self {
            tenant_id: tenant_id(&p.tenant_id)?,
            product_key: product_key(&p.product_key)?,
            product_secret: p.product_secret,
            name: p.name,
            node_type: node_type(p.node_type)?,
            data_format: data_format(p.data_format)?,
            dialect: dialect(p.dialect)?,
            topic_classes: topic_classes(p.topic_classes)?,
            created_at: p.created_at,
        })
    }
}

impl From<Device> for pb::Device {
    fn from(d: Device) -> Self {
        Self {
            tenant_id: d.tenant_id.to_string(),
            product_key: d.product_key.to_string(),
            device_name: d.device_name.to_string(),
            device_secret: d.device_secret,
            iot_id: d.iot_id,
            enabled: d.enabled,
            created_at: d.created_at,
        }
    }
}

impl TryFrom<pb::Device> for Device {
    type Error = ServiceError;

    fn try_from(d: pb::Device) -> Result<Self, ServiceError> {
        Ok(Self {
            tenant_id: tenant_id(&d.tenant_id)?,
            product_key: product_key(&d.product_key)?,
            device_name: device_name(&d.device_name)?,
            device_secret: d.device_secret,
            iot_id: d.iot_id,
            enabled: d.enabled,
            created_at: d.created_at,
        })
    }
}

impl From<DeviceSession> for pb::DeviceSession {
    fn from(s: DeviceSession) -> Self {
        Self {
            tenant_id: s.tenant.to_string(),
            product_key: s.device.product_key.to_string(),
            device_name: s.device.device_name.to_string(),
            iot_id: s.iot_id,
            node_type: pb::NodeType::from(s.node_type).into(),
            topic_classes: s.topic_classes.iter().map(topic_class_to_wire).collect(),
        }
    }
}

impl TryFrom<pb::DeviceSession> for DeviceSession {
    type Error = ServiceError;

    fn try_from(s: pb::DeviceSession) -> Result<Self, ServiceError> {
        Ok(Self {
            tenant: tenant_id(&s.tenant_id)?,
            device: device_key(&s.product_key, &s.device_name)?,
            iot_id: s.iot_id,
            node_type: node_type(s.node_type)?,
            topic_classes: topic_classes(s.topic_classes)?,
        })
    }
}

pub(crate) fn device_ref(tenant: &TenantId, device: &DeviceKey) -> pb::DeviceRef {
    pb::DeviceRef {
        tenant_id: tenant.to_string(),
        product_key: device.product_key.to_string(),
        device_name: device.device_name.to_string(),
    }
}

// === topology ===

pub(crate) fn device_key_to_wire(d: &DeviceKey) -> pb::DeviceKey {
    pb::DeviceKey { product_key: d.product_key.to_string(), device_name: d.device_name.to_string() }
}

pub(crate) fn device_keys(raw: Vec<pb::DeviceKey>) -> Result<Vec<DeviceKey>, ServiceError> {
    raw.iter().map(|d| device_key(&d.product_key, &d.device_name)).collect()
}

impl From<SubDeviceSign> for pb::SubDeviceSign {
    fn from(s: SubDeviceSign) -> Self {
        Self {
            device: Some(device_key_to_wire(&s.device)),
            client_id: s.client_id,
            timestamp: s.timestamp,
            sign_method: sign_method_to_wire(s.sign_method).into(),
            sign: s.sign,
        }
    }
}

impl TryFrom<pb::SubDeviceSign> for SubDeviceSign {
    type Error = ServiceError;

    fn try_from(s: pb::SubDeviceSign) -> Result<Self, ServiceError> {
        let device = s.device.ok_or_else(|| ServiceError::invalid("device", "missing"))?;
        Ok(Self {
            device: device_key(&device.product_key, &device.device_name)?,
            client_id: s.client_id,
            timestamp: s.timestamp,
            sign_method: sign_method(s.sign_method)?,
            sign: s.sign,
        })
    }
}

impl From<SubDevice> for pb::SubDevice {
    fn from(s: SubDevice) -> Self {
        Self { product_key: s.product_key.to_string(), device_name: s.device_name.to_string(), iot_id: s.iot_id }
    }
}

impl TryFrom<pb::SubDevice> for SubDevice {
    type Error = ServiceError;

    fn try_from(s: pb::SubDevice) -> Result<Self, ServiceError> {
        Ok(Self {
            product_key: product_key(&s.product_key)?,
            device_name: device_name(&s.device_name)?,
            iot_id: s.iot_id,
        })
    }
}
