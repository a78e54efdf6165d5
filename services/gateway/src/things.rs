//! The thing resources of API.md: a product's thing model (TSL) and, per device, the latest
//! properties, tags, desired properties and shadow, served by the thing service.
//!
//! The thing service trusts its caller, so every handler here takes an [`OwnedProduct`] or
//! [`OwnedDevice`]: the path's product or device checked through the auth service to be the
//! caller's (another tenant's answers 404) before the thing service is asked.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tether_contract::{DesiredValue, ServiceError, Tag, TimedValue};
use tether_model::{Tsl, TslError};
use utoipa::ToSchema;

use crate::GatewayDeps;
use crate::error::ApiError;
use crate::extract::{Body, OwnedDevice, OwnedProduct};

type Deps = State<Arc<GatewayDeps>>;
type ApiResult<T> = Result<T, ApiError>;

/// The thing routes, merged into the `/api/v1` router.
pub fn router() -> Router<Arc<GatewayDeps>> {
    Router::new()
        .route("/products/{product_key}/thing-model", get(get_thing_model).put(put_thing_model))
        .route("/products/{product_key}/devices/{device_name}/properties", get(latest_properties))
        .route("/products/{product_key}/devices/{device_name}/tags", get(device_tags))
        .route(
            "/products/{product_key}/devices/{device_name}/desired-properties",
            get(desired_properties).put(set_desired_properties),
        )
        .route("/products/{product_key}/devices/{device_name}/shadow", get(get_shadow).put(update_shadow))
}

// === DTOs ===

/// Aliyun TSL JSON, as the Aliyun console exports it. Numbers in specs may be strings (`"min": "0"`)
/// or numbers and are returned as strings; Aliyun's generated `post` event and `set`/`get` services
/// are accepted and not returned.
#[derive(ToSchema)]
#[schema(as = ThingModel)]
#[expect(dead_code, reason = "documents the body, which is read by Tsl::from_json and written by Tsl::to_json")]
pub struct ThingModelSchema {
    /// Aliyun's schema URL, kept as given.
    schema: Option<String>,
    /// Aliyun's `profile` (`productKey`, `version`, ...), kept as given.
    profile: Option<Map<String, Value>>,
    /// `{identifier, name, accessMode: "r"|"rw", required?, desc?, dataType: {type, specs}}`.
    properties: Vec<Map<String, Value>>,
    /// `{identifier, name, type: "info"|"alert"|"error", outputData: [{identifier, name, dataType}]}`.
    events: Vec<Map<String, Value>>,
    /// `{identifier, name, callType: "sync"|"async", inputData: [..], outputData: [..]}`.
    services: Vec<Map<String, Value>>,
}

/// `GET .../properties`: the latest value of each property the device reported.
#[derive(Debug, Serialize, ToSchema)]
pub struct LatestProperties {
    pub items: BTreeMap<String, PropertyValueView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PropertyValueView {
    pub value: Value,
    /// When it was measured (the device's `time`, else when it arrived), ms.
    pub time: i64,
}

/// A device tag, as the device set it with `thing.deviceinfo.update`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TagView {
    pub attr_key: String,
    pub attr_value: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TagList {
    /// In key order.
    pub items: Vec<TagView>,
}

/// The desired property values of a device [QueryDeviceDesiredProperty].
#[derive(Debug, Serialize, ToSchema)]
pub struct DesiredProperties {
    pub items: BTreeMap<String, DesiredValueView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DesiredValueView {
    pub value: Value,
    /// Goes up by one with every set of this property.
    pub version: i64,
    /// When it was set, ms.
    pub time: i64,
}

/// Desired values to set [SetDeviceDesiredProperty]: with a thing model, only its read-write
/// properties, with conforming values.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetDesiredRequest {
    pub items: Map<String, Value>,
}

/// Aliyun UpdateDeviceShadow's `ShadowMessage`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShadowUpdateRequest {
    /// `update`.
    pub method: Option<String>,
    pub state: Option<ShadowStateUpdate>,
    /// Greater than the shadow's version (the document takes it), `0` to skip the check (the
    /// version goes up by one), or `-1` to clear the shadow first (the version becomes 0).
    pub version: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShadowStateUpdate {
    /// Attributes to set; a `null` value removes one.
    pub desired: Option<Value>,
}

/// Aliyun's shadow document; times are Unix seconds.
#[derive(ToSchema)]
#[schema(as = ShadowDocument)]
#[expect(dead_code, reason = "documents the thing service's document, which is passed on as it is")]
pub struct ShadowDocumentSchema {
    /// `{desired?: {..}, reported?: {..}}`: a section is absent when it has no attribute.
    state: Map<String, Value>,
    /// `{desired?: {attr: {timestamp}}, reported?: {..}}`: when each attribute was last written.
    metadata: Map<String, Value>,
    /// When the shadow was last written, Unix seconds.
    timestamp: i64,
    version: i64,
}

// === handlers ===

#[utoipa::path(put, path = "/api/v1/products/{productKey}/thing-model", request_body = ThingModelSchema,
    responses((status = 200, body = ThingModelSchema), (status = 400, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody)))]
pub async fn put_thing_model(
    State(deps): Deps,
    OwnedProduct(pk): OwnedProduct,
    Body(body): Body<Value>,
) -> ApiResult<Json<Value>> {
    let tsl = Tsl::from_json(&body).map_err(|error| match error {
        TslError::Invalid { path, reason } => ServiceError::invalid(path, reason),
        TslError::Json(reason) => ServiceError::invalid("body", reason),
    })?;
    let stored = tsl.to_json();
    deps.thing.put_thing_model(&pk, tsl).await?;
    Ok(Json(stored))
}

#[utoipa::path(get, path = "/api/v1/products/{productKey}/thing-model",
    responses((status = 200, body = ThingModelSchema), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_thing_model(State(deps): Deps, OwnedProduct(pk): OwnedProduct) -> ApiResult<Json<Value>> {
    let tsl = deps.thing.get_thing_model(&pk).await?;
    let tsl = tsl.ok_or_else(|| ServiceError::not_found(format!("thing model of product {pk}")))?;
    Ok(Json(tsl.to_json()))
}

#[utoipa::path(get, path = "/api/v1/products/{productKey}/devices/{deviceName}/properties",
    responses((status = 200, body = LatestProperties), (status = 404, body = crate::error::ErrorBody)))]
pub async fn latest_properties(
    State(deps): Deps,
    OwnedDevice(device): OwnedDevice,
) -> ApiResult<Json<LatestProperties>> {
    let snapshot = deps.thing.latest_properties(&device).await?;
    let items = snapshot.into_iter().map(|(id, value)| (id, value.into())).collect();
    Ok(Json(LatestProperties { items }))
}

#[utoipa::path(get, path = "/api/v1/products/{productKey}/devices/{deviceName}/tags",
    responses((status = 200, body = TagList), (status = 404, body = crate::error::ErrorBody)))]
pub async fn device_tags(State(deps): Deps, OwnedDevice(device): OwnedDevice) -> ApiResult<Json<TagList>> {
    let tags = deps.thing.tags(&device).await?;
    Ok(Json(TagList { items: tags.into_iter().map(TagView::from).collect() }))
}

#[utoipa::path(get, path = "/api/v1/products/{productKey}/devices/{deviceName}/desired-properties",
    responses((status = 200, body = DesiredProperties), (status = 404, body = crate::error::ErrorBody)))]
pub async fn desired_properties(
    State(deps): Deps,
    OwnedDevice(device): OwnedDevice,
) -> ApiResult<Json<DesiredProperties>> {
    let desired = deps.thing.desired_properties(&device).await?;
    Ok(Json(DesiredProperties::from(desired)))
}

#[utoipa::path(put, path = "/api/v1/products/{productKey}/devices/{deviceName}/desired-properties",
    request_body = SetDesiredRequest,
    responses((status = 200, body = DesiredProperties, description = "every desired value of the device"),
        (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub async fn set_desired_properties(
    State(deps): Deps,
    OwnedDevice(device): OwnedDevice,
    Body(req): Body<SetDesiredRequest>,
) -> ApiResult<Json<DesiredProperties>> {
    // A product without a thing model accepts any property, as for property posts.
    if let Some(tsl) = deps.thing.get_thing_model(&device.product_key).await? {
        tsl.check_set(&req.items).map_err(|e| ServiceError::invalid(format!("items.{}", e.field), e.reason))?;
    }
    let desired = deps.thing.set_desired_properties(&device, req.items).await?;
    Ok(Json(DesiredProperties::from(desired)))
}

#[utoipa::path(get, path = "/api/v1/products/{productKey}/devices/{deviceName}/shadow",
    responses((status = 200, body = ShadowDocumentSchema), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_shadow(State(deps): Deps, OwnedDevice(device): OwnedDevice) -> ApiResult<Json<Value>> {
    let document = deps.thing.get_shadow(&device).await?;
    let document = document.ok_or_else(|| ServiceError::not_found(format!("shadow of device {device}")))?;
    Ok(Json(document))
}

/// Sets the shadow's desired state [UpdateDeviceShadow]; an online device gets a `control` push
/// on `/shadow/get/{productKey}/{deviceName}`.
#[utoipa::path(put, path = "/api/v1/products/{productKey}/devices/{deviceName}/shadow",
    request_body = ShadowUpdateRequest,
    responses((status = 200, body = ShadowDocumentSchema), (status = 400, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody)))]
pub async fn update_shadow(
    State(deps): Deps,
    OwnedDevice(device): OwnedDevice,
    Body(req): Body<ShadowUpdateRequest>,
) -> ApiResult<Json<Value>> {
    let ShadowUpdateRequest { method, state, version } = req;
    if method.as_deref() != Some("update") {
        return Err(ServiceError::invalid("method", "must be \"update\"").into());
    }
    let desired = match state.and_then(|s| s.desired) {
        Some(Value::Object(desired)) if !desired.is_empty() => desired,
        _ => return Err(ServiceError::invalid("state.desired", "must be an object of at least one attribute").into()),
    };
    let version = version.ok_or_else(|| {
        ServiceError::invalid(
            "version",
            "missing: give the shadow's version plus one, 0 to skip the check or -1 to reset",
        )
    })?;
    let document = deps.thing.update_shadow(&device, desired, version).await?;
    Ok(Json(document))
}

// === conversions ===

impl From<TimedValue> for PropertyValueView {
    fn from(v: TimedValue) -> Self {
        Self { value: v.value, time: v.time }
    }
}

impl From<Tag> for TagView {
    fn from(t: Tag) -> Self {
        Self { attr_key: t.attr_key, attr_value: t.attr_value }
    }
}

impl From<BTreeMap<String, DesiredValue>> for DesiredProperties {
    fn from(desired: BTreeMap<String, DesiredValue>) -> Self {
        let items = desired
            .into_iter()
            .map(|(id, d)| (id, DesiredValueView { value: d.value, version: d.version, time: d.time }))
            .collect();
        Self { items }
    }
}
