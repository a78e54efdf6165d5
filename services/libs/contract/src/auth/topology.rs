//! Gateways and their sub-devices (Aliyun's topology): the domain types of the auth service's
//! topology methods and the one error they share, which carries the Alink code a gateway's
//! request is answered with.

use serde::{Deserialize, Serialize};
use tether_model::{AlinkCode, DeviceKey, DeviceName, ProductKey, SignMethod};

use crate::ServiceError;

/// Most sub-devices one gateway's topology may hold (Aliyun's limit); beyond it, 6400.
pub const MAX_SUB_DEVICES_PER_GATEWAY: usize = 1500;

/// Most sub-devices one `thing/topo/add` or `thing/sub/register` may name (Aliyun: 30 and 50;
/// one limit here, the larger).
pub const MAX_SUB_DEVICES_PER_REQUEST: usize = 50;

/// A sub-device's proof of identity, as a gateway sends it in `thing/topo/add` and
/// `combine/login`: the Aliyun sign over `clientId{..}deviceName{..}productKey{..}timestamp{..}`
/// with the sub-device's own secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubDeviceSign {
    pub device: DeviceKey,
    /// Signed exactly as sent (the official SDK's client ids carry `|..|` suffixes; they are
    /// part of the signed content).
    pub client_id: String,
    pub timestamp: Option<String>,
    pub sign_method: SignMethod,
    /// Hex, either case.
    pub sign: String,
}

/// A sub-device in a gateway's topology.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubDevice {
    pub product_key: ProductKey,
    pub device_name: DeviceName,
    pub iot_id: String,
}

/// Why a topology request or a sub-device login is refused; [`TopologyError::alink_code`] is
/// what the gateway gets in its reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "topologyError", rename_all = "camelCase")]
pub enum TopologyError {
    #[error("sign of sub-device {device} does not match")]
    BadSign { device: DeviceKey },
    #[error("device {device} not found")]
    DeviceNotFound { device: DeviceKey },
    #[error("product {product_key} not found")]
    ProductNotFound { product_key: ProductKey },
    #[error("device {device} is disabled")]
    Disabled { device: DeviceKey },
    #[error("sub-device {device} is not in this gateway's topology")]
    NoRelation { device: DeviceKey },
    #[error("a gateway cannot be its own sub-device")]
    OwnSubDevice,
    #[error("the gateway already has {max} sub-devices")]
    TooManySubDevices { max: usize },
    #[error("device {device} is not a gateway")]
    NotGateway { device: DeviceKey },
    #[error("invalid sub-device name: {reason}")]
    BadDeviceName { reason: String },
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("auth unavailable: {reason}")]
    Unavailable { reason: String },
}

// === impl TopologyError ===

impl TopologyError {
    pub fn invalid(field: impl Into<String>, reason: impl ToString) -> Self {
        Self::Invalid { field: field.into(), reason: reason.to_string() }
    }

    /// The Alink code of the reply (PROTOCOL.md B.2, topo codes).
    pub fn alink_code(&self) -> AlinkCode {
        match self {
            Self::BadSign { .. } => AlinkCode::SignFailed,
            Self::DeviceNotFound { .. } => AlinkCode::DeviceNotFound,
            Self::ProductNotFound { .. } => AlinkCode::ProductNotFound,
            Self::Disabled { .. } => AlinkCode::DeviceDisabled,
            Self::NoRelation { .. } => AlinkCode::TopoRelationNotFound,
            Self::OwnSubDevice => AlinkCode::TopoRelationSelf,
            Self::TooManySubDevices { .. } => AlinkCode::TooManySubDevices,
            Self::BadDeviceName { .. } => AlinkCode::BadSubDeviceName,
            Self::NotGateway { .. } | Self::Invalid { .. } => AlinkCode::ParamError,
            Self::Unavailable { .. } => AlinkCode::SystemError,
        }
    }

    /// The gRPC status; the error rides in the details, as [`ServiceError`]s do.
    pub fn to_status(&self) -> tonic::Status {
        use tonic::Code;
        let code = match self {
            Self::DeviceNotFound { .. } | Self::ProductNotFound { .. } | Self::NoRelation { .. } => Code::NotFound,
            Self::BadSign { .. } => Code::Unauthenticated,
            Self::Disabled { .. } | Self::NotGateway { .. } => Code::PermissionDenied,
            Self::TooManySubDevices { .. } => Code::ResourceExhausted,
            Self::OwnSubDevice | Self::BadDeviceName { .. } | Self::Invalid { .. } => Code::InvalidArgument,
            Self::Unavailable { .. } => Code::Unavailable,
        };
        let details = serde_json::to_vec(self).unwrap_or_default();
        tonic::Status::with_details(code, self.to_string(), details.into())
    }

    /// The error a gRPC status carries (transport failures become `Unavailable`).
    pub fn from_status(status: &tonic::Status) -> Self {
        match serde_json::from_slice(status.details()) {
            Ok(err) => err,
            Err(_) => Self::Unavailable { reason: status.message().to_owned() },
        }
    }
}

impl From<ServiceError> for TopologyError {
    fn from(err: ServiceError) -> Self {
        match err {
            ServiceError::Invalid { field, reason } => Self::Invalid { field, reason },
            other => Self::Unavailable { reason: other.to_string() },
        }
    }
}

/// For the tenant API, which speaks [`ServiceError`].
impl From<TopologyError> for ServiceError {
    fn from(err: TopologyError) -> Self {
        match err {
            TopologyError::DeviceNotFound { device } => Self::not_found(format!("device {device}")),
            TopologyError::ProductNotFound { product_key } => Self::not_found(format!("product {product_key}")),
            TopologyError::NoRelation { device } => Self::not_found(format!("topo relation of {device}")),
            TopologyError::Invalid { field, reason } => Self::Invalid { field, reason },
            TopologyError::NotGateway { .. } => Self::invalid("deviceName", err.to_string()),
            TopologyError::OwnSubDevice | TopologyError::BadDeviceName { .. } => Self::invalid("subDevice", err),
            TopologyError::BadSign { .. } | TopologyError::Disabled { .. } => Self::PermissionDenied(err.to_string()),
            TopologyError::TooManySubDevices { .. } => Self::TooManyRequests(err.to_string()),
            TopologyError::Unavailable { reason } => Self::Unavailable(reason),
        }
    }
}
