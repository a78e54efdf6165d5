//! The platform under test and its HTTP API client.

use std::net::SocketAddr;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;
use tether::{EmbeddedConfig, Platform};

use crate::device::DeviceCredentials;

/// `tether run` in-process, on free ports, with its own data directory.
pub struct TestPlatform {
    platform: Option<Platform>,
    data_dir: TempDir,
    pub api: Api,
}

/// A tenant API client holding one bearer key.
#[derive(Clone)]
pub struct Api {
    base: String,
    key: String,
    client: reqwest::Client,
}

impl TestPlatform {
    pub async fn start() -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(data_dir).await
    }

    async fn start_in(data_dir: TempDir) -> Self {
        let any_port: SocketAddr = "127.0.0.1:0".parse().expect("address");
        let config = EmbeddedConfig::new(data_dir.path(), any_port, any_port);
        let platform = Platform::start(config).await.expect("platform starts");
        let api = Api::new(platform.http_addr(), &platform.admin_key);
        Self { platform: Some(platform), data_dir, api }
    }

    fn platform(&self) -> &Platform {
        self.platform.as_ref().expect("platform is running")
    }

    pub fn mqtt_addr(&self) -> SocketAddr {
        self.platform().mqtt_addr()
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.platform().http_addr()
    }

    pub fn bus(&self) -> std::sync::Arc<tether_bus::InProcessBus> {
        self.platform().bus.clone()
    }

    /// Stops the platform (as Ctrl-C does) and starts it again on the same data directory.
    pub async fn restart(mut self) -> Self {
        self.platform.take().expect("platform is running").stop().await;
        Self::start_in(self.data_dir).await
    }

    pub async fn stop(mut self) {
        if let Some(platform) = self.platform.take() {
            platform.stop().await;
        }
    }

    /// Creates a product (default settings) and returns its key.
    pub async fn create_product(&self) -> String {
        let (status, body) = self.api.post("/products", json!({"name": "test product"})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["productKey"].as_str().expect("productKey").to_owned()
    }

    /// Registers a device with a generated name and secret.
    pub async fn register_device(&self, product_key: &str) -> DeviceCredentials {
        let (status, body) = self.api.post(&format!("/products/{product_key}/devices"), json!({})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        DeviceCredentials {
            product_key: product_key.to_owned(),
            device_name: body["deviceName"].as_str().expect("deviceName").to_owned(),
            device_secret: body["deviceSecret"].as_str().expect("deviceSecret").to_owned(),
        }
    }

    /// A new product with one device.
    pub async fn device(&self) -> DeviceCredentials {
        let pk = self.create_product().await;
        self.register_device(&pk).await
    }

    /// `GET .../status` → (`status`, whole body).
    pub async fn status(&self, device: &DeviceCredentials) -> (String, Value) {
        let path = format!("/products/{}/devices/{}/status", device.product_key, device.device_name);
        let (code, body) = self.api.get(&path).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        (body["status"].as_str().unwrap_or_default().to_owned(), body)
    }
}

impl Api {
    pub fn new(addr: SocketAddr, key: &str) -> Self {
        Self { base: format!("http://{addr}/api/v1"), key: key.to_owned(), client: reqwest::Client::new() }
    }

    /// The same API with another bearer key.
    pub fn with_key(&self, key: &str) -> Self {
        Self { key: key.to_owned(), ..self.clone() }
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, None).await
    }

    /// Sends `body` as raw bytes with a JSON content type (for malformed-body tests).
    pub async fn post_raw(&self, path: &str, body: &'static str) -> (StatusCode, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("http request");
        decode(response).await
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base)).bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        decode(request.send().await.expect("http request")).await
    }
}

async fn decode(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let bytes = response.bytes().await.expect("http body");
    let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("json body") };
    (status, body)
}
