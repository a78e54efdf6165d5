//! The cloud-to-device resources of API.md over REST: property set, service invocation, RRPC,
//! Pub, broadcast, their batch forms and the async command records.
//!
//! Handlers only turn JSON into the validated requests of `calls` (`TryFrom`) and its answers
//! back into JSON; the checks and the calls to the command service are there, shared with gRPC.
//!
//! Sync calls that got no answer are not errors: RRPC and sync services answer 200 with
//! `rrpcCode` `TIMEOUT` or `OFFLINE`, as Aliyun does. An oversized payload is 400
//! `InvalidArgument` naming `payloadBase64` (not 413), like every other refused field.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tether_contract::{Command, Invocation, RrpcOutcome, ServiceError};
use utoipa::ToSchema;

use crate::GatewayDeps;
use crate::calls::{self, Broadcast, DeviceBatch, DeviceOutcome, PropertySet, Publication, RrpcCall, ServiceCall};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Auth, Body, OwnedDevice, OwnedProduct};

type Deps = State<Arc<GatewayDeps>>;
type ApiResult<T> = Result<T, ApiError>;

/// The command routes, merged into the `/api/v1` router.
pub fn router() -> Router<Arc<GatewayDeps>> {
    Router::new()
        .route("/products/{product_key}/devices/{device_name}/properties:set", post(set_properties))
        // `{identifier}:invoke`: the action rides on the last segment, as `{deviceName}:enable` does.
        .route("/products/{product_key}/devices/{device_name}/services/{service_action}", post(invoke_service))
        .route("/products/{product_key}/devices/{device_name}/rrpc", post(rrpc))
        .route("/products/{product_key}/devices/{device_name}/commands", get(list_commands))
        .route("/products/{product_key}/messages", post(publish))
        .route("/products/{product_key}/broadcast", post(broadcast))
        .route("/products/{product_key}/devices:set-properties", post(set_devices_properties))
        .route("/products/{product_key}/devices:invoke-service", post(invoke_things_service))
        .route("/commands/{message_id}", get(get_command))
}

// === DTOs ===

/// Property values to set on the device [SetDeviceProperty]: with a thing model, only its
/// read-write properties, with conforming values.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetPropertiesRequest {
    pub items: Map<String, Value>,
    /// Keep the command this long (ms) for an offline device and send it when the device
    /// connects; without it an offline device is refused.
    pub ttl_ms: Option<i64>,
}

/// A service invocation [InvokeThingService].
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InvokeServiceRequest {
    /// The service's input parameters (`{}` when absent).
    pub args: Option<Value>,
    /// Sync services: how long to wait for the answer, 1000–8000 ms (default 5000).
    pub timeout_ms: Option<i64>,
    /// Async services: keep the command this long (ms) for an offline device.
    pub ttl_ms: Option<i64>,
}

/// Raw bytes for the device, answered by the device's reply [RRpc].
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RrpcRequest {
    /// At most 256 KB once decoded.
    pub payload_base64: String,
    /// How long to wait for the answer, 1000–8000 ms.
    pub timeout_ms: Option<i64>,
    /// A custom RRPC topic, when not the system one.
    pub topic: Option<String>,
}

/// A message for a device's custom topic [Pub].
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PubRequest {
    /// `/{productKey}/{deviceName}/user/...` of a topic class devices subscribe to (`sub` or `all`).
    pub topic_full_name: String,
    /// At most 256 KB once decoded.
    pub payload_base64: String,
    /// 0 (default) or 1.
    pub qos: Option<i64>,
}

/// A message for the product's devices [PubBroadcast].
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BroadcastRequest {
    /// At most 64 KB once decoded.
    pub payload_base64: String,
    /// `/broadcast/{productKey}/...`: only the devices subscribed to it; absent: every online
    /// device of the product, on `/sys/{productKey}/{deviceName}/broadcast/request/{messageId}`.
    pub topic_full_name: Option<String>,
}

/// The same property set for many devices [SetDevicesProperty].
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetDevicesPropertiesRequest {
    /// 1 to 100 devices of the product.
    pub device_names: Vec<String>,
    pub items: Map<String, Value>,
    pub ttl_ms: Option<i64>,
}

/// The same async service invocation on many devices [InvokeThingsService].
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InvokeThingsServiceRequest {
    /// 1 to 100 devices of the product.
    pub device_names: Vec<String>,
    /// An async service of the thing model.
    pub identifier: String,
    pub args: Option<Value>,
    pub ttl_ms: Option<i64>,
}

/// An accepted command.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageIdView {
    pub message_id: String,
}

/// What invoking a service returned: for an async service only `messageId`; for a sync one
/// also `rrpcCode` and, when the device answered, its reply's `code` and `data`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvocationView {
    pub message_id: String,
    /// `SUCCESS`, `TIMEOUT`, `OFFLINE` or `UNKNOWN`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rrpc_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// What an RRPC returned.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RrpcView {
    pub message_id: String,
    /// `SUCCESS`, `TIMEOUT` (no answer within `timeoutMs`), `OFFLINE` or `UNKNOWN`.
    pub rrpc_code: String,
    /// The device's answer, with `SUCCESS`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
}

/// One result per device of a batch call, in the request's order.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceResults {
    pub results: Vec<DeviceResultView>,
}

/// A device's command, or why it got none (`code` and `message` as in error bodies, e.g.
/// `NotFound` for an unknown device).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceResultView {
    pub device_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// An async command as recorded.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommandView {
    pub message_id: String,
    pub product_key: String,
    pub device_name: String,
    /// The downlink topic.
    pub topic: String,
    /// `thing.service.property.set`, `thing.service.{identifier}`.
    pub method: String,
    /// `QUEUED` (for an offline device), `SENT`, `DELIVERED` (PUBACK), `SUCCEEDED` or `FAILED`
    /// (the device's reply code), or `EXPIRED` (its TTL ran out while queued).
    pub status: String,
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// The device's reply `code`, `data` and `message`, once it replied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_code: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_data: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_message: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CommandList {
    /// Oldest first.
    pub items: Vec<CommandView>,
}

/// The last segment of `.../services/{identifier}:invoke`.
#[derive(Debug, Deserialize)]
pub struct ServiceActionPath {
    service_action: String,
}

// === handlers ===

#[utoipa::path(post, path = "/api/v1/products/{productKey}/devices/{deviceName}/properties:set",
    request_body = SetPropertiesRequest,
    responses((status = 200, body = MessageIdView), (status = 400, body = ErrorBody, description = "a value the thing model refuses (`items.<identifier>`)"),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody, description = "the device's offline queue is full")))]
pub async fn set_properties(
    State(deps): Deps,
    device: OwnedDevice,
    Body(req): Body<SetPropertiesRequest>,
) -> ApiResult<Json<MessageIdView>> {
    let command = calls::set_properties(&deps, &device, req.try_into()?).await?;
    Ok(Json(MessageIdView { message_id: command.message_id }))
}

#[utoipa::path(post, path = "/api/v1/products/{productKey}/devices/{deviceName}/services/{identifier}:invoke",
    request_body = InvokeServiceRequest,
    responses((status = 200, body = InvocationView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody)))]
pub async fn invoke_service(
    State(deps): Deps,
    device: OwnedDevice,
    Path(path): Path<ServiceActionPath>,
    Body(req): Body<InvokeServiceRequest>,
) -> ApiResult<Json<InvocationView>> {
    let identifier = match path.service_action.rsplit_once(':') {
        Some((identifier, "invoke")) if !identifier.is_empty() => identifier.to_owned(),
        _ => return Err(ServiceError::not_found(format!("action {}", path.service_action)).into()),
    };
    let call = ServiceCall {
        identifier,
        args: req.args.unwrap_or(Value::Null),
        timeout_ms: req.timeout_ms.map(calls::timeout_ms).transpose()?,
        options: calls::send_options(req.ttl_ms)?,
    };
    let invocation = calls::invoke_service(&deps, &device, call).await?;
    Ok(Json(invocation.into()))
}

#[utoipa::path(post, path = "/api/v1/products/{productKey}/devices/{deviceName}/rrpc", request_body = RrpcRequest,
    responses((status = 200, body = RrpcView), (status = 400, body = ErrorBody, description = "bad `payloadBase64` or `timeoutMs`"),
        (status = 404, body = ErrorBody)))]
pub async fn rrpc(State(deps): Deps, device: OwnedDevice, Body(req): Body<RrpcRequest>) -> ApiResult<Json<RrpcView>> {
    let outcome = calls::rrpc(&deps, &device, req.try_into()?).await?;
    Ok(Json(outcome.into()))
}

#[utoipa::path(post, path = "/api/v1/products/{productKey}/messages", request_body = PubRequest,
    responses((status = 200, body = MessageIdView),
        (status = 400, body = ErrorBody, description = "`topicFullName` not a subscribable custom topic of the product, `payloadBase64` not base64 or over 256 KB, `qos`"),
        (status = 404, body = ErrorBody, description = "the product, or the device the topic names")))]
pub async fn publish(
    State(deps): Deps,
    product: OwnedProduct,
    Body(req): Body<PubRequest>,
) -> ApiResult<Json<MessageIdView>> {
    let message_id = calls::publish(&deps, &product, req.try_into()?).await?;
    Ok(Json(MessageIdView { message_id }))
}

#[utoipa::path(post, path = "/api/v1/products/{productKey}/broadcast", request_body = BroadcastRequest,
    responses((status = 200, body = MessageIdView),
        (status = 400, body = ErrorBody, description = "`payloadBase64` not base64 or over 64 KB, `topicFullName` not the product's broadcast topic"),
        (status = 404, body = ErrorBody)))]
pub async fn broadcast(
    State(deps): Deps,
    product: OwnedProduct,
    Body(req): Body<BroadcastRequest>,
) -> ApiResult<Json<MessageIdView>> {
    let BroadcastRequest { payload_base64, topic_full_name } = req;
    let message =
        Broadcast { payload: calls::base64_payload("payloadBase64", &payload_base64)?, topic: topic_full_name };
    let message_id = calls::broadcast(&deps, &product, message).await?;
    Ok(Json(MessageIdView { message_id }))
}

#[utoipa::path(post, path = "/api/v1/products/{productKey}/devices:set-properties", request_body = SetDevicesPropertiesRequest,
    responses((status = 200, body = DeviceResults, description = "one result per device; an unknown device is a `NotFound` result"),
        (status = 400, body = ErrorBody, description = "no device or more than 100, or `items.<identifier>` refused"),
        (status = 404, body = ErrorBody)))]
pub async fn set_devices_properties(
    State(deps): Deps,
    Auth(caller): Auth,
    product: OwnedProduct,
    Body(req): Body<SetDevicesPropertiesRequest>,
) -> ApiResult<Json<DeviceResults>> {
    let SetDevicesPropertiesRequest { device_names, items, ttl_ms } = req;
    let batch = DeviceBatch::new(device_names)?;
    let set = PropertySet { items, options: calls::send_options(ttl_ms)? };
    let outcomes = calls::set_properties_of(&deps, &caller, &product, batch, set).await?;
    Ok(Json(DeviceResults::from(outcomes)))
}

#[utoipa::path(post, path = "/api/v1/products/{productKey}/devices:invoke-service", request_body = InvokeThingsServiceRequest,
    responses((status = 200, body = DeviceResults, description = "one result per device; an unknown device is a `NotFound` result"),
        (status = 400, body = ErrorBody, description = "no device or more than 100, or `identifier` not an async service of the thing model"),
        (status = 404, body = ErrorBody)))]
pub async fn invoke_things_service(
    State(deps): Deps,
    Auth(caller): Auth,
    product: OwnedProduct,
    Body(req): Body<InvokeThingsServiceRequest>,
) -> ApiResult<Json<DeviceResults>> {
    let InvokeThingsServiceRequest { device_names, identifier, args, ttl_ms } = req;
    let batch = DeviceBatch::new(device_names)?;
    let call = ServiceCall {
        identifier,
        args: args.unwrap_or(Value::Null),
        timeout_ms: None,
        options: calls::send_options(ttl_ms)?,
    };
    let outcomes = calls::invoke_service_on(&deps, &caller, &product, batch, call).await?;
    Ok(Json(DeviceResults::from(outcomes)))
}

#[utoipa::path(get, path = "/api/v1/commands/{messageId}",
    responses((status = 200, body = CommandView), (status = 404, body = ErrorBody, description = "unknown, or another tenant's device's")))]
pub async fn get_command(
    State(deps): Deps,
    Auth(caller): Auth,
    Path(message_id): Path<String>,
) -> ApiResult<Json<CommandView>> {
    let command = calls::get_command(&deps, &caller, &message_id).await?;
    Ok(Json(command.into()))
}

#[utoipa::path(get, path = "/api/v1/products/{productKey}/devices/{deviceName}/commands",
    responses((status = 200, body = CommandList), (status = 404, body = ErrorBody)))]
pub async fn list_commands(State(deps): Deps, device: OwnedDevice) -> ApiResult<Json<CommandList>> {
    let commands = calls::list_commands(&deps, &device).await?;
    Ok(Json(CommandList { items: commands.into_iter().map(CommandView::from).collect() }))
}

// === conversions ===

impl TryFrom<SetPropertiesRequest> for PropertySet {
    type Error = ServiceError;

    fn try_from(req: SetPropertiesRequest) -> Result<Self, ServiceError> {
        let SetPropertiesRequest { items, ttl_ms } = req;
        Ok(Self { items, options: calls::send_options(ttl_ms)? })
    }
}

impl TryFrom<RrpcRequest> for RrpcCall {
    type Error = ServiceError;

    fn try_from(req: RrpcRequest) -> Result<Self, ServiceError> {
        let RrpcRequest { payload_base64, timeout_ms, topic } = req;
        let timeout_ms = timeout_ms.ok_or_else(|| ServiceError::invalid("timeoutMs", "required, 1000 to 8000 (ms)"))?;
        Ok(Self {
            payload: calls::base64_payload("payloadBase64", &payload_base64)?,
            timeout_ms: calls::timeout_ms(timeout_ms)?,
            topic,
        })
    }
}

impl TryFrom<PubRequest> for Publication {
    type Error = ServiceError;

    fn try_from(req: PubRequest) -> Result<Self, ServiceError> {
        let PubRequest { topic_full_name, payload_base64, qos } = req;
        Ok(Self {
            topic_full_name,
            payload: calls::base64_payload("payloadBase64", &payload_base64)?,
            qos: calls::qos(qos.unwrap_or(0))?,
        })
    }
}

impl From<Invocation> for InvocationView {
    fn from(invocation: Invocation) -> Self {
        match invocation {
            Invocation::Async(command) => {
                Self { message_id: command.message_id, rrpc_code: None, code: None, data: None }
            }
            Invocation::Sync { message_id, rrpc_code, code, data } => {
                Self { message_id, rrpc_code: Some(rrpc_code.as_str().to_owned()), code, data }
            }
        }
    }
}

impl From<RrpcOutcome> for RrpcView {
    fn from(outcome: RrpcOutcome) -> Self {
        let RrpcOutcome { message_id, rrpc_code, payload } = outcome;
        Self {
            message_id,
            rrpc_code: rrpc_code.as_str().to_owned(),
            payload_base64: payload.map(|p| calls::base64_encode(&p)),
        }
    }
}

impl From<Vec<DeviceOutcome>> for DeviceResults {
    fn from(outcomes: Vec<DeviceOutcome>) -> Self {
        let results = outcomes
            .into_iter()
            .map(|DeviceOutcome { device_name, result }| match result {
                Ok(message_id) => {
                    DeviceResultView { device_name, message_id: Some(message_id), code: None, message: None }
                }
                Err(error) => DeviceResultView {
                    device_name,
                    message_id: None,
                    code: Some(error.code().to_owned()),
                    message: Some(error.to_string()),
                },
            })
            .collect();
        Self { results }
    }
}

impl From<Command> for CommandView {
    fn from(command: Command) -> Self {
        let Command {
            message_id,
            product_key,
            device_name,
            topic,
            method,
            status,
            created_at,
            updated_at,
            expires_at,
            reply_code,
            reply_data,
            reply_message,
        } = command;
        Self {
            message_id,
            product_key: product_key.to_string(),
            device_name: device_name.to_string(),
            topic,
            method,
            status: status.as_str().to_owned(),
            created_at,
            updated_at,
            expires_at,
            reply_code,
            reply_data,
            reply_message,
        }
    }
}
