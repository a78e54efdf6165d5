//! The embedded bus's durable stream, on real files in a temp dir: what a publish that returned
//! promises across a close, a reopen and a `kill -9`; acks across restarts; consumer groups;
//! retention; many publishers at once; records that cannot be read back.

#![allow(clippy::unwrap_used, reason = "test helpers too: a failed unwrap is a failed test")]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;
use tether_bus::events::header;
use tether_bus::{Bus, BusError, BusMessage, Consumer, Delivery, InProcessBus, StreamLimits};

/// How long any expected delivery may take.
const DEADLINE: Duration = Duration::from_secs(20);

const UPLINKS: &str = "tether.up.>";

#[tokio::test]
async fn unacked_messages_come_back_after_a_reopen_and_acked_ones_do_not() {
    let dir = TempDir::new().unwrap();
    let bus = InProcessBus::open(dir.path()).unwrap();
    let mut member = bus.consume("thing", UPLINKS).await.unwrap();
    for n in 0..10 {
        bus.publish_durable(uplink("lamp-1", n)).await.unwrap();
    }
    // Acks out of order: odd ones acked, even ones held and dropped.
    let mut held = Vec::new();
    for _ in 0..10 {
        let delivery = next(&mut member).await;
        if number(&delivery.message) % 2 == 1 {
            delivery.ack().await.unwrap();
        } else {
            held.push(delivery);
        }
    }
    drop(held);
    drop(member);
    bus.close().await;

    let bus = InProcessBus::open(dir.path()).unwrap();
    let mut member = bus.consume("thing", UPLINKS).await.unwrap();
    let again = take_and_ack(&mut member, 5).await;
    assert_eq!(numbers(&again), [0, 2, 4, 6, 8], "the unacked ones, in order");
    assert_next_is_the_marker(&bus, &mut member).await;
}

#[tokio::test]
async fn a_reopened_stream_keeps_order_and_continues_the_sequence() {
    let dir = TempDir::new().unwrap();
    let bus = InProcessBus::open(dir.path()).unwrap();
    let mut member = bus.consume("history", UPLINKS).await.unwrap();
    for n in 0..100 {
        bus.publish_durable(uplink(&format!("lamp-{}", n % 3), n)).await.unwrap();
    }
    take_and_ack(&mut member, 30).await;
    bus.close().await;

    let bus = InProcessBus::open(dir.path()).unwrap();
    let mut member = bus.consume("history", UPLINKS).await.unwrap();
    for n in 100..150 {
        bus.publish_durable(uplink(&format!("lamp-{}", n % 3), n)).await.unwrap();
    }
    let received = take_and_ack(&mut member, 120).await;
    assert_eq!(numbers(&received), (30..150).collect::<Vec<_>>());
    bus.close().await;

    // Everything acked is deleted, so the log is empty: new messages must not reuse numbers the
    // group's ack floor already covers.
    let bus = InProcessBus::open(dir.path()).unwrap();
    let mut member = bus.consume("history", UPLINKS).await.unwrap();
    bus.publish_durable(uplink("lamp-0", 150)).await.unwrap();
    assert_eq!(number(&next(&mut member).await.message), 150);
}

#[tokio::test]
async fn a_kill_right_after_publishes_return_loses_none_of_them() {
    let dir = TempDir::new().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child_publishes_acks_and_waits_to_be_killed", "--ignored", "--nocapture"])
        .env(CRASH_DIR, dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let ready = stdout.lines().map_while(Result::ok).any(|line| line == CHILD_READY);
    let _ = child.kill(); // gone already if it failed
    child.wait().unwrap();
    assert!(ready, "the child did not get its publishes acked");

    let bus = InProcessBus::open(dir.path()).unwrap();
    let mut member = bus.consume("thing", UPLINKS).await.unwrap();
    let mut per_device: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for delivery in take_until_marker(&bus, &mut member).await {
        per_device.entry(delivery.subject.clone()).or_default().push(number(&delivery));
    }
    // The child acked 50 deliveries; an ack just before the kill may come back, nothing else.
    let total: usize = per_device.values().map(Vec::len).sum();
    assert!((CHILD_DEVICES * CHILD_MESSAGES - 50..=CHILD_DEVICES * CHILD_MESSAGES).contains(&total), "{total}");
    for (device, received) in per_device {
        let first = received[0];
        assert_eq!(received, (first..CHILD_MESSAGES as u32).collect::<Vec<_>>(), "{device}: none lost, in order");
    }
}

const CRASH_DIR: &str = "TETHER_BUS_CRASH_DIR";
const CHILD_READY: &str = "child: publishes returned";
const CHILD_DEVICES: usize = 4;
const CHILD_MESSAGES: usize = 50;

/// The child half of the kill test: publishes from several tasks at once, acks 50 deliveries,
/// says so and waits to be killed.
#[tokio::test]
#[ignore = "run in a child process by a_kill_right_after_publishes_return_loses_none_of_them"]
async fn crash_child_publishes_acks_and_waits_to_be_killed() {
    let Ok(dir) = std::env::var(CRASH_DIR) else { return };
    let bus = InProcessBus::open(Path::new(&dir)).unwrap();
    let mut member = bus.consume("thing", UPLINKS).await.unwrap();
    let publishers: Vec<_> = (0..CHILD_DEVICES)
        .map(|device| {
            let bus = bus.clone();
            tokio::spawn(async move {
                for n in 0..CHILD_MESSAGES {
                    bus.publish_durable(uplink(&format!("lamp-{device}"), n as u32)).await.unwrap();
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.unwrap();
    }
    take_and_ack(&mut member, 50).await;
    println!("{CHILD_READY}");
    std::future::pending::<()>().await;
}

#[tokio::test]
async fn every_group_gets_every_message_and_members_of_a_group_split_them() {
    let dir = TempDir::new().unwrap();
    let bus = InProcessBus::open(dir.path()).unwrap();
    let mut history = bus.consume("history", UPLINKS).await.unwrap();
    let mut rules = [bus.consume("rules", UPLINKS).await.unwrap(), bus.consume("rules", UPLINKS).await.unwrap()];
    let sent: Vec<_> = (0..100).map(|n| uplink(&format!("lamp-{}", n % 4), n)).collect();
    for message in &sent {
        bus.publish_durable(message.clone()).await.unwrap();
    }

    assert_eq!(take_and_ack(&mut history, sent.len()).await, sent, "one member gets all, in order");
    let mut per_member = Vec::new();
    let mut received = BTreeSet::new();
    for member in &mut rules {
        let taken = take_and_ack(member, sent.len() / 2).await;
        per_member.push(taken.len());
        for message in taken {
            assert!(received.insert(number(&message)), "a rules member got a duplicate");
        }
    }
    assert_eq!(received, (0..100).collect::<BTreeSet<_>>());
    assert_eq!(per_member, [50, 50], "members take turns");
}

#[tokio::test]
async fn a_group_created_later_sees_what_is_still_stored() {
    let dir = TempDir::new().unwrap();
    let bus = InProcessBus::open(dir.path()).unwrap();
    for n in 0..5 {
        bus.publish_durable(uplink("lamp-1", n)).await.unwrap();
    }
    bus.close().await;

    let bus = InProcessBus::open(dir.path()).unwrap();
    let mut late = bus.consume("rules", UPLINKS).await.unwrap();
    assert_eq!(numbers(&take_and_ack(&mut late, 5).await), [0, 1, 2, 3, 4], "kept without any group");
}

#[tokio::test]
async fn messages_every_group_acked_are_deleted_and_others_kept() {
    let dir = TempDir::new().unwrap();
    let bus = InProcessBus::open(dir.path()).unwrap();
    let mut thing = bus.consume("thing", UPLINKS).await.unwrap();
    let mut history = bus.consume("history", "tether.up.*.*.lamp-2.*").await.unwrap();
    for n in 0..10 {
        bus.publish_durable(uplink(&format!("lamp-{}", 1 + n % 2), n)).await.unwrap();
    }
    take_and_ack(&mut thing, 10).await;
    // `history` acks lamp-2's first message only (1), so the log is still needed from its next (3).
    assert_eq!(numbers(&take_and_ack(&mut history, 1).await), [1]);
    bus.close().await;

    let bus = InProcessBus::open(dir.path()).unwrap();
    let mut late = bus.consume("late", UPLINKS).await.unwrap();
    let kept = take_until_marker(&bus, &mut late).await;
    assert_eq!(numbers(&kept), [3, 4, 5, 6, 7, 8, 9], "what every group acked (or left alone) is gone");
}

#[tokio::test]
async fn the_log_is_capped_by_count_and_by_age_without_consumers() {
    let dir = TempDir::new().unwrap();
    let few = StreamLimits { max_messages: 3, ..StreamLimits::default() };
    let bus = InProcessBus::open_with(dir.path(), few).unwrap();
    for n in 0..10 {
        bus.publish_durable(uplink("lamp-1", n)).await.unwrap();
    }
    let mut late = bus.consume("late", UPLINKS).await.unwrap();
    assert_eq!(numbers(&take_until_marker(&bus, &mut late).await), [7, 8, 9]);
    drop(late);
    bus.close().await;

    // Opened with no age allowed, the stream drops everything it holds at once.
    let expiring = StreamLimits { max_age: Duration::ZERO, ..StreamLimits::default() };
    InProcessBus::open_with(dir.path(), expiring).unwrap().close().await;
    let bus = InProcessBus::open(dir.path()).unwrap();
    let mut later = bus.consume("later", UPLINKS).await.unwrap();
    assert!(take_until_marker(&bus, &mut later).await.is_empty(), "aged out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publishers_all_land_once_each_in_their_order() {
    const PUBLISHERS: u32 = 64;
    const EACH: u32 = 100;
    let dir = TempDir::new().unwrap();
    let bus = InProcessBus::open(dir.path()).unwrap();
    let mut member = bus.consume("thing", UPLINKS).await.unwrap();
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|publisher| {
            let bus = bus.clone();
            tokio::spawn(async move {
                for n in 0..EACH {
                    bus.publish_durable(uplink(&format!("lamp-{publisher}"), n)).await.unwrap();
                }
            })
        })
        .collect();
    let received = take_and_ack(&mut member, (PUBLISHERS * EACH) as usize).await;
    for publisher in publishers {
        publisher.await.unwrap();
    }

    let mut per_device: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for message in received {
        per_device.entry(message.subject.clone()).or_default().push(number(&message));
    }
    assert_eq!(per_device.len(), PUBLISHERS as usize);
    for (device, numbers) in per_device {
        assert_eq!(numbers, (0..EACH).collect::<Vec<_>>(), "{device}: each once, in publish order");
    }
    assert_next_is_the_marker(&bus, &mut member).await;
}

#[tokio::test]
async fn corrupt_records_are_skipped() {
    let dir = TempDir::new().unwrap();
    let bus = InProcessBus::open(dir.path()).unwrap();
    for n in 0..3 {
        bus.publish_durable(uplink("lamp-1", n)).await.unwrap();
    }
    bus.close().await;
    // Damage the second record where it lies: the `log` keyspace, keyed by big-endian sequence.
    {
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let log = db.keyspace("log", fjall::KeyspaceCreateOptions::default).unwrap();
        log.insert(2u64.to_be_bytes(), b"\x01\x00\x00".to_vec()).unwrap();
        log.insert(7u64.to_be_bytes(), b"\x09garbage".to_vec()).unwrap();
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }

    let bus = InProcessBus::open(dir.path()).unwrap();
    let mut member = bus.consume("thing", UPLINKS).await.unwrap();
    assert_eq!(numbers(&take_until_marker(&bus, &mut member).await), [0, 2]);
}

#[tokio::test]
async fn a_closed_bus_refuses_and_ends_its_consumers() {
    let dir = TempDir::new().unwrap();
    let bus = InProcessBus::open(dir.path()).unwrap();
    let mut member = bus.consume("thing", UPLINKS).await.unwrap();
    bus.close().await;
    assert!(matches!(bus.publish_durable(uplink("lamp-1", 0)).await, Err(BusError::Closed)));
    assert!(matches!(bus.consume("thing", UPLINKS).await, Err(BusError::Closed)));
    assert!(tokio::time::timeout(DEADLINE, member.next()).await.unwrap().is_none(), "the consumer ends");
}

#[tokio::test]
async fn bad_requests_are_refused_as_invalid() {
    let dir = TempDir::new().unwrap();
    let bus = InProcessBus::open(dir.path()).unwrap();
    let not_on_stream = bus.publish_durable(BusMessage::new("tether.edge.n1.down", "x")).await;
    assert!(matches!(not_on_stream, Err(BusError::Invalid(_))), "{not_on_stream:?}");
    assert!(matches!(bus.consume("", UPLINKS).await, Err(BusError::Invalid(_))));
    let _history = bus.consume("history", UPLINKS).await.unwrap();
    let other_filter = bus.consume("history", "tether.registry.>").await;
    assert!(matches!(other_filter, Err(BusError::Invalid(_))), "a group keeps its filter");
    bus.close().await;

    let bus = InProcessBus::open(dir.path()).unwrap();
    let other_filter = bus.consume("history", "tether.registry.>").await;
    assert!(matches!(other_filter, Err(BusError::Invalid(_))), "a group keeps its filter across a reopen");
}

#[tokio::test]
async fn core_subscribers_see_only_matching_subjects_and_stream_messages() {
    let dir = TempDir::new().unwrap();
    let bus = InProcessBus::open(dir.path()).unwrap();
    let mut one_node = bus.subscribe("tether.edge.n1.down").await.unwrap();
    let mut uplinks = bus.subscribe("tether.up.*.*.*.property").await.unwrap();
    bus.publish(BusMessage::new("tether.edge.n2.down", "no")).await.unwrap();
    bus.publish(BusMessage::new("tether.edge.n1.down", "yes")).await.unwrap();
    bus.publish_durable(uplink("lamp-1", 0)).await.unwrap();
    assert_eq!(one_node.next().await.unwrap().payload, "yes");
    assert_eq!(uplinks.next().await.unwrap(), uplink("lamp-1", 0));
}

// === helpers ===

/// A property uplink of `device` whose payload and messageId name the device and `n`.
fn uplink(device: &str, n: u32) -> BusMessage {
    let token = tether_bus::subject::token(device);
    BusMessage::new(format!("tether.up.t1.pk.{token}.property"), format!("{device}/{n}"))
        .with_header(header::MESSAGE_ID, format!("{device}/{n}"))
}

/// The last message of a test, to show that nothing else comes before it.
fn marker() -> BusMessage {
    uplink("marker", 0)
}

fn number(message: &BusMessage) -> u32 {
    String::from_utf8_lossy(&message.payload).rsplit('/').next().unwrap().parse().unwrap()
}

fn numbers(messages: &[BusMessage]) -> Vec<u32> {
    messages.iter().map(number).collect()
}

async fn next(consumer: &mut Consumer) -> Delivery {
    tokio::time::timeout(DEADLINE, consumer.next()).await.expect("no delivery in time").expect("bus gone")
}

async fn take_and_ack(consumer: &mut Consumer, count: usize) -> Vec<BusMessage> {
    let mut messages = Vec::with_capacity(count);
    for _ in 0..count {
        let delivery = next(consumer).await;
        messages.push(delivery.message.clone());
        delivery.ack().await.unwrap();
    }
    messages
}

/// Publishes the marker and returns everything the consumer gets before it, acked.
async fn take_until_marker(bus: &InProcessBus, consumer: &mut Consumer) -> Vec<BusMessage> {
    bus.publish_durable(marker()).await.unwrap();
    let mut messages = Vec::new();
    loop {
        let delivery = next(consumer).await;
        let message = delivery.message.clone();
        delivery.ack().await.unwrap();
        if message == marker() {
            return messages;
        }
        messages.push(message);
    }
}

async fn assert_next_is_the_marker(bus: &InProcessBus, consumer: &mut Consumer) {
    let before = take_until_marker(bus, consumer).await;
    assert!(before.is_empty(), "delivered again: {:?}", numbers(&before));
}
