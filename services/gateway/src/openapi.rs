//! The OpenAPI document of the REST API, generated from the handlers' annotations.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{commands, routes, things, topology};

#[derive(OpenApi)]
#[openapi(
    info(title = "Tether tenant API", description = "Products, devices and their data. Every request carries `Authorization: Bearer <api-key>`."),
    paths(
        routes::create_tenant, routes::list_tenants, routes::create_api_key, routes::delete_api_key,
        routes::create_product, routes::list_products, routes::get_product, routes::delete_product,
        routes::create_topic_class, routes::register_device, routes::list_devices, routes::get_device,
        routes::delete_device, routes::device_action, routes::device_status,
        things::put_thing_model, things::get_thing_model, things::latest_properties, things::device_tags,
        things::desired_properties, things::set_desired_properties, things::get_shadow, things::update_shadow,
        topology::sub_devices,
        commands::set_properties, commands::invoke_service, commands::rrpc, commands::publish, commands::broadcast,
        commands::set_devices_properties, commands::invoke_things_service, commands::get_command,
        commands::list_commands,
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// `GET /api/v1/openapi.json` (needs no key).
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
