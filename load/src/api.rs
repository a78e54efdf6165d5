//! The tenant API calls a scenario needs: bulk device registration, RRPC, broadcast.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};
use tether_contract::{CommandGrpcClient, CommandService, RrpcCode};
use tether_model::{DeviceKey, SignMethod, SignParams};

use crate::protocol::DeviceSpec;

#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    base: String,
    key: String,
}

/// Registered devices of one product.
pub struct Fleet {
    pub product_key: String,
    pub devices: Vec<DeviceSpec>,
}

impl Api {
    pub fn new(http: SocketAddr, key: &str) -> Self {
        Self { client: reqwest::Client::new(), base: format!("http://{http}/api/v1"), key: key.to_owned() }
    }

    /// A new product and `count` devices in it (16 requests in flight), as devices that sign
    /// their CONNECT with their secret (hmacsha1, as the SDKs do by default).
    pub async fn register(&self, count: usize, subscribe: impl Fn(&str) -> Option<String>) -> anyhow::Result<Fleet> {
        let product: Value = self.post("/products", json!({"name": "load"})).await?;
        let pk = product["productKey"].as_str().context("productKey")?.to_owned();
        let path = format!("/products/{pk}/devices");
        let devices: Vec<Value> = futures::stream::iter(0..count)
            .map(|_| self.post(&path, json!({})))
            .buffer_unordered(16)
            .try_collect()
            .await?;
        let devices = devices
            .iter()
            .map(|d| {
                let dn = d["deviceName"].as_str().context("deviceName")?;
                let secret = d["deviceSecret"].as_str().context("deviceSecret")?;
                let params = SignParams { client_id: dn, device_name: dn, product_key: &pk, timestamp: None };
                Ok(DeviceSpec {
                    client_id: format!("{dn}|securemode=3,signmethod=hmacsha1|"),
                    username: format!("{dn}&{pk}"),
                    password: SignMethod::HmacSha1.sign(secret, &params),
                    sys_prefix: format!("/sys/{pk}/{dn}"),
                    subscribe: subscribe(&pk),
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Fleet { product_key: pk, devices })
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let response =
            self.client.post(format!("{}{path}", self.base)).bearer_auth(&self.key).json(&body).send().await?;
        let status = response.status();
        let body: Value = response.json().await?;
        anyhow::ensure!(status.is_success(), "POST {path}: {status} {body}");
        Ok(body)
    }

    /// `POST /products/{pk}/broadcast` to the subscribers of `topic`.
    pub async fn broadcast(&self, pk: &str, topic: &str, payload: &str) -> anyhow::Result<()> {
        let body = json!({"payloadBase64": BASE64.encode(payload), "topicFullName": topic});
        self.post(&format!("/products/{pk}/broadcast"), body).await.map(drop)
    }
}

/// Devices of a peer broker: the same client ids, usernames and topics, no sign to check.
pub fn peer_fleet(count: usize, subscribe: impl Fn(&str) -> Option<String>) -> Fleet {
    let pk = "a1PeerLoad0".to_owned();
    let devices = (0..count)
        .map(|i| {
            let dn = format!("dev{i:06}");
            DeviceSpec {
                client_id: format!("{dn}|securemode=3,signmethod=hmacsha1|"),
                username: format!("{dn}&{pk}"),
                password: "x".repeat(40),
                sys_prefix: format!("/sys/{pk}/{dn}"),
                subscribe: subscribe(&pk),
            }
        })
        .collect();
    Fleet { product_key: pk, devices }
}

/// Who makes RRPC calls.
#[derive(Clone)]
pub enum Caller {
    /// A tenant through the REST API (`POST .../rrpc`).
    Rest(Api),
    /// A cluster's command role over gRPC.
    Grpc(CommandGrpcClient),
}

/// How one call ended.
pub enum CallResult {
    Answered(Duration),
    /// Another call's answer.
    Miscorrelated,
    /// TIMEOUT, OFFLINE, UNKNOWN or an error.
    Failed(String),
}

impl Caller {
    pub fn via(&self) -> &'static str {
        match self {
            Caller::Rest(_) => "rest",
            Caller::Grpc(_) => "grpc",
        }
    }

    /// One RRPC call whose device echoes `payload`.
    pub async fn rrpc(&self, device: &DeviceSpec, payload: String, timeout_ms: u32) -> CallResult {
        let Some((pk, dn)) = device.sys_prefix.strip_prefix("/sys/").and_then(|p| p.split_once('/')) else {
            return CallResult::Failed(format!("bad device {}", device.sys_prefix));
        };
        let sent = tokio::time::Instant::now();
        let answer = match self {
            Caller::Rest(api) => {
                let body = json!({"payloadBase64": BASE64.encode(&payload), "timeoutMs": timeout_ms});
                match api.post(&format!("/products/{pk}/devices/{dn}/rrpc"), body).await {
                    Ok(body) if body["rrpcCode"] == "SUCCESS" => {
                        body["payloadBase64"].as_str().and_then(|p| BASE64.decode(p).ok()).ok_or(format!("{body}"))
                    }
                    Ok(body) => Err(body.to_string()),
                    Err(e) => Err(format!("{e:#}")),
                }
            }
            Caller::Grpc(client) => match DeviceKey::parse(pk, dn) {
                Ok(key) => match client.rrpc(&key, payload.clone().into_bytes().into(), timeout_ms, None).await {
                    Ok(outcome) if outcome.rrpc_code == RrpcCode::Success => {
                        outcome.payload.map(|p| p.to_vec()).ok_or_else(|| "no payload".to_owned())
                    }
                    Ok(outcome) => Err(format!("{:?}", outcome.rrpc_code)),
                    Err(e) => Err(e.to_string()),
                },
                Err(e) => Err(e.to_string()),
            },
        };
        let latency = sent.elapsed();
        match answer {
            Ok(answer) if answer == payload.as_bytes() => CallResult::Answered(latency),
            Ok(_) => CallResult::Miscorrelated,
            Err(why) => CallResult::Failed(why),
        }
    }
}
