//! MQTT 3.1.1: CONNACK return codes, SUBACK 0x80 failures; publishes that are refused are
//! dropped (3.1.1 has no negative PUBACK).

use std::sync::Arc;

use ntex_mqtt::QoS;
use ntex_mqtt::v3::codec::ConnectAckReason;
use ntex_mqtt::v3::{self, ProtocolMessage, ProtocolMessageAck, Publish, Session};

use super::HandlerError;
use crate::EdgeShared;
use crate::session::{Connection, Refusal, Sink};
use crate::uplink::PublishOutcome;

pub async fn handshake_v3(
    shared: Arc<EdgeShared>,
    handshake: v3::Handshake,
) -> Result<v3::HandshakeAck<Connection>, HandlerError> {
    let packet = handshake.packet();
    let request = super::connect_request(
        &packet.client_id,
        packet.username.as_ref(),
        packet.password.as_ref(),
        packet.keep_alive,
        handshake.io(),
    );
    let client_id = request.client_id.clone();
    match Connection::admit(&shared, request, Sink::V3(handshake.sink())).await {
        Ok(conn) => Ok(handshake.ack(conn, false)),
        Err(refusal) => {
            tracing::warn!(%client_id, reason = %refusal, "connect refused");
            let code = match refusal {
                Refusal::ClientId(_) | Refusal::KeepAlive(_) => ConnectAckReason::IdentifierRejected,
                Refusal::BadCredentials(_) => ConnectAckReason::BadUserNameOrPassword,
                Refusal::NotAuthorized => ConnectAckReason::NotAuthorized,
                Refusal::Unavailable(_) => ConnectAckReason::ServiceUnavailable,
            };
            Ok(handshake.failed(code))
        }
    }
}

pub async fn protocol_v3(conn: Session<Connection>, msg: ProtocolMessage) -> Result<ProtocolMessageAck, HandlerError> {
    match msg {
        ProtocolMessage::Subscribe(mut subscribe) => {
            for mut sub in subscribe.iter_mut() {
                if conn.subscribe(sub.topic()) {
                    // QoS 2 is granted as 1: the platform has no QoS 2.
                    let qos = if sub.qos() == QoS::AtMostOnce { QoS::AtMostOnce } else { QoS::AtLeastOnce };
                    sub.confirm(qos);
                } else {
                    sub.fail();
                }
            }
            Ok(subscribe.ack())
        }
        ProtocolMessage::Unsubscribe(unsubscribe) => {
            for filter in unsubscribe.iter() {
                conn.unsubscribe(filter);
            }
            Ok(unsubscribe.ack())
        }
        other => Ok(other.ack()),
    }
}

pub async fn publish_v3(conn: Session<Connection>, publish: Publish) -> Result<(), HandlerError> {
    let size = publish.payload_size();
    let topic = publish.publish_topic().to_owned();
    let payload = publish.read_all().await.map_err(|e| HandlerError(e.to_string()))?;
    match conn.on_publish(&topic, bytes::Bytes::copy_from_slice(&payload), size).await {
        // Without a PUBACK the device sends again after reconnecting: nothing is lost.
        PublishOutcome::Unavailable => Err(HandlerError("bus unavailable".into())),
        _ => Ok(()),
    }
}
