//! Conversions between the command service's domain types and its protobuf messages. Proto
//! types stop here: what comes off the wire is validated once, in `TryFrom`, and JSON text
//! (items, args, reply data) is parsed here and nowhere else.

use serde_json::Value;
use tether_model::{DeviceName, ProductKey};
use tether_proto::v1 as pb;

use super::{Command, CommandStatus, RrpcCode, RrpcOutcome};
use crate::ServiceError;
use crate::thing::wire::json_value;

impl From<CommandStatus> for pb::CommandStatus {
    fn from(status: CommandStatus) -> Self {
        match status {
            CommandStatus::Queued => Self::Queued,
            CommandStatus::Sent => Self::Sent,
            CommandStatus::Delivered => Self::Delivered,
            CommandStatus::Succeeded => Self::Succeeded,
            CommandStatus::Failed => Self::Failed,
            CommandStatus::Expired => Self::Expired,
        }
    }
}

pub(crate) fn command_status(raw: i32) -> Result<CommandStatus, ServiceError> {
    match pb::CommandStatus::try_from(raw) {
        Ok(pb::CommandStatus::Queued) => Ok(CommandStatus::Queued),
        Ok(pb::CommandStatus::Sent) => Ok(CommandStatus::Sent),
        Ok(pb::CommandStatus::Delivered) => Ok(CommandStatus::Delivered),
        Ok(pb::CommandStatus::Succeeded) => Ok(CommandStatus::Succeeded),
        Ok(pb::CommandStatus::Failed) => Ok(CommandStatus::Failed),
        Ok(pb::CommandStatus::Expired) => Ok(CommandStatus::Expired),
        Ok(pb::CommandStatus::Unspecified) | Err(_) => {
            Err(ServiceError::invalid("status", format!("{raw} is not a command status")))
        }
    }
}

impl From<RrpcCode> for pb::RrpcCode {
    fn from(code: RrpcCode) -> Self {
        match code {
            RrpcCode::Success => Self::Success,
            RrpcCode::Timeout => Self::Timeout,
            RrpcCode::Offline => Self::Offline,
            RrpcCode::Unknown => Self::Unknown,
        }
    }
}

pub(crate) fn rrpc_code(raw: i32) -> Result<RrpcCode, ServiceError> {
    match pb::RrpcCode::try_from(raw) {
        Ok(pb::RrpcCode::Success) => Ok(RrpcCode::Success),
        Ok(pb::RrpcCode::Timeout) => Ok(RrpcCode::Timeout),
        Ok(pb::RrpcCode::Offline) => Ok(RrpcCode::Offline),
        Ok(pb::RrpcCode::Unknown) => Ok(RrpcCode::Unknown),
        Ok(pb::RrpcCode::Unspecified) | Err(_) => {
            Err(ServiceError::invalid("rrpcCode", format!("{raw} is not an rrpc code")))
        }
    }
}

/// Service arguments: a JSON document; empty text means none (`null`).
pub(crate) fn args(raw: &str) -> Result<Value, ServiceError> {
    if raw.trim().is_empty() { Ok(Value::Null) } else { json_value("args", raw) }
}

impl From<Command> for pb::AsyncCommand {
    fn from(c: Command) -> Self {
        let Command {
            message_id,
            product_key,
            device_name,
            topic,
            method,
            status,
            created_at,
            updated_at,
            expires_at,
            reply_code,
            reply_data,
            reply_message,
        } = c;
        Self {
            message_id,
            product_key: product_key.into(),
            device_name: device_name.into(),
            topic,
            method,
            status: pb::CommandStatus::from(status).into(),
            created_at,
            updated_at,
            expires_at,
            reply_code,
            reply_data_json: reply_data.map(|d| d.to_string()),
            reply_message,
        }
    }
}

impl TryFrom<pb::AsyncCommand> for Command {
    type Error = ServiceError;

    fn try_from(c: pb::AsyncCommand) -> Result<Self, ServiceError> {
        Ok(Self {
            product_key: ProductKey::new(c.product_key).map_err(|e| ServiceError::invalid("productKey", e))?,
            device_name: DeviceName::new(c.device_name).map_err(|e| ServiceError::invalid("deviceName", e))?,
            status: command_status(c.status)?,
            reply_data: c.reply_data_json.as_deref().map(|d| json_value("replyData", d)).transpose()?,
            message_id: c.message_id,
            topic: c.topic,
            method: c.method,
            created_at: c.created_at,
            updated_at: c.updated_at,
            expires_at: c.expires_at,
            reply_code: c.reply_code,
            reply_message: c.reply_message,
        })
    }
}

impl From<RrpcOutcome> for pb::RrpcCallResponse {
    fn from(o: RrpcOutcome) -> Self {
        Self {
            message_id: o.message_id,
            rrpc_code: pb::RrpcCode::from(o.rrpc_code).into(),
            payload: o.payload.map(Into::into),
        }
    }
}

impl TryFrom<pb::RrpcCallResponse> for RrpcOutcome {
    type Error = ServiceError;

    fn try_from(o: pb::RrpcCallResponse) -> Result<Self, ServiceError> {
        Ok(Self { message_id: o.message_id, rrpc_code: rrpc_code(o.rrpc_code)?, payload: o.payload.map(Into::into) })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_status_and_code_crosses_the_wire() {
        use CommandStatus::*;
        for status in [Queued, Sent, Delivered, Succeeded, Failed, Expired] {
            assert_eq!(command_status(pb::CommandStatus::from(status).into()).unwrap(), status);
        }
        for code in [RrpcCode::Success, RrpcCode::Timeout, RrpcCode::Offline, RrpcCode::Unknown] {
            assert_eq!(rrpc_code(pb::RrpcCode::from(code).into()).unwrap(), code);
        }
        assert!(command_status(0).is_err() && command_status(99).is_err());
        assert!(rrpc_code(0).is_err() && rrpc_code(-1).is_err());
    }

    #[test]
    fn a_command_survives_the_round_trip() {
        let command = Command {
            message_id: "42".into(),
            product_key: ProductKey::new("pk").unwrap(),
            device_name: DeviceName::new("dn.1").unwrap(),
            topic: "/sys/pk/dn.1/thing/service/property/set".into(),
            method: "thing.service.property.set".into(),
            status: CommandStatus::Failed,
            created_at: 1,
            updated_at: 2,
            expires_at: Some(3),
            reply_code: Some(460),
            reply_data: Some(json!({"why": [1, 2]})),
            reply_message: Some("bad".into()),
        };
        assert_eq!(Command::try_from(pb::AsyncCommand::from(command.clone())).unwrap(), command);
        assert_eq!(args("").unwrap(), Value::Null);
        assert_eq!(args(r#"{"a":1}"#).unwrap(), json!({"a": 1}));
        assert!(args("{nope").is_err());
    }
}
