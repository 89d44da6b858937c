//! `/admin/api/openapi.json`: the OpenAPI document of the bridge's HTTP API, from the
//! handlers' own declarations.

use actix_web::{web, HttpResponse};
use utoipa::OpenApi;

use crate::http::admin::{self, deliveries, stats, subscribers, AdminAuth, AdminError};
use crate::state::AppState;

/// The OpenAPI document of the bridge's HTTP API, from the handlers' own declarations.
#[derive(OpenApi)]
#[openapi(
    info(title = "referral-bridge", description = "Webhooks in from the ESP and the referral platforms; the operator's admin API."),
    paths(
        crate::http::webhooks::esp,
        crate::http::webhooks::esp_ping,
        crate::http::webhooks::sparkloop,
        crate::http::webhooks::loyaltysurf,
        crate::http::webhooks::referralloop,
        crate::http::ops::healthz,
        crate::http::ops::readyz,
        crate::http::ops::metrics,
        admin::deliveries::list_deliveries,
        admin::deliveries::get_delivery,
        admin::deliveries::retry_delivery,
        admin::deliveries::retry_dead,
        admin::deliveries::cancel_delivery,
        admin::subscribers::get_subscriber,
        admin::stats::get_stats,
        openapi,
    ),
    components(schemas(deliveries::DeliveryPage, deliveries::Delivery, deliveries::DeliveryDetail,
        deliveries::Attempt, deliveries::ActionResult, deliveries::RetryDeadRequest,
        deliveries::RetryRequest,
        subscribers::SubscriberView, subscribers::TimelineItem, stats::Stats, stats::Period,
        stats::Queue)),
    modifiers(&AdminSecurity),
)]
pub struct ApiDoc;

/// Declares the admin token as a bearer scheme.
struct AdminSecurity;

impl utoipa::Modify for AdminSecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("BRIDGE_ADMIN_TOKEN"))
                    .build(),
            ),
        );
    }
}

/// `GET /admin/api/openapi.json`: this document.
#[utoipa::path(get, path = "/admin/api/openapi.json", tag = "admin",
    responses((status = 200, description = "the OpenAPI 3.1 document of the whole HTTP API"),
        (status = 401), (status = 404)),
    security(("admin_token" = [])))]
pub async fn openapi(
    _admin: AdminAuth,
    _state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    Ok(HttpResponse::Ok().json(ApiDoc::openapi()))
}
