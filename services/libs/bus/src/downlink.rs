//! Messages for a device, sent to the edge node that holds its session
//! (`tether.edge.<node>.down`, a core message). The device and topic ride in headers, the
//! payload is the MQTT payload as is.

use bytes::Bytes;
use tether_model::DeviceKey;

use crate::{BusMessage, subject};

mod header {
    pub const PRODUCT_KEY: &str = "productKey";
    pub const DEVICE_NAME: &str = "deviceName";
    pub const TOPIC: &str = "topic";
    pub const QOS: &str = "qos";
}

/// One message to deliver to a connected device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downlink {
    pub device: DeviceKey,
    pub topic: String,
    pub payload: Bytes,
    /// 0 or 1.
    pub qos: u8,
}

// === impl Downlink ===

impl Downlink {
    /// The bus message carrying this downlink to `node`.
    pub fn to_message(&self, node: &str) -> BusMessage {
        BusMessage::new(subject::edge_down(node), self.payload.clone())
            .with_header(header::PRODUCT_KEY, self.device.product_key.as_str())
            .with_header(header::DEVICE_NAME, self.device.device_name.as_str())
            .with_header(header::TOPIC, self.topic.clone())
            .with_header(header::QOS, self.qos.to_string())
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
        Some(Self { device, topic, payload: message.payload, qos })
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
        };
        let message = downlink.to_message("edge-a");
        assert_eq!(message.subject, "tether.edge.edge-a.down");
        assert_eq!(Downlink::from_message(message), Some(downlink));
        assert_eq!(Downlink::from_message(BusMessage::new("x", "y")), None);
    }
}
