//! Cluster mode: `tether <role> --config FILE` runs one service per process, over gRPC (auth,
//! thing, command), NATS (bus, registry KV) and Redis (session routes). The same service code as
//! `tether run`, with the cluster adapters behind the traits.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tether_auth::Auth;
use tether_bus::events::{self, Origin};
use tether_bus::{Bus, NatsBus, NatsBusConfig};
use tether_command::{CommandConfig, CommandDeps, Commands};
use tether_contract::{
    AuthGrpcClient, AuthGrpcServer, AuthService, CommandGrpcClient, CommandGrpcServer, CommandService, ServiceError,
    ThingGrpcClient, ThingGrpcServer, ThingService, now_ms,
};
use tether_edge::{Edge, EdgeConfig, EdgeDeps};
use tether_gateway::{Gateway, GatewayAddrs, GatewayDeps};
use tether_model::ProductKey;
use tether_store::{KvStore, NatsKvStore, RedisRoutes, RedisRoutesConfig, SessionRoutes};
use tether_telemetry::{HealthServer, ReadinessCheck};
use tether_thing::Thing;

use crate::config::ClusterConfig;

/// The processes cluster mode is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    Edge,
    Auth,
    Thing,
    Command,
    Rules,
    History,
    Gateway,
}

/// Runs `role` until `shutdown` resolves, then drains and stops.
pub async fn run_role(role: Role, config: ClusterConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    match role {
        Role::Auth => run_auth(config, shutdown).await,
        Role::Edge => run_edge(config, shutdown).await,
        Role::Gateway => run_gateway(config, shutdown).await,
        Role::Thing => run_thing(config, shutdown).await,
        Role::Command => run_command(config, shutdown).await,
        Role::Rules | Role::History => {
            bail!("the {role:?} role is not part of this release yet: its service has not been built")
        }
    }
}

async fn connect_bus(config: &ClusterConfig) -> anyhow::Result<NatsBus> {
    let mut bus_config = NatsBusConfig::new(&config.nats.url);
    bus_config.replicas = config.nats.replicas;
    bus_config.ack_wait = Duration::from_secs(config.nats.ack_wait_seconds);
    NatsBus::connect(bus_config).await.with_context(|| format!("cannot use NATS at {} (nats.url)", config.nats.url))
}

async fn connect_kv(config: &ClusterConfig) -> anyhow::Result<NatsKvStore> {
    NatsKvStore::connect(&config.nats.url, &config.nats.kv_bucket, config.nats.replicas)
        .await
        .with_context(|| format!("cannot use NATS KV at {} (nats.url)", config.nats.url))
}

async fn connect_routes(config: &ClusterConfig) -> anyhow::Result<RedisRoutes> {
    RedisRoutes::connect(&config.redis.url, RedisRoutesConfig::default()).await.context("redis.url")
}

fn auth_client(config: &ClusterConfig) -> anyhow::Result<AuthGrpcClient> {
    AuthGrpcClient::new(&config.auth.url).with_context(|| format!("invalid auth.url {}", config.auth.url))
}

fn thing_client(config: &ClusterConfig) -> anyhow::Result<ThingGrpcClient> {
    ThingGrpcClient::new(&config.thing.url).with_context(|| format!("invalid thing.url {}", config.thing.url))
}

fn command_client(config: &ClusterConfig) -> anyhow::Result<CommandGrpcClient> {
    CommandGrpcClient::new(&config.command.url).with_context(|| format!("invalid command.url {}", config.command.url))
}

async fn health(config: &ClusterConfig, checks: Vec<Arc<dyn ReadinessCheck>>) -> anyhow::Result<HealthServer> {
    HealthServer::start(config.health.addr, checks, tether_telemetry::registry())
        .await
        .with_context(|| format!("cannot listen on {} (health.addr)", config.health.addr))
}

async fn run_auth(config: ClusterConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    if config.auth.admin_key.is_empty() {
        bail!("auth.admin_key is required in cluster mode (or TETHER_AUTH_ADMIN_KEY)");
    }
    let store = connect_kv(&config).await?;
    let bus = connect_bus(&config).await?;
    let store_dyn: Arc<dyn KvStore> = Arc::new(store.clone());
    // Watch before loading, so no change between the load and the watch is missed.
    let changes = store.watch("").await.context("cannot watch the registry")?;
    let auth = Arc::new(Auth::open(store_dyn, Arc::new(bus.clone()), &config.auth.admin_key).await?);
    let follower = tokio::spawn(follow_registry(auth.clone(), changes));
    let auth: Arc<dyn AuthService> = auth;

    let listener = tokio::net::TcpListener::bind(config.auth.grpc_addr)
        .await
        .with_context(|| format!("cannot listen on {} (auth.grpc_addr)", config.auth.grpc_addr))?;
    let health = health(&config, vec![nats_check(bus), kv_check(store)]).await?;
    tracing::info!(addr = %config.auth.grpc_addr, "auth serving grpc");
    tonic::transport::Server::builder()
        .add_service(AuthGrpcServer::new(auth).into_service())
        .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), shutdown)
        .await
        .context("auth grpc server failed")?;
    follower.abort();
    health.stop();
    Ok(())
}

/// Keeps this replica's registry cache current with the writes of the others.
async fn follow_registry(auth: Arc<Auth>, mut changes: tether_store::ChangeStream) {
    use futures::StreamExt;
    while let Some(change) = changes.next().await {
        let result = match change {
            Ok(change) => auth.refresh(change.key()).await,
            // A gap in the stream: anything may have changed meanwhile.
            Err(error) => {
                tracing::warn!(%error, "registry watch interrupted, reloading");
                auth.reload().await
            }
        };
        if let Err(error) = result {
            tracing::warn!(%error, "registry cache not refreshed");
        }
    }
}

async fn run_edge(config: ClusterConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let bus = connect_bus(&config).await?;
    let routes = connect_routes(&config).await?;
    let auth = auth_client(&config)?;
    let thing = thing_client(&config)?;
    let node = config.node.id.clone();
    routes.register_node(&node).await.context("cannot register this edge in redis")?;
    let ttl = Duration::from_secs(config.edge.heartbeat_ttl_seconds);
    routes.heartbeat(&node, ttl).await.context("first heartbeat")?;

    let bus_dyn: Arc<dyn Bus> = Arc::new(bus.clone());
    let auth_dyn: Arc<dyn AuthService> = Arc::new(auth.clone());
    let edge_config = EdgeConfig {
        mqtt_addr: config.edge.mqtt_addr,
        node_id: node.clone(),
        max_payload_bytes: config.edge.max_payload_bytes,
        workers: config.edge.workers,
        server_reference: config.edge.server_reference.clone(),
    };
    let routes_dyn: Arc<dyn SessionRoutes> = Arc::new(routes.clone());
    let thing_dyn: Arc<dyn ThingService> = Arc::new(thing);
    let deps = EdgeDeps { auth: auth_dyn.clone(), thing: thing_dyn, bus: bus_dyn.clone(), routes: routes_dyn };
    let edge = Edge::start(edge_config, deps).await?;
    // Not thing: without it an edge still admits devices (auth) and answers from the thing models
    // it holds, so a thing outage must not take every edge out of the load balancer at once.
    let checks = vec![nats_check(bus), redis_check(routes.clone()), auth_check(auth)];
    let health = health(&config, checks).await?;

    let keeper = tokio::spawn(keep_routes(routes, node, ttl, edge.sessions(), auth_dyn, bus_dyn));
    shutdown.await;
    keeper.abort();
    edge.drain(Duration::from_secs(config.edge.drain_seconds)).await;
    health.stop();
    Ok(())
}

/// Beats this edge's heartbeat (re-registering its live sessions when Redis lost them, e.g.
/// after a restart), and reaps the routes of edges whose heartbeat stopped: their devices go
/// OFFLINE (with a status event) within about one TTL.
async fn keep_routes(
    routes: RedisRoutes,
    node: String,
    ttl: Duration,
    sessions: tether_edge::LiveSessions,
    auth: Arc<dyn AuthService>,
    bus: Arc<dyn Bus>,
) {
    let mut tick = tokio::time::interval(ttl / 3);
    loop {
        tick.tick().await;
        match routes.heartbeat(&node, ttl).await {
            Ok(true) => {}
            Ok(false) => {
                let live = sessions.routes();
                tracing::info!(sessions = live.len(), "heartbeat had lapsed: re-registering live sessions");
                match routes.reregister(live).await {
                    Ok(lost) => {
                        for (device, route) in lost {
                            sessions.kick(&device, route.conn_id);
                        }
                    }
                    Err(error) => tracing::warn!(%error, "re-registering sessions failed"),
                }
            }
            Err(error) => {
                tracing::warn!(%error, "heartbeat failed");
                continue;
            }
        }
        let reaped = match routes.reap_dead_nodes(now_ms()).await {
            Ok(reaped) => reaped,
            Err(error) => {
                tracing::warn!(%error, "reaping dead edges failed");
                continue;
            }
        };
        for (device, route) in reaped {
            tracing::info!(%device, node = %route.node, "device offline: its edge is gone");
            let Ok(record) = auth.find_device(&device).await else {
                continue;
            };
            let origin = Origin { tenant: &record.tenant_id, device: &device, iot_id: &record.iot_id };
            if let Err(error) = bus.publish_durable(events::status(origin, false, now_ms(), &route.client_ip)).await {
                tracing::warn!(%device, %error, "offline status not published");
            }
        }
    }
}

async fn run_gateway(config: ClusterConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let routes = connect_routes(&config).await?;
    let auth = auth_client(&config)?;
    let thing = thing_client(&config)?;
    let command = command_client(&config)?;
    let routes_dyn: Arc<dyn SessionRoutes> = Arc::new(routes.clone());
    let deps = GatewayDeps {
        auth: Arc::new(auth.clone()),
        thing: Arc::new(thing.clone()),
        routes: routes_dyn,
        command: Arc::new(command.clone()),
    };
    let addrs = GatewayAddrs { http: config.gateway.http_addr, grpc: config.gateway.grpc_addr };
    let gateway = Gateway::start(addrs, deps).await?;
    let checks = vec![redis_check(routes), auth_check(auth), thing_check(thing), command_check(command)];
    let health = health(&config, checks).await?;
    shutdown.await;
    gateway.stop().await;
    health.stop();
    Ok(())
}

/// The thing role: serves `tether.v1.Thing` over gRPC and keeps the latest properties from the
/// bus (consumer group `thing`).
async fn run_thing(config: ClusterConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let bus = connect_bus(&config).await?;
    let routes = connect_routes(&config).await?;
    let store = connect_kv(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.thing.grpc_addr)
        .await
        .with_context(|| format!("cannot listen on {} (thing.grpc_addr)", config.thing.grpc_addr))?;
    let thing = Arc::new(Thing::new(Arc::new(store.clone()), Arc::new(bus.clone()), Arc::new(routes.clone())));
    let keeper = thing.run_consumers().await.context("cannot join the thing consumer groups")?;
    let health = health(&config, vec![nats_check(bus), kv_check(store), redis_check(routes)]).await?;
    tracing::info!(addr = %config.thing.grpc_addr, "thing serving grpc");
    let served = tonic::transport::Server::builder()
        .add_service(ThingGrpcServer::new(thing).into_service())
        .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), shutdown)
        .await
        .context("thing grpc server failed");
    keeper.abort();
    health.stop();
    served
}

/// The command role: serves `tether.v1.Command` over gRPC, follows status, downlink and lifecycle
/// events (consumer groups `command-status`, `command-downlink`, `command-registry`) and sweeps
/// expired queued commands. Any number of replicas: each has its own reply subject for its
/// synchronous calls, and the groups share the events.
async fn run_command(config: ClusterConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let bus = connect_bus(&config).await?;
    let routes = connect_routes(&config).await?;
    let store = connect_kv(&config).await?;
    let auth = auth_client(&config)?;
    let thing = thing_client(&config)?;
    let listener = tokio::net::TcpListener::bind(config.command.grpc_addr)
        .await
        .with_context(|| format!("cannot listen on {} (command.grpc_addr)", config.command.grpc_addr))?;
    let deps = CommandDeps {
        store: Arc::new(store.clone()),
        bus: Arc::new(bus.clone()),
        routes: Arc::new(routes.clone()),
        thing: Arc::new(thing.clone()),
        auth: Arc::new(auth.clone()),
    };
    let (command, tasks) =
        Commands::start(deps, CommandConfig::default()).await.context("cannot join the command consumer groups")?;
    let checks = vec![nats_check(bus), kv_check(store), redis_check(routes), auth_check(auth), thing_check(thing)];
    let health = health(&config, checks).await?;
    tracing::info!(addr = %config.command.grpc_addr, "command serving grpc");
    let command: Arc<dyn CommandService> = command;
    let served = tonic::transport::Server::builder()
        .add_service(CommandGrpcServer::new(command).into_service())
        .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), shutdown)
        .await
        .context("command grpc server failed");
    tasks.stop().await;
    health.stop();
    served
}

// === readiness checks ===

fn nats_check(bus: NatsBus) -> Arc<dyn ReadinessCheck> {
    tether_telemetry::check("nats", move || {
        let bus = bus.clone();
        async move { bus.ping().await.map_err(|e| e.to_string()) }
    })
}

fn kv_check(store: NatsKvStore) -> Arc<dyn ReadinessCheck> {
    tether_telemetry::check("nats-kv", move || {
        let store = store.clone();
        async move { store.ping().await.map_err(|e| e.to_string()) }
    })
}

fn redis_check(routes: RedisRoutes) -> Arc<dyn ReadinessCheck> {
    tether_telemetry::check("redis", move || {
        let routes = routes.clone();
        async move { routes.ping().await.map_err(|e| e.to_string()) }
    })
}

fn auth_check(auth: AuthGrpcClient) -> Arc<dyn ReadinessCheck> {
    tether_telemetry::check("auth", move || {
        let auth = auth.clone();
        async move {
            // Any answer, even "unknown key", proves auth is reachable.
            match auth.authenticate_api_key("readiness-probe").await {
                Ok(_) | Err(ServiceError::Unauthenticated) => Ok(()),
                Err(error) => Err(error.to_string()),
            }
        }
    })
}

fn thing_check(thing: ThingGrpcClient) -> Arc<dyn ReadinessCheck> {
    let probe = ProductKey::new("readiness-probe").expect("a valid product key");
    tether_telemetry::check("thing", move || {
        let thing = thing.clone();
        let probe = probe.clone();
        async move {
            // Any answer from the service proves thing is reachable; `Unavailable` is what a
            // failed connection becomes (and what thing says when its store is down).
            match thing.get_thing_model(&probe).await {
                Err(error @ ServiceError::Unavailable(_)) => Err(error.to_string()),
                Ok(_) | Err(_) => Ok(()),
            }
        }
    })
}

fn command_check(command: CommandGrpcClient) -> Arc<dyn ReadinessCheck> {
    tether_telemetry::check("command", move || {
        let command = command.clone();
        async move {
            // Any answer from the service proves command is reachable (an unknown id is
            // `NotFound`); `Unavailable` is what a failed connection becomes.
            match command.get_command("readiness-probe").await {
                Err(error @ ServiceError::Unavailable(_)) => Err(error.to_string()),
                Ok(_) | Err(_) => Ok(()),
            }
        }
    })
}
