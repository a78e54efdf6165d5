//! CONNECT: the Aliyun sign in all three methods, and every refusal with its CONNACK code.

use rumqttc::ConnectReturnCode;
use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as V5Code;
use serde_json::json;
use tether_model::SignMethod;
use tether_tests::{Device, DeviceV5, TestPlatform};

#[tokio::test]
async fn good_sign_connects_with_every_method() {
    let platform = TestPlatform::start().await;
    let creds = platform.device().await;
    for method in [SignMethod::HmacMd5, SignMethod::HmacSha1, SignMethod::HmacSha256] {
        let (client_id, username, password) = creds.login(method);
        let device = Device::connect_with(platform.mqtt_addr(), &client_id, &username, &password, 60).await;
        assert!(device.is_ok(), "{method:?} refused: {:?}", device.err());
        device.unwrap().disconnect().await;
    }
    // Lower-case hex, no timestamp, unknown extra keys: all as real SDKs send them.
    let params = tether_model::SignParams {
        client_id: "pk&dn",
        device_name: &creds.device_name,
        product_key: &creds.product_key,
        timestamp: None,
    };
    let password = SignMethod::HmacSha1.sign(&creds.device_secret, &params).to_lowercase();
    let client_id = "pk&dn|securemode=3,signmethod=hmacsha1,ext=1,_ss=1,lan=Python,_v=1.2.13|";
    let username = format!("{}&{}", creds.device_name, creds.product_key);
    let device = Device::connect_with(platform.mqtt_addr(), client_id, &username, &password, 60).await;
    assert!(device.is_ok(), "sdk-style client id refused");
    platform.stop().await;
}

#[tokio::test]
async fn bad_connects_are_refused_with_the_right_code() {
    let platform = TestPlatform::start().await;
    let creds = platform.device().await;
    let addr = platform.mqtt_addr();
    let (client_id, username, password) = creds.login(SignMethod::HmacSha1);

    let bad_sign = Device::connect_with(addr, &client_id, &username, "00ff", 60).await.err();
    assert_eq!(bad_sign, Some(ConnectReturnCode::BadUserNamePassword));

    let unknown = format!("nobody&{}", creds.product_key);
    let unknown_device = Device::connect_with(addr, &client_id, &unknown, &password, 60).await.err();
    assert_eq!(unknown_device, Some(ConnectReturnCode::BadUserNamePassword));

    for keep_alive in [10, 1500] {
        let refused = Device::connect_with(addr, &client_id, &username, &password, keep_alive).await.err();
        assert_eq!(refused, Some(ConnectReturnCode::BadClientId), "keepalive {keep_alive}");
    }
    let plain_id = Device::connect_with(addr, "no-params", &username, &password, 60).await.err();
    assert_eq!(plain_id, Some(ConnectReturnCode::BadClientId));

    let path = format!("/products/{}/devices/{}:disable", creds.product_key, creds.device_name);
    let (status, _) = platform.api.post(&path, json!({})).await;
    assert!(status.is_success());
    let disabled = Device::connect_with(addr, &client_id, &username, &password, 60).await.err();
    assert_eq!(disabled, Some(ConnectReturnCode::NotAuthorized));

    // The refusals harmed nobody: another device still connects.
    let other = platform.register_device(&creds.product_key).await;
    Device::connect(addr, &other).await.disconnect().await;
    platform.stop().await;
}

#[tokio::test]
async fn mqtt5_refusals_carry_reason_codes() {
    let platform = TestPlatform::start().await;
    let creds = platform.device().await;
    let bad = DeviceV5::connect_with(platform.mqtt_addr(), &creds, Some("00ff")).await.err();
    assert_eq!(bad, Some(V5Code::BadUserNamePassword));
    let path = format!("/products/{}/devices/{}:disable", creds.product_key, creds.device_name);
    platform.api.post(&path, json!({})).await;
    let disabled = DeviceV5::connect_with(platform.mqtt_addr(), &creds, None).await.err();
    assert_eq!(disabled, Some(V5Code::NotAuthorized));
    platform.stop().await;
}
