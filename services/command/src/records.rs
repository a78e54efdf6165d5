//! Async commands in the [`KvStore`]:
//!
//! - `command/{messageId}`: the command as recorded ([`StoredCommand`]), with what sending it
//!   needs (its payload);
//! - `command-device/{pk}/{dn}/{seq}-{messageId}`: the device's history, one empty-bodied key per
//!   command, in `seq` order (a per-process strictly increasing microsecond clock), so a prefix
//!   listing is oldest first;
//! - `command-queue/{pk}/{dn}`: the device's offline queue ([`Queue`]).
//!
//! Every change is a compare-and-set: read the record and its revision, compute, write only if
//! the revision is unchanged, else read again. Status changes go through [`status::apply`], so two
//! writers (a reply and a `delivered` event, a flush and the sweeper) never both win and a status
//! never moves back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tether_contract::{Command, ServiceError};
use tether_model::DeviceKey;
use tether_store::records::Change;
use tether_store::{Expect, KvStore};

use crate::queue::{Queue, QueueFull, QueuedEntry};
use crate::status::{self, Step};

const RECORD_PREFIX: &str = "command/";
const HISTORY_PREFIX: &str = "command-device/";
const QUEUE_PREFIX: &str = "command-queue/";

/// A command as stored: the public record and the downlink payload (Alink JSON text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StoredCommand {
    #[serde(flatten)]
    pub command: Command,
    pub payload: String,
    /// Its place in the device's history.
    pub seq: u64,
}

/// One command in a device's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HistoryEntry {
    pub device: DeviceKey,
    pub seq: u64,
    pub message_id: String,
}

#[derive(Clone)]
pub(crate) struct Records {
    records: tether_store::Records,
}

// === impl Records ===

impl Records {
    pub fn new(store: Arc<dyn KvStore>) -> Self {
        Self { records: tether_store::Records::new(store) }
    }

    /// Stores a new command and puts it in its device's history.
    pub async fn create(&self, stored: &StoredCommand) -> Result<(), ServiceError> {
        self.records.put(&record_key(&stored.command.message_id), stored, Expect::Absent).await?;
        let entry = HistoryEntry {
            device: device_of(&stored.command),
            seq: stored.seq,
            message_id: stored.command.message_id.clone(),
        };
        self.records.store().put(&entry.key(), Bytes::new(), Expect::Any).await?;
        Ok(())
    }

    pub async fn get(&self, message_id: &str) -> Result<Option<StoredCommand>, ServiceError> {
        self.records.get(&record_key(message_id)).await
    }

    /// Applies `step` to `device`'s command `message_id`; returns the command as it now is when
    /// `step` changed it, `None` when there is no such command or `step` did not apply.
    pub async fn advance(
        &self,
        device: &DeviceKey,
        message_id: &str,
        step: &Step,
        now: i64,
    ) -> Result<Option<StoredCommand>, ServiceError> {
        self.records
            .update(&record_key(message_id), |stored: Option<StoredCommand>| {
                let Some(mut stored) = stored.filter(|s| &device_of(&s.command) == device) else {
                    return Ok((Change::Keep, None));
                };
                if status::apply(&mut stored.command, step, now) {
                    Ok((Change::Put(stored.clone()), Some(stored)))
                } else {
                    Ok((Change::Keep, None))
                }
            })
            .await
    }

    /// The device's history, oldest first.
    pub async fn history(&self, device: &DeviceKey) -> Result<Vec<HistoryEntry>, ServiceError> {
        let prefix = format!("{HISTORY_PREFIX}{}/{}/", device.product_key, device.device_name);
        let entries = self.records.store().list(&prefix).await?;
        Ok(entries.iter().filter_map(|e| HistoryEntry::from_key(&e.key)).collect())
    }

    /// Every device's history, by device then oldest first.
    pub async fn all_history(&self) -> Result<Vec<HistoryEntry>, ServiceError> {
        let entries = self.records.store().list(HISTORY_PREFIX).await?;
        Ok(entries.iter().filter_map(|e| HistoryEntry::from_key(&e.key)).collect())
    }

    /// Deletes a command and its history entry.
    pub async fn forget(&self, entry: &HistoryEntry) -> Result<(), ServiceError> {
        self.records.delete(&record_key(&entry.message_id), Expect::Any).await?;
        self.records.delete(&entry.key(), Expect::Any).await
    }

    pub async fn queue(&self, device: &DeviceKey) -> Result<Queue, ServiceError> {
        Ok(self.records.get(&queue_key(device)).await?.unwrap_or_default())
    }

    /// Appends to the device's queue; [`ServiceError::TooManyRequests`] when it is full.
    pub async fn enqueue(&self, device: &DeviceKey, entry: QueuedEntry) -> Result<(), ServiceError> {
        self.records
            .update(&queue_key(device), |queue: Option<Queue>| {
                let mut queue = queue.unwrap_or_default();
                queue.push(entry.clone()).map_err(|QueueFull| queue_full(device))?;
                Ok((Change::Put(queue), ()))
            })
            .await
    }

    /// Takes the commands in `done` out of the device's queue (an emptied queue is deleted).
    pub async fn dequeue(&self, device: &DeviceKey, done: &[String]) -> Result<(), ServiceError> {
        if done.is_empty() {
            return Ok(());
        }
        self.records
            .update(&queue_key(device), |queue: Option<Queue>| {
                let Some(mut queue) = queue else {
                    return Ok((Change::Keep, ()));
                };
                let change = if !queue.remove(done) {
                    Change::Keep
                } else if queue.is_empty() {
                    Change::Delete
                } else {
                    Change::Put(queue)
                };
                Ok((change, ()))
            })
            .await
    }

    /// Every non-empty queue.
    pub async fn all_queues(&self) -> Result<Vec<(DeviceKey, Queue)>, ServiceError> {
        let entries = self.records.store().list(QUEUE_PREFIX).await?;
        let mut queues = Vec::with_capacity(entries.len());
        for entry in entries {
            let Some(device) = queue_device(&entry.key) else {
                tracing::warn!(key = %entry.key, "queue record with an unreadable key skipped");
                continue;
            };
            queues.push((device, tether_store::Records::decode(&entry.key, &entry.value)?));
        }
        Ok(queues)
    }

    pub async fn delete_queue(&self, device: &DeviceKey) -> Result<(), ServiceError> {
        self.records.delete(&queue_key(device), Expect::Any).await
    }
}

// === impl HistoryEntry ===

impl HistoryEntry {
    fn key(&self) -> String {
        format!(
            "{HISTORY_PREFIX}{}/{}/{:020}-{}",
            self.device.product_key, self.device.device_name, self.seq, self.message_id
        )
    }

    fn from_key(key: &str) -> Option<Self> {
        let mut parts = key.strip_prefix(HISTORY_PREFIX)?.splitn(3, '/');
        let (pk, dn, last) = (parts.next()?, parts.next()?, parts.next()?);
        let (seq, message_id) = last.split_once('-')?;
        Some(Self { device: DeviceKey::parse(pk, dn).ok()?, seq: seq.parse().ok()?, message_id: message_id.to_owned() })
    }
}

/// A place in a device's history: microseconds since the epoch, strictly increasing within this
/// process, so commands made in the same microsecond keep their order.
pub(crate) fn next_seq() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let now = u64::try_from(since_epoch.as_micros()).unwrap_or(u64::MAX);
    // `fetch_update` retries until no other thread got in between, so each caller gets its own.
    let previous = LAST
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| Some(now.max(last + 1)))
        .unwrap_or_else(|last| last);
    now.max(previous + 1)
}

/// The epoch ms a history `seq` was taken at.
pub(crate) fn seq_ms(seq: u64) -> i64 {
    i64::try_from(seq / 1000).unwrap_or(i64::MAX)
}

fn record_key(message_id: &str) -> String {
    format!("{RECORD_PREFIX}{message_id}")
}

fn queue_key(device: &DeviceKey) -> String {
    format!("{QUEUE_PREFIX}{}/{}", device.product_key, device.device_name)
}

fn queue_device(key: &str) -> Option<DeviceKey> {
    let (pk, dn) = key.strip_prefix(QUEUE_PREFIX)?.split_once('/')?;
    DeviceKey::parse(pk, dn).ok()
}

pub(crate) fn device_of(command: &Command) -> DeviceKey {
    DeviceKey::new(command.product_key.clone(), command.device_name.clone())
}

pub(crate) fn queue_full(device: &DeviceKey) -> ServiceError {
    ServiceError::TooManyRequests(format!(
        "device {device} already has {} queued commands",
        crate::queue::MAX_QUEUED_PER_DEVICE
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keys_read_back_and_sort_oldest_first() {
        let device = DeviceKey::parse("pk", "dev.1@home:80").unwrap();
        let early = HistoryEntry { device: device.clone(), seq: 9, message_id: "77".into() };
        let late = HistoryEntry { device: device.clone(), seq: 10, message_id: "5".into() };
        assert_eq!(HistoryEntry::from_key(&early.key()), Some(early.clone()));
        assert!(early.key() < late.key());
        assert_eq!(HistoryEntry::from_key("command-device/pk/dn/x-1"), None);
        assert_eq!(queue_device(&queue_key(&device)), Some(device));
    }

    #[test]
    fn history_places_strictly_increase() {
        let mut last = next_seq();
        for _ in 0..10_000 {
            let seq = next_seq();
            assert!(seq > last);
            last = seq;
        }
        assert!((seq_ms(last) - tether_contract::now_ms()).abs() < 1000);
    }
}
