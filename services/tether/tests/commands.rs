//! The command service end to end: the platform started as `tether run` (or, with
//! `TETHER_TEST_MODE=cluster`, as cluster roles over NATS and Redis, the service reached over
//! gRPC), real MQTT devices answering. OFFLINE at once, TIMEOUT at the deadline, concurrent RRPCs
//! correlated, async commands followed to their reply, the offline queue across a restart, and
//! TTL expiry.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use serde_json::{Map, Value, json};
use tether_contract::{CommandService, CommandStatus, Invocation, RrpcCode, SendOptions};
use tether_model::DeviceKey;
use tether_tests::{Device, DeviceCredentials, TestPlatform, eventually};
use tokio::time::Instant;

/// How long a test waits for the platform to do something it should do at once.
const SOON: Duration = Duration::from_secs(5);

fn key(device: &DeviceCredentials) -> DeviceKey {
    DeviceKey::parse(&device.product_key, &device.device_name).unwrap()
}

fn items(value: Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

fn ttl(ms: u64) -> SendOptions {
    SendOptions { ttl_ms: Some(ms) }
}

/// The message id a request topic (`.../rrpc/request/{id}`) carries.
fn request_id(topic: &str) -> &str {
    topic.rsplit('/').next().unwrap()
}

async fn command_status(command: &Arc<dyn CommandService>, message_id: &str, expected: CommandStatus) {
    eventually(&format!("command {message_id} {expected:?}"), SOON, || async {
        let command = command.get_command(message_id).await.ok()?;
        (command.status == expected).then_some(())
    })
    .await;
}

/// A device that answers every RRPC request with `{deviceName}:{request}`, until dropped.
fn echo_rrpc(mut device: Device, creds: DeviceCredentials) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(message) = device.next_message_within(Duration::from_secs(60)).await {
            let Some(id) = message.topic.strip_prefix(&creds.topic("rrpc/request/")) else {
                continue;
            };
            let mut answer = format!("{}:", creds.device_name).into_bytes();
            answer.extend_from_slice(&message.payload);
            device.publish(&creds.topic(&format!("rrpc/response/{id}")), answer).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rrpc_to_an_offline_device_answers_offline_at_once() {
    let platform = TestPlatform::start().await;
    let creds = platform.device().await;
    let started = Instant::now();
    let outcome = platform.command().rrpc(&key(&creds), Bytes::from_static(b"ping"), 8000, None).await.unwrap();
    assert_eq!((outcome.rrpc_code, outcome.payload), (RrpcCode::Offline, None));
    assert!(started.elapsed() < Duration::from_millis(500), "{:?}", started.elapsed());
    platform.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rrpc_times_out_at_its_deadline_and_a_late_answer_reaches_no_later_call() {
    let platform = TestPlatform::start().await;
    let creds = platform.device().await;
    let mut device = Device::connect(platform.mqtt_addr(), &creds).await;
    let command = platform.command();

    let started = Instant::now();
    let call = {
        let (command, device) = (command.clone(), key(&creds));
        tokio::spawn(async move { command.rrpc(&device, Bytes::from_static(b"first"), 1000, None).await })
    };
    let request = device.next_message().await;
    assert_eq!(request.payload, b"first");
    let first_id = request_id(&request.topic).to_owned();
    let outcome = call.await.unwrap().unwrap();
    let elapsed = started.elapsed();
    assert_eq!(outcome.rrpc_code, RrpcCode::Timeout);
    assert_eq!(outcome.message_id, first_id);
    assert!(elapsed >= Duration::from_millis(990) && elapsed <= Duration::from_millis(1100), "{elapsed:?}");

    // The late answer goes nowhere; the next call gets its own.
    device.publish(&creds.topic(&format!("rrpc/response/{first_id}")), b"late".to_vec()).await;
    let call = {
        let (command, device) = (command.clone(), key(&creds));
        tokio::spawn(async move { command.rrpc(&device, Bytes::from_static(b"second"), 3000, None).await })
    };
    let request = device.next_message().await;
    let second_id = request_id(&request.topic).to_owned();
    device.publish(&creds.topic(&format!("rrpc/response/{first_id}")), b"late again".to_vec()).await;
    device.publish(&creds.topic(&format!("rrpc/response/{second_id}")), b"pong".to_vec()).await;
    let outcome = call.await.unwrap().unwrap();
    assert_eq!((outcome.rrpc_code, outcome.payload), (RrpcCode::Success, Some(Bytes::from_static(b"pong"))));
    // Answers are consumed, never echoed to the device.
    assert!(device.next_message_within(Duration::from_millis(200)).await.is_none());
    drop(command);
    platform.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_rrpcs_to_fifty_devices_each_get_their_own_answer() {
    let platform = TestPlatform::start().await;
    let product_key = platform.create_product().await;
    let mut devices = Vec::new();
    let mut echoes = Vec::new();
    for _ in 0..50 {
        let creds = platform.register_device(&product_key).await;
        let device = Device::connect(platform.mqtt_addr(), &creds).await;
        echoes.push(echo_rrpc(device, creds.clone()));
        devices.push(creds);
    }
    let command = platform.command();
    let calls: Vec<_> = (0..200)
        .map(|i| {
            let command = command.clone();
            let creds = devices[i % devices.len()].clone();
            tokio::spawn(async move {
                let request = format!("request-{i}");
                let outcome = command.rrpc(&key(&creds), Bytes::from(request.clone()), 8000, None).await.unwrap();
                let expected = format!("{}:{request}", creds.device_name);
                assert_eq!((outcome.rrpc_code, outcome.payload), (RrpcCode::Success, Some(Bytes::from(expected))));
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap();
    }
    for echo in echoes {
        echo.abort();
    }
    drop(command);
    platform.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn property_sets_and_services_reach_the_device_and_its_replies_are_recorded() {
    let platform = TestPlatform::start().await;
    let creds = platform.device().await;
    let model = json!({
        "properties": [{ "identifier": "Mode", "name": "m", "accessMode": "rw",
                         "dataType": { "type": "enum", "specs": { "0": "off", "1": "on" } } }],
        "events": [],
        "services": [
            { "identifier": "Probe", "name": "p", "callType": "sync", "inputData": [],
              "outputData": [{ "identifier": "ok", "name": "ok", "dataType": { "type": "bool", "specs": {} } }] },
            { "identifier": "Blink", "name": "b", "callType": "async", "inputData": [], "outputData": [] }
        ]
    });
    let (status, body) = platform.api.put(&format!("/products/{}/thing-model", creds.product_key), model).await;
    assert!(status.is_success(), "{body}");
    let mut device = Device::connect(platform.mqtt_addr(), &creds).await;
    let command = platform.command();

    // A property set: delivered (the PUBACK), then the device's reply.
    let set = command.set_properties(&key(&creds), items(json!({"Mode": 1})), SendOptions::default()).await.unwrap();
    let message = device.next_message().await;
    assert_eq!(message.topic, creds.topic("thing/service/property/set"));
    let request = message.json();
    assert_eq!((request["id"].as_str(), &request["params"]), (Some(set.message_id.as_str()), &json!({"Mode": 1})));
    command_status(&command, &set.message_id, CommandStatus::Delivered).await;
    let reply = json!({"id": set.message_id, "code": 200, "data": {}, "message": "success"});
    device.publish(&creds.topic("thing/service/property/set_reply"), reply.to_string()).await;
    command_status(&command, &set.message_id, CommandStatus::Succeeded).await;
    let done = command.get_command(&set.message_id).await.unwrap();
    assert_eq!((done.reply_code, done.reply_message.as_deref()), (Some(200), Some("success")));

    // An async service that fails on the device.
    let invocation = command.invoke_service(&key(&creds), "Blink", json!({}), None, SendOptions::default()).await;
    let Invocation::Async(blink) = invocation.unwrap() else { panic!("Blink is async") };
    let message = device.next_message().await;
    assert_eq!(message.topic, creds.topic("thing/service/Blink"));
    let reply = json!({"id": blink.message_id, "code": 460, "data": {}, "message": "no lamp"});
    device.publish(&creds.topic("thing/service/Blink_reply"), reply.to_string()).await;
    command_status(&command, &blink.message_id, CommandStatus::Failed).await;

    // A sync service: over RRPC, answered with an Alink reply.
    let call = {
        let (command, device) = (command.clone(), key(&creds));
        tokio::spawn(async move {
            command.invoke_service(&device, "Probe", Value::Null, Some(3000), SendOptions::default()).await
        })
    };
    let message = device.next_message().await;
    let id = request_id(&message.topic).to_owned();
    assert_eq!(message.topic, creds.topic(&format!("rrpc/request/{id}")));
    assert_eq!(message.json()["method"], "thing.service.Probe");
    let reply = json!({"id": id, "code": 200, "data": {"ok": 1}, "message": "success"});
    device.publish(&creds.topic(&format!("rrpc/response/{id}")), reply.to_string()).await;
    let Invocation::Sync { rrpc_code, code, data, .. } = call.await.unwrap().unwrap() else {
        panic!("Probe is sync");
    };
    assert_eq!((rrpc_code, code, data), (RrpcCode::Success, Some(200), Some(json!({"ok": 1}))));

    let listed: Vec<String> =
        command.list_commands(&key(&creds)).await.unwrap().into_iter().map(|c| c.message_id).collect();
    assert_eq!(listed, vec![set.message_id, blink.message_id]);
    drop(command);
    platform.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_commands_survive_a_restart_and_reach_the_device_in_order_when_it_connects() {
    let platform = TestPlatform::start().await;
    let creds = platform.device().await;
    let command = platform.command();
    let mut queued = Vec::new();
    for i in 0..3 {
        let set = command.set_properties(&key(&creds), items(json!({"Step": i})), ttl(60_000)).await.unwrap();
        assert_eq!(set.status, CommandStatus::Queued);
        queued.push(set.message_id);
    }
    // What the test holds of the old platform must go first: embedded, it keeps the store open.
    drop(command);
    let platform = platform.restart().await;
    let command = platform.command();
    assert_eq!(command.get_command(&queued[0]).await.unwrap().status, CommandStatus::Queued);

    let mut device = Device::connect(platform.mqtt_addr(), &creds).await;
    for (i, message_id) in queued.iter().enumerate() {
        let message = device.next_message().await;
        assert_eq!(message.topic, creds.topic("thing/service/property/set"));
        let request = message.json();
        assert_eq!((request["id"].as_str(), &request["params"]["Step"]), (Some(message_id.as_str()), &json!(i)));
    }
    for message_id in &queued {
        command_status(&command, message_id, CommandStatus::Delivered).await;
    }
    assert!(device.next_message_within(Duration::from_millis(300)).await.is_none());
    drop(command);
    platform.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_command_past_its_ttl_expires_and_is_never_sent() {
    let platform = TestPlatform::start().await;
    let creds = platform.device().await;
    let command = platform.command();
    let set = command.set_properties(&key(&creds), items(json!({"A": 1})), ttl(500)).await.unwrap();
    assert!(matches!(
        command.set_properties(&key(&creds), items(json!({"A": 2})), SendOptions::default()).await,
        Err(tether_contract::ServiceError::DeviceOffline { .. })
    ));
    command_status(&command, &set.message_id, CommandStatus::Expired).await;
    let mut device = Device::connect(platform.mqtt_addr(), &creds).await;
    assert!(device.next_message_within(Duration::from_millis(500)).await.is_none());
    assert_eq!(command.get_command(&set.message_id).await.unwrap().status, CommandStatus::Expired);
    drop(command);
    platform.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_reaches_a_subscribed_device_and_a_broadcast_every_online_device_of_the_product() {
    let platform = TestPlatform::start().await;
    let product_key = platform.create_product().await;
    let (status, body) = platform
        .api
        .post(&format!("/products/{product_key}/topics"), json!({"topicShortName": "cmd", "operation": "sub"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (a, b) = (platform.register_device(&product_key).await, platform.register_device(&product_key).await);
    let mut device_a = Device::connect(platform.mqtt_addr(), &a).await;
    let mut device_b = Device::connect(platform.mqtt_addr(), &b).await;
    let topic = format!("/{}/{}/user/cmd", a.product_key, a.device_name);
    assert_eq!(device_a.subscribe(&[&topic]).await, vec![true]);
    let command = platform.command();
    let product = tether_model::ProductKey::new(product_key.clone()).unwrap();

    command.publish(&product, &topic, Bytes::from_static(b"to a"), 1).await.unwrap();
    let message = device_a.next_message().await;
    assert_eq!((message.topic.as_str(), message.payload.as_slice()), (topic.as_str(), &b"to a"[..]));

    let id = command.broadcast(&product, Bytes::from_static(b"everyone"), None).await.unwrap();
    for (device, creds) in [(&mut device_a, &a), (&mut device_b, &b)] {
        let message = device.next_message().await;
        assert_eq!(message.topic, creds.topic(&format!("broadcast/request/{id}")));
        assert_eq!(message.payload, b"everyone");
    }
    drop(command);
    platform.stop().await;
}
