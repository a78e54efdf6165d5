//! A gateway's sub-devices (Aliyun's topology), for tenants: `GET .../sub-devices`. Gateways
//! change their topology themselves over MQTT (`thing/topo/add|delete`); the auth service owns it.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tether_contract::{ServiceError, SubDevice};
use utoipa::ToSchema;

use crate::GatewayDeps;
use crate::error::ApiError;
use crate::extract::Auth;
use crate::routes::device_key;

/// The topology routes, merged into the `/api/v1` router.
pub fn router() -> Router<Arc<GatewayDeps>> {
    Router::new().route("/products/{product_key}/devices/{device_name}/sub-devices", get(sub_devices))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubDeviceView {
    pub product_key: String,
    pub device_name: String,
    pub iot_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubDeviceList {
    pub items: Vec<SubDeviceView>,
}

/// `GET .../devices/{deviceName}/sub-devices`: the gateway's sub-devices, in key order; 400 for
/// a device that is not a gateway.
#[utoipa::path(get, path = "/api/v1/products/{productKey}/devices/{deviceName}/sub-devices",
    responses((status = 200, body = SubDeviceList), (status = 400, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody)))]
pub async fn sub_devices(
    State(deps): State<Arc<GatewayDeps>>,
    Auth(caller): Auth,
    Path((pk, dn)): Path<(String, String)>,
) -> Result<Json<SubDeviceList>, ApiError> {
    let gateway = device_key(&pk, &dn)?;
    let subs = deps.auth.topology(&caller.tenant, &gateway).await.map_err(ServiceError::from)?;
    Ok(Json(SubDeviceList { items: subs.into_iter().map(SubDeviceView::from).collect() }))
}

impl From<SubDevice> for SubDeviceView {
    fn from(s: SubDevice) -> Self {
        Self { product_key: s.product_key.to_string(), device_name: s.device_name.to_string(), iot_id: s.iot_id }
    }
}
