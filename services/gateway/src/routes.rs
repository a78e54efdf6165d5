//! The REST resources of API.md this release serves: tenants and keys, products and topic
//! classes, devices, enable/disable and status. The thing resources (thing model, properties,
//! tags, desired properties, shadow) are in `things`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tether_contract::{DataFormat, Device, Dialect, NewDevice, NewProduct, NodeType, Product, ServiceError, Tenant};
use tether_model::{DeviceKey, DeviceName, ProductKey, TenantId, TopicClass, TopicOperation};
use utoipa::{IntoParams, ToSchema};

use crate::GatewayDeps;
use crate::error::ApiError;
use crate::extract::{Auth, Body};
use crate::things::TagView;

type Deps = State<Arc<GatewayDeps>>;
type ApiResult<T> = Result<T, ApiError>;

pub fn router(deps: Arc<GatewayDeps>) -> Router {
    let api = Router::new()
        .route("/openapi.json", get(crate::openapi::document))
        .route("/tenants", post(create_tenant).get(list_tenants))
        .route("/tenants/{tenant_id}/keys", post(create_api_key))
        .route("/tenants/{tenant_id}/keys/{key_id}", delete(delete_api_key))
        .route("/products", post(create_product).get(list_products))
        .route("/products/{product_key}", get(get_product).delete(delete_product))
        .route("/products/{product_key}/topics", post(create_topic_class))
        .route("/products/{product_key}/devices", post(register_device).get(list_devices))
        .route(
            "/products/{product_key}/devices/{device_name}",
            get(get_device).delete(delete_device).post(device_action),
        )
        .route("/products/{product_key}/devices/{device_name}/status", get(device_status))
        .merge(crate::things::router())
        .merge(crate::topology::router())
        .merge(crate::commands::router());
    Router::new().nest("/api/v1", api).with_state(deps)
}

// === DTOs ===

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTenantRequest {
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedTenant {
    pub tenant_id: String,
    pub name: String,
    pub key_id: String,
    /// Shown once; store it.
    pub api_key: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantView {
    pub tenant_id: String,
    pub name: String,
    pub created_at: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyView {
    pub key_id: String,
    /// Shown once; store it.
    pub api_key: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateProductRequest {
    pub name: String,
    pub product_key: Option<String>,
    /// `device` (default) or `gateway`.
    pub node_type: Option<String>,
    /// `alink` (default) or `raw`.
    pub data_format: Option<String>,
    /// `alink` (default), `thingscloud` or `iotda`.
    pub dialect: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicClassView {
    pub topic_short_name: String,
    /// `pub`, `sub` or `all`.
    #[schema(value_type = String)]
    pub operation: TopicOperation,
    /// `/{productKey}/${deviceName}/user/{topicShortName}`.
    pub topic_full_name: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductView {
    pub product_key: String,
    pub product_secret: String,
    pub name: String,
    #[schema(value_type = String)]
    pub node_type: NodeType,
    #[schema(value_type = String)]
    pub data_format: DataFormat,
    #[schema(value_type = String)]
    pub dialect: Dialect,
    pub topics: Vec<TopicClassView>,
    pub created_at: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductList {
    pub items: Vec<ProductView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTopicClassRequest {
    pub topic_short_name: String,
    /// `pub`, `sub` or `all`.
    pub operation: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegisterDeviceRequest {
    pub device_name: Option<String>,
    pub device_secret: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceView {
    pub product_key: String,
    pub device_name: String,
    pub device_secret: String,
    pub iot_id: String,
    pub enabled: bool,
    pub created_at: i64,
    /// The device's tags; only in `GET .../devices/{deviceName}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<TagView>>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceList {
    pub items: Vec<DeviceView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct DeviceListQuery {
    /// 1..=100, default 20.
    pub page_size: Option<usize>,
    pub page_token: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceStatusView {
    /// `ONLINE`, `OFFLINE`, `UNACTIVE` (never connected) or `DISABLE`.
    pub status: String,
    /// When the current status began (ms); absent for `UNACTIVE`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_online_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_offline_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
}

// === handlers ===

fn require_admin(caller: &tether_contract::Caller) -> Result<(), ApiError> {
    if caller.admin {
        Ok(())
    } else {
        Err(ServiceError::PermissionDenied("only the admin key manages tenants".into()).into())
    }
}

pub(crate) fn product_key(raw: &str) -> Result<ProductKey, ApiError> {
    ProductKey::new(raw).map_err(|e| ServiceError::invalid("productKey", e).into())
}

pub(crate) fn device_key(pk: &str, dn: &str) -> Result<DeviceKey, ApiError> {
    let dn = DeviceName::new(dn).map_err(|e| ServiceError::invalid("deviceName", e))?;
    Ok(DeviceKey::new(product_key(pk)?, dn))
}

fn tenant_id(raw: &str) -> Result<TenantId, ApiError> {
    TenantId::new(raw).map_err(|e| ServiceError::invalid("tenantId", e).into())
}

fn parse_choice<T>(field: &str, value: Option<&str>, choices: &[(&str, T)]) -> Result<T, ApiError>
where
    T: Copy + Default,
{
    let Some(value) = value else {
        return Ok(T::default());
    };
    choices.iter().find(|(name, _)| *name == value).map(|(_, v)| *v).ok_or_else(|| {
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        ServiceError::invalid(field, format!("must be one of {}", names.join(", "))).into()
    })
}

#[utoipa::path(post, path = "/api/v1/tenants", request_body = CreateTenantRequest,
    responses((status = 201, body = CreatedTenant), (status = 403, body = crate::error::ErrorBody)))]
pub async fn create_tenant(
    State(deps): Deps,
    Auth(caller): Auth,
    Body(req): Body<CreateTenantRequest>,
) -> ApiResult<(StatusCode, Json<CreatedTenant>)> {
    require_admin(&caller)?;
    let (tenant, key) = deps.auth.create_tenant(&req.name).await?;
    let created = CreatedTenant {
        tenant_id: tenant.tenant_id.to_string(),
        name: tenant.name,
        key_id: key.key_id,
        api_key: key.api_key,
    };
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(get, path = "/api/v1/tenants", responses((status = 200, body = [TenantView])))]
pub async fn list_tenants(State(deps): Deps, Auth(caller): Auth) -> ApiResult<Json<Vec<TenantView>>> {
    require_admin(&caller)?;
    let tenants = deps.auth.list_tenants().await?;
    Ok(Json(tenants.into_iter().map(TenantView::from).collect()))
}

#[utoipa::path(post, path = "/api/v1/tenants/{tenantId}/keys", responses((status = 201, body = ApiKeyView)))]
pub async fn create_api_key(
    State(deps): Deps,
    Auth(caller): Auth,
    Path(tenant): Path<String>,
) -> ApiResult<(StatusCode, Json<ApiKeyView>)> {
    require_admin(&caller)?;
    let key = deps.auth.create_api_key(&tenant_id(&tenant)?).await?;
    Ok((StatusCode::CREATED, Json(ApiKeyView { key_id: key.key_id, api_key: key.api_key })))
}

#[utoipa::path(delete, path = "/api/v1/tenants/{tenantId}/keys/{keyId}", responses((status = 204)))]
pub async fn delete_api_key(
    State(deps): Deps,
    Auth(caller): Auth,
    Path((tenant, key_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    require_admin(&caller)?;
    deps.auth.delete_api_key(&tenant_id(&tenant)?, &key_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/products", request_body = CreateProductRequest,
    responses((status = 201, body = ProductView), (status = 400, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub async fn create_product(
    State(deps): Deps,
    Auth(caller): Auth,
    Body(req): Body<CreateProductRequest>,
) -> ApiResult<(StatusCode, Json<ProductView>)> {
    let new = NewProduct {
        name: req.name,
        product_key: req.product_key.as_deref().map(product_key).transpose()?,
        node_type: parse_choice(
            "nodeType",
            req.node_type.as_deref(),
            &[("device", NodeType::Device), ("gateway", NodeType::Gateway)],
        )?,
        data_format: parse_choice(
            "dataFormat",
            req.data_format.as_deref(),
            &[("alink", DataFormat::Alink), ("raw", DataFormat::Raw)],
        )?,
        dialect: parse_choice(
            "dialect",
            req.dialect.as_deref(),
            &[("alink", Dialect::Alink), ("thingscloud", Dialect::Thingscloud), ("iotda", Dialect::Iotda)],
        )?,
    };
    let product = deps.auth.create_product(&caller.tenant, new).await?;
    Ok((StatusCode::CREATED, Json(product.into())))
}

#[utoipa::path(get, path = "/api/v1/products", responses((status = 200, body = ProductList)))]
pub async fn list_products(State(deps): Deps, Auth(caller): Auth) -> ApiResult<Json<ProductList>> {
    let products = deps.auth.list_products(&caller.tenant).await?;
    Ok(Json(ProductList { items: products.into_iter().map(ProductView::from).collect() }))
}

#[utoipa::path(get, path = "/api/v1/products/{productKey}", responses((status = 200, body = ProductView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_product(
    State(deps): Deps,
    Auth(caller): Auth,
    Path(pk): Path<String>,
) -> ApiResult<Json<ProductView>> {
    let product = deps.auth.get_product(&caller.tenant, &product_key(&pk)?).await?;
    Ok(Json(product.into()))
}

#[utoipa::path(delete, path = "/api/v1/products/{productKey}", responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub async fn delete_product(State(deps): Deps, Auth(caller): Auth, Path(pk): Path<String>) -> ApiResult<StatusCode> {
    deps.auth.delete_product(&caller.tenant, &product_key(&pk)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/products/{productKey}/topics", request_body = CreateTopicClassRequest,
    responses((status = 201, body = TopicClassView), (status = 400, body = crate::error::ErrorBody)))]
pub async fn create_topic_class(
    State(deps): Deps,
    Auth(caller): Auth,
    Path(pk): Path<String>,
    Body(req): Body<CreateTopicClassRequest>,
) -> ApiResult<(StatusCode, Json<TopicClassView>)> {
    let pk = product_key(&pk)?;
    let operation = match req.operation.to_ascii_lowercase().as_str() {
        "pub" => TopicOperation::Pub,
        "sub" => TopicOperation::Sub,
        "all" => TopicOperation::All,
        _ => return Err(ServiceError::invalid("operation", "must be one of pub, sub, all").into()),
    };
    let class = TopicClass { short: req.topic_short_name, operation };
    deps.auth.add_topic_class(&caller.tenant, &pk, class.clone()).await?;
    Ok((StatusCode::CREATED, Json(TopicClassView::new(&pk, &class))))
}

#[utoipa::path(post, path = "/api/v1/products/{productKey}/devices", request_body = RegisterDeviceRequest,
    responses((status = 201, body = DeviceView), (status = 409, body = crate::error::ErrorBody)))]
pub async fn register_device(
    State(deps): Deps,
    Auth(caller): Auth,
    Path(pk): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<DeviceView>)> {
    // The body is optional: an empty one generates the name and the secret.
    let req: RegisterDeviceRequest = if body.is_empty() {
        RegisterDeviceRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ServiceError::invalid("body", e))?
    };
    let new = NewDevice {
        device_name: req
            .device_name
            .map(DeviceName::new)
            .transpose()
            .map_err(|e| ServiceError::invalid("deviceName", e))?,
        device_secret: req.device_secret,
    };
    let device = deps.auth.register_device(&caller.tenant, &product_key(&pk)?, new).await?;
    Ok((StatusCode::CREATED, Json(device.into())))
}

#[utoipa::path(get, path = "/api/v1/products/{productKey}/devices", params(DeviceListQuery), responses((status = 200, body = DeviceList)))]
pub async fn list_devices(
    State(deps): Deps,
    Auth(caller): Auth,
    Path(pk): Path<String>,
    Query(query): Query<DeviceListQuery>,
) -> ApiResult<Json<DeviceList>> {
    let page = deps
        .auth
        .list_devices(&caller.tenant, &product_key(&pk)?, query.page_size.unwrap_or(20), query.page_token.as_deref())
        .await?;
    Ok(Json(DeviceList {
        items: page.items.into_iter().map(DeviceView::from).collect(),
        next_page_token: page.next_page_token,
    }))
}

#[utoipa::path(get, path = "/api/v1/products/{productKey}/devices/{deviceName}", responses((status = 200, body = DeviceView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_device(
    State(deps): Deps,
    Auth(caller): Auth,
    Path((pk, dn)): Path<(String, String)>,
) -> ApiResult<Json<DeviceView>> {
    let key = device_key(&pk, &dn)?;
    let device = deps.auth.get_device(&caller.tenant, &key).await?;
    let tags = deps.thing.tags(&key).await?;
    Ok(Json(DeviceView { tags: Some(tags.into_iter().map(TagView::from).collect()), ..device.into() }))
}

#[utoipa::path(delete, path = "/api/v1/products/{productKey}/devices/{deviceName}", responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub async fn delete_device(
    State(deps): Deps,
    Auth(caller): Auth,
    Path((pk, dn)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    deps.auth.delete_device(&caller.tenant, &device_key(&pk, &dn)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST .../devices/{deviceName}:enable` and `:disable` (the action rides on the last segment).
#[utoipa::path(post, path = "/api/v1/products/{productKey}/devices/{deviceName}:enable", responses((status = 200, body = DeviceView)))]
pub async fn device_action(
    State(deps): Deps,
    Auth(caller): Auth,
    Path((pk, segment)): Path<(String, String)>,
) -> ApiResult<Json<DeviceView>> {
    let Some((dn, action)) = segment.rsplit_once(':') else {
        return Err(ServiceError::not_found(format!("action on {segment}")).into());
    };
    let enabled = match action {
        "enable" => true,
        "disable" => false,
        other => return Err(ServiceError::not_found(format!("action {other}")).into()),
    };
    let device = deps.auth.set_device_enabled(&caller.tenant, &device_key(&pk, dn)?, enabled).await?;
    Ok(Json(device.into()))
}

#[utoipa::path(get, path = "/api/v1/products/{productKey}/devices/{deviceName}/status", responses((status = 200, body = DeviceStatusView)))]
pub async fn device_status(
    State(deps): Deps,
    Auth(caller): Auth,
    Path((pk, dn)): Path<(String, String)>,
) -> ApiResult<Json<DeviceStatusView>> {
    let key = device_key(&pk, &dn)?;
    let device = deps.auth.get_device(&caller.tenant, &key).await?;
    let presence = deps.routes.presence(&key).await.map_err(|e| ServiceError::Unavailable(e.to_string()))?;
    let presence = presence.unwrap_or_default();
    let (status, timestamp) = match (&presence.route, presence.last_online_at) {
        _ if !device.enabled => ("DISABLE", None),
        (Some(route), _) => ("ONLINE", Some(route.connected_at)),
        (None, Some(_)) => ("OFFLINE", presence.last_offline_at),
        (None, None) => ("UNACTIVE", None),
    };
    Ok(Json(DeviceStatusView {
        status: status.to_owned(),
        timestamp,
        last_online_time: presence.last_online_at,
        last_offline_time: presence.last_offline_at,
        client_ip: presence.client_ip,
    }))
}

// === conversions ===

impl From<Tenant> for TenantView {
    fn from(t: Tenant) -> Self {
        Self { tenant_id: t.tenant_id.to_string(), name: t.name, created_at: t.created_at }
    }
}

impl TopicClassView {
    fn new(pk: &ProductKey, class: &TopicClass) -> Self {
        Self { topic_short_name: class.short.clone(), operation: class.operation, topic_full_name: class.full_name(pk) }
    }
}

impl From<Product> for ProductView {
    fn from(p: Product) -> Self {
        let topics = p.topic_classes.iter().map(|c| TopicClassView::new(&p.product_key, c)).collect();
        Self {
            product_key: p.product_key.to_string(),
            product_secret: p.product_secret,
            name: p.name,
            node_type: p.node_type,
            data_format: p.data_format,
            dialect: p.dialect,
            topics,
            created_at: p.created_at,
        }
    }
}

impl From<Device> for DeviceView {
    fn from(d: Device) -> Self {
        Self {
            product_key: d.product_key.to_string(),
            device_name: d.device_name.to_string(),
            device_secret: d.device_secret,
            iot_id: d.iot_id,
            enabled: d.enabled,
            created_at: d.created_at,
            tags: None,
        }
    }
}
