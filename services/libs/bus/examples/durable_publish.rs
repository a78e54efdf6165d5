//! What a durable publish on the embedded bus costs: one `fsync` on this disk, one publisher
//! waiting for each of its publishes, and many publishers sharing group commits.
//!
//! `cargo run --release -p tether-bus --example durable_publish [publishers...]`

#![allow(clippy::unwrap_used, reason = "a measurement: any failure ends it")]

use std::io::Write;
use std::time::{Duration, Instant};

use tether_bus::{Bus, BusMessage, InProcessBus};

const MESSAGES: usize = 20_000;

#[tokio::main]
async fn main() {
    let dir = tempfile::TempDir::new().unwrap();
    println!("fsync of a 200-byte append: {:?}", fsync_cost(dir.path(), 500));

    let bus = InProcessBus::open(&dir.path().join("bus")).unwrap();
    let started = Instant::now();
    let sequential = 500;
    for n in 0..sequential {
        bus.publish_durable(uplink(0, n)).await.unwrap();
    }
    println!("one publisher: {:?} per publish", started.elapsed() / sequential as u32);

    let counts: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().unwrap()).collect();
    let counts = if counts.is_empty() { vec![16, 64, 256, 1024] } else { counts };
    for &publishers in &counts {
        println!("{publishers} publishers: {}", concurrent_publishes(&bus, publishers).await);
    }

    // The same with a group reading and acking everything as it comes.
    let mut consumer = bus.consume("thing", "tether.up.>").await.unwrap();
    let acking = tokio::spawn(async move {
        while let Some(delivery) = consumer.next().await {
            delivery.ack().await.unwrap();
        }
    });
    for &publishers in &counts {
        println!("{publishers} publishers, one group consuming: {}", concurrent_publishes(&bus, publishers).await);
    }
    bus.close().await;
    acking.await.unwrap();
}

/// Publishes about [`MESSAGES`] from `publishers` tasks at once; reports the rate.
async fn concurrent_publishes(bus: &InProcessBus, publishers: usize) -> String {
    let each = MESSAGES / publishers;
    let started = Instant::now();
    let tasks: Vec<_> = (0..publishers)
        .map(|publisher| {
            let bus = bus.clone();
            tokio::spawn(async move {
                for n in 0..each {
                    bus.publish_durable(uplink(publisher, n)).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    let total = publishers * each;
    format!("{total} publishes in {elapsed:.2?}, {:.0}/s", total as f64 / elapsed.as_secs_f64())
}

/// The mean time of `rounds` appends of 200 bytes to a file, each followed by `sync_all`.
fn fsync_cost(dir: &std::path::Path, rounds: u32) -> Duration {
    let mut file = std::fs::File::create(dir.join("fsync-probe")).unwrap();
    let started = Instant::now();
    for _ in 0..rounds {
        file.write_all(&[b'x'; 200]).unwrap();
        file.sync_all().unwrap();
    }
    started.elapsed() / rounds
}

/// A property post of about 200 bytes, like a small device's.
fn uplink(device: usize, n: usize) -> BusMessage {
    let body =
        format!(r#"{{"iotId":"device-{device}","items":{{"temperature":{{"value":{n},"time":1700000000000}}}}}}"#);
    BusMessage::new(format!("tether.up.t1.pk.lamp-{device}.property"), format!("{body:<200}"))
        .with_header("messageId", format!("{device}/{n}"))
}
