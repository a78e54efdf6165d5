//! Sessions and presence: takeover, status transitions, disable kicks, restart persistence.

use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::DisconnectReasonCode;
use serde_json::json;
use tether_tests::{Device, DeviceV5, TestPlatform, V5Ack, eventually};

const SOON: Duration = Duration::from_secs(5);

#[tokio::test]
async fn status_goes_unactive_online_offline_with_times_and_ip() {
    let platform = TestPlatform::start().await;
    let creds = platform.device().await;
    assert_eq!(platform.status(&creds).await.0, "UNACTIVE");

    let device = Device::connect(platform.mqtt_addr(), &creds).await;
    let (status, body) = platform.status(&creds).await;
    assert_eq!(status, "ONLINE");
    assert_eq!(body["clientIp"], "127.0.0.1");
    let online_at = body["lastOnlineTime"].as_i64().unwrap();

    device.disconnect().await;
    let body = eventually("device OFFLINE", SOON, || async {
        let (status, body) = platform.status(&creds).await;
        (status == "OFFLINE").then_some(body)
    })
    .await;
    assert!(body["lastOfflineTime"].as_i64().unwrap() >= online_at);
    assert_eq!(body["timestamp"], body["lastOfflineTime"]);
    platform.stop().await;
}

#[tokio::test]
async fn a_second_connect_takes_over_and_the_device_stays_online() {
    let platform = TestPlatform::start().await;
    let creds = platform.device().await;
    let mut first = DeviceV5::connect_with(platform.mqtt_addr(), &creds, None).await.unwrap();
    let mut second = Device::connect(platform.mqtt_addr(), &creds).await;
    assert_eq!(first.next_ack().await, V5Ack::Disconnect(DisconnectReasonCode::SessionTakenOver));
    first.closed().await;

    // The old session's close never turns the device OFFLINE.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(platform.status(&creds).await.0, "ONLINE");
    // The new session works.
    let reply = second.request(&creds, "thing/event/property/post", br#"{"id":"1","params":{}}"#).await;
    assert_eq!(reply["code"], 200);

    // And a v3 session taken over is closed too.
    let mut third = Device::connect(platform.mqtt_addr(), &creds).await;
    second.closed().await;
    let reply = third.request(&creds, "thing/event/property/post", br#"{"id":"2","params":{}}"#).await;
    assert_eq!(reply["code"], 200);
    assert_eq!(platform.status(&creds).await.0, "ONLINE");
    platform.stop().await;
}

#[tokio::test]
async fn disabling_a_connected_device_kicks_it() {
    let platform = TestPlatform::start().await;
    let creds = platform.device().await;
    let mut device = DeviceV5::connect_with(platform.mqtt_addr(), &creds, None).await.unwrap();
    let path = format!("/products/{}/devices/{}:disable", creds.product_key, creds.device_name);
    let (code, body) = platform.api.post(&path, json!({})).await;
    assert!(code.is_success(), "{body}");
    assert_eq!(body["enabled"], false);
    assert_eq!(device.next_ack().await, V5Ack::Disconnect(DisconnectReasonCode::NotAuthorized));
    assert_eq!(platform.status(&creds).await.0, "DISABLE");

    let path = format!("/products/{}/devices/{}:enable", creds.product_key, creds.device_name);
    platform.api.post(&path, json!({})).await;
    DeviceV5::connect_with(platform.mqtt_addr(), &creds, None).await.expect("enabled device connects");
    platform.stop().await;
}

#[tokio::test]
async fn a_restart_keeps_products_devices_secrets_and_presence() {
    let platform = TestPlatform::start().await;
    let creds = platform.device().await;
    let device = Device::connect(platform.mqtt_addr(), &creds).await;
    let admin_key = platform.api.clone();
    drop(admin_key);

    // Stopping the platform records the connected device OFFLINE.
    let platform = platform.restart().await;
    drop(device);
    let (status, body) = platform.status(&creds).await;
    assert_eq!(status, "OFFLINE", "{body}");
    assert!(body["lastOnlineTime"].is_i64() && body["lastOfflineTime"].is_i64(), "{body}");

    let (code, product) = platform.api.get(&format!("/products/{}", creds.product_key)).await;
    assert!(code.is_success(), "{product}");
    let (_, device_body) =
        platform.api.get(&format!("/products/{}/devices/{}", creds.product_key, creds.device_name)).await;
    assert_eq!(device_body["deviceSecret"], creds.device_secret.as_str());
    let mut device = Device::connect(platform.mqtt_addr(), &creds).await;
    let reply = device.request(&creds, "thing/event/property/post", br#"{"id":"1","params":{"a":1}}"#).await;
    assert_eq!(reply["code"], 200);
    platform.stop().await;
}
