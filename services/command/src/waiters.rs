//! Synchronous calls waiting for their device's answer (RRPC, sync services).
//!
//! Each command service instance has its own reply subject (`tether.command.<instance>.reply`,
//! one subscription) where edges hand the answers of its calls; a call registers a waiter under
//! `(messageId, device)` before it sends, and the router hands it the answer. The waiter leaves
//! the map when the call ends in any way (answer, deadline, a caller that went away), so a late
//! answer finds nobody and is dropped: it can never reach another call.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tether_bus::Subscription;
use tether_bus::downlink::CallAnswer;
use tether_model::DeviceKey;
use tokio::sync::oneshot;

type Key = (String, DeviceKey);

/// The calls of this instance waiting for an answer.
#[derive(Default)]
pub(crate) struct Waiters {
    pending: Mutex<HashMap<Key, oneshot::Sender<Bytes>>>,
}

/// One call's claim on its answer; dropping it withdraws the claim.
pub(crate) struct Waiter {
    key: Key,
    answer: oneshot::Receiver<Bytes>,
    waiters: Arc<Waiters>,
}

/// How a wait ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    Answered(Bytes),
    /// Nothing came by the deadline.
    TimedOut,
    /// The router stopped (the bus closed): nothing can come any more.
    Gone,
}

// === impl Waiters ===

impl Waiters {
    /// Registers a call waiting for `device`'s answer to `message_id`.
    pub fn register(self: &Arc<Self>, message_id: &str, device: &DeviceKey) -> Waiter {
        let (tx, answer) = oneshot::channel();
        let key = (message_id.to_owned(), device.clone());
        self.pending.lock().insert(key.clone(), tx);
        Waiter { key, answer, waiters: self.clone() }
    }

    /// Hands an answer to its waiter; returns whether one was waiting.
    pub fn answer(&self, message_id: &str, device: &DeviceKey, payload: Bytes) -> bool {
        let waiter = self.pending.lock().remove(&(message_id.to_owned(), device.clone()));
        match waiter {
            Some(tx) => tx.send(payload).is_ok(),
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.pending.lock().len()
    }

    /// Routes the answers arriving on `subscription` until it ends, then releases every waiter.
    pub async fn route(self: Arc<Self>, mut subscription: Subscription) {
        while let Some(message) = subscription.next().await {
            let subject = message.subject.clone();
            let Some(CallAnswer { message_id, device, payload }) = CallAnswer::from_message(message) else {
                tracing::debug!(%subject, "unreadable answer dropped");
                continue;
            };
            if !self.answer(&message_id, &device, payload) {
                tracing::debug!(%device, %message_id, "answer after its call ended dropped");
            }
        }
        tracing::debug!(waiting = self.len(), "reply subscription ended");
        self.pending.lock().clear();
    }
}

// === impl Waiter ===

impl Waiter {
    /// Waits for the answer until `deadline`.
    pub async fn wait(mut self, deadline: tokio::time::Instant) -> Wait {
        match tokio::time::timeout_at(deadline, &mut self.answer).await {
            Ok(Ok(payload)) => Wait::Answered(payload),
            Ok(Err(_)) => Wait::Gone,
            Err(_) => Wait::TimedOut,
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.waiters.pending.lock().remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tether_bus::BusMessage;
    use tokio::time::Instant;

    use super::*;

    fn device(name: &str) -> DeviceKey {
        DeviceKey::parse("pk", name).unwrap()
    }

    fn answer(message_id: &str, device: &DeviceKey, body: &'static str) -> BusMessage {
        let answer = CallAnswer { message_id: message_id.into(), device: device.clone(), payload: Bytes::from(body) };
        answer.to_message("tether.command.c1.reply")
    }

    #[tokio::test]
    async fn an_answer_reaches_only_the_call_with_its_id_and_device() {
        let waiters = Arc::new(Waiters::default());
        let a = waiters.register("1", &device("a"));
        let b = waiters.register("1", &device("b"));
        assert!(!waiters.answer("2", &device("a"), Bytes::from_static(b"x")));
        assert!(waiters.answer("1", &device("b"), Bytes::from_static(b"for b")));
        let soon = Instant::now() + Duration::from_millis(50);
        assert_eq!(b.wait(soon).await, Wait::Answered(Bytes::from_static(b"for b")));
        assert_eq!(a.wait(soon).await, Wait::TimedOut);
        assert_eq!(waiters.len(), 0);
    }

    #[tokio::test]
    async fn a_late_answer_finds_nobody() {
        let waiters = Arc::new(Waiters::default());
        let waiter = waiters.register("1", &device("a"));
        assert_eq!(waiter.wait(Instant::now() + Duration::from_millis(10)).await, Wait::TimedOut);
        assert!(!waiters.answer("1", &device("a"), Bytes::from_static(b"late")));
        // A caller that goes away withdraws too.
        drop(waiters.register("2", &device("a")));
        assert_eq!(waiters.len(), 0);
    }

    #[tokio::test]
    async fn the_router_hands_answers_over_and_releases_waiters_when_its_subscription_ends() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let waiters = Arc::new(Waiters::default());
        let router = tokio::spawn(waiters.clone().route(Subscription::new(rx)));
        let waiter = waiters.register("9", &device("a"));
        tx.send(answer("9", &device("other"), "wrong device")).unwrap();
        tx.send(BusMessage::new("tether.command.c1.reply", "no headers")).unwrap();
        tx.send(answer("9", &device("a"), "right")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(waiter.wait(deadline).await, Wait::Answered(Bytes::from_static(b"right")));

        let waiter = waiters.register("10", &device("a"));
        drop(tx);
        router.await.unwrap();
        assert_eq!(waiter.wait(deadline).await, Wait::Gone);
        assert_eq!(waiters.len(), 0);
    }
}
