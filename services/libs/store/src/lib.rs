//! Storage traits shared by every service, with their adapters.
//!
//! [`KvStore`] is a small key-value store with revision-checked writes (compare-and-set), the
//! shape of NATS JetStream KV. Embedded mode uses [`FjallStore`] under `--data-dir`; a write that
//! returns `Ok` has been synced to disk.

mod fjall_store;
mod nats_kv;
pub mod records;
mod redis_routes;
mod routes;

use async_trait::async_trait;
use bytes::Bytes;

pub use fjall_store::FjallStore;
pub use nats_kv::{Change, ChangeStream, NatsKvStore};
pub use records::Records;
pub use redis_routes::{Claim, RedisRoutes, RedisRoutesConfig};
pub use routes::{LocalRoutes, Presence, Route, SessionRoutes};

/// Names one stored version of a key: every write returns a new revision, larger than the one
/// it replaced, and never 0. The numbers are the backend's: a per-key count from 1 in
/// [`FjallStore`], the bucket-wide sequence in [`NatsKvStore`]; only compare them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision(pub u64);

/// A stored value with its key and revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: Bytes,
    pub revision: Revision,
}

/// The condition a write needs to hold to succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Write whatever is stored.
    Any,
    /// The key must not exist (create).
    Absent,
    /// The key must be at this revision (update).
    Revision(Revision),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The write's [`Expect`] did not hold: another writer got there first.
    #[error("revision conflict on key {key}")]
    Conflict { key: String },
    #[error("storage failure: {0}")]
    Backend(String),
}

/// A key-value store with compare-and-set writes. Keys are `/`-separated paths.
#[async_trait]
pub trait KvStore: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError>;

    /// Writes `value` when `expect` holds and returns the new revision.
    async fn put(&self, key: &str, value: Bytes, expect: Expect) -> Result<Revision, StoreError>;

    /// Deletes `key` when `expect` holds; deleting a missing key with [`Expect::Any`] succeeds.
    async fn delete(&self, key: &str, expect: Expect) -> Result<(), StoreError>;

    /// Every entry whose key starts with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<Entry>, StoreError>;

    /// Writes several values, each only when its own [`Expect`] holds, and returns each write's
    /// outcome in order. Not atomic across keys; the embedded store syncs once for the whole
    /// batch, which is what makes it worth calling. The keys must be distinct.
    async fn put_many(&self, writes: Vec<(String, Bytes, Expect)>) -> Vec<Result<Revision, StoreError>> {
        let mut outcomes = Vec::with_capacity(writes.len());
        for (key, value, expect) in writes {
            outcomes.push(self.put(&key, value, expect).await);
        }
        outcomes
    }
}
