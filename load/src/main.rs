//! `tether-load`: drives a running Tether with real MQTT devices and reports the server's cost.
//!
//! `tether-load burst`: registers devices through the API, connects them, has each post a burst of
//! Alink property posts (QoS 1), waits for every `_reply`, and reports the server process's CPU
//! time per message from `/proc/<pid>/stat` (user + system, so kernel network work billed to it
//! is included, as in BENCHMARKS.md).
//!
//! `tether-load rrpc`: RRPC round trips (BENCHMARKS.md B5) at a fixed offered rate (open loop):
//! devices answer every request with its own payload, calls go through the REST API (or, with
//! `--command-url`, straight to a cluster's command role over gRPC), and the report gives latency
//! percentiles, failures and mis-correlations (an answer that is not the call's own).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::{Parser, Subcommand};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use tether_contract::{CommandGrpcClient, CommandService, RrpcCode};
use tether_model::{DeviceKey, SignMethod, SignParams};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Property-post burst: CPU µs per message on the server.
    Burst {
        #[arg(long, default_value = "127.0.0.1:1884")]
        mqtt: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: SocketAddr,
        /// Admin (or tenant) API key.
        #[arg(long, env = "TETHER_ADMIN_KEY")]
        key: String,
        /// PID of the server process to measure.
        #[arg(long)]
        pid: u32,
        #[arg(long, default_value_t = 100)]
        devices: usize,
        #[arg(long, default_value_t = 2000)]
        messages: usize,
        /// 0 or 1.
        #[arg(long, default_value_t = 1)]
        qos: u8,
    },
    /// RRPC round trip, caller → device → caller, at a fixed offered rate (open loop).
    Rrpc {
        #[arg(long, default_value = "127.0.0.1:1884")]
        mqtt: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: SocketAddr,
        #[arg(long, env = "TETHER_ADMIN_KEY")]
        key: String,
        /// Call the command role at this gRPC URL instead of the REST API (cluster mode).
        #[arg(long)]
        command_url: Option<String>,
        /// PID of the server process, for its CPU time per call.
        #[arg(long)]
        pid: Option<u32>,
        #[arg(long, default_value_t = 50)]
        devices: usize,
        /// Offered calls per second, over all devices.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Each call's `timeoutMs`.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u32,
    },
    /// QoS 1 PUBLISH → PUBACK latency at a fixed offered rate (open loop).
    Puback {
        #[arg(long, default_value = "127.0.0.1:1884")]
        mqtt: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: SocketAddr,
        #[arg(long, env = "TETHER_ADMIN_KEY")]
        key: String,
        #[arg(long, default_value_t = 50)]
        devices: usize,
        /// Offered publishes per second, over all devices.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

struct Creds {
    pk: String,
    dn: String,
    secret: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Burst { mqtt, http, key, pid, devices, messages, qos } => {
            burst(mqtt, http, &key, pid, devices, messages, qos).await
        }
        Command::Puback { mqtt, http, key, devices, rate, seconds } => {
            puback(mqtt, http, &key, devices, rate, seconds).await
        }
        Command::Rrpc { mqtt, http, key, command_url, pid, devices, rate, seconds, timeout_ms } => {
            let caller = match command_url {
                Some(url) => Caller::Grpc(CommandGrpcClient::new(&url).map_err(|e| anyhow::anyhow!("{e}"))?),
                None => Caller::Rest {
                    client: reqwest::Client::new(),
                    base: format!("http://{http}/api/v1"),
                    key: key.clone(),
                },
            };
            let run = RrpcRun { devices, rate, seconds, timeout_ms, pid };
            rrpc(mqtt, http, &key, caller, run).await
        }
    }
}

async fn burst(
    mqtt: SocketAddr,
    http: SocketAddr,
    key: &str,
    pid: u32,
    devices: usize,
    messages: usize,
    qos: u8,
) -> anyhow::Result<()> {
    let qos = if qos == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce };
    let creds = register(http, key, devices).await?;
    let mut clients = Vec::new();
    for c in &creds {
        clients.push(connect(mqtt, c).await?);
    }
    let payload = json!({"id": "1", "version": "1.0", "params": {"Power": "on", "WF": 23.5, "Temp": 21},
        "method": "thing.event.property.post"})
    .to_string();
    let cpu_before = process_cpu(pid)?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for ((client, mut eventloop), c) in clients.into_iter().zip(&creds) {
        let topic = format!("/sys/{}/{}/thing/event/property/post", c.pk, c.dn);
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let sender = tokio::spawn(async move {
                for _ in 0..messages {
                    client.publish(&topic, qos, false, payload.clone()).await?;
                }
                anyhow::Ok(client)
            });
            let mut replies = 0;
            while replies < messages {
                match tokio::time::timeout(Duration::from_secs(30), eventloop.poll()).await {
                    Ok(Ok(Event::Incoming(Packet::Publish(_)))) => replies += 1,
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => bail!("connection failed: {e}"),
                    Err(_) => bail!("no reply for 30 s after {replies} replies"),
                }
            }
            let client = sender.await??;
            client.disconnect().await?;
            anyhow::Ok(replies)
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    let elapsed = started.elapsed();
    let cpu = process_cpu(pid)? - cpu_before;
    let per_msg_us = cpu.as_secs_f64() * 1e6 / total as f64;
    println!(
        "burst: {total} property posts (QoS {}), {devices} devices, {:.0} msg/s, server CPU {:.1} ms = {per_msg_us:.2} µs/msg",
        qos as u8,
        total as f64 / elapsed.as_secs_f64(),
        cpu.as_secs_f64() * 1e3
    );
    Ok(())
}

/// Each device publishes at `rate / devices` per second on a fixed schedule, never waiting for
/// acks (open loop); the latency of a publish is from the moment it is handed to the client to
/// its PUBACK. (The schedule itself has tokio's 1 ms timer granularity, so it is not the start.)
async fn puback(
    mqtt: SocketAddr,
    http: SocketAddr,
    key: &str,
    devices: usize,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<()> {
    let creds = register(http, key, devices).await?;
    let payload = json!({"id": "1", "params": {"Power": "on", "Temp": 21}}).to_string();
    let per_device = Duration::from_secs_f64(devices as f64 / rate as f64);
    let mut tasks = Vec::new();
    for c in &creds {
        let (client, mut eventloop) = connect(mqtt, c).await?;
        let topic = format!("/sys/{}/{}/thing/event/property/post", c.pk, c.dn);
        let payload = payload.clone();
        let count = (seconds as f64 / per_device.as_secs_f64()) as usize;
        tasks.push(tokio::spawn(async move {
            let start = tokio::time::Instant::now() + Duration::from_millis(50);
            let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel();
            let sender = tokio::spawn(async move {
                for i in 0..count {
                    tokio::time::sleep_until(start + per_device * i as u32).await;
                    let _ = sent_tx.send(tokio::time::Instant::now());
                    client.publish(&topic, QoS::AtLeastOnce, false, payload.clone()).await?;
                }
                anyhow::Ok(client)
            });
            // PUBACKs arrive in publish order on one connection: the i-th ack answers the i-th send.
            let mut latencies = Vec::with_capacity(count);
            while latencies.len() < count {
                match tokio::time::timeout(Duration::from_secs(30), eventloop.poll()).await {
                    Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => {
                        let sent = sent_rx.recv().await.context("ack without a publish")?;
                        latencies.push(tokio::time::Instant::now().saturating_duration_since(sent));
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => bail!("connection failed: {e}"),
                    Err(_) => bail!("no PUBACK for 30 s"),
                }
            }
            let client = sender.await??;
            client.disconnect().await?;
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    println!(
        "puback: {} QoS 1 publishes at {rate}/s from {devices} devices: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        all.len(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        all.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
    );
    Ok(())
}

/// Who makes the RRPC calls.
#[derive(Clone)]
enum Caller {
    /// A tenant through the REST API (`POST .../rrpc`).
    Rest { client: reqwest::Client, base: String, key: String },
    /// The command role's gRPC API directly.
    Grpc(CommandGrpcClient),
}

/// The shape of an `rrpc` run.
struct RrpcRun {
    devices: usize,
    rate: u64,
    seconds: u64,
    timeout_ms: u32,
    pid: Option<u32>,
}

/// How one call ended.
enum CallResult {
    /// The call's own answer, after this long.
    Answered(Duration),
    /// Another call's answer.
    Miscorrelated,
    /// TIMEOUT, OFFLINE, UNKNOWN or an error.
    Failed(String),
}

/// Devices answer every `rrpc/request/{id}` with the request's payload; calls are started on a
/// fixed schedule (`rate` per second over all devices, round robin), each with a unique payload,
/// and never wait for one another.
async fn rrpc(mqtt: SocketAddr, http: SocketAddr, key: &str, caller: Caller, run: RrpcRun) -> anyhow::Result<()> {
    let creds = register(http, key, run.devices).await?;
    let mut echoes: Vec<tokio::task::JoinHandle<anyhow::Result<()>>> = Vec::new();
    for c in &creds {
        let (client, mut eventloop) = connect(mqtt, c).await?;
        let prefix = format!("/sys/{}/{}/rrpc/request/", c.pk, c.dn);
        let response = format!("/sys/{}/{}/rrpc/response/", c.pk, c.dn);
        echoes.push(tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if let Some(id) = p.topic.strip_prefix(&prefix) {
                            let topic = format!("{response}{id}");
                            client.publish(topic, QoS::AtMostOnce, false, p.payload.to_vec()).await?;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => bail!("device connection failed: {e}"),
                }
            }
        }));
    }
    let count = (run.rate * run.seconds) as usize;
    let interval = Duration::from_secs_f64(1.0 / run.rate as f64);
    let cpu_before = run.pid.map(process_cpu).transpose()?;
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let mut calls = Vec::with_capacity(count);
    for i in 0..count {
        tokio::time::sleep_until(start + interval * i as u32).await;
        let (caller, c) = (caller.clone(), &creds[i % creds.len()]);
        let (pk, dn, timeout_ms) = (c.pk.clone(), c.dn.clone(), run.timeout_ms);
        calls.push(tokio::spawn(async move { call_rrpc(&caller, &pk, &dn, format!("call-{i}"), timeout_ms).await }));
    }
    let (mut latencies, mut miscorrelated, mut failed) = (Vec::with_capacity(count), 0, Vec::new());
    for call in calls {
        match call.await? {
            CallResult::Answered(latency) => latencies.push(latency),
            CallResult::Miscorrelated => miscorrelated += 1,
            CallResult::Failed(why) => failed.push(why),
        }
    }
    let elapsed = start.elapsed();
    let cpu = match (run.pid, cpu_before) {
        (Some(pid), Some(before)) => Some(process_cpu(pid)? - before),
        _ => None,
    };
    for echo in echoes {
        echo.abort();
    }
    latencies.sort();
    let pct = |p: f64| latencies.get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)));
    let ms = |d: Option<&Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
    let via = match caller {
        Caller::Rest { .. } => "rest",
        Caller::Grpc(_) => "grpc",
    };
    println!(
        "rrpc: {count} calls at {}/s via {via} to {} devices: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {} failed, {miscorrelated} mis-correlated; {:.0} calls/s{}",
        run.rate,
        run.devices,
        ms(pct(0.50)),
        ms(pct(0.90)),
        ms(pct(0.99)),
        ms(latencies.last()),
        failed.len(),
        count as f64 / elapsed.as_secs_f64(),
        cpu.map_or(String::new(), |cpu| format!(", server CPU {:.1} µs/call", cpu.as_secs_f64() * 1e6 / count as f64)),
    );
    if let Some(first) = failed.first() {
        println!("rrpc: first failure: {first}");
    }
    if miscorrelated > 0 {
        bail!("{miscorrelated} calls got another call's answer");
    }
    Ok(())
}

async fn call_rrpc(caller: &Caller, pk: &str, dn: &str, payload: String, timeout_ms: u32) -> CallResult {
    let sent = tokio::time::Instant::now();
    let answer = match caller {
        Caller::Rest { client, base, key } => {
            let body = json!({"payloadBase64": BASE64.encode(&payload), "timeoutMs": timeout_ms});
            let response = client.post(format!("{base}/products/{pk}/devices/{dn}/rrpc")).bearer_auth(key).json(&body);
            match response.send().await {
                Ok(response) => match response.json::<Value>().await {
                    Ok(body) if body["rrpcCode"] == "SUCCESS" => {
                        body["payloadBase64"].as_str().and_then(|p| BASE64.decode(p).ok()).ok_or(format!("{body}"))
                    }
                    Ok(body) => Err(body.to_string()),
                    Err(e) => Err(e.to_string()),
                },
                Err(e) => Err(e.to_string()),
            }
        }
        Caller::Grpc(client) => {
            let device = match DeviceKey::parse(pk, dn) {
                Ok(device) => device,
                Err(e) => return CallResult::Failed(e.to_string()),
            };
            match client.rrpc(&device, payload.clone().into_bytes().into(), timeout_ms, None).await {
                Ok(outcome) if outcome.rrpc_code == RrpcCode::Success => {
                    outcome.payload.map(|p| p.to_vec()).ok_or_else(|| "no payload".to_owned())
                }
                Ok(outcome) => Err(format!("{:?}", outcome.rrpc_code)),
                Err(e) => Err(e.to_string()),
            }
        }
    };
    let latency = sent.elapsed();
    match answer {
        Ok(answer) if answer == payload.as_bytes() => CallResult::Answered(latency),
        Ok(_) => CallResult::Miscorrelated,
        Err(why) => CallResult::Failed(why),
    }
}

async fn register(http: SocketAddr, key: &str, devices: usize) -> anyhow::Result<Vec<Creds>> {
    let client = reqwest::Client::new();
    let base = format!("http://{http}/api/v1");
    let product: Value = client
        .post(format!("{base}/products"))
        .bearer_auth(key)
        .json(&json!({"name": "load"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let pk = product["productKey"].as_str().context("productKey")?.to_owned();
    let mut creds = Vec::new();
    for _ in 0..devices {
        let device: Value = client
            .post(format!("{base}/products/{pk}/devices"))
            .bearer_auth(key)
            .json(&json!({}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        creds.push(Creds {
            pk: pk.clone(),
            dn: device["deviceName"].as_str().context("deviceName")?.to_owned(),
            secret: device["deviceSecret"].as_str().context("deviceSecret")?.to_owned(),
        });
    }
    Ok(creds)
}

async fn connect(mqtt: SocketAddr, c: &Creds) -> anyhow::Result<(AsyncClient, rumqttc::EventLoop)> {
    let params = SignParams { client_id: &c.dn, device_name: &c.dn, product_key: &c.pk, timestamp: None };
    let password = SignMethod::HmacSha1.sign(&c.secret, &params);
    let mut options =
        MqttOptions::new(format!("{}|securemode=3,signmethod=hmacsha1|", c.dn), mqtt.ip().to_string(), mqtt.port());
    options
        .set_credentials(format!("{}&{}", c.dn, c.pk), password)
        .set_keep_alive(Duration::from_secs(60))
        .set_inflight(u16::MAX);
    let (client, mut eventloop) = AsyncClient::new(options, 1000);
    match eventloop.poll().await? {
        Event::Incoming(Packet::ConnAck(_)) => Ok((client, eventloop)),
        other => bail!("expected CONNACK, got {other:?}"),
    }
}

/// User + system CPU time of `pid` so far.
fn process_cpu(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("no process {pid}"))?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(Duration::from_secs_f64(ticks as f64 / 100.0))
}
