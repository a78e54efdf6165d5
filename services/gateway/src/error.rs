//! The one mapping of [`ServiceError`] to HTTP: status plus `{"code","message","requestId"}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tether_contract::ServiceError;
use utoipa::ToSchema;

/// An API error response.
#[derive(Debug)]
pub struct ApiError(pub ServiceError);

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// Stable code to match on, e.g. `NotFound`, `InvalidArgument`.
    pub code: String,
    pub message: String,
    pub request_id: String,
}

impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        Self(err)
    }
}

pub fn status_of(err: &ServiceError) -> StatusCode {
    match err {
        ServiceError::NotFound { .. } => StatusCode::NOT_FOUND,
        ServiceError::AlreadyExists { .. } | ServiceError::Conflict { .. } | ServiceError::DeviceOffline { .. } => {
            StatusCode::CONFLICT
        }
        ServiceError::Invalid { .. } => StatusCode::BAD_REQUEST,
        ServiceError::Unauthenticated => StatusCode::UNAUTHORIZED,
        ServiceError::PermissionDenied(_) => StatusCode::FORBIDDEN,
        ServiceError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
        ServiceError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        ServiceError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status_of(&self.0);
        let request_id = format!("{:016x}", rand::random::<u64>());
        if status.is_server_error() {
            tracing::error!(%request_id, error = %self.0, "api request failed");
        }
        let body = ErrorBody { code: self.0.code().to_owned(), message: self.0.to_string(), request_id };
        (status, Json(body)).into_response()
    }
}
