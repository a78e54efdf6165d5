//! Messages for devices, sent to the edge node that holds their session
//! (`tether.edge.<node>.down`) or to every edge (`tether.edge.all.bcast`), and the answers edges
//! hand back to synchronous callers (`reply_to`); all core messages. The device, topic and ids
//! ride in headers, the payload is the MQTT payload as is (docs/commands.md).

use bytes::Bytes;
use tether_model::{DeviceKey, ProductKey};

use crate::{BusMessage, subject};

mod header {
    pub const PRODUCT_KEY: &str = "productKey";
    pub const DEVICE_NAME: &str = "deviceName";
    pub const TOPIC: &str = "topic";
    pub const QOS: &str = "qos";
    pub const MESSAGE_ID: &str = "messageId";
    pub const EXPECT: &str = "expect";
    pub const REPLY_TO: &str = "replyTo";
    pub const DEADLINE: &str = "deadline";
}

/// One message to deliver to a connected device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downlink {
    pub device: DeviceKey,
    pub topic: String,
    pub payload: Bytes,
    /// 0 or 1.
    pub qos: u8,
    /// Set for commands whose outcome the platform follows (docs/commands.md).
    pub correlation: Option<Correlation>,
}

/// How the edge follows a command it delivers: it reports the PUBACK (QoS 1) and the device's
/// answer as `downlink` events on the stream, and hands the answer to `reply_to` (a core
/// subject) for synchronous calls until `deadline`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Correlation {
    pub message_id: String,
    pub expect: Answer,
    pub reply_to: Option<String>,
    /// Epoch ms after which an answer is no longer handed to `reply_to`.
    pub deadline: i64,
}

/// A message for every device of a product on every edge: without `topic` each online device gets
/// it on `/sys/{pk}/{dn}/broadcast/request/{messageId}`; with `topic` (`/broadcast/{pk}/{..}`)
/// the devices subscribed to a matching filter get it there. Always QoS 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broadcast {
    pub product_key: ProductKey,
    pub message_id: String,
    pub topic: Option<String>,
    pub payload: Bytes,
}

/// A device's answer to a synchronous call, handed by the edge to the call's `reply_to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallAnswer {
    pub message_id: String,
    /// The device that answered (a sub-device's own key, not its gateway's).
    pub device: DeviceKey,
    /// As the device sent it (an Alink reply, or raw RRPC bytes).
    pub payload: Bytes,
}

/// Which of the device's publishes answers a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// An Alink reply on the command topic + `_reply` whose `id` is the message id.
    Alink,
    /// A publish on `rrpc/response/{messageId}` or `/ext/rrpc/{messageId}/...`.
    Rrpc,
}

// === impl Downlink ===

impl Downlink {
    /// The bus message carrying this downlink to `node`.
    pub fn to_message(&self, node: &str) -> BusMessage {
        let message = BusMessage::new(subject::edge_down(node), self.payload.clone())
            .with_header(header::PRODUCT_KEY, self.device.product_key.as_str())
            .with_header(header::DEVICE_NAME, self.device.device_name.as_str())
            .with_header(header::TOPIC, self.topic.clone())
            .with_header(header::QOS, self.qos.to_string());
        let Some(correlation) = &self.correlation else {
            return message;
        };
        let expect = match correlation.expect {
            Answer::Alink => "alink",
            Answer::Rrpc => "rrpc",
        };
        let message = message
            .with_header(header::MESSAGE_ID, correlation.message_id.clone())
            .with_header(header::EXPECT, expect)
            .with_header(header::DEADLINE, correlation.deadline.to_string());
        match &correlation.reply_to {
            Some(reply_to) => message.with_header(header::REPLY_TO, reply_to.clone()),
            None => message,
        }
    }

    /// Reads a downlink back; `None` for a message that is not one.
    pub fn from_message(message: BusMessage) -> Option<Self> {
        let headers = &message.headers;
        let device = DeviceKey::parse(headers.get(header::PRODUCT_KEY)?, headers.get(header::DEVICE_NAME)?).ok()?;
        let topic = headers.get(header::TOPIC)?.clone();
        let qos = match headers.get(header::QOS).map(String::as_str) {
            Some("1") => 1,
            _ => 0,
        };
        let correlation = headers.get(header::MESSAGE_ID).map(|message_id| Correlation {
            message_id: message_id.clone(),
            expect: match headers.get(header::EXPECT).map(String::as_str) {
                Some("rrpc") => Answer::Rrpc,
                _ => Answer::Alink,
            },
            reply_to: headers.get(header::REPLY_TO).cloned(),
            deadline: headers.get(header::DEADLINE).and_then(|d| d.parse().ok()).unwrap_or(0),
        });
        Some(Self { device, topic, payload: message.payload, qos, correlation })
    }
}

// === impl Broadcast ===

impl Broadcast {
    /// The bus message carrying this broadcast to every edge.
    pub fn to_message(&self) -> BusMessage {
        let message = BusMessage::new(subject::EDGE_BROADCAST, self.payload.clone())
            .with_header(header::PRODUCT_KEY, self.product_key.as_str())
            .with_header(header::MESSAGE_ID, self.message_id.clone());
        match &self.topic {
            Some(topic) => message.with_header(header::TOPIC, topic.clone()),
            None => message,
        }
    }

    /// Reads a broadcast back; `None` for a message that is not one.
    pub fn from_message(message: BusMessage) -> Option<Self> {
        let headers = &message.headers;
        let product_key = ProductKey::new(headers.get(header::PRODUCT_KEY)?.as_str()).ok()?;
        let message_id = headers.get(header::MESSAGE_ID)?.clone();
        let topic = headers.get(header::TOPIC).cloned();
        Some(Self { product_key, message_id, topic, payload: message.payload })
    }
}

// === impl CallAnswer ===

impl CallAnswer {
    /// The bus message carrying this answer to the caller's `reply_to` subject.
    pub fn to_message(&self, reply_to: &str) -> BusMessage {
        BusMessage::new(reply_to, self.payload.clone())
            .with_header(header::MESSAGE_ID, self.message_id.clone())
            .with_header(header::PRODUCT_KEY, self.device.product_key.as_str())
            .with_header(header::DEVICE_NAME, self.device.device_name.as_str())
    }

    /// Reads an answer back; `None` for a message that is not one.
    pub fn from_message(message: BusMessage) -> Option<Self> {
        let headers = &message.headers;
        let device = DeviceKey::parse(headers.get(header::PRODUCT_KEY)?, headers.get(header::DEVICE_NAME)?).ok()?;
        let message_id = headers.get(header::MESSAGE_ID)?.clone();
        Some(Self { message_id, device, payload: message.payload })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_downlink_survives_the_bus_message_round_trip() {
        let downlink = Downlink {
            device: DeviceKey::parse("pk", "dev.1").unwrap(),
            topic: "/shadow/get/pk/dev.1".into(),
            payload: Bytes::from_static(b"{}"),
            qos: 1,
            correlation: None,
        };
        let message = downlink.to_message("edge-a");
        assert_eq!(message.subject, "tether.edge.edge-a.down");
        assert_eq!(Downlink::from_message(message), Some(downlink));
        assert_eq!(Downlink::from_message(BusMessage::new("x", "y")), None);
    }

    #[test]
    fn a_correlated_downlink_keeps_its_correlation() {
        let downlink = Downlink {
            device: DeviceKey::parse("pk", "dn").unwrap(),
            topic: "/sys/pk/dn/rrpc/request/123".into(),
            payload: Bytes::from_static(b"ping"),
            qos: 0,
            correlation: Some(Correlation {
                message_id: "123".into(),
                expect: Answer::Rrpc,
                reply_to: Some("tether.command.c1.reply".into()),
                deadline: 1_700_000_000_000,
            }),
        };
        assert_eq!(Downlink::from_message(downlink.to_message("n")), Some(downlink));
    }

    #[test]
    fn broadcasts_and_answers_survive_the_bus_message_round_trip() {
        for topic in [None, Some("/broadcast/pk/news".to_owned())] {
            let broadcast = Broadcast {
                product_key: ProductKey::new("pk").unwrap(),
                message_id: "42".into(),
                topic,
                payload: Bytes::from_static(b"hello"),
            };
            let message = broadcast.to_message();
            assert_eq!(message.subject, subject::EDGE_BROADCAST);
            assert_eq!(Broadcast::from_message(message), Some(broadcast));
        }
        let answer = CallAnswer {
            message_id: "42".into(),
            device: DeviceKey::parse("pk", "dn").unwrap(),
            payload: Bytes::from_static(b"pong"),
        };
        let message = answer.to_message("tether.command.c1.reply");
        assert_eq!(message.subject, "tether.command.c1.reply");
        assert_eq!(message.headers["deviceName"], "dn");
        assert_eq!(CallAnswer::from_message(message), Some(answer));
    }
}
