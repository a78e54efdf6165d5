//! Scenarios B1, B2, B3, B5 and B6 of BENCHMARKS.md (B4 and B7 need the history service). Each
//! starts the server itself (or attaches to one), drives it with a swarm of worker processes,
//! measures the server process from `/proc`, and runs the peer broker the same way in the same
//! run where one does the same work.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::json;

use crate::api::{self, Api, CallResult, Caller, Fleet};
use crate::device::Connection;
use crate::procfs::{self, Sample};
use crate::protocol::{self, DeviceSpec, Order};
use crate::report::{Record, ratio};
use crate::server::{Kind, Server};
use crate::swarm::Swarm;

/// What the command line asked for.
pub struct Settings {
    pub smoke: bool,
    pub devices: Option<usize>,
    pub seconds: Option<u64>,
    pub rate: Option<f64>,
    pub peer: bool,
    pub tether_bin: PathBuf,
    pub per_process: Option<usize>,
    pub out: PathBuf,
    pub attach: Option<Attach>,
    pub command_url: Option<String>,
}

/// A running Tether to measure instead of starting one.
pub struct Attach {
    pub mqtt: std::net::SocketAddr,
    pub http: std::net::SocketAddr,
    pub key: String,
    pub pid: u32,
}

/// Keep-alive long enough that no PINGREQ falls in a measurement window.
const KEEP_ALIVE_SECS: u16 = 600;

impl Settings {
    fn devices(&self, full: usize, smoke: usize) -> usize {
        self.devices.unwrap_or(if self.smoke { smoke } else { full })
    }

    fn seconds(&self, full: u64, smoke: u64) -> u64 {
        self.seconds.unwrap_or(if self.smoke { smoke } else { full })
    }

    /// Devices per worker process: at most 15 k (one process holds ≈19.9 k sockets here); a
    /// smoke run still uses two processes so the multi-process path is exercised.
    fn per_process(&self, devices: usize) -> usize {
        self.per_process.unwrap_or(if self.smoke { devices.div_ceil(2) } else { 15_000 }).max(1)
    }

    /// The servers to measure: Tether, then each peer broker that is installed (Mosquitto from
    /// Debian, rumqttd from `cargo install rumqttd`), unless peers are off.
    fn kinds(&self, has_peer: bool) -> Vec<Kind> {
        let mut kinds = vec![Kind::Tether];
        if has_peer && self.peer {
            for (peer, installed) in [
                (Kind::Mosquitto, crate::server::mosquitto_binary().is_some()),
                (Kind::Rumqttd, crate::server::rumqttd_binary().is_some()),
            ] {
                if installed {
                    kinds.push(peer);
                } else {
                    eprintln!("note: {} is not installed; its figures are skipped", peer.name());
                }
            }
        }
        kinds
    }

    async fn start(&self, kind: Kind) -> anyhow::Result<Server> {
        match (kind, &self.attach) {
            (Kind::Tether, Some(a)) => Ok(Server::attach(a.mqtt, Some(a.http), Some(a.key.clone()), a.pid)),
            (Kind::Tether, None) => Server::tether(&self.tether_bin).await,
            (Kind::Mosquitto, _) => Server::mosquitto().await,
            (Kind::Rumqttd, _) => Server::rumqttd().await,
        }
    }
}

/// Devices for `server`: registered through the API for Tether, made up for a peer.
async fn fleet(server: &Server, count: usize, subscribe: impl Fn(&str) -> Option<String>) -> anyhow::Result<Fleet> {
    match (server.kind, server.http, &server.key) {
        (Kind::Tether, Some(http), Some(key)) => Api::new(http, key).register(count, subscribe).await,
        (Kind::Tether, ..) => bail!("Tether needs its HTTP address and key"),
        (Kind::Mosquitto | Kind::Rumqttd, ..) => Ok(api::peer_fleet(count, subscribe)),
    }
}

fn broadcast_topic(pk: &str) -> String {
    format!("/broadcast/{pk}/all")
}

fn us_per(cpu: Duration, count: u64) -> f64 {
    if count == 0 { f64::NAN } else { cpu.as_secs_f64() * 1e6 / count as f64 }
}

fn round(value: f64, places: i32) -> f64 {
    let scale = 10_f64.powi(places);
    (value * scale).round() / scale
}

/// B1: idle devices, each CONNECT (Alink sign) + implicit subscriptions + 1 SUBSCRIBE; memory per
/// idle device, CPU per connect, idle CPU.
pub async fn b1(s: &Settings) -> anyhow::Result<()> {
    let n = s.devices(19_000, 300);
    let idle = s.seconds(10, 2);
    let mut record = Record::new("b1", s.smoke, json!({"devices": n, "idleSeconds": idle}));
    for kind in s.kinds(true) {
        let server = s.start(kind).await?;
        let fleet = fleet(&server, n, |pk| Some(broadcast_topic(pk))).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = Sample::take(server.pid)?;
        let mut swarm = Swarm::spawn(server.mqtt, fleet.devices, s.per_process(n), KEEP_ALIVE_SECS).await?;
        let connected = swarm.order(&Order::Connect { rate: None, concurrency: 200 }, "connect").await?;
        tokio::time::sleep(Duration::from_secs(if s.smoke { 1 } else { 3 })).await;
        let after = Sample::take(server.pid)?;
        tokio::time::sleep(Duration::from_secs(idle)).await;
        let idle_cpu = procfs::cpu(server.pid)? - after.cpu;
        let ok = connected.report.ok;
        let figures = json!({
            "devices": n,
            "connected": ok,
            "failed": connected.report.failed,
            "firstError": connected.report.first_error,
            "bytesPerDevice": round((after.rss.saturating_sub(before.rss)) as f64 / ok.max(1) as f64, 0),
            "cpuPerConnectUs": round(us_per(after.cpu - before.cpu, ok), 1),
            "connackP50Ms": round(connected.ms(0.50), 2),
            "connackP99Ms": round(connected.ms(0.99), 2),
            "idleCpuPercent": round(idle_cpu.as_secs_f64() * 100.0 / idle as f64, 2),
        });
        record.line(format!(
            "b1 {}: {ok}/{n} idle devices, {} B RSS per device, {} µs CPU per connect, idle CPU {} %",
            kind.name(),
            figures["bytesPerDevice"],
            figures["cpuPerConnectUs"],
            figures["idleCpuPercent"]
        ));
        record.figures(kind.name(), figures);
        swarm.finish().await?;
        server.stop().await;
        if connected.report.failed > 0 {
            shortfall(
                kind,
                format!(
                    "b1 {}: {} devices did not connect: {:?}",
                    kind.name(),
                    connected.report.failed,
                    connected.report.first_error
                ),
            )?;
        }
    }
    peer_ratio(&mut record, "b1", "", "bytesPerDevice", "memory per device");
    peer_ratio(&mut record, "b1", "", "cpuPerConnectUs", "CPU per connect");
    finish(record, s, json!({"bytesPerDevice": 1536, "idleCpuPercentAt100k": 2.0}))
}

/// B2: connect storm, then (Tether started here) `kill -9` and restart with every device
/// reconnecting.
pub async fn b2(s: &Settings) -> anyhow::Result<()> {
    let n = s.devices(19_000, 300);
    let mut record = Record::new("b2", s.smoke, json!({"devices": n}));
    for kind in s.kinds(true) {
        let mut server = s.start(kind).await?;
        let fleet = fleet(&server, n, |_| None).await?;
        let before = procfs::cpu(server.pid)?;
        let mut swarm = Swarm::spawn(server.mqtt, fleet.devices, s.per_process(n), KEEP_ALIVE_SECS).await?;
        let storm = swarm.order(&Order::Connect { rate: None, concurrency: 1000 }, "connect storm").await?;
        let cpu = procfs::cpu(server.pid)? - before;
        let ok = storm.report.ok;
        let mut figures = json!({
            "devices": n,
            "connected": ok,
            "failed": storm.report.failed,
            "firstError": storm.report.first_error,
            "connectsPerSecond": round(ok as f64 / storm.elapsed.as_secs_f64(), 0),
            "cpuPerConnectUs": round(us_per(cpu, ok), 1),
            "connackP50Ms": round(storm.ms(0.50), 2),
            "connackP99Ms": round(storm.ms(0.99), 2),
        });
        let mut line = format!(
            "b2 {}: {ok}/{n} connected at {} connects/s, {} µs CPU per connect, CONNACK p50 {} ms p99 {} ms",
            kind.name(),
            figures["connectsPerSecond"],
            figures["cpuPerConnectUs"],
            figures["connackP50Ms"],
            figures["connackP99Ms"]
        );
        if kind == Kind::Tether && s.attach.is_none() {
            let reconnect = Order::Reconnect { retry_ms: 250, timeout_secs: 60 };
            swarm.send(&reconnect).await?;
            let drops_before = procfs::listen_drops();
            let killed = protocol::unix_ns();
            server.restart().await?;
            let ready = protocol::unix_ns();
            let back = swarm.collect("reconnect").await?;
            let secs = |from: u64| round(back.report.last_done_unix_ns.saturating_sub(from) as f64 / 1e9, 2);
            figures["reconnected"] = json!(back.report.ok);
            figures["stuck"] = json!(back.report.failed);
            figures["restartSeconds"] = json!(round(ready.saturating_sub(killed) as f64 / 1e9, 2));
            figures["allBackAfterKillSeconds"] = json!(secs(killed));
            figures["allBackAfterRestartSeconds"] = json!(secs(ready));
            figures["reconnectConnackP50Ms"] = json!(round(back.ms(0.50), 2));
            figures["reconnectConnackP99Ms"] = json!(round(back.ms(0.99), 2));
            figures["listenDrops"] = json!(procfs::listen_drops().saturating_sub(drops_before));
            line += &format!(
                "; after kill -9: restart {} s, all {} back {} s after the kill (CONNACK p99 {} ms, {} SYNs dropped), {} stuck",
                figures["restartSeconds"],
                back.report.ok,
                figures["allBackAfterKillSeconds"],
                figures["reconnectConnackP99Ms"],
                figures["listenDrops"],
                back.report.failed
            );
        }
        record.line(line);
        let failed = storm.report.failed + figures["stuck"].as_u64().unwrap_or(0);
        record.figures(kind.name(), figures);
        swarm.finish().await?;
        server.stop().await;
        if failed > 0 {
            shortfall(kind, format!("b2 {}: {failed} devices did not connect or come back", kind.name()))?;
        }
    }
    peer_ratio(&mut record, "b2", "", "cpuPerConnectUs", "CPU per connect");
    finish(
        record,
        s,
        json!({"cpuPerConnectUsEdge": 60, "connectsPerSecond": 5000, "connackP99MsAt5k": 10, "allBackSeconds": 4}),
    )
}

/// B3: ingest fan-in: every device posts Alink property posts at a fixed offered rate (open
/// loop), QoS 1 then QoS 0; CPU per message, throughput, latency, loss and order.
pub async fn b3(s: &Settings) -> anyhow::Result<()> {
    let n = s.devices(19_000, 200);
    let seconds = s.seconds(10, 3);
    let rate = s.rate.unwrap_or(if s.smoke { 2_000.0 } else { 20_000.0 });
    let per_device = ((rate * seconds as f64) / n as f64).ceil().max(1.0) as u32;
    let interval_us = (n as f64 / rate * 1e6) as u64;
    let params = json!({"devices": n, "offeredPerSecond": rate, "seconds": seconds, "postsPerDevice": per_device});
    let mut record = Record::new("b3", s.smoke, params);
    let mut lost = 0;
    for kind in s.kinds(true) {
        let server = s.start(kind).await?;
        let fleet = fleet(&server, n, |_| None).await?;
        let mut swarm = Swarm::spawn(server.mqtt, fleet.devices, s.per_process(n), KEEP_ALIVE_SECS).await?;
        let connected = swarm.order(&Order::Connect { rate: None, concurrency: 200 }, "connect").await?;
        if connected.report.failed > 0 {
            shortfall(
                kind,
                format!(
                    "b3 {}: {} devices did not connect: {:?}",
                    kind.name(),
                    connected.report.failed,
                    connected.report.first_error
                ),
            )?;
        }
        // Tether answers every post on `post_reply`; a peer broker only acknowledges.
        let expect_replies = kind == Kind::Tether;
        for qos in [1_u8, 0] {
            let before = procfs::cpu(server.pid)?;
            let order = Order::Post { qos, interval_us, count: per_device, expect_replies, timeout_secs: seconds + 60 };
            let out = swarm.order(&order, &format!("QoS {qos} posts")).await?;
            let cpu = procfs::cpu(server.pid)? - before;
            let r = &out.report;
            let answered = if expect_replies {
                r.replies
            } else if qos == 1 {
                r.acked
            } else {
                r.sent
            };
            let missing = r.sent.saturating_sub(answered) + r.failed;
            if kind == Kind::Tether {
                lost += missing;
            }
            let figures = json!({
                "qos": qos,
                "sent": r.sent,
                "acked": r.acked,
                "replies": r.replies,
                "missing": missing,
                "outOfOrder": r.out_of_order,
                "firstError": r.first_error,
                "messagesPerSecond": round(r.sent as f64 / out.elapsed.as_secs_f64(), 0),
                "cpuPerMessageUs": round(us_per(cpu, r.sent), 2),
                "latencyP50Ms": round(out.ms(0.50), 2),
                "latencyP99Ms": round(out.ms(0.99), 2),
            });
            record.line(format!(
                "b3 {} QoS {qos}: {} posts from {n} devices at {rate}/s offered: {} msg/s, {} µs CPU/msg, {} p50 {} ms p99 {} ms, {missing} missing, {} out of order",
                kind.name(),
                r.sent,
                figures["messagesPerSecond"],
                figures["cpuPerMessageUs"],
                if qos == 1 { "PUBACK" } else { "reply" },
                figures["latencyP50Ms"],
                figures["latencyP99Ms"],
                r.out_of_order
            ));
            record.figures(&format!("{}-qos{qos}", kind.name()), figures);
        }
        swarm.finish().await?;
        server.stop().await;
    }
    peer_ratio(&mut record, "b3", "-qos1", "cpuPerMessageUs", "CPU per QoS 1 message");
    peer_ratio(&mut record, "b3", "-qos0", "cpuPerMessageUs", "CPU per QoS 0 message");
    let path = finish_path(
        record,
        s,
        json!({"cpuPerMessageUsQos0": 2.5, "cpuPerMessageUsQos1": 4.5, "messagesPerSecondQos1": 100_000, "pubackP99MsAt50k": 5}),
    )?;
    if lost > 0 {
        bail!("b3: {lost} posts were not answered (see {})", path.display());
    }
    Ok(())
}

/// B5: RRPC round trips, API caller → device → caller, at a fixed offered rate (open loop).
pub async fn b5(s: &Settings) -> anyhow::Result<()> {
    let n = s.devices(19_000, 100);
    let seconds = s.seconds(10, 3);
    let rate = s.rate.unwrap_or(if s.smoke { 200.0 } else { 1_000.0 });
    let timeout_ms = 5000;
    let server = s.start(Kind::Tether).await?;
    let (http, key) = (server.http.context("HTTP address")?, server.key.clone().context("API key")?);
    let caller = match &s.command_url {
        Some(url) => Caller::Grpc(tether_contract::CommandGrpcClient::new(url).map_err(|e| anyhow::anyhow!("{e}"))?),
        None => Caller::Rest(Api::new(http, &key)),
    };
    let params = json!({"devices": n, "offeredPerSecond": rate, "seconds": seconds, "via": caller.via()});
    let mut record = Record::new("b5", s.smoke, params);
    let fleet = fleet(&server, n, |_| None).await?;
    let devices = fleet.devices.clone();
    let mut swarm = Swarm::spawn(server.mqtt, fleet.devices, s.per_process(n), KEEP_ALIVE_SECS).await?;
    let connected = swarm.order(&Order::Connect { rate: None, concurrency: 200 }, "connect").await?;
    if connected.report.failed > 0 {
        bail!("b5: {} devices did not connect: {:?}", connected.report.failed, connected.report.first_error);
    }
    let count = (rate * seconds as f64) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let before = procfs::cpu(server.pid)?;
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let mut calls = Vec::with_capacity(count);
    for i in 0..count {
        tokio::time::sleep_until(start + interval * i as u32).await;
        let (caller, device) = (caller.clone(), devices[(i * 7919) % devices.len()].clone());
        calls.push(tokio::spawn(async move { caller.rrpc(&device, format!("call-{i}"), timeout_ms).await }));
    }
    let mut latency = crate::worker::new_histogram();
    let (mut miscorrelated, mut failed, mut first_failure) = (0_u64, 0_u64, None);
    // Answered calls per second: until the last answer came (a call that failed late does not
    // stretch it).
    let mut last_answer = Duration::ZERO;
    for (i, call) in calls.into_iter().enumerate() {
        match call.await? {
            CallResult::Answered(d) => {
                let _ = latency.record(u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1));
                last_answer = last_answer.max(interval * i as u32 + d);
            }
            CallResult::Miscorrelated => miscorrelated += 1,
            CallResult::Failed(why) => {
                failed += 1;
                first_failure.get_or_insert(why);
            }
        }
    }
    let cpu = procfs::cpu(server.pid)? - before;
    let ms = |q: f64| round(latency.value_at_quantile(q) as f64 / 1000.0, 2);
    let figures = json!({
        "calls": count,
        "answered": latency.len(),
        "failed": failed,
        "firstFailure": first_failure,
        "miscorrelated": miscorrelated,
        "answeredPerSecond": round(latency.len() as f64 / last_answer.as_secs_f64().max(1e-3), 0),
        "p50Ms": ms(0.50), "p90Ms": ms(0.90), "p99Ms": ms(0.99), "maxMs": round(latency.max() as f64 / 1000.0, 2),
        "cpuPerCallUs": round(us_per(cpu, count as u64), 1),
    });
    record.line(format!(
        "b5 tether: {count} RRPC calls at {rate}/s via {} to {n} online devices: p50 {} ms, p99 {} ms, {failed} failed, {miscorrelated} mis-correlated, {} µs CPU/call",
        caller.via(),
        figures["p50Ms"],
        figures["p99Ms"],
        figures["cpuPerCallUs"]
    ));
    record.figures("tether", figures);
    swarm.finish().await?;
    server.stop().await;
    finish(record, s, json!({"p50Ms": 0.5, "p99Ms": 2.0, "maxCallsPerSecond": 15_000, "miscorrelated": 0}))?;
    if miscorrelated > 0 || failed > 0 {
        bail!("b5: {failed} calls failed ({first_failure:?}), {miscorrelated} mis-correlated");
    }
    Ok(())
}

/// B6: broadcast to every subscribed device; deliveries per second and time to the last delivery.
pub async fn b6(s: &Settings) -> anyhow::Result<()> {
    let n = s.devices(19_000, 300);
    let broadcasts: u64 = if s.smoke { 5 } else { 20 };
    let gap = Duration::from_millis(if s.smoke { 200 } else { 500 });
    let mut record = Record::new("b6", s.smoke, json!({"devices": n, "broadcasts": broadcasts, "qos": 0}));
    let mut missing_total = 0;
    for kind in s.kinds(true) {
        let server = s.start(kind).await?;
        let fleet = fleet(&server, n, |pk| Some(broadcast_topic(pk))).await?;
        let topic = broadcast_topic(&fleet.product_key);
        let mut swarm = Swarm::spawn(server.mqtt, fleet.devices, s.per_process(n), KEEP_ALIVE_SECS).await?;
        let connected = swarm.order(&Order::Connect { rate: None, concurrency: 200 }, "connect").await?;
        if connected.report.failed > 0 {
            shortfall(
                kind,
                format!(
                    "b6 {}: {} devices did not connect: {:?}",
                    kind.name(),
                    connected.report.failed,
                    connected.report.first_error
                ),
            )?;
        }
        let mut publisher = Publisher::new(&server, &fleet.product_key).await?;
        let before = procfs::cpu(server.pid)?;
        for seq in 1..=broadcasts {
            publisher.send(&topic, &protocol::broadcast_payload(seq, protocol::unix_ns())).await?;
            tokio::time::sleep(gap).await;
        }
        // Wait until every delivery arrived, or none came for 5 s (60 s at most).
        let expected = n as u64 * broadcasts;
        let (mut seen, mut delivered, mut last_progress) = (Vec::new(), 0, tokio::time::Instant::now());
        let waiting_since = tokio::time::Instant::now();
        while delivered < expected
            && last_progress.elapsed() < Duration::from_secs(5)
            && waiting_since.elapsed() < Duration::from_secs(60)
        {
            tokio::time::sleep(Duration::from_millis(500)).await;
            seen = swarm.order(&Order::Broadcasts, "collect").await?.report.broadcasts;
            let now: u64 = seen.iter().map(|b| b.deliveries).sum();
            if now > delivered {
                (delivered, last_progress) = (now, tokio::time::Instant::now());
            }
        }
        let cpu = procfs::cpu(server.pid)? - before;
        let fanout_ns: u64 = seen.iter().map(|b| b.last_unix_ns.saturating_sub(b.sent_unix_ns)).sum();
        let mut last = crate::worker::new_histogram();
        for b in &seen {
            let _ = last.record((b.last_unix_ns.saturating_sub(b.sent_unix_ns) / 1000).max(1));
        }
        let missing = expected.saturating_sub(delivered);
        if kind == Kind::Tether {
            missing_total += missing;
        }
        let figures = json!({
            "devices": n,
            "broadcasts": broadcasts,
            "delivered": delivered,
            "missing": missing,
            "deliveriesPerSecond": round(delivered as f64 / (fanout_ns.max(1) as f64 / 1e9), 0),
            "lastDeliveryP50Ms": round(last.value_at_quantile(0.5) as f64 / 1000.0, 2),
            "lastDeliveryP99Ms": round(last.value_at_quantile(0.99) as f64 / 1000.0, 2),
            "cpuPerDeliveryUs": round(us_per(cpu, delivered), 2),
        });
        record.line(format!(
            "b6 {}: {broadcasts} broadcasts to {n} devices (QoS 0): {} deliveries/s, last delivery p50 {} ms p99 {} ms, {} µs CPU/delivery, {missing} missing",
            kind.name(),
            figures["deliveriesPerSecond"],
            figures["lastDeliveryP50Ms"],
            figures["lastDeliveryP99Ms"],
            figures["cpuPerDeliveryUs"]
        ));
        record.figures(kind.name(), figures);
        publisher.close().await;
        swarm.finish().await?;
        server.stop().await;
    }
    peer_ratio(&mut record, "b6", "", "cpuPerDeliveryUs", "CPU per delivery");
    let path = finish_path(record, s, json!({"deliveriesPerSecondQos0": 300_000, "lastDeliveryP99Ms": 50}))?;
    if missing_total > 0 {
        bail!("b6: {missing_total} deliveries missing (see {})", path.display());
    }
    Ok(())
}

/// Who sends B6's broadcasts: the tenant API for Tether, an MQTT client for a peer broker.
enum Publisher {
    Api(Api, String),
    Mqtt(Connection),
}

impl Publisher {
    async fn new(server: &Server, pk: &str) -> anyhow::Result<Self> {
        match (server.kind, server.http, &server.key) {
            (Kind::Tether, Some(http), Some(key)) => Ok(Self::Api(Api::new(http, key), pk.to_owned())),
            (Kind::Tether, ..) => bail!("Tether needs its HTTP address and key"),
            (Kind::Mosquitto | Kind::Rumqttd, ..) => {
                let me = DeviceSpec {
                    client_id: "load-publisher".into(),
                    username: "publisher".into(),
                    password: "x".into(),
                    sys_prefix: String::new(),
                    subscribe: None,
                };
                let (conn, _) =
                    Connection::open(server.mqtt, std::net::Ipv4Addr::LOCALHOST, &me, KEEP_ALIVE_SECS).await?;
                Ok(Self::Mqtt(conn))
            }
        }
    }

    async fn send(&mut self, topic: &str, payload: &str) -> anyhow::Result<()> {
        match self {
            Self::Api(api, pk) => api.broadcast(pk, topic, payload).await,
            Self::Mqtt(conn) => {
                conn.publish(topic, rumqttc::mqttbytes::QoS::AtMostOnce, 0, payload.as_bytes())?;
                conn.flush().await
            }
        }
    }

    async fn close(self) {
        if let Self::Mqtt(mut conn) = self {
            let _ = conn.disconnect();
            let _ = conn.flush().await;
        }
    }
}

/// A shortfall fails the run for Tether; a peer's is noted and its figures stay as measured.
fn shortfall(kind: Kind, what: String) -> anyhow::Result<()> {
    if kind == Kind::Tether {
        bail!("{what}");
    }
    eprintln!("note: {what}");
    Ok(())
}

/// Adds "ours / peer's" for one figure as a summary line, for each peer that ran.
fn peer_ratio(record: &mut Record, scenario: &str, suffix: &str, figure: &str, what: &str) {
    let ours = record.figure(&format!("tether{suffix}"), figure);
    for peer in [Kind::Mosquitto, Kind::Rumqttd] {
        let theirs = record.figure(&format!("{}{suffix}", peer.name()), figure);
        if theirs.is_some() {
            let line = format!("{scenario}{suffix}: {what}, tether / {} = {}", peer.name(), ratio(ours, theirs));
            record.line(line);
        }
    }
}

fn finish(record: Record, s: &Settings, targets: serde_json::Value) -> anyhow::Result<()> {
    finish_path(record, s, targets).map(drop)
}

fn finish_path(record: Record, s: &Settings, targets: serde_json::Value) -> anyhow::Result<PathBuf> {
    let path = record.write(&s.out, targets)?;
    println!("  result: {}", path.display());
    Ok(path)
}
