//! What a call must be before anything is sent, and what is sent: message ids, limits, the
//! checks against the thing model and the product's topics (each refusal names the API field,
//! as the REST API spells it), the downlink topics and the Alink payloads. Pure code.

use serde_json::{Map, Value, json};
use tether_contract::ServiceError;
use tether_contract::command::TIMEOUT_RANGE_MS;
use tether_model::tsl::CallType;
use tether_model::{DeviceKey, ProductKey, Topic, TopicClass, Tsl};

/// Largest payload sent to one device (Aliyun's Pub and RRpc: 256 KB).
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;

/// Largest broadcast payload (Aliyun's PubBroadcast: 64 KB).
pub const MAX_BROADCAST_BYTES: usize = 64 * 1024;

/// The wait of a sync service call when the caller gives none, in ms.
pub const DEFAULT_TIMEOUT_MS: u32 = 5000;

/// Longest an async command may wait for an offline device (a day, as IoTDA keeps downlinks).
pub const MAX_TTL_MS: u64 = 24 * 3600 * 1000;

/// Identifiers the thing model reserves; without a model they are refused too, so a service
/// call can never land on the property topics.
const RESERVED: [&str; 6] = ["set", "get", "post", "property", "time", "value"];

/// Where a Pub goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PubTarget {
    /// One device's custom topic `/{pk}/{dn}/user/{short}`.
    Device { device: DeviceKey, short: String },
    /// A product broadcast topic `/broadcast/{pk}/..` (Aliyun's Pub takes those too).
    Broadcast,
}

/// A decimal string of a random 63-bit number, as Aliyun's message ids are numeric strings.
pub(crate) fn new_message_id() -> String {
    (rand::random::<u64>() >> 1).to_string()
}

/// An Alink request as the platform sends it.
pub(crate) fn alink_request(message_id: &str, method: &str, params: &Value) -> String {
    json!({ "id": message_id, "version": "1.0", "params": params, "method": method }).to_string()
}

pub(crate) fn property_set_topic(device: &DeviceKey) -> String {
    Topic::sys(device, "thing/service/property/set").to_string()
}

pub(crate) fn service_topic(device: &DeviceKey, identifier: &str) -> String {
    Topic::sys(device, format!("thing/service/{identifier}")).to_string()
}

pub(crate) fn service_method(identifier: &str) -> String {
    format!("thing.service.{identifier}")
}

/// The RRPC request topic: `/sys/{pk}/{dn}/rrpc/request/{messageId}`, or for a custom topic
/// (`topic`: a short name such as `get`, or the full `/{pk}/{dn}/user/get`)
/// `/ext/rrpc/{messageId}/{pk}/{dn}/user/{short}`.
pub(crate) fn rrpc_topic(device: &DeviceKey, message_id: &str, topic: Option<&str>) -> Result<String, ServiceError> {
    let Some(topic) = topic else {
        return Ok(Topic::sys(device, format!("rrpc/request/{message_id}")).to_string());
    };
    let short = if topic.starts_with('/') {
        match Topic::parse(topic) {
            Ok(Topic::Custom { device: of, short }) if &of == device => short,
            _ => return Err(ServiceError::invalid("topic", format!("must be a custom topic /{device}/user/..."))),
        }
    } else {
        topic.strip_prefix("user/").unwrap_or(topic).to_owned()
    };
    TopicClass::validate_short(&short).map_err(|e| ServiceError::invalid("topic", e))?;
    Ok(format!("/ext/rrpc/{message_id}/{}/{}/user/{short}", device.product_key, device.device_name))
}

/// The wait of a synchronous call, checked against 1000–8000 ms.
pub(crate) fn timeout_ms(timeout_ms: Option<u32>) -> Result<u32, ServiceError> {
    let timeout = timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    if !TIMEOUT_RANGE_MS.contains(&timeout) {
        return Err(ServiceError::invalid(
            "timeoutMs",
            format!("{timeout} is outside {}..={}", TIMEOUT_RANGE_MS.start(), TIMEOUT_RANGE_MS.end()),
        ));
    }
    Ok(timeout)
}

pub(crate) fn ttl_ms(ttl_ms: Option<u64>) -> Result<Option<u64>, ServiceError> {
    match ttl_ms {
        Some(ttl) if ttl == 0 || ttl > MAX_TTL_MS => {
            Err(ServiceError::invalid("ttlMs", format!("{ttl} is outside 1..={MAX_TTL_MS}")))
        }
        ttl => Ok(ttl),
    }
}

/// Checks a property set: at least one item, each a read-write property of the thing model with
/// a conforming value (any item when the product has no model).
pub(crate) fn check_items(tsl: Option<&Tsl>, items: &Map<String, Value>) -> Result<(), ServiceError> {
    if items.is_empty() {
        return Err(ServiceError::invalid("items", "must name at least one property"));
    }
    if let Some(tsl) = tsl {
        tsl.check_set(items).map_err(|e| ServiceError::invalid(format!("items.{}", e.field), e.reason))?;
    }
    Ok(())
}

/// Checks a service invocation and says how the service is called: it must be a service of the
/// thing model with conforming `args` (an object, or null for none). Without a model any
/// well-formed identifier is accepted and called asynchronously.
pub(crate) fn check_invocation(tsl: Option<&Tsl>, identifier: &str, args: &Value) -> Result<CallType, ServiceError> {
    if !matches!(args, Value::Object(_) | Value::Null) {
        return Err(ServiceError::invalid("args", "must be a JSON object"));
    }
    let Some(tsl) = tsl else {
        let well_formed = !identifier.is_empty()
            && identifier.len() <= 128
            && identifier.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !well_formed || RESERVED.contains(&identifier) {
            return Err(ServiceError::invalid("identifier", "not a service identifier"));
        }
        return Ok(CallType::Async);
    };
    let Some(service) = tsl.service(identifier) else {
        return Err(ServiceError::invalid("identifier", format!("{identifier} is not a service of the thing model")));
    };
    tsl.check_service_input(identifier, args).map_err(|e| {
        // The model names the whole object `params`, the API calls it `args`.
        let field = match e.field.as_str() {
            "params" => "args".to_owned(),
            field => format!("args.{field}"),
        };
        ServiceError::invalid(field, e.reason)
    })?;
    Ok(service.call_type)
}

/// The params a service is invoked with: the args, `{}` for none (as Aliyun sends).
pub(crate) fn service_params(args: Value) -> Value {
    if args.is_null() { json!({}) } else { args }
}

pub(crate) fn check_payload(payload_len: usize, limit: usize) -> Result<(), ServiceError> {
    if payload_len > limit {
        return Err(ServiceError::invalid("payloadBase64", format!("{payload_len} bytes, more than {limit}")));
    }
    Ok(())
}

/// Where a Pub to `topic_full_name` goes: a device's custom topic of `product_key`, or one of its
/// broadcast topics. Whether the custom topic's class is SUB or ALL is checked by the caller,
/// which has the product.
pub(crate) fn pub_target(product_key: &ProductKey, topic_full_name: &str) -> Result<PubTarget, ServiceError> {
    let refuse = || {
        ServiceError::invalid(
            "topicFullName",
            format!("must be /{product_key}/{{deviceName}}/user/... or /broadcast/{product_key}/..."),
        )
    };
    match Topic::parse(topic_full_name).map_err(|_| refuse())? {
        Topic::Custom { device, short } if &device.product_key == product_key => {
            Ok(PubTarget::Device { device, short })
        }
        Topic::Broadcast { product_key: of, .. } if &of == product_key => Ok(PubTarget::Broadcast),
        _ => Err(refuse()),
    }
}

/// Checks a broadcast topic: `/broadcast/{pk}/{..}` of the product.
pub(crate) fn check_broadcast_topic(product_key: &ProductKey, topic: &str) -> Result<(), ServiceError> {
    match Topic::parse(topic) {
        Ok(Topic::Broadcast { product_key: of, .. }) if &of == product_key => Ok(()),
        _ => Err(ServiceError::invalid("topicFullName", format!("must be /broadcast/{product_key}/..."))),
    }
}

/// The `code` and `data` of a device's Alink reply; `None` when the payload is not one.
pub(crate) fn parse_alink_reply(payload: &[u8]) -> Option<(i64, Value)> {
    let Value::Object(mut reply) = serde_json::from_slice(payload).ok()? else {
        return None;
    };
    let code = match reply.get("code")? {
        Value::Number(n) => n.as_i64()?,
        Value::String(s) => s.parse().ok()?,
        _ => return None,
    };
    Some((code, reply.remove("data").unwrap_or(Value::Null)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> DeviceKey {
        DeviceKey::parse("pk", "dn").unwrap()
    }

    fn tsl() -> Tsl {
        let json = json!({
            "properties": [
                { "identifier": "Temp", "name": "t", "accessMode": "r",
                  "dataType": { "type": "int", "specs": { "min": "-20", "max": "60" } } },
                { "identifier": "Mode", "name": "m", "accessMode": "rw",
                  "dataType": { "type": "enum", "specs": { "0": "off", "1": "on" } } }
            ],
            "events": [],
            "services": [
                { "identifier": "Reboot", "name": "r", "callType": "async",
                  "inputData": [{ "identifier": "delay", "name": "d",
                                  "dataType": { "type": "int", "specs": { "min": "0", "max": "10" } } }],
                  "outputData": [] },
                { "identifier": "Probe", "name": "p", "callType": "sync", "inputData": [], "outputData": [] }
            ]
        });
        Tsl::parse(json.to_string().as_bytes()).unwrap()
    }

    fn field(error: ServiceError) -> String {
        match error {
            ServiceError::Invalid { field, .. } => field,
            other => panic!("not invalid: {other:?}"),
        }
    }

    fn items(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn message_ids_are_decimal_63_bit_numbers() {
        for _ in 0..1000 {
            let id = new_message_id();
            let n: u64 = id.parse().unwrap();
            assert!(n < 1 << 63);
            assert_eq!(n.to_string(), id);
        }
        assert_ne!(new_message_id(), new_message_id());
    }

    #[test]
    fn a_property_set_names_the_offending_item() {
        let tsl = tsl();
        assert!(check_items(Some(&tsl), &items(json!({"Mode": 1}))).is_ok());
        assert_eq!(field(check_items(Some(&tsl), &items(json!({"Temp": 1}))).unwrap_err()), "items.Temp");
        assert_eq!(field(check_items(Some(&tsl), &items(json!({"Mode": 7}))).unwrap_err()), "items.Mode");
        assert_eq!(field(check_items(Some(&tsl), &items(json!({"Nope": 1}))).unwrap_err()), "items.Nope");
        assert_eq!(field(check_items(None, &Map::new()).unwrap_err()), "items");
        // Without a thing model any item goes.
        assert!(check_items(None, &items(json!({"Anything": [1, 2]}))).is_ok());
    }

    #[test]
    fn an_invocation_must_name_a_service_with_conforming_args() {
        let tsl = tsl();
        assert_eq!(check_invocation(Some(&tsl), "Reboot", &json!({"delay": 3})).unwrap(), CallType::Async);
        assert_eq!(check_invocation(Some(&tsl), "Probe", &Value::Null).unwrap(), CallType::Sync);
        assert_eq!(field(check_invocation(Some(&tsl), "Nope", &json!({})).unwrap_err()), "identifier");
        assert_eq!(field(check_invocation(Some(&tsl), "Reboot", &json!({"delay": 99})).unwrap_err()), "args.delay");
        assert_eq!(field(check_invocation(Some(&tsl), "Reboot", &json!({"other": 1})).unwrap_err()), "args.other");
        assert_eq!(field(check_invocation(Some(&tsl), "Reboot", &json!([1])).unwrap_err()), "args");
        // Without a thing model: async, any well-formed identifier.
        assert_eq!(check_invocation(None, "Anything_1", &json!({"x": 1})).unwrap(), CallType::Async);
        assert_eq!(field(check_invocation(None, "a/b", &json!({})).unwrap_err()), "identifier");
        assert_eq!(field(check_invocation(None, "property", &json!({})).unwrap_err()), "identifier");
    }

    #[test]
    fn timeouts_and_ttls_have_bounds() {
        assert_eq!(timeout_ms(None).unwrap(), DEFAULT_TIMEOUT_MS);
        assert_eq!(timeout_ms(Some(1000)).unwrap(), 1000);
        assert_eq!(timeout_ms(Some(8000)).unwrap(), 8000);
        assert_eq!(field(timeout_ms(Some(999)).unwrap_err()), "timeoutMs");
        assert_eq!(field(timeout_ms(Some(8001)).unwrap_err()), "timeoutMs");
        assert_eq!(ttl_ms(None).unwrap(), None);
        assert_eq!(ttl_ms(Some(1)).unwrap(), Some(1));
        assert_eq!(field(ttl_ms(Some(0)).unwrap_err()), "ttlMs");
        assert_eq!(field(ttl_ms(Some(MAX_TTL_MS + 1)).unwrap_err()), "ttlMs");
    }

    #[test]
    fn rrpc_topics_system_and_custom() {
        let d = device();
        assert_eq!(rrpc_topic(&d, "42", None).unwrap(), "/sys/pk/dn/rrpc/request/42");
        assert_eq!(rrpc_topic(&d, "42", Some("get")).unwrap(), "/ext/rrpc/42/pk/dn/user/get");
        assert_eq!(rrpc_topic(&d, "42", Some("user/a/b")).unwrap(), "/ext/rrpc/42/pk/dn/user/a/b");
        assert_eq!(rrpc_topic(&d, "42", Some("/pk/dn/user/get")).unwrap(), "/ext/rrpc/42/pk/dn/user/get");
        assert_eq!(field(rrpc_topic(&d, "42", Some("/pk/other/user/get")).unwrap_err()), "topic");
        assert_eq!(field(rrpc_topic(&d, "42", Some("/sys/pk/dn/thing")).unwrap_err()), "topic");
        assert_eq!(field(rrpc_topic(&d, "42", Some("a/+")).unwrap_err()), "topic");
    }

    #[test]
    fn pub_targets_are_the_products_custom_and_broadcast_topics() {
        let pk = ProductKey::new("pk").unwrap();
        assert_eq!(
            pub_target(&pk, "/pk/dn/user/get").unwrap(),
            PubTarget::Device { device: device(), short: "get".into() }
        );
        assert_eq!(pub_target(&pk, "/broadcast/pk/all").unwrap(), PubTarget::Broadcast);
        for bad in ["/other/dn/user/get", "/sys/pk/dn/thing/service/x", "/broadcast/other/x", "nope"] {
            assert_eq!(field(pub_target(&pk, bad).unwrap_err()), "topicFullName", "{bad}");
        }
        assert!(check_broadcast_topic(&pk, "/broadcast/pk/a/b").is_ok());
        assert_eq!(field(check_broadcast_topic(&pk, "/pk/dn/user/get").unwrap_err()), "topicFullName");
    }

    #[test]
    fn payloads_are_alink_requests_and_replies_are_read_leniently() {
        let payload: Value =
            serde_json::from_str(&alink_request("7", "thing.service.property.set", &json!({"Mode": 1}))).unwrap();
        assert_eq!(
            payload,
            json!({"id": "7", "version": "1.0", "params": {"Mode": 1}, "method": "thing.service.property.set"})
        );
        assert_eq!(service_params(Value::Null), json!({}));
        assert_eq!(
            parse_alink_reply(br#"{"id":"7","code":200,"data":{"a":1},"message":"success"}"#),
            Some((200, json!({"a": 1})))
        );
        assert_eq!(parse_alink_reply(br#"{"id":"7","code":"460"}"#), Some((460, Value::Null)));
        assert_eq!(parse_alink_reply(b"raw bytes"), None);
        assert_eq!(parse_alink_reply(br#"{"id":"7"}"#), None);
        assert_eq!(check_payload(MAX_PAYLOAD_BYTES, MAX_PAYLOAD_BYTES), Ok(()));
        assert_eq!(field(check_payload(MAX_PAYLOAD_BYTES + 1, MAX_PAYLOAD_BYTES).unwrap_err()), "payloadBase64");
    }
}
