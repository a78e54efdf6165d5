//! What the edge does with a device's PUBLISH: topic grammar, ACL, size limit, then the
//! thing-model request it carries. Posts (properties, events, history, packs) are validated
//! against the product's cached thing model and answered here; requests that need stored state
//! (tags, desired properties, the thing model, the shadow) are answered by the thing service.
//! Replies go back on the request topic + `_reply`, always with `id`, `code`, `data` and
//! `message`; uplinks reach the bus before the publish is acknowledged.

use std::borrow::Cow;

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tether_bus::BusMessage;
use tether_bus::events::{self, EventPost, Origin};
use tether_contract::{DeviceRef, DeviceRequest, DeviceSession, now_ms};
use tether_model::topic::{NtpDirection, ShadowOp, SysKind, may_publish};
use tether_model::{AlinkCode, AlinkReply, AlinkRequest, DeviceKey, Topic};

use crate::session::Connection;
use crate::subdevices;

/// What became of a PUBLISH; the MQTT adapters turn it into a PUBACK (v5 reason codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishOutcome {
    /// Handled (an Alink error reply counts: the device got its answer).
    Accepted,
    /// Not one of the device's publishable topics.
    NotAuthorized,
    /// Not an Alink topic.
    TopicInvalid,
    /// Larger than the configured limit.
    TooLarge,
    /// The bus did not take the message: it must not be acknowledged.
    Unavailable,
}

/// Why a request is refused: the Alink code and a message naming the field.
type Refusal = (AlinkCode, String);

/// `/sys` request paths the thing service answers.
const THING_REQUESTS: &[&str] = &[
    "thing/deviceinfo/update",
    "thing/deviceinfo/delete",
    "thing/property/desired/get",
    "thing/property/desired/delete",
    "thing/dsltemplate/get",
    "thing/dynamicTsl/get",
];

// === impl Connection ===

impl Connection {
    /// Handles one PUBLISH of this connection. `size` is the payload's size on the wire.
    pub async fn on_publish(&self, topic: &str, payload: Bytes, size: usize) -> PublishOutcome {
        let _turn = self.publish_turn.lock().await;
        let device = &self.session.device;
        let parsed = match Topic::parse(topic) {
            Ok(parsed) => parsed,
            Err(error) => {
                tracing::warn!(%device, %topic, %error, "publish to an unknown topic dropped");
                self.send_error(AlinkCode::TopicParseFailed, &format!("{topic}: {error}"));
                return PublishOutcome::TopicInvalid;
            }
        };
        let Some(session) = self.acting_session(&parsed) else {
            tracing::warn!(%device, %topic, "publish denied by acl");
            return PublishOutcome::NotAuthorized;
        };
        if !may_publish(&session.device, &session.topic_classes, &parsed) {
            tracing::warn!(%device, %topic, "publish denied by acl");
            return PublishOutcome::NotAuthorized;
        }
        let limit = self.shared.config.max_payload_bytes;
        if size > limit {
            tracing::warn!(%device, %topic, size, limit, "oversize publish refused");
            if parsed.sys_kind().is_some_and(|k| !matches!(k, SysKind::Reply(_))) {
                let reply = AlinkReply::new("", AlinkCode::RequestError, json!({}))
                    .with_message(format!("payload of {size} bytes is over the {limit} byte limit"));
                self.sink.send(&parsed.reply_topic(), reply.encode());
            }
            return PublishOutcome::TooLarge;
        }
        match &parsed {
            Topic::Sys { .. } => self.on_sys(&session, &parsed, &payload).await,
            Topic::Ntp { direction: NtpDirection::Request, device } => {
                self.on_ntp(&Topic::Ntp { device: device.clone(), direction: NtpDirection::Response }, &payload);
                PublishOutcome::Accepted
            }
            Topic::Shadow { op: ShadowOp::Update, .. } => self.ask_thing(&session, topic, payload).await,
            Topic::Session { path, .. } => self.on_session_request(&session, &parsed, path, &payload).await,
            Topic::ExtRrpc { message_id, .. } => {
                self.on_rrpc_answer(&session.device, message_id.as_str(), &payload).await
            }
            // Custom topics are taken by the services that own them as they arrive; until then
            // they are accepted and not forwarded.
            _ => {
                tracing::debug!(%device, %topic, "publish accepted without a handler");
                PublishOutcome::Accepted
            }
        }
    }

    /// The session a publish acts for: the connection's own device for its own topics, a
    /// sub-device logged in through this (gateway) connection for the sub-device's.
    fn acting_session(&self, topic: &Topic) -> Option<Cow<'_, DeviceSession>> {
        match topic.device() {
            Some(device) if device != &self.session.device => self.sub_device_session(device).map(Cow::Owned),
            _ => Some(Cow::Borrowed(&self.session)),
        }
    }

    async fn on_sys(&self, session: &DeviceSession, topic: &Topic, payload: &Bytes) -> PublishOutcome {
        match topic.sys_kind() {
            Some(SysKind::PropertyPost) => self.on_property_post(session, topic, payload).await,
            Some(SysKind::EventPost(identifier)) => self.on_event_post(session, topic, identifier, payload).await,
            Some(SysKind::Reply(path)) => {
                self.check_service_reply(session, path, payload).await;
                self.on_downlink_reply(session, topic, path, payload).await
            }
            // RRPC answers are consumed, never echoed.
            Some(SysKind::RrpcResponse(message_id)) => self.on_rrpc_answer(&session.device, message_id, payload).await,
            Some(SysKind::Request("thing/event/property/history/post")) => {
                self.on_history_post(session, topic, payload).await
            }
            Some(SysKind::Request("thing/event/property/pack/post")) => {
                self.on_pack_post(session, topic, payload).await
            }
            Some(SysKind::Request(path)) if THING_REQUESTS.contains(&path) => {
                self.ask_thing(session, &topic.to_string(), payload.clone()).await
            }
            Some(SysKind::Request(path)) if subdevices::is_topology_request(path) => {
                self.on_topology_request(session, topic, path, payload).await
            }
            _ => {
                let request = AlinkRequest::decode(payload).ok();
                let id = request.map(|r| r.id).unwrap_or_default();
                self.reply(topic, &id, Err((AlinkCode::RequestError, "request not supported by this platform".into())));
                PublishOutcome::Accepted
            }
        }
    }

    /// `thing.event.property.post`: params `{id: value | {value, time}}`.
    async fn on_property_post(&self, session: &DeviceSession, topic: &Topic, payload: &[u8]) -> PublishOutcome {
        let Some(request) = self.decode(topic, payload) else {
            return PublishOutcome::Accepted;
        };
        let params = match request.property_params() {
            Ok(params) => params,
            Err(refusal) => return self.refuse(topic, &request.id, refusal),
        };
        let accepted = match self.check_properties(&session.device, params).await {
            Ok(accepted) => accepted,
            Err(refusal) => return self.refuse(topic, &request.id, refusal),
        };
        let mut messages = Vec::new();
        if !accepted.is_empty() {
            messages.push(events::property_post(origin(session), &request.id, &accepted, now_ms()));
        }
        self.publish_then_reply(topic, &request.id, messages).await
    }

    /// `thing.event.{identifier}.post`: params `{value: {..}, time?}`.
    async fn on_event_post(
        &self,
        session: &DeviceSession,
        topic: &Topic,
        identifier: &str,
        payload: &[u8],
    ) -> PublishOutcome {
        let Some(request) = self.decode(topic, payload) else {
            return PublishOutcome::Accepted;
        };
        let received = now_ms();
        match self.event_message(session, &request.id, identifier, &request.params, received).await {
            Ok(message) => self.publish_then_reply(topic, &request.id, vec![message]).await,
            Err(refusal) => self.refuse(topic, &request.id, refusal),
        }
    }

    /// `thing.event.property.history.post`: params `[{identity: {productKey, deviceName},
    /// properties: [{id: {value, time}}], events: [{id: {value, time}}]}]`, the device's backlog
    /// with its own times. The whole request is refused if any part does not conform.
    async fn on_history_post(&self, session: &DeviceSession, topic: &Topic, payload: &[u8]) -> PublishOutcome {
        let Some(request) = self.decode(topic, payload) else {
            return PublishOutcome::Accepted;
        };
        let Value::Array(entries) = &request.params else {
            return self.refuse(topic, &request.id, param_error("params: must be a list"));
        };
        let received = now_ms();
        let mut messages = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let field = format!("params[{i}]");
            let owner = match self.identity(session, entry.get("identity"), &field) {
                Ok(owner) => owner,
                Err(refusal) => return self.refuse(topic, &request.id, refusal),
            };
            let properties = list_of_objects(entry.get("properties"));
            let events = list_of_objects(entry.get("events"));
            let (Some(properties), Some(events)) = (properties, events) else {
                return self.refuse(
                    topic,
                    &request.id,
                    param_error(format!("{field}: properties and events are lists")),
                );
            };
            for items in properties {
                match self.property_message(&owner, &request.id, items, received).await {
                    Ok(message) => messages.extend(message),
                    Err(refusal) => return self.refuse(topic, &request.id, prefixed(&field, refusal)),
                }
            }
            for items in events {
                for (identifier, params) in items {
                    match self.event_message(&owner, &request.id, identifier, params, received).await {
                        Ok(message) => messages.push(message),
                        Err(refusal) => return self.refuse(topic, &request.id, prefixed(&field, refusal)),
                    }
                }
            }
        }
        self.publish_then_reply(topic, &request.id, messages).await
    }

    /// `thing.event.property.pack.post`: params `{properties, events, subDevices: [{identity,
    /// properties, events}]}`, a gateway's own data and its sub-devices' in one message.
    async fn on_pack_post(&self, session: &DeviceSession, topic: &Topic, payload: &[u8]) -> PublishOutcome {
        let Some(request) = self.decode(topic, payload) else {
            return PublishOutcome::Accepted;
        };
        let Value::Object(params) = &request.params else {
            return self.refuse(topic, &request.id, param_error("params: must be an object"));
        };
        let received = now_ms();
        let mut parts = vec![(session.clone(), "params".to_owned(), params)];
        match params.get("subDevices") {
            None | Some(Value::Null) => {}
            Some(Value::Array(subs)) => {
                for (i, sub) in subs.iter().enumerate() {
                    let field = format!("params.subDevices[{i}]");
                    let Value::Object(sub_params) = sub else {
                        return self.refuse(topic, &request.id, param_error(format!("{field}: must be an object")));
                    };
                    match self.identity(session, sub.get("identity"), &field) {
                        Ok(owner) => parts.push((owner, field, sub_params)),
                        Err(refusal) => return self.refuse(topic, &request.id, refusal),
                    }
                }
            }
            Some(_) => return self.refuse(topic, &request.id, param_error("params.subDevices: must be a list")),
        }
        let mut messages = Vec::new();
        for (owner, field, part) in parts {
            if let Some(properties) = part.get("properties").filter(|p| !p.is_null()) {
                let Value::Object(items) = properties else {
                    return self.refuse(
                        topic,
                        &request.id,
                        param_error(format!("{field}.properties: must be an object")),
                    );
                };
                match self.property_message(&owner, &request.id, items, received).await {
                    Ok(message) => messages.extend(message),
                    Err(refusal) => return self.refuse(topic, &request.id, prefixed(&field, refusal)),
                }
            }
            if let Some(events) = part.get("events").filter(|e| !e.is_null()) {
                let Value::Object(items) = events else {
                    return self.refuse(topic, &request.id, param_error(format!("{field}.events: must be an object")));
                };
                for (identifier, params) in items {
                    match self.event_message(&owner, &request.id, identifier, params, received).await {
                        Ok(message) => messages.push(message),
                        Err(refusal) => return self.refuse(topic, &request.id, prefixed(&field, refusal)),
                    }
                }
            }
        }
        self.publish_then_reply(topic, &request.id, messages).await
    }

    /// Hands a request to the thing service and sends its answer.
    async fn ask_thing(&self, session: &DeviceSession, topic: &str, payload: Bytes) -> PublishOutcome {
        let from = DeviceRef {
            tenant: session.tenant.clone(),
            device: session.device.clone(),
            iot_id: session.iot_id.clone(),
        };
        let request = DeviceRequest { from, topic: topic.to_owned(), payload: payload.clone() };
        match self.shared.deps.thing.device_request(request).await {
            Ok(Some(answer)) => {
                self.sink.send(&answer.topic, answer.payload.to_vec());
                PublishOutcome::Accepted
            }
            Ok(None) => PublishOutcome::Accepted,
            Err(error) => {
                tracing::warn!(device = %session.device, %topic, %error, "thing service did not answer");
                if let Ok(parsed) = Topic::parse(topic)
                    && parsed.sys_kind().is_some()
                {
                    let id = AlinkRequest::decode(&payload).map(|r| r.id).unwrap_or_default();
                    self.reply(&parsed, &id, Err((AlinkCode::SystemError, error.to_string())));
                }
                PublishOutcome::Unavailable
            }
        }
    }

    /// Checks a property post's values against the device's thing model: the properties to
    /// keep (unknown ones are dropped and counted, as Aliyun does), or why the post is refused.
    async fn check_properties<'a>(
        &self,
        device: &DeviceKey,
        params: &'a Map<String, Value>,
    ) -> Result<Cow<'a, Map<String, Value>>, Refusal> {
        check_times(params, now_ms())?;
        let Some(model) = self.model_of(device).await? else {
            return Ok(Cow::Borrowed(params));
        };
        let check = model.check_properties(params);
        if let Some(error) = check.error {
            return Err((AlinkCode::ParamError, error.to_string()));
        }
        if !check.unknown.is_empty() {
            self.shared.metrics.unknown_properties.inc_by(check.unknown.len() as u64);
            tracing::debug!(%device, unknown = ?check.unknown, "properties not in the thing model dropped");
        }
        Ok(Cow::Owned(check.accepted))
    }

    /// The bus message of a property post by `owner`; `None` when nothing is left to keep.
    async fn property_message(
        &self,
        owner: &DeviceSession,
        request_id: &str,
        items: &Map<String, Value>,
        received: i64,
    ) -> Result<Option<BusMessage>, Refusal> {
        if items.len() > tether_model::alink::MAX_PROPERTIES_PER_POST {
            return Err((AlinkCode::TooManyProperties, format!("{} properties in one post", items.len())));
        }
        let accepted = self.check_properties(&owner.device, items).await?;
        Ok((!accepted.is_empty()).then(|| events::property_post(origin(owner), request_id, &accepted, received)))
    }

    /// The bus message of an event post by `owner`, checked against its thing model.
    async fn event_message(
        &self,
        owner: &DeviceSession,
        request_id: &str,
        identifier: &str,
        params: &Value,
        received: i64,
    ) -> Result<BusMessage, Refusal> {
        let model = self.model_of(&owner.device).await?;
        let (name, event_type) = match &model {
            Some(model) => {
                model.check_event(identifier, params).map_err(|e| (AlinkCode::ParamError, e.to_string()))?;
                let event = model.event(identifier);
                (event.map(|e| e.name.clone()).unwrap_or_default(), event.map_or("info", |e| e.event_type.as_str()))
            }
            None => (String::new(), "info"),
        };
        let (value, time) = events::split_timed_value(params, received);
        let event = EventPost { identifier, name: &name, event_type, value, time };
        Ok(events::event_post(origin(owner), request_id, event, received))
    }

    /// Checks a device's reply to a service call against the service's output data. Results are
    /// recorded by the command service; here a reply that does not conform is logged and counted.
    async fn check_service_reply(&self, session: &DeviceSession, path: &str, payload: &[u8]) {
        let Some(identifier) = path.strip_prefix("thing/service/").and_then(|p| p.strip_suffix("_reply")) else {
            return;
        };
        if identifier.starts_with("property/") {
            return;
        }
        let Ok(Some(model)) = self.model_of(&session.device).await else {
            return;
        };
        let Ok(reply) = serde_json::from_slice::<AlinkReply>(payload) else {
            return;
        };
        if let Err(error) = model.check_service_output(identifier, &reply.data) {
            self.shared.metrics.nonconforming_replies.inc();
            tracing::warn!(device = %session.device, service = identifier, %error, "service reply does not conform to the thing model");
        }
    }

    async fn model_of(&self, device: &DeviceKey) -> Result<Option<std::sync::Arc<tether_model::Tsl>>, Refusal> {
        self.shared.models.get(&device.product_key).await.map_err(|error| {
            tracing::warn!(%device, %error, "thing model unavailable");
            (AlinkCode::ThingModelUnavailable, "thing model unavailable, retry later".to_owned())
        })
    }

    /// Whose data an `identity` object names: this device when absent or its own, else one of
    /// its logged-in sub-devices.
    fn identity(
        &self,
        session: &DeviceSession,
        identity: Option<&Value>,
        field: &str,
    ) -> Result<DeviceSession, Refusal> {
        let Some(identity) = identity.filter(|i| !i.is_null()) else {
            return Ok(session.clone());
        };
        let product_key = identity.get("productKey").and_then(Value::as_str).unwrap_or_default();
        let device_name = identity.get("deviceName").and_then(Value::as_str).unwrap_or_default();
        let Ok(device) = DeviceKey::parse(product_key, device_name) else {
            return Err(param_error(format!("{field}.identity: productKey and deviceName required")));
        };
        if device == session.device {
            return Ok(session.clone());
        }
        match self.acting_session(&Topic::sys(&device, "thing/event/property/post")) {
            Some(owner) => Ok(owner.into_owned()),
            None => Err((
                AlinkCode::DeviceNotFound,
                format!("{field}.identity: {device} is not online through this gateway"),
            )),
        }
    }

    /// Decodes an Alink request, answering a malformed one with its error code.
    fn decode(&self, topic: &Topic, payload: &[u8]) -> Option<AlinkRequest> {
        match AlinkRequest::decode(payload) {
            Ok(request) => Some(request),
            Err(error) => {
                self.reply(topic, &error.id.unwrap_or_default(), Err((error.code, error.message)));
                None
            }
        }
    }

    /// Puts `messages` on the bus, then answers 200; if the bus refuses, answers 6760 and the
    /// publish is not acknowledged.
    async fn publish_then_reply(&self, topic: &Topic, id: &str, messages: Vec<BusMessage>) -> PublishOutcome {
        for message in messages {
            if let Err(error) = self.shared.deps.bus.publish_durable(message).await {
                tracing::error!(device = %self.session.device, %error, "uplink not handed to the bus");
                self.reply(topic, id, Err((AlinkCode::SystemError, AlinkCode::SystemError.message().into())));
                return PublishOutcome::Unavailable;
            }
        }
        self.reply(topic, id, Ok(json!({})));
        PublishOutcome::Accepted
    }

    fn refuse(&self, topic: &Topic, id: &str, refusal: Refusal) -> PublishOutcome {
        tracing::debug!(device = %self.session.device, %topic, code = refusal.0.as_u32(), message = %refusal.1, "request refused");
        self.reply(topic, id, Err(refusal));
        PublishOutcome::Accepted
    }

    /// Answers a request on its `_reply` topic.
    fn reply(&self, topic: &Topic, id: &str, result: Result<Value, Refusal>) {
        let reply = match result {
            Ok(data) => AlinkReply::success(id, data),
            Err((code, message)) => AlinkReply::new(id, code, json!({})).with_message(message),
        };
        self.sink.send(&topic.reply_topic(), reply.with_method(topic.alink_method()).encode());
    }

    /// Answers `/ext/ntp/.../request` on `/response`, echoing `deviceSendTime`.
    fn on_ntp(&self, response_topic: &Topic, payload: &[u8]) {
        let received = now_ms();
        let device_send_time = serde_json::from_slice::<Value>(payload)
            .ok()
            .and_then(|v| v.get("deviceSendTime").cloned())
            .unwrap_or(Value::Null);
        let response = json!({
            "deviceSendTime": device_send_time,
            "serverRecvTime": received.to_string(),
            "serverSendTime": now_ms().to_string(),
        });
        self.sink.send(&response_topic.to_string(), response.to_string().into_bytes());
    }

    /// Tells the device about a publish the platform could not parse (`/ext/error/{pk}/{dn}`).
    fn send_error(&self, code: AlinkCode, message: &str) {
        let device = &self.session.device;
        let topic = Topic::ExtError { device: device.clone() }.to_string();
        let body = json!({ "code": code.as_u32(), "message": message });
        self.sink.send(&topic, body.to_string().into_bytes());
    }
}

fn origin(session: &DeviceSession) -> Origin<'_> {
    Origin { tenant: &session.tenant, device: &session.device, iot_id: &session.iot_id }
}

fn param_error(message: impl Into<String>) -> Refusal {
    (AlinkCode::ParamError, message.into())
}

/// A refusal about a part of a request, with the part's path in front.
fn prefixed(field: &str, (code, message): Refusal) -> Refusal {
    (code, format!("{field}.{message}"))
}

/// How far ahead of the platform's clock a property's `time` may be: a value stamped in the
/// future would hold the latest value until then, since older values never replace newer ones.
pub const MAX_CLOCK_AHEAD_MS: i64 = 10 * 60 * 1000;

/// Refuses `{value, time}` items whose `time` is more than [`MAX_CLOCK_AHEAD_MS`] ahead of `now`.
fn check_times(params: &Map<String, Value>, now: i64) -> Result<(), Refusal> {
    for (identifier, item) in params {
        let (_, time) = events::split_timed_value(item, now);
        if time > now + MAX_CLOCK_AHEAD_MS {
            return Err(param_error(format!(
                "{identifier}.time: {time} is more than 10 minutes ahead of the platform clock"
            )));
        }
    }
    Ok(())
}

/// A list of objects (`[{..}, ..]`); absent or null is an empty list, anything else `None`.
fn list_of_objects(value: Option<&Value>) -> Option<Vec<&Map<String, Value>>> {
    match value {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(Value::as_object).collect(),
        Some(_) => None,
    }
}
