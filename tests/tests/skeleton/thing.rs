//! The thing model as devices see it (issue 4): validated property and event posts, latest
//! properties, tags, desired properties, TSL fetch, history and pack posts, NTP and the device
//! shadow, and what a restart keeps.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tether_tests::{Device, DeviceCredentials, TestPlatform, eventually};

const POST: &str = "thing/event/property/post";

/// A thermostat: a bounded int, an enum, a short text, a read-write bool; an alert event; a service.
fn thermostat() -> Value {
    json!({
        "properties": [
            { "identifier": "Temp", "name": "temperature", "accessMode": "r",
              "dataType": { "type": "int", "specs": { "min": "-20", "max": "60", "step": "1" } } },
            { "identifier": "Mode", "name": "mode", "accessMode": "rw",
              "dataType": { "type": "enum", "specs": { "0": "off", "1": "heat", "2": "cool" } } },
            { "identifier": "Label", "name": "label", "accessMode": "rw",
              "dataType": { "type": "text", "specs": { "length": "8" } } },
            { "identifier": "Power", "name": "power", "accessMode": "rw",
              "dataType": { "type": "bool", "specs": { "0": "off", "1": "on" } } }
        ],
        "events": [
            { "identifier": "Overheat", "name": "overheat", "type": "alert",
              "outputData": [ { "identifier": "level", "name": "level",
                                "dataType": { "type": "int", "specs": { "min": "1", "max": "3" } } } ] }
        ],
        "services": [
            { "identifier": "Reboot", "name": "reboot", "callType": "async", "inputData": [], "outputData": [] }
        ]
    })
}

/// A device of a product that has the thermostat thing model.
async fn thermostat_device(platform: &TestPlatform) -> DeviceCredentials {
    let pk = platform.create_product().await;
    let (status, body) = platform.api.put(&format!("/products/{pk}/thing-model"), thermostat()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    platform.register_device(&pk).await
}

fn device_path(creds: &DeviceCredentials, suffix: &str) -> String {
    format!("/products/{}/devices/{}{suffix}", creds.product_key, creds.device_name)
}

fn post(id: &str, params: Value) -> Vec<u8> {
    json!({"id": id, "version": "1.0", "params": params, "method": "thing.event.property.post"})
        .to_string()
        .into_bytes()
}

/// Waits until the latest properties satisfy `check`.
async fn latest_properties(
    platform: &TestPlatform,
    creds: &DeviceCredentials,
    check: impl Fn(&Value) -> bool,
) -> Value {
    eventually("latest properties", Duration::from_secs(10), || async {
        let (status, body) = platform.api.get(&device_path(creds, "/properties")).await;
        (status == StatusCode::OK && check(&body["items"])).then_some(body["items"].clone())
    })
    .await
}

#[tokio::test]
async fn property_posts_are_validated_against_the_thing_model() {
    let platform = TestPlatform::start().await;
    let creds = thermostat_device(&platform).await;
    let mut device = Device::connect(platform.mqtt_addr(), &creds).await;

    let reply = device.request(&creds, POST, &post("1", json!({"Temp": 75}))).await;
    assert_eq!((reply["id"].as_str(), reply["code"].as_i64()), (Some("1"), Some(460)), "{reply}");
    assert!(reply["message"].as_str().unwrap().starts_with("Temp"), "{reply}");

    let reply = device.request(&creds, POST, &post("2", json!({"Mode": "heat"}))).await;
    assert_eq!(reply["code"], 460, "{reply}");
    assert!(reply["message"].as_str().unwrap().contains("Mode"), "{reply}");

    let reply = device.request(&creds, POST, &post("3", json!({"Label": "much too long"}))).await;
    assert_eq!(reply["code"], 460, "{reply}");
    assert!(reply["message"].as_str().unwrap().contains("Label"), "{reply}");

    // Plain and {value, time} values; an unknown property is dropped and the post still succeeds.
    let reply = device
        .request(
            &creds,
            POST,
            &post("4", json!({"Temp": {"value": 21, "time": 1_700_000_000_000_i64}, "Mode": 1, "Bogus": 5})),
        )
        .await;
    assert_eq!((reply["code"].as_i64(), reply["message"].as_str()), (Some(200), Some("success")), "{reply}");
    let items = latest_properties(&platform, &creds, |items| items.get("Mode").is_some()).await;
    assert_eq!(items["Temp"], json!({"value": 21, "time": 1_700_000_000_000_i64}));
    assert_eq!(items["Mode"]["value"], 1);
    assert!(items.get("Bogus").is_none(), "{items}");
    platform.stop().await;
}

#[tokio::test]
async fn a_product_without_a_thing_model_accepts_any_property() {
    let platform = TestPlatform::start().await;
    let creds = platform.device().await;
    let mut device = Device::connect(platform.mqtt_addr(), &creds).await;
    let reply = device.request(&creds, POST, &post("1", json!({"Anything": [1, 2], "Temp": 999}))).await;
    assert_eq!(reply["code"], 200, "{reply}");
    let items = latest_properties(&platform, &creds, |items| items.get("Temp").is_some()).await;
    assert_eq!(items["Anything"]["value"], json!([1, 2]));
    platform.stop().await;
}

#[tokio::test]
async fn an_older_post_never_overwrites_a_newer_value() {
    let platform = TestPlatform::start().await;
    let creds = thermostat_device(&platform).await;
    let mut device = Device::connect(platform.mqtt_addr(), &creds).await;
    let newer = json!({"Temp": {"value": 30, "time": 1_700_000_002_000_i64}});
    let older = json!({"Temp": {"value": 10, "time": 1_700_000_001_000_i64}, "Power": {"value": 1, "time": 1_700_000_001_000_i64}});
    assert_eq!(device.request(&creds, POST, &post("1", newer)).await["code"], 200);
    assert_eq!(device.request(&creds, POST, &post("2", older)).await["code"], 200);
    let items = latest_properties(&platform, &creds, |items| items.get("Power").is_some()).await;
    assert_eq!(items["Temp"], json!({"value": 30, "time": 1_700_000_002_000_i64}));
    platform.stop().await;
}

#[tokio::test]
async fn a_changed_thing_model_reaches_the_edge() {
    let platform = TestPlatform::start().await;
    let creds = thermostat_device(&platform).await;
    let mut device = Device::connect(platform.mqtt_addr(), &creds).await;
    assert_eq!(device.request(&creds, POST, &post("1", json!({"Temp": 50}))).await["code"], 200);

    let mut narrower = thermostat();
    narrower["properties"][0]["dataType"]["specs"]["max"] = json!("40");
    let (status, body) = platform.api.put(&format!("/products/{}/thing-model", creds.product_key), narrower).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The edge drops its cached copy when told; allow the announcement a moment to arrive.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    for id in 2.. {
        let reply = device.request(&creds, POST, &post(&id.to_string(), json!({"Temp": 50}))).await;
        if reply["code"] == 460 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the new thing model was not applied: {reply}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    platform.stop().await;
}

#[tokio::test]
async fn events_are_validated_replied_and_forwarded() {
    let platform = TestPlatform::start().await;
    let creds = thermostat_device(&platform).await;
    let mut events = platform.bus().consume("test-events", "tether.up.*.*.*.event").await.unwrap();
    let mut device = Device::connect(platform.mqtt_addr(), &creds).await;
    let suffix = "thing/event/Overheat/post";

    let bad = json!({"id": "1", "params": {"value": {"level": 9}, "time": 1_700_000_000_000_i64}, "method": "thing.event.Overheat.post"});
    let reply = device.request(&creds, suffix, bad.to_string().as_bytes()).await;
    assert_eq!(reply["code"], 460, "{reply}");
    assert!(reply["message"].as_str().unwrap().contains("level"), "{reply}");

    let unknown = json!({"id": "2", "params": {"value": {}}, "method": "thing.event.Nope.post"});
    let reply = device.request(&creds, "thing/event/Nope/post", unknown.to_string().as_bytes()).await;
    assert_eq!(reply["code"], 460, "{reply}");

    let good = json!({"id": "3", "params": {"value": {"level": 2}, "time": 1_700_000_000_000_i64}, "method": "thing.event.Overheat.post"});
    let reply = device.request(&creds, suffix, good.to_string().as_bytes()).await;
    assert_eq!((reply["id"].as_str(), reply["code"].as_i64()), (Some("3"), Some(200)), "{reply}");
    assert_eq!(reply["method"], "thing.event.Overheat.post");

    let delivery = tokio::time::timeout(Duration::from_secs(5), events.next()).await.unwrap().unwrap();
    let event: Value = serde_json::from_slice(&delivery.message.payload).unwrap();
    assert_eq!(event["identifier"], "Overheat");
    assert_eq!(event["type"], "alert");
    assert_eq!(event["name"], "overheat");
    assert_eq!(event["value"], json!({"level": 2}));
    assert_eq!(event["time"], 1_700_000_000_000_i64);
    assert_eq!(event["deviceName"], creds.device_name.as_str());
    assert_eq!(
        delivery.message.headers["topic"],
        format!("/{}/{}/thing/event/Overheat/post", creds.product_key, creds.device_name)
    );
    delivery.ack().await.unwrap();
    platform.stop().await;
}

#[tokio::test]
async fn tags_are_kept_and_shown_in_the_device_api() {
    let platform = TestPlatform::start().await;
    let creds = platform.device().await;
    let mut device = Device::connect(platform.mqtt_addr(), &creds).await;

    let update = json!({"id": "1", "params": [{"attrKey": "room", "attrValue": "kitchen"}, {"attrKey": "floor", "attrValue": "2"}], "method": "thing.deviceinfo.update"});
    let reply = device.request(&creds, "thing/deviceinfo/update", update.to_string().as_bytes()).await;
    assert_eq!((reply["id"].as_str(), reply["code"].as_i64()), (Some("1"), Some(200)), "{reply}");
    for key in ["id", "code", "data", "message"] {
        assert!(reply.get(key).is_some(), "reply lacks {key}: {reply}");
    }

    let bad = json!({"id": "2", "params": [{"attrKey": "9lives", "attrValue": "x"}]});
    let reply = device.request(&creds, "thing/deviceinfo/update", bad.to_string().as_bytes()).await;
    assert_eq!(reply["code"], 460, "{reply}");
    assert!(reply["message"].as_str().unwrap().contains("attrKey"), "{reply}");

    let delete = json!({"id": "3", "params": [{"attrKey": "floor"}], "method": "thing.deviceinfo.delete"});
    let reply = device.request(&creds, "thing/deviceinfo/delete", delete.to_string().as_bytes()).await;
    assert_eq!(reply["code"], 200, "{reply}");

    let (status, body) = platform.api.get(&device_path(&creds, "")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["tags"], json!([{"attrKey": "room", "attrValue": "kitchen"}]));
    platform.stop().await;
}

#[tokio::test]
async fn desired_properties_are_read_and_cleared_by_the_device() {
    let platform = TestPlatform::start().await;
    let creds = thermostat_device(&platform).await;
    let path = device_path(&creds, "/desired-properties");
    let (status, body) = platform.api.put(&path, json!({"items": {"Mode": 2, "Label": "eco"}})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = platform.api.put(&path, json!({"items": {"Mode": 1}})).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let mut device = Device::connect(platform.mqtt_addr(), &creds).await;
    let get = json!({"id": "1", "params": ["Mode", "Label"], "method": "thing.property.desired.get"});
    let reply = device.request(&creds, "thing/property/desired/get", get.to_string().as_bytes()).await;
    assert_eq!(reply["code"], 200, "{reply}");
    assert_eq!(reply["data"]["Mode"], json!({"value": 1, "version": 2}));
    assert_eq!(reply["data"]["Label"], json!({"value": "eco", "version": 1}));

    // A stale version leaves the value; a matching one clears it.
    let delete = json!({"id": "2", "params": {"Mode": {"version": 1}, "Label": {"version": 1}}, "method": "thing.property.desired.delete"});
    let reply = device.request(&creds, "thing/property/desired/delete", delete.to_string().as_bytes()).await;
    assert_eq!(reply["code"], 200, "{reply}");
    let reply = device.request(&creds, "thing/property/desired/get", get.to_string().as_bytes()).await;
    assert_eq!(reply["data"], json!({"Mode": {"value": 1, "version": 2}}), "{reply}");
    platform.stop().await;
}

#[tokio::test]
async fn a_device_fetches_its_thing_model() {
    let platform = TestPlatform::start().await;
    let creds = thermostat_device(&platform).await;
    let mut device = Device::connect(platform.mqtt_addr(), &creds).await;
    let get = json!({"id": "1", "params": {}, "method": "thing.dsltemplate.get"});
    let reply = device.request(&creds, "thing/dsltemplate/get", get.to_string().as_bytes()).await;
    assert_eq!(reply["code"], 200, "{reply}");
    let identifiers: Vec<&str> =
        reply["data"]["properties"].as_array().unwrap().iter().map(|p| p["identifier"].as_str().unwrap()).collect();
    assert_eq!(identifiers, ["Temp", "Mode", "Label", "Power"]);
    assert_eq!(reply["data"]["events"][0]["identifier"], "Overheat");
    assert_eq!(reply["data"]["profile"]["productKey"], creds.product_key.as_str());
    platform.stop().await;
}

#[tokio::test]
async fn history_and_pack_posts_backfill_with_device_times() {
    let platform = TestPlatform::start().await;
    let creds = thermostat_device(&platform).await;
    let mut device = Device::connect(platform.mqtt_addr(), &creds).await;
    let identity = json!({"productKey": creds.product_key, "deviceName": creds.device_name});

    let history = json!({"id": "1", "method": "thing.event.property.history.post", "params": [{
        "identity": identity,
        "properties": [{"Temp": {"value": 12, "time": 1_600_000_000_000_i64}}, {"Temp": {"value": 14, "time": 1_600_000_060_000_i64}}],
        "events": [{"Overheat": {"value": {"level": 1}, "time": 1_600_000_030_000_i64}}]
    }]});
    let reply = device.request(&creds, "thing/event/property/history/post", history.to_string().as_bytes()).await;
    assert_eq!(reply["code"], 200, "{reply}");
    // Each backfilled value is its own bus message: wait for the newest, then check it stays.
    latest_properties(&platform, &creds, |items| items["Temp"]["time"] == 1_600_000_060_000_i64).await;

    let bad =
        json!({"id": "2", "params": [{"identity": identity, "properties": [{"Temp": {"value": 99, "time": 1}}]}]});
    let reply = device.request(&creds, "thing/event/property/history/post", bad.to_string().as_bytes()).await;
    assert_eq!(reply["code"], 460, "{reply}");
    assert!(reply["message"].as_str().unwrap().starts_with("params[0].Temp"), "{reply}");

    let pack = json!({"id": "3", "method": "thing.event.property.pack.post", "params": {
        "properties": {"Power": {"value": 1, "time": 1_700_000_000_000_i64}},
        "events": {"Overheat": {"value": {"level": 3}, "time": 1_700_000_000_000_i64}}
    }});
    let reply = device.request(&creds, "thing/event/property/pack/post", pack.to_string().as_bytes()).await;
    assert_eq!(reply["code"], 200, "{reply}");
    let items = latest_properties(&platform, &creds, |items| items.get("Power").is_some()).await;
    assert_eq!(items["Power"], json!({"value": 1, "time": 1_700_000_000_000_i64}));
    assert_eq!(items["Temp"], json!({"value": 14, "time": 1_600_000_060_000_i64}), "a rejected post changed nothing");
    platform.stop().await;
}

#[tokio::test]
async fn ntp_times_let_the_device_compute_the_clock() {
    let platform = TestPlatform::start().await;
    let creds = platform.device().await;
    let mut device = Device::connect(platform.mqtt_addr(), &creds).await;
    let (pk, dn) = (&creds.product_key, &creds.device_name);
    let sent = tether_contract::now_ms();
    device
        .publish(&format!("/ext/ntp/{pk}/{dn}/request"), json!({"deviceSendTime": sent.to_string()}).to_string())
        .await;
    let response = device.next_message().await;
    let received = tether_contract::now_ms();
    let body = response.json();
    assert_eq!(body["deviceSendTime"], sent.to_string());
    let server_recv: i64 = body["serverRecvTime"].as_str().unwrap().parse().unwrap();
    let server_send: i64 = body["serverSendTime"].as_str().unwrap().parse().unwrap();
    // Aliyun's formula: the device's clock ≈ (serverRecvTime + serverSendTime + deviceRecvTime − deviceSendTime) / 2.
    let estimate = (server_recv + server_send + received - sent) / 2;
    assert!((sent..=received).contains(&server_recv) && server_recv <= server_send, "{body}");
    assert!((estimate - received).abs() <= received - sent, "estimate {estimate}, now {received}");
    platform.stop().await;
}

#[tokio::test]
async fn the_shadow_keeps_versions_and_pushes_desired_state() {
    let platform = TestPlatform::start().await;
    let creds = platform.device().await;
    let mut device = Device::connect(platform.mqtt_addr(), &creds).await;
    let (pk, dn) = (creds.product_key.clone(), creds.device_name.clone());
    let update_topic = format!("/shadow/update/{pk}/{dn}");
    let get_topic = format!("/shadow/get/{pk}/{dn}");

    let update = json!({"method": "update", "state": {"reported": {"color": "red", "levels": [1, 2]}}, "version": 1});
    device.publish(&update_topic, update.to_string()).await;
    let reply = device.next_message().await;
    assert_eq!(reply.topic, get_topic);
    assert_eq!(reply.json()["payload"], json!({"status": "success", "version": 1}));

    // The same version again is refused; the stored document stays.
    device.publish(&update_topic, update.to_string()).await;
    let reply = device.next_message().await.json();
    assert_eq!(reply["payload"]["status"], "error", "{reply}");
    assert_eq!(reply["payload"]["content"]["errorcode"], "403", "{reply}");

    let update = json!({"method": "update", "state": {"reported": {"levels": [3]}}, "version": 2});
    device.publish(&update_topic, update.to_string()).await;
    assert_eq!(device.next_message().await.json()["payload"]["status"], "success");
    device.publish(&update_topic, json!({"method": "get"}).to_string()).await;
    let reply = device.next_message().await.json();
    assert_eq!(reply["payload"]["state"]["reported"], json!({"color": "red", "levels": [3]}), "{reply}");
    assert_eq!(reply["version"], 2);

    // The cloud sets desired state: the online device gets a control push.
    let path = format!("/products/{pk}/devices/{dn}/shadow");
    let (status, body) = platform
        .api
        .put(&path, json!({"method": "update", "state": {"desired": {"color": "green"}}, "version": 3}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let push = device.next_message().await;
    assert_eq!(push.topic, get_topic);
    let push = push.json();
    assert_eq!(push["method"], "control");
    assert_eq!(push["payload"]["state"]["desired"], json!({"color": "green"}));
    assert_eq!(push["version"], 3);
    platform.stop().await;
}

#[tokio::test]
async fn concurrent_shadow_writers_never_both_win() {
    let platform = TestPlatform::start().await;
    let creds = platform.device().await;
    let path = device_path(&creds, "/shadow");
    // Ten writers race with the same version: exactly one is accepted, each round.
    for version in 1..=3 {
        let writes = (0..10).map(|i| {
            let api = platform.api.clone();
            let path = path.clone();
            async move {
                api.put(&path, json!({"method": "update", "state": {"desired": {"writer": i}}, "version": version}))
                    .await
            }
        });
        let results = futures::future::join_all(writes).await;
        let winners: Vec<_> = results.iter().filter(|(status, _)| *status == StatusCode::OK).collect();
        assert_eq!(winners.len(), 1, "round {version}: {results:?}");
        let losers = results.iter().filter(|(status, body)| {
            *status == StatusCode::BAD_REQUEST && body["message"].as_str().unwrap_or_default().contains("version")
        });
        assert_eq!(losers.count(), 9, "round {version}: {results:?}");
        let (_, document) = platform.api.get(&path).await;
        assert_eq!(document["version"], version);
        assert_eq!(document["state"]["desired"]["writer"], winners[0].1["state"]["desired"]["writer"]);
    }
    platform.stop().await;
}

#[tokio::test]
async fn a_restart_keeps_thing_models_tags_properties_and_shadows() {
    let platform = TestPlatform::start().await;
    let creds = thermostat_device(&platform).await;
    let mut device = Device::connect(platform.mqtt_addr(), &creds).await;
    assert_eq!(device.request(&creds, POST, &post("1", json!({"Temp": 22}))).await["code"], 200);
    let update = json!({"id": "2", "params": [{"attrKey": "room", "attrValue": "hall"}]});
    assert_eq!(device.request(&creds, "thing/deviceinfo/update", update.to_string().as_bytes()).await["code"], 200);
    let shadow = json!({"method": "update", "state": {"reported": {"on": true}}, "version": 5});
    device.publish(&format!("/shadow/update/{}/{}", creds.product_key, creds.device_name), shadow.to_string()).await;
    assert_eq!(device.next_message().await.json()["payload"]["status"], "success");
    latest_properties(&platform, &creds, |items| items.get("Temp").is_some()).await;
    device.disconnect().await;

    let platform = platform.restart().await;
    let (status, model) = platform.api.get(&format!("/products/{}/thing-model", creds.product_key)).await;
    assert_eq!(status, StatusCode::OK, "{model}");
    assert_eq!(model["properties"][0]["identifier"], "Temp");
    let (_, body) = platform.api.get(&device_path(&creds, "")).await;
    assert_eq!(body["tags"], json!([{"attrKey": "room", "attrValue": "hall"}]));
    let (_, body) = platform.api.get(&device_path(&creds, "/properties")).await;
    assert_eq!(body["items"]["Temp"]["value"], 22);
    let (_, body) = platform.api.get(&device_path(&creds, "/shadow")).await;
    assert_eq!((body["version"].as_i64(), &body["state"]["reported"]), (Some(5), &json!({"on": true})));

    // The thing model still validates after the restart.
    let mut device = Device::connect(platform.mqtt_addr(), &creds).await;
    assert_eq!(device.request(&creds, POST, &post("3", json!({"Temp": 500}))).await["code"], 460);
    platform.stop().await;
}

#[tokio::test]
async fn a_device_or_product_created_again_starts_empty() {
    let platform = TestPlatform::start().await;
    let creds = thermostat_device(&platform).await;
    let mut device = Device::connect(platform.mqtt_addr(), &creds).await;
    assert_eq!(device.request(&creds, POST, &post("1", json!({"Temp": 22}))).await["code"], 200);
    let update = json!({"id": "2", "params": [{"attrKey": "room", "attrValue": "hall"}]});
    assert_eq!(device.request(&creds, "thing/deviceinfo/update", update.to_string().as_bytes()).await["code"], 200);
    latest_properties(&platform, &creds, |items| items.get("Temp").is_some()).await;
    let (status, body) = platform.api.delete(&device_path(&creds, "")).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    device.closed().await;

    let path = format!("/products/{}/devices", creds.product_key);
    let (status, body) = platform.api.post(&path, json!({"deviceName": creds.device_name})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    eventually("the old device's records removed", Duration::from_secs(10), || async {
        let (_, properties) = platform.api.get(&device_path(&creds, "/properties")).await;
        let (_, device) = platform.api.get(&device_path(&creds, "")).await;
        (properties["items"] == json!({}) && device["tags"] == json!([])).then_some(())
    })
    .await;

    let (status, body) = platform.api.delete(&device_path(&creds, "")).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = platform.api.delete(&format!("/products/{}", creds.product_key)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) =
        platform.api.post("/products", json!({"name": "again", "productKey": creds.product_key})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    eventually("the old product's thing model removed", Duration::from_secs(10), || async {
        let (status, _) = platform.api.get(&format!("/products/{}/thing-model", creds.product_key)).await;
        (status == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    platform.stop().await;
}

#[tokio::test]
async fn a_time_far_in_the_future_is_refused() {
    let platform = TestPlatform::start().await;
    let creds = thermostat_device(&platform).await;
    let mut device = Device::connect(platform.mqtt_addr(), &creds).await;
    let future = tether_contract::now_ms() + 3_600_000;
    let reply = device.request(&creds, POST, &post("1", json!({"Temp": {"value": 20, "time": future}}))).await;
    assert_eq!(reply["code"], 460, "{reply}");
    assert!(reply["message"].as_str().unwrap().starts_with("Temp.time"), "{reply}");
    // The value that follows is kept: nothing from the future holds it back.
    let reply = device.request(&creds, POST, &post("2", json!({"Temp": 21}))).await;
    assert_eq!(reply["code"], 200, "{reply}");
    let items = latest_properties(&platform, &creds, |items| items.get("Temp").is_some()).await;
    assert_eq!(items["Temp"]["value"], 21);
    platform.stop().await;
}
