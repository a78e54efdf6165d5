//! The tenant REST API: keys, tenant isolation, validation, errors, OpenAPI, a taken port.

use reqwest::StatusCode;
use serde_json::json;
use tether::{EmbeddedConfig, Platform};
use tether_tests::{Api, Device, TestPlatform};

#[tokio::test]
async fn requests_need_a_valid_bearer_key_and_errors_have_one_shape() {
    let platform = TestPlatform::start().await;
    let (status, body) = platform.api.with_key("nope").get("/products").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "Unauthenticated");
    assert!(body["message"].is_string() && body["requestId"].is_string(), "{body}");

    let (status, body) = platform.api.post_raw("/products", "{not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "InvalidArgument");

    let (status, body) = platform.api.post("/products", json!({"name": "x", "nodeType": "robot"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["message"].as_str().unwrap().contains("nodeType"), "{body}");

    let (status, body) = platform.api.post("/products", json!({"name": "x", "productKey": "bad/key"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["message"].as_str().unwrap().contains("productKey"), "{body}");

    let (status, doc) = platform.api.with_key("").get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["paths"]["/api/v1/products/{productKey}/devices/{deviceName}/status"].is_object(), "{doc}");
    platform.stop().await;
}

#[tokio::test]
async fn tenants_are_isolated_and_only_the_admin_manages_them() {
    let platform = TestPlatform::start().await;
    let creds = platform.device().await;
    let (status, tenant) = platform.api.post("/tenants", json!({"name": "acme"})).await;
    assert_eq!(status, StatusCode::CREATED, "{tenant}");
    let acme = platform.api.with_key(tenant["apiKey"].as_str().unwrap());

    // Another tenant's product and device are 404, never 403.
    let (status, _) = acme.get(&format!("/products/{}", creds.product_key)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let status_path = format!("/products/{}/devices/{}/status", creds.product_key, creds.device_name);
    assert_eq!(acme.get(&status_path).await.0, StatusCode::NOT_FOUND);
    let disable = format!("/products/{}/devices/{}:disable", creds.product_key, creds.device_name);
    assert_eq!(acme.post(&disable, json!({})).await.0, StatusCode::NOT_FOUND);
    let (_, listed) = acme.get("/products").await;
    assert_eq!(listed["items"], json!([]));

    assert_eq!(acme.post("/tenants", json!({"name": "evil"})).await.0, StatusCode::FORBIDDEN);
    let (_, tenants) = platform.api.get("/tenants").await;
    assert_eq!(tenants.as_array().unwrap().len(), 2);

    // A revoked key stops working.
    let tenant_id = tenant["tenantId"].as_str().unwrap();
    let (status, key) = platform.api.post(&format!("/tenants/{tenant_id}/keys"), json!({})).await;
    assert_eq!(status, StatusCode::CREATED);
    let second = platform.api.with_key(key["apiKey"].as_str().unwrap());
    assert_eq!(second.get("/products").await.0, StatusCode::OK);
    let key_id = key["keyId"].as_str().unwrap();
    assert_eq!(platform.api.delete(&format!("/tenants/{tenant_id}/keys/{key_id}")).await.0, StatusCode::NO_CONTENT);
    assert_eq!(second.get("/products").await.0, StatusCode::UNAUTHORIZED);
    platform.stop().await;
}

#[tokio::test]
async fn products_devices_and_topic_classes_behave_as_resources() {
    let platform = TestPlatform::start().await;
    let api: &Api = &platform.api;
    let (status, product) =
        api.post("/products", json!({"name": "gw", "productKey": "gwProduct1", "nodeType": "gateway"})).await;
    assert_eq!(status, StatusCode::CREATED, "{product}");
    assert_eq!(product["nodeType"], "gateway");
    assert_eq!(
        api.post("/products", json!({"name": "again", "productKey": "gwProduct1"})).await.0,
        StatusCode::CONFLICT
    );

    let (status, device) =
        api.post("/products/gwProduct1/devices", json!({"deviceName": "dev-1", "deviceSecret": "s3cret"})).await;
    assert_eq!(status, StatusCode::CREATED, "{device}");
    assert_eq!(device["deviceSecret"], "s3cret");
    assert_eq!(device["iotId"].as_str().map(str::len), Some(20));
    assert_eq!(api.post("/products/gwProduct1/devices", json!({"deviceName": "dev-1"})).await.0, StatusCode::CONFLICT);
    let (status, body) = api.post("/products/gwProduct1/devices", json!({"deviceName": "bad name"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["message"].as_str().unwrap().contains("deviceName"));
    for _ in 0..3 {
        api.post("/products/gwProduct1/devices", json!({})).await;
    }
    let (_, page) = api.get("/products/gwProduct1/devices?pageSize=3").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 3);
    let token = page["nextPageToken"].as_str().unwrap();
    let (_, rest) = api.get(&format!("/products/gwProduct1/devices?pageSize=3&pageToken={token}")).await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert!(rest.get("nextPageToken").is_none());
    assert_eq!(api.get("/products/gwProduct1/devices?pageSize=0").await.0, StatusCode::BAD_REQUEST);

    let (status, class) =
        api.post("/products/gwProduct1/topics", json!({"topicShortName": "cmd/down", "operation": "sub"})).await;
    assert_eq!(status, StatusCode::CREATED, "{class}");
    assert_eq!(class["topicFullName"], "/gwProduct1/${deviceName}/user/cmd/down");
    let (status, _) =
        api.post("/products/gwProduct1/topics", json!({"topicShortName": "a/+", "operation": "sub"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // The new class is subscribable at once by a device of the product.
    let creds = tether_tests::DeviceCredentials {
        product_key: "gwProduct1".into(),
        device_name: "dev-1".into(),
        device_secret: "s3cret".into(),
    };
    let mut device = Device::connect(platform.mqtt_addr(), &creds).await;
    assert_eq!(device.subscribe(&["/gwProduct1/dev-1/user/cmd/down"]).await, [true]);

    // A product with devices is not deleted; deleting a device disconnects it.
    assert_eq!(api.delete("/products/gwProduct1").await.0, StatusCode::BAD_REQUEST);
    assert_eq!(api.delete("/products/gwProduct1/devices/dev-1").await.0, StatusCode::NO_CONTENT);
    device.closed().await;
    assert_eq!(api.get("/products/gwProduct1/devices/dev-1").await.0, StatusCode::NOT_FOUND);
    platform.stop().await;
}

#[tokio::test]
async fn a_taken_mqtt_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = EmbeddedConfig::new(dir.path(), taken.local_addr().unwrap(), any);
    let error = Platform::start(config).await.err().expect("start fails");
    let message = format!("{error:#}");
    assert!(message.contains("--mqtt-addr") && message.contains(&taken.local_addr().unwrap().to_string()), "{message}");
}
