//! What the command service's tests share: the service on the embedded adapters (fjall store,
//! in-process bus, local routes, real auth and thing services) and a scripted edge, which reads
//! the downlinks the service sends to node `n1` and answers as docs/commands.md says an edge
//! does (answers on `replyTo`, `delivered` and `reply` events on the stream).

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tether_auth::Auth;
use tether_bus::downlink::{CallAnswer, Downlink};
use tether_bus::events::{self, DownlinkReply, Origin};
use tether_bus::subject;
use tether_bus::{Bus, InProcessBus, Subscription};
use tether_command::{CommandConfig, CommandDeps, CommandTasks, Commands};
use tether_contract::{
    AuthService, CommandService, CommandStatus, NewDevice, NewProduct, SendOptions, ServiceError, now_ms,
};
use tether_model::{DeviceKey, ProductKey, TenantId, TopicClass, TopicOperation, Tsl};
use tether_store::{FjallStore, KvStore, LocalRoutes, Route, SessionRoutes};
use tether_thing::Thing;
use tokio::time::Instant;

pub const NODE: &str = "n1";

/// The service and what it runs on, in one data directory.
pub struct Setup {
    pub commands: Arc<Commands>,
    pub tasks: CommandTasks,
    pub bus: InProcessBus,
    pub routes: LocalRoutes,
    pub auth: Arc<Auth>,
    pub thing: Arc<Thing>,
    pub tenant: TenantId,
    /// Downlinks sent to node `n1`.
    pub edge: Subscription,
    pub dir: std::path::PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Setup {
    pub async fn start() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let mut setup = Self::open(tmp.path().to_owned()).await;
        setup._tmp = Some(tmp);
        setup
    }

    pub async fn open(dir: std::path::PathBuf) -> Self {
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
    pub async fn restart(self) -> Self {
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

    pub async fn product(&self, classes: &[(&str, TopicOperation)]) -> ProductKey {
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

    pub async fn device(&self, product_key: &ProductKey) -> DeviceKey {
        let device = self.auth.register_device(&self.tenant, product_key, NewDevice::default()).await.unwrap();
        DeviceKey::new(device.product_key, device.device_name)
    }

    /// Marks the device connected to `n1` and announces it, as the edge does.
    pub async fn connect(&self, device: &DeviceKey) {
        let route = Route { node: NODE.into(), conn_id: 1, connected_at: now_ms(), client_ip: "127.0.0.1".into() };
        self.routes.connect(device, route).await.unwrap();
        let origin = Origin { tenant: &self.tenant, device, iot_id: "iot" };
        self.bus.publish_durable(events::status(origin, true, now_ms(), "127.0.0.1")).await.unwrap();
    }

    pub async fn disconnect(&self, device: &DeviceKey) {
        self.routes.disconnect(device, NODE, 1, now_ms()).await.unwrap();
    }

    /// The next downlink the service sent to `n1`.
    pub async fn downlink(&mut self) -> Downlink {
        let message = tokio::time::timeout(Duration::from_secs(5), self.edge.next()).await.unwrap().unwrap();
        Downlink::from_message(message).unwrap()
    }

    pub async fn no_downlink(&mut self, wait: Duration) {
        if let Ok(Some(message)) = tokio::time::timeout(wait, self.edge.next()).await {
            panic!("unexpected downlink {message:?}");
        }
    }

    /// Reports what became of a followed downlink, as the edge does: `delivered`, or the
    /// device's reply with `code`.
    pub async fn report(&self, downlink: &Downlink, code: Option<i64>) {
        let message_id = &downlink.correlation.as_ref().unwrap().message_id;
        let origin = Origin { tenant: &self.tenant, device: &downlink.device, iot_id: "iot" };
        let message = match code {
            None => events::downlink_delivered(origin, message_id, &downlink.topic, now_ms()),
            Some(code) => {
                let data = json!({"echo": code});
                let message = if code == 200 { "success" } else { "failed" };
                let reply =
                    DownlinkReply { request_id: message_id, code, message, topic: &downlink.topic, data: &data };
                events::downlink_reply(origin, reply, now_ms())
            }
        };
        self.bus.publish_durable(message).await.unwrap();
    }

    pub async fn status(&self, message_id: &str, expected: CommandStatus) -> tether_contract::Command {
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
pub async fn answer(bus: &InProcessBus, downlink: &Downlink, payload: impl Into<Bytes>) {
    let correlation = downlink.correlation.as_ref().unwrap();
    let answer = CallAnswer {
        message_id: correlation.message_id.clone(),
        device: downlink.device.clone(),
        payload: payload.into(),
    };
    bus.publish(answer.to_message(correlation.reply_to.as_deref().unwrap())).await.unwrap();
}

pub fn items(value: Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

pub fn ttl(ms: u64) -> SendOptions {
    SendOptions { ttl_ms: Some(ms) }
}

pub fn invalid_field(error: ServiceError) -> String {
    match error {
        ServiceError::Invalid { field, .. } => field,
        other => panic!("not invalid: {other:?}"),
    }
}

pub fn lamp_model() -> Tsl {
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
