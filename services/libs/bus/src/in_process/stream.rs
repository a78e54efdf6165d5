//! The durable stream of the embedded bus: a log in fjall and the one thread that writes it.
//!
//! Everything that changes the stream is an [`Op`] on the writer's queue: appends, group joins,
//! acks, dropped deliveries, close. The writer takes all queued ops at once, stages them in one
//! batch, commits it (with `fsync` if it holds appends), answers every waiting publisher, then
//! hands new messages to the groups. Owning the groups on one thread keeps them lock-free and
//! keeps deliveries in sequence order.

use std::path::Path;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, OwnedWriteBatch, PersistMode};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, warn};

use super::group::{Fill, Group, GroupId};
use super::record::{self, Record};
use crate::{BusError, BusMessage, Consumer, Delivery};

/// Retention limits of the embedded stream. A message goes once every group has acked it, or
/// once it is older or further back than these allow, acked or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// How long the log keeps a message (the NATS adapter's `max_age`).
    pub max_age: Duration,
    /// How many messages the log keeps at most; the oldest go first.
    pub max_messages: u64,
}

/// The handle side of the stream; dropping it closes the stream.
pub(super) struct Stream {
    ops: std_mpsc::Sender<Op>,
    closed: watch::Receiver<bool>,
    writer: Option<std::thread::JoinHandle<()>>,
}

/// What the writer is asked to do.
pub(super) enum Op {
    Append { record: Vec<u8>, done: oneshot::Sender<Result<(), BusError>> },
    Join(Join),
    Ack { group: GroupId, seq: u64 },
    Redeliver { group: GroupId, seq: u64, message: BusMessage },
    Close,
}

pub(super) struct Join {
    group: String,
    filter: String,
    member: mpsc::UnboundedSender<Delivery>,
    done: oneshot::Sender<Result<(), BusError>>,
}

/// Ops the writer takes into one batch at most.
const MAX_BATCH: usize = 4096;

/// Log entries one batch deletes at most; the rest go in the next ones.
const DELETE_LIMIT: u64 = 16_384;

/// How long the writer sleeps when idle: it then stores floors that reads moved, and checks ages.
const TICK: Duration = Duration::from_secs(1);

/// How often retention by age looks at the oldest messages.
const AGE_CHECK: Duration = Duration::from_secs(10);

/// Meta key of the last sequence number handed out: the log may be empty after retention, and
/// a number must never be used twice (a group's floor may already cover it).
const LAST_SEQ: &str = "last-seq";

/// The fjall database and its keyspaces.
struct Storage {
    db: Database,
    /// Sequence number → record.
    log: Keyspace,
    /// Group name → floor and filter.
    groups: Keyspace,
    /// Group and sequence number → nothing: an ack above the group's floor.
    acks: Keyspace,
    meta: Keyspace,
}

/// The writer thread's state.
struct Writer {
    storage: Storage,
    ops: std_mpsc::Receiver<Op>,
    /// Given to every delivery, to report acks and drops.
    reports: std_mpsc::Sender<Op>,
    limits: StreamLimits,
    groups: Vec<Group>,
    /// The oldest sequence number the log may still hold.
    first: u64,
    /// The newest sequence number stored.
    last: u64,
    next_age_check: Instant,
    /// Why the stream takes no more messages: fjall refuses every write after a failed one.
    failed: Option<String>,
}

/// How one turn of the writer ended.
enum Turn {
    Idle,
    /// Work is left (a long deletion, a long scan): take the next turn at once.
    Busy,
    Closed,
}

// === impl StreamLimits ===

impl Default for StreamLimits {
    fn default() -> Self {
        Self { max_age: Duration::from_secs(7 * 24 * 3600), max_messages: 1_000_000 }
    }
}

// === impl Stream ===

impl Stream {
    /// Opens (or creates) the stream in `dir`; a `temporary` one is deleted once closed.
    pub fn open(dir: &Path, limits: StreamLimits, temporary: bool) -> Result<Self, BusError> {
        let storage = Storage::open(dir, temporary)?;
        let (ops, queue) = std_mpsc::channel();
        let writer = Writer::recover(storage, queue, ops.clone(), limits)?;
        let (closed_tx, closed) = watch::channel(false);
        let writer = std::thread::Builder::new()
            .name("bus-writer".to_owned())
            .spawn(move || {
                writer.run();
                // The writer is gone, and with it fjall's lock on the directory.
                let _ = closed_tx.send(true);
            })
            .map_err(|e| BusError::Unavailable(format!("cannot start the bus writer: {e}")))?;
        Ok(Self { ops, closed, writer: Some(writer) })
    }

    /// Returns once `message` is on disk.
    pub async fn append(&self, message: &BusMessage) -> Result<(), BusError> {
        let record = Record::encode(now_ms(), message)?;
        let (done, stored) = oneshot::channel();
        self.ops.send(Op::Append { record, done }).map_err(|_| BusError::Closed)?;
        stored.await.map_err(|_| BusError::Closed)?
    }

    /// Adds a member to `group`, creating the group on first use.
    pub async fn join(&self, group: &str, filter: &str) -> Result<Consumer, BusError> {
        let (member, deliveries) = mpsc::unbounded_channel();
        let (done, joined) = oneshot::channel();
        let join = Join { group: group.to_owned(), filter: filter.to_owned(), member, done };
        self.ops.send(Op::Join(join)).map_err(|_| BusError::Closed)?;
        joined.await.map_err(|_| BusError::Closed)??;
        Ok(Consumer::new(deliveries))
    }

    /// Stores what is queued, ends every consumer and returns once the directory is released.
    pub async fn close(&self) {
        let _ = self.ops.send(Op::Close);
        let mut closed = self.closed.clone();
        // An error means the writer thread is gone too.
        let _ = closed.wait_for(|closed| *closed).await;
    }
}

impl Drop for Stream {
    /// Closes the stream and waits for the writer's last batch, so that the directory is released
    /// (and a temporary one deleted) when the last handle goes, not some time later. After
    /// [`Stream::close`] this returns at once.
    fn drop(&mut self) {
        let _ = self.ops.send(Op::Close);
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            error!("bus writer panicked");
        }
    }
}

// === impl Storage ===

impl Storage {
    fn open(dir: &Path, temporary: bool) -> Result<Self, BusError> {
        let unavailable = |e: fjall::Error| BusError::Unavailable(format!("bus stream in {}: {e}", dir.display()));
        let db = Database::builder(dir).temporary(temporary).open().map_err(unavailable)?;
        let keyspace = |name: &str| db.keyspace(name, KeyspaceCreateOptions::default).map_err(unavailable);
        Ok(Self {
            log: keyspace("log")?,
            groups: keyspace("groups")?,
            acks: keyspace("acks")?,
            meta: keyspace("meta")?,
            db,
        })
    }

    /// The last sequence number handed out: the meta key, or the newest log key if that is newer.
    fn last_seq(&self) -> Result<u64, BusError> {
        let stored = match self.meta.get(LAST_SEQ).map_err(read_error)? {
            Some(raw) => record::parse_log_key(&raw).unwrap_or_else(|error| {
                warn!(%error, "corrupt bus sequence counter, taking the newest log key");
                0
            }),
            None => 0,
        };
        Ok(stored.max(seq_of(self.log.last_key_value())?.unwrap_or(0)))
    }

    fn first_seq(&self) -> Result<Option<u64>, BusError> {
        seq_of(self.log.first_key_value())
    }

    /// The stored groups, with their acks above the floor.
    fn groups(&self) -> Result<Vec<Group>, BusError> {
        let mut groups = Vec::new();
        for entry in self.groups.iter() {
            let (name, value) = entry.into_inner().map_err(read_error)?;
            match restore_group(groups.len(), &name, &value) {
                Ok(group) => groups.push(group),
                Err(error) => warn!(%error, "corrupt bus group record skipped"),
            }
        }
        for entry in self.acks.iter() {
            let key = entry.key().map_err(read_error)?;
            match record::parse_ack_key(&key) {
                Ok((name, seq)) => match groups.iter_mut().find(|g| g.name() == name) {
                    Some(group) => group.restore_ack(seq),
                    None => debug!(group = %name, sequence = seq, "ack of an unknown group ignored"),
                },
                Err(error) => warn!(%error, "corrupt bus ack key skipped"),
            }
        }
        Ok(groups)
    }
}

// === impl Writer ===

impl Writer {
    fn recover(
        storage: Storage,
        ops: std_mpsc::Receiver<Op>,
        reports: std_mpsc::Sender<Op>,
        limits: StreamLimits,
    ) -> Result<Self, BusError> {
        let last = storage.last_seq()?;
        let first = storage.first_seq()?.unwrap_or(last + 1);
        let groups = storage.groups()?;
        let next_age_check = Instant::now();
        Ok(Self { storage, ops, reports, limits, groups, first, last, next_age_check, failed: None })
    }

    fn run(mut self) {
        // The first turn runs at once: retention of what aged while closed, deliveries to none yet.
        let mut wait = Duration::ZERO;
        loop {
            let mut ops = Vec::new();
            match self.ops.recv_timeout(wait) {
                Ok(op) => ops.push(op),
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
            }
            ops.extend(self.ops.try_iter().take(MAX_BATCH));
            wait = match self.turn(ops) {
                Turn::Idle => TICK,
                Turn::Busy => Duration::ZERO,
                Turn::Closed => break,
            };
        }
        for group in &mut self.groups {
            group.leave_all();
        }
    }

    /// Applies `ops` in one batch, answers publishers once it is committed, then delivers.
    fn turn(&mut self, ops: Vec<Op>) -> Turn {
        let mut batch = self.storage.db.batch();
        let mut appended = Vec::new();
        let mut joins = Vec::new();
        let mut closing = false;
        for op in ops {
            match op {
                Op::Append { record, done } => self.stage_append(&mut batch, record, done, &mut appended),
                Op::Join(join) => joins.push(join),
                Op::Ack { group, seq } => self.with_group(group, |g| g.ack(seq)),
                Op::Redeliver { group, seq, message } => self.with_group(group, |g| g.requeue(seq, message)),
                Op::Close => closing = true,
            }
        }
        let last = self.last + appended.len() as u64;
        if !appended.is_empty() {
            batch.insert(&self.storage.meta, LAST_SEQ, record::log_key(last));
        }
        for group in &mut self.groups {
            group.stage_acks(&mut batch, &self.storage.groups, &self.storage.acks);
        }
        let (first, deleting) = self.stage_retention(&mut batch, last);
        // Acks and deletions alone need no fsync: lost in a crash, they cost a redelivery.
        let durability = if appended.is_empty() { PersistMode::Buffer } else { PersistMode::SyncAll };
        match batch.durability(Some(durability)).commit() {
            Ok(()) => {
                self.last = last;
                self.first = first;
                for done in appended {
                    let _ = done.send(Ok(()));
                }
            }
            Err(error) => self.fail(&error, appended),
        }
        for join in joins {
            self.join(join);
        }
        if closing {
            return Turn::Closed;
        }
        let reading = self.deliver();
        if deleting || reading { Turn::Busy } else { Turn::Idle }
    }

    fn stage_append(
        &self,
        batch: &mut OwnedWriteBatch,
        record: Vec<u8>,
        done: oneshot::Sender<Result<(), BusError>>,
        appended: &mut Vec<oneshot::Sender<Result<(), BusError>>>,
    ) {
        if let Some(reason) = &self.failed {
            let _ = done.send(Err(BusError::Unavailable(reason.clone())));
            return;
        }
        let seq = self.last + appended.len() as u64 + 1;
        batch.insert(&self.storage.log, record::log_key(seq), record);
        appended.push(done);
    }

    fn with_group(&mut self, id: GroupId, f: impl FnOnce(&mut Group)) {
        if let Some(group) = self.groups.get_mut(id) {
            f(group);
        }
    }

    /// Marks the stream failed after a commit error; publishers waiting on it get the error.
    fn fail(&mut self, error: &fjall::Error, appended: Vec<oneshot::Sender<Result<(), BusError>>>) {
        let reason = format!("bus stream write failed: {error}");
        if self.failed.is_none() {
            error!(%error, "bus stream write failed, durable publishes refused until restart");
            self.failed = Some(reason.clone());
        }
        for done in appended {
            let _ = done.send(Err(BusError::Unavailable(reason.clone())));
        }
    }

    fn join(&mut self, join: Join) {
        let Join { group, filter, member, done } = join;
        let joined = self.find_or_create(&group, &filter).map(|id| self.groups[id].join(member));
        let _ = done.send(joined);
    }

    fn find_or_create(&mut self, name: &str, filter: &str) -> Result<GroupId, BusError> {
        if let Some(id) = self.groups.iter().position(|g| g.name() == name) {
            let existing = self.groups[id].filter();
            if existing != filter {
                // Joining would silently move every member of the group to the new filter.
                return Err(BusError::Invalid(format!("group {name} already consumes {existing}, not {filter}")));
            }
            return Ok(id);
        }
        if let Some(reason) = &self.failed {
            return Err(BusError::Unavailable(reason.clone()));
        }
        // A new group sees the whole retained log, as a NATS consumer with deliver policy All.
        let group = Group::new(self.groups.len(), name, filter, 0)?;
        let mut batch = self.storage.db.batch().durability(Some(PersistMode::SyncAll));
        batch.insert(&self.storage.groups, name.as_bytes(), record::group_record(0, filter));
        batch.commit().map_err(|e| BusError::Unavailable(format!("cannot store group {name}: {e}")))?;
        self.groups.push(group);
        Ok(self.groups.len() - 1)
    }

    /// Lets every group take what it has room for; returns whether a group has more to read.
    fn deliver(&mut self) -> bool {
        let mut more = false;
        for group in &mut self.groups {
            more |= matches!(group.fill(&self.storage.log, self.last, &self.reports), Fill::More);
        }
        more
    }

    /// Stages deletion of what no group needs and what is over the limits. Returns the oldest
    /// sequence number kept and whether more is to be deleted.
    fn stage_retention(&mut self, batch: &mut OwnedWriteBatch, last: u64) -> (u64, bool) {
        let keep_from = self.keep_from(last);
        let delete_to = keep_from.min(self.first + DELETE_LIMIT);
        for seq in self.first..delete_to {
            batch.remove(&self.storage.log, record::log_key(seq));
        }
        // An age check cut short is due again at once.
        let more = delete_to < keep_from || Instant::now() >= self.next_age_check;
        (delete_to.max(self.first), more)
    }

    /// The oldest sequence number to keep: above every group's floor, within the count and age.
    fn keep_from(&mut self, last: u64) -> u64 {
        let end = last + 1;
        let mut from = self.first;
        if let Some(floor) = self.groups.iter().map(Group::floor).min() {
            from = from.max(floor + 1);
        }
        from = from.max(end.saturating_sub(self.limits.max_messages));
        if Instant::now() >= self.next_age_check {
            from = from.max(self.expired_until(from));
        }
        from.min(end)
    }

    /// The first sequence number from `from` on that is younger than the age limit.
    fn expired_until(&mut self, from: u64) -> u64 {
        let max_age_ms = u64::try_from(self.limits.max_age.as_millis()).unwrap_or(u64::MAX);
        let now = now_ms();
        let mut until = from;
        for (scanned, entry) in self.storage.log.range(record::log_key(from)..).enumerate() {
            if scanned as u64 == DELETE_LIMIT {
                // Left due: the next turn looks on from here.
                return until;
            }
            let (key, value) = match entry.into_inner() {
                Ok(entry) => entry,
                Err(error) => {
                    warn!(%error, "cannot read the bus log for retention");
                    break;
                }
            };
            let Ok(seq) = record::parse_log_key(&key) else { continue };
            match Record::published_ms(&value) {
                Ok(published_ms) if published_ms.saturating_add(max_age_ms) > now => break,
                Ok(_) => {}
                // Nobody can read it; it goes with the expired ones rather than holding them up.
                Err(error) => warn!(sequence = seq, %error, "corrupt bus record deleted"),
            }
            until = seq + 1;
        }
        self.next_age_check = Instant::now() + AGE_CHECK;
        until
    }
}

/// A group from its stored record.
fn restore_group(id: GroupId, name: &[u8], value: &[u8]) -> Result<Group, String> {
    let name = std::str::from_utf8(name).map_err(|_| record::Corrupt::NotUtf8.to_string())?;
    let (floor, filter) = record::parse_group_record(value).map_err(|e| e.to_string())?;
    Group::new(id, name, &filter, floor).map_err(|e| e.to_string())
}

/// The sequence number of a log entry.
fn seq_of(entry: Option<fjall::Guard>) -> Result<Option<u64>, BusError> {
    let Some(entry) = entry else { return Ok(None) };
    let key = entry.key().map_err(read_error)?;
    Ok(record::parse_log_key(&key).ok())
}

fn read_error(error: fjall::Error) -> BusError {
    BusError::Unavailable(format!("cannot read the bus stream: {error}"))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
