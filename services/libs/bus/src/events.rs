//! The bus bodies of device events, in Aliyun's forwarded shapes (PROTOCOL.md B.4), so rules,
//! history and server-side subscriptions read what Aliyun users already parse.

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::{Map, Value, json};
use tether_model::{DeviceKey, TenantId};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

use crate::BusMessage;
use crate::subject::{self, UplinkKind};

/// The header keys Aliyun's server-side subscription puts beside the body.
pub mod header {
    pub const TOPIC: &str = "topic";
    pub const MESSAGE_ID: &str = "messageId";
    pub const GENERATE_TIME: &str = "generateTime";
    /// What a `downlink` event reports: [`super::DOWNLINK_DELIVERED`] or [`super::DOWNLINK_REPLY`].
    pub const EVENT: &str = "event";
}

/// The `event` header of a `downlink` event for a device's PUBACK of a command.
pub const DOWNLINK_DELIVERED: &str = "delivered";

/// The `event` header of a `downlink` event for a device's Alink reply to a command.
pub const DOWNLINK_REPLY: &str = "reply";

/// Who an event is about.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub tenant: &'a TenantId,
    pub device: &'a DeviceKey,
    pub iot_id: &'a str,
}

/// A property post: `items` are `{id: {value, time}}`; plain values get `received_at` as time.
/// The hottest event there is: serialised straight from the post's params, with no JSON tree
/// built in between.
pub fn property_post(
    origin: Origin<'_>,
    request_id: &str,
    params: &Map<String, Value>,
    received_at: i64,
) -> BusMessage {
    let body = PropertyPostBody {
        check_failed_data: EmptyObject,
        device_name: origin.device.device_name.as_str(),
        device_type: "CustomCategory",
        gmt_create: received_at,
        iot_id: origin.iot_id,
        items: Items { params, received_at },
        product_key: origin.device.product_key.as_str(),
        request_id,
    };
    let body = serde_json::to_string(&body).unwrap_or_default();
    let topic = format!("/{}/{}/thing/event/property/post", origin.device.product_key, origin.device.device_name);
    with_body(subject::uplink(origin.tenant, origin.device, UplinkKind::Property), body, topic, received_at)
}

/// [`property_post`]'s body; fields in the order `json!` would give them (sorted).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PropertyPostBody<'a> {
    check_failed_data: EmptyObject,
    device_name: &'a str,
    device_type: &'static str,
    gmt_create: i64,
    iot_id: &'a str,
    items: Items<'a>,
    product_key: &'a str,
    request_id: &'a str,
}

struct EmptyObject;

impl Serialize for EmptyObject {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_map(Some(0))?.end()
    }
}

/// `{id: {time, value}}` from a post's params, without copying the values.
struct Items<'a> {
    params: &'a Map<String, Value>,
    received_at: i64,
}

impl Serialize for Items<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.params.len()))?;
        for (id, raw) in self.params {
            let (value, time) = timed_value(raw, self.received_at);
            map.serialize_entry(id, &TimedValue { time, value })?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct TimedValue<'a> {
    time: i64,
    value: &'a Value,
}

/// An event post (`thing/event/{identifier}/post`): `value` holds the event's output data;
/// `name` and `event_type` come from the thing model (empty and `info` without one).
pub struct EventPost<'a> {
    pub identifier: &'a str,
    pub name: &'a str,
    pub event_type: &'a str,
    pub value: Value,
    /// The device's `time`, else when it arrived.
    pub time: i64,
}

/// An event post in Aliyun's forwarded shape.
pub fn event_post(origin: Origin<'_>, request_id: &str, event: EventPost<'_>, received_at: i64) -> BusMessage {
    let body = json!({
        "identifier": event.identifier,
        "name": event.name,
        "type": event.event_type,
        "iotId": origin.iot_id,
        "requestId": request_id,
        "productKey": origin.device.product_key,
        "deviceName": origin.device.device_name,
        "gmtCreate": received_at,
        "value": event.value,
        "time": event.time,
    });
    let topic =
        format!("/{}/{}/thing/event/{}/post", origin.device.product_key, origin.device.device_name, event.identifier);
    with_headers(subject::uplink(origin.tenant, origin.device, UplinkKind::Event), body, topic, received_at)
}

/// A tag change (`thing/deviceinfo/update|delete`): `operation` is `UPDATE` or `DELETE`, `items`
/// the `{attrKey, attrValue}` pairs (keys only for a delete).
pub fn tags(origin: Origin<'_>, operation: &str, items: Value, at: i64) -> BusMessage {
    let body = json!({
        "iotId": origin.iot_id,
        "productKey": origin.device.product_key,
        "deviceName": origin.device.device_name,
        "operation": operation,
        "items": items,
        "gmtCreate": at,
    });
    let topic = format!("/{}/{}/thing/deviceinfo/update", origin.device.product_key, origin.device.device_name);
    with_headers(subject::uplink(origin.tenant, origin.device, UplinkKind::Tags), body, topic, at)
}

/// An online/offline transition (`/as/mqtt/status/{pk}/{dn}`); `last_time` orders flaps.
pub fn status(origin: Origin<'_>, online: bool, at: i64, client_ip: &str) -> BusMessage {
    let body = json!({
        "status": if online { "online" } else { "offline" },
        "iotId": origin.iot_id,
        "productKey": origin.device.product_key,
        "deviceName": origin.device.device_name,
        "time": local_time(at),
        "utcTime": utc_time(at),
        "lastTime": local_time(at),
        "utcLastTime": utc_time(at),
        "clientIp": client_ip,
    });
    let topic = format!("/as/mqtt/status/{}/{}", origin.device.product_key, origin.device.device_name);
    with_headers(subject::uplink(origin.tenant, origin.device, UplinkKind::Status), body, topic, at)
}

/// What happened to a gateway's topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopoAction {
    Add,
    Remove,
}

impl TopoAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "add",
            Self::Remove => "remove",
        }
    }
}

/// Sub-devices attached to or detached from a gateway (`/{pk}/{dn}/thing/topo/lifecycle`, about
/// the gateway); `devices` are the sub-devices with their iot ids.
pub fn topo_lifecycle<'a>(
    gateway: Origin<'_>,
    action: TopoAction,
    devices: impl IntoIterator<Item = (&'a DeviceKey, &'a str)>,
    at: i64,
) -> BusMessage {
    let devices: Vec<Value> = devices
        .into_iter()
        .map(|(device, iot_id)| {
            json!({ "iotId": iot_id, "productKey": device.product_key, "deviceName": device.device_name })
        })
        .collect();
    let body = json!({
        "action": action.as_str(),
        "gwIotId": gateway.iot_id,
        "gwProductKey": gateway.device.product_key,
        "gwDeviceName": gateway.device.device_name,
        "devices": devices,
        "messageCreateTime": at,
    });
    let topic = format!("/{}/{}/thing/topo/lifecycle", gateway.device.product_key, gateway.device.device_name);
    with_headers(subject::uplink(gateway.tenant, gateway.device, UplinkKind::Topo), body, topic, at)
}

/// A device acknowledged (QoS 1 PUBACK) the command `message_id` sent on `topic`: a `downlink`
/// event `{messageId, iotId, productKey, deviceName, status: "DELIVERED", time}`.
pub fn downlink_delivered(origin: Origin<'_>, message_id: &str, topic: &str, at: i64) -> BusMessage {
    let body = json!({
        "messageId": message_id,
        "iotId": origin.iot_id,
        "productKey": origin.device.product_key,
        "deviceName": origin.device.device_name,
        "status": "DELIVERED",
        "time": at,
    });
    with_headers(subject::uplink(origin.tenant, origin.device, UplinkKind::Downlink), body, topic.to_owned(), at)
        .with_header(header::EVENT, DOWNLINK_DELIVERED)
}

/// A device's Alink reply to a command, as it answered.
#[derive(Debug, Clone, Copy)]
pub struct DownlinkReply<'a> {
    /// The reply's `id`: the command's message id.
    pub request_id: &'a str,
    pub code: i64,
    pub message: &'a str,
    /// The command's topic (the reply's topic without `_reply`).
    pub topic: &'a str,
    pub data: &'a Value,
}

/// A device's reply to a command in Aliyun's `thing/downlink/reply/message` shape: a `downlink`
/// event `{gmtCreate, iotId, productKey, deviceName, requestId, code, message, topic, data}`.
pub fn downlink_reply(origin: Origin<'_>, reply: DownlinkReply<'_>, at: i64) -> BusMessage {
    let body = json!({
        "gmtCreate": at,
        "iotId": origin.iot_id,
        "productKey": origin.device.product_key,
        "deviceName": origin.device.device_name,
        "requestId": reply.request_id,
        "code": reply.code,
        "message": reply.message,
        "topic": reply.topic,
        "data": reply.data,
    });
    let topic = format!("/{}/{}/thing/downlink/reply/message", origin.device.product_key, origin.device.device_name);
    with_headers(subject::uplink(origin.tenant, origin.device, UplinkKind::Downlink), body, topic, at)
        .with_header(header::EVENT, DOWNLINK_REPLY)
}

/// A property value as `(value, time)`: `{value, time}` objects are unwrapped.
pub fn split_timed_value(raw: &Value, default_time: i64) -> (Value, i64) {
    let (value, time) = timed_value(raw, default_time);
    (value.clone(), time)
}

fn timed_value(raw: &Value, default_time: i64) -> (&Value, i64) {
    if let Value::Object(obj) = raw
        && let Some(value) = obj.get("value")
        && obj.keys().all(|k| k == "value" || k == "time")
    {
        return (value, obj.get("time").and_then(Value::as_i64).unwrap_or(default_time));
    }
    (raw, default_time)
}

/// Every event gets its own `messageId` (as Aliyun's forwarding does): request ids repeat across
/// devices and reconnects, so they cannot identify a message.
fn with_headers(subject: String, body: Value, topic: String, at: i64) -> BusMessage {
    with_body(subject, body.to_string(), topic, at)
}

fn with_body(subject: String, body: String, topic: String, at: i64) -> BusMessage {
    BusMessage::new(subject, body)
        .with_header(header::TOPIC, topic)
        .with_header(header::MESSAGE_ID, format!("{:016x}{:016x}", rand::random::<u64>(), rand::random::<u64>()))
        .with_header(header::GENERATE_TIME, at.to_string())
}

fn datetime(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// `yyyy-MM-dd HH:mm:ss.SSS`, in UTC.
fn local_time(ms: i64) -> String {
    let format = format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3]");
    datetime(ms).format(&format).unwrap_or_default()
}

fn utc_time(ms: i64) -> String {
    datetime(ms).format(&Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn property_post_items_carry_value_and_time() {
        let device = DeviceKey::parse("pk", "dn").unwrap();
        let tenant = TenantId::new("t").unwrap();
        let params = json!({"Power": "on", "Temp": {"value": 21.5, "time": 5}});
        let msg = property_post(
            Origin { tenant: &tenant, device: &device, iot_id: "iot1" },
            "9",
            params.as_object().unwrap(),
            100,
        );
        let body: Value = serde_json::from_slice(&msg.payload).unwrap();
        assert_eq!(body["items"]["Power"], json!({"value": "on", "time": 100}));
        assert_eq!(body["items"]["Temp"], json!({"value": 21.5, "time": 5}));
        assert_eq!(msg.headers[header::TOPIC], "/pk/dn/thing/event/property/post");
        assert_eq!(msg.subject, "tether.up.t.pk.dn.property");
    }

    #[test]
    fn status_times_are_formatted() {
        let device = DeviceKey::parse("pk", "dn").unwrap();
        let tenant = TenantId::new("t").unwrap();
        let msg = status(Origin { tenant: &tenant, device: &device, iot_id: "i" }, true, 1_510_799_670_074, "10.0.0.1");
        let body: Value = serde_json::from_slice(&msg.payload).unwrap();
        assert_eq!(body["time"], "2017-11-16 02:34:30.074");
        assert_eq!(body["utcTime"], "2017-11-16T02:34:30.074Z");
        assert_eq!(body["status"], "online");
    }

    #[test]
    fn downlink_events_carry_their_kind_and_aliyun_shape() {
        let device = DeviceKey::parse("pk", "dn").unwrap();
        let tenant = TenantId::new("t").unwrap();
        let origin = Origin { tenant: &tenant, device: &device, iot_id: "i" };
        let delivered = downlink_delivered(origin, "7", "/sys/pk/dn/thing/service/property/set", 5);
        assert_eq!(delivered.subject, "tether.up.t.pk.dn.downlink");
        assert_eq!(delivered.headers[header::EVENT], DOWNLINK_DELIVERED);
        let body: Value = serde_json::from_slice(&delivered.payload).unwrap();
        assert_eq!(
            body,
            json!({"messageId": "7", "iotId": "i", "productKey": "pk", "deviceName": "dn", "status": "DELIVERED", "time": 5})
        );

        let data = json!({"Power": 1});
        let topic = "/sys/pk/dn/thing/service/property/set";
        let reply = DownlinkReply { request_id: "7", code: 200, message: "success", topic, data: &data };
        let reply = downlink_reply(origin, reply, 6);
        assert_eq!(reply.headers[header::EVENT], DOWNLINK_REPLY);
        assert_eq!(reply.headers[header::TOPIC], "/pk/dn/thing/downlink/reply/message");
        let body: Value = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(body["requestId"], "7");
        assert_eq!((&body["code"], &body["topic"], &body["data"]), (&json!(200), &json!(topic), &data));
        // Each event has its own id: a consumer skipping acked ids must see both.
        assert_ne!(delivered.headers[header::MESSAGE_ID], reply.headers[header::MESSAGE_ID]);
    }
}
