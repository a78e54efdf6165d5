//! The `tether` binary: parses the command line, starts logging, runs the platform.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tether::cluster::{Role, run_role};
use tether::config::ClusterConfig;
use tether::{AdminKeySource, EmbeddedConfig, Platform};

/// mimalloc instead of glibc malloc: per-message allocations (JSON values, bus records) cost a
/// fifth of the edge's CPU under glibc's arenas (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "tether", version, about = "IoT device-communication platform")]
struct Cli {
    #[command(subcommand)]
    command: Subcmd,
}

#[derive(Subcommand)]
enum Subcmd {
    /// Runs every service in one process with an embedded store (no other server needed).
    Run {
        /// Where products, devices and presence are kept.
        #[arg(long, default_value = "tether-data", env = "TETHER_DATA_DIR")]
        data_dir: PathBuf,
        /// MQTT listener for devices.
        #[arg(long, default_value = "0.0.0.0:1883", env = "TETHER_MQTT_ADDR")]
        mqtt_addr: SocketAddr,
        /// HTTP listener for the tenant API.
        #[arg(long, default_value = "0.0.0.0:8080", env = "TETHER_HTTP_ADDR")]
        http_addr: SocketAddr,
        /// gRPC listener for the tenant API (tether.v1.Gateway).
        #[arg(long, default_value = "0.0.0.0:50051", env = "TETHER_GRPC_ADDR")]
        grpc_addr: SocketAddr,
        /// Largest accepted MQTT payload, in bytes (Aliyun: 256 KB).
        #[arg(long, default_value_t = tether_edge::DEFAULT_MAX_PAYLOAD_BYTES, env = "TETHER_MAX_PAYLOAD_BYTES")]
        max_payload_bytes: usize,
        /// MQTT worker threads.
        #[arg(long, default_value_t = 2, env = "TETHER_MQTT_WORKERS")]
        mqtt_workers: usize,
    },
    /// Cluster mode: the MQTT edge (devices connect here; any number of them).
    Edge(RoleArgs),
    /// Cluster mode: tenants, products, devices, secrets, sign checks (gRPC).
    Auth(RoleArgs),
    /// Cluster mode: thing models and shadows.
    Thing(RoleArgs),
    /// Cluster mode: the command correlator (property set, services, RRPC).
    Command(RoleArgs),
    /// Cluster mode: SQL rules and server-side subscriptions.
    Rules(RoleArgs),
    /// Cluster mode: time-series history.
    History(RoleArgs),
    /// Cluster mode: the tenant REST API.
    Gateway(RoleArgs),
}

#[derive(Args)]
struct RoleArgs {
    /// TOML configuration shared by every role; each key can be overridden by TETHER_<SECTION>_<KEY>.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TETHER_LOG")
        .unwrap_or_else(|_| "info,fjall=warn,lsm_tree=warn,ntex_server=warn,ntex_rt=warn,ntex_net=warn".into());
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let Cli { command } = Cli::parse();
    let result = match command {
        Subcmd::Run { data_dir, mqtt_addr, http_addr, grpc_addr, max_payload_bytes, mqtt_workers } => {
            let config = EmbeddedConfig {
                grpc_addr,
                admin_key: std::env::var("TETHER_ADMIN_KEY").ok().filter(|k| !k.is_empty()),
                max_payload_bytes,
                mqtt_workers,
                ..EmbeddedConfig::new(data_dir, mqtt_addr, http_addr)
            };
            run(config).await
        }
        Subcmd::Edge(args) => run_cluster(Role::Edge, args).await,
        Subcmd::Auth(args) => run_cluster(Role::Auth, args).await,
        Subcmd::Thing(args) => run_cluster(Role::Thing, args).await,
        Subcmd::Command(args) => run_cluster(Role::Command, args).await,
        Subcmd::Rules(args) => run_cluster(Role::Rules, args).await,
        Subcmd::History(args) => run_cluster(Role::History, args).await,
        Subcmd::Gateway(args) => run_cluster(Role::Gateway, args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: EmbeddedConfig) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    let platform = Platform::start(config).await?;
    println!("tether is running (embedded)");
    println!("  MQTT devices:   {}", platform.mqtt_addr());
    println!("  HTTP API:       http://{}/api/v1 (OpenAPI: /api/v1/openapi.json)", platform.http_addr());
    println!("  gRPC API:       {} (tether.v1.Gateway)", platform.grpc_addr());
    println!("  data directory: {}", data_dir.display());
    match &platform.admin_key_source {
        AdminKeySource::Environment => println!("  admin key:      from TETHER_ADMIN_KEY"),
        AdminKeySource::File(path) => println!("  admin key:      {} (kept in {})", platform.admin_key, path.display()),
    }
    println!("Press Ctrl-C to stop.");
    shutdown_signal().await;
    println!("stopping: disconnecting devices");
    platform.stop().await;
    println!("stopped");
    Ok(())
}

async fn run_cluster(role: Role, args: RoleArgs) -> anyhow::Result<()> {
    let config = ClusterConfig::load(args.config.as_deref(), std::env::vars())?;
    tracing::info!(role = ?role, node = %config.node.id, "starting");
    run_role(role, config, shutdown_signal()).await
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
