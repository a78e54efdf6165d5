//! Request extractors: the bearer API key, and JSON bodies whose errors use the API's error shape.

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use tether_contract::{Caller, ServiceError};

use crate::GatewayDeps;
use crate::error::ApiError;

/// The authenticated caller of a request.
pub struct Auth(pub Caller);

/// A JSON body; a malformed one is a 400 `InvalidArgument` naming what is wrong.
pub struct Body<T>(pub T);

impl FromRequestParts<Arc<GatewayDeps>> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, deps: &Arc<GatewayDeps>) -> Result<Self, ApiError> {
        let header = parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let key = header.strip_prefix("Bearer ").map(str::trim).filter(|k| !k.is_empty());
        let key = key.ok_or(ServiceError::Unauthenticated)?;
        Ok(Self(deps.auth.authenticate_api_key(key).await?))
    }
}

impl<T: DeserializeOwned> FromRequest<Arc<GatewayDeps>> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<GatewayDeps>) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(ServiceError::invalid("body", rejection.body_text()).into()),
        }
    }
}
