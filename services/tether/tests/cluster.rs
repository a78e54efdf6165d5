//! Cluster mode end to end: real `nats-server` and `redis-server`, and each role its own
//! `tether` process (two auth replicas, thing, two command replicas, gateway, two edges), driven by
//! real MQTT devices, HTTP and the command service's gRPC.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use tether_bus::{Bus, NatsBus, NatsBusConfig};
use tether_contract::{CommandGrpcClient, CommandService, CommandStatus, RrpcCode, SendOptions};
use tether_model::{DeviceKey, ProductKey};
use tether_testkit::{NatsServer, RedisServer, free_port};
use tether_tests::{Api, Device, DeviceCredentials, DeviceV5, V5Ack, eventually};

const ADMIN_KEY: &str = "cluster-test-admin-key";

/// One `tether <role>` process.
struct RoleProcess {
    child: Child,
    health: u16,
}

struct Cluster {
    nats: NatsServer,
    redis: RedisServer,
    _dir: tempfile::TempDir,
    _auth: Vec<RoleProcess>,
    _thing: RoleProcess,
    _command: Vec<RoleProcess>,
    /// Where each command replica serves gRPC.
    command_urls: Vec<String>,
    _gateway: RoleProcess,
    edges: Vec<(RoleProcess, u16)>,
    api: Api,
}

impl RoleProcess {
    fn spawn(role: &str, config: &Path, env: &[(&str, String)]) -> Self {
        let health = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_tether"));
        command
            .arg(role)
            .arg("--config")
            .arg(config)
            .env("TETHER_HEALTH_ADDR", format!("127.0.0.1:{health}"))
            .env("TETHER_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(key, value);
        }
        Self { child: command.spawn().expect("tether starts"), health }
    }

    async fn ready(&self) {
        let url = format!("http://127.0.0.1:{}/readyz", self.health);
        eventually("role ready", Duration::from_secs(20), || async {
            let response = reqwest::get(&url).await.ok()?;
            response.status().is_success().then_some(())
        })
        .await;
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM, as Kubernetes stops a pod.
    fn terminate(&self) {
        let status = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, off the async workers (the test's clients keep running).
    async fn exited(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "process {pid} still running");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for RoleProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Cluster {
    async fn start(edges: usize) -> Self {
        let nats = NatsServer::start().await;
        let redis = RedisServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let auth_port = free_port();
        let thing_port = free_port();
        let command_port = free_port();
        let http_port = free_port();
        let gateway_grpc_port = free_port();
        let config = dir.path().join("tether.toml");
        std::fs::write(
            &config,
            format!(
                "[nats]\nurl = \"{}\"\n[redis]\nurl = \"{}\"\n[auth]\ngrpc_addr = \"127.0.0.1:{auth_port}\"\n\
                 url = \"http://127.0.0.1:{auth_port}\"\nadmin_key = \"{ADMIN_KEY}\"\n\
                 [thing]\ngrpc_addr = \"127.0.0.1:{thing_port}\"\nurl = \"http://127.0.0.1:{thing_port}\"\n\
                 [command]\ngrpc_addr = \"127.0.0.1:{command_port}\"\nurl = \"http://127.0.0.1:{command_port}\"\n\
                 [gateway]\nhttp_addr = \"127.0.0.1:{http_port}\"\ngrpc_addr = \"127.0.0.1:{gateway_grpc_port}\"\n[edge]\nheartbeat_ttl_seconds = 2\ndrain_seconds = 1\n",
                nats.url(),
                redis.url()
            ),
        )
        .unwrap();
        // Two auth replicas: the second serves edges with odd numbers, so a device registered
        // through the first must reach the second's cache through the registry watch.
        let auth = RoleProcess::spawn("auth", &config, &[("TETHER_NODE_ID", "auth-1".into())]);
        let auth_port_2 = free_port();
        let auth_2 = RoleProcess::spawn(
            "auth",
            &config,
            &[("TETHER_NODE_ID", "auth-2".into()), ("TETHER_AUTH_GRPC_ADDR", format!("127.0.0.1:{auth_port_2}"))],
        );
        let thing = RoleProcess::spawn("thing", &config, &[("TETHER_NODE_ID", "thing-1".into())]);
        // Two command replicas: a call's answer must come back to the replica that waits for it.
        let command = RoleProcess::spawn("command", &config, &[("TETHER_NODE_ID", "command-1".into())]);
        let command_port_2 = free_port();
        let command_2 = RoleProcess::spawn(
            "command",
            &config,
            &[
                ("TETHER_NODE_ID", "command-2".into()),
                ("TETHER_COMMAND_GRPC_ADDR", format!("127.0.0.1:{command_port_2}")),
            ],
        );
        auth.ready().await;
        auth_2.ready().await;
        thing.ready().await;
        command.ready().await;
        command_2.ready().await;
        let gateway = RoleProcess::spawn("gateway", &config, &[("TETHER_NODE_ID", "gateway-1".into())]);
        let mut edge_processes = Vec::new();
        for i in 0..edges {
            let mqtt = free_port();
            let auth_url = if i % 2 == 1 { auth_port_2 } else { auth_port };
            let edge = RoleProcess::spawn(
                "edge",
                &config,
                &[
                    ("TETHER_NODE_ID", format!("edge-{i}")),
                    ("TETHER_EDGE_MQTT_ADDR", format!("127.0.0.1:{mqtt}")),
                    ("TETHER_AUTH_URL", format!("http://127.0.0.1:{auth_url}")),
                ],
            );
            edge_processes.push((edge, mqtt));
        }
        gateway.ready().await;
        for (edge, _) in &edge_processes {
            edge.ready().await;
        }
        let api = Api::new(([127, 0, 0, 1], http_port).into(), ADMIN_KEY);
        Self {
            nats,
            redis,
            _dir: dir,
            _auth: vec![auth, auth_2],
            _thing: thing,
            _command: vec![command, command_2],
            command_urls: vec![
                format!("http://127.0.0.1:{command_port}"),
                format!("http://127.0.0.1:{command_port_2}"),
            ],
            _gateway: gateway,
            edges: edge_processes,
            api,
        }
    }

    fn edge_addr(&self, i: usize) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.edges[i].1).into()
    }

    async fn device(&self) -> DeviceCredentials {
        let (status, product) = self.api.post("/products", json!({"name": "cluster"})).await;
        assert!(status.is_success(), "{product}");
        let pk = product["productKey"].as_str().unwrap().to_owned();
        let (status, device) = self.api.post(&format!("/products/{pk}/devices"), json!({})).await;
        assert!(status.is_success(), "{device}");
        DeviceCredentials {
            product_key: pk,
            device_name: device["deviceName"].as_str().unwrap().to_owned(),
            device_secret: device["deviceSecret"].as_str().unwrap().to_owned(),
        }
    }

    async fn status(&self, creds: &DeviceCredentials) -> String {
        let path = format!("/products/{}/devices/{}/status", creds.product_key, creds.device_name);
        let (_, body) = self.api.get(&path).await;
        body["status"].as_str().unwrap_or_default().to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_work_across_edges_with_takeover_and_a_dead_edge_is_reaped() {
    let mut cluster = Cluster::start(2).await;
    let creds = cluster.device().await;
    let bus = NatsBus::connect(NatsBusConfig::new(cluster.nats.url())).await.unwrap();
    let mut uplinks = bus.consume("cluster-test", "tether.up.*.*.*.property").await.unwrap();

    // On edge 0: signed in through auth over gRPC, the property post is acknowledged only once
    // JetStream holds it, and the uplink reaches a durable consumer group.
    let mut first = DeviceV5::connect_with(cluster.edge_addr(0), &creds, None).await.unwrap();
    first.publish(&creds.topic("thing/event/property/post"), br#"{"id":"1","params":{"Power":1}}"#.to_vec()).await;
    let reply = first.next_message().await.json();
    assert_eq!((reply["id"].as_str(), reply["code"].as_i64()), (Some("1"), Some(200)));
    assert_eq!(first.next_ack().await, V5Ack::PubAck(rumqttc::v5::mqttbytes::v5::PubAckReason::Success));
    let delivery = tokio::time::timeout(Duration::from_secs(10), uplinks.next()).await.unwrap().unwrap();
    let body: serde_json::Value = serde_json::from_slice(&delivery.message.payload).unwrap();
    assert_eq!(body["items"]["Power"]["value"], 1);
    delivery.ack().await.unwrap();
    assert_eq!(cluster.status(&creds).await, "ONLINE");

    // A burst of pipelined QoS 1 posts: replies come back, and uplinks reach the bus, in order.
    for i in 100..300 {
        first
            .publish(&creds.topic("thing/event/property/post"), format!(r#"{{"id":"{i}","params":{{"n":{i}}}}}"#))
            .await;
    }
    let mut replies = Vec::new();
    while replies.len() < 200 {
        replies.push(first.next_message().await.json()["id"].as_str().unwrap().parse::<i64>().unwrap());
        assert_eq!(first.next_ack().await, V5Ack::PubAck(rumqttc::v5::mqttbytes::v5::PubAckReason::Success));
    }
    assert_eq!(replies, (100..300).collect::<Vec<_>>());
    let mut burst = Vec::new();
    while burst.len() < 200 {
        let delivery = tokio::time::timeout(Duration::from_secs(15), uplinks.next()).await.unwrap().unwrap();
        let body: serde_json::Value = serde_json::from_slice(&delivery.message.payload).unwrap();
        burst.push(body["items"]["n"]["value"].as_i64().unwrap());
        delivery.ack().await.unwrap();
    }
    assert_eq!(burst, (100..300).collect::<Vec<_>>());

    // The same device on edge 1 takes over: edge 0 closes the old session (v5 0x8E).
    let mut second = Device::connect(cluster.edge_addr(1), &creds).await;
    assert_eq!(
        first.next_ack().await,
        V5Ack::Disconnect(rumqttc::v5::mqttbytes::v5::DisconnectReasonCode::SessionTakenOver)
    );
    let reply = second.request(&creds, "thing/event/property/post", br#"{"id":"2","params":{"Power":0}}"#).await;
    assert_eq!(reply["code"], 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(cluster.status(&creds).await, "ONLINE", "the old session's close must not win");

    // kill -9 edge 1: its device shows OFFLINE once the reaper on edge 0 notices.
    let killed = Instant::now();
    cluster.edges[1].0.kill();
    eventually("device OFFLINE after its edge died", Duration::from_secs(15), || async {
        (cluster.status(&creds).await == "OFFLINE").then_some(())
    })
    .await;
    eprintln!("killed edge's device OFFLINE after {:?}", killed.elapsed());

    // It reconnects to the surviving edge.
    let mut back = Device::connect(cluster.edge_addr(0), &creds).await;
    let reply = back.request(&creds, "thing/event/property/post", br#"{"id":"3","params":{}}"#).await;
    assert_eq!(reply["code"], 200);
    assert_eq!(cluster.status(&creds).await, "ONLINE");

    // Disabling through the gateway kicks the device wherever it is.
    let path = format!("/products/{}/devices/{}:disable", creds.product_key, creds.device_name);
    assert!(cluster.api.post(&path, json!({})).await.0.is_success());
    back.closed().await;
    assert_eq!(cluster.status(&creds).await, "DISABLE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_and_acknowledged_uplinks_survive_redis_and_nats_restarts() {
    let mut cluster = Cluster::start(1).await;
    let creds = cluster.device().await;
    let bus = NatsBus::connect(NatsBusConfig::new(cluster.nats.url())).await.unwrap();
    let mut uplinks = bus.consume("restart-test", "tether.up.*.*.*.property").await.unwrap();
    let mut device = Device::connect(cluster.edge_addr(0), &creds).await;
    assert_eq!(cluster.status(&creds).await, "ONLINE");

    // Redis restarts empty: the edge re-registers its live sessions at its next heartbeat.
    cluster.redis.restart().await;
    eventually("route re-registered after the redis restart", Duration::from_secs(15), || async {
        (cluster.status(&creds).await == "ONLINE").then_some(())
    })
    .await;

    // Every post the device got a 200 for is consumed once, in order, across a NATS restart.
    let mut acknowledged = Vec::new();
    for i in 0..10 {
        let body = format!(r#"{{"id":"{i}","params":{{"n":{i}}}}}"#);
        let reply = device.request(&creds, "thing/event/property/post", body.as_bytes()).await;
        assert_eq!(reply["code"], 200);
        acknowledged.push(i);
    }
    cluster.nats.restart().await;
    cluster.edges[0].0.ready().await;
    for i in 10..20 {
        let body = format!(r#"{{"id":"{i}","params":{{"n":{i}}}}}"#);
        let reply = device.request(&creds, "thing/event/property/post", body.as_bytes()).await;
        if reply["code"] == 200 {
            acknowledged.push(i);
        }
    }
    assert!(acknowledged.len() >= 15, "most posts after the restart are accepted: {acknowledged:?}");
    let mut consumed = Vec::new();
    while consumed.len() < acknowledged.len() {
        let delivery = tokio::time::timeout(Duration::from_secs(15), uplinks.next()).await.unwrap().unwrap();
        let body: serde_json::Value = serde_json::from_slice(&delivery.message.payload).unwrap();
        consumed.push(body["items"]["n"]["value"].as_i64().unwrap());
        delivery.ack().await.unwrap();
    }
    assert_eq!(consumed, acknowledged);

    // A pipelined burst right after the NATS restart: what was acknowledged is consumed once, in
    // order (a post answered with an error may still have been stored: it may appear, once).
    for i in 100..300 {
        device
            .publish(&creds.topic("thing/event/property/post"), format!(r#"{{"id":"{i}","params":{{"n":{i}}}}}"#))
            .await;
    }
    let mut acknowledged = Vec::new();
    for expected in 100..300 {
        let reply = device.next_message().await.json();
        assert_eq!(reply["id"].as_str(), Some(expected.to_string().as_str()), "replies in order");
        if reply["code"] == 200 {
            acknowledged.push(expected);
        }
    }
    let mut burst = Vec::new();
    while !acknowledged.last().is_some_and(|last| burst.contains(last)) {
        let delivery = tokio::time::timeout(Duration::from_secs(15), uplinks.next()).await.unwrap().unwrap();
        let body: serde_json::Value = serde_json::from_slice(&delivery.message.payload).unwrap();
        burst.push(body["items"]["n"]["value"].as_i64().unwrap());
        delivery.ack().await.unwrap();
    }
    assert!(burst.windows(2).all(|w| w[0] < w[1]), "in order, each once: {burst:?}");
    assert!(acknowledged.iter().all(|n| burst.contains(n)), "every acknowledged post consumed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_drains_on_sigterm_and_its_devices_go_offline_at_once() {
    let mut cluster = Cluster::start(1).await;
    let creds = cluster.device().await;
    let mut device = DeviceV5::connect_with(cluster.edge_addr(0), &creds, None).await.unwrap();
    assert_eq!(cluster.status(&creds).await, "ONLINE");

    let started = Instant::now();
    cluster.edges[0].0.terminate();
    assert_eq!(
        device.next_ack().await,
        V5Ack::Disconnect(rumqttc::v5::mqttbytes::v5::DisconnectReasonCode::ServerShuttingDown)
    );
    let status = cluster.edges[0].0.exited().await;
    assert!(status.success(), "edge exits cleanly on SIGTERM: {status}");
    // The drain records each device OFFLINE itself; the reaper (2 s TTL) is not needed.
    assert_eq!(cluster.status(&creds).await, "OFFLINE");
    assert!(started.elapsed() < Duration::from_secs(2), "drained in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_reach_devices_on_any_edge_through_any_command_replica() {
    let cluster = Cluster::start(2).await;
    let replicas: Vec<CommandGrpcClient> =
        cluster.command_urls.iter().map(|url| CommandGrpcClient::new(url).unwrap()).collect();
    let a = cluster.device().await;
    let register = |pk: String| {
        let api = cluster.api.clone();
        async move {
            let (status, device) = api.post(&format!("/products/{pk}/devices"), json!({})).await;
            assert!(status.is_success(), "{device}");
            DeviceCredentials {
                product_key: pk,
                device_name: device["deviceName"].as_str().unwrap().to_owned(),
                device_secret: device["deviceSecret"].as_str().unwrap().to_owned(),
            }
        }
    };
    let b = register(a.product_key.clone()).await;
    let late = register(a.product_key.clone()).await;
    let key = |c: &DeviceCredentials| DeviceKey::parse(&c.product_key, &c.device_name).unwrap();
    let mut on_edge_0 = Device::connect(cluster.edge_addr(0), &a).await;
    let mut on_edge_1 = Device::connect(cluster.edge_addr(1), &b).await;

    // RRPC from each replica to the device on the other edge: each answer reaches its caller.
    let call_b = {
        let (command, device) = (replicas[0].clone(), key(&b));
        tokio::spawn(async move { command.rrpc(&device, Bytes::from_static(b"to b"), 5000, None).await })
    };
    let call_a = {
        let (command, device) = (replicas[1].clone(), key(&a));
        tokio::spawn(async move { command.rrpc(&device, Bytes::from_static(b"to a"), 5000, None).await })
    };
    for (device, creds, answer) in [(&mut on_edge_0, &a, "from a"), (&mut on_edge_1, &b, "from b")] {
        let request = device.next_message().await;
        let id = request.topic.strip_prefix(&creds.topic("rrpc/request/")).expect("an rrpc request").to_owned();
        device.publish(&creds.topic(&format!("rrpc/response/{id}")), answer.as_bytes().to_vec()).await;
    }
    let outcome = call_b.await.unwrap().unwrap();
    assert_eq!((outcome.rrpc_code, outcome.payload), (RrpcCode::Success, Some(Bytes::from_static(b"from b"))));
    let outcome = call_a.await.unwrap().unwrap();
    assert_eq!((outcome.rrpc_code, outcome.payload), (RrpcCode::Success, Some(Bytes::from_static(b"from a"))));

    // A broadcast reaches the product's devices on both edges.
    let product = ProductKey::new(a.product_key.clone()).unwrap();
    let id = replicas[1].broadcast(&product, Bytes::from_static(b"all"), None).await.unwrap();
    for (device, creds) in [(&mut on_edge_0, &a), (&mut on_edge_1, &b)] {
        let message = device.next_message().await;
        assert_eq!(
            (message.topic, message.payload),
            (creds.topic(&format!("broadcast/request/{id}")), b"all".to_vec())
        );
    }

    // A command queued through one replica is sent when the device connects, whichever replica
    // takes its online event, and its record moves on as the device answers.
    let options = SendOptions { ttl_ms: Some(60_000) };
    let items = json!({"A": 1}).as_object().unwrap().clone();
    let queued = replicas[0].set_properties(&key(&late), items, options).await.unwrap();
    assert_eq!(queued.status, CommandStatus::Queued);
    let mut device = Device::connect(cluster.edge_addr(1), &late).await;
    let message = device.next_message().await;
    assert_eq!(message.json()["id"].as_str(), Some(queued.message_id.as_str()));
    let reply = json!({"id": queued.message_id, "code": 200, "data": {}, "message": "success"});
    device.publish(&late.topic("thing/service/property/set_reply"), reply.to_string()).await;
    eventually("queued command succeeded", Duration::from_secs(10), || async {
        let command = replicas[1].get_command(&queued.message_id).await.ok()?;
        (command.status == CommandStatus::Succeeded).then_some(())
    })
    .await;
}
