//! A device's offline queue as a value: the async commands waiting for it to connect, oldest
//! first, at most [`MAX_QUEUED_PER_DEVICE`]. Stored whole in one record per device, so one read
//! tells whether a device has anything queued and one compare-and-set changes it.

use serde::{Deserialize, Serialize};

/// Most commands queued for one device (docs/commands.md); beyond it a new one is refused.
pub const MAX_QUEUED_PER_DEVICE: usize = 100;

/// One queued command: its message id and when its TTL runs out (epoch ms).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct QueuedEntry {
    pub message_id: String,
    pub expires_at: i64,
}

/// A device's queue, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Queue(pub Vec<QueuedEntry>);

/// The queue is at its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueFull;

// === impl Queue ===

impl Queue {
    /// Appends `entry`, unless the queue is full.
    pub fn push(&mut self, entry: QueuedEntry) -> Result<(), QueueFull> {
        if self.0.len() >= MAX_QUEUED_PER_DEVICE {
            return Err(QueueFull);
        }
        if !self.0.iter().any(|e| e.message_id == entry.message_id) {
            self.0.push(entry);
        }
        Ok(())
    }

    /// Removes the entries whose ids are in `done`; returns whether any was there.
    pub fn remove(&mut self, done: &[String]) -> bool {
        let before = self.0.len();
        self.0.retain(|e| !done.contains(&e.message_id));
        self.0.len() != before
    }

    /// The ids of the entries whose TTL has run out at `now`, in queue order.
    pub fn expired(&self, now: i64) -> Vec<String> {
        self.0.iter().filter(|e| e.expires_at <= now).map(|e| e.message_id.clone()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: usize, expires_at: i64) -> QueuedEntry {
        QueuedEntry { message_id: id.to_string(), expires_at }
    }

    #[test]
    fn a_queue_keeps_order_and_refuses_beyond_its_bound() {
        let mut queue = Queue::default();
        for i in 0..MAX_QUEUED_PER_DEVICE {
            queue.push(entry(i, 1000)).unwrap();
        }
        assert_eq!(queue.push(entry(MAX_QUEUED_PER_DEVICE, 1000)), Err(QueueFull));
        let ids: Vec<String> = queue.0.iter().map(|e| e.message_id.clone()).collect();
        assert_eq!(ids, (0..MAX_QUEUED_PER_DEVICE).map(|i| i.to_string()).collect::<Vec<_>>());

        // Taking one out makes room again, at the end.
        assert!(queue.remove(&["0".to_owned()]));
        queue.push(entry(999, 1000)).unwrap();
        assert_eq!(queue.0.first().unwrap().message_id, "1");
        assert_eq!(queue.0.last().unwrap().message_id, "999");
    }

    #[test]
    fn pushing_the_same_command_twice_queues_it_once() {
        let mut queue = Queue::default();
        queue.push(entry(1, 10)).unwrap();
        queue.push(entry(1, 10)).unwrap();
        assert_eq!(queue.0.len(), 1);
    }

    #[test]
    fn expired_entries_are_those_at_or_past_their_time() {
        let queue = Queue(vec![entry(1, 100), entry(2, 300), entry(3, 200)]);
        assert_eq!(queue.expired(99), Vec::<String>::new());
        assert_eq!(queue.expired(200), vec!["1".to_owned(), "3".to_owned()]);
    }

    #[test]
    fn removing_keeps_entries_added_meanwhile() {
        // A flush removes what it handled; what a caller queued during the flush stays.
        let mut queue = Queue(vec![entry(1, 10), entry(2, 10), entry(3, 10)]);
        assert!(queue.remove(&["1".to_owned(), "2".to_owned()]));
        assert_eq!(queue.0, vec![entry(3, 10)]);
        assert!(!queue.remove(&["1".to_owned()]));
    }
}
