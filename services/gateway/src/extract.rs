//! Request extractors: the bearer API key, the caller's product or device named by the path, and
//! JSON bodies whose errors use the API's error shape.

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tether_contract::{Caller, ServiceError};
use tether_model::{DeviceKey, ProductKey};

use crate::GatewayDeps;
use crate::error::ApiError;
use crate::routes::{device_key, product_key};

/// The authenticated caller of a request.
pub struct Auth(pub Caller);

/// The `{product_key}` of the path, checked to be the caller's: another tenant's product is 404.
/// Services that trust their caller (the thing service) are called with it only.
pub struct OwnedProduct(pub ProductKey);

/// The `{product_key}/devices/{device_name}` of the path, checked to be the caller's device:
/// another tenant's is 404.
pub struct OwnedDevice(pub DeviceKey);

/// A JSON body; a malformed one is a 400 `InvalidArgument` naming what is wrong.
pub struct Body<T>(pub T);

impl FromRequestParts<Arc<GatewayDeps>> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, deps: &Arc<GatewayDeps>) -> Result<Self, ApiError> {
        let header = parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        Ok(Self(authenticate(deps, header).await?))
    }
}

/// The caller an `Authorization: Bearer <api-key>` value names (REST header or gRPC metadata).
pub(crate) async fn authenticate(deps: &GatewayDeps, authorization: Option<&str>) -> Result<Caller, ServiceError> {
    let key = authorization.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim).filter(|k| !k.is_empty());
    deps.auth.authenticate_api_key(key.ok_or(ServiceError::Unauthenticated)?).await
}

impl FromRequestParts<Arc<GatewayDeps>> for OwnedProduct {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, deps: &Arc<GatewayDeps>) -> Result<Self, ApiError> {
        let Auth(caller) = Auth::from_request_parts(parts, deps).await?;
        let Path(path) = Path::<ResourcePath>::from_request_parts(parts, deps).await.map_err(path_error)?;
        Ok(Self::check(deps, &caller, product_key(&path.product_key)?).await?)
    }
}

impl OwnedProduct {
    /// `product_key`, once the auth service confirms it is the caller's.
    pub(crate) async fn check(
        deps: &GatewayDeps,
        caller: &Caller,
        product_key: ProductKey,
    ) -> Result<Self, ServiceError> {
        deps.auth.get_product(&caller.tenant, &product_key).await?;
        Ok(Self(product_key))
    }
}

impl FromRequestParts<Arc<GatewayDeps>> for OwnedDevice {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, deps: &Arc<GatewayDeps>) -> Result<Self, ApiError> {
        let Auth(caller) = Auth::from_request_parts(parts, deps).await?;
        let Path(path) = Path::<ResourcePath>::from_request_parts(parts, deps).await.map_err(path_error)?;
        let device_name = path.device_name.ok_or_else(|| ServiceError::invalid("path", "no device name"))?;
        Ok(Self::check(deps, &caller, device_key(&path.product_key, &device_name)?).await?)
    }
}

impl OwnedDevice {
    /// `device`, once the auth service confirms it is the caller's.
    pub(crate) async fn check(deps: &GatewayDeps, caller: &Caller, device: DeviceKey) -> Result<Self, ServiceError> {
        deps.auth.get_device(&caller.tenant, &device).await?;
        Ok(Self(device))
    }
}

/// The product and device a path names, by the parameter names every route uses; other
/// parameters (a service identifier, ...) are the handler's.
#[derive(Deserialize)]
struct ResourcePath {
    product_key: String,
    device_name: Option<String>,
}

fn path_error(rejection: axum::extract::rejection::PathRejection) -> ApiError {
    ServiceError::invalid("path", rejection.body_text()).into()
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
