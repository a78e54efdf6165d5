//! The one error type at service boundaries, mapped to HTTP and gRPC status in one place each
//! (the gateway's `error.rs`).

/// What went wrong in a service call, in terms a caller can act on.
// Adjacently tagged: an internally tagged enum cannot serialize the variants that hold a bare
// string, and those would lose their kind on the way through a gRPC status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "camelCase")]
pub enum ServiceError {
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("{what} already exists")]
    AlreadyExists { what: String },
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("missing or unknown API key")]
    Unauthenticated,
    #[error("{0}")]
    PermissionDenied(String),
    #[error("conflicting concurrent update of {what}, retry")]
    Conflict { what: String },
    #[error("{0}")]
    TooManyRequests(String),
    /// The command needs the device online (send it with `ttlMs` to have it queued).
    #[error("device {device} is offline; send with ttlMs to queue the command")]
    DeviceOffline { device: String },
    #[error("service unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    /// The gRPC status for this error; the error itself rides in the details, so the client
    /// gets back exactly what the service said.
    pub fn to_status(&self) -> tonic::Status {
        use tonic::Code;
        let code = match self {
            Self::NotFound { .. } => Code::NotFound,
            Self::AlreadyExists { .. } => Code::AlreadyExists,
            Self::Invalid { .. } => Code::InvalidArgument,
            Self::Unauthenticated => Code::Unauthenticated,
            Self::PermissionDenied(_) => Code::PermissionDenied,
            Self::Conflict { .. } => Code::Aborted,
            Self::TooManyRequests(_) => Code::ResourceExhausted,
            Self::DeviceOffline { .. } => Code::FailedPrecondition,
            Self::Unavailable(_) => Code::Unavailable,
            Self::Internal(_) => Code::Internal,
        };
        let details = serde_json::to_vec(self).unwrap_or_default();
        tonic::Status::with_details(code, self.to_string(), details.into())
    }

    /// The error a gRPC status carries (transport failures become `Unavailable`).
    pub fn from_status(status: &tonic::Status) -> Self {
        if let Ok(err) = serde_json::from_slice(status.details()) {
            return err;
        }
        let message = status.message().to_owned();
        match status.code() {
            tonic::Code::NotFound => Self::NotFound { what: message },
            tonic::Code::InvalidArgument => Self::Invalid { field: "request".into(), reason: message },
            tonic::Code::Unauthenticated => Self::Unauthenticated,
            tonic::Code::PermissionDenied => Self::PermissionDenied(message),
            tonic::Code::Internal => Self::Internal(message),
            _ => Self::Unavailable(message),
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::NotFound { what: what.into() }
    }

    pub fn invalid(field: impl Into<String>, reason: impl ToString) -> Self {
        Self::Invalid { field: field.into(), reason: reason.to_string() }
    }

    /// The stable code clients match on (`"code"` in API error bodies).
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "NotFound",
            Self::AlreadyExists { .. } => "AlreadyExists",
            Self::Invalid { .. } => "InvalidArgument",
            Self::Unauthenticated => "Unauthenticated",
            Self::PermissionDenied(_) => "PermissionDenied",
            Self::Conflict { .. } => "Conflict",
            Self::TooManyRequests(_) => "TooManyRequests",
            Self::DeviceOffline { .. } => "DeviceOffline",
            Self::Unavailable(_) => "Unavailable",
            Self::Internal(_) => "Internal",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_survives_a_grpc_status() {
        let errors = [
            ServiceError::not_found("device pk/dn"),
            ServiceError::AlreadyExists { what: "product pk".into() },
            ServiceError::invalid("productKey", "too long"),
            ServiceError::Unauthenticated,
            ServiceError::PermissionDenied("not yours".into()),
            ServiceError::Conflict { what: "shadow".into() },
            ServiceError::TooManyRequests("slow down".into()),
            ServiceError::DeviceOffline { device: "pk/dn".into() },
            ServiceError::Unavailable("store down".into()),
            ServiceError::Internal("bug".into()),
        ];
        for error in errors {
            assert_eq!(ServiceError::from_status(&error.to_status()), error);
        }
    }
}
