//! A worker process (`tether-load worker`): holds up to ~19 k device connections on one thread
//! and carries out the coordinator's orders (`protocol::Order`), one at a time.
//!
//! Each device is one task owning its connection. While connected it answers RRPC requests with
//! their own payload, notes benchmark broadcasts, and posts when told to.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::Packet;
use tokio::io::AsyncBufReadExt;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use crate::device::Connection;
use crate::protocol::{self, BroadcastSeen, DeviceSpec, Order, PhaseReport, Report, WorkerSpec};

/// Reads the spec and then orders from stdin until `Disconnect` or EOF.
pub async fn run() -> anyhow::Result<()> {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let spec: WorkerSpec = serde_json::from_str(&lines.next_line().await?.context("no worker spec")?)?;
    let worker = Rc::new(Worker { spec, stats: RefCell::new(Stats::new()), devices: RefCell::new(Vec::new()) });
    while let Some(line) = lines.next_line().await? {
        let order: Order = serde_json::from_str(&line).with_context(|| format!("bad order {line}"))?;
        let disconnect = matches!(order, Order::Disconnect);
        let ticker = tokio::task::spawn_local(progress(worker.clone()));
        let report = worker.clone().carry_out(order).await;
        ticker.abort();
        emit(&Report::Done(report));
        if disconnect {
            break;
        }
    }
    Ok(())
}

fn emit(report: &Report) {
    if let Ok(line) = serde_json::to_string(report) {
        println!("{line}");
    }
}

async fn progress(worker: Rc<Worker>) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let done = {
            let stats = worker.stats.borrow();
            stats.report.ok + stats.report.acked + stats.report.replies
        };
        emit(&Report::Progress { done });
    }
}

struct Worker {
    spec: WorkerSpec,
    stats: RefCell<Stats>,
    /// Order channels of the devices that connected.
    devices: RefCell<Vec<mpsc::UnboundedSender<DeviceOrder>>>,
}

struct Stats {
    report: PhaseReport,
    latency: Histogram<u64>,
    broadcasts: BTreeMap<u64, BroadcastSeen>,
}

impl Stats {
    fn new() -> Self {
        Self { report: PhaseReport::default(), latency: new_histogram(), broadcasts: BTreeMap::new() }
    }

    fn fail(&mut self, error: impl std::fmt::Display) {
        self.report.failed += 1;
        if self.report.first_error.is_none() {
            self.report.first_error = Some(error.to_string());
        }
    }

    fn record(&mut self, latency: Duration) {
        let _ = self.latency.record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1));
    }

    /// This phase's report; the counters start again from zero.
    fn take(&mut self) -> PhaseReport {
        let mut report = std::mem::take(&mut self.report);
        report.latency_us = self.latency.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect();
        self.latency.reset();
        report
    }
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

enum DeviceOrder {
    Post { post: PostOrder, done: oneshot::Sender<()> },
    Reconnect { retry: Duration, until: Instant, done: oneshot::Sender<()> },
    Disconnect { done: oneshot::Sender<()> },
}

#[derive(Clone, Copy)]
struct PostOrder {
    qos: QoS,
    interval: Duration,
    count: u32,
    expect_replies: bool,
    until: Instant,
}

impl Worker {
    async fn carry_out(self: Rc<Self>, order: Order) -> PhaseReport {
        match order {
            Order::Connect { rate, concurrency } => self.connect_all(rate, concurrency).await,
            Order::Post { qos, interval_us, count, expect_replies, timeout_secs } => {
                let qos = if qos == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce };
                let until = Instant::now() + Duration::from_secs(timeout_secs);
                let post =
                    PostOrder { qos, interval: Duration::from_micros(interval_us), count, expect_replies, until };
                self.each_device(|done| DeviceOrder::Post { post, done }).await;
            }
            Order::Broadcasts => {
                let mut stats = self.stats.borrow_mut();
                stats.report.broadcasts = stats.broadcasts.values().copied().collect();
            }
            Order::Reconnect { retry_ms, timeout_secs } => {
                let until = Instant::now() + Duration::from_secs(timeout_secs);
                let retry = Duration::from_millis(retry_ms);
                self.each_device(|done| DeviceOrder::Reconnect { retry, until, done }).await;
            }
            Order::Disconnect => self.each_device(|done| DeviceOrder::Disconnect { done }).await,
        }
        self.stats.borrow_mut().take()
    }

    async fn connect_all(self: &Rc<Self>, rate: Option<f64>, concurrency: usize) {
        let permits = Arc::new(Semaphore::new(concurrency.max(1)));
        let started = Instant::now();
        let mut attempts = Vec::with_capacity(self.spec.devices.len());
        for (i, device) in self.spec.devices.iter().enumerate() {
            if let Some(rate) = rate {
                tokio::time::sleep_until(started + Duration::from_secs_f64(i as f64 / rate)).await;
            }
            let permit = permits.clone().acquire_owned().await.expect("semaphore never closed");
            let (worker, device) = (self.clone(), device.clone());
            attempts.push(tokio::task::spawn_local(async move {
                let opened =
                    Connection::open(worker.spec.server, worker.spec.source, &device, worker.spec.keep_alive_secs)
                        .await;
                drop(permit);
                let mut stats = worker.stats.borrow_mut();
                match opened {
                    Ok((conn, connack)) => {
                        stats.record(connack);
                        stats.report.ok += 1;
                        stats.report.last_done_unix_ns = protocol::unix_ns();
                        drop(stats);
                        let (tx, rx) = mpsc::unbounded_channel();
                        worker.devices.borrow_mut().push(tx);
                        tokio::task::spawn_local(device_task(worker.clone(), device, Some(conn), rx));
                    }
                    Err(error) => stats.fail(format!("{error:#}")),
                }
            }));
        }
        for attempt in attempts {
            let _ = attempt.await;
        }
    }

    async fn each_device(&self, order: impl Fn(oneshot::Sender<()>) -> DeviceOrder) {
        let waits: Vec<_> = self
            .devices
            .borrow()
            .iter()
            .filter_map(|device| {
                let (done, wait) = oneshot::channel();
                device.send(order(done)).ok().map(|()| wait)
            })
            .collect();
        for wait in waits {
            let _ = wait.await;
        }
    }
}

/// One device: its connection (if any), answering the server and carrying out orders.
async fn device_task(
    worker: Rc<Worker>,
    device: DeviceSpec,
    mut conn: Option<Connection>,
    mut orders: mpsc::UnboundedReceiver<DeviceOrder>,
) {
    let mut posting: Option<Posting> = None;
    let mut reconnect: Option<(Duration, Instant, oneshot::Sender<()>)> = None;
    let post_topic = format!("{}/thing/event/property/post", device.sys_prefix);
    loop {
        let Some(c) = conn.as_mut() else {
            // Disconnected: reconnect if armed, else wait for an order.
            if let Some((retry, until, done)) = reconnect.take() {
                conn = reconnect_until(&worker, &device, retry, until).await;
                let _ = done.send(());
                continue;
            }
            match orders.recv().await {
                Some(DeviceOrder::Reconnect { retry, until, done }) => reconnect = Some((retry, until, done)),
                Some(DeviceOrder::Post { done, .. }) => {
                    worker.stats.borrow_mut().fail("post ordered while disconnected");
                    let _ = done.send(());
                }
                Some(DeviceOrder::Disconnect { done }) => {
                    let _ = done.send(());
                    return;
                }
                None => return,
            }
            continue;
        };
        let next_post = posting.as_ref().and_then(Posting::next_due);
        let deadline = posting.as_ref().map(|p| p.order.until);
        tokio::select! {
            more = c.fill() => {
                match more {
                    Ok(true) => {}
                    Ok(false) | Err(_) => {
                        conn = None;
                        if let Some(p) = posting.take() {
                            p.finish(&worker, Some("connection closed while posting"));
                        }
                        continue;
                    }
                }
                loop {
                    match c.buffered() {
                        Ok(Some(packet)) => {
                            if let Err(error) = handle(&worker, c, packet, posting.as_mut()) {
                                worker.stats.borrow_mut().fail(error);
                            }
                        }
                        Ok(None) => break,
                        Err(error) => {
                            worker.stats.borrow_mut().fail(error);
                            conn = None;
                            break;
                        }
                    }
                }
                if let Some(c) = conn.as_mut()
                    && c.flush().await.is_err()
                {
                    conn = None;
                }
                if posting.as_ref().is_some_and(|p| p.finished)
                    && let Some(p) = posting.take()
                {
                    p.finish(&worker, None);
                }
            }
            () = sleep_until_opt(next_post) => {
                if let Some(p) = posting.as_mut() {
                    if let Err(error) = p.post_next(c, &post_topic) {
                        worker.stats.borrow_mut().fail(error);
                    }
                    if c.flush().await.is_err() {
                        conn = None;
                    }
                }
            }
            () = sleep_until_opt(deadline) => {
                if let Some(p) = posting.take() {
                    p.finish(&worker, Some("timed out waiting for PUBACKs or replies"));
                }
            }
            order = orders.recv() => match order {
                Some(DeviceOrder::Post { post, done }) => posting = Some(Posting::new(post, done)),
                Some(DeviceOrder::Reconnect { retry, until, done }) => reconnect = Some((retry, until, done)),
                Some(DeviceOrder::Disconnect { done }) => {
                    let _ = c.disconnect();
                    let _ = c.flush().await;
                    let _ = done.send(());
                    return;
                }
                None => return,
            },
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn reconnect_until(worker: &Worker, device: &DeviceSpec, retry: Duration, until: Instant) -> Option<Connection> {
    let mut last_error = String::new();
    let mut wait = retry;
    while Instant::now() < until {
        match Connection::open(worker.spec.server, worker.spec.source, device, worker.spec.keep_alive_secs).await {
            Ok((conn, connack)) => {
                let mut stats = worker.stats.borrow_mut();
                stats.record(connack);
                stats.report.ok += 1;
                stats.report.last_done_unix_ns = protocol::unix_ns();
                return Some(conn);
            }
            Err(error) => last_error = format!("{error:#}"),
        }
        // As device SDKs do: back off (doubling, up to 8 × `retry`) with jitter (0.5–1.5 ×), so
        // 19 k refused reconnects a second do not starve the restarting server of CPU.
        let jitter = 0.5 + f64::from(rand_u16()) / f64::from(u16::MAX);
        tokio::time::sleep(wait.mul_f64(jitter)).await;
        wait = (wait * 2).min(retry * 8);
    }
    worker.stats.borrow_mut().fail(format!("not reconnected in time: {last_error}"));
    None
}

/// A cheap per-call pseudo-random number (jitter only).
fn rand_u16() -> u16 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    (nanos.wrapping_mul(2_654_435_761) >> 16) as u16
}

/// What the server sent, while connected.
fn handle(
    worker: &Worker,
    conn: &mut Connection,
    packet: Packet,
    mut posting: Option<&mut Posting>,
) -> anyhow::Result<()> {
    match packet {
        Packet::PubAck(ack) => {
            if let Some(p) = posting.as_deref_mut() {
                p.acked(worker, ack.pkid);
            }
        }
        Packet::PingResp => {
            if let Some(p) = posting.as_deref_mut() {
                p.finished = p.pinged;
            }
        }
        Packet::Publish(publish) => {
            let topic = publish.topic.as_str();
            if topic.ends_with("/thing/event/property/post_reply") {
                if let Some(p) = posting.as_deref_mut() {
                    p.replied(worker, &publish.payload);
                }
            } else if let Some((head, id)) = topic.split_once("/rrpc/request/") {
                conn.publish(&format!("{head}/rrpc/response/{id}"), QoS::AtMostOnce, 0, &publish.payload)?;
            } else if let Some((seq, sent)) = protocol::parse_broadcast_payload(&publish.payload) {
                let now = protocol::unix_ns();
                let mut stats = worker.stats.borrow_mut();
                let seen = stats.broadcasts.entry(seq).or_insert(BroadcastSeen {
                    seq,
                    sent_unix_ns: sent,
                    ..Default::default()
                });
                seen.deliveries += 1;
                seen.last_unix_ns = seen.last_unix_ns.max(now);
            }
        }
        _ => {}
    }
    if let Some(p) = posting {
        p.check_drained(conn)?;
    }
    Ok(())
}

/// A device's part of a `Post` order.
struct Posting {
    order: PostOrder,
    done: Option<oneshot::Sender<()>>,
    start: Instant,
    sent: u32,
    /// QoS 1: packet id and send time of every post not yet acknowledged, oldest first.
    unacked: VecDeque<(u16, Instant)>,
    /// Sequence number (the Alink `id`) and send time of every post not yet replied to.
    unreplied: VecDeque<(u64, Instant)>,
    pinged: bool,
    finished: bool,
}

impl Posting {
    fn new(order: PostOrder, done: oneshot::Sender<()>) -> Self {
        // Spread the devices' schedules over one interval so posts do not arrive in lockstep.
        let offset = order.interval.mul_f64(f64::from(rand_u16()) / f64::from(u16::MAX));
        Self {
            order,
            done: Some(done),
            start: Instant::now() + offset,
            sent: 0,
            unacked: VecDeque::new(),
            unreplied: VecDeque::new(),
            pinged: false,
            finished: false,
        }
    }

    fn next_due(&self) -> Option<Instant> {
        (self.sent < self.order.count).then(|| self.start + self.order.interval * self.sent)
    }

    fn post_next(&mut self, conn: &mut Connection, topic: &str) -> anyhow::Result<()> {
        let seq = u64::from(self.sent) + 1;
        // A typical Alink property post (≈150 B with the topic), as in BENCHMARKS.md.
        let body = format!(
            r#"{{"id":"{seq}","version":"1.0","params":{{"Power":"on","WF":23.5,"Temp":{}}},"method":"thing.event.property.post"}}"#,
            20 + seq % 10
        );
        let pkid = if self.order.qos == QoS::AtMostOnce { 0 } else { (seq % u64::from(u16::MAX)) as u16 + 1 };
        conn.publish(topic, self.order.qos, pkid, body.as_bytes())?;
        let now = Instant::now();
        if self.order.qos == QoS::AtLeastOnce {
            self.unacked.push_back((pkid, now));
        }
        if self.order.expect_replies {
            self.unreplied.push_back((seq, now));
        }
        self.sent += 1;
        self.check_drained(conn)
    }

    fn acked(&mut self, worker: &Worker, pkid: u16) {
        if let Some(pos) = self.unacked.iter().position(|(id, _)| *id == pkid) {
            let (_, sent) = self.unacked.remove(pos).expect("position is in range");
            let mut stats = worker.stats.borrow_mut();
            stats.report.acked += 1;
            stats.record(sent.elapsed());
        }
    }

    fn replied(&mut self, worker: &Worker, payload: &[u8]) {
        let id = serde_json::from_slice::<serde_json::Value>(payload)
            .ok()
            .and_then(|v| v["id"].as_str().and_then(|id| id.parse::<u64>().ok()));
        let Some(id) = id else { return };
        if let Some(pos) = self.unreplied.iter().position(|(seq, _)| *seq == id) {
            let (_, sent) = self.unreplied.remove(pos).expect("position is in range");
            let mut stats = worker.stats.borrow_mut();
            stats.report.replies += 1;
            if pos != 0 {
                stats.report.out_of_order += 1;
            }
            if self.order.qos == QoS::AtMostOnce {
                stats.record(sent.elapsed());
            }
        }
    }

    /// Once everything is sent and answered, PINGREQ: its PINGRESP means the server has read all.
    fn check_drained(&mut self, conn: &mut Connection) -> anyhow::Result<()> {
        if !self.pinged && self.sent == self.order.count && self.unacked.is_empty() && self.unreplied.is_empty() {
            conn.ping()?;
            self.pinged = true;
        }
        Ok(())
    }

    fn finish(self, worker: &Worker, failure: Option<&str>) {
        let mut stats = worker.stats.borrow_mut();
        stats.report.sent += u64::from(self.sent);
        match failure {
            Some(why) => stats.fail(format!(
                "{why} ({} of {} sent, {} unacknowledged, {} unreplied)",
                self.sent,
                self.order.count,
                self.unacked.len(),
                self.unreplied.len()
            )),
            None => stats.report.ok += 1,
        }
        stats.report.last_done_unix_ns = stats.report.last_done_unix_ns.max(protocol::unix_ns());
        drop(stats);
        if let Some(done) = self.done {
            let _ = done.send(());
        }
    }
}
