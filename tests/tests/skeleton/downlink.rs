//! Cloud-to-device commands, the edge's half (issue 5, docs/commands.md): downlinks and
//! broadcasts published on the bus as the command service publishes them, real devices answering.
//! RRPC answers reach the caller's `reply_to` and never the device; late answers reach no one;
//! answers are matched by device and message id; PUBACKs and Alink replies become `downlink`
//! events; custom and broadcast topics reach subscribers only.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tether_bus::downlink::{Answer, Broadcast, CallAnswer, Correlation, Downlink};
use tether_bus::{BusMessage, Consumer, Subscription, subject};
use tether_contract::now_ms;
use tether_model::{DeviceKey, ProductKey};
use tether_tests::{Device, DeviceCredentials, TestPlatform, WAIT, cluster_mode, eventually};

use crate::gateway::{Site, ask, request, session_topic, sign, site, status_becomes};

/// A little longer than a message takes to arrive: how long "nothing comes" is watched.
const QUIET: Duration = Duration::from_millis(300);

/// Where the answers of this test's synchronous calls go.
fn reply_to() -> String {
    subject::command_replies("test")
}

/// The node id of the edge the devices connect to.
fn edge_node() -> &'static str {
    if cluster_mode() { "edge-1" } else { "embedded" }
}

fn key(device: &DeviceCredentials) -> DeviceKey {
    DeviceKey::parse(&device.product_key, &device.device_name).unwrap()
}

/// A command to `device` on `topic`, followed with `message_id` until `deadline`.
fn command(
    device: &DeviceCredentials,
    topic: &str,
    payload: impl Into<Bytes>,
    qos: u8,
    correlation: Option<Correlation>,
) -> Downlink {
    Downlink { device: key(device), topic: topic.to_owned(), payload: payload.into(), qos, correlation }
}

/// A synchronous call answered by `expect`, handed to [`reply_to`] until `deadline`.
fn sync_call(message_id: &str, expect: Answer, deadline: i64) -> Option<Correlation> {
    Some(Correlation { message_id: message_id.to_owned(), expect, reply_to: Some(reply_to()), deadline })
}

/// An RRPC request `message_id` to `device` on its `rrpc/request/{id}`, live for 10 s.
fn rrpc(device: &DeviceCredentials, message_id: &str, payload: &'static [u8]) -> Downlink {
    let topic = device.topic(&format!("rrpc/request/{message_id}"));
    command(device, &topic, payload, 0, sync_call(message_id, Answer::Rrpc, now_ms() + 10_000))
}

async fn send(platform: &TestPlatform, downlink: &Downlink) {
    platform.bus().publish(downlink.to_message(edge_node())).await.expect("downlink published");
}

async fn broadcast(platform: &TestPlatform, product_key: &str, message_id: &str, topic: Option<String>) {
    let broadcast = Broadcast {
        product_key: ProductKey::new(product_key).unwrap(),
        message_id: message_id.to_owned(),
        topic,
        payload: Bytes::from_static(b"to all"),
    };
    platform.bus().publish(broadcast.to_message()).await.expect("broadcast published");
}

async fn next_answer(answers: &mut Subscription) -> CallAnswer {
    let message = tokio::time::timeout(WAIT, answers.next()).await.expect("an answer within the wait").unwrap();
    CallAnswer::from_message(message).expect("a call answer")
}

/// The `downlink` events of `device`, from now on.
async fn downlink_events(platform: &TestPlatform, device: &DeviceCredentials) -> Consumer {
    let filter =
        format!("tether.up.*.{}.{}.downlink", subject::token(&device.product_key), subject::token(&device.device_name));
    platform.bus().consume(&format!("test-{}", device.device_name), &filter).await.unwrap()
}

async fn next_event(events: &mut Consumer) -> (BusMessage, Value) {
    let delivery = tokio::time::timeout(WAIT, events.next()).await.expect("an event within the wait").unwrap();
    let message = delivery.message.clone();
    delivery.ack().await.unwrap();
    let body = serde_json::from_slice(&message.payload).expect("json event");
    (message, body)
}

/// Asserts `device` gets nothing now: its next message (after `marker`, a system downlink sent
/// last) is the marker.
async fn only_marker_follows(platform: &TestPlatform, device: &mut Device, creds: &DeviceCredentials) {
    let marker = creds.topic("thing/service/marker");
    send(platform, &command(creds, &marker, "marker", 0, None)).await;
    assert_eq!(device.next_message().await.topic, marker, "a message reached the device before the marker");
}

/// A gateway with both sub-devices of [`Site`] logged in through its connection.
async fn gateway_online(platform: &TestPlatform) -> (Site, Device) {
    let site = site(platform).await;
    let mut gw = Device::connect(platform.mqtt_addr(), &site.gateway).await;
    let both = json!([sign(&site.subs[0]), sign(&site.subs[1])]);
    let reply = gw.request(&site.gateway, "thing/topo/add", &request("1", both)).await;
    assert_eq!(reply["code"], 200, "{reply}");
    let login = json!({"signMethod": "hmacSha256", "deviceList": [sign(&site.subs[0]), sign(&site.subs[1])]});
    let reply = ask(&mut gw, &session_topic(&site.gateway, "combine/batch_login"), request("2", login)).await;
    assert_eq!(reply["code"], 200, "{reply}");
    for sub in &site.subs {
        status_becomes(platform, sub, "ONLINE").await;
    }
    (site, gw)
}

#[tokio::test]
async fn an_rrpc_answer_reaches_the_caller_and_is_not_echoed() {
    let platform = TestPlatform::start().await;
    let creds = platform.device().await;
    let mut answers = platform.bus().subscribe(&reply_to()).await.unwrap();
    let mut device = Device::connect(platform.mqtt_addr(), &creds).await;
    // Even subscribed to all its own topics, the device never gets its answer back.
    assert_eq!(device.subscribe(&[&creds.topic("#")]).await, [true]);

    send(&platform, &rrpc(&creds, "1001", b"ping")).await;
    let call = device.next_message().await;
    assert_eq!(
        (call.topic.as_str(), call.payload.as_slice()),
        (creds.topic("rrpc/request/1001").as_str(), &b"ping"[..])
    );
    device.publish(&creds.topic("rrpc/response/1001"), &b"pong"[..]).await;
    let answer = next_answer(&mut answers).await;
    assert_eq!(
        answer,
        CallAnswer { message_id: "1001".into(), device: key(&creds), payload: Bytes::from_static(b"pong") }
    );
    assert!(device.next_message_within(QUIET).await.is_none(), "the answer was echoed");

    // Custom RRPC goes to a device that subscribed to it, and is answered on the same topic.
    let (pk, dn) = (&creds.product_key, &creds.device_name);
    assert_eq!(device.subscribe(&[&format!("/ext/rrpc/+/{pk}/{dn}/user/#")]).await, [true]);
    let topic = format!("/ext/rrpc/1002/{pk}/{dn}/user/get");
    let deadline = now_ms() + 10_000;
    send(&platform, &command(&creds, &topic, "open", 0, sync_call("1002", Answer::Rrpc, deadline))).await;
    let call = device.next_message().await;
    assert_eq!((call.topic.as_str(), call.payload.as_slice()), (topic.as_str(), &b"open"[..]));
    device.publish(&topic, &b"opened"[..]).await;
    let answer = next_answer(&mut answers).await;
    assert_eq!((answer.message_id.as_str(), &answer.payload[..]), ("1002", &b"opened"[..]));
    assert_eq!(answer.device, key(&creds));
    assert!(device.next_message_within(QUIET).await.is_none(), "the custom answer was echoed");
    platform.stop().await;
}

#[tokio::test]
async fn late_unknown_and_repeated_answers_are_not_handed_on() {
    let platform = TestPlatform::start().await;
    let creds = platform.device().await;
    let mut answers = platform.bus().subscribe(&reply_to()).await.unwrap();
    let mut device = Device::connect(platform.mqtt_addr(), &creds).await;

    // Answered after its deadline.
    let deadline = now_ms() + 1_000;
    let topic = creds.topic("rrpc/request/2001");
    send(&platform, &command(&creds, &topic, "ping", 0, sync_call("2001", Answer::Rrpc, deadline))).await;
    assert_eq!(device.next_message().await.topic, topic);
    eventually("the deadline to pass", WAIT, || async { (now_ms() > deadline).then_some(()) }).await;
    device.publish(&creds.topic("rrpc/response/2001"), "too late").await;
    // Never asked.
    device.publish(&creds.topic("rrpc/response/2002"), "unasked").await;
    // Answered twice: only the first answer counts.
    send(&platform, &rrpc(&creds, "2003", b"ping")).await;
    assert_eq!(device.next_message().await.topic, creds.topic("rrpc/request/2003"));
    device.publish(&creds.topic("rrpc/response/2003"), "first").await;
    device.publish(&creds.topic("rrpc/response/2003"), "second").await;
    // A live call answered last: the caller sees the first answer to 2003, then this one.
    send(&platform, &rrpc(&creds, "2004", b"ping")).await;
    assert_eq!(device.next_message().await.topic, creds.topic("rrpc/request/2004"));
    device.publish(&creds.topic("rrpc/response/2004"), "live").await;

    let first = next_answer(&mut answers).await;
    assert_eq!((first.message_id.as_str(), &first.payload[..]), ("2003", &b"first"[..]));
    let live = next_answer(&mut answers).await;
    assert_eq!((live.message_id.as_str(), &live.payload[..]), ("2004", &b"live"[..]));
    assert!(tokio::time::timeout(QUIET, answers.next()).await.is_err(), "a late answer was handed on");
    assert!(device.next_message_within(QUIET).await.is_none(), "an answer was echoed");
    platform.stop().await;
}

#[tokio::test]
async fn answers_to_one_message_id_are_kept_apart_by_device() {
    let platform = TestPlatform::start().await;
    let pk = platform.create_product().await;
    let creds = [platform.register_device(&pk).await, platform.register_device(&pk).await];
    let mut answers = platform.bus().subscribe(&reply_to()).await.unwrap();
    let mut devices = [
        Device::connect(platform.mqtt_addr(), &creds[0]).await,
        Device::connect(platform.mqtt_addr(), &creds[1]).await,
    ];
    for (device, creds) in devices.iter_mut().zip(&creds) {
        send(&platform, &rrpc(creds, "3001", b"ping")).await;
        assert_eq!(device.next_message().await.topic, creds.topic("rrpc/request/3001"));
    }
    // The second device answers first; each answer carries its own device.
    for i in [1, 0] {
        let response = creds[i].topic("rrpc/response/3001");
        devices[i].publish(&response, creds[i].device_name.clone()).await;
        let answer = next_answer(&mut answers).await;
        assert_eq!(answer.device, key(&creds[i]));
        assert_eq!(&answer.payload[..], creds[i].device_name.as_bytes());
    }

    // On one gateway connection: the gateway and its sub-devices each have their own call 3002.
    let (Site { gateway, subs }, mut gw) = gateway_online(&platform).await;
    let targets = [&subs[1], &gateway, &subs[0]];
    for target in targets {
        send(&platform, &rrpc(target, "3002", b"ping")).await;
        assert_eq!(gw.next_message().await.topic, target.topic("rrpc/request/3002"));
    }
    for target in targets.iter().rev() {
        gw.publish(&target.topic("rrpc/response/3002"), target.device_name.clone()).await;
        let answer = next_answer(&mut answers).await;
        assert_eq!((answer.message_id.as_str(), &answer.device), ("3002", &key(target)));
        assert_eq!(&answer.payload[..], target.device_name.as_bytes());
    }
    assert!(tokio::time::timeout(QUIET, answers.next()).await.is_err());
    platform.stop().await;
}

#[tokio::test]
async fn a_qos1_command_is_reported_delivered_on_its_puback() {
    let platform = TestPlatform::start().await;
    let creds = platform.device().await;
    let mut events = downlink_events(&platform, &creds).await;
    let mut device = Device::connect(platform.mqtt_addr(), &creds).await;
    let topic = creds.topic("thing/service/property/set");
    let set =
        |id: &str| json!({"id": id, "version": "1.0", "params": {"Power": 1}, "method": "thing.service.property.set"});
    let follow = |id: &str| {
        Some(Correlation { message_id: id.into(), expect: Answer::Alink, reply_to: None, deadline: now_ms() + 60_000 })
    };

    // QoS 0 has no PUBACK, so no event; QoS 1 is reported once the device acknowledged it.
    send(&platform, &command(&creds, &topic, set("4001").to_string(), 0, follow("4001"))).await;
    send(&platform, &command(&creds, &topic, set("4002").to_string(), 1, follow("4002"))).await;
    for id in ["4001", "4002"] {
        let message = device.next_message().await;
        assert_eq!((message.topic.as_str(), &message.json()["id"]), (topic.as_str(), &json!(id)));
    }
    let (event, body) = next_event(&mut events).await;
    assert_eq!(event.headers["event"], "delivered");
    assert_eq!(body["messageId"], "4002", "{body}");
    assert_eq!(body["status"], "DELIVERED");
    assert_eq!(
        (body["productKey"].as_str(), body["deviceName"].as_str()),
        (Some(creds.product_key.as_str()), Some(creds.device_name.as_str()))
    );
    assert!(body["iotId"].as_str().is_some_and(|id| !id.is_empty()), "{body}");
    assert!(body["time"].as_i64().is_some_and(|t| t > 0), "{body}");
    assert!(tokio::time::timeout(QUIET, events.next()).await.is_err(), "an event without a PUBACK");
    platform.stop().await;
}

#[tokio::test]
async fn a_property_set_reply_becomes_an_aliyun_reply_event() {
    let platform = TestPlatform::start().await;
    let creds = platform.device().await;
    let mut events = downlink_events(&platform, &creds).await;
    let mut answers = platform.bus().subscribe(&reply_to()).await.unwrap();
    let mut device = Device::connect(platform.mqtt_addr(), &creds).await;

    // A synchronous property set: the reply goes to the caller as sent, and on the stream.
    let topic = creds.topic("thing/service/property/set");
    let set = json!({"id": "5001", "version": "1.0", "params": {"Power": 1}, "method": "thing.service.property.set"});
    let deadline = now_ms() + 10_000;
    send(&platform, &command(&creds, &topic, set.to_string(), 0, sync_call("5001", Answer::Alink, deadline))).await;
    assert_eq!(device.next_message().await.json(), set);
    let reply = json!({"id": "5001", "code": 200, "data": {"Power": 1}, "message": "success"}).to_string();
    device.publish(&format!("{topic}_reply"), reply.clone()).await;
    let answer = next_answer(&mut answers).await;
    assert_eq!((answer.message_id.as_str(), &answer.payload[..]), ("5001", reply.as_bytes()));

    let (event, body) = next_event(&mut events).await;
    assert_eq!(event.headers["event"], "reply");
    let (pk, dn) = (&creds.product_key, &creds.device_name);
    assert_eq!(event.headers["topic"], format!("/{pk}/{dn}/thing/downlink/reply/message"));
    let gmt_create = body["gmtCreate"].as_i64().expect("gmtCreate");
    assert!(body["iotId"].as_str().is_some_and(|id| !id.is_empty()), "{body}");
    assert_eq!(
        body,
        json!({"gmtCreate": gmt_create, "iotId": body["iotId"], "productKey": pk, "deviceName": dn,
            "requestId": "5001", "code": 200, "message": "success", "topic": topic, "data": {"Power": 1}})
    );

    // An async service's reply, with no call waiting for it, is recorded all the same.
    let reboot = creds.topic("thing/service/reboot");
    let reply = json!({"id": "5002", "code": 460, "data": {}, "message": "busy"}).to_string();
    device.publish(&format!("{reboot}_reply"), reply).await;
    let (event, body) = next_event(&mut events).await;
    assert_eq!(event.headers["event"], "reply");
    assert_eq!((&body["requestId"], &body["code"], &body["message"]), (&json!("5002"), &json!(460), &json!("busy")));
    assert_eq!(body["topic"], reboot);
    assert!(tokio::time::timeout(QUIET, answers.next()).await.is_err(), "an uncalled reply was handed on");
    assert!(device.next_message_within(QUIET).await.is_none(), "a reply was echoed");
    platform.stop().await;
}

#[tokio::test]
async fn a_custom_topic_downlink_reaches_only_a_subscribed_device() {
    let platform = TestPlatform::start().await;
    let pk = platform.create_product().await;
    let creds = [platform.register_device(&pk).await, platform.register_device(&pk).await];
    let mut subscribed = Device::connect(platform.mqtt_addr(), &creds[0]).await;
    let mut other = Device::connect(platform.mqtt_addr(), &creds[1]).await;
    let custom = |c: &DeviceCredentials| format!("/{}/{}/user/get", c.product_key, c.device_name);
    assert_eq!(subscribed.subscribe(&[&custom(&creds[0])]).await, [true]);

    send(&platform, &command(&creds[0], &custom(&creds[0]), "hello", 1, None)).await;
    send(&platform, &command(&creds[1], &custom(&creds[1]), "hello", 1, None)).await;
    let message = subscribed.next_message().await;
    assert_eq!((message.topic, message.payload), (custom(&creds[0]), b"hello".to_vec()));
    only_marker_follows(&platform, &mut other, &creds[1]).await;
    platform.stop().await;
}

#[tokio::test]
async fn a_broadcast_without_topic_reaches_every_online_device_of_the_product() {
    let platform = TestPlatform::start().await;
    let (Site { gateway, subs }, mut gw) = gateway_online(&platform).await;
    let sensor = &subs[0].product_key;
    let direct_creds = platform.register_device(sensor).await;
    let mut direct = Device::connect(platform.mqtt_addr(), &direct_creds).await;
    let stranger_creds = platform.device().await;
    let mut stranger = Device::connect(platform.mqtt_addr(), &stranger_creds).await;

    broadcast(&platform, sensor, "6001", None).await;
    let message = direct.next_message().await;
    assert_eq!((message.topic, message.payload), (direct_creds.topic("broadcast/request/6001"), b"to all".to_vec()));
    // Each sub-device gets its own, through the gateway; the gateway (another product) none.
    let mut topics = vec![gw.next_message().await.topic, gw.next_message().await.topic];
    topics.sort();
    let mut expected: Vec<String> = subs.iter().map(|s| s.topic("broadcast/request/6001")).collect();
    expected.sort();
    assert_eq!(topics, expected);
    only_marker_follows(&platform, &mut gw, &gateway).await;
    only_marker_follows(&platform, &mut stranger, &stranger_creds).await;
    platform.stop().await;
}

#[tokio::test]
async fn a_broadcast_on_a_topic_reaches_only_its_subscribers() {
    let platform = TestPlatform::start().await;
    let (Site { gateway, subs }, mut gw) = gateway_online(&platform).await;
    let sensor = subs[0].product_key.clone();
    let creds = [platform.register_device(&sensor).await, platform.register_device(&sensor).await];
    let mut subscribed = Device::connect(platform.mqtt_addr(), &creds[0]).await;
    let mut other = Device::connect(platform.mqtt_addr(), &creds[1]).await;
    assert_eq!(subscribed.subscribe(&[&format!("/broadcast/{sensor}/news")]).await, [true]);
    // The gateway subscribes for its sub-devices' product.
    assert_eq!(gw.subscribe(&[&format!("/broadcast/{sensor}/+")]).await, [true]);

    let topic = format!("/broadcast/{sensor}/news");
    broadcast(&platform, &sensor, "7001", Some(topic.clone())).await;
    let message = subscribed.next_message().await;
    assert_eq!((message.topic.as_str(), message.payload.as_slice()), (topic.as_str(), &b"to all"[..]));
    // Once on the gateway's connection, however many of its sub-devices are of the product.
    assert_eq!(gw.next_message().await.topic, topic);
    only_marker_follows(&platform, &mut gw, &gateway).await;
    only_marker_follows(&platform, &mut other, &creds[1]).await;
    // A topic only the gateway's filter matches reaches only the gateway.
    broadcast(&platform, &sensor, "7002", Some(format!("/broadcast/{sensor}/other"))).await;
    assert_eq!(gw.next_message().await.topic, format!("/broadcast/{sensor}/other"));
    only_marker_follows(&platform, &mut subscribed, &creds[0]).await;
    platform.stop().await;
}
