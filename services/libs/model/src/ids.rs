//! Identifier newtypes. Each validates once at construction, so code holding one never re-checks.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} must be {min} to {max} characters long")]
    Length { kind: &'static str, min: usize, max: usize },
    #[error("{kind} may only contain {allowed}")]
    Charset { kind: &'static str, allowed: &'static str },
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $min:expr, $max:expr, $allowed_desc:literal, $allowed:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps the identifier.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                let len = value.chars().count();
                if !($min..=$max).contains(&len) {
                    return Err(IdError::Length { kind: $kind, min: $min, max: $max });
                }
                let allowed: fn(char) -> bool = $allowed;
                if !value.chars().all(allowed) {
                    return Err(IdError::Charset { kind: $kind, allowed: $allowed_desc });
                }
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

fn id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

string_id!(
    /// A tenant: the owner of products, devices and API keys.
    TenantId, "tenant id", 1, 64, "letters, digits, '_' and '-'", id_char
);
string_id!(
    /// A product key, unique across the platform (Aliyun: 11 characters; any 1–64 accepted).
    ProductKey, "productKey", 1, 64, "letters, digits, '_' and '-'", id_char
);
string_id!(
    /// A device name, unique within its product (Aliyun's charset: letters, digits, `-_@.:`).
    DeviceName, "deviceName", 1, 64, "letters, digits and -_@.:",
    |c| c.is_ascii_alphanumeric() || "-_@.:".contains(c)
);
string_id!(
    /// The id of an Alink request or a downlink message: an opaque string, echoed byte for byte.
    MessageId, "message id", 1, 128, "printable characters", |c| !c.is_control()
);

/// A device's identity on the wire: its product key and device name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeviceKey {
    pub product_key: ProductKey,
    pub device_name: DeviceName,
}

// === impl DeviceKey ===

impl DeviceKey {
    pub fn new(product_key: ProductKey, device_name: DeviceName) -> Self {
        Self { product_key, device_name }
    }

    /// Parses the `productKey` and `deviceName` strings of a request.
    pub fn parse(product_key: &str, device_name: &str) -> Result<Self, IdError> {
        Ok(Self::new(ProductKey::new(product_key)?, DeviceName::new(device_name)?))
    }
}

impl fmt::Display for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.product_key, self.device_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_follow_aliyun_charset() {
        assert!(DeviceName::new("dev-1_a@b.c:d").is_ok());
        assert!(DeviceName::new("").is_err());
        assert!(DeviceName::new("a/b").is_err());
        assert!(DeviceName::new("a+b").is_err());
        assert!(DeviceName::new("x".repeat(65)).is_err());
    }

    #[test]
    fn product_keys_refuse_topic_characters() {
        assert!(ProductKey::new("a1B2c3D4e5F").is_ok());
        for bad in ["a/b", "a#", "+", "a b", ""] {
            assert!(ProductKey::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_deserialize_with_validation() {
        let ok: Result<ProductKey, _> = serde_json::from_str("\"pk1\"");
        assert!(ok.is_ok());
        let bad: Result<ProductKey, _> = serde_json::from_str("\"p/k\"");
        assert!(bad.is_err());
    }
}
