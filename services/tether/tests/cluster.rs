//! Cluster mode end to end: real `nats-server` and `redis-server`, and each role its own
//! `tether` process (two auth replicas, one or two thing replicas, two command replicas, gateway,
//! one or two edges), driven by real MQTT devices, the gateway's REST API and the command
//! service's gRPC.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tether_bus::{Bus, NatsBus, NatsBusConfig};
use tether_contract::{CommandGrpcClient, CommandService, CommandStatus, RrpcCode, SendOptions};
use tether_model::{DeviceKey, ProductKey};
use tether_testkit::{NatsServer, RedisServer, free_port};
use tether_tests::{Api, Device, DeviceCredentials, DeviceV5, V5Ack, eventually};

const ADMIN_KEY: &str = "cluster-test-admin-key";

/// The roles' `nats.ack_wait_seconds`: how long a delivery held by a dead consumer replica waits
/// before JetStream hands it to another (30 s by default).
const ACK_WAIT: Duration = Duration::from_secs(3);

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// One `tether <role>` process.
struct RoleProcess {
    child: Child,
    health: u16,
}

struct Cluster {
    nats: NatsServer,
    redis: RedisServer,
    _dir: tempfile::TempDir,
    /// Edges with even numbers use the first, the others the second.
    auth: Vec<RoleProcess>,
    /// The first serves `thing.url` (edges, gateway and command call it); the others only share
    /// the consumer group `thing`.
    things: Vec<RoleProcess>,
    _command: Vec<RoleProcess>,
    /// Where each command replica serves gRPC.
    command_urls: Vec<String>,
    gateway: RoleProcess,
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
            // The health server starts once the role has connected to what it uses.
            let response = reqwest::get(&url).await.ok()?;
            response.status().is_success().then_some(())
        })
        .await;
    }

    /// `/readyz` now: its status and body (`failing` names each check that failed).
    async fn readiness(&self) -> (StatusCode, Value) {
        let url = format!("http://127.0.0.1:{}/readyz", self.health);
        let response = reqwest::get(&url).await.expect("health server answers");
        (response.status(), response.json().await.unwrap_or_default())
    }

    /// `kill -9`.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM, as Kubernetes stops a pod.
    fn terminate(&self) {
        self.signal("-TERM");
    }

    /// Sends SIGSTOP: the process keeps its connections and whatever it was handed, and does
    /// nothing more (a hung replica).
    fn freeze(&self) {
        self.signal("-STOP");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill").arg(signal).arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success(), "kill {signal} {}", self.child.id());
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
        Self::start_with(edges, 1).await
    }

    /// A cluster with `edges` edges and `things` thing replicas.
    async fn start_with(edges: usize, things: usize) -> Self {
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
                "[nats]\nurl = \"{}\"\nack_wait_seconds = {}\n[redis]\nurl = \"{}\"\n[auth]\ngrpc_addr = \"127.0.0.1:{auth_port}\"\n\
                 url = \"http://127.0.0.1:{auth_port}\"\nadmin_key = \"{ADMIN_KEY}\"\n\
                 [thing]\ngrpc_addr = \"127.0.0.1:{thing_port}\"\nurl = \"http://127.0.0.1:{thing_port}\"\n\
                 [command]\ngrpc_addr = \"127.0.0.1:{command_port}\"\nurl = \"http://127.0.0.1:{command_port}\"\n\
                 [gateway]\nhttp_addr = \"127.0.0.1:{http_port}\"\ngrpc_addr = \"127.0.0.1:{gateway_grpc_port}\"\n[edge]\nheartbeat_ttl_seconds = 2\ndrain_seconds = 1\n",
                nats.url(),
                ACK_WAIT.as_secs(),
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
        let mut thing_processes = vec![RoleProcess::spawn("thing", &config, &[("TETHER_NODE_ID", "thing-1".into())])];
        for i in 2..=things {
            let env = [
                ("TETHER_NODE_ID", format!("thing-{i}")),
                ("TETHER_THING_GRPC_ADDR", format!("127.0.0.1:{}", free_port())),
            ];
            thing_processes.push(RoleProcess::spawn("thing", &config, &env));
        }
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
        for thing in &thing_processes {
            thing.ready().await;
        }
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
            auth: vec![auth, auth_2],
            things: thing_processes,
            _command: vec![command, command_2],
            command_urls: vec![
                format!("http://127.0.0.1:{command_port}"),
                format!("http://127.0.0.1:{command_port_2}"),
            ],
            gateway,
            edges: edge_processes,
            api,
        }
    }

    fn edge_addr(&self, i: usize) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.edges[i].1).into()
    }

    /// A device of a new product.
    async fn device(&self) -> DeviceCredentials {
        let (status, product) = self.api.post("/products", json!({"name": "cluster"})).await;
        assert!(status.is_success(), "{product}");
        self.register(product["productKey"].as_str().unwrap()).await
    }

    /// Another device of product `pk`.
    async fn register(&self, pk: &str) -> DeviceCredentials {
        let (status, device) = self.api.post(&format!("/products/{pk}/devices"), json!({})).await;
        assert!(status.is_success(), "{device}");
        DeviceCredentials {
            product_key: pk.to_owned(),
            device_name: device["deviceName"].as_str().unwrap().to_owned(),
            device_secret: device["deviceSecret"].as_str().unwrap().to_owned(),
        }
    }

    /// The JetStream state of consumer group `group`, as NATS reports it.
    async fn consumer_info(&self, group: &str) -> async_nats::jetstream::consumer::Info {
        let client = async_nats::connect(self.nats.url()).await.expect("nats connects");
        let stream = async_nats::jetstream::new(client).get_stream("TETHER").await.expect("the TETHER stream");
        let mut consumer: async_nats::jetstream::consumer::PullConsumer =
            stream.get_consumer(group).await.expect("the consumer group");
        consumer.info().await.expect("consumer info").clone()
    }

    async fn status(&self, creds: &DeviceCredentials) -> String {
        let (_, body) = self.api.get(&device_path(creds, "/status")).await;
        body["status"].as_str().unwrap_or_default().to_owned()
    }
}

/// `/products/{pk}/devices/{dn}{suffix}` of the tenant API.
fn device_path(creds: &DeviceCredentials, suffix: &str) -> String {
    format!("/products/{}/devices/{}{suffix}", creds.product_key, creds.device_name)
}

/// Each device posts `range` as QoS 1 property posts, one at a time, each answered 200 and
/// PUBACKed: post `i` sets the counter `n` to `i` and its own property `p{i}`, both measured at
/// `base + i` (the latest `n` shows the last post, the `p{i}` that none was lost).
async fn post_counters(devices: &mut [DeviceV5], creds: &[DeviceCredentials], base: i64, range: std::ops::Range<i64>) {
    let posts = devices.iter_mut().zip(creds).map(|(device, creds)| {
        let range = range.clone();
        async move {
            for i in range {
                let timed = json!({"value": i, "time": base + i});
                let body = json!({"id": i.to_string(), "params": {"n": timed, format!("p{i}"): timed}});
                device.publish(&creds.topic("thing/event/property/post"), body.to_string()).await;
                let reply = device.next_message().await.json();
                assert_eq!((reply["id"].as_str(), reply["code"].as_i64()), (Some(&*i.to_string()), Some(200)));
                let acked = device.next_ack().await;
                assert_eq!(acked, V5Ack::PubAck(rumqttc::v5::mqttbytes::v5::PubAckReason::Success));
            }
        }
    });
    futures::future::join_all(posts).await;
}

fn b64(bytes: &[u8]) -> String {
    base64::Engine::encode(&BASE64, bytes)
}

fn unb64(text: &Value) -> Vec<u8> {
    base64::Engine::decode(&BASE64, text.as_str().expect("base64 text")).expect("base64")
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
    let b = cluster.register(&a.product_key).await;
    let late = cluster.register(&a.product_key).await;
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

    // Through the gateway's REST API (the gateway calls a command replica, which reaches each
    // device's edge): an RRPC to each device answers with that device's bytes ...
    let calls = [(&a, "ping a"), (&b, "ping b")].map(|(creds, payload)| {
        let (api, path) = (cluster.api.clone(), device_path(creds, "/rrpc"));
        tokio::spawn(async move {
            api.post(&path, json!({"payloadBase64": b64(payload.as_bytes()), "timeoutMs": 5000})).await
        })
    });
    let mut ids = Vec::new();
    for (device, creds, payload) in [(&mut on_edge_0, &a, "ping a"), (&mut on_edge_1, &b, "ping b")] {
        let request = device.next_message().await;
        let id = request.topic.strip_prefix(&creds.topic("rrpc/request/")).expect("an rrpc request").to_owned();
        assert_eq!(request.payload, payload.as_bytes());
        device.publish(&creds.topic(&format!("rrpc/response/{id}")), format!("pong from {}", creds.device_name)).await;
        ids.push(id);
    }
    for ((call, creds), id) in calls.into_iter().zip([&a, &b]).zip(ids) {
        let (status, body) = call.await.unwrap();
        assert_eq!(
            (status, body["rrpcCode"].as_str(), body["messageId"].as_str()),
            (StatusCode::OK, Some("SUCCESS"), Some(&*id)),
            "{body}"
        );
        assert_eq!(unb64(&body["payloadBase64"]), format!("pong from {}", creds.device_name).into_bytes());
    }
    // ... and a property set reaches each device, and its record turns SUCCEEDED on its reply.
    for (device, creds) in [(&mut on_edge_0, &a), (&mut on_edge_1, &b)] {
        let (status, body) =
            cluster.api.post(&device_path(creds, "/properties:set"), json!({"items": {"Switch": 1}})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let message_id = body["messageId"].as_str().expect("a message id").to_owned();
        let request = device.next_message().await;
        assert_eq!(request.topic, creds.topic("thing/service/property/set"));
        assert_eq!(
            (request.json()["id"].as_str(), &request.json()["params"]),
            (Some(&*message_id), &json!({"Switch": 1}))
        );
        let reply = json!({"id": message_id, "code": 200, "data": {}, "message": "success"});
        device.publish(&creds.topic("thing/service/property/set_reply"), reply.to_string()).await;
        eventually("property set SUCCEEDED through the gateway", Duration::from_secs(10), || async {
            let (status, record) = cluster.api.get(&format!("/commands/{message_id}")).await;
            (status == StatusCode::OK && record["status"] == "SUCCEEDED").then_some(())
        })
        .await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thing_replica_killed_holding_deliveries_loses_no_acknowledged_property_post() {
    const DEVICES: usize = 20;
    const POSTS: i64 = 50;
    let mut cluster = Cluster::start_with(1, 2).await;
    let first = cluster.device().await;
    let mut creds = vec![first.clone()];
    for _ in 1..DEVICES {
        creds.push(cluster.register(&first.product_key).await);
    }
    let mut devices = Vec::new();
    for c in &creds {
        devices.push(DeviceV5::connect_with(cluster.edge_addr(0), c, None).await.unwrap());
    }
    let base = tether_contract::now_ms();

    // Both replicas take posts; then the second hangs holding the deliveries JetStream hands it
    // while the posts go on, and is killed (-9) without acking them; the posts go on again.
    let started = Instant::now();
    post_counters(&mut devices, &creds, base, 0..20).await;
    cluster.things[1].freeze();
    post_counters(&mut devices, &creds, base, 20..35).await;
    let held = cluster.consumer_info("thing").await.num_ack_pending;
    cluster.things[1].kill();
    let killed = Instant::now();
    post_counters(&mut devices, &creds, base, 35..POSTS).await;
    eprintln!(
        "{} posts acknowledged in {:?}; {held} deliveries unacked at the kill (the hung replica's and any in flight)",
        DEVICES as i64 * POSTS,
        started.elapsed()
    );

    // Every acknowledged post reaches the latest properties once JetStream hands the killed
    // replica's deliveries to the survivor (after ack_wait).
    let deadline = killed + ACK_WAIT + Duration::from_secs(15);
    let mut pending: Vec<&DeviceCredentials> = creds.iter().collect();
    while !pending.is_empty() {
        let mut missing = Vec::new();
        for device in pending {
            let (status, body) = cluster.api.get(&device_path(device, "/properties")).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let items = &body["items"];
            let lost: Vec<i64> = (0..POSTS).filter(|i| items[format!("p{i}")]["value"] != *i).collect();
            if !lost.is_empty() || items["n"]["value"] != POSTS - 1 {
                missing.push((device, lost, items["n"]["value"].clone()));
            }
        }
        assert!(
            Instant::now() < deadline || missing.is_empty(),
            "posts missing from the latest properties: {:?}",
            missing.iter().map(|(d, lost, n)| (&d.device_name, lost, n)).collect::<Vec<_>>()
        );
        pending = missing.into_iter().map(|(device, _, _)| device).collect();
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    eprintln!("every post in the latest properties {:?} after the kill", killed.elapsed());

    // The killed replica's deliveries did come back: the group delivered more than was posted,
    // and holds nothing unacked now.
    let info = eventually("thing group caught up", Duration::from_secs(10), || async {
        let info = cluster.consumer_info("thing").await;
        (info.num_ack_pending == 0 && info.num_pending == 0).then_some(info)
    })
    .await;
    let posted = DEVICES as u64 * POSTS as u64;
    assert!(
        info.delivered.consumer_sequence > posted,
        "{} deliveries for {posted} posts: nothing was redelivered",
        info.delivered.consumer_sequence
    );
    eprintln!("{} deliveries for {posted} posts", info.delivered.consumer_sequence);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_stays_ready_without_thing_and_turns_unready_without_auth() {
    let mut cluster = Cluster::start(1).await;
    let creds = cluster.device().await;
    let post = br#"{"id":"1","params":{"Power":1}}"#;
    let mut device = Device::connect(cluster.edge_addr(0), &creds).await;
    assert_eq!(device.request(&creds, "thing/event/property/post", post).await["code"], 200);

    // kill -9 the only thing replica: the gateway, which needs it, leaves its load balancer ...
    cluster.things[0].kill();
    let failing = eventually("gateway unready without thing", Duration::from_secs(10), || async {
        let (status, body) = cluster.gateway.readiness().await;
        (status == StatusCode::SERVICE_UNAVAILABLE).then_some(body["failing"].clone())
    })
    .await;
    assert!(failing.get("thing").is_some(), "{failing}");
    // ... the edge stays in its own: it still admits devices (auth) and acknowledges the posts of
    // products whose thing model it holds.
    let (status, body) = cluster.edges[0].0.readiness().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let other = cluster.register(&creds.product_key).await;
    let mut second = Device::connect(cluster.edge_addr(0), &other).await;
    assert_eq!(second.request(&other, "thing/event/property/post", post).await["code"], 200);
    assert_eq!(device.request(&creds, "thing/event/property/post", post).await["code"], 200);

    // Without the auth replica it signs devices in with, it can admit no one: unready.
    cluster.auth[0].kill();
    let failing = eventually("edge unready without auth", Duration::from_secs(10), || async {
        let (status, body) = cluster.edges[0].0.readiness().await;
        (status == StatusCode::SERVICE_UNAVAILABLE).then_some(body["failing"].clone())
    })
    .await;
    let failing_checks: Vec<&String> = failing.as_object().expect("failing checks").keys().collect();
    assert_eq!(failing_checks, ["auth"], "{failing}");
}
