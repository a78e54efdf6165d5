//! The command service on the embedded adapters (fjall store, in-process bus, local routes, real
//! auth and thing services), with a scripted edge: the test reads the downlinks the service
//! sends to node `n1` and answers as docs/commands.md says an edge does (answers on `replyTo`,
//! `delivered` and `reply` events on the stream). The same behaviour with real devices and the
//! real edge: services/tether/tests/commands.rs.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tether_auth::Auth;
use tether_bus::downlink::{Answer, Downlink};
use tether_bus::events::{self, Origin};
use tether_bus::subject::{self, UplinkKind};
use tether_bus::{Bus, BusMessage, InProcessBus, Subscription};
use tether_command::{CommandConfig, CommandDeps, CommandTasks, Commands, MAX_QUEUED_PER_DEVICE};
use tether_contract::{
    AuthService, CommandService, CommandStatus, Invocation, NewDevice, NewProduct, RrpcCode, SendOptions, ServiceError,
    ThingService, now_ms,
};
use tether_model::{DeviceKey, DeviceName, ProductKey, TenantId, TopicClass, TopicOperation, Tsl};
use tether_store::{FjallStore, KvStore, LocalRoutes, Route, SessionRoutes};
use tether_thing::Thing;
use tokio::time::Instant;

const NODE: &str = "n1";

/// The service and what it runs on, in one data directory.
struct Setup {
    commands: Arc<Commands>,
    tasks: CommandTasks,
    bus: InProcessBus,
    routes: LocalRoutes,
    auth: Arc<Auth>,
    thing: Arc<Thing>,
    tenant: TenantId,
    /// Downlinks sent to node `n1`.
    edge: Subscription,
    dir: std::path::PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Setup {
    async fn start() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let mut setup = Self::open(tmp.path().to_owned()).await;
        setup._tmp = Some(tmp);
        setup
    }

    async fn open(dir: std::path::PathBuf) -> Self {
        let store: Arc<dyn KvStore> = Arc::new(FjallStore::open(&dir.join("store")).unwrap());
        let bus = InProcessBus::open(&dir.join("bus")).unwrap();
        let bus_dyn: Arc<dyn Bus> = Arc::new(bus.clone());
        let routes = LocalRoutes::open(store.clone(), now_ms()).await.unwrap();
        let auth = Arc::new(Auth::open(store.clone(), bus_dyn.clone(), "admin").await.unwrap());
        let thing = Arc::new(Thing::new(store.clone(), bus_dyn.clone(), Arc::new(routes.clone())));
        let edge = bus.subscribe(&subject::edge_down(NODE)).await.unwrap();
        let deps = CommandDeps {
            store,
            bus: bus_dyn,
            routes: Arc::new(routes.clone()),
            thing: thing.clone(),
            auth: auth.clone(),
        };
        let config = CommandConfig { sweep_interval: Duration::from_millis(100), ..CommandConfig::default() };
        let (commands, tasks) = Commands::start(deps, config).await.unwrap();
        Self {
            commands,
            tasks,
            bus,
            routes,
            auth,
            thing,
            tenant: TenantId::new("default").unwrap(),
            edge,
            dir,
            _tmp: None,
        }
    }

    /// Stops everything and opens the same directory again.
    async fn restart(self) -> Self {
        let Self { commands, tasks, bus, routes, auth, thing, dir, _tmp, edge, .. } = self;
        tasks.stop().await;
        drop((commands, auth, thing, edge));
        routes.close().await;
        bus.close().await;
        drop((routes, bus));
        let mut setup = Self::open(dir).await;
        setup._tmp = _tmp;
        setup
    }

    async fn product(&self, classes: &[(&str, TopicOperation)]) -> ProductKey {
        let product = NewProduct {
            name: "p".into(),
            product_key: None,
            node_type: Default::default(),
            data_format: Default::default(),
            dialect: Default::default(),
        };
        let product = self.auth.create_product(&self.tenant, product).await.unwrap();
        for (short, operation) in classes {
            let class = TopicClass { short: (*short).into(), operation: *operation };
            self.auth.add_topic_class(&self.tenant, &product.product_key, class).await.unwrap();
        }
        product.product_key
    }

    async fn device(&self, product_key: &ProductKey) -> DeviceKey {
        let device = self.auth.register_device(&self.tenant, product_key, NewDevice::default()).await.unwrap();
        DeviceKey::new(device.product_key, device.device_name)
    }

    /// Marks the device connected to `n1` and announces it, as the edge does.
    async fn connect(&self, device: &DeviceKey) {
        let route = Route { node: NODE.into(), conn_id: 1, connected_at: now_ms(), client_ip: "127.0.0.1".into() };
        self.routes.connect(device, route).await.unwrap();
        let origin = Origin { tenant: &self.tenant, device, iot_id: "iot" };
        self.bus.publish_durable(events::status(origin, true, now_ms(), "127.0.0.1")).await.unwrap();
    }

    async fn disconnect(&self, device: &DeviceKey) {
        self.routes.disconnect(device, NODE, 1, now_ms()).await.unwrap();
    }

    /// The next downlink the service sent to `n1`.
    async fn downlink(&mut self) -> Downlink {
        let message = tokio::time::timeout(Duration::from_secs(5), self.edge.next()).await.unwrap().unwrap();
        Downlink::from_message(message).unwrap()
    }

    async fn no_downlink(&mut self, wait: Duration) {
        if let Ok(Some(message)) = tokio::time::timeout(wait, self.edge.next()).await {
            panic!("unexpected downlink {message:?}");
        }
    }

    /// Reports what became of a followed downlink, as the edge does.
    async fn report(&self, downlink: &Downlink, event: &str, code: Option<i64>) {
        let correlation = downlink.correlation.as_ref().unwrap();
        let mut body = json!({
            "gmtCreate": now_ms(),
            "iotId": "iot",
            "productKey": downlink.device.product_key,
            "deviceName": downlink.device.device_name,
            "requestId": correlation.message_id,
            "topic": downlink.topic,
        });
        if let Some(code) = code {
            body["code"] = json!(code);
            body["message"] = json!(if code == 200 { "success" } else { "failed" });
            body["data"] = json!({"echo": code});
        }
        let message =
            BusMessage::new(subject::uplink(&self.tenant, &downlink.device, UplinkKind::Downlink), body.to_string())
                .with_header("event", event)
                .with_header(events::header::MESSAGE_ID, format!("{:x}", rand::random::<u64>()));
        self.bus.publish_durable(message).await.unwrap();
    }

    async fn status(&self, message_id: &str, expected: CommandStatus) -> tether_contract::Command {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let command = self.commands.get_command(message_id).await.unwrap();
            if command.status == expected {
                return command;
            }
            assert!(Instant::now() < deadline, "command {message_id} is {:?}, not {expected:?}", command.status);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Hands the device's answer to the call that sent `downlink`, as the edge does.
async fn answer(bus: &InProcessBus, downlink: &Downlink, payload: impl Into<Bytes>) {
    let correlation = downlink.correlation.as_ref().unwrap();
    let message = BusMessage::new(correlation.reply_to.clone().unwrap(), payload.into())
        .with_header("messageId", correlation.message_id.clone())
        .with_header("productKey", downlink.device.product_key.as_str())
        .with_header("deviceName", downlink.device.device_name.as_str());
    bus.publish(message).await.unwrap();
}

fn items(value: Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

fn ttl(ms: u64) -> SendOptions {
    SendOptions { ttl_ms: Some(ms) }
}

fn invalid_field(error: ServiceError) -> String {
    match error {
        ServiceError::Invalid { field, .. } => field,
        other => panic!("not invalid: {other:?}"),
    }
}

fn lamp_model() -> Tsl {
    let json = json!({
        "properties": [
            { "identifier": "Temp", "name": "t", "accessMode": "r",
              "dataType": { "type": "int", "specs": { "min": "-20", "max": "60" } } },
            { "identifier": "Mode", "name": "m", "accessMode": "rw",
              "dataType": { "type": "enum", "specs": { "0": "off", "1": "on" } } }
        ],
        "events": [],
        "services": [
            { "identifier": "Blink", "name": "b", "callType": "async",
              "inputData": [{ "identifier": "times", "name": "n",
                              "dataType": { "type": "int", "specs": { "min": "1", "max": "9" } } }],
              "outputData": [] },
            { "identifier": "Probe", "name": "p", "callType": "sync", "inputData": [],
              "outputData": [{ "identifier": "ok", "name": "ok", "dataType": { "type": "bool", "specs": {} } }] }
        ]
    });
    Tsl::parse(json.to_string().as_bytes()).unwrap()
}

#[tokio::test]
async fn rrpc_to_an_offline_device_answers_offline_at_once() {
    let setup = Setup::start().await;
    let device = setup.device(&setup.product(&[]).await).await;
    let started = Instant::now();
    let outcome = setup.commands.rrpc(&device, Bytes::from_static(b"ping"), 8000, None).await.unwrap();
    assert_eq!(outcome.rrpc_code, RrpcCode::Offline);
    assert!(started.elapsed() < Duration::from_millis(200), "{:?}", started.elapsed());
    assert!(outcome.message_id.parse::<u64>().is_ok());
    assert_eq!(outcome.payload, None);
}

#[tokio::test]
async fn rrpc_times_out_at_its_deadline_and_a_late_answer_reaches_nobody() {
    let mut setup = Setup::start().await;
    let device = setup.device(&setup.product(&[]).await).await;
    setup.connect(&device).await;
    let started = Instant::now();
    let commands = setup.commands.clone();
    let target = device.clone();
    let call = tokio::spawn(async move { commands.rrpc(&target, Bytes::from_static(b"ping"), 1000, None).await });
    let downlink = setup.downlink().await;
    let id = &downlink.correlation.as_ref().unwrap().message_id;
    assert_eq!(downlink.topic, format!("/sys/{}/{}/rrpc/request/{id}", device.product_key, device.device_name));
    assert_eq!(downlink.payload, Bytes::from_static(b"ping"));
    let correlation = downlink.correlation.clone().unwrap();
    assert_eq!(correlation.expect, Answer::Rrpc);
    assert!((correlation.deadline - (now_ms() + 1000)).abs() < 200, "{correlation:?}");

    let outcome = call.await.unwrap().unwrap();
    let elapsed = started.elapsed();
    assert_eq!(outcome.rrpc_code, RrpcCode::Timeout);
    assert!(elapsed >= Duration::from_millis(990) && elapsed < Duration::from_millis(1100), "{elapsed:?}");

    // The answer after the deadline is dropped; the next call gets its own answer only.
    answer(&setup.bus, &downlink, "late").await;
    let commands = setup.commands.clone();
    let target = device.clone();
    let call = tokio::spawn(async move { commands.rrpc(&target, Bytes::from_static(b"again"), 2000, None).await });
    let second = setup.downlink().await;
    answer(&setup.bus, &downlink, "late again").await;
    answer(&setup.bus, &second, "pong").await;
    let outcome = call.await.unwrap().unwrap();
    assert_eq!((outcome.rrpc_code, outcome.payload), (RrpcCode::Success, Some(Bytes::from_static(b"pong"))));
}

#[tokio::test]
async fn concurrent_rrpcs_to_many_devices_each_get_their_own_answer() {
    let mut setup = Setup::start().await;
    let product = setup.product(&[]).await;
    let mut devices = Vec::new();
    for _ in 0..50 {
        let device = setup.device(&product).await;
        setup.connect(&device).await;
        devices.push(device);
    }
    // The edge answers each request after a random delay, so answers come back out of order.
    let bus = setup.bus.clone();
    let mut edge = std::mem::replace(&mut setup.edge, bus.subscribe("nobody.listens").await.unwrap());
    let responder = tokio::spawn(async move {
        while let Some(message) = edge.next().await {
            let downlink = Downlink::from_message(message).unwrap();
            let bus = bus.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % 50)).await;
                let mut body = downlink.device.device_name.to_string().into_bytes();
                body.extend_from_slice(b":");
                body.extend_from_slice(&downlink.payload);
                answer(&bus, &downlink, body).await;
            });
        }
    });
    let calls = (0..200).map(|i| {
        let commands = setup.commands.clone();
        let device = devices[i % devices.len()].clone();
        tokio::spawn(async move {
            let request = format!("request-{i}");
            let outcome = commands.rrpc(&device, Bytes::from(request.clone()), 5000, None).await.unwrap();
            assert_eq!(outcome.rrpc_code, RrpcCode::Success, "call {i}");
            let expected = format!("{}:{request}", device.device_name);
            assert_eq!(outcome.payload, Some(Bytes::from(expected)), "call {i}");
        })
    });
    for call in futures::future::join_all(calls).await {
        call.unwrap();
    }
    responder.abort();
}

#[tokio::test]
async fn rrpc_checks_its_timeout_payload_and_topic_and_uses_custom_topics() {
    let mut setup = Setup::start().await;
    let device = setup.device(&setup.product(&[]).await).await;
    let rrpc = |timeout, topic: Option<&str>| {
        let commands = setup.commands.clone();
        let device = device.clone();
        let topic = topic.map(str::to_owned);
        async move { commands.rrpc(&device, Bytes::from_static(b"x"), timeout, topic).await }
    };
    assert_eq!(invalid_field(rrpc(999, None).await.unwrap_err()), "timeoutMs");
    assert_eq!(invalid_field(rrpc(8001, None).await.unwrap_err()), "timeoutMs");
    assert_eq!(invalid_field(rrpc(1000, Some("/other/dn/user/get")).await.unwrap_err()), "topic");
    let big = Bytes::from(vec![0u8; tether_command::MAX_PAYLOAD_BYTES + 1]);
    let error = setup.commands.rrpc(&device, big, 1000, None).await.unwrap_err();
    assert_eq!(invalid_field(error), "payloadBase64");

    setup.connect(&device).await;
    let call = tokio::spawn(rrpc(2000, Some("get")));
    let downlink = setup.downlink().await;
    let id = &downlink.correlation.as_ref().unwrap().message_id;
    assert_eq!(downlink.topic, format!("/ext/rrpc/{id}/{}/{}/user/get", device.product_key, device.device_name));
    answer(&setup.bus, &downlink, "custom").await;
    assert_eq!(call.await.unwrap().unwrap().payload, Some(Bytes::from_static(b"custom")));
}

#[tokio::test]
async fn a_property_set_is_checked_sent_and_followed_to_its_reply() {
    let mut setup = Setup::start().await;
    let product = setup.product(&[]).await;
    setup.thing.put_thing_model(&product, lamp_model()).await.unwrap();
    let device = setup.device(&product).await;
    setup.connect(&device).await;

    for (bad, field) in [(json!({"Temp": 1}), "items.Temp"), (json!({"Mode": 5}), "items.Mode"), (json!({}), "items")] {
        let error = setup.commands.set_properties(&device, items(bad), SendOptions::default()).await.unwrap_err();
        assert_eq!(invalid_field(error), field);
    }

    let command =
        setup.commands.set_properties(&device, items(json!({"Mode": 1})), SendOptions::default()).await.unwrap();
    assert_eq!(command.status, CommandStatus::Sent);
    assert_eq!(command.method, "thing.service.property.set");
    let downlink = setup.downlink().await;
    assert_eq!(
        downlink.topic,
        format!("/sys/{}/{}/thing/service/property/set", device.product_key, device.device_name)
    );
    assert_eq!(downlink.qos, 1);
    let payload: Value = serde_json::from_slice(&downlink.payload).unwrap();
    assert_eq!(
        payload,
        json!({"id": command.message_id, "version": "1.0", "params": {"Mode": 1}, "method": "thing.service.property.set"})
    );
    let correlation = downlink.correlation.clone().unwrap();
    assert_eq!((correlation.expect, correlation.reply_to), (Answer::Alink, None));

    setup.report(&downlink, "delivered", None).await;
    setup.status(&command.message_id, CommandStatus::Delivered).await;
    setup.report(&downlink, "reply", Some(200)).await;
    let done = setup.status(&command.message_id, CommandStatus::Succeeded).await;
    assert_eq!((done.reply_code, done.reply_data), (Some(200), Some(json!({"echo": 200}))));
    assert_eq!(done.reply_message.as_deref(), Some("success"));
    assert!(done.updated_at >= done.created_at);
}

#[tokio::test]
async fn a_reply_overtaking_its_delivered_event_is_not_undone() {
    let mut setup = Setup::start().await;
    let device = setup.device(&setup.product(&[]).await).await;
    setup.connect(&device).await;
    let command =
        setup.commands.set_properties(&device, items(json!({"Any": 1})), SendOptions::default()).await.unwrap();
    let downlink = setup.downlink().await;
    setup.report(&downlink, "reply", Some(460)).await;
    setup.report(&downlink, "delivered", None).await;
    // Something after both, to know they were handled.
    let second =
        setup.commands.set_properties(&device, items(json!({"Any": 2})), SendOptions::default()).await.unwrap();
    let second_downlink = setup.downlink().await;
    setup.report(&second_downlink, "delivered", None).await;
    setup.status(&second.message_id, CommandStatus::Delivered).await;
    let failed = setup.status(&command.message_id, CommandStatus::Failed).await;
    assert_eq!(failed.reply_code, Some(460));
}

#[tokio::test]
async fn services_are_invoked_async_or_sync_as_the_thing_model_says() {
    let mut setup = Setup::start().await;
    let product = setup.product(&[]).await;
    setup.thing.put_thing_model(&product, lamp_model()).await.unwrap();
    let device = setup.device(&product).await;
    setup.connect(&device).await;
    let commands = setup.commands.clone();

    let error = commands.invoke_service(&device, "Nope", json!({}), None, SendOptions::default()).await.unwrap_err();
    assert_eq!(invalid_field(error), "identifier");
    let error = commands.invoke_service(&device, "Blink", json!({"times": 99}), None, SendOptions::default()).await;
    assert_eq!(invalid_field(error.unwrap_err()), "args.times");
    let error = commands.invoke_service(&device, "Probe", json!({}), Some(50), SendOptions::default()).await;
    assert_eq!(invalid_field(error.unwrap_err()), "timeoutMs");

    let Invocation::Async(command) =
        commands.invoke_service(&device, "Blink", json!({"times": 3}), None, SendOptions::default()).await.unwrap()
    else {
        panic!("Blink is async");
    };
    let downlink = setup.downlink().await;
    assert_eq!(downlink.topic, format!("/sys/{}/{}/thing/service/Blink", device.product_key, device.device_name));
    let payload: Value = serde_json::from_slice(&downlink.payload).unwrap();
    assert_eq!(payload["method"], "thing.service.Blink");
    assert_eq!(payload["params"], json!({"times": 3}));
    assert_eq!(command.method, "thing.service.Blink");

    let call = tokio::spawn(async move {
        let target = device.clone();
        commands.invoke_service(&target, "Probe", Value::Null, Some(3000), SendOptions::default()).await
    });
    let downlink = setup.downlink().await;
    let id = downlink.correlation.as_ref().unwrap().message_id.clone();
    assert!(downlink.topic.ends_with(&format!("/rrpc/request/{id}")), "{}", downlink.topic);
    let payload: Value = serde_json::from_slice(&downlink.payload).unwrap();
    assert_eq!(payload, json!({"id": id, "version": "1.0", "params": {}, "method": "thing.service.Probe"}));
    let reply = json!({"id": id, "code": 200, "data": {"ok": 1}, "message": "success"});
    answer(&setup.bus, &downlink, reply.to_string()).await;
    let Invocation::Sync { message_id, rrpc_code, code, data } = call.await.unwrap().unwrap() else {
        panic!("Probe is sync");
    };
    assert_eq!((message_id, rrpc_code, code, data), (id, RrpcCode::Success, Some(200), Some(json!({"ok": 1}))));
}

#[tokio::test]
async fn without_a_thing_model_any_service_is_invoked_async() {
    let mut setup = Setup::start().await;
    let device = setup.device(&setup.product(&[]).await).await;
    setup.connect(&device).await;
    let invocation = setup.commands.invoke_service(&device, "Anything", json!({"a": 1}), None, SendOptions::default());
    assert!(matches!(invocation.await.unwrap(), Invocation::Async(_)));
    assert!(setup.downlink().await.topic.ends_with("/thing/service/Anything"));
}

#[tokio::test]
async fn an_offline_device_needs_a_ttl_and_gets_its_queue_in_order_when_it_connects() {
    let mut setup = Setup::start().await;
    let device = setup.device(&setup.product(&[]).await).await;
    let error = setup.commands.set_properties(&device, items(json!({"A": 0})), SendOptions::default()).await;
    assert!(matches!(error, Err(ServiceError::NotFound { .. })), "{error:?}");

    let mut queued = Vec::new();
    for i in 0..5 {
        let command = setup.commands.set_properties(&device, items(json!({"A": i})), ttl(60_000)).await.unwrap();
        assert_eq!(command.status, CommandStatus::Queued);
        assert!(command.expires_at.unwrap() > now_ms() + 50_000);
        queued.push(command.message_id);
    }
    setup.no_downlink(Duration::from_millis(100)).await;
    let listed: Vec<String> =
        setup.commands.list_commands(&device).await.unwrap().into_iter().map(|c| c.message_id).collect();
    assert_eq!(listed, queued);

    setup.connect(&device).await;
    for (i, message_id) in queued.iter().enumerate() {
        let downlink = setup.downlink().await;
        assert_eq!(&downlink.correlation.as_ref().unwrap().message_id, message_id);
        let payload: Value = serde_json::from_slice(&downlink.payload).unwrap();
        assert_eq!(payload["params"], json!({"A": i}));
    }
    for message_id in &queued {
        setup.status(message_id, CommandStatus::Sent).await;
    }
    // Sent once: a second online event finds the queue empty.
    setup.connect(&device).await;
    setup.no_downlink(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_queue_is_bounded_and_expired_commands_are_never_sent() {
    let mut setup = Setup::start().await;
    let product = setup.product(&[]).await;
    let device = setup.device(&product).await;
    for i in 0..MAX_QUEUED_PER_DEVICE {
        setup.commands.set_properties(&device, items(json!({"A": i})), ttl(60_000)).await.unwrap();
    }
    let error = setup.commands.set_properties(&device, items(json!({"A": -1})), ttl(60_000)).await;
    assert!(matches!(error, Err(ServiceError::TooManyRequests(_))), "{error:?}");
    let error = setup.commands.set_properties(&device, items(json!({"A": 0})), ttl(0)).await;
    assert_eq!(invalid_field(error.unwrap_err()), "ttlMs");

    // The sweeper expires what outlives its TTL; it is never sent.
    let other = setup.device(&product).await;
    let short = setup.commands.set_properties(&other, items(json!({"B": 0})), ttl(100)).await.unwrap();
    setup.status(&short.message_id, CommandStatus::Expired).await;
    setup.connect(&other).await;

    setup.connect(&device).await;
    let mut sent = Vec::new();
    for _ in 0..MAX_QUEUED_PER_DEVICE {
        let downlink = setup.downlink().await;
        assert_eq!(downlink.device, device);
        let payload: Value = serde_json::from_slice(&downlink.payload).unwrap();
        sent.push(payload["params"]["A"].as_u64().unwrap());
    }
    assert_eq!(sent, (0..MAX_QUEUED_PER_DEVICE as u64).collect::<Vec<u64>>());
    setup.no_downlink(Duration::from_millis(100)).await;
    assert_eq!(setup.commands.get_command(&short.message_id).await.unwrap().status, CommandStatus::Expired);
}

#[tokio::test]
async fn a_queued_command_survives_a_restart() {
    let setup = Setup::start().await;
    let device = setup.device(&setup.product(&[]).await).await;
    let first = setup.commands.set_properties(&device, items(json!({"A": 1})), ttl(60_000)).await.unwrap();
    let second = setup.commands.invoke_service(&device, "Reset", json!({}), None, ttl(60_000)).await.unwrap();
    let Invocation::Async(second) = second else { panic!("async without a model") };

    let mut setup = setup.restart().await;
    assert_eq!(setup.commands.get_command(&first.message_id).await.unwrap().status, CommandStatus::Queued);
    setup.connect(&device).await;
    assert_eq!(setup.downlink().await.correlation.unwrap().message_id, first.message_id);
    assert_eq!(setup.downlink().await.correlation.unwrap().message_id, second.message_id);
    setup.status(&second.message_id, CommandStatus::Sent).await;
}

#[tokio::test]
async fn a_command_sent_to_an_online_device_waits_for_those_queued_before_it() {
    let mut setup = Setup::start().await;
    let device = setup.device(&setup.product(&[]).await).await;
    let queued = setup.commands.set_properties(&device, items(json!({"A": 1})), ttl(60_000)).await.unwrap();
    // Online, but its status event not handled yet: the route is there first.
    let route = Route { node: NODE.into(), conn_id: 1, connected_at: now_ms(), client_ip: String::new() };
    setup.routes.connect(&device, route).await.unwrap();
    let direct = setup.commands.set_properties(&device, items(json!({"A": 2})), SendOptions::default()).await.unwrap();
    assert_eq!(setup.downlink().await.correlation.unwrap().message_id, queued.message_id);
    assert_eq!(setup.downlink().await.correlation.unwrap().message_id, direct.message_id);
    setup.disconnect(&device).await;
}

#[tokio::test]
async fn pub_needs_a_sub_topic_class_and_is_best_effort_for_offline_devices() {
    let mut setup = Setup::start().await;
    let product = setup.product(&[("cmd", TopicOperation::Sub), ("both", TopicOperation::All)]).await;
    let device = setup.device(&product).await;
    let topic = |short: &str| format!("/{}/{}/user/{short}", device.product_key, device.device_name);
    let commands = setup.commands.clone();
    let publish = |topic: String, qos| {
        let commands = commands.clone();
        let product = product.clone();
        async move { commands.publish(&product, &topic, Bytes::from_static(b"hi"), qos).await }
    };
    // `update` is a default PUB class: devices publish there, they are never sent to.
    assert_eq!(invalid_field(publish(topic("update"), 0).await.unwrap_err()), "topicFullName");
    assert_eq!(invalid_field(publish(topic("unknown"), 0).await.unwrap_err()), "topicFullName");
    assert_eq!(invalid_field(publish("/sys/x/y/thing".into(), 0).await.unwrap_err()), "topicFullName");
    assert_eq!(invalid_field(publish(topic("cmd"), 2).await.unwrap_err()), "qos");
    let ghost = format!("/{}/ghost/user/cmd", device.product_key);
    assert!(matches!(publish(ghost, 0).await, Err(ServiceError::NotFound { .. })));

    let offline_id = publish(topic("cmd"), 1).await.unwrap();
    assert!(offline_id.parse::<u64>().is_ok());
    setup.no_downlink(Duration::from_millis(50)).await;

    setup.connect(&device).await;
    publish(topic("both"), 1).await.unwrap();
    let downlink = setup.downlink().await;
    assert_eq!((downlink.topic.as_str(), downlink.qos, downlink.correlation), (topic("both").as_str(), 1, None));
    assert_eq!(downlink.payload, Bytes::from_static(b"hi"));
}

#[tokio::test]
async fn a_broadcast_goes_to_every_edge_with_its_product_and_topic() {
    let setup = Setup::start().await;
    let product = setup.product(&[]).await;
    let mut edges = setup.bus.subscribe(subject::EDGE_BROADCAST).await.unwrap();
    let id = setup.commands.broadcast(&product, Bytes::from_static(b"all"), None).await.unwrap();
    let message = edges.next().await.unwrap();
    assert_eq!(message.headers.get("productKey").map(String::as_str), Some(product.as_str()));
    assert_eq!(message.headers.get("messageId"), Some(&id));
    assert_eq!(message.headers.get("topic"), None);
    assert_eq!(message.payload, Bytes::from_static(b"all"));

    let topic = format!("/broadcast/{product}/news");
    let id = setup.commands.broadcast(&product, Bytes::from_static(b"n"), Some(topic.clone())).await.unwrap();
    let message = edges.next().await.unwrap();
    assert_eq!((message.headers.get("messageId"), message.headers.get("topic")), (Some(&id), Some(&topic)));
    // Pub to a broadcast topic is a broadcast, as in Aliyun.
    setup.commands.publish(&product, &topic, Bytes::from_static(b"p"), 0).await.unwrap();
    assert_eq!(edges.next().await.unwrap().payload, Bytes::from_static(b"p"));

    let error = setup.commands.broadcast(&product, Bytes::from_static(b"x"), Some("/broadcast/other/x".into())).await;
    assert_eq!(invalid_field(error.unwrap_err()), "topicFullName");
    let big = Bytes::from(vec![0u8; tether_command::MAX_BROADCAST_BYTES + 1]);
    assert_eq!(invalid_field(setup.commands.broadcast(&product, big, None).await.unwrap_err()), "payloadBase64");
}

#[tokio::test]
async fn a_deleted_device_takes_its_commands_with_it() {
    let setup = Setup::start().await;
    let product = setup.product(&[]).await;
    let device = setup.device(&product).await;
    let command = setup.commands.set_properties(&device, items(json!({"A": 1})), ttl(60_000)).await.unwrap();
    setup.auth.delete_device(&setup.tenant, &device).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while setup.commands.get_command(&command.message_id).await.is_ok() {
        assert!(Instant::now() < deadline, "command of a deleted device still there");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Registered again under the same name, the device starts with no commands.
    let again = setup
        .auth
        .register_device(
            &setup.tenant,
            &product,
            NewDevice { device_name: Some(DeviceName::new(device.device_name.as_str()).unwrap()), device_secret: None },
        )
        .await
        .unwrap();
    assert_eq!(again.device_name, device.device_name);
    assert!(setup.commands.list_commands(&device).await.unwrap().is_empty());
    assert!(matches!(setup.commands.get_command("123").await, Err(ServiceError::NotFound { .. })));
}
