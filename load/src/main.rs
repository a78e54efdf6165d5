//! `tether-load`: the benchmark scenarios of BENCHMARKS.md against Tether and, in the same run,
//! a peer broker (docs/benchmarks.md).
//!
//! `tether-load run b1|b2|b3|b5|b6|all [--smoke]` starts `tether run` (and Mosquitto, and rumqttd
//! when installed) on free loopback ports, drives them with a swarm of worker processes
//! (`tether-load worker`, each with its own source address), measures the server process from
//! `/proc` (CPU time per message or connect, RSS per connection), prints one summary line per
//! measurement and writes a JSON result under `load/results/`.

mod api;
mod device;
mod procfs;
mod protocol;
mod report;
mod scenarios;
mod server;
mod swarm;
mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::scenarios::{Attach, Settings};

#[derive(Parser)]
#[command(about = "Device-swarm load generator and benchmark scenarios")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario (BENCHMARKS.md) and write its result under --out.
    Run(Box<RunArgs>),
    /// A swarm worker process (started by `run`; reads orders on stdin).
    #[command(hide = true)]
    Worker,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Idle devices: memory per device, CPU per connect, idle CPU.
    B1,
    /// Connect storm, and every device back after kill -9.
    B2,
    /// Ingest fan-in: property posts, QoS 1 and 0.
    B3,
    /// RRPC round trips through the API.
    B5,
    /// Broadcast to every subscribed device.
    B6,
    /// Every scenario above, in turn.
    All,
}

#[derive(clap::Args)]
struct RunArgs {
    scenario: Scenario,
    /// Scaled down (hundreds of devices, seconds): keeps the generator working; judges no speed.
    #[arg(long)]
    smoke: bool,
    /// Devices (default: 19 000, smoke: 100–300).
    #[arg(long)]
    devices: Option<usize>,
    /// Length of the measured phase.
    #[arg(long)]
    seconds: Option<u64>,
    /// Offered rate (B3: posts/s over all devices; B5: calls/s).
    #[arg(long)]
    rate: Option<f64>,
    /// Do not run the peer brokers (Mosquitto; rumqttd when installed) beside Tether.
    #[arg(long)]
    no_peer: bool,
    /// The `tether` binary (default: next to this one).
    #[arg(long)]
    tether_bin: Option<PathBuf>,
    /// Devices per worker process (default 15 000; one process holds ≈19.9 k sockets here).
    #[arg(long)]
    per_process: Option<usize>,
    /// Where JSON results go.
    #[arg(long, default_value = "load/results")]
    out: PathBuf,
    /// Measure a Tether already running (e.g. a cluster's edge) instead of starting one: its MQTT
    /// address; needs --http, --key and --pid.
    #[arg(long, requires_all = ["http", "key", "pid"])]
    mqtt: Option<SocketAddr>,
    #[arg(long)]
    http: Option<SocketAddr>,
    #[arg(long, env = "TETHER_ADMIN_KEY")]
    key: Option<String>,
    /// PID of the process to measure (with --mqtt).
    #[arg(long)]
    pid: Option<u32>,
    /// B5: call a cluster's command role over gRPC at this URL instead of the REST API.
    #[arg(long)]
    command_url: Option<String>,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Worker => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            tokio::task::LocalSet::new().block_on(&runtime, worker::run())
        }
        Command::Run(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
            runtime.block_on(run(*args))
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let tether_bin = match args.tether_bin {
        Some(bin) => bin,
        None => std::env::current_exe()?.parent().context("no directory for tether-load")?.join("tether"),
    };
    let attach = match (args.mqtt, args.http, args.key, args.pid) {
        (Some(mqtt), Some(http), Some(key), Some(pid)) => Some(Attach { mqtt, http, key, pid }),
        _ => None,
    };
    let settings = Settings {
        smoke: args.smoke,
        devices: args.devices,
        seconds: args.seconds,
        rate: args.rate,
        peer: !args.no_peer,
        tether_bin,
        per_process: args.per_process,
        out: args.out,
        attach,
        command_url: args.command_url,
    };
    let scenarios = match args.scenario {
        Scenario::All => vec![Scenario::B1, Scenario::B2, Scenario::B3, Scenario::B5, Scenario::B6],
        one => vec![one],
    };
    for scenario in scenarios {
        match scenario {
            Scenario::B1 => scenarios::b1(&settings).await?,
            Scenario::B2 => scenarios::b2(&settings).await?,
            Scenario::B3 => scenarios::b3(&settings).await?,
            Scenario::B5 => scenarios::b5(&settings).await?,
            Scenario::B6 => scenarios::b6(&settings).await?,
            Scenario::All => unreachable!("expanded above"),
        }
    }
    Ok(())
}
