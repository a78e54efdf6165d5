//! The Aliyun MQTT CONNECT sign: `hex(HMAC(deviceSecret, content))`, where `content` is
//! `clientId{..}deviceName{..}productKey{..}timestamp{..}` (parameters sorted by name, no
//! separators; `timestamp` only when the client id carries one).

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};

/// The HMAC algorithm a device signs with (`signmethod=` in its client id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignMethod {
    HmacMd5,
    HmacSha1,
    HmacSha256,
}

/// The signed fields of a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignParams<'a> {
    pub client_id: &'a str,
    pub device_name: &'a str,
    pub product_key: &'a str,
    pub timestamp: Option<&'a str>,
}

// === impl SignMethod ===

impl SignMethod {
    /// Parses `signmethod`, case-insensitively (`hmacSha1` and `hmacsha1` both appear in the wild).
    pub fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_lowercase().as_str() {
            "hmacmd5" => Some(Self::HmacMd5),
            "hmacsha1" => Some(Self::HmacSha1),
            "hmacsha256" => Some(Self::HmacSha256),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::HmacMd5 => "hmacmd5",
            Self::HmacSha1 => "hmacsha1",
            Self::HmacSha256 => "hmacsha256",
        }
    }

    /// Computes the MQTT password for `params`, as upper-case hex.
    pub fn sign(self, secret: &str, params: &SignParams<'_>) -> String {
        hex::encode_upper(self.mac(secret.as_bytes(), params.content().as_bytes()))
    }

    /// Checks a password in constant time; hex case does not matter.
    pub fn verify(self, secret: &str, params: &SignParams<'_>, password: &[u8]) -> bool {
        let Ok(password) = std::str::from_utf8(password) else {
            return false;
        };
        let Ok(given) = hex::decode(password.trim()) else {
            return false;
        };
        let content = params.content();
        let key = secret.as_bytes();
        match self {
            Self::HmacMd5 => verify_mac::<Hmac<md5::Md5>>(key, content.as_bytes(), &given),
            Self::HmacSha1 => verify_mac::<Hmac<sha1::Sha1>>(key, content.as_bytes(), &given),
            Self::HmacSha256 => verify_mac::<Hmac<sha2::Sha256>>(key, content.as_bytes(), &given),
        }
    }

    fn mac(self, key: &[u8], content: &[u8]) -> Vec<u8> {
        match self {
            Self::HmacMd5 => compute_mac::<Hmac<md5::Md5>>(key, content),
            Self::HmacSha1 => compute_mac::<Hmac<sha1::Sha1>>(key, content),
            Self::HmacSha256 => compute_mac::<Hmac<sha2::Sha256>>(key, content),
        }
    }
}

fn compute_mac<M: Mac + hmac::digest::KeyInit>(key: &[u8], content: &[u8]) -> Vec<u8> {
    let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key).expect("hmac accepts any key length");
    mac.update(content);
    mac.finalize().into_bytes().to_vec()
}

fn verify_mac<M: Mac + hmac::digest::KeyInit>(key: &[u8], content: &[u8], given: &[u8]) -> bool {
    let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key).expect("hmac accepts any key length");
    mac.update(content);
    mac.verify_slice(given).is_ok()
}

// === impl SignParams ===

impl SignParams<'_> {
    /// The signed content: parameters sorted by name, each written as name + value.
    pub fn content(&self) -> String {
        let mut content =
            format!("clientId{}deviceName{}productKey{}", self.client_id, self.device_name, self.product_key);
        if let Some(ts) = self.timestamp {
            content.push_str("timestamp");
            content.push_str(ts);
        }
        content
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The worked example of PROTOCOL.md B.1 (seed 003) and the extra vectors computed beside it.
    const EXAMPLE: SignParams<'static> =
        SignParams { client_id: "12345", device_name: "device", product_key: "pk", timestamp: Some("789") };

    #[test]
    fn content_matches_the_seed() {
        assert_eq!(EXAMPLE.content(), "clientId12345deviceNamedeviceproductKeypktimestamp789");
    }

    #[test]
    fn worked_example_vectors() {
        assert_eq!(SignMethod::HmacSha1.sign("secret", &EXAMPLE), "FAFD82A3D602B37FB0FA8B7892F24A477F851A14");
        assert_eq!(
            SignMethod::HmacSha256.sign("secret", &EXAMPLE),
            "6074A46A91B1EBB2CC4EA42790AD0E80202C9843859FC292E57C4EB19FAD9E57"
        );
        assert_eq!(SignMethod::HmacMd5.sign("secret", &EXAMPLE), "14B198324FE55E1D3C88F2E705E201EE");
    }

    #[test]
    fn verify_ignores_hex_case_and_refuses_wrong_secret() {
        let lower = b"fafd82a3d602b37fb0fa8b7892f24a477f851a14";
        assert!(SignMethod::HmacSha1.verify("secret", &EXAMPLE, lower));
        assert!(!SignMethod::HmacSha1.verify("secreT", &EXAMPLE, lower));
        assert!(!SignMethod::HmacSha256.verify("secret", &EXAMPLE, lower));
        assert!(!SignMethod::HmacSha1.verify("secret", &EXAMPLE, b"not hex"));
        assert!(!SignMethod::HmacSha1.verify("secret", &EXAMPLE, &[0xff, 0xfe]));
    }

    #[test]
    fn timestamp_is_signed_only_when_present() {
        let params = SignParams { timestamp: None, ..EXAMPLE };
        assert_eq!(params.content(), "clientId12345deviceNamedeviceproductKeypk");
    }

    #[test]
    fn sign_method_names_are_case_insensitive() {
        assert_eq!(SignMethod::parse("hmacSha256"), Some(SignMethod::HmacSha256));
        assert_eq!(SignMethod::parse("HMACMD5"), Some(SignMethod::HmacMd5));
        assert_eq!(SignMethod::parse("sha1"), None);
    }
}
