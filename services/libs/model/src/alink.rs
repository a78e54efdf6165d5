//! The Alink JSON request/reply codec (PROTOCOL.md B.2) and its result codes.
//!
//! Requests carry `id` (a string, echoed byte for byte), `version`, `method` and `params`.
//! Replies always carry `id`, `code`, `data` and `message`: the official SDKs drop a reply
//! without `message`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Most properties one post may carry (Aliyun's limit; beyond it the reply is 6106).
pub const MAX_PROPERTIES_PER_POST: usize = 200;

/// Alink result codes the platform sends to devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlinkCode {
    Success,
    RequestError,
    TooManyRequests,
    ParamError,
    /// A sub-device's sign (topo add, combine login) does not match.
    SignFailed,
    DeviceNotFound,
    TooManyProperties,
    /// The thing model could not be read (Aliyun's 6313).
    ThingModelUnavailable,
    TopicParseFailed,
    DeviceDisabled,
    ProductNotFound,
    /// A sub-device name a gateway sent is not a valid device name.
    BadSubDeviceName,
    /// The gateway has as many sub-devices as allowed.
    TooManySubDevices,
    /// The sub-device is not in the gateway's topology.
    TopoRelationNotFound,
    /// A gateway named itself as its sub-device.
    TopoRelationSelf,
    SystemError,
}

/// A decoded Alink request.
#[derive(Debug, Clone, PartialEq)]
pub struct AlinkRequest {
    pub id: String,
    pub version: Option<String>,
    pub method: Option<String>,
    pub params: Value,
}

/// Why a payload is not an Alink request; carries the request id when one could be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AlinkDecodeError {
    pub id: Option<String>,
    pub code: AlinkCode,
    pub message: String,
}

/// An Alink reply (platform → device, or device → platform for downlinks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlinkReply {
    pub id: String,
    pub code: u32,
    #[serde(default)]
    pub data: Value,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

#[derive(Deserialize)]
struct WireRequest {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    version: Option<Value>,
    #[serde(default)]
    method: Option<Value>,
    #[serde(default)]
    params: Value,
}

// === impl AlinkCode ===

impl AlinkCode {
    pub fn as_u32(self) -> u32 {
        match self {
            Self::Success => 200,
            Self::RequestError => 400,
            Self::TooManyRequests => 429,
            Self::ParamError => 460,
            Self::SignFailed => 401,
            Self::DeviceNotFound => 6100,
            Self::TooManyProperties => 6106,
            Self::ThingModelUnavailable => 6313,
            Self::TopicParseFailed => 6203,
            Self::DeviceDisabled => 6204,
            Self::ProductNotFound => 6250,
            Self::BadSubDeviceName => 6280,
            Self::TooManySubDevices => 6400,
            Self::TopoRelationNotFound => 6401,
            Self::TopoRelationSelf => 6402,
            Self::SystemError => 6760,
        }
    }

    /// The reply's default `message`.
    pub fn message(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::RequestError => "request error",
            Self::TooManyRequests => "too many requests",
            Self::ParamError => "request parameter error",
            Self::SignFailed => "sign check failed",
            Self::DeviceNotFound => "device not found",
            Self::TooManyProperties => "too many properties in one post",
            Self::ThingModelUnavailable => "thing model service unavailable",
            Self::TopicParseFailed => "topic parse failed",
            Self::DeviceDisabled => "device disabled",
            Self::ProductNotFound => "product not found",
            Self::BadSubDeviceName => "invalid sub-device name",
            Self::TooManySubDevices => "too many sub-devices on the gateway",
            Self::TopoRelationNotFound => "topo relation does not exist",
            Self::TopoRelationSelf => "a gateway cannot be its own sub-device",
            Self::SystemError => "system error",
        }
    }
}

// === impl AlinkRequest ===

impl AlinkRequest {
    /// Decodes a request payload. A numeric `id` is accepted and kept as its decimal string.
    pub fn decode(payload: &[u8]) -> Result<Self, AlinkDecodeError> {
        let value: Value = serde_json::from_slice(payload).map_err(|e| AlinkDecodeError {
            id: None,
            code: AlinkCode::RequestError,
            message: format!("payload is not valid JSON: {e}"),
        })?;
        let Value::Object(_) = value else {
            return Err(AlinkDecodeError {
                id: None,
                code: AlinkCode::RequestError,
                message: "payload must be a JSON object".into(),
            });
        };
        let wire: WireRequest = serde_json::from_value(value).map_err(|e| AlinkDecodeError {
            id: None,
            code: AlinkCode::RequestError,
            message: format!("payload is not an Alink request: {e}"),
        })?;
        let id = match wire.id {
            Some(Value::String(id)) => id,
            Some(Value::Number(n)) => n.to_string(),
            None | Some(Value::Null) => String::new(),
            Some(_) => {
                return Err(AlinkDecodeError {
                    id: None,
                    code: AlinkCode::ParamError,
                    message: "id must be a string".into(),
                });
            }
        };
        let text = |field: &str, v: Option<Value>| match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(AlinkDecodeError {
                id: Some(id.clone()),
                code: AlinkCode::ParamError,
                message: format!("{field} must be a string"),
            }),
        };
        Ok(Self {
            version: text("version", wire.version)?,
            method: text("method", wire.method)?,
            params: wire.params,
            id: id.clone(),
        })
    }

    /// The `params` of a property post, checked for shape and count.
    pub fn property_params(&self) -> Result<&Map<String, Value>, (AlinkCode, String)> {
        let Value::Object(params) = &self.params else {
            return Err((AlinkCode::ParamError, "params must be an object of properties".into()));
        };
        if params.len() > MAX_PROPERTIES_PER_POST {
            return Err((
                AlinkCode::TooManyProperties,
                format!("{} properties in one post, at most {MAX_PROPERTIES_PER_POST}", params.len()),
            ));
        }
        Ok(params)
    }
}

// === impl AlinkReply ===

impl AlinkReply {
    /// A reply to `id` with `code` and the code's default message.
    pub fn new(id: impl Into<String>, code: AlinkCode, data: Value) -> Self {
        Self {
            id: id.into(),
            code: code.as_u32(),
            data,
            message: code.message().to_owned(),
            method: None,
            version: Some("1.0".to_owned()),
        }
    }

    pub fn success(id: impl Into<String>, data: Value) -> Self {
        Self::new(id, AlinkCode::Success, data)
    }

    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }

    pub fn with_method(mut self, method: Option<String>) -> Self {
        self.method = method;
        self
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an Alink reply always serializes")
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    #[test]
    fn decodes_a_property_post() {
        let req = AlinkRequest::decode(
            br#"{"id":"123","version":"1.0","params":{"Power":"on","WF":{"value":2,"time":1}},"method":"thing.event.property.post"}"#,
        )
        .unwrap();
        assert_eq!(req.id, "123");
        assert_eq!(req.method.as_deref(), Some("thing.event.property.post"));
        assert_eq!(req.property_params().unwrap().len(), 2);
    }

    #[test]
    fn keeps_js_sdk_ids_byte_for_byte_and_numbers_as_strings() {
        let id = "1|exp-topic|/sys/pk/dn/thing/event/property/post_reply";
        let req = AlinkRequest::decode(json!({"id": id, "params": {}}).to_string().as_bytes()).unwrap();
        assert_eq!(req.id, id);
        let req = AlinkRequest::decode(br#"{"id":42,"params":{}}"#).unwrap();
        assert_eq!(req.id, "42");
    }

    #[test]
    fn refuses_bad_payloads_with_alink_codes() {
        assert_eq!(AlinkRequest::decode(b"{oops").unwrap_err().code, AlinkCode::RequestError);
        assert_eq!(AlinkRequest::decode(b"[1,2]").unwrap_err().code, AlinkCode::RequestError);
        assert_eq!(AlinkRequest::decode(br#"{"id":{}}"#).unwrap_err().code, AlinkCode::ParamError);
        let err = AlinkRequest::decode(br#"{"id":"9","method":5}"#).unwrap_err();
        assert_eq!((err.code, err.id.as_deref()), (AlinkCode::ParamError, Some("9")));
    }

    #[test]
    fn property_params_shape_and_limit() {
        let req = AlinkRequest::decode(br#"{"id":"1","params":[1]}"#).unwrap();
        assert_eq!(req.property_params().unwrap_err().0, AlinkCode::ParamError);
        let req = AlinkRequest::decode(br#"{"id":"1"}"#).unwrap();
        assert_eq!(req.property_params().unwrap_err().0, AlinkCode::ParamError);
        let many: Map<String, Value> = (0..201).map(|i| (format!("p{i}"), json!(i))).collect();
        let req = AlinkRequest::decode(json!({"id":"1","params":many}).to_string().as_bytes()).unwrap();
        assert_eq!(req.property_params().unwrap_err().0, AlinkCode::TooManyProperties);
    }

    #[test]
    fn replies_carry_all_four_keys() {
        let reply: Value = serde_json::from_slice(&AlinkReply::success("7", json!({})).encode()).unwrap();
        for key in ["id", "code", "data", "message"] {
            assert!(reply.get(key).is_some(), "{key}");
        }
        assert_eq!(reply["id"], "7");
        assert_eq!(reply["code"], 200);
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = AlinkRequest::decode(&bytes);
        }

        #[test]
        fn decode_never_panics_on_json(id in ".{0,10}", n in any::<i64>(), key in "[a-z]{0,5}") {
            let payload = json!({"id": id, "params": {key.clone(): n}, "method": key}).to_string();
            let req = AlinkRequest::decode(payload.as_bytes()).unwrap();
            prop_assert_eq!(req.id, id);
        }
    }
}
