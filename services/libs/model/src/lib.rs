//! Tether's device-protocol domain: identifiers, the Aliyun Alink topic grammar, the Alink
//! request/reply codec, MQTT CONNECT signing, client-id parsing and the thing model (TSL).
//!
//! Pure code only: no IO, no async, no clocks. Services call into it from their adapters.

pub mod alink;
pub mod client_id;
pub mod ids;
pub mod shadow;
pub mod sign;
pub mod topic;
pub mod tsl;

pub use alink::{AlinkCode, AlinkReply, AlinkRequest};
pub use client_id::{ClientIdError, MqttClientId};
pub use ids::{DeviceKey, DeviceName, IdError, MessageId, ProductKey, TenantId};
pub use sign::{SignMethod, SignParams};
pub use topic::{SubscribeFilter, Topic, TopicClass, TopicError, TopicOperation};
pub use tsl::{DataError, PropertyCheck, Tsl, TslError};
