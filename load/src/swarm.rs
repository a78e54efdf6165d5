//! The coordinator's side of the swarm: worker processes (`tether-load worker`), each with its
//! own source address and at most `per_process` connections (one process here holds at most
//! ≈19.9 k sockets), given the same order at once and their reports merged.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::protocol::{BroadcastSeen, DeviceSpec, Order, PhaseReport, Report, WorkerSpec};
use crate::worker::new_histogram;

pub struct Swarm {
    workers: Vec<(Child, ChildStdin)>,
    reports: mpsc::UnboundedReceiver<(usize, Report)>,
}

/// Merged reports of one order.
pub struct Outcome {
    pub report: PhaseReport,
    pub latency: Histogram<u64>,
    pub elapsed: Duration,
}

impl Outcome {
    /// Latency percentile in milliseconds.
    pub fn ms(&self, quantile: f64) -> f64 {
        if self.latency.is_empty() { f64::NAN } else { self.latency.value_at_quantile(quantile) as f64 / 1000.0 }
    }
}

impl Swarm {
    pub async fn spawn(
        server: SocketAddr,
        devices: Vec<DeviceSpec>,
        per_process: usize,
        keep_alive_secs: u16,
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find tether-load's own executable")?;
        let (tx, reports) = mpsc::unbounded_channel();
        let mut workers = Vec::new();
        for (index, chunk) in devices.chunks(per_process.max(1)).enumerate() {
            // 127.0.1.1, 127.0.1.2, ... : loopback source addresses of their own.
            let source = Ipv4Addr::new(127, 0, 1 + (index / 250) as u8, 1 + (index % 250) as u8);
            let spec = WorkerSpec { server, source, keep_alive_secs, devices: chunk.to_vec() };
            let mut child = Command::new(&exe)
                .arg("worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("cannot start a worker process")?;
            let mut stdin = child.stdin.take().context("worker stdin")?;
            let stdout = child.stdout.take().context("worker stdout")?;
            stdin.write_all(format!("{}\n", serde_json::to_string(&spec)?).as_bytes()).await?;
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Ok(report) = serde_json::from_str::<Report>(&line) {
                        let _ = tx.send((index, report));
                    }
                }
            });
            workers.push((child, stdin));
        }
        Ok(Self { workers, reports })
    }

    /// Gives every worker `order` and waits for all their reports, showing progress on stderr.
    pub async fn order(&mut self, order: &Order, label: &str) -> anyhow::Result<Outcome> {
        self.send(order).await?;
        self.collect(label).await
    }

    /// Gives every worker `order` without waiting (`collect` waits).
    pub async fn send(&mut self, order: &Order) -> anyhow::Result<()> {
        let line = format!("{}\n", serde_json::to_string(order)?);
        for (_, stdin) in &mut self.workers {
            stdin.write_all(line.as_bytes()).await.context("a worker process is gone")?;
        }
        Ok(())
    }

    /// Waits for every worker's report on the order sent last.
    pub async fn collect(&mut self, label: &str) -> anyhow::Result<Outcome> {
        let started = tokio::time::Instant::now();
        let mut progress = vec![0_u64; self.workers.len()];
        let mut done: BTreeMap<usize, PhaseReport> = BTreeMap::new();
        let (mut last_shown, mut shown) = (started, false);
        while done.len() < self.workers.len() {
            let Some((index, report)) = self.reports.recv().await else {
                bail!("a worker process exited during {label}");
            };
            match report {
                Report::Progress { done } => progress[index] = done,
                Report::Done(report) => {
                    done.insert(index, report);
                }
            }
            if last_shown.elapsed() >= Duration::from_secs(1) {
                last_shown = tokio::time::Instant::now();
                shown = true;
                eprint!(
                    "\r  {label}: {} done, {:.0} s ",
                    progress.iter().sum::<u64>(),
                    started.elapsed().as_secs_f64()
                );
                let _ = std::io::stderr().flush();
            }
        }
        if shown {
            eprintln!();
        }
        let elapsed = started.elapsed();
        Ok(merge(done.into_values(), elapsed))
    }

    /// DISCONNECT every device and wait for the workers to exit.
    pub async fn finish(mut self) -> anyhow::Result<()> {
        self.order(&Order::Disconnect, "disconnect").await?;
        for (mut child, stdin) in self.workers {
            drop(stdin);
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        }
        Ok(())
    }
}

fn merge(reports: impl Iterator<Item = PhaseReport>, elapsed: Duration) -> Outcome {
    let mut total = PhaseReport::default();
    let mut latency = new_histogram();
    let mut broadcasts: BTreeMap<u64, BroadcastSeen> = BTreeMap::new();
    for report in reports {
        total.ok += report.ok;
        total.failed += report.failed;
        total.first_error = total.first_error.or(report.first_error);
        total.sent += report.sent;
        total.acked += report.acked;
        total.replies += report.replies;
        total.out_of_order += report.out_of_order;
        total.last_done_unix_ns = total.last_done_unix_ns.max(report.last_done_unix_ns);
        for (value, count) in report.latency_us {
            let _ = latency.record_n(value.max(1), count);
        }
        for seen in report.broadcasts {
            let merged = broadcasts.entry(seen.seq).or_insert(BroadcastSeen { deliveries: 0, ..seen });
            merged.deliveries += seen.deliveries;
            merged.last_unix_ns = merged.last_unix_ns.max(seen.last_unix_ns);
        }
    }
    total.broadcasts = broadcasts.into_values().collect();
    Outcome { report: total, latency, elapsed }
}
