//! Generated identifiers and secrets, and API key hashing.

use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};

/// `len` random letters and digits.
pub fn random_alnum(len: usize) -> String {
    rand::rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}

/// An Aliyun-shaped product key: 11 letters and digits.
pub fn product_key() -> String {
    random_alnum(11)
}

/// A device secret: 32 letters and digits, as Aliyun issues them.
pub fn device_secret() -> String {
    random_alnum(32)
}

pub fn product_secret() -> String {
    random_alnum(16)
}

pub fn iot_id() -> String {
    random_alnum(20)
}

/// A new API key and its id: `tk_<keyId>_<secret>`.
pub fn api_key() -> (String, String) {
    let key_id = random_alnum(12).to_ascii_lowercase();
    let key = format!("tk_{key_id}_{}", random_alnum(32));
    (key_id, key)
}

/// API keys are stored as their SHA-256.
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}
