//! Gateways and their sub-devices: the topology rules, sub-device signs and logins.
//!
//! The relation is stored twice: `gateway-of/{subpk}/{subdn}` holds a sub-device's one gateway
//! (written with compare-and-set, so concurrent moves cannot both win) and is the truth;
//! `topo/{gwpk}/{gwdn}/{subpk}/{subdn}` lists a gateway's sub-devices for readers of the store.
//! A crash between the two writes can leave a stale `topo/` key; nothing here reads them back,
//! the in-memory index is rebuilt from `gateway-of/`.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tether_bus::events::{self, Origin, TopoAction};
use tether_contract::{
    Device, DeviceSession, MAX_SUB_DEVICES_PER_GATEWAY, MAX_SUB_DEVICES_PER_REQUEST, NewDevice, NodeType, Product,
    ServiceError, SubDevice, SubDeviceSign, TopologyError, now_ms,
};
use tether_model::{DeviceKey, SignParams, TenantId};
use tether_store::{Expect, StoreError};

use crate::{Auth, store_error};

/// Tries of one compare-and-set write before giving up on a busy relation.
const CAS_ATTEMPTS: usize = 5;

/// Prefix of the reverse index: a sub-device's gateway.
pub(crate) const GATEWAY_OF: &str = "gateway-of/";

/// One gateway–sub-device relation, as stored under both keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TopoRecord {
    pub gateway: DeviceKey,
    pub sub_device: DeviceKey,
    pub created_at: i64,
}

/// The in-memory topology: each sub-device's gateway and, derived from it, each gateway's
/// sub-devices.
#[derive(Debug, Default)]
pub(crate) struct Topology {
    gateway_of: BTreeMap<DeviceKey, DeviceKey>,
    sub_devices: BTreeMap<DeviceKey, BTreeSet<DeviceKey>>,
}

// === impl Topology ===

impl Topology {
    pub(crate) fn attach(&mut self, sub: DeviceKey, gateway: DeviceKey) {
        self.detach(&sub);
        self.sub_devices.entry(gateway.clone()).or_default().insert(sub.clone());
        self.gateway_of.insert(sub, gateway);
    }

    pub(crate) fn detach(&mut self, sub: &DeviceKey) {
        if let Some(old) = self.gateway_of.remove(sub)
            && let Some(subs) = self.sub_devices.get_mut(&old)
        {
            subs.remove(sub);
            if subs.is_empty() {
                self.sub_devices.remove(&old);
            }
        }
    }

    pub(crate) fn gateway_of(&self, sub: &DeviceKey) -> Option<&DeviceKey> {
        self.gateway_of.get(sub)
    }

    pub(crate) fn sub_devices_of(&self, gateway: &DeviceKey) -> impl Iterator<Item = &DeviceKey> {
        self.sub_devices.get(gateway).into_iter().flatten()
    }

    fn count(&self, gateway: &DeviceKey) -> usize {
        self.sub_devices.get(gateway).map_or(0, BTreeSet::len)
    }
}

pub(crate) fn gateway_of_key(sub: &DeviceKey) -> String {
    format!("{GATEWAY_OF}{}/{}", sub.product_key, sub.device_name)
}

fn topo_key(gateway: &DeviceKey, sub: &DeviceKey) -> String {
    format!("topo/{}/{}/{}/{}", gateway.product_key, gateway.device_name, sub.product_key, sub.device_name)
}

fn sub_device(device: &Device) -> SubDevice {
    SubDevice {
        product_key: device.product_key.clone(),
        device_name: device.device_name.clone(),
        iot_id: device.iot_id.clone(),
    }
}

fn unavailable(err: StoreError) -> TopologyError {
    TopologyError::from(store_error(err))
}

/// The checked sub-devices in the order the request named them, each once.
fn in_request_order<'a>(
    requested: impl Iterator<Item = &'a DeviceKey>,
    checked: &BTreeMap<DeviceKey, Device>,
) -> Vec<SubDevice> {
    let mut seen = BTreeSet::new();
    requested.filter(|d| seen.insert(*d)).filter_map(|d| checked.get(d)).map(sub_device).collect()
}

/// The number of sub-devices in one request, checked against the per-request limit.
fn check_request_size(len: usize) -> Result<(), TopologyError> {
    if len == 0 {
        return Err(TopologyError::invalid("params", "no sub-devices given"));
    }
    if len > MAX_SUB_DEVICES_PER_REQUEST {
        return Err(TopologyError::invalid(
            "params",
            format!("{len} sub-devices in one request, at most {MAX_SUB_DEVICES_PER_REQUEST}"),
        ));
    }
    Ok(())
}

// === impl Auth ===

impl Auth {
    /// The gateway device of `tenant` named `gateway`; it must be of a gateway product.
    fn gateway_device(&self, tenant: &TenantId, gateway: &DeviceKey) -> Result<Device, TopologyError> {
        let registry = self.registry.read();
        let device = match registry.devices.get(gateway) {
            Some(d) if &d.tenant_id == tenant => d.clone(),
            _ => return Err(TopologyError::DeviceNotFound { device: gateway.clone() }),
        };
        match registry.products.get(&gateway.product_key) {
            Some(p) if p.node_type == NodeType::Gateway => Ok(device),
            _ => Err(TopologyError::NotGateway { device: gateway.clone() }),
        }
    }

    /// The gateway device, which must also be enabled (for requests the gateway itself sends).
    fn enabled_gateway(&self, tenant: &TenantId, gateway: &DeviceKey) -> Result<Device, TopologyError> {
        let device = self.gateway_device(tenant, gateway)?;
        if !device.enabled {
            return Err(TopologyError::Disabled { device: gateway.clone() });
        }
        Ok(device)
    }

    /// A device of `tenant` that may be `gateway`'s sub-device, with its product.
    fn candidate(
        &self,
        tenant: &TenantId,
        gateway: &DeviceKey,
        sub: &DeviceKey,
    ) -> Result<(Device, Product), TopologyError> {
        if sub == gateway {
            return Err(TopologyError::OwnSubDevice);
        }
        let registry = self.registry.read();
        let device = match registry.devices.get(sub) {
            Some(d) if &d.tenant_id == tenant => d.clone(),
            // Another tenant's device is indistinguishable from a missing one.
            _ => return Err(TopologyError::DeviceNotFound { device: sub.clone() }),
        };
        let product = registry
            .products
            .get(&sub.product_key)
            .cloned()
            .ok_or_else(|| TopologyError::DeviceNotFound { device: sub.clone() })?;
        if product.node_type == NodeType::Gateway {
            return Err(TopologyError::invalid("productKey", format!("{sub} is a gateway, not a sub-device")));
        }
        Ok((device, product))
    }

    /// Checks a sub-device's sign against its own secret.
    fn check_sign(device: &Device, sign: &SubDeviceSign) -> Result<(), TopologyError> {
        let params = SignParams {
            client_id: &sign.client_id,
            device_name: sign.device.device_name.as_str(),
            product_key: sign.device.product_key.as_str(),
            timestamp: sign.timestamp.as_deref(),
        };
        if !sign.sign_method.verify(&device.device_secret, &params, sign.sign.as_bytes()) {
            return Err(TopologyError::BadSign { device: sign.device.clone() });
        }
        Ok(())
    }

    pub(crate) async fn add_topology_impl(
        &self,
        tenant: &TenantId,
        gateway: &DeviceKey,
        signs: Vec<SubDeviceSign>,
    ) -> Result<Vec<SubDevice>, TopologyError> {
        check_request_size(signs.len())?;
        let gateway_device = self.enabled_gateway(tenant, gateway)?;
        // Every sub-device is checked before any is attached: all or none.
        let mut checked: BTreeMap<DeviceKey, Device> = BTreeMap::new();
        for sign in &signs {
            let (device, _) = self.candidate(tenant, gateway, &sign.device)?;
            Self::check_sign(&device, sign)?;
            if !device.enabled {
                return Err(TopologyError::Disabled { device: sign.device.clone() });
            }
            checked.insert(sign.device.clone(), device);
        }
        {
            let registry = self.registry.read();
            let new = checked.keys().filter(|sub| registry.topology.gateway_of(sub) != Some(gateway)).count();
            if registry.topology.count(gateway) + new > MAX_SUB_DEVICES_PER_GATEWAY {
                return Err(TopologyError::TooManySubDevices { max: MAX_SUB_DEVICES_PER_GATEWAY });
            }
        }
        let mut added = Vec::new();
        let mut moved: BTreeMap<DeviceKey, Vec<SubDevice>> = BTreeMap::new();
        for (sub, device) in &checked {
            match self.attach(sub, gateway).await? {
                Attached::Already => {}
                Attached::New => added.push(sub_device(device)),
                Attached::MovedFrom(old) => {
                    moved.entry(old).or_default().push(sub_device(device));
                    added.push(sub_device(device));
                }
            }
        }
        for (old, devices) in moved {
            let old_device = self.registry.read().devices.get(&old).cloned();
            if let Some(old_device) = old_device {
                self.publish_topo(&old_device, TopoAction::Remove, &devices).await;
            }
        }
        if !added.is_empty() {
            self.publish_topo(&gateway_device, TopoAction::Add, &added).await;
        }
        Ok(in_request_order(signs.iter().map(|s| &s.device), &checked))
    }

    pub(crate) async fn remove_topology_impl(
        &self,
        tenant: &TenantId,
        gateway: &DeviceKey,
        subs: Vec<DeviceKey>,
    ) -> Result<Vec<SubDevice>, TopologyError> {
        check_request_size(subs.len())?;
        let gateway_device = self.enabled_gateway(tenant, gateway)?;
        let mut checked: BTreeMap<DeviceKey, Device> = BTreeMap::new();
        for sub in &subs {
            let (device, _) = self.candidate(tenant, gateway, sub)?;
            if self.registry.read().topology.gateway_of(sub) != Some(gateway) {
                return Err(TopologyError::NoRelation { device: sub.clone() });
            }
            checked.insert(sub.clone(), device);
        }
        let mut removed = Vec::new();
        for (sub, device) in &checked {
            if self.detach(sub, gateway).await? {
                removed.push(sub_device(device));
            }
        }
        if !removed.is_empty() {
            self.publish_topo(&gateway_device, TopoAction::Remove, &removed).await;
        }
        Ok(in_request_order(subs.iter(), &checked))
    }

    pub(crate) fn topology_impl(
        &self,
        tenant: &TenantId,
        gateway: &DeviceKey,
    ) -> Result<Vec<SubDevice>, TopologyError> {
        self.gateway_device(tenant, gateway)?;
        let registry = self.registry.read();
        Ok(registry
            .topology
            .sub_devices_of(gateway)
            .filter_map(|sub| registry.devices.get(sub))
            .map(sub_device)
            .collect())
    }

    pub(crate) async fn register_sub_devices_impl(
        &self,
        tenant: &TenantId,
        gateway: &DeviceKey,
        subs: Vec<DeviceKey>,
    ) -> Result<Vec<Device>, TopologyError> {
        use tether_contract::AuthService;

        check_request_size(subs.len())?;
        self.enabled_gateway(tenant, gateway)?;
        let mut existing = BTreeMap::new();
        for sub in &subs {
            if sub == gateway {
                return Err(TopologyError::OwnSubDevice);
            }
            let registry = self.registry.read();
            match registry.products.get(&sub.product_key) {
                Some(p) if &p.tenant_id == tenant && p.node_type == NodeType::Gateway => {
                    return Err(TopologyError::invalid("productKey", format!("{sub} is a gateway, not a sub-device")));
                }
                Some(p) if &p.tenant_id == tenant => {}
                _ => return Err(TopologyError::ProductNotFound { product_key: sub.product_key.clone() }),
            }
            if let Some(device) = registry.devices.get(sub) {
                // A pre-registered device hands its secret to its own gateway or to a first one,
                // never to a gateway it is not attached to.
                if registry.topology.gateway_of(sub).is_some_and(|gw| gw != gateway) {
                    return Err(TopologyError::invalid("deviceName", format!("{sub} belongs to another gateway")));
                }
                existing.insert(sub.clone(), device.clone());
            }
        }
        let mut devices = Vec::with_capacity(subs.len());
        for sub in subs {
            if let Some(device) = existing.remove(&sub) {
                devices.push(device);
                continue;
            }
            let new = NewDevice { device_name: Some(sub.device_name.clone()), device_secret: None };
            let device = match self.register_device(tenant, &sub.product_key, new).await {
                // Registered meanwhile (a retried request, another replica): hand it out as above.
                Err(ServiceError::AlreadyExists { .. }) => self.find_device(&sub).await?,
                other => other?,
            };
            devices.push(device);
        }
        Ok(devices)
    }

    pub(crate) fn login_sub_device_impl(
        &self,
        tenant: &TenantId,
        gateway: &DeviceKey,
        sign: &SubDeviceSign,
    ) -> Result<DeviceSession, TopologyError> {
        self.enabled_gateway(tenant, gateway)?;
        let (device, product) = self.candidate(tenant, gateway, &sign.device)?;
        if self.registry.read().topology.gateway_of(&sign.device) != Some(gateway) {
            return Err(TopologyError::NoRelation { device: sign.device.clone() });
        }
        Self::check_sign(&device, sign)?;
        if !device.enabled {
            return Err(TopologyError::Disabled { device: sign.device.clone() });
        }
        Ok(DeviceSession {
            tenant: device.tenant_id,
            device: sign.device.clone(),
            iot_id: device.iot_id,
            node_type: product.node_type,
            topic_classes: product.topic_classes,
        })
    }

    /// Drops every relation `device` is part of (it is being deleted): as a sub-device, and as
    /// a gateway of others.
    pub(crate) async fn forget_topology(&self, device: &Device) -> Result<(), ServiceError> {
        let key = DeviceKey::new(device.product_key.clone(), device.device_name.clone());
        let (gateway, subs): (Option<DeviceKey>, Vec<DeviceKey>) = {
            let registry = self.registry.read();
            (registry.topology.gateway_of(&key).cloned(), registry.topology.sub_devices_of(&key).cloned().collect())
        };
        if let Some(gateway) = gateway
            && self.detach(&key, &gateway).await.map_err(ServiceError::from)?
        {
            let gateway_device = self.registry.read().devices.get(&gateway).cloned();
            if let Some(gateway_device) = gateway_device {
                self.publish_topo(&gateway_device, TopoAction::Remove, &[sub_device(device)]).await;
            }
        }
        let mut removed = Vec::new();
        for sub in subs {
            if self.detach(&sub, &key).await.map_err(ServiceError::from)? {
                let sub_record = self.registry.read().devices.get(&sub).cloned();
                removed.extend(sub_record.as_ref().map(sub_device));
            }
        }
        if !removed.is_empty() {
            self.publish_topo(device, TopoAction::Remove, &removed).await;
        }
        Ok(())
    }

    /// Makes `gateway` the gateway of `sub` in the store, then in memory.
    async fn attach(&self, sub: &DeviceKey, gateway: &DeviceKey) -> Result<Attached, TopologyError> {
        let key = gateway_of_key(sub);
        for _ in 0..CAS_ATTEMPTS {
            let current = self.store.get(&key).await.map_err(unavailable)?;
            let (previous, expect) = match &current {
                Some(entry) => {
                    let record = serde_json::from_slice::<TopoRecord>(&entry.value).ok();
                    (record.map(|r| r.gateway), Expect::Revision(entry.revision))
                }
                None => (None, Expect::Absent),
            };
            if previous.as_ref() == Some(gateway) {
                self.registry.write().topology.attach(sub.clone(), gateway.clone());
                return Ok(Attached::Already);
            }
            let record = TopoRecord { gateway: gateway.clone(), sub_device: sub.clone(), created_at: now_ms() };
            let bytes = Bytes::from(
                serde_json::to_vec(&record).map_err(|e| TopologyError::Unavailable { reason: e.to_string() })?,
            );
            match self.store.put(&key, bytes.clone(), expect).await {
                Ok(_) => {}
                Err(StoreError::Conflict { .. }) => continue,
                Err(err) => return Err(unavailable(err)),
            }
            self.store.put(&topo_key(gateway, sub), bytes, Expect::Any).await.map_err(unavailable)?;
            if let Some(old) = &previous {
                self.store.delete(&topo_key(old, sub), Expect::Any).await.map_err(unavailable)?;
            }
            self.registry.write().topology.attach(sub.clone(), gateway.clone());
            return Ok(match previous {
                Some(old) => Attached::MovedFrom(old),
                None => Attached::New,
            });
        }
        Err(TopologyError::Unavailable { reason: format!("concurrent topology updates of {sub}, retry") })
    }

    /// Removes `sub` from `gateway` in the store, then in memory; `false` when it was not
    /// (or no longer) attached there.
    async fn detach(&self, sub: &DeviceKey, gateway: &DeviceKey) -> Result<bool, TopologyError> {
        let key = gateway_of_key(sub);
        for _ in 0..CAS_ATTEMPTS {
            let Some(entry) = self.store.get(&key).await.map_err(unavailable)? else {
                self.registry.write().topology.detach(sub);
                return Ok(false);
            };
            let record = serde_json::from_slice::<TopoRecord>(&entry.value).ok();
            if record.as_ref().map(|r| &r.gateway) != Some(gateway) {
                return Ok(false);
            }
            match self.store.delete(&key, Expect::Revision(entry.revision)).await {
                Ok(()) => {}
                Err(StoreError::Conflict { .. }) => continue,
                Err(err) => return Err(unavailable(err)),
            }
            self.store.delete(&topo_key(gateway, sub), Expect::Any).await.map_err(unavailable)?;
            self.registry.write().topology.detach(sub);
            return Ok(true);
        }
        Err(TopologyError::Unavailable { reason: format!("concurrent topology updates of {sub}, retry") })
    }

    async fn publish_topo(&self, gateway: &Device, action: TopoAction, devices: &[SubDevice]) {
        let key = DeviceKey::new(gateway.product_key.clone(), gateway.device_name.clone());
        let origin = Origin { tenant: &gateway.tenant_id, device: &key, iot_id: &gateway.iot_id };
        let members: Vec<(DeviceKey, &str)> = devices
            .iter()
            .map(|d| (DeviceKey::new(d.product_key.clone(), d.device_name.clone()), d.iot_id.as_str()))
            .collect();
        let message = events::topo_lifecycle(origin, action, members.iter().map(|(k, i)| (k, *i)), now_ms());
        if let Err(error) = self.bus.publish_durable(message).await {
            tracing::warn!(gateway = %key, action = action.as_str(), %error, "topo event not published");
        }
    }
}

/// What [`Auth::attach`] changed.
enum Attached {
    Already,
    New,
    MovedFrom(DeviceKey),
}

#[cfg(test)]
mod tests;
