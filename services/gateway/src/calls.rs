//! Cloud-to-device calls as a tenant makes them: property set, service invocation, RRPC, Pub,
//! broadcast, their batch forms and the command records, in one place for the REST (`commands`)
//! and gRPC (`grpc`) adapters.
//!
//! Each adapter turns its wire request into the requests here (`TryFrom`), with the conversions
//! below, so a value is refused with the same field name whichever way it came. The functions
//! here take an [`OwnedProduct`] or [`OwnedDevice`] (or check ownership themselves, where the
//! device is named by a batch or a record) before asking the command service, which trusts its
//! caller. What a call must be beyond that (thing model, topic classes, payload sizes, timeout
//! and TTL ranges) the command service checks, naming the same API fields.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use futures::StreamExt as _;
use serde_json::{Map, Value};
use tether_contract::command::TIMEOUT_RANGE_MS;
use tether_contract::{Caller, Command, Invocation, RrpcOutcome, SendOptions, ServiceError};
use tether_model::tsl::CallType;
use tether_model::{DeviceKey, DeviceName, ProductKey};

use crate::GatewayDeps;
use crate::extract::{OwnedDevice, OwnedProduct};

/// Most devices in one batch call (Aliyun SetDevicesProperty, InvokeThingsService).
pub const MAX_BATCH_DEVICES: usize = 100;

/// How many devices of a batch are sent to at once.
const BATCH_CONCURRENCY: usize = 16;

/// A property set for one or more devices.
#[derive(Debug, Clone, PartialEq)]
pub struct PropertySet {
    pub items: Map<String, Value>,
    pub options: SendOptions,
}

/// A service invocation for one or more devices.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceCall {
    pub identifier: String,
    /// A JSON object, or null for none.
    pub args: Value,
    /// Sync services: how long to wait (1000–8000 ms, default 5000).
    pub timeout_ms: Option<u32>,
    pub options: SendOptions,
}

/// An RRPC request.
#[derive(Debug, Clone, PartialEq)]
pub struct RrpcCall {
    pub payload: Bytes,
    pub timeout_ms: u32,
    pub topic: Option<String>,
}

/// A message for a device's custom topic (or one of the product's broadcast topics).
#[derive(Debug, Clone, PartialEq)]
pub struct Publication {
    pub topic_full_name: String,
    pub payload: Bytes,
    pub qos: u8,
}

/// A message for many devices of a product.
#[derive(Debug, Clone, PartialEq)]
pub struct Broadcast {
    pub payload: Bytes,
    /// `/broadcast/{productKey}/...`; `None`: every online device of the product.
    pub topic: Option<String>,
}

/// The devices of a batch call: 1 to [`MAX_BATCH_DEVICES`] names, each checked on its own.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceBatch {
    pub device_names: Vec<String>,
}

/// What a batch call did for one device.
#[derive(Debug)]
pub struct DeviceOutcome {
    pub device_name: String,
    /// The command's message id, or why the device got none.
    pub result: Result<String, ServiceError>,
}

// === conversions ===

// Numbers arrive as the widest integer the wire has and are narrowed here; a value that does not
// fit is refused naming its field, and the command service checks the ranges.

/// A synchronous call's wait (`timeoutMs`).
pub fn timeout_ms(value: i64) -> Result<u32, ServiceError> {
    u32::try_from(value).map_err(|_| {
        let (min, max) = (TIMEOUT_RANGE_MS.start(), TIMEOUT_RANGE_MS.end());
        ServiceError::invalid("timeoutMs", format!("must be {min} to {max} (ms), got {value}"))
    })
}

/// The offline queueing of an async command (`ttlMs`).
pub fn send_options(ttl_ms: Option<i64>) -> Result<SendOptions, ServiceError> {
    let ttl_ms = ttl_ms.map(u64::try_from).transpose();
    let ttl_ms = ttl_ms.map_err(|_| ServiceError::invalid("ttlMs", "must be positive (ms)"))?;
    Ok(SendOptions { ttl_ms })
}

/// An MQTT QoS (`qos`).
pub fn qos(value: i64) -> Result<u8, ServiceError> {
    u8::try_from(value).map_err(|_| ServiceError::invalid("qos", format!("must be 0 or 1, got {value}")))
}

/// A base64 payload (`field`).
pub fn base64_payload(field: &str, text: &str) -> Result<Bytes, ServiceError> {
    let bytes = BASE64.decode(text.trim()).map_err(|e| ServiceError::invalid(field, format!("not base64: {e}")))?;
    Ok(bytes.into())
}

pub fn base64_encode(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// A JSON document sent as text (gRPC's `*_json` fields); empty text is `null`.
pub fn json_text(field: &str, text: &str) -> Result<Value, ServiceError> {
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(text).map_err(|e| ServiceError::invalid(field, format!("not JSON: {e}")))
}

/// A JSON object sent as text; empty text is `{}`.
pub fn json_object(field: &str, text: &str) -> Result<Map<String, Value>, ServiceError> {
    match json_text(field, text)? {
        Value::Null => Ok(Map::new()),
        Value::Object(object) => Ok(object),
        _ => Err(ServiceError::invalid(field, "must be a JSON object")),
    }
}

// === impl DeviceBatch ===

impl DeviceBatch {
    pub fn new(device_names: Vec<String>) -> Result<Self, ServiceError> {
        match device_names.len() {
            0 => Err(ServiceError::invalid("deviceNames", "name at least one device")),
            n if n > MAX_BATCH_DEVICES => Err(ServiceError::invalid(
                "deviceNames",
                format!("{n} devices is more than the {MAX_BATCH_DEVICES} of one call"),
            )),
            _ => Ok(Self { device_names }),
        }
    }
}

// === operations ===

/// Sends a property set to the device.
pub async fn set_properties(
    deps: &GatewayDeps,
    OwnedDevice(device): &OwnedDevice,
    set: PropertySet,
) -> Result<Command, ServiceError> {
    deps.command.set_properties(device, set.items, set.options).await
}

/// Invokes a service on the device.
pub async fn invoke_service(
    deps: &GatewayDeps,
    OwnedDevice(device): &OwnedDevice,
    call: ServiceCall,
) -> Result<Invocation, ServiceError> {
    let ServiceCall { identifier, args, timeout_ms, options } = call;
    deps.command.invoke_service(device, &identifier, args, timeout_ms, options).await
}

/// Sends an RRPC request to the device and waits for its answer.
pub async fn rrpc(
    deps: &GatewayDeps,
    OwnedDevice(device): &OwnedDevice,
    call: RrpcCall,
) -> Result<RrpcOutcome, ServiceError> {
    deps.command.rrpc(device, call.payload, call.timeout_ms, call.topic).await
}

/// Publishes to a custom topic of the product's: the command service checks the topic (a SUB
/// or ALL class, of a device that exists) and the payload.
pub async fn publish(
    deps: &GatewayDeps,
    OwnedProduct(product_key): &OwnedProduct,
    publication: Publication,
) -> Result<String, ServiceError> {
    let Publication { topic_full_name, payload, qos } = publication;
    deps.command.publish(product_key, &topic_full_name, payload, qos).await
}

/// Broadcasts to the product's devices.
pub async fn broadcast(
    deps: &GatewayDeps,
    OwnedProduct(product_key): &OwnedProduct,
    broadcast: Broadcast,
) -> Result<String, ServiceError> {
    deps.command.broadcast(product_key, broadcast.payload, broadcast.topic).await
}

/// Sends a property set to each device of the batch; an unknown device is its own `NotFound`.
/// Items the thing model refuses refuse the whole batch, once.
pub async fn set_properties_of(
    deps: &GatewayDeps,
    caller: &Caller,
    OwnedProduct(product_key): &OwnedProduct,
    batch: DeviceBatch,
    set: PropertySet,
) -> Result<Vec<DeviceOutcome>, ServiceError> {
    check_items(deps, product_key, &set.items).await?;
    let outcomes = for_each_device(deps, caller, product_key, batch, |device| {
        let set = set.clone();
        async move {
            let command = deps.command.set_properties(&device, set.items, set.options).await?;
            Ok(command.message_id)
        }
    });
    Ok(outcomes.await)
}

/// Invokes an async service on each device of the batch; arguments or an identifier the thing
/// model refuses are refused for each device.
pub async fn invoke_service_on(
    deps: &GatewayDeps,
    caller: &Caller,
    OwnedProduct(product_key): &OwnedProduct,
    batch: DeviceBatch,
    call: ServiceCall,
) -> Result<Vec<DeviceOutcome>, ServiceError> {
    // Sync services wait for each device's answer: one device at a time. (Without a thing model
    // every service is async; the command service checks the identifier and the args.)
    let tsl = deps.thing.get_thing_model(product_key).await?;
    let service = tsl.as_ref().and_then(|tsl| tsl.service(&call.identifier));
    if service.is_some_and(|service| service.call_type == CallType::Sync) {
        let reason = format!("{} is a sync service: invoke it on one device at a time", call.identifier);
        return Err(ServiceError::invalid("identifier", reason));
    }
    let outcomes = for_each_device(deps, caller, product_key, batch, |device| {
        let call = call.clone();
        async move {
            let invocation =
                deps.command.invoke_service(&device, &call.identifier, call.args, None, call.options).await?;
            Ok(match invocation {
                Invocation::Async(command) => command.message_id,
                Invocation::Sync { message_id, .. } => message_id,
            })
        }
    });
    Ok(outcomes.await)
}

/// An async command, if its device is the caller's (another tenant's is `NotFound`, as an
/// unknown one).
pub async fn get_command(deps: &GatewayDeps, caller: &Caller, message_id: &str) -> Result<Command, ServiceError> {
    let not_found = || ServiceError::not_found(format!("command {message_id}"));
    let command = deps.command.get_command(message_id).await.map_err(|error| match error {
        ServiceError::NotFound { .. } => not_found(),
        other => other,
    })?;
    let device = DeviceKey::new(command.product_key.clone(), command.device_name.clone());
    match deps.auth.get_device(&caller.tenant, &device).await {
        Ok(_) => Ok(command),
        Err(ServiceError::NotFound { .. }) => Err(not_found()),
        Err(other) => Err(other),
    }
}

/// The device's async commands, oldest first.
pub async fn list_commands(
    deps: &GatewayDeps,
    OwnedDevice(device): &OwnedDevice,
) -> Result<Vec<Command>, ServiceError> {
    deps.command.list_commands(device).await
}

/// Refuses, naming `items.<identifier>`, a property set the product's thing model does not
/// allow (a product without one takes any property), as the command service does for each
/// device.
async fn check_items(
    deps: &GatewayDeps,
    product_key: &ProductKey,
    items: &Map<String, Value>,
) -> Result<(), ServiceError> {
    if items.is_empty() {
        return Err(ServiceError::invalid("items", "set at least one property"));
    }
    if let Some(tsl) = deps.thing.get_thing_model(product_key).await? {
        tsl.check_set(items).map_err(|e| ServiceError::invalid(format!("items.{}", e.field), e.reason))?;
    }
    Ok(())
}

/// Runs `send` for each device of the batch that is the caller's, a few at a time, and answers
/// one outcome per name, in the batch's order.
async fn for_each_device<F, Fut>(
    deps: &GatewayDeps,
    caller: &Caller,
    product_key: &ProductKey,
    batch: DeviceBatch,
    send: F,
) -> Vec<DeviceOutcome>
where
    F: Fn(DeviceKey) -> Fut,
    Fut: Future<Output = Result<String, ServiceError>>,
{
    let send = &send;
    futures::stream::iter(batch.device_names)
        .map(|device_name| async move {
            let result = async {
                let name = DeviceName::new(device_name.as_str()).map_err(|e| ServiceError::invalid("deviceName", e))?;
                let device = DeviceKey::new(product_key.clone(), name);
                let OwnedDevice(device) = OwnedDevice::check(deps, caller, device).await?;
                send(device).await
            };
            DeviceOutcome { result: result.await, device_name }
        })
        .buffered(BATCH_CONCURRENCY)
        .collect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(error: ServiceError) -> String {
        match error {
            ServiceError::Invalid { field, .. } => field,
            other => panic!("not invalid: {other:?}"),
        }
    }

    #[test]
    fn numbers_that_do_not_fit_name_their_field() {
        assert_eq!(timeout_ms(1000), Ok(1000));
        assert_eq!(field(timeout_ms(-1).unwrap_err()), "timeoutMs");
        assert_eq!(field(timeout_ms(i64::MAX).unwrap_err()), "timeoutMs");
        assert_eq!(send_options(None), Ok(SendOptions { ttl_ms: None }));
        assert_eq!(send_options(Some(60_000)), Ok(SendOptions { ttl_ms: Some(60_000) }));
        assert_eq!(field(send_options(Some(-5)).unwrap_err()), "ttlMs");
        assert_eq!(qos(1), Ok(1));
        assert_eq!(field(qos(256).unwrap_err()), "qos");
    }

    #[test]
    fn payloads_are_base64() {
        assert_eq!(base64_payload("payloadBase64", " aGVsbG8= ").unwrap(), Bytes::from_static(b"hello"));
        let error = base64_payload("payloadBase64", "not base64!").unwrap_err();
        assert!(error.to_string().contains("not base64"), "{error}");
        assert_eq!(field(error), "payloadBase64");
        assert_eq!(base64_encode(b"hello"), "aGVsbG8=");
    }

    #[test]
    fn json_text_is_parsed_once() {
        assert_eq!(json_text("args", "").unwrap(), Value::Null);
        assert_eq!(json_object("items", " ").unwrap(), Map::new());
        assert_eq!(json_object("items", r#"{"a":1}"#).unwrap()["a"], 1);
        assert_eq!(field(json_object("items", "[1]").unwrap_err()), "items");
        assert_eq!(field(json_text("args", "{").unwrap_err()), "args");
    }

    #[test]
    fn a_batch_names_one_to_a_hundred_devices() {
        assert_eq!(field(DeviceBatch::new(vec![]).unwrap_err()), "deviceNames");
        assert!(DeviceBatch::new(vec!["d".into(); 100]).is_ok());
        assert_eq!(field(DeviceBatch::new(vec!["d".into(); 101]).unwrap_err()), "deviceNames");
    }
}
