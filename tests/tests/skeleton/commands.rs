//! Cloud-to-device operations through the tenant API (issue 5), end to end: REST and gRPC calls
//! reach real MQTT devices, whose answers come back to the caller or into the command records.
//! Property set, service invocation (async and sync), RRPC, Pub, broadcast and their batch forms;
//! OFFLINE at once, TIMEOUT at the deadline, late answers reaching no one, correlation under
//! load, the offline queue across a restart, TTL expiry, and the refusals of bad input.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tether_proto::v1 as pb;
use tether_proto::v1::gateway_client::GatewayClient;
use tether_tests::{Api, Device, DeviceCredentials, TestPlatform, WAIT, eventually};

/// How long "nothing arrives" is watched.
const QUIET: Duration = Duration::from_millis(300);

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A lamp: read-write `Switch` and `Brightness` (0..100), read-only `Temp`; an async `Blink`
/// (times 1..10), a sync `Probe` and an async `Marker` (to show what reached a device before).
fn lamp() -> Value {
    json!({
        "properties": [
            { "identifier": "Switch", "name": "switch", "accessMode": "rw",
              "dataType": { "type": "bool", "specs": { "0": "off", "1": "on" } } },
            { "identifier": "Brightness", "name": "brightness", "accessMode": "rw",
              "dataType": { "type": "int", "specs": { "min": "0", "max": "100" } } },
            { "identifier": "Temp", "name": "temperature", "accessMode": "r",
              "dataType": { "type": "int", "specs": { "min": "-20", "max": "60" } } }
        ],
        "events": [],
        "services": [
            { "identifier": "Blink", "name": "blink", "callType": "async",
              "inputData": [ { "identifier": "times", "name": "times",
                               "dataType": { "type": "int", "specs": { "min": "1", "max": "10" } } } ],
              "outputData": [] },
            { "identifier": "Probe", "name": "probe", "callType": "sync", "inputData": [],
              "outputData": [ { "identifier": "ok", "name": "ok",
                                "dataType": { "type": "bool", "specs": { "0": "no", "1": "yes" } } } ] },
            { "identifier": "Marker", "name": "marker", "callType": "async", "inputData": [], "outputData": [] }
        ]
    })
}

/// A product with the lamp model, on `api`'s tenant.
async fn lamp_product(api: &Api) -> String {
    let (status, body) = api.post("/products", json!({"name": "lamp"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let pk = body["productKey"].as_str().unwrap().to_owned();
    let (status, body) = api.put(&format!("/products/{pk}/thing-model"), lamp()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    pk
}

async fn register(api: &Api, pk: &str) -> DeviceCredentials {
    let (status, body) = api.post(&format!("/products/{pk}/devices"), json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    DeviceCredentials {
        product_key: pk.to_owned(),
        device_name: body["deviceName"].as_str().unwrap().to_owned(),
        device_secret: body["deviceSecret"].as_str().unwrap().to_owned(),
    }
}

/// A registered lamp (not connected).
async fn lamp_device(platform: &TestPlatform) -> DeviceCredentials {
    let pk = lamp_product(&platform.api).await;
    register(&platform.api, &pk).await
}

fn device_path(creds: &DeviceCredentials, suffix: &str) -> String {
    format!("/products/{}/devices/{}{suffix}", creds.product_key, creds.device_name)
}

fn rrpc_body(payload: &[u8], timeout_ms: u64) -> Value {
    json!({"payloadBase64": b64(payload), "timeoutMs": timeout_ms})
}

fn b64(bytes: &[u8]) -> String {
    base64::Engine::encode(&BASE64, bytes)
}

fn unb64(text: &Value) -> Vec<u8> {
    base64::Engine::decode(&BASE64, text.as_str().expect("base64 text")).expect("base64")
}

/// The message id of an RRPC request topic (`/sys/{pk}/{dn}/rrpc/request/{id}`).
fn rrpc_id(topic: &str) -> &str {
    topic.rsplit_once("/rrpc/request/").map(|(_, id)| id).unwrap_or_else(|| panic!("not an rrpc request: {topic}"))
}

/// Answers an RRPC request as a device does.
async fn answer_rrpc(device: &Device, creds: &DeviceCredentials, id: &str, payload: impl Into<Vec<u8>>) {
    device.publish(&creds.topic(&format!("rrpc/response/{id}")), payload).await;
}

/// Asserts a 4xx with `code` whose message names `field`.
#[track_caller]
fn assert_refused(response: &(StatusCode, Value), status: StatusCode, field: &str) {
    let (got, body) = response;
    assert_eq!(*got, status, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains(field), "message does not name {field}: {body}");
}

/// Asserts that nothing reached the device before now: the `Marker` service invoked last is
/// the next message it gets.
async fn only_marker_follows(api: &Api, device: &mut Device, creds: &DeviceCredentials) {
    let (status, body) = api.post(&device_path(creds, "/services/Marker:invoke"), json!({"args": {}})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let message = device.next_message().await;
    assert_eq!(message.topic, creds.topic("thing/service/Marker"), "a message reached the device before the marker");
}

async fn command_status(api: &Api, message_id: &str) -> Value {
    let (status, body) = api.get(&format!("/commands/{message_id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Waits until the command's status is `wanted`; returns the record.
async fn status_becomes(api: &Api, message_id: &str, wanted: &str) -> Value {
    let what = format!("command {message_id} {wanted}");
    eventually(&what, WAIT, || async {
        let record = command_status(api, message_id).await;
        (record["status"] == wanted).then_some(record)
    })
    .await
}

async fn other_tenant(platform: &TestPlatform) -> Api {
    let (status, tenant) = platform.api.post("/tenants", json!({"name": "acme"})).await;
    assert_eq!(status, StatusCode::CREATED, "{tenant}");
    platform.api.with_key(tenant["apiKey"].as_str().unwrap())
}

// === property set and services ===

#[tokio::test]
async fn a_property_set_reaches_the_device_and_its_reply_is_recorded() {
    let platform = TestPlatform::start().await;
    let api = &platform.api;
    let creds = lamp_device(&platform).await;
    let mut device = Device::connect(platform.mqtt_addr(), &creds).await;

    let (status, body) =
        api.post(&device_path(&creds, "/properties:set"), json!({"items": {"Switch": 1, "Brightness": 40}})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let message_id = body["messageId"].as_str().unwrap().to_owned();
    let request = device.next_message().await;
    assert_eq!(request.topic, creds.topic("thing/service/property/set"));
    let alink = request.json();
    assert_eq!(alink["id"], message_id.as_str());
    assert_eq!(alink["method"], "thing.service.property.set");
    assert_eq!(alink["params"], json!({"Switch": 1, "Brightness": 40}));

    let reply = json!({"id": message_id, "code": 200, "data": {}, "message": "success"});
    device.publish(&creds.topic("thing/service/property/set_reply"), reply.to_string()).await;
    let record = status_becomes(api, &message_id, "SUCCEEDED").await;
    assert_eq!(
        (record["replyCode"].as_i64(), record["method"].as_str()),
        (Some(200), Some("thing.service.property.set"))
    );
    assert_eq!(
        (record["productKey"].as_str(), record["deviceName"].as_str()),
        (Some(&*creds.product_key), Some(&*creds.device_name))
    );

    // A second one, refused by the device: FAILED with its code; both listed, oldest first.
    let (_, body) = api.post(&device_path(&creds, "/properties:set"), json!({"items": {"Switch": 0}})).await;
    let second = body["messageId"].as_str().unwrap().to_owned();
    let request = device.next_message().await;
    assert_eq!(request.json()["id"], second.as_str());
    let reply = json!({"id": second, "code": 6813, "data": {}, "message": "busy"});
    device.publish(&creds.topic("thing/service/property/set_reply"), reply.to_string()).await;
    let record = status_becomes(api, &second, "FAILED").await;
    assert_eq!((record["replyCode"].as_i64(), record["replyMessage"].as_str()), (Some(6813), Some("busy")));
    let (status, list) = api.get(&device_path(&creds, "/commands")).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let ids: Vec<&str> = list["items"].as_array().unwrap().iter().map(|c| c["messageId"].as_str().unwrap()).collect();
    assert_eq!(ids, [message_id.as_str(), second.as_str()]);
    platform.stop().await;
}

#[tokio::test]
async fn values_the_thing_model_refuses_name_the_item() {
    let platform = TestPlatform::start().await;
    let api = &platform.api;
    let creds = lamp_device(&platform).await;
    let _device = Device::connect(platform.mqtt_addr(), &creds).await;
    let set = device_path(&creds, "/properties:set");
    for (items, field) in [
        (json!({"Brightness": 101}), "items.Brightness"),
        (json!({"Temp": 20}), "items.Temp"),
        (json!({"Colour": "red"}), "items.Colour"),
        (json!({}), "items"),
    ] {
        assert_refused(&api.post(&set, json!({"items": items})).await, StatusCode::BAD_REQUEST, field);
    }
    for (service, args, field) in [("Blink", json!({"times": 11}), "args.times"), ("Dance", json!({}), "identifier")] {
        let invoke = device_path(&creds, &format!("/services/{service}:invoke"));
        assert_refused(&api.post(&invoke, json!({"args": args})).await, StatusCode::BAD_REQUEST, field);
    }
    platform.stop().await;
}

#[tokio::test]
async fn an_async_service_answers_its_message_id_and_a_sync_one_the_devices_answer() {
    let platform = TestPlatform::start().await;
    let api = &platform.api;
    let creds = lamp_device(&platform).await;
    let mut device = Device::connect(platform.mqtt_addr(), &creds).await;

    let (status, body) =
        api.post(&device_path(&creds, "/services/Blink:invoke"), json!({"args": {"times": 3}, "ttlMs": 60000})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body.as_object().unwrap().len(), 1, "an async service answers only its message id: {body}");
    let message_id = body["messageId"].as_str().unwrap().to_owned();
    let request = device.next_message().await;
    assert_eq!(request.topic, creds.topic("thing/service/Blink"));
    assert_eq!((request.json()["id"].as_str(), &request.json()["params"]), (Some(&*message_id), &json!({"times": 3})));
    let reply = json!({"id": message_id, "code": 200, "data": {}, "message": "success"});
    device.publish(&creds.topic("thing/service/Blink_reply"), reply.to_string()).await;
    status_becomes(api, &message_id, "SUCCEEDED").await;

    // A sync service goes over RRPC and the call answers with the device's reply.
    let call = tokio::spawn({
        let (api, path) = (api.clone(), device_path(&creds, "/services/Probe:invoke"));
        async move { api.post(&path, json!({"args": {}, "timeoutMs": 5000})).await }
    });
    let request = device.next_message().await;
    let id = rrpc_id(&request.topic).to_owned();
    assert_eq!(
        (request.json()["method"].as_str(), request.json()["id"].as_str()),
        (Some("thing.service.Probe"), Some(&*id))
    );
    let answer = json!({"id": id, "code": 200, "data": {"ok": 1}, "message": "success"});
    answer_rrpc(&device, &creds, &id, answer.to_string()).await;
    let (status, body) = call.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"messageId": id, "rrpcCode": "SUCCESS", "code": 200, "data": {"ok": 1}}));
    assert!(device.next_message_within(QUIET).await.is_none(), "the answer was echoed to the device");
    platform.stop().await;
}

// === RRPC ===

#[tokio::test]
async fn rrpc_carries_bytes_both_ways() {
    let platform = TestPlatform::start().await;
    let creds = platform.device().await;
    let mut device = Device::connect(platform.mqtt_addr(), &creds).await;
    let request_bytes: Vec<u8> = (0..=255).collect();
    let call = tokio::spawn({
        let (api, path, body) = (platform.api.clone(), device_path(&creds, "/rrpc"), rrpc_body(&request_bytes, 5000));
        async move { api.post(&path, body).await }
    });
    let request = device.next_message().await;
    assert_eq!(request.payload, request_bytes);
    let id = rrpc_id(&request.topic).to_owned();
    answer_rrpc(&device, &creds, &id, vec![0xff, 0x00, 0x7f]).await;
    let (status, body) = call.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((body["messageId"].as_str(), body["rrpcCode"].as_str()), (Some(&*id), Some("SUCCESS")));
    assert_eq!(unb64(&body["payloadBase64"]), [0xff, 0x00, 0x7f]);
    platform.stop().await;
}

#[tokio::test]
async fn an_offline_device_answers_offline_at_once() {
    let platform = TestPlatform::start().await;
    let api = &platform.api;
    let creds = lamp_device(&platform).await;

    let started = Instant::now();
    let (status, body) = api.post(&device_path(&creds, "/rrpc"), rrpc_body(b"ping", 8000)).await;
    assert_eq!((status, body["rrpcCode"].as_str()), (StatusCode::OK, Some("OFFLINE")), "{body}");
    assert!(body.get("payloadBase64").is_none(), "{body}");
    let (status, body) =
        api.post(&device_path(&creds, "/services/Probe:invoke"), json!({"args": {}, "timeoutMs": 8000})).await;
    assert_eq!((status, body["rrpcCode"].as_str()), (StatusCode::OK, Some("OFFLINE")), "{body}");
    assert!(started.elapsed() < Duration::from_millis(1000), "offline took {:?}", started.elapsed());

    // An async command without a TTL is refused, saying how to queue it.
    let response = api.post(&device_path(&creds, "/properties:set"), json!({"items": {"Switch": 1}})).await;
    assert_refused(&response, StatusCode::CONFLICT, "ttlMs");
    assert_eq!(response.1["code"], "DeviceOffline");
    platform.stop().await;
}

#[tokio::test]
async fn a_silent_device_times_out_at_the_deadline_and_its_late_answer_reaches_no_later_call() {
    let platform = TestPlatform::start().await;
    let creds = platform.device().await;
    let mut device = Device::connect(platform.mqtt_addr(), &creds).await;

    let started = Instant::now();
    let call = tokio::spawn({
        let (api, path) = (platform.api.clone(), device_path(&creds, "/rrpc"));
        async move { api.post(&path, rrpc_body(b"first", 1000)).await }
    });
    let first = device.next_message().await;
    let (status, body) = call.await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!((status, body["rrpcCode"].as_str()), (StatusCode::OK, Some("TIMEOUT")), "{body}");
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed <= Duration::from_millis(1100),
        "a 1000 ms call timed out after {elapsed:?}"
    );

    // The first call's answer comes while the second call waits: the second gets its own.
    let call = tokio::spawn({
        let (api, path) = (platform.api.clone(), device_path(&creds, "/rrpc"));
        async move { api.post(&path, rrpc_body(b"second", 5000)).await }
    });
    let second = device.next_message().await;
    assert_eq!(second.payload, b"second");
    answer_rrpc(&device, &creds, rrpc_id(&first.topic), "late answer to the first").await;
    answer_rrpc(&device, &creds, rrpc_id(&second.topic), "answer to the second").await;
    let (status, body) = call.await.unwrap();
    assert_eq!((status, body["rrpcCode"].as_str()), (StatusCode::OK, Some("SUCCESS")), "{body}");
    assert_eq!(body["messageId"].as_str(), Some(rrpc_id(&second.topic)));
    assert_eq!(unb64(&body["payloadBase64"]), b"answer to the second");
    assert!(device.next_message_within(QUIET).await.is_none(), "an answer was echoed to the device");
    platform.stop().await;
}

#[tokio::test]
async fn two_hundred_concurrent_rrpcs_to_fifty_devices_all_correlate() {
    let platform = TestPlatform::start().await;
    let pk = platform.create_product().await;
    let mut answering = Vec::new();
    let mut devices = Vec::new();
    for _ in 0..50 {
        let creds = platform.register_device(&pk).await;
        let mut device = Device::connect(platform.mqtt_addr(), &creds).await;
        devices.push(creds.clone());
        // Each device answers with its name and the request, after a pause that reorders answers.
        answering.push(tokio::spawn(async move {
            let mut answered = 0;
            while let Some(request) = device.next_message_within(Duration::from_secs(20)).await {
                let id = rrpc_id(&request.topic).to_owned();
                let pause = request.payload.len() % 7 * 5;
                tokio::time::sleep(Duration::from_millis(pause as u64)).await;
                let mut answer = format!("{}:", creds.device_name).into_bytes();
                answer.extend_from_slice(&request.payload);
                answer_rrpc(&device, &creds, &id, answer).await;
                answered += 1;
                if answered == 4 {
                    break;
                }
            }
            answered
        }));
    }
    let calls = (0..200).map(|i| {
        let creds = devices[i % 50].clone();
        let api = platform.api.clone();
        tokio::spawn(async move {
            let request = format!("request {i} {}", "x".repeat(i % 13));
            let (status, body) = api.post(&device_path(&creds, "/rrpc"), rrpc_body(request.as_bytes(), 8000)).await;
            assert_eq!((status, body["rrpcCode"].as_str()), (StatusCode::OK, Some("SUCCESS")), "call {i}: {body}");
            let expected = format!("{}:{request}", creds.device_name);
            assert_eq!(String::from_utf8(unb64(&body["payloadBase64"])).unwrap(), expected, "call {i}");
        })
    });
    for call in futures::future::join_all(calls).await {
        call.unwrap();
    }
    for device in answering {
        assert_eq!(device.await.unwrap(), 4);
    }
    platform.stop().await;
}

// === Pub and broadcast ===

#[tokio::test]
async fn pub_reaches_the_device_subscribed_to_its_custom_topic() {
    let platform = TestPlatform::start().await;
    let api = &platform.api;
    let pk = lamp_product(api).await;
    let creds = register(api, &pk).await;
    let mut device = Device::connect(platform.mqtt_addr(), &creds).await;
    let topic = format!("/{pk}/{}/user/get", creds.device_name);
    assert_eq!(device.subscribe(&[&topic]).await, [true]);

    let body = json!({"topicFullName": topic, "payloadBase64": b64(b"\x00hello"), "qos": 1});
    let (status, answer) = api.post(&format!("/products/{pk}/messages"), body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(answer["messageId"].as_str().is_some_and(|id| !id.is_empty()), "{answer}");
    let message = device.next_message().await;
    assert_eq!((message.topic, message.payload), (topic, b"\x00hello".to_vec()));
    platform.stop().await;
}

#[tokio::test]
async fn a_broadcast_reaches_exactly_the_products_online_devices() {
    let platform = TestPlatform::start().await;
    let api = &platform.api;
    let pk = lamp_product(api).await;
    let creds: Vec<DeviceCredentials> = futures::future::join_all((0..3).map(|_| register(api, &pk))).await;
    let mut devices = Vec::new();
    for c in &creds {
        devices.push(Device::connect(platform.mqtt_addr(), c).await);
    }
    let news = format!("/broadcast/{pk}/news");
    assert_eq!(devices[0].subscribe(&[&news]).await, [true]);
    let _offline = register(api, &pk).await;
    let stranger_creds = lamp_device(&platform).await;
    let mut stranger = Device::connect(platform.mqtt_addr(), &stranger_creds).await;

    let (status, body) = api.post(&format!("/products/{pk}/broadcast"), json!({"payloadBase64": b64(b"to all")})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let message_id = body["messageId"].as_str().unwrap();
    for (device, c) in devices.iter_mut().zip(&creds) {
        let message = device.next_message().await;
        let expected = c.topic(&format!("broadcast/request/{message_id}"));
        assert_eq!((message.topic, message.payload), (expected, b"to all".to_vec()));
    }
    only_marker_follows(api, &mut stranger, &stranger_creds).await;

    // On a topic: only its subscriber.
    let body = json!({"payloadBase64": b64(b"news"), "topicFullName": news});
    let (status, body) = api.post(&format!("/products/{pk}/broadcast"), body).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let message = devices[0].next_message().await;
    assert_eq!((message.topic, message.payload), (news, b"news".to_vec()));
    for (device, c) in devices.iter_mut().zip(&creds) {
        only_marker_follows(api, device, c).await;
    }
    only_marker_follows(api, &mut stranger, &stranger_creds).await;
    platform.stop().await;
}

// === batches ===

#[tokio::test]
async fn a_batch_answers_for_each_device_and_an_unknown_one_is_its_own_not_found() {
    let platform = TestPlatform::start().await;
    let api = &platform.api;
    let pk = lamp_product(api).await;
    let creds = [register(api, &pk).await, register(api, &pk).await];
    let mut devices = [
        Device::connect(platform.mqtt_addr(), &creds[0]).await,
        Device::connect(platform.mqtt_addr(), &creds[1]).await,
    ];
    let names = json!([creds[0].device_name, "noSuchDevice", creds[1].device_name]);

    let body = json!({"deviceNames": names, "items": {"Brightness": 70}});
    let (status, body) = api.post(&format!("/products/{pk}/devices:set-properties"), body).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 3, "{body}");
    assert_eq!(
        (results[1]["deviceName"].as_str(), results[1]["code"].as_str()),
        (Some("noSuchDevice"), Some("NotFound"))
    );
    for (i, result) in [&results[0], &results[2]].into_iter().enumerate() {
        assert_eq!(result["deviceName"].as_str(), Some(&*creds[i].device_name), "{body}");
        let message = devices[i].next_message().await;
        assert_eq!(message.topic, creds[i].topic("thing/service/property/set"));
        assert_eq!(message.json()["id"], result["messageId"], "{body}");
    }

    let body = json!({"deviceNames": names, "identifier": "Blink", "args": {"times": 2}});
    let (status, body) = api.post(&format!("/products/{pk}/devices:invoke-service"), body).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results[1]["code"], "NotFound", "{body}");
    for (i, result) in [&results[0], &results[2]].into_iter().enumerate() {
        let message = devices[i].next_message().await;
        assert_eq!(message.topic, creds[i].topic("thing/service/Blink"));
        assert_eq!(message.json()["id"], result["messageId"], "{body}");
    }

    // A sync service is for one device at a time; bad items refuse the whole batch; at most 100.
    let sync = json!({"deviceNames": names, "identifier": "Probe", "args": {}});
    assert_refused(
        &api.post(&format!("/products/{pk}/devices:invoke-service"), sync).await,
        StatusCode::BAD_REQUEST,
        "identifier",
    );
    let bad = json!({"deviceNames": names, "items": {"Brightness": -1}});
    assert_refused(
        &api.post(&format!("/products/{pk}/devices:set-properties"), bad).await,
        StatusCode::BAD_REQUEST,
        "items.Brightness",
    );
    let many: Vec<String> = (0..101).map(|i| format!("d{i}")).collect();
    let too_many = json!({"deviceNames": many, "items": {"Switch": 1}});
    assert_refused(
        &api.post(&format!("/products/{pk}/devices:set-properties"), too_many).await,
        StatusCode::BAD_REQUEST,
        "deviceNames",
    );
    platform.stop().await;
}

// === the offline queue ===

#[tokio::test]
async fn queued_commands_survive_a_restart_and_arrive_in_order() {
    let platform = TestPlatform::start().await;
    let creds = lamp_device(&platform).await;
    let mut ids = Vec::new();
    for brightness in [10, 20, 30] {
        let body = json!({"items": {"Brightness": brightness}, "ttlMs": 600_000});
        let (status, body) = platform.api.post(&device_path(&creds, "/properties:set"), body).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        ids.push(body["messageId"].as_str().unwrap().to_owned());
    }
    let record = command_status(&platform.api, &ids[0]).await;
    assert_eq!(record["status"], "QUEUED", "{record}");
    assert!(record["expiresAt"].as_i64().is_some(), "{record}");

    let platform = platform.restart().await;
    let mut device = Device::connect(platform.mqtt_addr(), &creds).await;
    for (id, brightness) in ids.iter().zip([10, 20, 30]) {
        let message = device.next_message().await;
        assert_eq!(message.topic, creds.topic("thing/service/property/set"));
        assert_eq!(
            (message.json()["id"].as_str(), &message.json()["params"]),
            (Some(id.as_str()), &json!({"Brightness": brightness}))
        );
    }
    for id in &ids {
        status_becomes(&platform.api, id, "DELIVERED").await;
    }
    only_marker_follows(&platform.api, &mut device, &creds).await;
    platform.stop().await;
}

#[tokio::test]
async fn a_command_whose_ttl_ran_out_is_never_delivered() {
    let platform = TestPlatform::start().await;
    let creds = lamp_device(&platform).await;
    let body = json!({"items": {"Switch": 1}, "ttlMs": 200});
    let (status, body) = platform.api.post(&device_path(&creds, "/properties:set"), body).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let message_id = body["messageId"].as_str().unwrap();
    status_becomes(&platform.api, message_id, "EXPIRED").await;
    let mut device = Device::connect(platform.mqtt_addr(), &creds).await;
    only_marker_follows(&platform.api, &mut device, &creds).await;
    platform.stop().await;
}

#[tokio::test]
async fn a_full_offline_queue_is_too_many_requests() {
    let platform = TestPlatform::start().await;
    let creds = lamp_device(&platform).await;
    let set = json!({"items": {"Switch": 1}, "ttlMs": 600_000});
    for _ in 0..100 {
        let (status, body) = platform.api.post(&device_path(&creds, "/properties:set"), set.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) = platform.api.post(&device_path(&creds, "/properties:set"), set).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("TooManyRequests")), "{body}");
    platform.stop().await;
}

// === refusals ===

#[tokio::test]
async fn bad_inputs_get_a_clear_4xx() {
    let platform = TestPlatform::start().await;
    let api = &platform.api;
    let pk = lamp_product(api).await;
    let creds = register(api, &pk).await;
    let _device = Device::connect(platform.mqtt_addr(), &creds).await;
    let rrpc = device_path(&creds, "/rrpc");

    // RRPC: unknown device, bad base64, timeouts outside 1000..8000 or missing.
    let unknown = format!("/products/{pk}/devices/noSuchDevice/rrpc");
    assert_refused(&api.post(&unknown, rrpc_body(b"x", 1000)).await, StatusCode::NOT_FOUND, "noSuchDevice");
    let not_base64 = json!({"payloadBase64": "%%% not base64", "timeoutMs": 1000});
    assert_refused(&api.post(&rrpc, not_base64).await, StatusCode::BAD_REQUEST, "payloadBase64");
    for timeout in [0, 999, 8001, -5] {
        let body = json!({"payloadBase64": b64(b"x"), "timeoutMs": timeout});
        assert_refused(&api.post(&rrpc, body).await, StatusCode::BAD_REQUEST, "timeoutMs");
    }
    assert_refused(&api.post(&rrpc, json!({"payloadBase64": b64(b"x")})).await, StatusCode::BAD_REQUEST, "timeoutMs");
    let big = vec![b'x'; 256 * 1024 + 1];
    assert_refused(&api.post(&rrpc, rrpc_body(&big, 1000)).await, StatusCode::BAD_REQUEST, "payloadBase64");
    let invoke = device_path(&creds, "/services/Probe:invoke");
    assert_refused(
        &api.post(&invoke, json!({"args": {}, "timeoutMs": 9000})).await,
        StatusCode::BAD_REQUEST,
        "timeoutMs",
    );
    let unknown_action = device_path(&creds, "/services/Probe:explode");
    assert_eq!(api.post(&unknown_action, json!({"args": {}})).await.0, StatusCode::NOT_FOUND);

    // Pub: the topic must be a subscribable custom topic of the product's, of a known device.
    let messages = format!("/products/{pk}/messages");
    let publish = |topic: String, payload: &[u8]| {
        api.post(&messages, json!({"topicFullName": topic, "payloadBase64": b64(payload), "qos": 0}))
    };
    let dn = &creds.device_name;
    assert_eq!(publish(format!("/{pk}/{dn}/user/get"), b"ok").await.0, StatusCode::OK);
    // `update` is a class devices publish to (pub), not one they subscribe to.
    assert_refused(&publish(format!("/{pk}/{dn}/user/update"), b"x").await, StatusCode::BAD_REQUEST, "topicFullName");
    assert_refused(&publish(format!("/{pk}/{dn}/user/nope"), b"x").await, StatusCode::BAD_REQUEST, "topicFullName");
    assert_refused(
        &publish(format!("/sys/{pk}/{dn}/thing/service/property/set"), b"x").await,
        StatusCode::BAD_REQUEST,
        "topicFullName",
    );
    assert_refused(
        &publish(format!("/otherProduct/{dn}/user/get"), b"x").await,
        StatusCode::BAD_REQUEST,
        "topicFullName",
    );
    assert_eq!(publish(format!("/{pk}/noSuchDevice/user/get"), b"x").await.0, StatusCode::NOT_FOUND);
    assert_refused(&publish(format!("/{pk}/{dn}/user/get"), &big).await, StatusCode::BAD_REQUEST, "payloadBase64");
    let bad_qos = json!({"topicFullName": format!("/{pk}/{dn}/user/get"), "payloadBase64": b64(b"x"), "qos": 2});
    assert_refused(&api.post(&messages, bad_qos).await, StatusCode::BAD_REQUEST, "qos");
    let bad_base64 = json!({"topicFullName": format!("/{pk}/{dn}/user/get"), "payloadBase64": "***"});
    assert_refused(&api.post(&messages, bad_base64).await, StatusCode::BAD_REQUEST, "payloadBase64");

    // Broadcast: at most 64 KB, on the product's broadcast topics only.
    let broadcast = format!("/products/{pk}/broadcast");
    let over = json!({"payloadBase64": b64(&vec![b'x'; 64 * 1024 + 1])});
    assert_refused(&api.post(&broadcast, over).await, StatusCode::BAD_REQUEST, "payloadBase64");
    let wrong = json!({"payloadBase64": b64(b"x"), "topicFullName": "/broadcast/otherProduct/news"});
    assert_refused(&api.post(&broadcast, wrong).await, StatusCode::BAD_REQUEST, "topicFullName");
    assert_eq!(
        api.post("/products/noSuchProduct/broadcast", json!({"payloadBase64": ""})).await.0,
        StatusCode::NOT_FOUND
    );
    platform.stop().await;
}

#[tokio::test]
async fn another_tenant_reaches_neither_the_devices_nor_their_commands() {
    let platform = TestPlatform::start().await;
    let creds = lamp_device(&platform).await;
    let body = json!({"items": {"Switch": 1}, "ttlMs": 60_000});
    let (_, body) = platform.api.post(&device_path(&creds, "/properties:set"), body).await;
    let message_id = body["messageId"].as_str().unwrap();
    let acme = other_tenant(&platform).await;

    let (status, body) = acme.get(&format!("/commands/{message_id}")).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("NotFound")), "{body}");
    assert_eq!(acme.get(&device_path(&creds, "/commands")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(acme.post(&device_path(&creds, "/rrpc"), rrpc_body(b"x", 1000)).await.0, StatusCode::NOT_FOUND);
    let set = json!({"items": {"Switch": 1}});
    assert_eq!(acme.post(&device_path(&creds, "/properties:set"), set).await.0, StatusCode::NOT_FOUND);
    let pk = &creds.product_key;
    let publish = json!({"topicFullName": format!("/{pk}/{}/user/get", creds.device_name), "payloadBase64": ""});
    assert_eq!(acme.post(&format!("/products/{pk}/messages"), publish).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        acme.post(&format!("/products/{pk}/broadcast"), json!({"payloadBase64": ""})).await.0,
        StatusCode::NOT_FOUND
    );
    let batch = json!({"deviceNames": [creds.device_name], "items": {"Switch": 1}});
    assert_eq!(acme.post(&format!("/products/{pk}/devices:set-properties"), batch).await.0, StatusCode::NOT_FOUND);
    assert_eq!(acme.get("/commands/12345").await.0, StatusCode::NOT_FOUND);
    platform.stop().await;
}

#[tokio::test]
async fn the_openapi_document_lists_every_command_operation() {
    let platform = TestPlatform::start().await;
    let (status, document) = platform.api.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let paths = document["paths"].as_object().unwrap();
    for path in [
        "/api/v1/products/{productKey}/devices/{deviceName}/properties:set",
        "/api/v1/products/{productKey}/devices/{deviceName}/services/{identifier}:invoke",
        "/api/v1/products/{productKey}/devices/{deviceName}/rrpc",
        "/api/v1/products/{productKey}/messages",
        "/api/v1/products/{productKey}/broadcast",
        "/api/v1/products/{productKey}/devices:set-properties",
        "/api/v1/products/{productKey}/devices:invoke-service",
        "/api/v1/commands/{messageId}",
        "/api/v1/products/{productKey}/devices/{deviceName}/commands",
    ] {
        assert!(paths.contains_key(path), "{path} is not in the OpenAPI document");
    }
    platform.stop().await;
}

// === gRPC ===

/// A request with `key` in its `authorization` metadata.
fn authorized<T>(key: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

#[tokio::test]
async fn the_grpc_api_sets_properties_calls_rrpc_and_maps_errors() {
    let platform = TestPlatform::start().await;
    let (status, tenant) = platform.api.post("/tenants", json!({"name": "grpc"})).await;
    assert_eq!(status, StatusCode::CREATED, "{tenant}");
    let key = tenant["apiKey"].as_str().unwrap().to_owned();
    let api = platform.api.with_key(&key);
    let pk = lamp_product(&api).await;
    let creds = register(&api, &pk).await;
    let mut device = Device::connect(platform.mqtt_addr(), &creds).await;
    let mut client = GatewayClient::connect(format!("http://{}", platform.grpc_addr())).await.expect("grpc connects");

    // SetDeviceProperty: the device gets it; GetCommand follows it.
    let set = pb::SetDevicePropertyRequest {
        product_key: pk.clone(),
        device_name: creds.device_name.clone(),
        items_json: json!({"Brightness": 5}).to_string(),
        ttl_ms: None,
    };
    let message_id = client.set_device_property(authorized(&key, set)).await.unwrap().into_inner().message_id;
    let request = device.next_message().await;
    assert_eq!(
        (request.topic.as_str(), request.json()["id"].as_str()),
        (&*creds.topic("thing/service/property/set"), Some(&*message_id))
    );
    let reply = json!({"id": message_id, "code": 200, "data": {}, "message": "success"});
    device.publish(&creds.topic("thing/service/property/set_reply"), reply.to_string()).await;
    status_becomes(&api, &message_id, "SUCCEEDED").await;
    let get = pb::GetCommandRecordRequest { message_id: message_id.clone() };
    let record = client.get_command(authorized(&key, get)).await.unwrap().into_inner();
    assert_eq!((record.status.as_str(), record.reply_code), ("SUCCEEDED", Some(200)));
    let list = pb::ListDeviceCommandsRequest { product_key: pk.clone(), device_name: creds.device_name.clone() };
    let listed = client.list_commands(authorized(&key, list)).await.unwrap().into_inner().commands;
    assert_eq!(listed.iter().map(|c| c.message_id.as_str()).collect::<Vec<_>>(), [message_id.as_str()]);

    // RRpc: bytes both ways.
    let rrpc = pb::RRpcRequest {
        product_key: pk.clone(),
        device_name: creds.device_name.clone(),
        payload: b"ping".to_vec(),
        timeout_ms: 5000,
        topic: None,
    };
    let call = tokio::spawn({
        let (mut client, request) = (client.clone(), authorized(&key, rrpc.clone()));
        async move { client.r_rpc(request).await }
    });
    let request = device.next_message().await;
    assert_eq!(request.payload, b"ping");
    answer_rrpc(&device, &creds, rrpc_id(&request.topic), "pong").await;
    let answer = call.await.unwrap().unwrap().into_inner();
    assert_eq!((answer.rrpc_code.as_str(), answer.payload.as_deref()), ("SUCCESS", Some(&b"pong"[..])));
    assert_eq!(answer.message_id, rrpc_id(&request.topic));

    // Errors: the same kinds as REST, the field named.
    let error = client.r_rpc(authorized(&key, pb::RRpcRequest { timeout_ms: 10, ..rrpc.clone() })).await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::InvalidArgument, "{error:?}");
    assert!(error.message().contains("timeoutMs"), "{error:?}");
    let unknown = pb::RRpcRequest { device_name: "noSuchDevice".into(), ..rrpc.clone() };
    assert_eq!(client.r_rpc(authorized(&key, unknown)).await.unwrap_err().code(), tonic::Code::NotFound);
    assert_eq!(client.r_rpc(tonic::Request::new(rrpc.clone())).await.unwrap_err().code(), tonic::Code::Unauthenticated);
    assert_eq!(
        client.r_rpc(authorized("tk_wrong", rrpc.clone())).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    // Another tenant's device (the admin's tenant here) is not found, as over REST.
    let admin_creds = lamp_device(&platform).await;
    let theirs = pb::RRpcRequest {
        product_key: admin_creds.product_key.clone(),
        device_name: admin_creds.device_name.clone(),
        ..rrpc.clone()
    };
    assert_eq!(client.r_rpc(authorized(&key, theirs)).await.unwrap_err().code(), tonic::Code::NotFound);
    let bad_items = pb::SetDevicePropertyRequest {
        product_key: pk.clone(),
        device_name: creds.device_name.clone(),
        items_json: json!({"Temp": 1}).to_string(),
        ttl_ms: None,
    };
    let error = client.set_device_property(authorized(&key, bad_items)).await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    assert!(error.message().contains("items.Temp"), "{error:?}");
    let get = pb::GetCommandRecordRequest { message_id: "12345".into() };
    assert_eq!(client.get_command(authorized(&key, get)).await.unwrap_err().code(), tonic::Code::NotFound);

    // The thing reads.
    let status_request =
        pb::QueryDevicePropertyStatusRequest { product_key: pk.clone(), device_name: creds.device_name.clone() };
    let latest = client.query_device_property_status(authorized(&key, status_request)).await.unwrap().into_inner();
    assert!(latest.properties.is_empty(), "{latest:?}");
    let shadow = pb::GetDeviceShadowRequest { product_key: pk.clone(), device_name: creds.device_name.clone() };
    assert_eq!(client.get_device_shadow(authorized(&key, shadow)).await.unwrap_err().code(), tonic::Code::NotFound);
    platform.stop().await;
}

#[tokio::test]
async fn the_grpc_api_invokes_publishes_broadcasts_and_batches() {
    let platform = TestPlatform::start().await;
    let api = &platform.api;
    let pk = lamp_product(api).await;
    let creds = register(api, &pk).await;
    let mut device = Device::connect(platform.mqtt_addr(), &creds).await;
    let topic = format!("/{pk}/{}/user/get", creds.device_name);
    assert_eq!(device.subscribe(&[&topic]).await, [true]);
    let key = api.key().to_owned();
    let mut client = GatewayClient::connect(format!("http://{}", platform.grpc_addr())).await.expect("grpc connects");

    let invoke = pb::InvokeThingServiceRequest {
        product_key: pk.clone(),
        device_name: creds.device_name.clone(),
        identifier: "Blink".into(),
        args_json: json!({"times": 2}).to_string(),
        timeout_ms: None,
        ttl_ms: None,
    };
    let answer = client.invoke_thing_service(authorized(&key, invoke)).await.unwrap().into_inner();
    assert_eq!(answer.rrpc_code, None, "an async service has no rrpc code");
    let request = device.next_message().await;
    assert_eq!(request.topic, creds.topic("thing/service/Blink"));
    assert_eq!(request.json()["id"].as_str(), Some(answer.message_id.as_str()));

    let publish =
        pb::PubRequest { product_key: pk.clone(), topic_full_name: topic.clone(), payload: b"hi".to_vec(), qos: 1 };
    client.r#pub(authorized(&key, publish)).await.unwrap();
    let message = device.next_message().await;
    assert_eq!((message.topic, message.payload), (topic, b"hi".to_vec()));

    let broadcast =
        pb::PubBroadcastRequest { product_key: pk.clone(), payload: b"all".to_vec(), topic_full_name: None };
    let message_id = client.pub_broadcast(authorized(&key, broadcast)).await.unwrap().into_inner().message_id;
    let message = device.next_message().await;
    assert_eq!(
        (message.topic, message.payload),
        (creds.topic(&format!("broadcast/request/{message_id}")), b"all".to_vec())
    );

    let batch = pb::SetDevicesPropertyRequest {
        product_key: pk.clone(),
        device_names: vec![creds.device_name.clone(), "noSuchDevice".into()],
        items_json: json!({"Switch": 0}).to_string(),
        ttl_ms: None,
    };
    let results = client.set_devices_property(authorized(&key, batch)).await.unwrap().into_inner().results;
    assert_eq!(results[1].code.as_deref(), Some("NotFound"), "{results:?}");
    let message = device.next_message().await;
    assert_eq!(message.json()["id"].as_str(), results[0].message_id.as_deref());

    let batch = pb::InvokeThingsServiceRequest {
        product_key: pk.clone(),
        device_names: (0..101).map(|i| format!("d{i}")).collect(),
        identifier: "Blink".into(),
        args_json: String::new(),
        ttl_ms: None,
    };
    let error = client.invoke_things_service(authorized(&key, batch)).await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    assert!(error.message().contains("deviceNames"), "{error:?}");
    platform.stop().await;
}
