//! What the edge does with a device's PUBLISH: topic grammar, ACL, size limit, then the
//! thing-model request it carries. Replies go back on the request topic + `_reply`, always with
//! `id`, `code`, `data` and `message`; uplinks reach the bus before the publish is acknowledged.

use bytes::Bytes;
use serde_json::{Value, json};
use tether_bus::events::{self, Origin};
use tether_contract::now_ms;
use tether_model::topic::{NtpDirection, SysKind, may_publish};
use tether_model::{AlinkCode, AlinkReply, AlinkRequest, Topic};

use crate::session::Connection;

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
        if !may_publish(device, &self.session.topic_classes, &parsed) {
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
            Topic::Sys { .. } => self.on_sys(&parsed, &payload).await,
            Topic::Ntp { direction: NtpDirection::Request, device } => {
                self.on_ntp(&Topic::Ntp { device: device.clone(), direction: NtpDirection::Response }, &payload);
                PublishOutcome::Accepted
            }
            // Custom topics, sessions, shadows and custom RRPC answers are taken by the services
            // that own them as they arrive; until then they are accepted and not forwarded.
            _ => {
                tracing::debug!(%device, %topic, "publish accepted without a handler");
                PublishOutcome::Accepted
            }
        }
    }

    async fn on_sys(&self, topic: &Topic, payload: &[u8]) -> PublishOutcome {
        match topic.sys_kind() {
            Some(SysKind::PropertyPost) => self.on_property_post(topic, payload).await,
            // Device answers to downlinks and RRPC responses are consumed, never echoed.
            Some(SysKind::Reply(_) | SysKind::RrpcResponse(_)) => PublishOutcome::Accepted,
            _ => {
                let request = AlinkRequest::decode(payload).ok();
                let id = request.map(|r| r.id).unwrap_or_default();
                let reply = AlinkReply::new(id, AlinkCode::RequestError, json!({}))
                    .with_method(topic.alink_method())
                    .with_message("request not supported by this platform");
                self.sink.send(&topic.reply_topic(), reply.encode());
                PublishOutcome::Accepted
            }
        }
    }

    async fn on_property_post(&self, topic: &Topic, payload: &[u8]) -> PublishOutcome {
        let reply_topic = topic.reply_topic();
        let method = topic.alink_method();
        let request = match AlinkRequest::decode(payload) {
            Ok(request) => request,
            Err(error) => {
                let reply = AlinkReply::new(error.id.unwrap_or_default(), error.code, json!({}))
                    .with_method(method)
                    .with_message(error.message);
                self.sink.send(&reply_topic, reply.encode());
                return PublishOutcome::Accepted;
            }
        };
        let params = match request.property_params() {
            Ok(params) => params,
            Err((code, message)) => {
                let reply = AlinkReply::new(&request.id, code, json!({})).with_method(method).with_message(message);
                self.sink.send(&reply_topic, reply.encode());
                return PublishOutcome::Accepted;
            }
        };
        let origin =
            Origin { tenant: &self.session.tenant, device: &self.session.device, iot_id: &self.session.iot_id };
        let message = events::property_post(origin, &request.id, params, now_ms());
        if let Err(error) = self.shared.deps.bus.publish_durable(message).await {
            tracing::error!(device = %self.session.device, %error, "property post not handed to the bus");
            let reply = AlinkReply::new(&request.id, AlinkCode::SystemError, json!({})).with_method(method);
            self.sink.send(&reply_topic, reply.encode());
            return PublishOutcome::Unavailable;
        }
        self.sink.send(&reply_topic, AlinkReply::success(&request.id, json!({})).with_method(method).encode());
        PublishOutcome::Accepted
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
