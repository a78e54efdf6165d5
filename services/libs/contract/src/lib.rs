//! The interfaces services offer each other, in domain types.
//!
//! One trait per service. In embedded mode a service implements its trait directly and the
//! others hold it as `Arc<dyn Trait>`; in cluster mode a gRPC client implements the same trait,
//! so calling code is the same in both modes (ARCHITECTURE.md, "Layout").

pub mod auth;
pub mod command;
mod error;
pub mod thing;

pub use auth::{
    AuthGrpcClient, AuthGrpcServer, AuthService, Caller, DataFormat, Device, DeviceAuthError, DeviceCredentials,
    DeviceSession, Dialect, IssuedApiKey, MAX_SUB_DEVICES_PER_GATEWAY, MAX_SUB_DEVICES_PER_REQUEST, NewDevice,
    NewProduct, NodeType, Page, Product, SubDevice, SubDeviceSign, Tenant, TopologyError,
};
pub use command::{
    Command, CommandGrpcClient, CommandGrpcServer, CommandService, CommandStatus, Invocation, RrpcCode, RrpcOutcome,
    SendOptions,
};
pub use error::ServiceError;
pub use thing::{
    DesiredValue, DeviceMessage, DeviceRef, DeviceRequest, PropertySnapshot, Tag, ThingGrpcClient, ThingGrpcServer,
    ThingService, TimedValue,
};

/// Milliseconds since the Unix epoch, the unit of every time value in the API.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}
