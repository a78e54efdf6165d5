//! `tether-load`: drives a running Tether with real MQTT devices and reports the server's cost.
//!
//! `tether-load burst`: registers devices through the API, connects them, has each post a burst of
//! Alink property posts (QoS 1), waits for every `_reply`, and reports the server process's CPU
//! time per message from `/proc/<pid>/stat` (user + system, so kernel network work billed to it
//! is included, as in BENCHMARKS.md).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use tether_model::{SignMethod, SignParams};

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
