//! The `command` service: the correlator between tenants' calls and their devices (property set,
//! service invocation, RRPC, custom-topic Pub, broadcast), implementing
//! [`tether_contract::CommandService`]. The protocol with the edge is docs/commands.md.
//!
//! - **Reaching a device.** The device's edge node comes from the session routes; a command is a
//!   [`Downlink`] on `tether.edge.<node>.down` (core). No route: the device is offline.
//! - **Synchronous calls** (RRPC, sync services) wait for the answer the edge hands to this
//!   instance's reply subject ([`waiters`]); no route answers `OFFLINE` at once, no answer by the
//!   deadline `TIMEOUT`. Nothing is stored.
//! - **Async commands** (property set, async services) are recorded ([`records`]) and followed
//!   through the edge's `downlink` events (consumer group [`DOWNLINK_GROUP`]): SENT → DELIVERED
//!   (QoS 1 PUBACK) → SUCCEEDED | FAILED (the device's reply). They go out at QoS 1, so the
//!   PUBACK is seen; Aliyun sends at QoS 0, and devices take either.
//! - **Offline queue.** An async command with `ttl_ms` for an offline device is QUEUED ([`queue`],
//!   at most [`MAX_QUEUED_PER_DEVICE`]); when the device's `online` status event arrives
//!   (consumer group [`STATUS_GROUP`]) its queue is sent in order, and the sweeper marks what
//!   outlived its TTL EXPIRED. Without `ttl_ms` an offline device is
//!   [`ServiceError::DeviceOffline`] (HTTP 409 `DeviceOffline`), so the caller learns the command
//!   was not taken and can retry with a TTL.
//! - **Pub** checks the topic against the product's topic classes (SUB or ALL), read from the auth
//!   service; it is best effort: an offline device still gets a message id, as Aliyun's QoS 0 Pub.
//!
//! Records live in the [`KvStore`] and the consumer groups are durable, so queued commands and
//! outcomes survive a restart; records are kept for [`CommandConfig::retention`], and forgotten
//! with their device (consumer group [`REGISTRY_GROUP`]).

mod consumers;
mod queue;
mod records;
mod request;
mod status;
mod waiters;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::{Map, Value};
use tether_bus::downlink::{Answer, Broadcast, Correlation, Downlink};
use tether_bus::{Bus, BusError, subject};
use tether_contract::{
    AuthService, Command, CommandService, CommandStatus, Invocation, Product, RrpcCode, RrpcOutcome, SendOptions,
    ServiceError, ThingService, now_ms,
};
use tether_model::tsl::CallType;
use tether_model::{DeviceKey, ProductKey, Tsl};
use tether_store::{KvStore, Route, SessionRoutes};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use consumers::{DOWNLINK_EVENTS, DOWNLINK_GROUP, REGISTRY_GROUP, STATUS_EVENTS, STATUS_GROUP};
pub use queue::MAX_QUEUED_PER_DEVICE;
pub use request::{DEFAULT_TIMEOUT_MS, MAX_BROADCAST_BYTES, MAX_PAYLOAD_BYTES, MAX_TTL_MS};

use crate::queue::QueuedEntry;
use crate::records::{Records, StoredCommand};
use crate::request::PubTarget;
use crate::status::Step;
use crate::waiters::{Wait, Waiters};

/// How long the edge follows an async command it delivered (its PUBACK becomes `delivered`);
/// the device's reply is reported whenever it comes.
const ASYNC_FOLLOW_MS: i64 = 60_000;

/// What the command service runs on.
#[derive(Clone)]
pub struct CommandDeps {
    pub store: Arc<dyn KvStore>,
    pub bus: Arc<dyn Bus>,
    pub routes: Arc<dyn SessionRoutes>,
    /// Thing models, to check property sets and service calls.
    pub thing: Arc<dyn ThingService>,
    /// Products' topic classes, to check Pub topics.
    pub auth: Arc<dyn AuthService>,
}

/// Timings of the background work.
#[derive(Debug, Clone)]
pub struct CommandConfig {
    /// How often queued commands are checked for an expired TTL.
    pub sweep_interval: Duration,
    /// How long a command's record is kept after it was made.
    pub retention: Duration,
    /// How often records older than `retention` are removed.
    pub retention_interval: Duration,
}

/// The `command` service.
pub struct Commands {
    records: Records,
    bus: Arc<dyn Bus>,
    routes: Arc<dyn SessionRoutes>,
    thing: Arc<dyn ThingService>,
    auth: Arc<dyn AuthService>,
    config: CommandConfig,
    /// `tether.command.<instance>.reply`: where edges hand this instance's answers.
    reply_subject: String,
    waiters: Arc<Waiters>,
    /// One queue flush at a time per device, so queued commands leave in order.
    flushes: Mutex<HashMap<DeviceKey, Arc<tokio::sync::Mutex<()>>>>,
}

/// The service's background tasks: answer routing, consumers, sweeper.
pub struct CommandTasks {
    tasks: Vec<JoinHandle<()>>,
}

// === impl CommandConfig ===

impl Default for CommandConfig {
    fn default() -> Self {
        Self {
            sweep_interval: Duration::from_secs(1),
            retention: Duration::from_secs(7 * 24 * 3600),
            retention_interval: Duration::from_secs(600),
        }
    }
}

// === impl Commands ===

impl Commands {
    /// Subscribes to this instance's reply subject, joins the consumer groups and starts the
    /// sweeper; the service takes calls at once.
    pub async fn start(deps: CommandDeps, config: CommandConfig) -> Result<(Arc<Self>, CommandTasks), BusError> {
        let CommandDeps { store, bus, routes, thing, auth } = deps;
        let instance = format!("{:016x}", rand::random::<u64>());
        let reply_subject = subject::command_replies(&instance);
        let replies = bus.subscribe(&reply_subject).await?;
        let statuses = bus.consume(STATUS_GROUP, STATUS_EVENTS).await?;
        let downlinks = bus.consume(DOWNLINK_GROUP, DOWNLINK_EVENTS).await?;
        let lifecycles = bus.consume(REGISTRY_GROUP, subject::ALL_LIFECYCLE).await?;
        let waiters = Arc::new(Waiters::default());
        let commands = Arc::new(Self {
            records: Records::new(store),
            bus,
            routes,
            thing,
            auth,
            config,
            reply_subject,
            waiters: waiters.clone(),
            flushes: Mutex::new(HashMap::new()),
        });
        tracing::debug!(%instance, "command service started");
        let tasks = vec![
            tokio::spawn(waiters.route(replies)),
            tokio::spawn(commands.clone().follow_statuses(statuses)),
            tokio::spawn(commands.clone().follow_downlinks(downlinks)),
            tokio::spawn(commands.clone().forget_deleted(lifecycles)),
            tokio::spawn(commands.clone().sweep()),
        ];
        Ok((commands, CommandTasks { tasks }))
    }

    /// The device's live route; `None` when it is offline.
    async fn route(&self, device: &DeviceKey) -> Result<Option<Route>, ServiceError> {
        let presence = self.routes.presence(device).await.map_err(|e| ServiceError::Unavailable(e.to_string()))?;
        Ok(presence.and_then(|p| p.route))
    }

    async fn thing_model(&self, product_key: &ProductKey) -> Result<Option<Tsl>, ServiceError> {
        self.thing.get_thing_model(product_key).await
    }

    /// The product of a device, with its topic classes.
    async fn product_of(&self, device: &DeviceKey) -> Result<Product, ServiceError> {
        let record = self.auth.find_device(device).await?;
        self.auth.get_product(&record.tenant_id, &device.product_key).await
    }

    /// Records an async command and sends it, or queues it for an offline device.
    async fn send_async(
        &self,
        device: &DeviceKey,
        topic: String,
        method: String,
        params: Value,
        options: SendOptions,
    ) -> Result<Command, ServiceError> {
        let ttl = request::ttl_ms(options.ttl_ms)?;
        let message_id = request::new_message_id();
        let payload = request::alink_request(&message_id, &method, &params);
        request::check_payload(payload.len(), MAX_PAYLOAD_BYTES)?;
        let now = now_ms();
        let mut stored = StoredCommand {
            command: Command {
                message_id: message_id.clone(),
                product_key: device.product_key.clone(),
                device_name: device.device_name.clone(),
                topic,
                method,
                status: CommandStatus::Sent,
                created_at: now,
                updated_at: now,
                expires_at: None,
                reply_code: None,
                reply_data: None,
                reply_message: None,
            },
            payload,
            seq: records::next_seq(),
        };
        if let Some(route) = self.route(device).await? {
            // What was queued before goes first.
            if !self.records.queue(device).await?.is_empty() {
                self.deliver_queued(device).await?;
            }
            // Recorded before it is sent, so the device's reply always finds it.
            self.records.create(&stored).await?;
            if let Err(error) = self.send(&route, &stored).await {
                self.records.advance(device, &message_id, &not_sent(&error), now_ms()).await?;
                return Err(error);
            }
            return Ok(stored.command);
        }
        let Some(ttl) = ttl else {
            return Err(offline(device));
        };
        let expires_at = now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX));
        stored.command.status = CommandStatus::Queued;
        stored.command.expires_at = Some(expires_at);
        // Refused before anything is written; the append checks again.
        if self.records.queue(device).await?.0.len() >= MAX_QUEUED_PER_DEVICE {
            return Err(records::queue_full(device));
        }
        self.records.create(&stored).await?;
        let entry = QueuedEntry { message_id: message_id.clone(), expires_at };
        if let Err(error) = self.records.enqueue(device, entry).await {
            let history = records::HistoryEntry { device: device.clone(), seq: stored.seq, message_id };
            if let Err(cleanup) = self.records.forget(&history).await {
                tracing::warn!(%device, error = %cleanup, "refused command left in the history");
            }
            return Err(error);
        }
        tracing::debug!(%device, %message_id, ttl_ms = ttl, "device offline, command queued");
        // The device may have connected between the route lookup and the append, and its
        // online event found the queue without this command.
        if self.route(device).await?.is_some() {
            self.deliver_queued(device).await?;
        }
        Ok(self.records.get(&message_id).await?.map_or(stored.command, |s| s.command))
    }

    /// Hands a recorded async command to the device's edge, followed (QoS 1, Alink answer).
    async fn send(&self, route: &Route, stored: &StoredCommand) -> Result<(), ServiceError> {
        let command = &stored.command;
        let downlink = Downlink {
            device: records::device_of(command),
            topic: command.topic.clone(),
            payload: Bytes::from(stored.payload.clone()),
            qos: 1,
            correlation: Some(Correlation {
                message_id: command.message_id.clone(),
                expect: Answer::Alink,
                reply_to: None,
                deadline: now_ms() + ASYNC_FOLLOW_MS,
            }),
        };
        self.bus.publish(downlink.to_message(&route.node)).await.map_err(bus_error)
    }

    /// Sends the device's queued commands in order (expiring those past their TTL), if it is
    /// online. Safe to repeat: a command leaves the queue only once handled, and is sent only
    /// by the writer that moved it from QUEUED to SENT.
    async fn deliver_queued(&self, device: &DeviceKey) -> Result<(), ServiceError> {
        let lock = self.flushes.lock().entry(device.clone()).or_default().clone();
        let result = {
            let _turn = lock.lock().await;
            self.flush(device).await
        };
        drop(lock);
        let mut flushes = self.flushes.lock();
        if flushes.get(device).is_some_and(|l| Arc::strong_count(l) == 1) {
            flushes.remove(device);
        }
        result
    }

    async fn flush(&self, device: &DeviceKey) -> Result<(), ServiceError> {
        let queue = self.records.queue(device).await?;
        if queue.is_empty() {
            return Ok(());
        }
        let Some(route) = self.route(device).await? else {
            return Ok(());
        };
        let mut done = Vec::with_capacity(queue.0.len());
        let (mut sent, mut expired) = (0, 0);
        for entry in queue.0 {
            let now = now_ms();
            let id = &entry.message_id;
            if entry.expires_at <= now {
                expired += usize::from(self.records.advance(device, id, &Step::Expire, now).await?.is_some());
            } else if let Some(stored) = self.records.advance(device, id, &Step::Send, now).await? {
                match self.send(&route, &stored).await {
                    Ok(()) => sent += 1,
                    Err(error) => {
                        tracing::warn!(%device, message_id = %id, %error, "queued command not sent");
                        self.records.advance(device, id, &not_sent(&error), now_ms()).await?;
                    }
                }
            }
            // Else it is no longer queued (the sweeper expired it): only its entry is left.
            done.push(entry.message_id);
        }
        self.records.dequeue(device, &done).await?;
        tracing::debug!(%device, sent, expired, "queued commands delivered");
        Ok(())
    }

    /// Sends a synchronous request and waits for the device's answer until `started` +
    /// `timeout_ms`.
    async fn call(
        &self,
        device: &DeviceKey,
        message_id: &str,
        topic: String,
        payload: Bytes,
        clock: Clock,
    ) -> Result<RrpcOutcome, ServiceError> {
        let outcome = |rrpc_code, payload| RrpcOutcome { message_id: message_id.to_owned(), rrpc_code, payload };
        let Some(route) = self.route(device).await? else {
            return Ok(outcome(RrpcCode::Offline, None));
        };
        // Registered before sending, so even an instant answer finds its call.
        let waiter = self.waiters.register(message_id, device);
        let downlink = Downlink {
            device: device.clone(),
            topic,
            payload,
            qos: 0,
            correlation: Some(Correlation {
                message_id: message_id.to_owned(),
                expect: Answer::Rrpc,
                reply_to: Some(self.reply_subject.clone()),
                deadline: clock.deadline_ms,
            }),
        };
        self.bus.publish(downlink.to_message(&route.node)).await.map_err(bus_error)?;
        Ok(match waiter.wait(clock.deadline).await {
            Wait::Answered(answer) => outcome(RrpcCode::Success, Some(answer)),
            Wait::TimedOut => outcome(RrpcCode::Timeout, None),
            Wait::Gone => {
                tracing::warn!(%device, %message_id, "answer routing stopped during a call");
                outcome(RrpcCode::Unknown, None)
            }
        })
    }
}

#[async_trait]
impl CommandService for Commands {
    async fn set_properties(
        &self,
        device: &DeviceKey,
        items: Map<String, Value>,
        options: SendOptions,
    ) -> Result<Command, ServiceError> {
        request::ttl_ms(options.ttl_ms)?;
        let tsl = self.thing_model(&device.product_key).await?;
        request::check_items(tsl.as_ref(), &items)?;
        let topic = request::property_set_topic(device);
        self.send_async(device, topic, "thing.service.property.set".to_owned(), Value::Object(items), options).await
    }

    async fn invoke_service(
        &self,
        device: &DeviceKey,
        identifier: &str,
        args: Value,
        timeout_ms: Option<u32>,
        options: SendOptions,
    ) -> Result<Invocation, ServiceError> {
        let clock = Clock::start(request::timeout_ms(timeout_ms)?);
        request::ttl_ms(options.ttl_ms)?;
        let tsl = self.thing_model(&device.product_key).await?;
        let call_type = request::check_invocation(tsl.as_ref(), identifier, &args)?;
        let params = request::service_params(args);
        let method = request::service_method(identifier);
        if call_type == CallType::Async {
            let topic = request::service_topic(device, identifier);
            return Ok(Invocation::Async(self.send_async(device, topic, method, params, options).await?));
        }
        let message_id = request::new_message_id();
        let payload = request::alink_request(&message_id, &method, &params);
        request::check_payload(payload.len(), MAX_PAYLOAD_BYTES)?;
        let topic = request::rrpc_topic(device, &message_id, None)?;
        let outcome = self.call(device, &message_id, topic, Bytes::from(payload), clock).await?;
        let (rrpc_code, code, data) = match outcome.payload.as_deref().map(request::parse_alink_reply) {
            Some(Some((code, data))) => (outcome.rrpc_code, Some(code), Some(data)),
            // The device answered, but not with an Alink reply: nothing to report but that.
            Some(None) => {
                tracing::debug!(%device, %message_id, "sync service answer is not an alink reply");
                (RrpcCode::Unknown, None, None)
            }
            None => (outcome.rrpc_code, None, None),
        };
        Ok(Invocation::Sync { message_id, rrpc_code, code, data })
    }

    async fn rrpc(
        &self,
        device: &DeviceKey,
        payload: Bytes,
        timeout_ms: u32,
        topic: Option<String>,
    ) -> Result<RrpcOutcome, ServiceError> {
        let clock = Clock::start(request::timeout_ms(Some(timeout_ms))?);
        request::check_payload(payload.len(), MAX_PAYLOAD_BYTES)?;
        let message_id = request::new_message_id();
        let topic = request::rrpc_topic(device, &message_id, topic.as_deref())?;
        self.call(device, &message_id, topic, payload, clock).await
    }

    async fn publish(
        &self,
        product_key: &ProductKey,
        topic_full_name: &str,
        payload: Bytes,
        qos: u8,
    ) -> Result<String, ServiceError> {
        if qos > 1 {
            return Err(ServiceError::invalid("qos", "must be 0 or 1"));
        }
        request::check_payload(payload.len(), MAX_PAYLOAD_BYTES)?;
        let (device, short) = match request::pub_target(product_key, topic_full_name)? {
            PubTarget::Device { device, short } => (device, short),
            PubTarget::Broadcast => {
                return self.broadcast(product_key, payload, Some(topic_full_name.to_owned())).await;
            }
        };
        let product = self.product_of(&device).await?;
        if !product.topic_classes.iter().any(|c| c.short == short && c.device_may_subscribe()) {
            return Err(ServiceError::invalid(
                "topicFullName",
                format!("user/{short} is not a SUB or ALL topic class of product {product_key}"),
            ));
        }
        let message_id = request::new_message_id();
        let Some(route) = self.route(&device).await? else {
            tracing::debug!(%device, %message_id, "device offline, pub not delivered");
            return Ok(message_id);
        };
        let downlink = Downlink { device, topic: topic_full_name.to_owned(), payload, qos, correlation: None };
        self.bus.publish(downlink.to_message(&route.node)).await.map_err(bus_error)?;
        Ok(message_id)
    }

    async fn broadcast(
        &self,
        product_key: &ProductKey,
        payload: Bytes,
        topic: Option<String>,
    ) -> Result<String, ServiceError> {
        request::check_payload(payload.len(), MAX_BROADCAST_BYTES)?;
        if let Some(topic) = &topic {
            request::check_broadcast_topic(product_key, topic)?;
        }
        let message_id = request::new_message_id();
        let broadcast = Broadcast { product_key: product_key.clone(), message_id: message_id.clone(), topic, payload };
        self.bus.publish(broadcast.to_message()).await.map_err(bus_error)?;
        Ok(message_id)
    }

    async fn get_command(&self, message_id: &str) -> Result<Command, ServiceError> {
        match self.records.get(message_id).await? {
            Some(stored) => Ok(stored.command),
            None => Err(ServiceError::not_found(format!("command {message_id}"))),
        }
    }

    async fn list_commands(&self, device: &DeviceKey) -> Result<Vec<Command>, ServiceError> {
        let mut commands = Vec::new();
        for entry in self.records.history(device).await? {
            // A command forgotten since the listing is simply not there any more.
            if let Some(stored) = self.records.get(&entry.message_id).await? {
                commands.push(stored.command);
            }
        }
        Ok(commands)
    }
}

// === impl CommandTasks ===

impl CommandTasks {
    /// Stops the background tasks (pending deliveries go back to their groups).
    pub async fn stop(self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// When a synchronous call started and when it must end, on both clocks: the monotonic one
/// for this wait, epoch ms for the edge.
#[derive(Debug, Clone, Copy)]
struct Clock {
    deadline: Instant,
    deadline_ms: i64,
}

impl Clock {
    fn start(timeout_ms: u32) -> Self {
        Self {
            deadline: Instant::now() + Duration::from_millis(u64::from(timeout_ms)),
            deadline_ms: now_ms() + i64::from(timeout_ms),
        }
    }
}

/// The error for an async command to an offline device without a TTL.
fn offline(device: &DeviceKey) -> ServiceError {
    ServiceError::DeviceOffline { device: device.to_string() }
}

fn not_sent(error: &ServiceError) -> Step {
    Step::NotSent { reason: format!("not sent: {error}") }
}

fn bus_error(error: BusError) -> ServiceError {
    match error {
        BusError::Invalid(reason) => ServiceError::Internal(reason),
        error @ (BusError::Unavailable(_) | BusError::Closed) => ServiceError::Unavailable(error.to_string()),
    }
}
