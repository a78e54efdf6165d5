//! Real MQTT device clients (rumqttc) that sign in the Aliyun way, for v3.1.1 and v5.

use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::{AsyncClient, ConnectReturnCode, ConnectionError, Event, MqttOptions, Packet, QoS, SubscribeReasonCode};
use serde_json::Value;
use tether_model::{SignMethod, SignParams};
use tokio::sync::mpsc;

/// How long a test waits for something the platform should do at once.
pub const WAIT: Duration = Duration::from_secs(5);

/// A registered device's identity.
#[derive(Debug, Clone)]
pub struct DeviceCredentials {
    pub product_key: String,
    pub device_name: String,
    pub device_secret: String,
}

/// A message a device received.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// What the client loop reports besides messages.
#[derive(Debug)]
enum Report {
    Connected,
    SubAck(Vec<bool>),
    Closed(String),
    RefusedV5(rumqttc::v5::mqttbytes::v5::ConnectReturnCode),
}

/// An MQTT 3.1.1 device.
pub struct Device {
    pub client: AsyncClient,
    messages: mpsc::UnboundedReceiver<Message>,
    reports: mpsc::UnboundedReceiver<Report>,
}

/// An MQTT 5 device.
pub struct DeviceV5 {
    pub client: rumqttc::v5::AsyncClient,
    messages: mpsc::UnboundedReceiver<Message>,
    reports: mpsc::UnboundedReceiver<Report>,
    /// v5 reason codes seen in PUBACK, SUBACK and DISCONNECT, in order.
    pub acks: mpsc::UnboundedReceiver<V5Ack>,
}

/// A v5 acknowledgement or server DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum V5Ack {
    PubAck(rumqttc::v5::mqttbytes::v5::PubAckReason),
    SubAck(Vec<rumqttc::v5::mqttbytes::v5::SubscribeReasonCode>),
    Disconnect(rumqttc::v5::mqttbytes::v5::DisconnectReasonCode),
}

impl DeviceCredentials {
    /// `(client id, username, password)` as an Aliyun SDK computes them.
    pub fn login(&self, method: SignMethod) -> (String, String, String) {
        let timestamp = "1700000000000";
        let params = SignParams {
            client_id: "test-client",
            device_name: &self.device_name,
            product_key: &self.product_key,
            timestamp: Some(timestamp),
        };
        let client_id = format!("test-client|securemode=3,signmethod={},timestamp={timestamp}|", method.as_str());
        let username = format!("{}&{}", self.device_name, self.product_key);
        (client_id, username, method.sign(&self.device_secret, &params))
    }

    pub fn topic(&self, suffix: &str) -> String {
        format!("/sys/{}/{}/{suffix}", self.product_key, self.device_name)
    }
}

impl Message {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).expect("message is json")
    }
}

impl Device {
    /// Connects with the default sign method and keepalive; panics if refused.
    pub async fn connect(addr: SocketAddr, creds: &DeviceCredentials) -> Self {
        let (client_id, username, password) = creds.login(SignMethod::HmacSha1);
        Self::connect_with(addr, &client_id, &username, &password, 60).await.expect("device connects")
    }

    /// Connects with explicit CONNECT fields; a refusal returns its CONNACK code.
    pub async fn connect_with(
        addr: SocketAddr,
        client_id: &str,
        username: &str,
        password: &str,
        keep_alive_secs: u64,
    ) -> Result<Self, ConnectReturnCode> {
        let mut options = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        options
            .set_credentials(username, password)
            .set_keep_alive(Duration::from_secs(keep_alive_secs))
            .set_max_packet_size(2 * 1024 * 1024, 2 * 1024 * 1024);
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let (msg_tx, messages) = mpsc::unbounded_channel();
        let (report_tx, mut reports) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = report_tx.send(Report::Connected);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = msg_tx.send(Message { topic: p.topic, payload: p.payload.to_vec() });
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        let granted =
                            ack.return_codes.iter().map(|c| matches!(c, SubscribeReasonCode::Success(_))).collect();
                        let _ = report_tx.send(Report::SubAck(granted));
                    }
                    Ok(_) => {}
                    Err(ConnectionError::ConnectionRefused(code)) => {
                        let _ = report_tx.send(Report::Closed(format!("refused:{}", code as u8)));
                        return;
                    }
                    Err(error) => {
                        let _ = report_tx.send(Report::Closed(error.to_string()));
                        return;
                    }
                }
            }
        });
        match tokio::time::timeout(WAIT, reports.recv()).await {
            Ok(Some(Report::Connected)) => Ok(Self { client, messages, reports }),
            Ok(Some(Report::Closed(reason))) => match reason.strip_prefix("refused:") {
                Some(code) => Err(refusal_code(code.parse().unwrap_or(0))),
                None => panic!("connection failed: {reason}"),
            },
            other => panic!("no CONNACK: {other:?}"),
        }
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client.publish(topic, QoS::AtLeastOnce, false, payload.into()).await.expect("publish queued");
    }

    /// Subscribes and returns whether each filter was granted.
    pub async fn subscribe(&mut self, filters: &[&str]) -> Vec<bool> {
        let filters: Vec<rumqttc::SubscribeFilter> =
            filters.iter().map(|f| rumqttc::SubscribeFilter::new((*f).to_owned(), QoS::AtLeastOnce)).collect();
        self.client.subscribe_many(filters).await.expect("subscribe queued");
        loop {
            match tokio::time::timeout(WAIT, self.reports.recv()).await {
                Ok(Some(Report::SubAck(granted))) => return granted,
                Ok(Some(Report::Connected)) => {}
                other => panic!("no SUBACK: {other:?}"),
            }
        }
    }

    /// The next message, or `None` after `wait`.
    pub async fn next_message_within(&mut self, wait: Duration) -> Option<Message> {
        tokio::time::timeout(wait, self.messages.recv()).await.ok().flatten()
    }

    /// The next message; panics after [`WAIT`].
    pub async fn next_message(&mut self) -> Message {
        self.next_message_within(WAIT).await.expect("a message within the wait")
    }

    /// Publishes an Alink request on `/sys/{pk}/{dn}/{suffix}` and returns the reply on `_reply`.
    pub async fn request(&mut self, creds: &DeviceCredentials, suffix: &str, body: &[u8]) -> Value {
        self.publish(&creds.topic(suffix), body.to_vec()).await;
        let reply = self.next_message().await;
        assert_eq!(reply.topic, creds.topic(&format!("{suffix}_reply")));
        reply.json()
    }

    /// Waits until the server closes the connection; returns why the client saw it close.
    pub async fn closed(&mut self) -> String {
        loop {
            match tokio::time::timeout(WAIT, self.reports.recv()).await {
                Ok(Some(Report::Closed(reason))) => return reason,
                Ok(Some(_)) => {}
                Ok(None) => return "client loop ended".into(),
                Err(_) => panic!("connection still open"),
            }
        }
    }

    pub async fn disconnect(self) {
        let _ = self.client.disconnect().await;
        let mut reports = self.reports;
        let _ = tokio::time::timeout(WAIT, async { while reports.recv().await.is_some() {} }).await;
    }
}

fn refusal_code(code: u8) -> ConnectReturnCode {
    match code {
        1 => ConnectReturnCode::RefusedProtocolVersion,
        2 => ConnectReturnCode::BadClientId,
        3 => ConnectReturnCode::ServiceUnavailable,
        4 => ConnectReturnCode::BadUserNamePassword,
        5 => ConnectReturnCode::NotAuthorized,
        _ => ConnectReturnCode::Success,
    }
}

impl DeviceV5 {
    /// Connects over MQTT 5; a refusal returns its CONNACK reason.
    pub async fn connect_with(
        addr: SocketAddr,
        creds: &DeviceCredentials,
        password_override: Option<&str>,
    ) -> Result<Self, rumqttc::v5::mqttbytes::v5::ConnectReturnCode> {
        use rumqttc::v5::mqttbytes::v5::Packet as P5;
        use rumqttc::v5::{ConnectionError as E5, Event as Ev5, MqttOptions as O5};

        let (client_id, username, password) = creds.login(SignMethod::HmacSha256);
        let mut options = O5::new(client_id, addr.ip().to_string(), addr.port());
        options
            .set_credentials(username, password_override.unwrap_or(&password))
            .set_keep_alive(Duration::from_secs(60))
            .set_max_packet_size(Some(2 * 1024 * 1024));
        let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 64);
        let (msg_tx, messages) = mpsc::unbounded_channel();
        let (report_tx, mut reports) = mpsc::unbounded_channel();
        let (ack_tx, acks) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Ev5::Incoming(P5::ConnAck(_))) => {
                        let _ = report_tx.send(Report::Connected);
                    }
                    Ok(Ev5::Incoming(P5::Publish(p))) => {
                        let topic = String::from_utf8_lossy(&p.topic).into_owned();
                        let _ = msg_tx.send(Message { topic, payload: p.payload.to_vec() });
                    }
                    Ok(Ev5::Incoming(P5::PubAck(ack))) => {
                        let _ = ack_tx.send(V5Ack::PubAck(ack.reason));
                    }
                    Ok(Ev5::Incoming(P5::SubAck(ack))) => {
                        let _ = ack_tx.send(V5Ack::SubAck(ack.return_codes));
                    }
                    Ok(Ev5::Incoming(P5::Disconnect(d))) => {
                        let _ = ack_tx.send(V5Ack::Disconnect(d.reason_code));
                    }
                    Ok(_) => {}
                    Err(E5::ConnectionRefused(code)) => {
                        let _ = report_tx.send(Report::RefusedV5(code));
                        return;
                    }
                    // rumqttc treats a negative PUBACK or SUBACK as fatal and drops the
                    // connection: report the reason code, then end like any close.
                    Err(E5::MqttState(rumqttc::v5::StateError::PubAckFail { reason })) => {
                        let _ = ack_tx.send(V5Ack::PubAck(reason));
                        let _ = report_tx.send(Report::Closed(format!("puback {reason:?}")));
                        return;
                    }
                    Err(E5::MqttState(rumqttc::v5::StateError::ServerDisconnect { reason_code, .. })) => {
                        let _ = ack_tx.send(V5Ack::Disconnect(reason_code));
                        let _ = report_tx.send(Report::Closed(format!("disconnect {reason_code:?}")));
                        return;
                    }
                    Err(E5::MqttState(rumqttc::v5::StateError::SubFail { reason })) => {
                        let _ = ack_tx.send(V5Ack::SubAck(vec![reason]));
                        let _ = report_tx.send(Report::Closed(format!("suback {reason:?}")));
                        return;
                    }
                    Err(error) => {
                        let _ = report_tx.send(Report::Closed(error.to_string()));
                        return;
                    }
                }
            }
        });
        match tokio::time::timeout(WAIT, reports.recv()).await {
            Ok(Some(Report::Connected)) => Ok(Self { client, messages, reports, acks }),
            Ok(Some(Report::RefusedV5(code))) => Err(code),
            other => panic!("v5 connection failed: {other:?}"),
        }
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, rumqttc::v5::mqttbytes::QoS::AtLeastOnce, false, payload.into())
            .await
            .expect("publish queued");
    }

    pub async fn next_ack(&mut self) -> V5Ack {
        tokio::time::timeout(WAIT, self.acks.recv()).await.ok().flatten().expect("an ack within the wait")
    }

    pub async fn next_message(&mut self) -> Message {
        tokio::time::timeout(WAIT, self.messages.recv()).await.ok().flatten().expect("a message within the wait")
    }

    /// Waits until the connection is closed by the server.
    pub async fn closed(&mut self) -> String {
        match tokio::time::timeout(WAIT, self.reports.recv()).await {
            Ok(Some(Report::Closed(reason))) => reason,
            Ok(other) => format!("{other:?}"),
            Err(_) => panic!("connection still open"),
        }
    }
}
