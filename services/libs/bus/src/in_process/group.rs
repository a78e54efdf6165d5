//! One consumer group of the durable stream: its members, what it has handed out, and how far it
//! has acked. Only the stream's writer thread touches a group; deliveries report back to it
//! through the writer's queue ([`Op::Ack`], [`Op::Redeliver`]).
//!
//! A group reads the log in sequence order from its `cursor`. Everything below its floor,
//! `min(cursor, oldest unacked) - 1`, is acked or not the group's; acks above the floor are kept as
//! one key each until the floor passes them. That is all a restart needs: read again from the
//! floor, skipping the acked keys.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc as std_mpsc;

use async_trait::async_trait;
use fjall::{Keyspace, OwnedWriteBatch};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::record::{self, Record};
use super::stream::Op;
use crate::{Acker, BusError, BusMessage, Delivery, subject};

/// Index of a group in the writer's list; groups are never removed while the stream is open.
pub(super) type GroupId = usize;

/// Deliveries a group may have out unacked at once, so a slow consumer holds a window of the log
/// in memory rather than all of it (NATS' default `max_ack_pending` is 1000).
pub(super) const MAX_IN_FLIGHT: usize = 1024;

/// Log entries one fill looks at, so that a group whose filter matches little does not hold the
/// writer up while it skips a long stretch of the log.
const SCAN_LIMIT: usize = 4096;

pub(super) struct Group {
    id: GroupId,
    name: String,
    filter: String,
    /// `name` as the prefix of this group's ack keys.
    ack_prefix: Vec<u8>,
    members: Vec<mpsc::UnboundedSender<Delivery>>,
    next_member: usize,
    /// The next sequence number to read from the log.
    cursor: u64,
    /// Handed to a member, neither acked nor dropped yet.
    in_flight: BTreeSet<u64>,
    /// Dropped unacked; handed out again before anything new.
    redeliver: BTreeMap<u64, BusMessage>,
    /// Acked since the last batch, not staged yet.
    fresh_acks: Vec<u64>,
    /// Acks above the floor that have a key on disk; after a restart, what to skip when reading.
    acked: BTreeSet<u64>,
    /// The floor as stored.
    floor: u64,
}

/// What a fill found in the log.
pub(super) enum Fill {
    /// Nothing more to do until something is published, acked or dropped.
    Done,
    /// Stopped at the scan limit with more of the log to read.
    More,
}

/// Acks a delivery through the writer; dropped unacked, it hands the message back to its group.
struct GroupAck {
    ops: std_mpsc::Sender<Op>,
    group: GroupId,
    seq: u64,
    redeliver: Option<BusMessage>,
}

// === impl Group ===

impl Group {
    /// A group that has processed everything up to `floor`.
    pub fn new(id: GroupId, name: &str, filter: &str, floor: u64) -> Result<Self, BusError> {
        Ok(Self {
            id,
            name: name.to_owned(),
            filter: filter.to_owned(),
            ack_prefix: record::ack_prefix(name)?,
            members: Vec::new(),
            next_member: 0,
            cursor: floor + 1,
            in_flight: BTreeSet::new(),
            redeliver: BTreeMap::new(),
            fresh_acks: Vec::new(),
            acked: BTreeSet::new(),
            floor,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn filter(&self) -> &str {
        &self.filter
    }

    /// The floor as stored (or staged in the current batch).
    pub fn floor(&self) -> u64 {
        self.floor
    }

    pub fn join(&mut self, member: mpsc::UnboundedSender<Delivery>) {
        self.members.push(member);
    }

    /// Closes every member's channel: their consumers see the end of the stream.
    pub fn leave_all(&mut self) {
        self.members.clear();
    }

    /// Notes an ack key found on disk at startup.
    pub fn restore_ack(&mut self, seq: u64) {
        self.acked.insert(seq);
    }

    pub fn ack(&mut self, seq: u64) {
        if self.in_flight.remove(&seq) {
            self.fresh_acks.push(seq);
        }
    }

    /// Takes back a delivery dropped without ack.
    pub fn requeue(&mut self, seq: u64, message: BusMessage) {
        if self.in_flight.remove(&seq) {
            self.redeliver.insert(seq, message);
        }
    }

    /// Stages this group's new acks and, if it moved, its floor, dropping the ack keys the floor
    /// now covers. Each key is written at most once per batch.
    pub fn stage_acks(&mut self, batch: &mut OwnedWriteBatch, groups: &Keyspace, acks: &Keyspace) {
        let floor = self.current_floor();
        for seq in std::mem::take(&mut self.fresh_acks) {
            if seq > floor {
                batch.insert(acks, record::ack_key(&self.ack_prefix, seq), Vec::new());
                self.acked.insert(seq);
            }
        }
        if floor > self.floor {
            batch.insert(groups, self.name.as_bytes(), record::group_record(floor, &self.filter));
            let above = self.acked.split_off(&(floor + 1));
            for seq in std::mem::replace(&mut self.acked, above) {
                batch.remove(acks, record::ack_key(&self.ack_prefix, seq));
            }
            self.floor = floor;
        }
    }

    /// Hands out what was dropped, then reads on from the cursor while there is room in flight.
    pub fn fill(&mut self, log: &Keyspace, last: u64, ops: &std_mpsc::Sender<Op>) -> Fill {
        while let Some((seq, message)) = self.redeliver.pop_first() {
            if !self.hand_out(seq, message, ops) {
                return Fill::Done;
            }
        }
        let room = MAX_IN_FLIGHT.saturating_sub(self.in_flight.len());
        if room == 0 || self.cursor > last || !self.has_members() {
            return Fill::Done;
        }
        let (found, fill) = self.read(log, room, last);
        for (seq, message) in found {
            self.hand_out(seq, message, ops);
        }
        fill
    }

    /// Everything at or below this is acked or not the group's.
    fn current_floor(&self) -> u64 {
        let oldest_unacked = [self.in_flight.first(), self.redeliver.keys().next()].into_iter().flatten().min();
        oldest_unacked.map_or(self.cursor, |seq| self.cursor.min(*seq)).saturating_sub(1)
    }

    fn has_members(&mut self) -> bool {
        self.members.retain(|member| !member.is_closed());
        !self.members.is_empty()
    }

    /// Gives the message to the next member in turn; without one, keeps it for later. Returns
    /// whether a member took it.
    fn hand_out(&mut self, seq: u64, message: BusMessage, ops: &std_mpsc::Sender<Op>) -> bool {
        if !self.has_members() {
            self.redeliver.insert(seq, message);
            return false;
        }
        let member = &self.members[self.next_member % self.members.len()];
        self.next_member = self.next_member.wrapping_add(1);
        let ack = GroupAck { ops: ops.clone(), group: self.id, seq, redeliver: Some(message.clone()) };
        self.in_flight.insert(seq);
        // A member gone since the check drops the delivery, and its ack hands it back through
        // the writer's queue.
        if member.send(Delivery::new(message, Box::new(ack))).is_err() {
            debug!(group = %self.name, sequence = seq, "member left as a message was handed to it");
        }
        true
    }

    /// Up to `room` of the group's messages from the cursor on, advancing the cursor past what it
    /// looked at.
    fn read(&mut self, log: &Keyspace, room: usize, last: u64) -> (Vec<(u64, BusMessage)>, Fill) {
        let mut found = Vec::new();
        for (scanned, guard) in log.range(record::log_key(self.cursor)..).enumerate() {
            if found.len() == room {
                return (found, Fill::Done);
            }
            if scanned == SCAN_LIMIT {
                return (found, Fill::More);
            }
            let (key, value) = match guard.into_inner() {
                Ok(entry) => entry,
                Err(error) => {
                    warn!(group = %self.name, %error, "cannot read the bus log");
                    return (found, Fill::Done);
                }
            };
            let seq = match record::parse_log_key(&key) {
                Ok(seq) => seq,
                Err(error) => {
                    warn!(group = %self.name, %error, "corrupt bus log key skipped");
                    continue;
                }
            };
            self.cursor = seq + 1;
            if self.acked.contains(&seq) {
                continue;
            }
            match Record::decode(&value) {
                Ok(record) if subject::matches(&self.filter, &record.message.subject) => {
                    found.push((seq, record.message));
                }
                Ok(_) => {}
                Err(error) => warn!(group = %self.name, sequence = seq, %error, "corrupt bus record skipped"),
            }
        }
        self.cursor = self.cursor.max(last + 1);
        (found, Fill::Done)
    }
}

// === impl GroupAck ===

#[async_trait]
impl Acker for GroupAck {
    async fn ack(mut self: Box<Self>) -> Result<(), BusError> {
        self.redeliver = None;
        self.ops.send(Op::Ack { group: self.group, seq: self.seq }).map_err(|_| BusError::Closed)
    }
}

impl Drop for GroupAck {
    fn drop(&mut self) {
        if let Some(message) = self.redeliver.take() {
            // A closed stream keeps the message on disk; it is delivered again once reopened.
            let _ = self.ops.send(Op::Redeliver { group: self.group, seq: self.seq, message });
        }
    }
}
