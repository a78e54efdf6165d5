//! MQTT 5.0: CONNACK, SUBACK and PUBACK reason codes say precisely why something was refused.

use std::sync::Arc;

use ntex_mqtt::QoS;
use ntex_mqtt::v5::codec::{ConnectAckReason, PublishAckReason, SubscribeAckReason};
use ntex_mqtt::v5::{self, ProtocolMessage, ProtocolMessageAck, Publish, PublishAck, Session};

use super::HandlerError;
use crate::EdgeShared;
use crate::session::{Connection, Refusal, Sink};
use crate::uplink::PublishOutcome;

pub async fn handshake_v5(
    shared: Arc<EdgeShared>,
    handshake: v5::Handshake,
) -> Result<v5::HandshakeAck<Connection>, HandlerError> {
    let packet = handshake.packet();
    let request = super::connect_request(
        &packet.client_id,
        packet.username.as_ref(),
        packet.password.as_ref(),
        packet.keep_alive,
        handshake.io(),
    );
    let client_id = request.client_id.clone();
    match Connection::admit(&shared, request, Sink::V5(handshake.sink())).await {
        Ok(conn) => Ok(handshake.ack(conn)),
        Err(refusal) => {
            tracing::warn!(%client_id, reason = %refusal, "connect refused");
            let reason_code = match refusal {
                Refusal::ClientId(_) => ConnectAckReason::ClientIdentifierNotValid,
                Refusal::KeepAlive(_) => ConnectAckReason::ImplementationSpecificError,
                Refusal::BadCredentials(_) => ConnectAckReason::BadUserNameOrPassword,
                Refusal::NotAuthorized => ConnectAckReason::NotAuthorized,
                Refusal::Unavailable(_) => ConnectAckReason::ServerUnavailable,
            };
            let ack = v5::codec::ConnectAck {
                reason_code,
                reason_string: Some(refusal.to_string().into()),
                ..Default::default()
            };
            Ok(handshake.fail_with(ack))
        }
    }
}

pub async fn protocol_v5(conn: Session<Connection>, msg: ProtocolMessage) -> Result<ProtocolMessageAck, HandlerError> {
    match msg {
        ProtocolMessage::Subscribe(mut subscribe) => {
            for mut sub in subscribe.iter_mut() {
                if conn.subscribe(sub.topic()) {
                    let qos = if sub.options().qos == QoS::AtMostOnce { QoS::AtMostOnce } else { QoS::AtLeastOnce };
                    sub.confirm(qos);
                } else {
                    sub.fail(SubscribeAckReason::NotAuthorized);
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

pub async fn publish_v5(conn: Session<Connection>, publish: Publish) -> Result<PublishAck, HandlerError> {
    let size = publish.payload_size();
    let topic = publish.publish_topic().to_owned();
    let payload = publish.read_all().await.map_err(|e| HandlerError(e.to_string()))?;
    let outcome = conn.on_publish(&topic, bytes::Bytes::copy_from_slice(&payload), size).await;
    let reason = match outcome {
        PublishOutcome::Accepted => PublishAckReason::Success,
        PublishOutcome::NotAuthorized => PublishAckReason::NotAuthorized,
        PublishOutcome::TopicInvalid => PublishAckReason::TopicNameInvalid,
        PublishOutcome::TooLarge => PublishAckReason::QuotaExceeded,
        PublishOutcome::Unavailable => PublishAckReason::UnspecifiedError,
    };
    Ok(publish.ack().reason_code(reason))
}
