//! Cluster mode in one test process: real `nats-server` and `redis-server` (testkit), and the auth,
//! thing, command, gateway and edge roles run through the same `run_role` as `tether <role>`, on
//! free ports.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tether::cluster::{Role, run_role};
use tether::config::ClusterConfig;
use tether_bus::{Bus, NatsBus, NatsBusConfig};
use tether_contract::{CommandGrpcClient, CommandService};
use tether_testkit::{NatsServer, RedisServer, free_port};
use tokio::sync::oneshot;

pub const ADMIN_KEY: &str = "test-admin-key";

/// The servers a cluster keeps across a restart of its roles.
pub struct Servers {
    pub nats: NatsServer,
    pub redis: RedisServer,
}

/// Running roles.
pub struct ClusterPlatform {
    roles: Vec<(oneshot::Sender<()>, std::thread::JoinHandle<anyhow::Result<()>>)>,
    pub mqtt_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// The gateway's gRPC API.
    pub grpc_addr: SocketAddr,
    pub bus: Arc<dyn Bus>,
    /// A gRPC client of the command role.
    pub command: Arc<dyn CommandService>,
}

impl Servers {
    pub async fn start() -> Self {
        Self { nats: NatsServer::start().await, redis: RedisServer::start().await }
    }
}

impl ClusterPlatform {
    /// Starts auth, thing, command, gateway and one edge against `servers`, and waits until each is
    /// ready.
    /// A port picked free can be taken by a parallel test before a role binds it: such a start is
    /// stopped and tried again on other ports.
    pub async fn start(servers: &Servers) -> Self {
        for _ in 0..3 {
            match Self::try_start(servers).await {
                Ok(cluster) => return cluster,
                Err(started) => started.stop().await,
            }
        }
        panic!("cluster roles did not start in three tries (see the errors above)");
    }

    /// Starts the roles; on a role that stops during start-up, returns those started so far.
    async fn try_start(servers: &Servers) -> Result<Self, Self> {
        let auth_port = free_port();
        let thing_port = free_port();
        let command_port = free_port();
        let command_url = format!("http://127.0.0.1:{command_port}");
        let command: Arc<dyn CommandService> = Arc::new(CommandGrpcClient::new(&command_url).expect("command client"));
        let mqtt_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let http_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let grpc_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let base = |node: &str, health: u16| {
            let settings = [
                ("TETHER_NODE_ID", node.to_owned()),
                ("TETHER_NATS_URL", servers.nats.url()),
                ("TETHER_REDIS_URL", servers.redis.url()),
                ("TETHER_AUTH_GRPC_ADDR", format!("127.0.0.1:{auth_port}")),
                ("TETHER_AUTH_URL", format!("http://127.0.0.1:{auth_port}")),
                ("TETHER_AUTH_ADMIN_KEY", ADMIN_KEY.to_owned()),
                ("TETHER_THING_GRPC_ADDR", format!("127.0.0.1:{thing_port}")),
                ("TETHER_THING_URL", format!("http://127.0.0.1:{thing_port}")),
                ("TETHER_COMMAND_GRPC_ADDR", format!("127.0.0.1:{command_port}")),
                ("TETHER_COMMAND_URL", command_url.clone()),
                ("TETHER_EDGE_MQTT_ADDR", mqtt_addr.to_string()),
                ("TETHER_EDGE_WORKERS", "1".to_owned()),
                ("TETHER_EDGE_DRAIN_SECONDS", "0".to_owned()),
                ("TETHER_EDGE_HEARTBEAT_TTL_SECONDS", "2".to_owned()),
                ("TETHER_GATEWAY_HTTP_ADDR", http_addr.to_string()),
                ("TETHER_GATEWAY_GRPC_ADDR", grpc_addr.to_string()),
                ("TETHER_HEALTH_ADDR", format!("127.0.0.1:{health}")),
            ];
            let env = settings.into_iter().map(|(k, v)| (k.to_owned(), v));
            ClusterConfig::load(None, env).expect("cluster config")
        };
        let mut roles = Vec::new();
        let order = [
            (Role::Auth, "auth-1"),
            (Role::Thing, "thing-1"),
            (Role::Command, "command-1"),
            (Role::Gateway, "gateway-1"),
            (Role::Edge, "edge-1"),
        ];
        for (role, node) in order {
            let health = free_port();
            let config = base(node, health);
            let (stop, stopped) = oneshot::channel::<()>();
            // Each role gets its own runtime thread, as it would its own process (the edge's
            // future is not `Send`: it holds its MQTT server's handle).
            let task = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
                let result = runtime.block_on(run_role(role, config, async move {
                    let _ = stopped.await;
                }));
                if let Err(error) = &result {
                    eprintln!("{role:?} role failed: {error:#}");
                }
                result
            });
            let ready = wait_ready(role, health, &task).await;
            roles.push((stop, task));
            if !ready {
                let bus = NatsBus::connect(NatsBusConfig::new(servers.nats.url())).await.expect("test bus connects");
                return Err(Self { roles, mqtt_addr, http_addr, grpc_addr, bus: Arc::new(bus), command });
            }
        }
        let bus = NatsBus::connect(NatsBusConfig::new(servers.nats.url())).await.expect("test bus connects");
        Ok(Self { roles, mqtt_addr, http_addr, grpc_addr, bus: Arc::new(bus), command })
    }

    /// Stops the roles in reverse order (edges drain first); a role that failed was reported when
    /// it did.
    pub async fn stop(self) {
        for (stop, task) in self.roles.into_iter().rev() {
            let _ = stop.send(());
            if let Err(error) = tokio::task::spawn_blocking(move || task.join()).await.expect("join") {
                panic!("role panicked: {error:?}");
            }
        }
    }
}

/// Waits until the role answers ready (`true`), or has stopped, e.g. because its port was taken
/// by another test in the meantime (`false`; its error was printed).
async fn wait_ready(role: Role, health: u16, task: &std::thread::JoinHandle<anyhow::Result<()>>) -> bool {
    let url = format!("http://127.0.0.1:{health}/readyz");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        if task.is_finished() {
            eprintln!("{role:?} role stopped during start-up");
            return false;
        }
        if let Ok(response) = reqwest::get(&url).await
            && response.status().is_success()
        {
            return true;
        }
        assert!(tokio::time::Instant::now() < deadline, "{role:?} role not ready within 40 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
