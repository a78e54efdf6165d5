//! The `command` service: the correlator between tenants' calls and their devices — property
//! set, service invocation (async and sync), RRPC, custom-topic Pub and broadcast, with an
//! offline queue for async commands (`ttl_ms`). Callers are trusted platform services: the
//! gateway checks that the device belongs to the calling tenant first.
//!
//! How it reaches devices: docs/commands.md.

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tether_model::{DeviceKey, ProductKey};

use crate::ServiceError;

mod grpc;
mod wire;

pub use grpc::{CommandGrpcClient, CommandGrpcServer};

/// The shortest and longest wait of a synchronous call (RRPC, sync service), in ms.
pub const TIMEOUT_RANGE_MS: std::ops::RangeInclusive<u32> = 1000..=8000;

/// Where an async command is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CommandStatus {
    /// Waiting for the (offline) device to connect.
    Queued,
    /// Handed to the device's edge.
    Sent,
    /// The device acknowledged the MQTT publish (QoS 1 PUBACK).
    Delivered,
    /// The device replied with code 200.
    Succeeded,
    /// The device replied with another code.
    Failed,
    /// Its `ttl_ms` ran out before the device took it.
    Expired,
}

/// An async command as recorded (`GET /commands/{messageId}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Command {
    pub message_id: String,
    pub product_key: ProductKey,
    pub device_name: tether_model::DeviceName,
    /// The downlink topic.
    pub topic: String,
    /// `thing.service.property.set`, `thing.service.{id}`.
    pub method: String,
    pub status: CommandStatus,
    pub created_at: i64,
    pub updated_at: i64,
    /// When a queued command expires (ms), if it was given a TTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// The device's reply `code` and `data`, once it replied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_code: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_data: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_message: Option<String>,
}

/// How an async command is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendOptions {
    /// Keep the command for an offline device this long (ms) and deliver it when it connects;
    /// `None`: an offline device is an error.
    pub ttl_ms: Option<u64>,
}

/// The answer of a synchronous call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RrpcCode {
    Success,
    Timeout,
    Offline,
    Unknown,
}

/// What a sync service invocation or RRPC returned.
#[derive(Debug, Clone, PartialEq)]
pub struct RrpcOutcome {
    pub message_id: String,
    pub rrpc_code: RrpcCode,
    /// The device's answer as sent (an Alink reply for a sync service).
    pub payload: Option<Bytes>,
}

/// What invoking a service returned: async services only a command; sync ones the device's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Invocation {
    Async(Command),
    Sync { message_id: String, rrpc_code: RrpcCode, code: Option<i64>, data: Option<Value> },
}

/// The `command` service.
#[async_trait]
pub trait CommandService: Send + Sync + 'static {
    /// Sends `thing.service.property.set` (items checked against the thing model: read-write
    /// properties with conforming values).
    async fn set_properties(
        &self,
        device: &DeviceKey,
        items: Map<String, Value>,
        options: SendOptions,
    ) -> Result<Command, ServiceError>;

    /// Invokes a service of the thing model: async services on `thing/service/{id}`, sync ones
    /// over RRPC, waiting up to `timeout_ms` (1000–8000, default 5000) for the answer.
    async fn invoke_service(
        &self,
        device: &DeviceKey,
        identifier: &str,
        args: Value,
        timeout_ms: Option<u32>,
        options: SendOptions,
    ) -> Result<Invocation, ServiceError>;

    /// Sends raw bytes on `rrpc/request/{messageId}` (or the custom `/ext/rrpc/{messageId}/..`
    /// topic when `topic` names one of the device's custom topics) and waits for the answer.
    async fn rrpc(
        &self,
        device: &DeviceKey,
        payload: Bytes,
        timeout_ms: u32,
        topic: Option<String>,
    ) -> Result<RrpcOutcome, ServiceError>;

    /// Publishes to a custom topic (`/{pk}/{dn}/user/..` of a SUB/ALL class); returns the message id.
    async fn publish(
        &self,
        product_key: &ProductKey,
        topic_full_name: &str,
        payload: Bytes,
        qos: u8,
    ) -> Result<String, ServiceError>;

    /// Sends to every online device of the product (`/sys/{pk}/{dn}/broadcast/request/{messageId}`),
    /// or, with `topic`, to those subscribed to `/broadcast/{pk}/{..}`; returns the message id.
    async fn broadcast(
        &self,
        product_key: &ProductKey,
        payload: Bytes,
        topic: Option<String>,
    ) -> Result<String, ServiceError>;

    /// An async command by its message id.
    async fn get_command(&self, message_id: &str) -> Result<Command, ServiceError>;

    /// A device's async commands, oldest first.
    async fn list_commands(&self, device: &DeviceKey) -> Result<Vec<Command>, ServiceError>;
}

// === impl CommandStatus ===

impl CommandStatus {
    /// The status's name, as the command record's JSON writes it (`SUCCEEDED`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "QUEUED",
            Self::Sent => "SENT",
            Self::Delivered => "DELIVERED",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
            Self::Expired => "EXPIRED",
        }
    }
}

// === impl RrpcCode ===

impl RrpcCode {
    /// Aliyun's name of an RRPC outcome (`TIMEOUT`), as its JSON writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "SUCCESS",
            Self::Timeout => "TIMEOUT",
            Self::Offline => "OFFLINE",
            Self::Unknown => "UNKNOWN",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_json_names() {
        for code in [RrpcCode::Success, RrpcCode::Timeout, RrpcCode::Offline, RrpcCode::Unknown] {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
        let statuses = [
            CommandStatus::Queued,
            CommandStatus::Sent,
            CommandStatus::Delivered,
            CommandStatus::Succeeded,
            CommandStatus::Failed,
            CommandStatus::Expired,
        ];
        for status in statuses {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
    }
}
