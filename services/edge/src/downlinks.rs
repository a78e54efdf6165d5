//! Messages to devices (docs/commands.md, the edge's half): downlinks for one device and
//! broadcasts to a product's devices, delivered on each connection's own worker, and the
//! commands a connection follows — `(device, messageId) → correlation` until the deadline — whose
//! PUBACK and answer it reports: durable `downlink` events for the command service's records,
//! and the answer itself to the synchronous caller's `reply_to`.
//!
//! Custom topics (`/{pk}/{dn}/user/..`), custom RRPC topics (`/ext/rrpc/..`) and product
//! broadcast topics (`/broadcast/{pk}/..`) reach a connection only through an explicit SUBSCRIBE
//! (a gateway's covers its sub-devices); the device's system topics are implicitly subscribed.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::rc::Rc;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use serde_json::Value;
use tether_bus::downlink::{Answer, Broadcast, CallAnswer, Correlation, Downlink};
use tether_bus::events::{self, DownlinkReply, Origin};
use tether_bus::{Bus, Subscription};
use tether_contract::{DeviceSession, now_ms};
use tether_model::topic::SubscribeFilter;
use tether_model::{DeviceKey, Topic};

use crate::EdgeShared;
use crate::connections::ConnCommand;
use crate::session::{Connection, Sink};
use crate::uplink::PublishOutcome;

/// How many calls one connection follows at once; beyond, the oldest is forgotten (its answer
/// then goes unanswered, as a late one does).
pub const MAX_CALLS_PER_CONNECTION: usize = 1024;

/// The downlink side of one connection, shared by its command runner and its PUBLISH handler on
/// the connection's worker. It holds the edge weakly: a connection's runner must not keep a
/// stopping edge alive.
pub struct ConnDownlinks {
    edge: Weak<EdgeShared>,
    bus: Arc<dyn Bus>,
    /// The connection's own device.
    session: DeviceSession,
    conn_id: u64,
    sink: Sink,
    /// Explicit SUBSCRIBEs, shared with the connection's state.
    subscriptions: Rc<RefCell<Vec<SubscribeFilter>>>,
    calls: RefCell<Calls>,
}

/// How a device's publish answers a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered<'a> {
    /// An Alink reply on `command_topic` + `_reply`.
    Alink { command_topic: &'a str },
    /// A publish on `rrpc/response/{messageId}` or `/ext/rrpc/{messageId}/..`.
    Rrpc,
}

/// The synchronous calls a connection follows, by device and message id, and the order they
/// were made in (to drop the oldest).
#[derive(Default)]
struct Calls {
    by_key: HashMap<CallKey, Call>,
    /// Keys as they were remembered, with the stamp of their entry: a key whose entry was taken
    /// or replaced since is stale and skipped.
    order: VecDeque<(CallKey, u64)>,
    next_stamp: u64,
}

type CallKey = (DeviceKey, String);

struct Call {
    reply_to: String,
    expect: Answer,
    /// The command's topic: an Alink answer comes on it + `_reply`.
    topic: String,
    /// Epoch ms.
    deadline: i64,
    stamp: u64,
}

/// The fields of a device's Alink reply the platform reads; ids and codes are taken as strings or
/// numbers, whichever the device sent.
struct ReplyFields {
    id: String,
    code: i64,
    message: String,
    data: Value,
}

/// What a PUBACK of a followed command is reported with.
struct DeliveryReport {
    bus: Arc<dyn Bus>,
    owner: DeviceSession,
    message_id: String,
}

// === impl ConnDownlinks ===

impl ConnDownlinks {
    pub fn new(
        edge: &Arc<EdgeShared>,
        session: DeviceSession,
        conn_id: u64,
        sink: Sink,
        subscriptions: Rc<RefCell<Vec<SubscribeFilter>>>,
    ) -> Self {
        Self {
            edge: Arc::downgrade(edge),
            bus: edge.deps.bus.clone(),
            session,
            conn_id,
            sink,
            subscriptions,
            calls: RefCell::default(),
        }
    }

    /// Sends a downlink to the device (or the sub-device it names, through this gateway
    /// connection) if its topic is subscribed, and follows its correlation. A QoS 1 message is
    /// sent at once, in order; a followed command's PUBACK is reported as a `delivered` event,
    /// and waiting for it never holds back what comes next.
    pub fn deliver(&self, downlink: Downlink) {
        let Downlink { device, topic, payload, qos, correlation } = downlink;
        let Some(owner) = self.owner(&device) else {
            tracing::debug!(%device, %topic, "downlink for a device no longer on this connection dropped");
            return;
        };
        if needs_subscription(&topic) && !self.subscriptions.borrow().iter().any(|f| f.matches(&topic)) {
            tracing::debug!(%device, %topic, "downlink to a topic the device did not subscribe dropped");
            return;
        }
        if let Some(correlation) = &correlation {
            self.calls.borrow_mut().remember(&device, &topic, correlation, now_ms());
        }
        if qos == 0 {
            self.sink.send(&topic, payload.to_vec());
            return;
        }
        let report = correlation.map(|c| DeliveryReport {
            bus: self.bus.clone(),
            owner: owner.into_owned(),
            message_id: c.message_id,
        });
        let acked = self.sink.send_at_least_once(&topic, payload.to_vec());
        ntex_rt::spawn(async move {
            if acked.await
                && let Some(report) = report
            {
                report.publish(&topic).await;
            }
        });
    }

    /// Whether any call is followed: a publish that is not an answer to one skips the lookup.
    pub fn follows_calls(&self) -> bool {
        !self.calls.borrow().is_empty()
    }

    /// Takes the live call `(device, message_id)` a publish answers; where its answer goes.
    pub fn take_call(&self, device: &DeviceKey, message_id: &str, answered: Answered<'_>) -> Option<String> {
        self.calls.borrow_mut().take(device, message_id, answered, now_ms())
    }

    /// The session `device` is on this connection as: the connection's own, or a sub-device
    /// logged in through it.
    fn owner(&self, device: &DeviceKey) -> Option<Cow<'_, DeviceSession>> {
        if device == &self.session.device {
            return Some(Cow::Borrowed(&self.session));
        }
        self.edge.upgrade()?.connections.sub_device(device, self.conn_id).map(Cow::Owned)
    }
}

// === impl Calls ===

impl Calls {
    fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Follows a call until its deadline; only one with a `reply_to` has an answer to hand on
    /// (the durable events need no correlation).
    fn remember(&mut self, device: &DeviceKey, topic: &str, correlation: &Correlation, now: i64) {
        let Some(reply_to) = &correlation.reply_to else {
            return;
        };
        if correlation.deadline <= now {
            return;
        }
        self.prune(now);
        if self.by_key.len() >= MAX_CALLS_PER_CONNECTION {
            self.by_key.retain(|_, call| call.deadline > now);
        }
        while self.by_key.len() >= MAX_CALLS_PER_CONNECTION {
            let Some((key, stamp)) = self.order.pop_front() else {
                break;
            };
            if self.by_key.get(&key).is_some_and(|call| call.stamp == stamp) {
                tracing::debug!(device = %key.0, message_id = %key.1, "oldest followed call forgotten");
                self.by_key.remove(&key);
            }
        }
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        let key = (device.clone(), correlation.message_id.clone());
        let call = Call {
            reply_to: reply_to.clone(),
            expect: correlation.expect,
            topic: topic.to_owned(),
            deadline: correlation.deadline,
            stamp,
        };
        self.by_key.insert(key.clone(), call);
        self.order.push_back((key, stamp));
    }

    /// Takes the call a publish answers; `None` (and the call stays) when the publish is not the
    /// kind of answer it expects, `None` (and the call is gone) when its deadline has passed.
    fn take(&mut self, device: &DeviceKey, message_id: &str, answered: Answered<'_>, now: i64) -> Option<String> {
        let key = (device.clone(), message_id.to_owned());
        let call = self.by_key.get(&key)?;
        let expected = match (call.expect, answered) {
            (Answer::Rrpc, Answered::Rrpc) => true,
            (Answer::Alink, Answered::Alink { command_topic }) => call.topic == command_topic,
            _ => false,
        };
        if !expected {
            return None;
        }
        let call = self.by_key.remove(&key)?;
        (call.deadline > now).then_some(call.reply_to)
    }

    /// Forgets expired calls at the front of the order, and the stale keys there; compacts the
    /// order when calls answered out of order have left it mostly stale.
    fn prune(&mut self, now: i64) {
        while let Some((key, stamp)) = self.order.front() {
            match self.by_key.get(key) {
                Some(call) if call.stamp == *stamp && call.deadline > now => break,
                Some(call) if call.stamp == *stamp => {
                    self.by_key.remove(key);
                }
                _ => {}
            }
            self.order.pop_front();
        }
        if self.order.len() > 2 * MAX_CALLS_PER_CONNECTION {
            let by_key = &self.by_key;
            self.order.retain(|(key, stamp)| by_key.get(key).is_some_and(|call| call.stamp == *stamp));
        }
    }
}

// === impl DeliveryReport ===

impl DeliveryReport {
    /// Publishes the `delivered` event of the command sent on `topic`.
    async fn publish(self, topic: &str) {
        let owner = &self.owner;
        let origin = Origin { tenant: &owner.tenant, device: &owner.device, iot_id: &owner.iot_id };
        let message = events::downlink_delivered(origin, &self.message_id, topic, now_ms());
        if let Err(error) = self.bus.publish_durable(message).await {
            tracing::warn!(device = %owner.device, message_id = %self.message_id, %error, "delivered event not published");
        }
    }
}

// === impl ReplyFields ===

impl ReplyFields {
    fn parse(payload: &[u8]) -> Option<Self> {
        let Value::Object(mut reply) = serde_json::from_slice(payload).ok()? else {
            return None;
        };
        let id = match reply.get("id")? {
            Value::String(id) => id.clone(),
            Value::Number(id) => id.to_string(),
            _ => return None,
        };
        let code = match reply.get("code")? {
            Value::Number(code) => code.as_i64()?,
            Value::String(code) => code.parse().ok()?,
            _ => return None,
        };
        let message = reply.get("message").and_then(Value::as_str).unwrap_or_default().to_owned();
        let data = reply.remove("data").unwrap_or_else(|| Value::Object(Default::default()));
        Some(Self { id, code, message, data })
    }
}

// === impl Connection ===

impl Connection {
    /// A device's `_reply` to a downlink on `topic`: handed to a live call's `reply_to`, and, for
    /// a command (`thing/service/..`), always a durable `reply` event in Aliyun's
    /// `thing/downlink/reply/message` shape.
    pub async fn on_downlink_reply(
        &self,
        session: &DeviceSession,
        topic: &Topic,
        path: &str,
        payload: &Bytes,
    ) -> PublishOutcome {
        let command = path.starts_with("thing/service/");
        if !command && !self.downlinks.follows_calls() {
            return PublishOutcome::Accepted;
        }
        let Some(reply) = ReplyFields::parse(payload) else {
            tracing::debug!(device = %session.device, %topic, "unreadable reply to a downlink dropped");
            return PublishOutcome::Accepted;
        };
        let reply_topic = topic.to_string();
        let command_topic = reply_topic.strip_suffix("_reply").unwrap_or(&reply_topic);
        let answered = Answered::Alink { command_topic };
        if let Some(reply_to) = self.downlinks.take_call(&session.device, &reply.id, answered) {
            self.hand_on(&reply_to, &session.device, &reply.id, payload).await;
        }
        if !command {
            return PublishOutcome::Accepted;
        }
        let origin = Origin { tenant: &session.tenant, device: &session.device, iot_id: &session.iot_id };
        let fields = DownlinkReply {
            request_id: &reply.id,
            code: reply.code,
            message: &reply.message,
            topic: command_topic,
            data: &reply.data,
        };
        let message = events::downlink_reply(origin, fields, now_ms());
        if let Err(error) = self.shared.deps.bus.publish_durable(message).await {
            tracing::error!(device = %session.device, message_id = %reply.id, %error, "downlink reply not handed to the bus");
            return PublishOutcome::Unavailable;
        }
        PublishOutcome::Accepted
    }

    /// A device's RRPC answer (`rrpc/response/{id}`, `/ext/rrpc/{id}/..`): handed to the live
    /// call's `reply_to`; consumed either way, never sent back to the device.
    pub async fn on_rrpc_answer(&self, device: &DeviceKey, message_id: &str, payload: &Bytes) -> PublishOutcome {
        let reply_to = match self.downlinks.follows_calls() {
            true => self.downlinks.take_call(device, message_id, Answered::Rrpc),
            false => None,
        };
        match reply_to {
            Some(reply_to) => self.hand_on(&reply_to, device, message_id, payload).await,
            None => tracing::debug!(%device, %message_id, "rrpc answer without a live call dropped"),
        }
        PublishOutcome::Accepted
    }

    /// Sends a device's answer to the caller waiting on `reply_to` (core: a caller that has gone
    /// has timed out anyway).
    async fn hand_on(&self, reply_to: &str, device: &DeviceKey, message_id: &str, payload: &Bytes) {
        let answer = CallAnswer { message_id: message_id.to_owned(), device: device.clone(), payload: payload.clone() };
        if let Err(error) = self.shared.deps.bus.publish(answer.to_message(reply_to)).await {
            tracing::warn!(%device, %message_id, %error, "call answer not handed on");
        }
    }
}

/// Whether a downlink topic reaches a device only through an explicit SUBSCRIBE.
fn needs_subscription(topic: &str) -> bool {
    if topic.starts_with("/sys/") {
        return false;
    }
    matches!(Topic::parse(topic), Ok(Topic::Custom { .. } | Topic::ExtRrpc { .. } | Topic::Broadcast { .. }))
}

/// Delivers the messages other services send to devices connected here: downlinks for one
/// device, and broadcasts to every session of a product.
pub async fn deliver_downlinks(shared: Arc<EdgeShared>, mut downlinks: Subscription, mut broadcasts: Subscription) {
    loop {
        tokio::select! {
            Some(message) = downlinks.next() => deliver_one(&shared, message),
            Some(message) = broadcasts.next() => fan_out(&shared, message),
            else => return,
        }
    }
}

fn deliver_one(shared: &EdgeShared, message: tether_bus::BusMessage) {
    let subject = message.subject.clone();
    let Some(downlink) = Downlink::from_message(message) else {
        tracing::warn!(%subject, "unreadable downlink skipped");
        return;
    };
    let (device, topic) = (downlink.device.clone(), downlink.topic.clone());
    if !shared.connections.deliver(downlink) {
        tracing::debug!(%device, %topic, "downlink for a device not connected here dropped");
    }
}

/// Fans a broadcast out to this edge's sessions of its product: without a topic to each session
/// on its own `broadcast/request/{messageId}`; with one, once to each connection holding a
/// session of the product (the topic is the product's, a gateway subscribes it once).
fn fan_out(shared: &EdgeShared, message: tether_bus::BusMessage) {
    let Some(broadcast) = Broadcast::from_message(message) else {
        tracing::warn!("unreadable broadcast skipped");
        return;
    };
    let Broadcast { product_key, message_id, topic, payload } = broadcast;
    if message_id.is_empty() || message_id.contains(['/', '+', '#']) {
        tracing::warn!(product = %product_key, %message_id, "broadcast with an unusable message id skipped");
        return;
    }
    if let Some(topic) = &topic
        && !matches!(Topic::parse(topic), Ok(Topic::Broadcast { product_key: ref pk, .. }) if pk == &product_key)
    {
        tracing::warn!(product = %product_key, %topic, "broadcast on a topic outside the product skipped");
        return;
    }
    let mut connections = HashSet::new();
    let mut sent = 0_usize;
    for (device, conn_id, commands) in shared.connections.sessions_of_product(&product_key) {
        let topic = match &topic {
            Some(topic) if connections.insert(conn_id) => topic.clone(),
            Some(_) => continue,
            None => Topic::sys(&device, format!("broadcast/request/{message_id}")).to_string(),
        };
        let downlink = Downlink { device, topic, payload: payload.clone(), qos: 0, correlation: None };
        if commands.send(ConnCommand::Deliver(Box::new(downlink))).is_ok() {
            sent += 1;
        }
    }
    tracing::debug!(product = %product_key, %message_id, sessions = sent, "broadcast fanned out");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(name: &str) -> DeviceKey {
        DeviceKey::parse("pk", name).unwrap()
    }

    fn call(id: &str, expect: Answer, deadline: i64) -> Correlation {
        Correlation { message_id: id.into(), expect, reply_to: Some(format!("reply.{id}")), deadline }
    }

    const RRPC_TOPIC: &str = "/sys/pk/a/rrpc/request/1";
    const SET_TOPIC: &str = "/sys/pk/a/thing/service/property/set";

    #[test]
    fn an_answer_is_matched_by_device_and_message_id_once() {
        let mut calls = Calls::default();
        calls.remember(&device("a"), RRPC_TOPIC, &call("1", Answer::Rrpc, 100), 0);
        calls.remember(&device("b"), RRPC_TOPIC, &call("1", Answer::Rrpc, 100), 0);
        assert_eq!(calls.take(&device("c"), "1", Answered::Rrpc, 1), None);
        assert_eq!(calls.take(&device("b"), "1", Answered::Rrpc, 1).as_deref(), Some("reply.1"));
        assert_eq!(calls.take(&device("b"), "1", Answered::Rrpc, 1), None, "a second answer is not handed on");
        assert_eq!(calls.take(&device("a"), "1", Answered::Rrpc, 1).as_deref(), Some("reply.1"));
        assert!(calls.is_empty());
    }

    #[test]
    fn an_answer_must_be_of_the_expected_kind() {
        let mut calls = Calls::default();
        calls.remember(&device("a"), SET_TOPIC, &call("1", Answer::Alink, 100), 0);
        assert_eq!(calls.take(&device("a"), "1", Answered::Rrpc, 1), None);
        let other = Answered::Alink { command_topic: "/sys/pk/a/thing/service/other" };
        assert_eq!(calls.take(&device("a"), "1", other, 1), None);
        let own = Answered::Alink { command_topic: SET_TOPIC };
        assert_eq!(calls.take(&device("a"), "1", own, 1).as_deref(), Some("reply.1"));
    }

    #[test]
    fn late_answers_and_calls_without_reply_to_are_not_followed() {
        let mut calls = Calls::default();
        calls.remember(&device("a"), RRPC_TOPIC, &call("1", Answer::Rrpc, 100), 0);
        assert_eq!(calls.take(&device("a"), "1", Answered::Rrpc, 100), None);
        assert!(calls.is_empty(), "the expired call is gone");
        calls.remember(&device("a"), RRPC_TOPIC, &call("2", Answer::Rrpc, 100), 100);
        let async_command = Correlation { reply_to: None, ..call("3", Answer::Alink, 1000) };
        calls.remember(&device("a"), SET_TOPIC, &async_command, 0);
        assert!(calls.is_empty());
    }

    #[test]
    fn calls_are_bounded_and_expired_ones_pruned() {
        let mut calls = Calls::default();
        for i in 0..MAX_CALLS_PER_CONNECTION + 10 {
            calls.remember(&device("a"), RRPC_TOPIC, &call(&i.to_string(), Answer::Rrpc, 1000), 0);
        }
        assert_eq!(calls.by_key.len(), MAX_CALLS_PER_CONNECTION);
        assert_eq!(calls.take(&device("a"), "9", Answered::Rrpc, 1), None, "the oldest are forgotten");
        assert!(calls.take(&device("a"), "10", Answered::Rrpc, 1).is_some());
        // Once they expire, the next call finds them gone.
        calls.remember(&device("a"), RRPC_TOPIC, &call("new", Answer::Rrpc, 5000), 1000);
        assert_eq!(calls.by_key.len(), 1);
        assert!(calls.order.len() <= 2 * MAX_CALLS_PER_CONNECTION);
    }

    #[test]
    fn answered_out_of_order_calls_leave_the_order_bounded() {
        let mut calls = Calls::default();
        calls.remember(&device("a"), RRPC_TOPIC, &call("first", Answer::Rrpc, 1_000_000), 0);
        for i in 0..5 * MAX_CALLS_PER_CONNECTION {
            let id = i.to_string();
            calls.remember(&device("a"), RRPC_TOPIC, &call(&id, Answer::Rrpc, 1_000_000), 0);
            assert!(calls.take(&device("a"), &id, Answered::Rrpc, 1).is_some());
        }
        assert!(calls.order.len() <= 2 * MAX_CALLS_PER_CONNECTION + 1);
        assert!(calls.take(&device("a"), "first", Answered::Rrpc, 1).is_some());
    }

    #[test]
    fn replies_are_read_with_string_or_number_ids_and_codes() {
        let reply = ReplyFields::parse(br#"{"id":"7","code":200,"data":{"a":1},"message":"success"}"#).unwrap();
        assert_eq!((reply.id.as_str(), reply.code, reply.message.as_str()), ("7", 200, "success"));
        assert_eq!(reply.data, serde_json::json!({"a": 1}));
        let reply = ReplyFields::parse(br#"{"id":7,"code":"460"}"#).unwrap();
        assert_eq!((reply.id.as_str(), reply.code, reply.data), ("7", 460, serde_json::json!({})));
        assert!(ReplyFields::parse(b"not json").is_none());
        assert!(ReplyFields::parse(br#"{"code":200}"#).is_none());
    }

    #[test]
    fn custom_rrpc_and_broadcast_topics_need_a_subscription() {
        assert!(needs_subscription("/pk/dn/user/get"));
        assert!(needs_subscription("/broadcast/pk/news"));
        assert!(needs_subscription("/ext/rrpc/1/pk/dn/user/get"));
        assert!(!needs_subscription("/sys/pk/dn/thing/service/property/set"));
        assert!(!needs_subscription("/shadow/get/pk/dn"));
        assert!(!needs_subscription("/ota/device/upgrade/pk/dn"));
    }
}
