//! The `auth` service: tenants and API keys, products, devices and their secrets, and the MQTT
//! sign check at CONNECT.
//!
//! The registry lives in the [`KvStore`] (keys `tenant/..`, `apikey/..`, `product/..`,
//! `device/..`, and the gateway topology under `gateway-of/..` and `topo/..`); a copy is kept in
//! memory, so sign checks at CONNECT never touch disk. Every device lifecycle change is
//! published on the bus (Aliyun's `thing/lifecycle` shape), which is how edges learn to
//! disconnect a disabled or deleted device; topology changes are published in Aliyun's
//! `thing/topo/lifecycle` shape.

mod secrets;
mod topology;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::RwLock;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tether_bus::{Bus, BusMessage, subject};
use tether_contract::{
    AuthService, Caller, Device, DeviceAuthError, DeviceCredentials, DeviceSession, IssuedApiKey, NewDevice,
    NewProduct, Page, Product, ServiceError, SubDevice, SubDeviceSign, Tenant, TopologyError, now_ms,
};
use tether_model::{DeviceKey, DeviceName, MqttClientId, ProductKey, SignParams, TenantId, TopicClass};
use tether_store::{Expect, KvStore, StoreError};

/// The tenant `tether run` creates on first start; the admin key acts on it.
pub const DEFAULT_TENANT: &str = "default";

/// Most devices one listing page returns.
pub const MAX_PAGE_SIZE: usize = 100;

/// The `auth` service over a [`KvStore`].
pub struct Auth {
    store: Arc<dyn KvStore>,
    bus: Arc<dyn Bus>,
    registry: RwLock<Registry>,
}

/// The in-memory copy of the registry.
#[derive(Default)]
struct Registry {
    tenants: BTreeMap<TenantId, Tenant>,
    /// By key hash.
    api_keys: HashMap<String, ApiKeyRecord>,
    products: BTreeMap<ProductKey, Product>,
    devices: BTreeMap<DeviceKey, Device>,
    topology: topology::Topology,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiKeyRecord {
    key_id: String,
    tenant_id: TenantId,
    admin: bool,
    created_at: i64,
}

// === impl Registry ===

impl Registry {
    async fn load(store: &dyn KvStore) -> Result<Self, ServiceError> {
        let mut registry = Registry::default();
        for tenant in load::<Tenant>(store, "tenant/").await? {
            registry.tenants.insert(tenant.tenant_id.clone(), tenant);
        }
        for (key, record) in load_keyed::<ApiKeyRecord>(store, "apikey/").await? {
            registry.api_keys.insert(key, record);
        }
        for product in load::<Product>(store, "product/").await? {
            registry.products.insert(product.product_key.clone(), product);
        }
        for device in load::<Device>(store, "device/").await? {
            let key = DeviceKey::new(device.product_key.clone(), device.device_name.clone());
            registry.devices.insert(key, device);
        }
        for record in load::<topology::TopoRecord>(store, topology::GATEWAY_OF).await? {
            registry.topology.attach(record.sub_device, record.gateway);
        }
        Ok(registry)
    }
}

// === impl Auth ===

impl Auth {
    /// Loads the registry, creates the default tenant on first start and installs `admin_key`
    /// as the operator's key (replacing an earlier one).
    pub async fn open(store: Arc<dyn KvStore>, bus: Arc<dyn Bus>, admin_key: &str) -> Result<Self, ServiceError> {
        let registry = Registry::load(&*store).await?;
        let auth = Self { store, bus, registry: RwLock::new(registry) };
        auth.install_admin(admin_key).await?;
        Ok(auth)
    }

    /// Re-reads one registry record after another replica changed it (cluster mode watches the
    /// store and calls this for every change).
    pub async fn refresh(&self, key: &str) -> Result<(), ServiceError> {
        let entry = self.store.get(key).await.map_err(store_error)?;
        let mut registry = self.registry.write();
        let value = entry.as_ref().map(|e| e.value.as_ref());
        if let Some(rest) = key.strip_prefix("tenant/") {
            let Ok(id) = TenantId::new(rest) else { return Ok(()) };
            match value.and_then(|v| serde_json::from_slice::<Tenant>(v).ok()) {
                Some(tenant) => registry.tenants.insert(id, tenant),
                None => registry.tenants.remove(&id),
            };
        } else if let Some(hash) = key.strip_prefix("apikey/") {
            match value.and_then(|v| serde_json::from_slice::<ApiKeyRecord>(v).ok()) {
                Some(record) => registry.api_keys.insert(hash.to_owned(), record),
                None => registry.api_keys.remove(hash),
            };
        } else if let Some(rest) = key.strip_prefix("product/") {
            let Ok(pk) = ProductKey::new(rest) else { return Ok(()) };
            match value.and_then(|v| serde_json::from_slice::<Product>(v).ok()) {
                Some(product) => registry.products.insert(pk, product),
                None => registry.products.remove(&pk),
            };
        } else if let Some(rest) = key.strip_prefix("device/") {
            let Some((pk, dn)) = rest.split_once('/') else { return Ok(()) };
            let Ok(device_key) = DeviceKey::parse(pk, dn) else { return Ok(()) };
            match value.and_then(|v| serde_json::from_slice::<Device>(v).ok()) {
                Some(device) => registry.devices.insert(device_key, device),
                None => registry.devices.remove(&device_key),
            };
        } else if let Some(rest) = key.strip_prefix(topology::GATEWAY_OF) {
            let Some((pk, dn)) = rest.split_once('/') else { return Ok(()) };
            let Ok(sub) = DeviceKey::parse(pk, dn) else { return Ok(()) };
            match value.and_then(|v| serde_json::from_slice::<topology::TopoRecord>(v).ok()) {
                Some(record) => registry.topology.attach(sub, record.gateway),
                None => registry.topology.detach(&sub),
            }
        }
        Ok(())
    }

    /// Reloads the whole registry (after a gap in the change stream).
    pub async fn reload(&self) -> Result<(), ServiceError> {
        let registry = Registry::load(&*self.store).await?;
        *self.registry.write() = registry;
        Ok(())
    }

    async fn install_admin(&self, admin_key: &str) -> Result<(), ServiceError> {
        let default = TenantId::new(DEFAULT_TENANT).expect("default tenant id is valid");
        if !self.registry.read().tenants.contains_key(&default) {
            let tenant = Tenant { tenant_id: default.clone(), name: "default".into(), created_at: now_ms() };
            self.write(&format!("tenant/{default}"), &tenant, Expect::Any).await?;
            self.registry.write().tenants.insert(default.clone(), tenant);
        }
        let hash = secrets::hash_api_key(admin_key);
        let stale: Vec<String> = {
            let registry = self.registry.read();
            registry.api_keys.iter().filter(|(h, r)| r.admin && **h != hash).map(|(h, _)| h.clone()).collect()
        };
        for old in stale {
            self.store.delete(&format!("apikey/{old}"), Expect::Any).await.map_err(store_error)?;
            self.registry.write().api_keys.remove(&old);
        }
        if !self.registry.read().api_keys.contains_key(&hash) {
            let record = ApiKeyRecord { key_id: "admin".into(), tenant_id: default, admin: true, created_at: now_ms() };
            self.write(&format!("apikey/{hash}"), &record, Expect::Any).await?;
            self.registry.write().api_keys.insert(hash, record);
        }
        Ok(())
    }

    async fn write<T: Serialize>(&self, key: &str, value: &T, expect: Expect) -> Result<(), ServiceError> {
        let bytes = serde_json::to_vec(value).map_err(|e| ServiceError::Internal(e.to_string()))?;
        self.store.put(key, Bytes::from(bytes), expect).await.map_err(store_error)?;
        Ok(())
    }

    fn product_of(&self, tenant: &TenantId, product_key: &ProductKey) -> Result<Product, ServiceError> {
        let registry = self.registry.read();
        match registry.products.get(product_key) {
            Some(p) if &p.tenant_id == tenant => Ok(p.clone()),
            // Another tenant's product is indistinguishable from a missing one.
            _ => Err(ServiceError::not_found(format!("product {product_key}"))),
        }
    }

    fn device_of(&self, tenant: &TenantId, device: &DeviceKey) -> Result<Device, ServiceError> {
        let registry = self.registry.read();
        match registry.devices.get(device) {
            Some(d) if &d.tenant_id == tenant => Ok(d.clone()),
            _ => Err(ServiceError::not_found(format!("device {device}"))),
        }
    }

    async fn issue_key(&self, tenant: &TenantId) -> Result<IssuedApiKey, ServiceError> {
        let (key_id, api_key) = secrets::api_key();
        let hash = secrets::hash_api_key(&api_key);
        let record =
            ApiKeyRecord { key_id: key_id.clone(), tenant_id: tenant.clone(), admin: false, created_at: now_ms() };
        self.write(&format!("apikey/{hash}"), &record, Expect::Absent).await?;
        self.registry.write().api_keys.insert(hash, record);
        Ok(IssuedApiKey { key_id, api_key })
    }

    async fn publish_lifecycle(&self, device: &Device, action: &str) {
        let key = DeviceKey::new(device.product_key.clone(), device.device_name.clone());
        let mut body = json!({
            "action": action,
            "iotId": device.iot_id,
            "productKey": device.product_key,
            "deviceName": device.device_name,
            "messageCreateTime": now_ms(),
        });
        if action == "create" {
            body["deviceSecret"] = json!(device.device_secret);
        }
        let message = BusMessage::new(subject::lifecycle(&device.tenant_id, &key), body.to_string())
            .with_header("topic", format!("/{}/{}/thing/lifecycle", key.product_key, key.device_name));
        if let Err(error) = self.bus.publish_durable(message).await {
            tracing::warn!(device = %key, action, %error, "lifecycle event not published");
        }
    }
}

#[async_trait]
impl AuthService for Auth {
    async fn authenticate_api_key(&self, api_key: &str) -> Result<Caller, ServiceError> {
        let hash = secrets::hash_api_key(api_key);
        let registry = self.registry.read();
        let record = registry.api_keys.get(&hash).ok_or(ServiceError::Unauthenticated)?;
        Ok(Caller { tenant: record.tenant_id.clone(), admin: record.admin })
    }

    async fn create_tenant(&self, name: &str) -> Result<(Tenant, IssuedApiKey), ServiceError> {
        let name = name.trim();
        if name.is_empty() || name.len() > 128 {
            return Err(ServiceError::invalid("name", "must be 1 to 128 characters"));
        }
        let tenant_id = TenantId::new(format!("t-{}", secrets::random_alnum(10).to_ascii_lowercase()))
            .expect("generated tenant ids are valid");
        let tenant = Tenant { tenant_id: tenant_id.clone(), name: name.to_owned(), created_at: now_ms() };
        self.write(&format!("tenant/{tenant_id}"), &tenant, Expect::Absent).await?;
        self.registry.write().tenants.insert(tenant_id.clone(), tenant.clone());
        let key = self.issue_key(&tenant_id).await?;
        Ok((tenant, key))
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>, ServiceError> {
        Ok(self.registry.read().tenants.values().cloned().collect())
    }

    async fn create_api_key(&self, tenant: &TenantId) -> Result<IssuedApiKey, ServiceError> {
        if !self.registry.read().tenants.contains_key(tenant) {
            return Err(ServiceError::not_found(format!("tenant {tenant}")));
        }
        self.issue_key(tenant).await
    }

    async fn delete_api_key(&self, tenant: &TenantId, key_id: &str) -> Result<(), ServiceError> {
        let hash = {
            let registry = self.registry.read();
            registry
                .api_keys
                .iter()
                .find(|(_, r)| &r.tenant_id == tenant && r.key_id == key_id && !r.admin)
                .map(|(h, _)| h.clone())
                .ok_or_else(|| ServiceError::not_found(format!("api key {key_id}")))?
        };
        self.store.delete(&format!("apikey/{hash}"), Expect::Any).await.map_err(store_error)?;
        self.registry.write().api_keys.remove(&hash);
        Ok(())
    }

    async fn create_product(&self, tenant: &TenantId, new: NewProduct) -> Result<Product, ServiceError> {
        let name = new.name.trim();
        if name.is_empty() || name.len() > 128 {
            return Err(ServiceError::invalid("name", "must be 1 to 128 characters"));
        }
        let product_key = match new.product_key {
            Some(pk) => pk,
            None => ProductKey::new(secrets::product_key()).expect("generated product keys are valid"),
        };
        let product = Product {
            tenant_id: tenant.clone(),
            product_key: product_key.clone(),
            product_secret: secrets::product_secret(),
            name: name.to_owned(),
            node_type: new.node_type,
            data_format: new.data_format,
            dialect: new.dialect,
            topic_classes: TopicClass::defaults(),
            created_at: now_ms(),
        };
        match self.write(&format!("product/{product_key}"), &product, Expect::Absent).await {
            Err(ServiceError::Conflict { .. }) => {
                return Err(ServiceError::AlreadyExists { what: format!("product {product_key}") });
            }
            other => other?,
        }
        self.registry.write().products.insert(product_key, product.clone());
        Ok(product)
    }

    async fn list_products(&self, tenant: &TenantId) -> Result<Vec<Product>, ServiceError> {
        let registry = self.registry.read();
        Ok(registry.products.values().filter(|p| &p.tenant_id == tenant).cloned().collect())
    }

    async fn get_product(&self, tenant: &TenantId, product_key: &ProductKey) -> Result<Product, ServiceError> {
        self.product_of(tenant, product_key)
    }

    async fn delete_product(&self, tenant: &TenantId, product_key: &ProductKey) -> Result<(), ServiceError> {
        self.product_of(tenant, product_key)?;
        let has_devices = self.registry.read().devices.keys().any(|d| &d.product_key == product_key);
        if has_devices {
            return Err(ServiceError::invalid("productKey", "product still has devices; delete them first"));
        }
        self.store.delete(&format!("product/{product_key}"), Expect::Any).await.map_err(store_error)?;
        self.registry.write().products.remove(product_key);
        // The thing service forgets the product's thing model when it sees this.
        let body = json!({ "action": "delete", "productKey": product_key, "messageCreateTime": now_ms() });
        let message = BusMessage::new(subject::product_lifecycle(tenant, product_key), body.to_string());
        if let Err(error) = self.bus.publish_durable(message).await {
            tracing::warn!(%product_key, %error, "product lifecycle event not published");
        }
        Ok(())
    }

    async fn add_topic_class(
        &self,
        tenant: &TenantId,
        product_key: &ProductKey,
        class: TopicClass,
    ) -> Result<Product, ServiceError> {
        TopicClass::validate_short(&class.short).map_err(|e| ServiceError::invalid("topicShortName", e))?;
        let mut product = self.product_of(tenant, product_key)?;
        if product.topic_classes.iter().any(|c| c.short == class.short) {
            return Err(ServiceError::AlreadyExists { what: format!("topic class {}", class.short) });
        }
        product.topic_classes.push(class);
        self.write(&format!("product/{product_key}"), &product, Expect::Any).await?;
        self.registry.write().products.insert(product_key.clone(), product.clone());
        Ok(product)
    }

    async fn register_device(
        &self,
        tenant: &TenantId,
        product_key: &ProductKey,
        new: NewDevice,
    ) -> Result<Device, ServiceError> {
        self.product_of(tenant, product_key)?;
        let device_name = match new.device_name {
            Some(dn) => dn,
            None => DeviceName::new(secrets::random_alnum(20)).expect("generated device names are valid"),
        };
        let device_secret = match new.device_secret {
            Some(secret) if secret.is_empty() || secret.len() > 64 || !secret.chars().all(|c| c.is_ascii_graphic()) => {
                return Err(ServiceError::invalid("deviceSecret", "must be 1 to 64 printable ASCII characters"));
            }
            Some(secret) => secret,
            None => secrets::device_secret(),
        };
        let device = Device {
            tenant_id: tenant.clone(),
            product_key: product_key.clone(),
            device_name: device_name.clone(),
            device_secret,
            iot_id: secrets::iot_id(),
            enabled: true,
            created_at: now_ms(),
        };
        let key = DeviceKey::new(product_key.clone(), device_name);
        match self.write(&device_key(&key), &device, Expect::Absent).await {
            Err(ServiceError::Conflict { .. }) => {
                return Err(ServiceError::AlreadyExists { what: format!("device {key}") });
            }
            other => other?,
        }
        self.registry.write().devices.insert(key, device.clone());
        self.publish_lifecycle(&device, "create").await;
        Ok(device)
    }

    async fn list_devices(
        &self,
        tenant: &TenantId,
        product_key: &ProductKey,
        page_size: usize,
        page_token: Option<&str>,
    ) -> Result<Page<Device>, ServiceError> {
        self.product_of(tenant, product_key)?;
        if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
            return Err(ServiceError::invalid("pageSize", format!("must be 1 to {MAX_PAGE_SIZE}")));
        }
        let after = match page_token {
            Some(token) => Some(DeviceName::new(token).map_err(|e| ServiceError::invalid("pageToken", e))?),
            None => None,
        };
        let registry = self.registry.read();
        let mut devices = registry
            .devices
            .values()
            .filter(|d| &d.product_key == product_key)
            .filter(|d| after.as_ref().is_none_or(|a| &d.device_name > a));
        let items: Vec<Device> = devices.by_ref().take(page_size).cloned().collect();
        let more = devices.next().is_some();
        let next_page_token = more.then(|| items.last().map(|d| d.device_name.to_string())).flatten();
        Ok(Page { items, next_page_token })
    }

    async fn get_device(&self, tenant: &TenantId, device: &DeviceKey) -> Result<Device, ServiceError> {
        self.device_of(tenant, device)
    }

    async fn delete_device(&self, tenant: &TenantId, device: &DeviceKey) -> Result<(), ServiceError> {
        let record = self.device_of(tenant, device)?;
        self.forget_topology(&record).await?;
        self.store.delete(&device_key(device), Expect::Any).await.map_err(store_error)?;
        self.registry.write().devices.remove(device);
        self.publish_lifecycle(&record, "delete").await;
        Ok(())
    }

    async fn set_device_enabled(
        &self,
        tenant: &TenantId,
        device: &DeviceKey,
        enabled: bool,
    ) -> Result<Device, ServiceError> {
        let mut record = self.device_of(tenant, device)?;
        if record.enabled != enabled {
            record.enabled = enabled;
            self.write(&device_key(device), &record, Expect::Any).await?;
            self.registry.write().devices.insert(device.clone(), record.clone());
            self.publish_lifecycle(&record, if enabled { "enable" } else { "disable" }).await;
        }
        Ok(record)
    }

    async fn find_device(&self, device: &DeviceKey) -> Result<Device, ServiceError> {
        let registry = self.registry.read();
        registry.devices.get(device).cloned().ok_or_else(|| ServiceError::not_found(format!("device {device}")))
    }

    async fn authenticate_device(&self, credentials: DeviceCredentials) -> Result<DeviceSession, DeviceAuthError> {
        let client_id = MqttClientId::parse(&credentials.client_id)?;
        let (dn, pk) = credentials.username.split_once('&').ok_or(DeviceAuthError::Username)?;
        let key = DeviceKey::parse(pk, dn).map_err(|_| DeviceAuthError::Username)?;
        let registry = self.registry.read();
        let device = registry.devices.get(&key).ok_or(DeviceAuthError::UnknownDevice)?;
        let params = SignParams {
            client_id: &client_id.client_id,
            device_name: dn,
            product_key: pk,
            timestamp: client_id.timestamp.as_deref(),
        };
        if !client_id.sign_method.verify(&device.device_secret, &params, &credentials.password) {
            return Err(DeviceAuthError::BadSign);
        }
        if !device.enabled {
            return Err(DeviceAuthError::Disabled);
        }
        let product = registry.products.get(&key.product_key).ok_or(DeviceAuthError::UnknownDevice)?;
        Ok(DeviceSession {
            tenant: device.tenant_id.clone(),
            device: key,
            iot_id: device.iot_id.clone(),
            node_type: product.node_type,
            topic_classes: product.topic_classes.clone(),
        })
    }

    async fn add_topology(
        &self,
        tenant: &TenantId,
        gateway: &DeviceKey,
        sub_devices: Vec<SubDeviceSign>,
    ) -> Result<Vec<SubDevice>, TopologyError> {
        self.add_topology_impl(tenant, gateway, sub_devices).await
    }

    async fn remove_topology(
        &self,
        tenant: &TenantId,
        gateway: &DeviceKey,
        sub_devices: Vec<DeviceKey>,
    ) -> Result<Vec<SubDevice>, TopologyError> {
        self.remove_topology_impl(tenant, gateway, sub_devices).await
    }

    async fn topology(&self, tenant: &TenantId, gateway: &DeviceKey) -> Result<Vec<SubDevice>, TopologyError> {
        self.topology_impl(tenant, gateway)
    }

    async fn register_sub_devices(
        &self,
        tenant: &TenantId,
        gateway: &DeviceKey,
        sub_devices: Vec<DeviceKey>,
    ) -> Result<Vec<Device>, TopologyError> {
        self.register_sub_devices_impl(tenant, gateway, sub_devices).await
    }

    async fn login_sub_device(
        &self,
        tenant: &TenantId,
        gateway: &DeviceKey,
        sign: SubDeviceSign,
    ) -> Result<DeviceSession, TopologyError> {
        self.login_sub_device_impl(tenant, gateway, &sign)
    }
}

fn device_key(device: &DeviceKey) -> String {
    format!("device/{}/{}", device.product_key, device.device_name)
}

async fn load<T: DeserializeOwned>(store: &dyn KvStore, prefix: &str) -> Result<Vec<T>, ServiceError> {
    Ok(load_keyed(store, prefix).await?.into_iter().map(|(_, v)| v).collect())
}

/// Entries under `prefix`, with the rest of their key.
async fn load_keyed<T: DeserializeOwned>(store: &dyn KvStore, prefix: &str) -> Result<Vec<(String, T)>, ServiceError> {
    let mut out = Vec::new();
    for entry in store.list(prefix).await.map_err(store_error)? {
        match serde_json::from_slice(&entry.value) {
            Ok(value) => out.push((entry.key[prefix.len()..].to_owned(), value)),
            Err(error) => tracing::error!(key = %entry.key, %error, "unreadable registry record skipped"),
        }
    }
    Ok(out)
}

fn store_error(err: StoreError) -> ServiceError {
    match err {
        StoreError::Conflict { key } => ServiceError::Conflict { what: key },
        StoreError::Backend(reason) => ServiceError::Unavailable(reason),
    }
}

#[cfg(test)]
mod tests;
