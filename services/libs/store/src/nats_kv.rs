//! The cluster-mode [`KvStore`]: one NATS JetStream KV bucket.
//!
//! Store keys become NATS KV keys through [`key`]: each path segment is one subject token, so a
//! prefix ending in `/` is a subject filter (`device/pk/` → `device.pk.>`). Revisions are the
//! bucket's stream sequence numbers: each write gets a new, larger one, but they count writes to
//! the whole bucket, not to one key. Compare-and-set is JetStream's expected-last-subject-sequence
//! check, so it holds across every client and replica of the bucket.
//!
//! A write returns once JetStream has acknowledged it. That means "on disk" only when the
//! servers run with `sync_interval: always` (see STACK.md). A [`StoreError::Backend`] from a
//! write leaves its outcome unknown: the write may have been applied and only its ack lost.

mod key;

use std::collections::BTreeMap;
use std::collections::btree_map;
use std::fmt::Display;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateError, UpdateErrorKind};
use async_nats::jetstream::stream::StorageType;
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};

use crate::{Entry, Expect, KvStore, Revision, StoreError};

/// How long [`NatsKvStore::connect`] waits for a server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Entries fetched per request while listing.
const LIST_BATCH: usize = 512;
/// How long a [`NatsKvStore::ping`] may take (readiness probes wait about a second).
const PING_TIMEOUT: Duration = Duration::from_secs(1);
/// How long `list` waits for the next delivery before it gives up.
const LIST_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the server keeps an abandoned list consumer (one whose client died mid-list).
const LIST_CONSUMER_IDLE: Duration = Duration::from_secs(30);
/// Header the KV clients set on delete and purge markers.
const KV_OPERATION: &str = "KV-Operation";
/// Header the server sets on the markers it writes itself (TTL expiry).
const NATS_MARKER_REASON: &str = "Nats-Marker-Reason";

/// A [`KvStore`] on a NATS JetStream KV bucket (cluster mode).
///
/// [`list`](KvStore::list) and [`watch`](Self::watch) take prefixes that are empty or end with
/// `/` (`device/pk/`): those map onto subject filters. A prefix ending inside a segment (`dev`)
/// still gives the right answer, but reads its whole parent (here: the whole bucket) to get it.
#[derive(Clone)]
pub struct NatsKvStore {
    client: async_nats::Client,
    kv: kv::Store,
}

/// A change to one key, as [`NatsKvStore::watch`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The key was written; the entry holds the new value and revision.
    Put(Entry),
    /// The key was deleted; `revision` is the delete's own.
    Delete { key: String, revision: Revision },
}

/// The changes under a prefix, in the order the bucket applied them.
///
/// An `Err` item reports an interruption (the server went away, heartbeats stopped), not the
/// end: the stream carries on by itself once the client has reconnected, from the change after
/// the last one it delivered. Only the latest version of a key is kept, so versions overwritten
/// during the gap are not reported, but the latest one is. A cache fed by this stream should drop
/// what it holds on an `Err`, since it could not be told of changes while it lasted.
pub struct ChangeStream {
    inner: BoxStream<'static, Result<Change, StoreError>>,
}

// === impl NatsKvStore ===

impl NatsKvStore {
    /// Connects to the NATS server(s) at `url` and opens `bucket`, creating it when missing
    /// (file storage, `replicas` copies, latest value only). Fails at once, naming `url`, when
    /// no server answers or JetStream is not enabled.
    pub async fn connect(url: &str, bucket: &str, replicas: usize) -> Result<Self, StoreError> {
        let unavailable =
            |what: String, err: &dyn Display| StoreError::Backend(format!("nats at {url}: {what}: {err}"));
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(CONNECT_TIMEOUT)
            .connect(url)
            .await
            .map_err(|e| unavailable("cannot connect".into(), &e))?;
        let js = async_nats::jetstream::new(client.clone());
        let kv = match js.get_key_value(bucket).await {
            Ok(kv) => kv,
            Err(_) => {
                let config = kv::Config {
                    bucket: bucket.to_owned(),
                    history: 1,
                    storage: StorageType::File,
                    num_replicas: replicas,
                    ..Default::default()
                };
                match js.create_key_value(config).await {
                    Ok(kv) => kv,
                    // Another process may have created it in the meantime.
                    Err(create) => js
                        .get_key_value(bucket)
                        .await
                        .map_err(|_| unavailable(format!("cannot create kv bucket {bucket}"), &create))?,
                }
            }
        };
        Ok(Self { client, kv })
    }

    /// Checks that the bucket answers, within a second (readiness): the client is connected and
    /// JetStream returns the bucket's info.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let unavailable = |why: &dyn Display| StoreError::Backend(format!("nats kv bucket {}: {why}", self.kv.name));
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(unavailable(&"not connected to nats"));
        }
        match tokio::time::timeout(PING_TIMEOUT, self.kv.stream.get_info()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(unavailable(&e)),
            Err(_) => Err(unavailable(&"no answer from jetstream")),
        }
    }

    /// Reports every change under `prefix` made from now on (not the current entries: read
    /// those after the watch has started, so that no change falls between the two).
    pub async fn watch(&self, prefix: &str) -> Result<ChangeStream, StoreError> {
        let watch = self.kv.watch(key::filter(prefix)).await.map_err(|e| backend("watch", prefix, e))?;
        let prefix = prefix.to_owned();
        let inner = watch.filter_map(move |item| std::future::ready(change(item, &prefix))).boxed();
        Ok(ChangeStream { inner })
    }

    /// Reads the latest version of every key the consumer holds that starts with `prefix`.
    async fn drain(&self, consumer: &PullConsumer, prefix: &str) -> Result<Vec<Entry>, StoreError> {
        // Keys written while listing arrive again after their older version: keep the newest.
        let mut latest: BTreeMap<String, (u64, Option<Bytes>)> = BTreeMap::new();
        let mut delivered = 0;
        let mut pending = consumer.cached_info().num_pending;
        while pending > 0 {
            let mut batch =
                consumer.fetch().max_messages(LIST_BATCH).messages().await.map_err(|e| backend("list", prefix, e))?;
            let mut fetched = 0;
            loop {
                let Ok(next) = tokio::time::timeout(LIST_IDLE_TIMEOUT, batch.next()).await else {
                    return Err(StoreError::Backend(format!("nats kv list of {prefix}: timed out")));
                };
                let Some(message) = next else { break };
                let message = message.map_err(|e| backend("list", prefix, e))?;
                let info = message.info().map_err(|e| backend("list", prefix, e))?;
                fetched += 1;
                delivered += 1;
                // Nothing is acked or redelivered, so a gap means a delivery was dropped.
                if info.consumer_sequence != delivered {
                    return Err(StoreError::Backend(format!("nats kv list of {prefix}: deliveries lost, retry")));
                }
                pending = info.pending;
                let revision = info.stream_sequence;
                let Some(key) = decode_subject(&self.kv, &message.subject) else { continue };
                if !key.starts_with(prefix) {
                    continue;
                }
                let value = is_put(message.headers.as_ref()).then(|| message.payload.clone());
                match latest.entry(key) {
                    btree_map::Entry::Vacant(slot) => {
                        slot.insert((revision, value));
                    }
                    btree_map::Entry::Occupied(mut slot) if slot.get().0 < revision => {
                        slot.insert((revision, value));
                    }
                    btree_map::Entry::Occupied(_) => {}
                }
            }
            if fetched == 0 {
                break;
            }
        }
        Ok(latest
            .into_iter()
            .filter_map(|(key, (revision, value))| Some(Entry { key, value: value?, revision: Revision(revision) }))
            .collect())
    }
}

#[async_trait]
impl KvStore for NatsKvStore {
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let entry = self.kv.entry(key::encode(key)).await.map_err(|e| backend("get", key, e))?;
        Ok(entry.filter(|e| e.operation == Operation::Put).map(|e| Entry {
            key: key.to_owned(),
            value: e.value,
            revision: Revision(e.revision),
        }))
    }

    async fn put(&self, key: &str, value: Bytes, expect: Expect) -> Result<Revision, StoreError> {
        let nats_key = key::encode(key);
        let revision = match expect {
            Expect::Any => self.kv.put(&nats_key, value).await.map_err(|e| backend("put", key, e))?,
            Expect::Absent => self.kv.create(&nats_key, value).await.map_err(|e| match e.kind() {
                CreateErrorKind::AlreadyExists => conflict(key),
                _ => backend("create", key, e),
            })?,
            // No stored version has revision 0, and NATS would read 0 as "absent".
            Expect::Revision(Revision(0)) => return Err(conflict(key)),
            Expect::Revision(Revision(revision)) => {
                self.kv.update(&nats_key, value, revision).await.map_err(|e| write_error("update", key, e))?
            }
        };
        Ok(Revision(revision))
    }

    async fn delete(&self, key: &str, expect: Expect) -> Result<(), StoreError> {
        let nats_key = key::encode(key);
        match expect {
            Expect::Revision(Revision(0)) => Err(conflict(key)),
            Expect::Revision(Revision(revision)) => self
                .kv
                .delete_expect_revision(&nats_key, Some(revision))
                .await
                .map_err(|e| write_error("delete", key, e)),
            Expect::Any | Expect::Absent => {
                // Reading first spares a delete marker (kept forever) for a key that is not there.
                let present = self.get(key).await?.is_some();
                match (present, expect) {
                    (false, _) => Ok(()),
                    (true, Expect::Absent) => Err(conflict(key)),
                    (true, _) => self.kv.delete(&nats_key).await.map_err(|e| backend("delete", key, e)),
                }
            }
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Entry>, StoreError> {
        // An ephemeral consumer delivering the last message of each matching key, nothing acked.
        let config = pull::Config {
            filter_subject: format!("{}{}", self.kv.prefix, key::filter(prefix)),
            deliver_policy: DeliverPolicy::LastPerSubject,
            ack_policy: AckPolicy::None,
            memory_storage: true,
            inactive_threshold: LIST_CONSUMER_IDLE,
            ..Default::default()
        };
        let consumer = self.kv.stream.create_consumer(config).await.map_err(|e| backend("list", prefix, e))?;
        let entries = self.drain(&consumer, prefix).await;
        // The server would drop the consumer once idle; deleting it now keeps the bucket tidy.
        if let Err(error) = self.kv.stream.delete_consumer(&consumer.cached_info().name).await {
            tracing::debug!(%error, "list consumer not deleted");
        }
        entries
    }
}

// === impl Change ===

impl Change {
    pub fn key(&self) -> &str {
        match self {
            Change::Put(entry) => &entry.key,
            Change::Delete { key, .. } => key,
        }
    }

    pub fn revision(&self) -> Revision {
        match self {
            Change::Put(entry) => entry.revision,
            Change::Delete { revision, .. } => *revision,
        }
    }
}

// === impl ChangeStream ===

impl Stream for ChangeStream {
    type Item = Result<Change, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

/// Turns one watched KV entry into a [`Change`], or `None` when it is not under `prefix`.
fn change(item: Result<kv::Entry, kv::WatcherError>, prefix: &str) -> Option<Result<Change, StoreError>> {
    let entry = match item {
        Ok(entry) => entry,
        Err(e) => return Some(Err(backend("watch", prefix, e))),
    };
    let key = match key::decode(&entry.key) {
        Ok(key) => key,
        Err(key::BadKey(nats_key)) => {
            tracing::warn!(%nats_key, "kv key not written by tether skipped");
            return None;
        }
    };
    if !key.starts_with(prefix) {
        return None;
    }
    let revision = Revision(entry.revision);
    Some(Ok(match entry.operation {
        Operation::Put => Change::Put(Entry { key, value: entry.value, revision }),
        Operation::Delete | Operation::Purge => Change::Delete { key, revision },
    }))
}

/// The store key of a message on the bucket's stream, or `None` for keys Tether did not write.
fn decode_subject(kv: &kv::Store, subject: &str) -> Option<String> {
    let nats_key = subject.strip_prefix(kv.prefix.as_str())?;
    match key::decode(nats_key) {
        Ok(key) => Some(key),
        Err(key::BadKey(nats_key)) => {
            tracing::warn!(%nats_key, "kv key not written by tether skipped");
            None
        }
    }
}

/// Whether a message on the bucket's stream is a value (not a delete or purge marker).
fn is_put(headers: Option<&async_nats::HeaderMap>) -> bool {
    let Some(headers) = headers else { return true };
    let marker = headers.get(KV_OPERATION).is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE");
    !marker && headers.get(NATS_MARKER_REASON).is_none()
}

fn conflict(key: &str) -> StoreError {
    StoreError::Conflict { key: key.to_owned() }
}

/// Maps a revision-checked write's error: a wrong last revision is a [`StoreError::Conflict`].
fn write_error(op: &str, key: &str, err: UpdateError) -> StoreError {
    match err.kind() {
        UpdateErrorKind::WrongLastRevision => conflict(key),
        _ => backend(op, key, err),
    }
}

fn backend(op: &str, key: &str, err: impl Display) -> StoreError {
    StoreError::Backend(format!("nats kv {op} of {key}: {err}"))
}
