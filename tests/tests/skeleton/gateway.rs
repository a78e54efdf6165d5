//! Gateways and their sub-devices (issue 4 item 7): topology proved by each sub-device's sign,
//! sub-device logins through the gateway's connection, uplinks, replies and downlinks on the
//! sub-devices' own topics, and their presence following the gateway's.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tether_model::{SignMethod, SignParams};
use tether_tests::{Device, DeviceCredentials, TestPlatform, eventually};

const SOON: Duration = Duration::from_secs(10);
const POST: &str = "thing/event/property/post";

/// A gateway and two sub-devices of a product whose thing model bounds `Temp` to -20..60.
pub(crate) struct Site {
    pub gateway: DeviceCredentials,
    pub subs: [DeviceCredentials; 2],
}

pub(crate) async fn site(platform: &TestPlatform) -> Site {
    let (status, body) = platform.api.post("/products", json!({"name": "gateway", "nodeType": "gateway"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let gateway = platform.register_device(body["productKey"].as_str().unwrap()).await;
    let sensor = platform.create_product().await;
    let model = json!({"properties": [{"identifier": "Temp", "name": "temperature", "accessMode": "r",
        "dataType": {"type": "int", "specs": {"min": "-20", "max": "60"}}}]});
    let (status, body) = platform.api.put(&format!("/products/{sensor}/thing-model"), model).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let subs = [platform.register_device(&sensor).await, platform.register_device(&sensor).await];
    Site { gateway, subs }
}

/// A sub-device's identity and sign, as a gateway SDK sends it (`method` omitted, as gateways do).
fn signed(sub: &DeviceCredentials, method: SignMethod, secret: &str) -> Value {
    let client_id = format!("{}.{}", sub.product_key, sub.device_name);
    let params = SignParams {
        client_id: &client_id,
        device_name: &sub.device_name,
        product_key: &sub.product_key,
        timestamp: Some("1700000000000"),
    };
    json!({
        "productKey": sub.product_key,
        "deviceName": sub.device_name,
        "clientId": client_id,
        "timestamp": "1700000000000",
        "signmethod": method.as_str(),
        "sign": method.sign(secret, &params).to_ascii_lowercase(),
    })
}

pub(crate) fn sign(sub: &DeviceCredentials) -> Value {
    signed(sub, SignMethod::HmacSha256, &sub.device_secret)
}

pub(crate) fn request(id: &str, params: Value) -> Vec<u8> {
    json!({"id": id, "version": "1.0", "params": params}).to_string().into_bytes()
}

pub(crate) fn session_topic(gateway: &DeviceCredentials, path: &str) -> String {
    format!("/ext/session/{}/{}/{path}", gateway.product_key, gateway.device_name)
}

/// Publishes on `topic` and returns the reply on `topic_reply`.
pub(crate) async fn ask(device: &mut Device, topic: &str, body: Vec<u8>) -> Value {
    device.publish(topic, body).await;
    let reply = device.next_message().await;
    assert_eq!(reply.topic, format!("{topic}_reply"));
    reply.json()
}

pub(crate) async fn status_becomes(platform: &TestPlatform, device: &DeviceCredentials, wanted: &str) {
    eventually(&format!("{} {wanted}", device.device_name), SOON, || async {
        (platform.status(device).await.0 == wanted).then_some(())
    })
    .await;
}

fn identity(device: &DeviceCredentials) -> Value {
    json!({"productKey": device.product_key, "deviceName": device.device_name})
}

#[tokio::test]
async fn a_gateway_brings_its_sub_devices_online_and_speaks_for_them() {
    let platform = TestPlatform::start().await;
    let Site { gateway, subs } = site(&platform).await;
    let mut gw = Device::connect(platform.mqtt_addr(), &gateway).await;

    // A sign made with the wrong secret is refused, and nothing is attached.
    let bad = signed(&subs[0], SignMethod::HmacSha1, "not-the-secret");
    let reply = gw.request(&gateway, "thing/topo/add", &request("1", json!([bad, sign(&subs[1])]))).await;
    assert_eq!((reply["id"].as_str(), reply["code"].as_i64()), (Some("1"), Some(401)), "{reply}");

    let both = json!([signed(&subs[0], SignMethod::HmacSha1, &subs[0].device_secret), sign(&subs[1])]);
    let reply = gw.request(&gateway, "thing/topo/add", &request("2", both)).await;
    assert_eq!(reply["code"], 200, "{reply}");
    assert_eq!(reply["data"], json!([identity(&subs[0]), identity(&subs[1])]));
    let reply = gw.request(&gateway, "thing/topo/get", &request("3", json!({}))).await;
    assert_eq!(reply["data"].as_array().map(Vec::len), Some(2), "{reply}");
    let path = format!("/products/{}/devices/{}/sub-devices", gateway.product_key, gateway.device_name);
    let (status, body) = platform.api.get(&path).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let names: Vec<&str> =
        body["items"].as_array().unwrap().iter().map(|i| i["deviceName"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 2);
    assert!(subs.iter().all(|s| names.contains(&s.device_name.as_str())), "{body}");
    assert!(body["items"][0]["iotId"].as_str().is_some_and(|i| !i.is_empty()), "{body}");
    let (_, doc) = platform.api.with_key("").get("/openapi.json").await;
    assert!(doc["paths"]["/api/v1/products/{productKey}/devices/{deviceName}/sub-devices"]["get"].is_object());

    // One logs in alone, the other in a batch (the Python SDK's shape: one signMethod for all).
    let mut login = sign(&subs[0]);
    login["signMethod"] = json!("hmacSha256");
    let reply = ask(&mut gw, &session_topic(&gateway, "combine/login"), request("4", login)).await;
    assert_eq!((reply["code"].as_i64(), &reply["data"]), (Some(200), &identity(&subs[0])), "{reply}");
    let mut batch_item = sign(&subs[1]);
    batch_item.as_object_mut().unwrap().remove("signmethod");
    let batch = json!({"signMethod": "HMACSHA256", "deviceList": [batch_item]});
    let reply = ask(&mut gw, &session_topic(&gateway, "combine/batch_login"), request("5", batch)).await;
    assert_eq!((reply["code"].as_i64(), &reply["data"]), (Some(200), &json!([identity(&subs[1])])), "{reply}");
    for sub in &subs {
        status_becomes(&platform, sub, "ONLINE").await;
    }

    // Each posts through the gateway's connection on its own topics, checked against its own
    // product's thing model; the replies come back on its reply topic.
    let reply = gw.request(&subs[0], POST, &request("6", json!({"Temp": 75}))).await;
    assert_eq!(reply["code"], 460, "{reply}");
    for (i, sub) in subs.iter().enumerate() {
        let reply = gw.request(sub, POST, &request(&format!("7{i}"), json!({"Temp": 20 + i}))).await;
        assert_eq!(reply["code"], 200, "{reply}");
    }
    for (i, sub) in subs.iter().enumerate() {
        let path = format!("/products/{}/devices/{}/properties", sub.product_key, sub.device_name);
        eventually("sub-device properties", SOON, || async {
            let (status, body) = platform.api.get(&path).await;
            (status == StatusCode::OK && body["items"]["Temp"]["value"] == json!(20 + i)).then_some(())
        })
        .await;
    }

    // Downlinks for a sub-device reach it through the gateway.
    let shadow = format!("/products/{}/devices/{}/shadow", subs[1].product_key, subs[1].device_name);
    let desired = json!({"method": "update", "state": {"desired": {"Temp": 30}}, "version": 1});
    let (status, body) = platform.api.put(&shadow, desired).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let push = gw.next_message().await;
    assert_eq!(push.topic, format!("/shadow/get/{}/{}", subs[1].product_key, subs[1].device_name));
    assert_eq!(push.json()["method"], "control");

    // Logging one out takes it offline; its topics are closed to the gateway again.
    let logout = request("8", identity(&subs[0]));
    let reply = ask(&mut gw, &session_topic(&gateway, "combine/logout"), logout).await;
    assert_eq!((reply["code"].as_i64(), &reply["data"]), (Some(200), &identity(&subs[0])), "{reply}");
    status_becomes(&platform, &subs[0], "OFFLINE").await;
    gw.publish(&subs[0].topic(POST), request("9", json!({"Temp": 1}))).await;
    assert!(gw.next_message_within(Duration::from_millis(300)).await.is_none(), "a logged-out sub-device got a reply");
    assert_eq!(platform.status(&subs[1]).await.0, "ONLINE");

    // The gateway's connection ending takes the other one offline.
    gw.disconnect().await;
    status_becomes(&platform, &subs[1], "OFFLINE").await;
    status_becomes(&platform, &gateway, "OFFLINE").await;
    platform.stop().await;
}

#[tokio::test]
async fn gateway_requests_are_refused_with_alink_codes() {
    let platform = TestPlatform::start().await;
    let Site { gateway, subs } = site(&platform).await;
    let mut gw = Device::connect(platform.mqtt_addr(), &gateway).await;
    let login_topic = session_topic(&gateway, "combine/login");
    let with_method = |mut sign: Value| {
        sign["signMethod"] = json!("hmacsha256");
        sign
    };

    // No topology relation yet.
    let reply = ask(&mut gw, &login_topic, request("1", with_method(sign(&subs[0])))).await;
    assert_eq!((reply["id"].as_str(), reply["code"].as_i64()), (Some("1"), Some(6401)), "{reply}");
    assert_eq!(reply["data"], identity(&subs[0]));
    // The gateway is not its own sub-device.
    let reply = gw.request(&gateway, "thing/topo/add", &request("2", json!([sign(&gateway)]))).await;
    assert_eq!(reply["code"], 6402, "{reply}");
    // A device that does not exist, a malformed name, bad params.
    let mut ghost = sign(&subs[0]);
    ghost["deviceName"] = json!("ghost");
    let reply = gw.request(&gateway, "thing/topo/add", &request("3", json!([ghost]))).await;
    assert_eq!(reply["code"], 6100, "{reply}");
    let reply = gw
        .request(
            &gateway,
            "thing/sub/register",
            &request("4", json!([{"productKey": subs[0].product_key, "deviceName": "no/slash"}])),
        )
        .await;
    assert_eq!(reply["code"], 6280, "{reply}");
    let reply = gw.request(&gateway, "thing/topo/add", &request("5", json!({"not": "a list"}))).await;
    assert_eq!(reply["code"], 460, "{reply}");

    // Before login the sub-device's topics are closed to the gateway: no subscription, no reply.
    let sub_replies = subs[0].topic("thing/event/property/post_reply");
    assert_eq!(gw.subscribe(&[&sub_replies]).await, [false]);
    gw.publish(&subs[0].topic(POST), request("6", json!({"Temp": 1}))).await;
    assert!(gw.next_message_within(Duration::from_millis(300)).await.is_none(), "a stranger's topic answered");

    // Attached, but a wrong sign and a disabled sub-device are refused at login.
    let reply = gw.request(&gateway, "thing/topo/add", &request("7", json!([sign(&subs[0]), sign(&subs[1])]))).await;
    assert_eq!(reply["code"], 200, "{reply}");
    let wrong = with_method(signed(&subs[0], SignMethod::HmacSha256, "wrong"));
    let reply = ask(&mut gw, &login_topic, request("8", wrong)).await;
    assert_eq!(reply["code"], 401, "{reply}");
    let sub1 = format!("/products/{}/devices/{}:disable", subs[1].product_key, subs[1].device_name);
    let (status, body) = platform.api.post(&sub1, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let reply = ask(&mut gw, &login_topic, request("9", with_method(sign(&subs[1])))).await;
    assert_eq!(reply["code"], 6204, "{reply}");
    // A batch is all or none: the disabled one keeps the good one offline too.
    let batch = json!({"signMethod": "hmacSha256", "deviceList": [sign(&subs[0]), sign(&subs[1])]});
    let reply = ask(&mut gw, &session_topic(&gateway, "combine/batch_login"), request("10", batch)).await;
    assert_eq!((reply["code"].as_i64(), &reply["data"]), (Some(6204), &json!([identity(&subs[1])])), "{reply}");
    assert_eq!(platform.status(&subs[0]).await.0, "UNACTIVE");

    // Logged in, the gateway may subscribe to the sub-device's topics.
    let reply = ask(&mut gw, &login_topic, request("11", with_method(sign(&subs[0])))).await;
    assert_eq!(reply["code"], 200, "{reply}");
    assert_eq!(gw.subscribe(&[&sub_replies]).await, [true]);
    // Removing it from the topology logs it out.
    let reply = gw.request(&gateway, "thing/topo/delete", &request("12", json!([identity(&subs[0])]))).await;
    assert_eq!(reply["code"], 200, "{reply}");
    status_becomes(&platform, &subs[0], "OFFLINE").await;

    // A device that is not a gateway gets an Alink error, not a disconnect.
    let mut plain = Device::connect(platform.mqtt_addr(), &subs[0]).await;
    let reply = plain.request(&subs[0], "thing/topo/add", &request("13", json!([sign(&subs[1])]))).await;
    assert_eq!(reply["code"], 460, "{reply}");
    let plain_login = json!({"id": "14", "params": with_method(sign(&subs[1]))}).to_string();
    let reply = ask(&mut plain, &session_topic(&subs[0], "combine/login"), plain_login.into_bytes()).await;
    assert_eq!(reply["code"], 460, "{reply}");
    let reply = plain.request(&subs[0], POST, &request("15", json!({"Temp": 5}))).await;
    assert_eq!(reply["code"], 200, "{reply}");
    platform.stop().await;
}

#[tokio::test]
async fn a_sub_device_moved_to_another_gateway_leaves_the_first() {
    let platform = TestPlatform::start().await;
    let Site { gateway, subs } = site(&platform).await;
    let second = platform.register_device(&gateway.product_key).await;
    let mut first_gw = Device::connect(platform.mqtt_addr(), &gateway).await;
    let mut second_gw = Device::connect(platform.mqtt_addr(), &second).await;
    let mut topo_events = platform.bus().subscribe("tether.up.*.*.*.topo").await.unwrap();

    let reply = first_gw.request(&gateway, "thing/topo/add", &request("1", json!([sign(&subs[0])]))).await;
    assert_eq!(reply["code"], 200, "{reply}");
    let login = json!({"signMethod": "hmacSha256", "deviceList": [sign(&subs[0])]});
    let reply = ask(&mut first_gw, &session_topic(&gateway, "combine/batch_login"), request("2", login)).await;
    assert_eq!(reply["code"], 200, "{reply}");
    status_becomes(&platform, &subs[0], "ONLINE").await;

    // The second gateway takes the sub-device over: the first one can no longer speak for it.
    let reply = second_gw.request(&second, "thing/topo/add", &request("3", json!([sign(&subs[0])]))).await;
    assert_eq!(reply["code"], 200, "{reply}");
    let mut actions = Vec::new();
    while actions.len() < 3 {
        let event = tokio::time::timeout(SOON, topo_events.next()).await.unwrap().unwrap();
        let body: Value = serde_json::from_slice(&event.payload).unwrap();
        assert_eq!(
            event.headers["topic"],
            format!(
                "/{}/{}/thing/topo/lifecycle",
                body["gwProductKey"].as_str().unwrap(),
                body["gwDeviceName"].as_str().unwrap()
            )
        );
        actions.push((body["action"].as_str().unwrap().to_owned(), body["gwDeviceName"].as_str().unwrap().to_owned()));
    }
    assert_eq!(
        actions,
        [
            ("add".to_owned(), gateway.device_name.clone()),
            ("remove".to_owned(), gateway.device_name.clone()),
            ("add".to_owned(), second.device_name.clone())
        ]
    );
    status_becomes(&platform, &subs[0], "OFFLINE").await;
    first_gw.publish(&subs[0].topic(POST), request("4", json!({"Temp": 1}))).await;
    assert!(first_gw.next_message_within(Duration::from_millis(300)).await.is_none());

    let mut login = sign(&subs[0]);
    login["signMethod"] = json!("hmacSha256");
    let reply = ask(&mut first_gw, &session_topic(&gateway, "combine/login"), request("5", login.clone())).await;
    assert_eq!(reply["code"], 6401, "{reply}");
    let reply = ask(&mut second_gw, &session_topic(&second, "combine/login"), request("6", login)).await;
    assert_eq!(reply["code"], 200, "{reply}");
    status_becomes(&platform, &subs[0], "ONLINE").await;
    platform.stop().await;
}
