//! The one error type at service boundaries, mapped to HTTP and gRPC status in one place each
//! (the gateway's `error.rs`).

/// What went wrong in a service call, in terms a caller can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
    #[error("service unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
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
            Self::Unavailable(_) => "Unavailable",
            Self::Internal(_) => "Internal",
        }
    }
}
