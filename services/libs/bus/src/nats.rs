//! The cluster bus: NATS with JetStream.
//!
//! Stream messages go to one JetStream stream (file storage, subjects `tether.up.>` and
//! `tether.registry.>`); [`Bus::publish_durable`] returns once the stream's PubAck is in. A consumer
//! group is a durable pull consumer named after the group: every member, in any process, binds the
//! same durable and pulls from it, so JetStream hands each message to one member and redelivers
//! what is not acked within `ack_wait`. Core messages are plain NATS publish/subscribe.
//!
//! Connecting fails fast (a wrong URL at startup is a clear error, not a silent retry loop); once
//! connected, the client reconnects forever and pull consumers resume on their own.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, message::PublishMessage, stream};
use async_nats::{Client, ConnectOptions, HeaderMap, HeaderName, HeaderValue, connection::State};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::events::header;
use crate::{Acker, Bus, BusError, BusMessage, Consumer, Delivery, Subscription, subject};

/// The subjects the stream holds: uplinks and registry events.
pub(crate) const STREAM_SUBJECTS: [&str; 2] = ["tether.up.>", "tether.registry.>"];

/// How long a pull request waits on the server before the client renews it.
const PULL_EXPIRES: Duration = Duration::from_secs(30);

/// Idle heartbeat of a pull request; a silent server is noticed after about twice this.
const PULL_HEARTBEAT: Duration = Duration::from_secs(5);

/// Wait before binding a consumer again after its pull stream ended.
const REBIND_BACKOFF: Duration = Duration::from_millis(500);

/// Core messages buffered for a subscriber before the NATS client's own buffer takes over (and
/// drops, as core NATS does for slow consumers).
const SUBSCRIPTION_CAPACITY: usize = 256;

/// Header names NATS reserves for itself; they are not part of a [`BusMessage`].
const NATS_HEADER_PREFIX: &str = "nats-";

/// How to reach NATS and shape the stream and its consumers.
#[derive(Debug, Clone)]
pub struct NatsBusConfig {
    /// `nats://host:port`, or several separated by commas.
    pub url: String,
    /// The JetStream stream holding uplinks and registry events.
    pub stream_name: String,
    /// Stream replicas (3 in production, 1 on a single server).
    pub replicas: usize,
    /// How long a delivery may stay unacked before JetStream hands it out again.
    pub ack_wait: Duration,
    /// Deliveries per message before JetStream gives up on it; `None` retries forever.
    pub max_deliver: Option<u32>,
    /// How long the stream keeps a message, acked or not.
    pub max_age: Duration,
    /// Window within which a retried publish of a message with a `messageId` is stored once.
    pub duplicate_window: Duration,
    /// Bound on a durable publish (until its PubAck), an ack and a readiness probe.
    pub request_timeout: Duration,
    /// Bound on establishing the first connection.
    pub connect_timeout: Duration,
    /// Messages a consumer member pulls at once; also how many wait in its channel. Keep it small
    /// against `ack_wait`: a message waits in the client from the pull until it is acked.
    pub pull_batch: usize,
}

/// A [`Bus`] on NATS and JetStream; cheap to clone.
#[derive(Clone)]
pub struct NatsBus {
    client: Client,
    jetstream: jetstream::Context,
    config: NatsBusConfig,
}

/// Acks a JetStream delivery and waits for the server to confirm it.
struct NatsAck {
    message: jetstream::Message,
}

// === impl NatsBusConfig ===

impl NatsBusConfig {
    /// The defaults, for the server(s) at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            stream_name: "TETHER".to_owned(),
            replicas: 1,
            ack_wait: Duration::from_secs(30),
            max_deliver: None,
            max_age: Duration::from_secs(7 * 24 * 3600),
            duplicate_window: Duration::from_secs(120),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            pull_batch: 64,
        }
    }

    fn validate(&self) -> Result<(), BusError> {
        let invalid = |what: &str| Err(BusError::Invalid(format!("nats bus config: {what}")));
        if self.stream_name.is_empty() || self.stream_name != durable_name(&self.stream_name)? {
            return invalid("stream_name must be a non-empty NATS name");
        }
        if self.replicas == 0 {
            return invalid("replicas must be at least 1");
        }
        if self.ack_wait.is_zero() || self.request_timeout.is_zero() || self.connect_timeout.is_zero() {
            return invalid("ack_wait and timeouts must be positive");
        }
        if self.max_deliver == Some(0) {
            return invalid("max_deliver must be at least 1");
        }
        if self.pull_batch == 0 {
            return invalid("pull_batch must be at least 1");
        }
        Ok(())
    }

    fn stream(&self) -> stream::Config {
        stream::Config {
            name: self.stream_name.clone(),
            subjects: STREAM_SUBJECTS.iter().map(|s| (*s).to_owned()).collect(),
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            max_age: self.max_age,
            duplicate_window: self.duplicate_window,
            ..Default::default()
        }
    }

    fn consumer(&self, name: String, filter: &str) -> consumer::pull::Config {
        consumer::pull::Config {
            durable_name: Some(name),
            filter_subject: filter.to_owned(),
            // A group created after messages were stored still gets them: the stream keeps them
            // for `max_age`, and nothing durable is silently skipped.
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_deliver: self.max_deliver.map_or(-1, i64::from),
            ..Default::default()
        }
    }
}

// === impl NatsBus ===

impl NatsBus {
    /// Connects, then creates the stream or brings its settings up to date.
    pub async fn connect(config: NatsBusConfig) -> Result<NatsBus, BusError> {
        config.validate()?;
        let client = ConnectOptions::new()
            .name("tether")
            .connection_timeout(config.connect_timeout)
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => info!("nats connection established"),
                    async_nats::Event::Disconnected => warn!("nats connection lost, reconnecting"),
                    async_nats::Event::SlowConsumer(sid) => {
                        warn!(sid, "nats subscriber too slow, core messages dropped");
                    }
                    other => warn!(event = %other, "nats client event"),
                }
            })
            .connect(config.url.as_str())
            .await
            .map_err(|e| BusError::Unavailable(format!("cannot connect to nats at {}: {e}", config.url)))?;
        let jetstream = jetstream::ContextBuilder::new().timeout(config.request_timeout).build(client.clone());
        jetstream.create_or_update_stream(config.stream()).await.map_err(|e| {
            BusError::Unavailable(format!(
                "cannot create or update stream {} at {}: {e}",
                config.stream_name, config.url
            ))
        })?;
        Ok(Self { client, jetstream, config })
    }

    /// Checks that the connection is up and the stream answers, so the bus can take durable
    /// messages (for `/readyz`).
    pub async fn ping(&self) -> Result<(), BusError> {
        if self.client.connection_state() != State::Connected {
            return Err(BusError::Unavailable(format!("not connected to nats at {}", self.config.url)));
        }
        // Stream info is answered by the stream's leader: the one that must store a durable publish.
        let stream_info = self.jetstream.get_stream(&self.config.stream_name);
        match tokio::time::timeout(self.config.request_timeout, stream_info).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(BusError::Unavailable(format!("stream {}: {e}", self.config.stream_name))),
            Err(_) => Err(BusError::Unavailable(format!("nats at {} did not answer in time", self.config.url))),
        }
    }

    /// Returns once the server has handled everything this client sent before: a message to a
    /// private inbox comes back only after the server processed what preceded it on the connection.
    /// (`Client::flush` only empties the client's write buffer.)
    async fn round_trip(&self) -> Result<(), String> {
        let inbox = self.client.new_inbox();
        let mut echo = self.client.subscribe(inbox.clone()).await.map_err(|e| e.to_string())?;
        self.client.publish(inbox, Bytes::new()).await.map_err(|e| e.to_string())?;
        echo.next().await.map(|_| ()).ok_or_else(|| "connection closed".to_owned())
    }

    /// The durable consumer name of a group: NATS names cannot hold `.`, `*`, `>`, `/`, `\` or
    /// whitespace, so everything but ASCII letters, digits, `-` and `_` is percent-escaped.
    pub fn durable_name(group: &str) -> Result<String, BusError> {
        durable_name(group)
    }

    async fn bind(&self, config: &consumer::pull::Config) -> Result<consumer::PullConsumer, BusError> {
        self.jetstream.create_consumer_on_stream(config.clone(), &self.config.stream_name).await.map_err(|e| {
            BusError::Unavailable(format!(
                "cannot bind consumer {} on stream {}: {e}",
                config.durable_name.as_deref().unwrap_or_default(),
                self.config.stream_name
            ))
        })
    }

    /// Pulls for one group member until its [`Consumer`] is dropped, binding again whenever the
    /// pull stream ends (consumer deleted, JetStream gone and back).
    async fn pull(
        self,
        config: consumer::pull::Config,
        mut consumer: consumer::PullConsumer,
        tx: mpsc::Sender<Delivery>,
    ) {
        let group = config.durable_name.clone().unwrap_or_default();
        loop {
            let messages = consumer
                .stream()
                .max_messages_per_batch(self.config.pull_batch)
                .expires(PULL_EXPIRES)
                .heartbeat(PULL_HEARTBEAT)
                .messages()
                .await;
            match messages {
                Ok(messages) => {
                    if forward(&group, messages, &tx).await.is_break() {
                        return;
                    }
                }
                Err(error) => warn!(group = %group, %error, "cannot start pulling from consumer"),
            }
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(REBIND_BACKOFF) => {}
                }
                match self.bind(&config).await {
                    Ok(bound) => {
                        consumer = bound;
                        break;
                    }
                    Err(error) => debug!(group = %group, %error, "consumer not bound yet"),
                }
            }
        }
    }
}

#[async_trait]
impl Bus for NatsBus {
    async fn publish_durable(&self, message: BusMessage) -> Result<(), BusError> {
        if !STREAM_SUBJECTS.iter().any(|filter| subject::matches(filter, &message.subject)) {
            return Err(BusError::Invalid(format!("subject {} is not on the stream", message.subject)));
        }
        let mut publish = PublishMessage::build().headers(nats_headers(&message.headers)?);
        if message.headers.contains_key(header::MESSAGE_ID) {
            publish = publish.message_id(dedup_id(&message));
        }
        let publish = publish.payload(message.payload);
        let subject = message.subject;
        let stored = async {
            let ack = self.jetstream.send_publish(subject.clone(), publish).await?;
            ack.await
        };
        match tokio::time::timeout(self.config.request_timeout, stored).await {
            Ok(Ok(ack)) => {
                if ack.duplicate {
                    debug!(subject = %subject, sequence = ack.sequence, "durable publish was a duplicate");
                }
                Ok(())
            }
            Ok(Err(e)) if e.kind() == jetstream::context::PublishErrorKind::MaxPayloadExceeded => {
                Err(BusError::Invalid(format!("publish to {subject}: {e}")))
            }
            Ok(Err(e)) => Err(BusError::Unavailable(format!("jetstream publish to {subject}: {e}"))),
            Err(_) => Err(BusError::Unavailable(format!("jetstream publish to {subject}: no ack in time"))),
        }
    }

    async fn publish(&self, message: BusMessage) -> Result<(), BusError> {
        let headers = nats_headers(&message.headers)?;
        let subject = message.subject;
        self.client.publish_with_headers(subject.clone(), headers, message.payload).await.map_err(|e| match e.kind() {
            async_nats::client::PublishErrorKind::MaxPayloadExceeded
            | async_nats::client::PublishErrorKind::InvalidSubject => {
                BusError::Invalid(format!("publish to {subject}: {e}"))
            }
            _ => BusError::Unavailable(format!("publish to {subject}: {e}")),
        })
    }

    async fn subscribe(&self, filter: &str) -> Result<Subscription, BusError> {
        let mut subscriber = self.client.subscribe(filter.to_owned()).await.map_err(|e| match e.kind() {
            async_nats::SubscribeErrorKind::Other => BusError::Unavailable(format!("subscribe to {filter}: {e}")),
            _ => BusError::Invalid(format!("subscribe to {filter}: {e}")),
        })?;
        // Once the server has the subscription, a publish made after this call returns reaches it,
        // from any connection. While disconnected the client subscribes again on reconnect, so a
        // subscription the server has not confirmed yet is no error.
        match tokio::time::timeout(self.config.request_timeout, self.round_trip()).await {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => debug!(filter, %reason, "subscription not confirmed by the server yet"),
            Err(_) => debug!(filter, "subscription not confirmed by the server yet"),
        }
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_CAPACITY);
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    _ = tx.closed() => break,
                    next = subscriber.next() => next,
                };
                let Some(message) = next else { break };
                if tx.send(bus_message(&message)).await.is_err() {
                    break;
                }
            }
            // Dropping the subscriber unsubscribes.
        });
        Ok(Subscription::bounded(rx))
    }

    async fn consume(&self, group: &str, filter: &str) -> Result<Consumer, BusError> {
        let name = durable_name(group)?;
        // Binding would silently move every member of the group to the new filter.
        let existing = self
            .jetstream
            .get_consumer_from_stream::<consumer::pull::Config, _, _>(&name, &self.config.stream_name)
            .await;
        if let Ok(existing) = existing
            && existing.cached_info().config.filter_subject != filter
        {
            return Err(BusError::Invalid(format!(
                "group {group} already consumes {}, not {filter}",
                existing.cached_info().config.filter_subject
            )));
        }
        let config = self.config.consumer(name, filter);
        let consumer = self.bind(&config).await?;
        let (tx, rx) = mpsc::channel(self.config.pull_batch);
        tokio::spawn(self.clone().pull(config, consumer, tx));
        Ok(Consumer::bounded(rx))
    }
}

// === impl NatsAck ===

#[async_trait]
impl Acker for NatsAck {
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        self.message.double_ack().await.map_err(|e| BusError::Unavailable(format!("ack: {e}")))
    }
}

/// Forwards deliveries until the consumer is dropped (`Break`) or the pull stream must be
/// replaced (`Continue`).
async fn forward(
    group: &str,
    mut messages: consumer::pull::Stream,
    tx: &mpsc::Sender<Delivery>,
) -> std::ops::ControlFlow<()> {
    use consumer::pull::MessagesErrorKind as Kind;
    use std::ops::ControlFlow::{Break, Continue};
    loop {
        let next = tokio::select! {
            _ = tx.closed() => return Break(()),
            next = messages.next() => next,
        };
        match next {
            Some(Ok(message)) => {
                let delivery = Delivery::new(bus_message(&message.message), Box::new(NatsAck { message }));
                // Waits while the member's channel is full: a slow member stops pulling.
                if tx.send(delivery).await.is_err() {
                    return Break(());
                }
            }
            // The client renews the pull on its own once the server answers again.
            Some(Err(error)) if matches!(error.kind(), Kind::MissingHeartbeat | Kind::Pull) => {
                debug!(group = %group, %error, "pull interrupted");
            }
            Some(Err(error)) => {
                warn!(group = %group, %error, "pull stream failed, binding the consumer again");
                return Continue(());
            }
            None => return Continue(()),
        }
    }
}

/// See [`NatsBus::durable_name`].
fn durable_name(group: &str) -> Result<String, BusError> {
    if group.is_empty() {
        return Err(BusError::Invalid("consumer group name is empty".to_owned()));
    }
    let mut name = String::with_capacity(group.len());
    for byte in group.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            name.push(char::from(byte));
        } else {
            name.push_str(&format!("%{byte:02X}"));
        }
    }
    Ok(name)
}

/// The `Nats-Msg-Id` of an identified message, so that a retried publish is stored once within
/// the duplicate window.
///
/// It digests the whole message rather than using `messageId` alone: that header is the device's
/// Alink request id (or a status time), which devices reuse — across devices, after a reconnect, or
/// always (`"id": "123"`). As the stream deduplicates on the id alone, distinct uplinks sharing a
/// `messageId` would be dropped as duplicates. Only byte-identical messages (same subject, headers
/// including `generateTime`, and payload) collapse into one.
fn dedup_id(message: &BusMessage) -> String {
    let mut digest = Sha256::new();
    let mut field = |bytes: &[u8]| {
        digest.update((bytes.len() as u64).to_le_bytes());
        digest.update(bytes);
    };
    field(message.subject.as_bytes());
    for (name, value) in &message.headers {
        field(name.as_bytes());
        field(value.as_bytes());
    }
    field(&message.payload);
    hex::encode(digest.finalize())
}

/// Bus headers as NATS headers; names and values NATS cannot carry are refused, not mangled.
fn nats_headers(headers: &BTreeMap<String, String>) -> Result<HeaderMap, BusError> {
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        let parsed_name: HeaderName =
            name.parse().map_err(|_| BusError::Invalid(format!("header name {name:?} cannot go on nats")))?;
        if name.to_ascii_lowercase().starts_with(NATS_HEADER_PREFIX) {
            return Err(BusError::Invalid(format!("header name {name:?} is reserved by nats")));
        }
        let parsed_value: HeaderValue = value
            .parse()
            .map_err(|_| BusError::Invalid(format!("header {name:?} has a value that cannot go on nats")))?;
        out.insert(parsed_name, parsed_value);
    }
    Ok(out)
}

/// A received NATS message as a bus message, without the headers NATS added for itself.
fn bus_message(message: &async_nats::Message) -> BusMessage {
    let mut headers = BTreeMap::new();
    for (name, values) in message.headers.iter().flat_map(|h| h.iter()) {
        let name: &str = name.as_ref();
        if name.to_ascii_lowercase().starts_with(NATS_HEADER_PREFIX) {
            continue;
        }
        if let Some(value) = values.last() {
            headers.insert(name.to_owned(), value.as_str().to_owned());
        }
    }
    BusMessage { subject: message.subject.to_string(), headers, payload: message.payload.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durable_names_escape_what_nats_forbids_and_stay_distinct() {
        assert_eq!(durable_name("history").unwrap(), "history");
        assert_eq!(durable_name("rules.v1").unwrap(), "rules%2Ev1");
        assert_eq!(durable_name("a b*>/\\").unwrap(), "a%20b%2A%3E%2F%5C");
        assert_ne!(durable_name("a.b").unwrap(), durable_name("a_b").unwrap());
        assert_ne!(durable_name("a.b").unwrap(), durable_name("a%2Eb").unwrap());
        assert!(durable_name("").is_err());
    }

    #[test]
    fn headers_round_trip_and_nats_headers_stay_out() {
        let bus = BusMessage::new("tether.up.t.pk.dn.property", "{}")
            .with_header(header::MESSAGE_ID, "42")
            .with_header(header::TOPIC, "/pk/dn/thing/event/property/post");
        let mut headers = nats_headers(&bus.headers).unwrap();
        headers.insert("Nats-Msg-Id", "42");
        let mut message: async_nats::Message = async_nats::Message {
            subject: bus.subject.clone().into(),
            reply: None,
            payload: bus.payload.clone(),
            headers: Some(headers),
            status: None,
            description: None,
            length: 0,
        };
        assert_eq!(bus_message(&message), bus);
        message.headers = None;
        assert!(bus_message(&message).headers.is_empty());
    }

    #[test]
    fn dedup_ids_collapse_only_identical_messages() {
        let post = |device: &str, at: &str| {
            BusMessage::new(format!("tether.up.t.pk.{device}.property"), "{}")
                .with_header(header::MESSAGE_ID, "123")
                .with_header(header::GENERATE_TIME, at)
        };
        assert_eq!(dedup_id(&post("a", "1")), dedup_id(&post("a", "1")));
        assert_ne!(dedup_id(&post("a", "1")), dedup_id(&post("b", "1")), "same request id, other device");
        assert_ne!(dedup_id(&post("a", "1")), dedup_id(&post("a", "2")), "same request id, later post");
        let mut other_body = post("a", "1");
        other_body.payload = "{\"x\":1}".into();
        assert_ne!(dedup_id(&post("a", "1")), dedup_id(&other_body));
    }

    #[test]
    fn headers_nats_cannot_carry_are_refused() {
        let line_break = BTreeMap::from([("topic".to_owned(), "a\r\nb".to_owned())]);
        assert!(matches!(nats_headers(&line_break), Err(BusError::Invalid(_))));
        let colon = BTreeMap::from([("a:b".to_owned(), "v".to_owned())]);
        assert!(matches!(nats_headers(&colon), Err(BusError::Invalid(_))));
        let reserved = BTreeMap::from([("Nats-Expected-Stream".to_owned(), "X".to_owned())]);
        assert!(matches!(nats_headers(&reserved), Err(BusError::Invalid(_))));
    }
}
