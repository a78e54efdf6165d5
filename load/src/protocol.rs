//! What the coordinator and its worker processes say to each other: one JSON object per line,
//! orders on the worker's stdin, reports on its stdout.

use std::net::{Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

/// A worker's devices and where they connect; the first line a worker reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSpec {
    pub server: SocketAddr,
    /// Source address of every connection (127.0.x.y), so processes do not share ports.
    pub source: Ipv4Addr,
    pub keep_alive_secs: u16,
    pub devices: Vec<DeviceSpec>,
}

/// One simulated device.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceSpec {
    pub client_id: String,
    pub username: String,
    pub password: String,
    /// `/sys/{pk}/{dn}`: where its Alink topics start.
    pub sys_prefix: String,
    /// One extra SUBSCRIBE after CONNECT (B1: "1 SUBSCRIBE"; B6: the broadcast topic).
    pub subscribe: Option<String>,
}

/// What the workers' devices do next.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Order {
    /// Connect every device (`rate` connects/s over this worker, or as fast as `concurrency` allows).
    Connect { rate: Option<f64>, concurrency: usize },
    /// Every device posts `count` Alink property posts, one every `interval_us` (open loop), then
    /// waits for its PUBACKs (QoS 1) and, with `expect_replies`, its `post_reply`s, and ends with
    /// PINGREQ → PINGRESP so the server has read everything.
    Post { qos: u8, interval_us: u64, count: u32, expect_replies: bool, timeout_secs: u64 },
    /// Report the broadcasts seen so far (asking again reports them again, with what came since).
    Broadcasts,
    /// Devices whose connection dropped reconnect (after `retry_ms`, doubling up to 8×, jittered)
    /// until `timeout_secs`.
    Reconnect { retry_ms: u64, timeout_secs: u64 },
    /// DISCONNECT every device and exit.
    Disconnect,
}

/// A worker's answer to an order, or its progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Report {
    Progress { done: u64 },
    Done(PhaseReport),
}

/// How an order went, on one worker; the coordinator merges them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PhaseReport {
    pub ok: u64,
    pub failed: u64,
    pub first_error: Option<String>,
    /// Latency histogram in microseconds as `(value, count)` pairs.
    pub latency_us: Vec<(u64, u64)>,
    pub sent: u64,
    pub acked: u64,
    pub replies: u64,
    /// Replies that arrived after a later post's reply on the same device.
    pub out_of_order: u64,
    /// Unix time (ns) the last device finished (connected, reconnected).
    pub last_done_unix_ns: u64,
    pub broadcasts: Vec<BroadcastSeen>,
}

/// One broadcast as this worker's devices saw it.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct BroadcastSeen {
    pub seq: u64,
    pub deliveries: u64,
    pub sent_unix_ns: u64,
    pub last_unix_ns: u64,
}

/// Payload of a benchmark broadcast: its sequence number and when it was sent.
pub fn broadcast_payload(seq: u64, sent_unix_ns: u64) -> String {
    format!("{seq} {sent_unix_ns}")
}

pub fn parse_broadcast_payload(payload: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(payload).ok()?;
    let (seq, sent) = text.split_once(' ')?;
    Some((seq.parse().ok()?, sent.parse().ok()?))
}

pub fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
