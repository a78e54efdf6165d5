//! The Aliyun MQTT client id: `clientId|key=value,key=value|` (PROTOCOL.md B.1 and E).
//! Unknown keys are kept and ignored; `timestamp` may be seconds, milliseconds or absent.

use std::collections::BTreeMap;

use crate::sign::SignMethod;

/// A parsed MQTT client id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttClientId {
    /// The part before the first `|`: the signed client id.
    pub client_id: String,
    pub secure_mode: Option<i32>,
    pub sign_method: SignMethod,
    /// As written by the device: it is signed as a string.
    pub timestamp: Option<String>,
    /// Every other `key=value` pair (`ext`, `_ss`, `lan`, `_v`, `gw`, `authType`, ...).
    pub extra: BTreeMap<String, String>,
}

/// Why a client id is not in the Aliyun format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientIdError {
    #[error("client id is empty")]
    Empty,
    #[error("client id must look like `id|securemode=..,signmethod=..|`")]
    Format,
    #[error("client id before `|` must be 1 to 64 characters")]
    Length,
    #[error("signmethod is missing")]
    MissingSignMethod,
    #[error("unsupported signmethod `{0}`")]
    UnknownSignMethod(String),
    #[error("securemode `{0}` is not a number")]
    SecureMode(String),
    #[error("timestamp `{0}` is not a number")]
    Timestamp(String),
    /// Refused by a remote auth service, with its reason.
    #[error("{0}")]
    Remote(String),
}

// === impl MqttClientId ===

impl MqttClientId {
    /// Parses a client id as sent in CONNECT.
    pub fn parse(raw: &str) -> Result<Self, ClientIdError> {
        if raw.is_empty() {
            return Err(ClientIdError::Empty);
        }
        let (client_id, rest) = raw.split_once('|').ok_or(ClientIdError::Format)?;
        let params = rest.strip_suffix('|').ok_or(ClientIdError::Format)?;
        if params.contains('|') {
            return Err(ClientIdError::Format);
        }
        if client_id.is_empty() || client_id.chars().count() > 64 {
            return Err(ClientIdError::Length);
        }
        let mut secure_mode = None;
        let mut sign_method = None;
        let mut timestamp = None;
        let mut extra = BTreeMap::new();
        for pair in params.split(',').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "securemode" => {
                    let mode = value.parse().map_err(|_| ClientIdError::SecureMode(value.to_owned()))?;
                    secure_mode = Some(mode);
                }
                "signmethod" => {
                    let method =
                        SignMethod::parse(value).ok_or_else(|| ClientIdError::UnknownSignMethod(value.to_owned()))?;
                    sign_method = Some(method);
                }
                "timestamp" => {
                    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(ClientIdError::Timestamp(value.to_owned()));
                    }
                    timestamp = Some(value.to_owned());
                }
                _ => {
                    extra.insert(key.to_owned(), value.to_owned());
                }
            }
        }
        Ok(Self {
            client_id: client_id.to_owned(),
            secure_mode,
            sign_method: sign_method.ok_or(ClientIdError::MissingSignMethod)?,
            timestamp,
            extra,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_seed_example() {
        let id = MqttClientId::parse("12345|securemode=3,signmethod=hmacsha1,timestamp=789|").unwrap();
        assert_eq!(id.client_id, "12345");
        assert_eq!(id.secure_mode, Some(3));
        assert_eq!(id.sign_method, SignMethod::HmacSha1);
        assert_eq!(id.timestamp.as_deref(), Some("789"));
    }

    #[test]
    fn accepts_python_sdk_client_id_with_unknown_keys() {
        let raw = "pk&dn|securemode=3,signmethod=hmacsha1,ext=1,_ss=1,lan=Python,_v=1.2.13,timestamp=1700000000|";
        let id = MqttClientId::parse(raw).unwrap();
        assert_eq!(id.client_id, "pk&dn");
        assert_eq!(id.extra.get("lan").map(String::as_str), Some("Python"));
        assert_eq!(id.timestamp.as_deref(), Some("1700000000"));
    }

    #[test]
    fn timestamp_may_be_absent_or_milliseconds() {
        let id = MqttClientId::parse("c|securemode=3,signmethod=hmacSha256|").unwrap();
        assert_eq!(id.timestamp, None);
        let id = MqttClientId::parse("c|signmethod=hmacmd5,timestamp=1700000000123|").unwrap();
        assert_eq!(id.timestamp.as_deref(), Some("1700000000123"));
    }

    #[test]
    fn refuses_malformed_ids() {
        assert_eq!(MqttClientId::parse(""), Err(ClientIdError::Empty));
        assert_eq!(MqttClientId::parse("plain"), Err(ClientIdError::Format));
        assert_eq!(MqttClientId::parse("a|signmethod=hmacsha1"), Err(ClientIdError::Format));
        assert_eq!(MqttClientId::parse("|signmethod=hmacsha1|"), Err(ClientIdError::Length));
        assert_eq!(MqttClientId::parse("a|securemode=3|"), Err(ClientIdError::MissingSignMethod));
        assert!(matches!(MqttClientId::parse("a|signmethod=sha9|"), Err(ClientIdError::UnknownSignMethod(_))));
        assert!(matches!(
            MqttClientId::parse("a|signmethod=hmacsha1,timestamp=12a|"),
            Err(ClientIdError::Timestamp(_))
        ));
    }
}
