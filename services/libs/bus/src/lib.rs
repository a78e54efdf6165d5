//! The message bus between services: subjects, the [`Bus`] trait and its adapters.
//!
//! Two kinds of traffic (ARCHITECTURE.md, data paths):
//! - **stream** messages ([`Bus::publish_durable`]) — uplinks and presence — returned only once the
//!   bus holds them, and read by durable consumer groups ([`Bus::consume`]) where every message
//!   goes to one member of each group and stays pending until acked;
//! - **core** messages ([`Bus::publish`], [`Bus::subscribe`]) — downlinks, kicks, replies —
//!   delivered to whoever listens now.
//!
//! Embedded mode uses [`InProcessBus`]; cluster mode uses [`NatsBus`] (a JetStream stream with
//! durable pull consumers for stream messages, core NATS for the rest).

pub mod downlink;
pub mod events;
mod in_process;
mod nats;
pub mod subject;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::mpsc;

pub use in_process::{InProcessBus, StreamLimits};
pub use nats::{NatsBus, NatsBusConfig};

/// One message on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusMessage {
    pub subject: String,
    /// Metadata beside the body (Aliyun's forwarded `topic`, `messageId`, `generateTime`).
    pub headers: BTreeMap<String, String>,
    pub payload: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// The bus refuses the message or filter itself; retrying the same call will not help.
    #[error("invalid bus request: {0}")]
    Invalid(String),
    #[error("bus is shut down")]
    Closed,
}

/// A message taken from a consumer group; ack it once handled, or it is delivered again.
pub struct Delivery {
    pub message: BusMessage,
    acker: Box<dyn Acker>,
    /// The consumer's memory of acked ids, once the delivery has been handed out.
    acked: Option<Arc<Mutex<AckedIds>>>,
}

/// How an adapter confirms a delivery.
#[async_trait]
pub trait Acker: Send + Sync {
    async fn ack(self: Box<Self>) -> Result<(), BusError>;
}

/// A stream of core messages matching one subscription.
pub struct Subscription {
    receiver: Receiver<BusMessage>,
}

/// A member of a durable consumer group.
pub struct Consumer {
    receiver: Receiver<Delivery>,
    acked: Arc<Mutex<AckedIds>>,
}

/// The `messageId`s a consumer acked lately. A stream that lost acks (a NATS server killed before
/// it persisted its consumer state, a redelivery racing an ack) hands acked messages out again;
/// the consumer acks those at once instead of delivering them twice. Across members of one group
/// such a redelivery stays at-least-once: consumers that must not double-count key on
/// `messageId` too.
struct AckedIds {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

/// How many acked ids a consumer remembers.
const ACKED_IDS: usize = 65_536;

/// An adapter's channel end: unbounded in process, bounded where a network adapter must not buffer
/// a whole stream for a slow reader.
enum Receiver<T> {
    Unbounded(mpsc::UnboundedReceiver<T>),
    Bounded(mpsc::Receiver<T>),
}

/// The bus as services see it.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes to the stream; returns once the bus has taken responsibility for the message.
    async fn publish_durable(&self, message: BusMessage) -> Result<(), BusError>;

    /// Publishes a core message to current subscribers.
    async fn publish(&self, message: BusMessage) -> Result<(), BusError>;

    /// Subscribes to core messages whose subject matches `filter` (`*` one token, `>` the rest).
    async fn subscribe(&self, filter: &str) -> Result<Subscription, BusError>;

    /// Joins the durable consumer group `group` over stream subjects matching `filter`.
    async fn consume(&self, group: &str, filter: &str) -> Result<Consumer, BusError>;
}

// === impl BusMessage ===

impl BusMessage {
    pub fn new(subject: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Self { subject: subject.into(), headers: BTreeMap::new(), payload: payload.into() }
    }

    pub fn with_header(mut self, key: &str, value: impl Into<String>) -> Self {
        self.headers.insert(key.to_owned(), value.into());
        self
    }
}

// === impl Delivery ===

impl Delivery {
    pub fn new(message: BusMessage, acker: Box<dyn Acker>) -> Self {
        Self { message, acker, acked: None }
    }

    pub async fn ack(self) -> Result<(), BusError> {
        self.acker.ack().await?;
        if let (Some(acked), Some(id)) = (self.acked, self.message.headers.get(events::header::MESSAGE_ID)) {
            acked.lock().insert(id.clone());
        }
        Ok(())
    }

    fn id(&self) -> Option<&str> {
        self.message.headers.get(events::header::MESSAGE_ID).map(String::as_str)
    }
}

// === impl Subscription ===

impl Subscription {
    pub fn new(receiver: mpsc::UnboundedReceiver<BusMessage>) -> Self {
        Self { receiver: Receiver::Unbounded(receiver) }
    }

    /// A subscription fed by a bounded channel: the adapter waits while it is full.
    pub fn bounded(receiver: mpsc::Receiver<BusMessage>) -> Self {
        Self { receiver: Receiver::Bounded(receiver) }
    }

    /// The next message; `None` once the bus is gone.
    pub async fn next(&mut self) -> Option<BusMessage> {
        self.receiver.recv().await
    }
}

// === impl Consumer ===

impl Consumer {
    pub fn new(receiver: mpsc::UnboundedReceiver<Delivery>) -> Self {
        Self { receiver: Receiver::Unbounded(receiver), acked: Arc::new(Mutex::new(AckedIds::new())) }
    }

    /// A consumer fed by a bounded channel: the adapter stops pulling while it is full.
    pub fn bounded(receiver: mpsc::Receiver<Delivery>) -> Self {
        Self { receiver: Receiver::Bounded(receiver), acked: Arc::new(Mutex::new(AckedIds::new())) }
    }

    /// The next delivery; `None` once the bus is gone. Messages this consumer already acked are
    /// acked again and skipped.
    pub async fn next(&mut self) -> Option<Delivery> {
        loop {
            let mut delivery = self.receiver.recv().await?;
            if delivery.id().is_some_and(|id| self.acked.lock().contains(id)) {
                tracing::debug!(subject = %delivery.message.subject, "acked message delivered again, skipped");
                if let Err(error) = delivery.acker.ack().await {
                    tracing::debug!(%error, "ack of a repeated delivery failed");
                }
                continue;
            }
            delivery.acked = Some(self.acked.clone());
            return Some(delivery);
        }
    }
}

// === impl AckedIds ===

impl AckedIds {
    fn new() -> Self {
        Self { ids: HashSet::new(), order: VecDeque::new() }
    }

    fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    fn insert(&mut self, id: String) {
        if self.ids.insert(id.clone()) {
            self.order.push_back(id);
            if self.order.len() > ACKED_IDS
                && let Some(old) = self.order.pop_front()
            {
                self.ids.remove(&old);
            }
        }
    }
}

// === impl Receiver ===

impl<T> Receiver<T> {
    async fn recv(&mut self) -> Option<T> {
        match self {
            Self::Unbounded(receiver) => receiver.recv().await,
            Self::Bounded(receiver) => receiver.recv().await,
        }
    }
}
