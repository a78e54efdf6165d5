//! Gateways and their sub-devices: the topology requests a gateway sends
//! (`thing/topo/add|delete|get`, `thing/sub/register`, answered with the auth service), and
//! sub-device sessions (`/ext/session/{gw}/combine/login|logout` and the batch forms).
//!
//! A logged-in sub-device is online through its gateway's connection: the connections registry
//! maps it there (so its downlinks and replies travel through the gateway), the gateway may
//! publish and subscribe on its topics, and its uplinks are checked and forwarded with its own
//! identity. It goes offline when the gateway logs it out, when it leaves the gateway's topology,
//! and when the gateway's connection ends.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};
use tether_bus::Subscription;
use tether_bus::events::{self, Origin};
use tether_contract::{
    DeviceSession, MAX_SUB_DEVICES_PER_REQUEST, NodeType, SubDevice, SubDeviceSign, TopologyError, now_ms,
};
use tether_model::topic::{SubscribeFilter, may_subscribe};
use tether_model::{AlinkCode, AlinkReply, AlinkRequest, DeviceKey, SignMethod, Topic};

use crate::EdgeShared;
use crate::session::{Connection, kick_remote, publish_status};
use crate::uplink::PublishOutcome;

/// `/sys` request paths of a gateway's topology.
const TOPOLOGY_REQUESTS: &[&str] = &["thing/topo/add", "thing/topo/delete", "thing/topo/get", "thing/sub/register"];

/// A refused gateway request: the reply's code, message and `data`.
#[derive(Debug)]
struct Refused {
    code: AlinkCode,
    message: String,
    data: Value,
}

/// Whether a `/sys` request path is one of a gateway's topology requests.
pub fn is_topology_request(path: &str) -> bool {
    TOPOLOGY_REQUESTS.contains(&path)
}

// === impl Refused ===

impl Refused {
    fn param(message: impl Into<String>) -> Self {
        Self { code: AlinkCode::ParamError, message: message.into(), data: json!({}) }
    }

    fn system(message: impl Into<String>) -> Self {
        Self { code: AlinkCode::SystemError, message: message.into(), data: json!({}) }
    }

    /// The same refusal, naming the devices it is about in `data` (Aliyun's batch replies).
    fn about(mut self, devices: Value) -> Self {
        self.data = devices;
        self
    }
}

impl From<TopologyError> for Refused {
    fn from(error: TopologyError) -> Self {
        Self { code: error.alink_code(), message: error.to_string(), data: json!({}) }
    }
}

// === impl Connection ===

impl Connection {
    /// The session of `device` when it is a sub-device logged in through this connection.
    pub fn sub_device_session(&self, device: &DeviceKey) -> Option<DeviceSession> {
        self.shared.connections.sub_device(device, self.conn_id)
    }

    /// Whether a gateway may SUBSCRIBE to `filter` for one of its logged-in sub-devices.
    pub fn may_subscribe_for_sub_device(&self, filter: &SubscribeFilter) -> bool {
        self.session.node_type == NodeType::Gateway
            && self
                .shared
                .connections
                .sub_devices(self.conn_id)
                .iter()
                .any(|sub| may_subscribe(&sub.device, &sub.topic_classes, filter))
    }

    /// Answers `thing/topo/add|delete|get` and `thing/sub/register`.
    pub async fn on_topology_request(
        &self,
        session: &DeviceSession,
        topic: &Topic,
        path: &str,
        payload: &[u8],
    ) -> PublishOutcome {
        let Some(request) = self.decode_gateway_request(topic, payload) else {
            return PublishOutcome::Accepted;
        };
        let result = match path {
            "thing/topo/add" => self.topo_add(session, &request.params).await,
            "thing/topo/delete" => self.topo_delete(session, &request.params).await,
            "thing/topo/get" => self.topo_get(session).await,
            _ => self.sub_register(session, &request.params).await,
        };
        self.answer(topic, &request.id, result)
    }

    /// Answers `/ext/session/{gw}/combine/login|logout|batch_login|batch_logout`.
    pub async fn on_session_request(
        &self,
        session: &DeviceSession,
        topic: &Topic,
        path: &str,
        payload: &[u8],
    ) -> PublishOutcome {
        if path.ends_with("_reply") {
            // Replies are the platform's to send; a gateway publishing one gets nothing back.
            return PublishOutcome::Accepted;
        }
        let Some(request) = self.decode_gateway_request(topic, payload) else {
            return PublishOutcome::Accepted;
        };
        let result = match path {
            "combine/login" => self.combine_login(session, &request.params).await,
            "combine/logout" => self.combine_logout(session, &request.params),
            "combine/batch_login" => self.combine_batch_login(session, &request.params).await,
            "combine/batch_logout" => self.combine_batch_logout(session, &request.params),
            _ => Err(Refused {
                code: AlinkCode::RequestError,
                message: "request not supported by this platform".into(),
                data: json!({}),
            }),
        };
        self.answer(topic, &request.id, result)
    }

    /// `thing.topo.add`: params `[{productKey, deviceName, clientId, timestamp, signmethod, sign}]`.
    async fn topo_add(&self, gateway: &DeviceSession, params: &Value) -> Result<Value, Refused> {
        require_gateway(gateway)?;
        let items = list(params, "params")?;
        let signs = items
            .iter()
            .enumerate()
            .map(|(i, item)| sub_device_sign(item, None, &format!("params[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let added = self.shared.deps.auth.add_topology(&gateway.tenant, &gateway.device, signs).await?;
        Ok(identities(added.iter().map(sub_device_key)))
    }

    /// `thing.topo.delete`: params `[{productKey, deviceName}]`; the sub-devices it removes go
    /// offline if they were logged in here.
    async fn topo_delete(&self, gateway: &DeviceSession, params: &Value) -> Result<Value, Refused> {
        require_gateway(gateway)?;
        let devices = device_keys(list(params, "params")?, "params")?;
        let removed = self.shared.deps.auth.remove_topology(&gateway.tenant, &gateway.device, devices).await?;
        for sub in &removed {
            self.shared.connections.log_out_sub_device(&sub_device_key(sub), self.conn_id);
        }
        Ok(identities(removed.iter().map(sub_device_key)))
    }

    /// `thing.topo.get`: the gateway's sub-devices.
    async fn topo_get(&self, gateway: &DeviceSession) -> Result<Value, Refused> {
        require_gateway(gateway)?;
        let subs = self.shared.deps.auth.topology(&gateway.tenant, &gateway.device).await?;
        Ok(identities(subs.iter().map(sub_device_key)))
    }

    /// `thing.sub.register`: params `[{productKey, deviceName}]`; answers each with its secret.
    async fn sub_register(&self, gateway: &DeviceSession, params: &Value) -> Result<Value, Refused> {
        require_gateway(gateway)?;
        let devices = device_keys(list(params, "params")?, "params")?;
        let registered = self.shared.deps.auth.register_sub_devices(&gateway.tenant, &gateway.device, devices).await?;
        let data = registered
            .iter()
            .map(|d| {
                json!({
                    "iotId": d.iot_id,
                    "productKey": d.product_key,
                    "deviceName": d.device_name,
                    "deviceSecret": d.device_secret,
                })
            })
            .collect();
        Ok(Value::Array(data))
    }

    /// `combine.login`: params `{productKey, deviceName, clientId, timestamp, signMethod, sign,
    /// cleanSession}`.
    async fn combine_login(&self, gateway: &DeviceSession, params: &Value) -> Result<Value, Refused> {
        require_gateway(gateway)?;
        let sign = sub_device_sign(params, None, "params")?;
        let device = sign.device.clone();
        let sub = self
            .shared
            .deps
            .auth
            .login_sub_device(&gateway.tenant, &gateway.device, sign)
            .await
            .map_err(|e| Refused::from(e).about(identity(&device)))?;
        self.log_in(sub).await?;
        Ok(identity(&device))
    }

    /// `combine.batch_login`: params `{deviceList: [..], signMethod}` (the method may also be
    /// given per device). All or none: every sub-device is checked before any goes online.
    async fn combine_batch_login(&self, gateway: &DeviceSession, params: &Value) -> Result<Value, Refused> {
        require_gateway(gateway)?;
        let items = device_list(params)?;
        let default_method = sign_method_field(params);
        let signs = items
            .iter()
            .enumerate()
            .map(|(i, item)| sub_device_sign(item, default_method, &format!("params.deviceList[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let mut sessions = Vec::with_capacity(signs.len());
        for sign in signs {
            let device = sign.device.clone();
            match self.shared.deps.auth.login_sub_device(&gateway.tenant, &gateway.device, sign).await {
                Ok(sub) => sessions.push(sub),
                Err(error) => return Err(Refused::from(error).about(json!([identity(&device)]))),
            }
        }
        let logged_in = identities(sessions.iter().map(|s| s.device.clone()));
        for sub in sessions {
            self.log_in(sub).await?;
        }
        Ok(logged_in)
    }

    /// `combine.logout`: params `{productKey, deviceName}`. Logging out a sub-device that is not
    /// logged in here succeeds (it is offline either way).
    fn combine_logout(&self, gateway: &DeviceSession, params: &Value) -> Result<Value, Refused> {
        require_gateway(gateway)?;
        let device = device_key(params, "params")?;
        self.shared.connections.log_out_sub_device(&device, self.conn_id);
        Ok(identity(&device))
    }

    /// `combine.batch_logout`: params `[{productKey, deviceName}]` (as the official Python SDK
    /// sends it) or `{deviceList: [..]}`.
    fn combine_batch_logout(&self, gateway: &DeviceSession, params: &Value) -> Result<Value, Refused> {
        require_gateway(gateway)?;
        let devices = device_keys(device_list(params)?, "params.deviceList")?;
        for device in &devices {
            self.shared.connections.log_out_sub_device(device, self.conn_id);
        }
        Ok(identities(devices.into_iter()))
    }

    /// Opens a sub-device's session through this connection: routes it here, records it
    /// ONLINE and takes over any session it had elsewhere.
    async fn log_in(&self, sub: DeviceSession) -> Result<(), Refused> {
        let shared = &self.shared;
        let node = &shared.config.node_id;
        let at = now_ms();
        let route = tether_store::Route {
            node: node.clone(),
            conn_id: self.conn_id,
            connected_at: at,
            client_ip: self.client_ip.clone(),
        };
        let again = self.sub_device_session(&sub.device).is_some();
        if !shared.connections.log_in_sub_device(&self.session.device, self.conn_id, sub.clone(), route.clone()) {
            return Err(Refused::system("the gateway's session is closing"));
        }
        if again {
            // Logged in here already: its route and presence stand.
            return Ok(());
        }
        match shared.deps.routes.connect(&sub.device, route).await {
            Ok(Some(previous)) if &previous.node != node => kick_remote(shared, &sub.device, &previous).await,
            Ok(Some(own)) if own.conn_id == self.conn_id => {
                // A later session of the sub-device holds it: this login loses.
                shared.connections.log_out_sub_device(&sub.device, self.conn_id);
                return Err(Refused::system("a later session of this sub-device holds it"));
            }
            Ok(_) => {}
            Err(error) => {
                shared.connections.log_out_sub_device(&sub.device, self.conn_id);
                return Err(Refused::system(format!("session routes unavailable: {error}")));
            }
        }
        let origin = Origin { tenant: &sub.tenant, device: &sub.device, iot_id: &sub.iot_id };
        publish_status(&shared.deps, events::status(origin, true, at, &self.client_ip)).await;
        tracing::debug!(device = %sub.device, gateway = %self.session.device, conn_id = self.conn_id, "sub-device online");
        Ok(())
    }

    /// Decodes a gateway's request (`method` may be absent), answering a malformed one.
    fn decode_gateway_request(&self, topic: &Topic, payload: &[u8]) -> Option<AlinkRequest> {
        match AlinkRequest::decode(payload) {
            Ok(request) => Some(request),
            Err(error) => {
                let refused = Refused { code: error.code, message: error.message, data: json!({}) };
                self.answer(topic, &error.id.unwrap_or_default(), Err(refused));
                None
            }
        }
    }

    /// Answers a gateway's request on its `_reply` topic.
    fn answer(&self, topic: &Topic, id: &str, result: Result<Value, Refused>) -> PublishOutcome {
        let (reply, outcome) = match result {
            Ok(data) => (AlinkReply::success(id, data), PublishOutcome::Accepted),
            Err(refused) => {
                tracing::info!(
                    gateway = %self.session.device,
                    %topic,
                    code = refused.code.as_u32(),
                    reason = %refused.message,
                    "gateway request refused"
                );
                let outcome = match refused.code {
                    // The platform failed, not the request: no PUBACK, the gateway may retry.
                    AlinkCode::SystemError => PublishOutcome::Unavailable,
                    _ => PublishOutcome::Accepted,
                };
                (AlinkReply::new(id, refused.code, refused.data).with_message(refused.message), outcome)
            }
        };
        self.sink.send(&topic.reply_topic(), reply.with_method(topic.alink_method()).encode());
        outcome
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TopoEvent {
    action: String,
    gw_product_key: String,
    gw_device_name: String,
    #[serde(default)]
    devices: Vec<TopoEventDevice>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TopoEventDevice {
    product_key: String,
    device_name: String,
}

/// Logs out sub-devices that leave the topology of the gateway they are logged in through
/// (moved to another gateway, removed from it): `tether.up.*.*.*.topo` events.
pub async fn log_out_detached(shared: Arc<EdgeShared>, mut events: Subscription) {
    while let Some(message) = events.next().await {
        let Ok(event) = serde_json::from_slice::<TopoEvent>(&message.payload) else {
            tracing::warn!(subject = %message.subject, "unreadable topo event skipped");
            continue;
        };
        if event.action != "remove" {
            continue;
        }
        let Ok(gateway) = DeviceKey::parse(&event.gw_product_key, &event.gw_device_name) else {
            continue;
        };
        let Some(conn_id) = shared.connections.connection_of(&gateway) else {
            continue;
        };
        for device in event.devices {
            let Ok(sub) = DeviceKey::parse(&device.product_key, &device.device_name) else {
                continue;
            };
            if shared.connections.log_out_sub_device(&sub, conn_id) {
                tracing::info!(device = %sub, %gateway, "sub-device left the gateway's topology, logged out");
            }
        }
    }
}

fn require_gateway(session: &DeviceSession) -> Result<(), Refused> {
    if session.node_type != NodeType::Gateway {
        return Err(TopologyError::NotGateway { device: session.device.clone() }.into());
    }
    Ok(())
}

/// A list of at most [`MAX_SUB_DEVICES_PER_REQUEST`] items.
fn list<'a>(value: &'a Value, field: &str) -> Result<&'a [Value], Refused> {
    let Value::Array(items) = value else {
        return Err(Refused::param(format!("{field}: must be a list")));
    };
    if items.is_empty() || items.len() > MAX_SUB_DEVICES_PER_REQUEST {
        return Err(Refused::param(format!("{field}: 1 to {MAX_SUB_DEVICES_PER_REQUEST} sub-devices")));
    }
    Ok(items)
}

/// The devices of a batch request: `params.deviceList`, or `params` itself when it is a list.
fn device_list(params: &Value) -> Result<&[Value], Refused> {
    match params {
        Value::Array(_) => list(params, "params"),
        _ => list(params.get("deviceList").unwrap_or(&Value::Null), "params.deviceList"),
    }
}

fn text<'a>(item: &'a Value, key: &str, field: &str) -> Result<&'a str, Refused> {
    match item.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        _ => Err(Refused::param(format!("{field}.{key}: required string"))),
    }
}

/// `{productKey, deviceName}`; a malformed device name is Aliyun's 6280.
fn device_key(item: &Value, field: &str) -> Result<DeviceKey, Refused> {
    let product_key = tether_model::ProductKey::new(text(item, "productKey", field)?)
        .map_err(|e| Refused::param(format!("{field}.productKey: {e}")))?;
    let device_name = tether_model::DeviceName::new(text(item, "deviceName", field)?)
        .map_err(|e| Refused::from(TopologyError::BadDeviceName { reason: format!("{field}.deviceName: {e}") }))?;
    Ok(DeviceKey::new(product_key, device_name))
}

fn device_keys(items: &[Value], field: &str) -> Result<Vec<DeviceKey>, Refused> {
    items.iter().enumerate().map(|(i, item)| device_key(item, &format!("{field}[{i}]"))).collect()
}

/// `signMethod`, or `signmethod` as `thing/topo/add` spells it.
fn sign_method_field(item: &Value) -> Option<&str> {
    item.get("signMethod").or_else(|| item.get("signmethod")).and_then(Value::as_str)
}

/// A sub-device's sign; `default_method` is the batch's `signMethod`.
fn sub_device_sign(item: &Value, default_method: Option<&str>, field: &str) -> Result<SubDeviceSign, Refused> {
    let device = device_key(item, field)?;
    let method = sign_method_field(item)
        .or(default_method)
        .ok_or_else(|| Refused::param(format!("{field}.signMethod: required string")))?;
    let sign_method = SignMethod::parse(method).ok_or_else(|| {
        Refused::param(format!("{field}.signMethod: {method} is not hmacmd5, hmacsha1 or hmacsha256"))
    })?;
    let timestamp = match item.get("timestamp") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(_) => return Err(Refused::param(format!("{field}.timestamp: must be a string"))),
    };
    Ok(SubDeviceSign {
        device,
        client_id: text(item, "clientId", field)?.to_owned(),
        timestamp,
        sign_method,
        sign: text(item, "sign", field)?.to_owned(),
    })
}

fn sub_device_key(sub: &SubDevice) -> DeviceKey {
    DeviceKey::new(sub.product_key.clone(), sub.device_name.clone())
}

/// `{productKey, deviceName}`, as Aliyun's replies name sub-devices.
fn identity(device: &DeviceKey) -> Value {
    json!({ "productKey": device.product_key, "deviceName": device.device_name })
}

fn identities(devices: impl Iterator<Item = DeviceKey>) -> Value {
    Value::Array(devices.map(|d| identity(&d)).collect())
}

#[cfg(test)]
mod tests;
