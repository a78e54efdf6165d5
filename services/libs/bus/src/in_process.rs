//! The embedded bus: everything in one process, on tokio channels.
//!
//! Stream messages go to every consumer group whose filter matches, round-robin among the
//! group's members; a delivery dropped without ack is handed to the group again. Nothing
//! outlives the process: in embedded mode the consumers persist what they must themselves.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use parking_lot::RwLock;
use tokio::sync::mpsc;

use crate::{Acker, Bus, BusError, BusMessage, Consumer, Delivery, Subscription, subject};

/// A [`Bus`] inside one process.
#[derive(Clone, Default)]
pub struct InProcessBus {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    subscribers: RwLock<Vec<(String, mpsc::UnboundedSender<BusMessage>)>>,
    groups: RwLock<Vec<Group>>,
}

struct Group {
    name: String,
    filter: String,
    members: Vec<mpsc::UnboundedSender<Delivery>>,
    next: AtomicUsize,
}

/// Acking an in-process delivery only disarms its redelivery.
struct InProcessAck {
    redeliver: Option<(Arc<Inner>, String, BusMessage)>,
}

// === impl InProcessBus ===

impl InProcessBus {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Bus for InProcessBus {
    async fn publish_durable(&self, message: BusMessage) -> Result<(), BusError> {
        let names: Vec<String> = {
            let groups = self.inner.groups.read();
            groups.iter().filter(|g| subject::matches(&g.filter, &message.subject)).map(|g| g.name.clone()).collect()
        };
        for name in names {
            self.inner.deliver(&name, message.clone());
        }
        // As on NATS, stream subjects are seen by core subscribers too.
        self.publish(message).await
    }

    async fn publish(&self, message: BusMessage) -> Result<(), BusError> {
        let mut dead = false;
        for (filter, sender) in self.inner.subscribers.read().iter() {
            if subject::matches(filter, &message.subject) {
                dead |= sender.send(message.clone()).is_err();
            }
        }
        if dead {
            self.inner.subscribers.write().retain(|(_, s)| !s.is_closed());
        }
        Ok(())
    }

    async fn subscribe(&self, filter: &str) -> Result<Subscription, BusError> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.inner.subscribers.write().push((filter.to_owned(), tx));
        Ok(Subscription::new(rx))
    }

    async fn consume(&self, group: &str, filter: &str) -> Result<Consumer, BusError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut groups = self.inner.groups.write();
        match groups.iter_mut().find(|g| g.name == group) {
            Some(existing) => existing.members.push(tx),
            None => groups.push(Group {
                name: group.to_owned(),
                filter: filter.to_owned(),
                members: vec![tx],
                next: AtomicUsize::new(0),
            }),
        }
        Ok(Consumer::new(rx))
    }
}

// === impl Inner ===

impl Inner {
    fn deliver(self: &Arc<Self>, group: &str, message: BusMessage) {
        let mut message = Some(message);
        loop {
            let groups = self.groups.read();
            let Some(g) = groups.iter().find(|g| g.name == group) else {
                return;
            };
            let live: Vec<_> = g.members.iter().filter(|m| !m.is_closed()).collect();
            if live.is_empty() {
                return;
            }
            let member = live[g.next.fetch_add(1, Ordering::Relaxed) % live.len()];
            let Some(msg) = message.take() else {
                return;
            };
            let ack = InProcessAck { redeliver: Some((self.clone(), group.to_owned(), msg.clone())) };
            match member.send(Delivery::new(msg, Box::new(ack))) {
                Ok(()) => return,
                Err(mpsc::error::SendError(mut delivery)) => {
                    delivery.disarm();
                    message = Some(delivery.message);
                }
            }
        }
    }
}

// === impl InProcessAck ===

#[async_trait]
impl Acker for InProcessAck {
    async fn ack(mut self: Box<Self>) -> Result<(), BusError> {
        self.redeliver = None;
        Ok(())
    }
}

impl Drop for InProcessAck {
    fn drop(&mut self) {
        if let Some((inner, group, message)) = self.redeliver.take() {
            inner.deliver(&group, message);
        }
    }
}

impl Delivery {
    fn disarm(&mut self) {
        // Only used for in-process deliveries that never reached a member.
        self.acker = Box::new(InProcessAck { redeliver: None });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn groups_share_work_and_unacked_messages_come_back() {
        let bus = InProcessBus::new();
        let mut a = bus.consume("history", "tether.up.>").await.unwrap();
        let mut other = bus.consume("rules", "tether.up.>").await.unwrap();
        bus.publish_durable(BusMessage::new("tether.up.t.pk.dn.property", "1")).await.unwrap();
        let first = a.next().await.unwrap();
        assert_eq!(first.message.payload, "1");
        other.next().await.unwrap().ack().await.unwrap();
        // A member that drops the delivery without ack: the group gets it again.
        drop(first);
        let again = a.next().await.unwrap();
        assert_eq!(again.message.payload, "1");
        again.ack().await.unwrap();
    }

    #[tokio::test]
    async fn core_subscribers_see_only_matching_subjects() {
        let bus = InProcessBus::new();
        let mut sub = bus.subscribe("tether.edge.n1.down").await.unwrap();
        bus.publish(BusMessage::new("tether.edge.n2.down", "no")).await.unwrap();
        bus.publish(BusMessage::new("tether.edge.n1.down", "yes")).await.unwrap();
        assert_eq!(sub.next().await.unwrap().payload, "yes");
    }
}
