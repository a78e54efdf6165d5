//! The embedded [`KvStore`]: one fjall keyspace, values prefixed with their 8-byte revision.
//! Writes are serialized by one lock (that is what makes compare-and-set atomic) and synced to
//! disk before they return. Revisions come from one store-wide counter (kept in the `meta`
//! keyspace, written in the same batch), so a key deleted and created again never reuses a
//! revision a stale writer could still hold.
//!
//! Syncing is a group commit: a write is committed to the journal under the lock, the lock is
//! released, and the write returns once an fsync that began after it has finished. One fsync
//! covers every write committed while the previous one ran, so concurrent writers (a connect
//! storm's presence records, bulk registration) share fsyncs instead of queueing for one each.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use parking_lot::{Condvar, Mutex};

use crate::{Entry, Expect, KvStore, Revision, StoreError};

/// A [`KvStore`] on an embedded fjall database.
#[derive(Clone)]
pub struct FjallStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    kv: Keyspace,
    meta: Keyspace,
    /// The last revision handed out; guarded by the write lock.
    write_lock: Mutex<u64>,
    sync: GroupSync,
}

/// Writers waiting for an fsync that covers their commit.
#[derive(Default)]
struct GroupSync {
    state: Mutex<SyncState>,
    done: Condvar,
}

#[derive(Default)]
struct SyncState {
    /// Commits so far (each one's number is its position).
    committed: u64,
    /// Every commit up to this one is on disk.
    synced: u64,
    /// Every commit up to this one failed to sync, with the error.
    failed: Option<(u64, String)>,
    /// An fsync is running.
    syncing: bool,
}

const LAST_REVISION: &str = "last-revision";

// === impl FjallStore ===

impl FjallStore {
    /// Opens (or creates) the store under `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = Database::builder(dir).open().map_err(backend)?;
        let kv = db.keyspace("kv", KeyspaceCreateOptions::default).map_err(backend)?;
        let meta = db.keyspace("meta", KeyspaceCreateOptions::default).map_err(backend)?;
        let last = match meta.get(LAST_REVISION).map_err(backend)? {
            Some(raw) => u64::from_be_bytes(raw.as_ref().try_into().map_err(|_| backend("bad revision counter"))?),
            None => 0,
        };
        Ok(Self { inner: Arc::new(Inner { db, kv, meta, write_lock: Mutex::new(last), sync: GroupSync::default() }) })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
    }
}

#[async_trait]
impl KvStore for FjallStore {
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let key = key.to_owned();
        self.blocking(move |inner| inner.read(&key)).await
    }

    async fn put(&self, key: &str, value: Bytes, expect: Expect) -> Result<Revision, StoreError> {
        let key = key.to_owned();
        self.blocking(move |inner| {
            let mut last = inner.write_lock.lock();
            let current = inner.read(&key)?.map(|e| e.revision);
            check(&key, current, expect)?;
            let revision = Revision(*last + 1);
            let mut stored = Vec::with_capacity(8 + value.len());
            stored.extend_from_slice(&revision.0.to_be_bytes());
            stored.extend_from_slice(&value);
            let mut batch = inner.db.batch().durability(Some(PersistMode::Buffer));
            batch.insert(&inner.kv, key.as_bytes(), stored);
            batch.insert(&inner.meta, LAST_REVISION, revision.0.to_be_bytes().to_vec());
            batch.commit().map_err(backend)?;
            *last = revision.0;
            let commit = inner.committed();
            drop(last);
            inner.wait_synced(commit)?;
            Ok(revision)
        })
        .await
    }

    async fn put_many(&self, writes: Vec<(String, Bytes, Expect)>) -> Vec<Result<Revision, StoreError>> {
        let count = writes.len();
        let written = self
            .blocking(move |inner| {
                let mut last = inner.write_lock.lock();
                let mut next = *last;
                let mut outcomes = Vec::with_capacity(writes.len());
                let mut batch = inner.db.batch().durability(Some(PersistMode::Buffer));
                for (key, value, expect) in writes {
                    let outcome = inner.read(&key).and_then(|current| {
                        check(&key, current.map(|e| e.revision), expect)?;
                        next += 1;
                        let mut stored = Vec::with_capacity(8 + value.len());
                        stored.extend_from_slice(&next.to_be_bytes());
                        stored.extend_from_slice(&value);
                        batch.insert(&inner.kv, key.as_bytes(), stored);
                        Ok(Revision(next))
                    });
                    outcomes.push(outcome);
                }
                if next != *last {
                    batch.insert(&inner.meta, LAST_REVISION, next.to_be_bytes().to_vec());
                    batch.commit().map_err(backend)?;
                    *last = next;
                    let commit = inner.committed();
                    drop(last);
                    inner.wait_synced(commit)?;
                }
                Ok(outcomes)
            })
            .await;
        // A failed commit fails every write of the batch.
        written.unwrap_or_else(|error| (0..count).map(|_| Err(StoreError::Backend(error.to_string()))).collect())
    }

    async fn delete(&self, key: &str, expect: Expect) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.blocking(move |inner| {
            let last = inner.write_lock.lock();
            let current = inner.read(&key)?.map(|e| e.revision);
            check(&key, current, expect)?;
            if current.is_some() {
                let mut batch = inner.db.batch().durability(Some(PersistMode::Buffer));
                batch.remove(&inner.kv, key.as_bytes());
                batch.commit().map_err(backend)?;
                let commit = inner.committed();
                drop(last);
                inner.wait_synced(commit)?;
            }
            Ok(())
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Entry>, StoreError> {
        let prefix = prefix.to_owned();
        self.blocking(move |inner| {
            let mut entries = Vec::new();
            for guard in inner.kv.prefix(prefix.as_bytes()) {
                let (key, value) = guard.into_inner().map_err(backend)?;
                entries.push(decode(&key, &value)?);
            }
            Ok(entries)
        })
        .await
    }
}

// === impl Inner ===

impl Inner {
    /// Counts a commit just made (under the write lock); its number is what to wait for.
    fn committed(&self) -> u64 {
        let mut state = self.sync.state.lock();
        state.committed += 1;
        state.committed
    }

    /// Returns once commit `commit` is on disk: runs the fsync if none is running, else waits for
    /// the running one and, if it began before this commit, for the next.
    fn wait_synced(&self, commit: u64) -> Result<(), StoreError> {
        let mut state = self.sync.state.lock();
        loop {
            if state.synced >= commit {
                return Ok(());
            }
            if let Some((up_to, error)) = &state.failed
                && *up_to >= commit
            {
                return Err(StoreError::Backend(format!("sync failed: {error}")));
            }
            if state.syncing {
                self.sync.done.wait(&mut state);
                continue;
            }
            state.syncing = true;
            let target = state.committed;
            drop(state);
            let outcome = self.db.persist(PersistMode::SyncAll);
            state = self.sync.state.lock();
            state.syncing = false;
            match outcome {
                Ok(()) => state.synced = target,
                Err(error) => state.failed = Some((target, error.to_string())),
            }
            self.sync.done.notify_all();
        }
    }

    fn read(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        match self.kv.get(key.as_bytes()).map_err(backend)? {
            Some(value) => Ok(Some(decode(key.as_bytes(), &value)?)),
            None => Ok(None),
        }
    }
}

fn check(key: &str, current: Option<Revision>, expect: Expect) -> Result<(), StoreError> {
    let holds = match expect {
        Expect::Any => true,
        Expect::Absent => current.is_none(),
        Expect::Revision(wanted) => current == Some(wanted),
    };
    if holds { Ok(()) } else { Err(StoreError::Conflict { key: key.to_owned() }) }
}

fn decode(key: &[u8], stored: &[u8]) -> Result<Entry, StoreError> {
    let key = String::from_utf8(key.to_vec()).map_err(|_| StoreError::Backend("stored key is not utf-8".into()))?;
    let Some((revision, value)) = stored.split_first_chunk::<8>() else {
        return Err(StoreError::Backend(format!("stored value of {key} is truncated")));
    };
    Ok(Entry { key, value: Bytes::copy_from_slice(value), revision: Revision(u64::from_be_bytes(*revision)) })
}

fn backend(err: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(err.to_string())
}
