//! The NATS adapter against a real `nats-server -js`: durable publish, consumer groups, ack and
//! redelivery, a server restart mid-stream, core subscriptions. The group scenario also runs
//! against the in-process bus (its durable stream in a temp dir), so both adapters are held to
//! the same semantics.

#![allow(clippy::unwrap_used, reason = "test helpers too: a failed unwrap is a failed test")]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tether_bus::events::header;
use tether_bus::{Bus, BusError, BusMessage, Consumer, Delivery, InProcessBus, NatsBus, NatsBusConfig, Subscription};
use tether_testkit::NatsServer;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long any expected delivery may take, redeliveries after `ack_wait` included.
const DEADLINE: Duration = Duration::from_secs(20);

/// A short `ack_wait` for the redelivery scenarios; long enough that a delivery acked at once is
/// never redelivered on a loaded machine.
const SHORT_ACK_WAIT: Duration = Duration::from_secs(1);

#[tokio::test]
async fn a_durable_publish_reaches_a_member_intact_and_once_acked_stays_acked() {
    let nats = NatsServer::start().await;
    let bus = connect(&nats, SHORT_ACK_WAIT).await;
    let mut member = bus.consume("history", "tether.up.>").await.unwrap();

    let sent = uplink("lamp-1", 0)
        .with_header(header::TOPIC, "/pk/lamp-1/thing/event/property/post")
        .with_header(header::GENERATE_TIME, "1700000000000");
    bus.publish_durable(sent.clone()).await.unwrap();

    let delivery = next(&mut member).await;
    assert_eq!(delivery.message, sent, "subject, headers and payload arrive as sent");
    delivery.ack().await.unwrap();

    // The ack is confirmed by the server before `ack` returns ...
    let info = consumer_info(&nats, "history").await;
    assert_eq!((info.num_ack_pending, info.num_pending, info.num_redelivered), (0, 0, 0));
    // ... and nothing comes back once `ack_wait` has passed twice.
    assert!(tokio::time::timeout(SHORT_ACK_WAIT * 2, member.next()).await.is_err(), "an acked message came back");
    let info = consumer_info(&nats, "history").await;
    assert_eq!((info.delivered.consumer_sequence, info.num_redelivered), (1, 0));
}

#[tokio::test]
async fn a_retried_publish_is_stored_once_and_reused_message_ids_lose_nothing() {
    let nats = NatsServer::start().await;
    let bus = connect(&nats, Duration::from_secs(30)).await;
    // Devices reuse Alink request ids, which the edge forwards as `messageId`.
    let post = |device: &str, at: &str| {
        BusMessage::new(format!("tether.up.t1.pk.{device}.property"), "{}")
            .with_header(header::MESSAGE_ID, "123")
            .with_header(header::GENERATE_TIME, at)
    };
    bus.publish_durable(post("lamp-1", "1")).await.unwrap();
    bus.publish_durable(post("lamp-1", "1")).await.unwrap(); // a retry of the same message
    assert_eq!(stream_messages(&nats).await, 1, "a retried publish is stored once");
    bus.publish_durable(post("lamp-2", "1")).await.unwrap();
    bus.publish_durable(post("lamp-1", "2")).await.unwrap();
    assert_eq!(stream_messages(&nats).await, 3, "other messages with the same messageId are all kept");
}

#[tokio::test]
async fn every_group_gets_every_message_and_members_of_a_group_split_them() {
    let nats = NatsServer::start().await;
    let bus = connect(&nats, Duration::from_secs(30)).await;
    let mut history = Members::join(&bus, "history", 1).await;
    let mut rules = Members::join(&bus, "rules", 2).await;

    let sent: Vec<BusMessage> = (0..200).map(|n| uplink(&format!("lamp-{}", n % 4), n / 4)).collect();
    for message in &sent {
        bus.publish_durable(message.clone()).await.unwrap();
    }

    let expected: BTreeSet<_> = sent.iter().map(|m| m.payload.clone()).collect();
    for (group, members) in [("history", &mut history), ("rules", &mut rules)] {
        let received = members.take_and_ack(sent.len()).await;
        let payloads: Vec<_> = received.iter().map(|(_, m)| m.payload.clone()).collect();
        assert_eq!(payloads.iter().cloned().collect::<BTreeSet<_>>(), expected, "{group} lost messages");
        assert_eq!(payloads.len(), expected.len(), "{group} got duplicates");
        let info = consumer_info(&nats, group).await;
        assert_eq!((info.num_pending, info.num_ack_pending, info.num_redelivered), (0, 0, 0), "{group}");
    }
}

#[tokio::test]
async fn a_slow_member_holds_a_few_batches_not_the_whole_stream() {
    let nats = NatsServer::start().await;
    let bus = connect(&nats, Duration::from_secs(30)).await;
    let sent: Vec<BusMessage> = (0..300).map(|n| uplink("lamp-1", n)).collect();
    for message in &sent {
        bus.publish_durable(message.clone()).await.unwrap();
    }
    let mut member = bus.consume("history", "tether.up.>").await.unwrap();
    let first = next(&mut member).await;

    // The member reads nothing more for a while: the pull stops once its channel is full.
    let held =
        eventually(|| async { Some(consumer_info(&nats, "history").await.num_ack_pending).filter(|n| *n > 16) }).await;
    tokio::time::sleep(Duration::from_secs(1)).await; // room to pull more, if it would
    let info = consumer_info(&nats, "history").await;
    assert!(
        info.num_ack_pending <= 3 * 16,
        "{} pulled by a member that reads nothing (first {held})",
        info.num_ack_pending
    );
    assert!(info.num_pending > 0, "the rest of the stream stays with the server");

    first.ack().await.unwrap();
    let mut received = BTreeSet::new();
    while received.len() < sent.len() - 1 {
        let delivery = next(&mut member).await;
        assert!(received.insert(delivery.message.payload.clone()), "delivered twice");
        delivery.ack().await.unwrap();
    }
}

#[tokio::test]
async fn deliveries_dropped_by_a_killed_member_go_to_another_member() {
    let nats = NatsServer::start().await;
    let bus = connect(&nats, SHORT_ACK_WAIT).await;
    let mut doomed = bus.consume("rules", "tether.up.>").await.unwrap();
    let sent: Vec<BusMessage> = (0..20).map(|n| uplink("lamp-1", n)).collect();
    for message in &sent {
        bus.publish_durable(message.clone()).await.unwrap();
    }

    // The member handles five, then dies with the rest of its batch in hand.
    let mut in_hand = Vec::new();
    for _ in 0..sent.len() {
        in_hand.push(next(&mut doomed).await);
    }
    let unacked = in_hand.split_off(5);
    for delivery in in_hand {
        delivery.ack().await.unwrap();
    }
    let expected: BTreeSet<_> = unacked.iter().map(|d| d.message.payload.clone()).collect();
    drop(unacked);
    drop(doomed);

    let mut survivor = bus.consume("rules", "tether.up.>").await.unwrap();
    let mut received = BTreeSet::new();
    while received.len() < expected.len() {
        let delivery = next(&mut survivor).await;
        assert!(expected.contains(&delivery.message.payload), "an acked message came back");
        assert!(received.insert(delivery.message.payload.clone()), "delivered twice to the survivor");
        delivery.ack().await.unwrap();
    }
    let info = consumer_info(&nats, "rules").await;
    assert_eq!((info.num_pending, info.num_ack_pending), (0, 0));
}

#[tokio::test]
async fn acked_publishes_survive_nats_restarts_once_each_and_in_order() {
    let mut nats = NatsServer::start().await;
    let bus =
        NatsBus::connect(NatsBusConfig { request_timeout: Duration::from_secs(1), ..config(&nats) }).await.unwrap();
    let devices = ["lamp-1", "lamp-2", "lamp-3", "lamp.4"];
    let mut acked = Vec::new();

    for batch in 0..3 {
        if batch > 0 {
            nats.kill();
            let started = Instant::now();
            let refused = bus.publish_durable(uplink("while-down", batch)).await;
            assert!(matches!(refused, Err(BusError::Unavailable(_))), "publish with nats down: {refused:?}");
            assert!(started.elapsed() < Duration::from_secs(5), "publish with nats down took {:?}", started.elapsed());
            nats.restart().await;
        }
        for n in 0..10 {
            for device in devices {
                let message = uplink(device, batch * 10 + n);
                publish_until_acked(&bus, &message).await;
                acked.push(message);
            }
        }
    }

    // Publishes refused while the server was down may still have reached it once the client
    // reconnected (that is why they carry a messageId); none may be there twice.
    let stored = stream_messages(&nats).await;
    assert!((acked.len()..=acked.len() + 2).contains(&stored), "{stored} stored for {} acked", acked.len());
    for group in ["history", "rules"] {
        let mut members = Members::join(&bus, group, 1).await;
        let received = members.take_and_ack(stored).await;
        let mut per_device: BTreeMap<String, Vec<BusMessage>> = BTreeMap::new();
        for (_, message) in received {
            per_device.entry(message.subject.clone()).or_default().push(message);
        }
        for device in devices {
            let subject = uplink(device, 0).subject;
            let sent: Vec<_> = acked.iter().filter(|m| m.subject == subject).cloned().collect();
            assert_eq!(per_device.get(&subject), Some(&sent), "{group}: {device} exactly once, in publish order");
        }
        let info = consumer_info(&nats, group).await;
        assert_eq!((info.num_pending, info.num_ack_pending), (0, 0), "{group}");
    }
}

#[tokio::test]
async fn a_member_keeps_receiving_across_a_nats_restart() {
    let mut nats = NatsServer::start().await;
    let bus =
        NatsBus::connect(NatsBusConfig { request_timeout: Duration::from_secs(1), ..config(&nats) }).await.unwrap();
    let mut member = bus.consume("thing", "tether.up.>").await.unwrap();
    bus.publish_durable(uplink("lamp-1", 0)).await.unwrap();
    next(&mut member).await.ack().await.unwrap();

    nats.restart().await;
    wait_until_ready(&bus).await;
    publish_until_acked(&bus, &uplink("lamp-1", 1)).await;

    // A `kill -9` may cost the server the last ack it confirmed (it writes consumer state a moment
    // later), so message 0 may come once more: at least once, never lost.
    loop {
        let delivery = next(&mut member).await;
        let message = delivery.message.clone();
        delivery.ack().await.unwrap();
        if message == uplink("lamp-1", 1) {
            break;
        }
        assert_eq!(message, uplink("lamp-1", 0), "the pull resumed after the restart");
    }
}

#[tokio::test]
async fn core_subscribers_match_wildcards_and_see_stream_subjects() {
    let nats = NatsServer::start().await;
    let bus = connect(&nats, Duration::from_secs(30)).await;
    let other_process = connect(&nats, Duration::from_secs(30)).await;
    let mut one_node = bus.subscribe("tether.edge.*.down").await.unwrap();
    let mut every_edge = bus.subscribe("tether.edge.>").await.unwrap();
    let mut uplinks = bus.subscribe("tether.up.*.*.*.property").await.unwrap();

    // Each subscriber's first message is the first matching one: what it must not see comes first.
    let kick = BusMessage::new("tether.edge.n2.kick", "kick").with_header("reason", "takeover");
    let down = BusMessage::new("tether.edge.n1.down", "down").with_header("replyTo", "tether.reply.1");
    other_process.publish(kick.clone()).await.unwrap();
    other_process.publish_durable(BusMessage::new("tether.up.t1.pk.lamp-1.event", "event")).await.unwrap();
    other_process.publish(down.clone()).await.unwrap();
    let property = uplink("lamp-1", 7);
    other_process.publish_durable(property.clone()).await.unwrap();

    assert_eq!(recv(&mut one_node).await, down);
    assert_eq!(recv(&mut every_edge).await, kick);
    assert_eq!(recv(&mut every_edge).await, down);
    assert_eq!(recv(&mut uplinks).await, property, "stream subjects reach core subscribers, headers intact");
}

#[tokio::test]
async fn bad_requests_are_refused_as_invalid_and_a_dead_url_fails_fast() {
    let nats = NatsServer::start().await;
    let bus = connect(&nats, Duration::from_secs(30)).await;
    let not_on_stream = bus.publish_durable(BusMessage::new("tether.edge.n1.down", "x")).await;
    assert!(matches!(not_on_stream, Err(BusError::Invalid(_))), "{not_on_stream:?}");
    let bad_header = bus.publish(BusMessage::new("tether.edge.n1.down", "x").with_header("topic", "a\nb")).await;
    assert!(matches!(bad_header, Err(BusError::Invalid(_))), "{bad_header:?}");
    assert!(matches!(bus.consume("", "tether.up.>").await, Err(BusError::Invalid(_))));
    let _history = bus.consume("history", "tether.up.>").await.unwrap();
    let other_filter = bus.consume("history", "tether.registry.>").await;
    assert!(matches!(other_filter, Err(BusError::Invalid(_))), "a group keeps its filter");
    bus.ping().await.unwrap();

    let dead_url = format!("nats://127.0.0.1:{}", tether_testkit::free_port());
    let started = Instant::now();
    let Err(error) = NatsBus::connect(NatsBusConfig::new(dead_url.clone())).await else {
        panic!("connected to nothing");
    };
    assert!(error.to_string().contains(&dead_url), "{error}");
    assert!(started.elapsed() < Duration::from_secs(10), "connect took {:?}", started.elapsed());
}

// === the same group semantics on both adapters ===

#[tokio::test]
async fn in_process_bus_keeps_group_semantics() {
    let dir = tempfile::TempDir::new().unwrap();
    group_semantics(&InProcessBus::open(dir.path()).unwrap()).await;
}

#[tokio::test]
async fn nats_bus_keeps_group_semantics() {
    let nats = NatsServer::start().await;
    group_semantics(&connect(&nats, SHORT_ACK_WAIT).await).await;
}

/// Two groups each get every message; the members of one group share them without duplicates;
/// a delivery dropped without ack comes back to its group (at once in process, after `ack_wait`
/// on NATS) and to no other group.
async fn group_semantics<B: Bus>(bus: &B) {
    let mut history = Members::join(bus, "history", 1).await;
    let mut rules = Members::join(bus, "rules", 2).await;
    let sent: Vec<BusMessage> = (0..20).map(|n| uplink(&format!("lamp-{}", n % 2), n / 2)).collect();
    for message in &sent {
        bus.publish_durable(message.clone()).await.unwrap();
    }
    let expected: BTreeSet<_> = sent.iter().map(|m| m.payload.clone()).collect();

    let history_got: BTreeSet<_> = history.take_and_ack(sent.len()).await.into_iter().map(|(_, m)| m.payload).collect();
    assert_eq!(history_got, expected);

    let mut deliveries = rules.take(sent.len()).await;
    let dropped = deliveries.pop().unwrap().1;
    let dropped_payload = dropped.message.payload.clone();
    let mut rules_got = BTreeSet::new();
    for (_, delivery) in deliveries {
        assert!(rules_got.insert(delivery.message.payload.clone()), "a rules member got a duplicate");
        delivery.ack().await.unwrap();
    }
    drop(dropped);
    let (_, again) = rules.take_and_ack(1).await.pop().unwrap();
    assert_eq!(again.payload, dropped_payload, "the dropped delivery came back to its group");
    rules_got.insert(again.payload);
    assert_eq!(rules_got, expected);
    assert!(history.is_idle().await, "a redelivery in one group leaked into another");
}

// === helpers ===

fn config(nats: &NatsServer) -> NatsBusConfig {
    NatsBusConfig { pull_batch: 16, ..NatsBusConfig::new(nats.url()) }
}

async fn connect(nats: &NatsServer, ack_wait: Duration) -> NatsBus {
    NatsBus::connect(NatsBusConfig { ack_wait, ..config(nats) }).await.unwrap()
}

/// A property uplink of `device` whose payload and messageId name the device and `n`.
fn uplink(device: &str, n: u32) -> BusMessage {
    let token = tether_bus::subject::token(device);
    BusMessage::new(format!("tether.up.t1.pk.{token}.property"), format!("{device}/{n}"))
        .with_header(header::MESSAGE_ID, format!("{device}/{n}"))
}

/// Retries a durable publish (same messageId, so the stream stores it once) until it is acked.
async fn publish_until_acked(bus: &NatsBus, message: &BusMessage) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match bus.publish_durable(message.clone()).await {
            Ok(()) => return,
            Err(BusError::Unavailable(reason)) if Instant::now() < deadline => {
                tracing::debug!(%reason, "retrying a durable publish");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("publish of {:?} never acked: {error}", message.payload),
        }
    }
}

async fn wait_until_ready(bus: &NatsBus) {
    let deadline = Instant::now() + DEADLINE;
    while let Err(error) = bus.ping().await {
        assert!(Instant::now() < deadline, "bus not ready after a restart: {error}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `check` until it yields a value, failing the test after [`DEADLINE`].
async fn eventually<T, F, Fut>(mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "condition not met in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn next(consumer: &mut Consumer) -> Delivery {
    tokio::time::timeout(DEADLINE, consumer.next()).await.expect("no delivery in time").expect("bus gone")
}

async fn recv(subscription: &mut Subscription) -> BusMessage {
    tokio::time::timeout(DEADLINE, subscription.next()).await.expect("no message in time").expect("bus gone")
}

async fn jetstream(nats: &NatsServer) -> async_nats::jetstream::stream::Stream {
    let client = async_nats::connect(nats.url()).await.unwrap();
    async_nats::jetstream::new(client).get_stream("TETHER").await.unwrap()
}

async fn consumer_info(nats: &NatsServer, group: &str) -> async_nats::jetstream::consumer::Info {
    jetstream(nats).await.consumer_info(NatsBus::durable_name(group).unwrap()).await.unwrap()
}

async fn stream_messages(nats: &NatsServer) -> usize {
    let mut stream = jetstream(nats).await;
    usize::try_from(stream.info().await.unwrap().state.messages).unwrap()
}

/// The members of one consumer group, read together; each delivery tagged with its member.
struct Members {
    deliveries: mpsc::UnboundedReceiver<(usize, Delivery)>,
    tasks: Vec<JoinHandle<()>>,
}

impl Members {
    async fn join<B: Bus>(bus: &B, group: &str, count: usize) -> Self {
        let (tx, deliveries) = mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        for member in 0..count {
            let mut consumer = bus.consume(group, "tether.up.>").await.unwrap();
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(delivery) = consumer.next().await {
                    if tx.send((member, delivery)).is_err() {
                        return;
                    }
                }
            }));
        }
        Self { deliveries, tasks }
    }

    /// The next `count` deliveries, unacked.
    async fn take(&mut self, count: usize) -> Vec<(usize, Delivery)> {
        let mut taken = Vec::with_capacity(count);
        let deadline = Instant::now() + DEADLINE;
        while taken.len() < count {
            match tokio::time::timeout_at(deadline, self.deliveries.recv()).await {
                Ok(Some(delivery)) => taken.push(delivery),
                Ok(None) => panic!("bus gone after {} of {count} deliveries", taken.len()),
                Err(_) => panic!("only {} of {count} deliveries in time", taken.len()),
            }
        }
        taken
    }

    /// The next `count` deliveries, each acked.
    async fn take_and_ack(&mut self, count: usize) -> Vec<(usize, BusMessage)> {
        let mut messages = Vec::with_capacity(count);
        for (member, delivery) in self.take(count).await {
            messages.push((member, delivery.message.clone()));
            delivery.ack().await.unwrap();
        }
        messages
    }

    /// Whether nothing more arrives within a short while (only ever used to show an absence).
    async fn is_idle(&mut self) -> bool {
        tokio::time::timeout(SHORT_ACK_WAIT * 2, self.deliveries.recv()).await.is_err()
    }
}

impl Drop for Members {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[tokio::test]
async fn a_member_joined_before_a_nats_crash_keeps_per_device_order() {
    let mut nats = NatsServer::start().await;
    let bus =
        NatsBus::connect(NatsBusConfig { request_timeout: Duration::from_secs(1), ..config(&nats) }).await.unwrap();
    let mut member = bus.consume("history", "tether.up.>").await.unwrap();
    for n in 0..10 {
        publish_until_acked(&bus, &uplink("lamp-1", n)).await;
    }
    // Let the member pull them (they wait, unacked, in its channel) before the crash.
    tokio::time::sleep(Duration::from_millis(200)).await;
    nats.restart().await;
    wait_until_ready(&bus).await;
    for n in 10..200 {
        publish_until_acked(&bus, &uplink("lamp-1", n)).await;
    }
    let mut seen = Vec::new();
    while seen.len() < 200 {
        let delivery = next(&mut member).await;
        let n: u32 = String::from_utf8_lossy(&delivery.message.payload).rsplit('/').next().unwrap().parse().unwrap();
        delivery.ack().await.unwrap();
        seen.push(n);
    }
    assert_eq!(seen, (0..200).collect::<Vec<_>>());
}
