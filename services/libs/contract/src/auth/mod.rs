//! The `auth` service: tenants and API keys, products, devices and their secrets, and the MQTT
//! sign check at CONNECT.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tether_model::{ClientIdError, DeviceKey, DeviceName, ProductKey, TenantId, TopicClass};

use crate::ServiceError;

mod grpc;
mod topology;
mod wire;

pub use grpc::{AuthGrpcClient, AuthGrpcServer};
pub use topology::{MAX_SUB_DEVICES_PER_GATEWAY, MAX_SUB_DEVICES_PER_REQUEST, SubDevice, SubDeviceSign, TopologyError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    pub tenant_id: TenantId,
    pub name: String,
    pub created_at: i64,
}

/// A freshly issued API key: the only time its secret is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuedApiKey {
    pub key_id: String,
    pub api_key: String,
}

/// Who is calling the tenant API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub tenant: TenantId,
    /// The operator's admin key: manages tenants, acts on the default tenant.
    pub admin: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeType {
    #[default]
    Device,
    Gateway,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    #[default]
    Alink,
    Raw,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    #[default]
    Alink,
    Thingscloud,
    Iotda,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProduct {
    pub name: String,
    pub product_key: Option<ProductKey>,
    pub node_type: NodeType,
    pub data_format: DataFormat,
    pub dialect: Dialect,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    pub tenant_id: TenantId,
    pub product_key: ProductKey,
    pub product_secret: String,
    pub name: String,
    pub node_type: NodeType,
    pub data_format: DataFormat,
    pub dialect: Dialect,
    pub topic_classes: Vec<TopicClass>,
    pub created_at: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewDevice {
    pub device_name: Option<DeviceName>,
    pub device_secret: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub tenant_id: TenantId,
    pub product_key: ProductKey,
    pub device_name: DeviceName,
    pub device_secret: String,
    pub iot_id: String,
    pub enabled: bool,
    pub created_at: i64,
}

/// One page of a listing; `next_page_token` is set when more follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub items: Vec<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// The identity fields of an MQTT CONNECT, as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCredentials {
    pub client_id: String,
    pub username: String,
    pub password: Vec<u8>,
}

/// What the edge knows about an authenticated connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSession {
    pub tenant: TenantId,
    pub device: DeviceKey,
    pub iot_id: String,
    pub node_type: NodeType,
    pub topic_classes: Vec<TopicClass>,
}

/// Why a CONNECT is refused; the edge maps each to a CONNACK code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceAuthError {
    #[error("malformed client id: {0}")]
    ClientId(#[from] ClientIdError),
    #[error("username must be `deviceName&productKey`")]
    Username,
    #[error("unknown device")]
    UnknownDevice,
    #[error("device is disabled")]
    Disabled,
    #[error("sign does not match")]
    BadSign,
    #[error("auth unavailable: {0}")]
    Unavailable(String),
}

/// The `auth` service.
#[async_trait]
pub trait AuthService: Send + Sync + 'static {
    /// Resolves a bearer API key.
    async fn authenticate_api_key(&self, api_key: &str) -> Result<Caller, ServiceError>;
    async fn create_tenant(&self, name: &str) -> Result<(Tenant, IssuedApiKey), ServiceError>;
    async fn list_tenants(&self) -> Result<Vec<Tenant>, ServiceError>;
    async fn create_api_key(&self, tenant: &TenantId) -> Result<IssuedApiKey, ServiceError>;
    async fn delete_api_key(&self, tenant: &TenantId, key_id: &str) -> Result<(), ServiceError>;

    async fn create_product(&self, tenant: &TenantId, product: NewProduct) -> Result<Product, ServiceError>;
    async fn list_products(&self, tenant: &TenantId) -> Result<Vec<Product>, ServiceError>;
    async fn get_product(&self, tenant: &TenantId, product_key: &ProductKey) -> Result<Product, ServiceError>;
    /// Deletes a product; refused while it still has devices.
    async fn delete_product(&self, tenant: &TenantId, product_key: &ProductKey) -> Result<(), ServiceError>;
    async fn add_topic_class(
        &self,
        tenant: &TenantId,
        product_key: &ProductKey,
        class: TopicClass,
    ) -> Result<Product, ServiceError>;

    async fn register_device(
        &self,
        tenant: &TenantId,
        product_key: &ProductKey,
        device: NewDevice,
    ) -> Result<Device, ServiceError>;
    async fn list_devices(
        &self,
        tenant: &TenantId,
        product_key: &ProductKey,
        page_size: usize,
        page_token: Option<&str>,
    ) -> Result<Page<Device>, ServiceError>;
    async fn get_device(&self, tenant: &TenantId, device: &DeviceKey) -> Result<Device, ServiceError>;
    /// Deletes a device and disconnects it.
    async fn delete_device(&self, tenant: &TenantId, device: &DeviceKey) -> Result<(), ServiceError>;
    /// Enables or disables a device; disabling disconnects it.
    async fn set_device_enabled(
        &self,
        tenant: &TenantId,
        device: &DeviceKey,
        enabled: bool,
    ) -> Result<Device, ServiceError>;

    /// Any tenant's device by its key: for platform services (presence, reaper), never for
    /// tenant requests.
    async fn find_device(&self, device: &DeviceKey) -> Result<Device, ServiceError>;

    /// Checks a CONNECT's Aliyun sign.
    async fn authenticate_device(&self, credentials: DeviceCredentials) -> Result<DeviceSession, DeviceAuthError>;

    // Gateway topology. `gateway` is an enabled device of a gateway product of `tenant`; its
    // sub-devices are devices of non-gateway products of the same tenant, each attached to at
    // most one gateway.

    /// Attaches sub-devices to a gateway, each proved by its sign (`thing/topo/add`); a
    /// sub-device attached to another gateway moves to this one. All or none are attached.
    async fn add_topology(
        &self,
        tenant: &TenantId,
        gateway: &DeviceKey,
        sub_devices: Vec<SubDeviceSign>,
    ) -> Result<Vec<SubDevice>, TopologyError>;

    /// Detaches sub-devices from a gateway (`thing/topo/delete`); each must be attached to it.
    async fn remove_topology(
        &self,
        tenant: &TenantId,
        gateway: &DeviceKey,
        sub_devices: Vec<DeviceKey>,
    ) -> Result<Vec<SubDevice>, TopologyError>;

    /// A gateway's sub-devices, in key order (`thing/topo/get`, and the tenant API).
    async fn topology(&self, tenant: &TenantId, gateway: &DeviceKey) -> Result<Vec<SubDevice>, TopologyError>;

    /// Registers sub-devices for a gateway (`thing/sub/register`) and returns them with their
    /// secrets; a device that already exists is returned as it is unless another gateway has it.
    async fn register_sub_devices(
        &self,
        tenant: &TenantId,
        gateway: &DeviceKey,
        sub_devices: Vec<DeviceKey>,
    ) -> Result<Vec<Device>, TopologyError>;

    /// Checks a sub-device's login through a gateway (`combine/login`): the topology relation,
    /// the sign and that the sub-device is enabled.
    async fn login_sub_device(
        &self,
        tenant: &TenantId,
        gateway: &DeviceKey,
        sign: SubDeviceSign,
    ) -> Result<DeviceSession, TopologyError>;
}
