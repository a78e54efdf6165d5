//! The platform under test and its HTTP API client.

use std::net::SocketAddr;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;
use tether::{EmbeddedConfig, Platform};
use tether_bus::Bus;
use tether_contract::CommandService;

use crate::cluster::{ADMIN_KEY, ClusterPlatform, Servers};
use crate::device::DeviceCredentials;

/// The platform under test, on free ports: `tether run` in-process (embedded mode, the default),
/// or, with `TETHER_TEST_MODE=cluster`, the cluster roles over real NATS and Redis, so the same
/// scenarios hold both modes to the same behaviour.
pub struct TestPlatform {
    running: Option<Running>,
    data_dir: TempDir,
    servers: Option<Servers>,
    pub api: Api,
}

enum Running {
    Embedded(Box<Platform>),
    Cluster(ClusterPlatform),
}

/// Whether this test run drives cluster mode.
pub fn cluster_mode() -> bool {
    std::env::var("TETHER_TEST_MODE").is_ok_and(|m| m == "cluster")
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
        let servers = if cluster_mode() { Some(Servers::start().await) } else { None };
        Self::start_in(data_dir, servers).await
    }

    async fn start_in(data_dir: TempDir, servers: Option<Servers>) -> Self {
        let (running, api) = match &servers {
            Some(servers) => {
                let cluster = ClusterPlatform::start(servers).await;
                let api = Api::new(cluster.http_addr, ADMIN_KEY);
                (Running::Cluster(cluster), api)
            }
            None => {
                let any_port: SocketAddr = "127.0.0.1:0".parse().expect("address");
                let config = EmbeddedConfig::new(data_dir.path(), any_port, any_port);
                let platform = Platform::start(config).await.expect("platform starts");
                let api = Api::new(platform.http_addr(), &platform.admin_key);
                (Running::Embedded(Box::new(platform)), api)
            }
        };
        Self { running: Some(running), data_dir, servers, api }
    }

    fn running(&self) -> &Running {
        self.running.as_ref().expect("platform is running")
    }

    pub fn mqtt_addr(&self) -> SocketAddr {
        match self.running() {
            Running::Embedded(platform) => platform.mqtt_addr(),
            Running::Cluster(cluster) => cluster.mqtt_addr,
        }
    }

    pub fn http_addr(&self) -> SocketAddr {
        match self.running() {
            Running::Embedded(platform) => platform.http_addr(),
            Running::Cluster(cluster) => cluster.http_addr,
        }
    }

    /// Where the tenant API serves gRPC (`tether.v1.Gateway`).
    pub fn grpc_addr(&self) -> SocketAddr {
        match self.running() {
            Running::Embedded(platform) => platform.grpc_addr(),
            Running::Cluster(cluster) => cluster.grpc_addr,
        }
    }

    /// The platform's bus (the in-process one, or a NATS client of the cluster's).
    pub fn bus(&self) -> std::sync::Arc<dyn Bus> {
        match self.running() {
            Running::Embedded(platform) => platform.bus.clone(),
            Running::Cluster(cluster) => cluster.bus.clone(),
        }
    }

    /// The command service: the platform's own, or a gRPC client of the command role.
    pub fn command(&self) -> std::sync::Arc<dyn CommandService> {
        match self.running() {
            Running::Embedded(platform) => platform.command(),
            Running::Cluster(cluster) => cluster.command.clone(),
        }
    }

    /// Stops the platform (as Ctrl-C or SIGTERM does) and starts it again on the same data
    /// (directory, or NATS and Redis).
    pub async fn restart(mut self) -> Self {
        self.stop_running().await;
        Self::start_in(self.data_dir, self.servers.take()).await
    }

    pub async fn stop(mut self) {
        self.stop_running().await;
    }

    async fn stop_running(&mut self) {
        match self.running.take() {
            Some(Running::Embedded(platform)) => (*platform).stop().await,
            Some(Running::Cluster(cluster)) => cluster.stop().await,
            None => {}
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

    /// The bearer key (also the gRPC API's `authorization`).
    pub fn key(&self) -> &str {
        &self.key
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

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(body)).await
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
