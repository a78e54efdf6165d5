//! Where the thing service keeps its records in the [`KvStore`](tether_store::KvStore); reads and
//! writes go through [`tether_store::Records`].

use tether_model::{DeviceKey, ProductKey};

pub(crate) fn model_key(product_key: &ProductKey) -> String {
    format!("thing/model/{product_key}")
}

/// `thing/{kind}/{pk}/{dn}`: a device's record of one kind.
pub(crate) fn device_key(kind: &str, device: &DeviceKey) -> String {
    format!("thing/{kind}/{}/{}", device.product_key, device.device_name)
}
