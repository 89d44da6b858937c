//! Thin HTTP handlers: read the request, call the domain, map the result.

pub mod admin;
pub mod dashboard;
pub mod limits;
pub mod openapi;
pub mod ops;
pub mod session;
pub mod webhooks;

use actix_web::web;

/// Registers every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    crate::error::extractor_configs(cfg);
    cfg.route("/webhooks/esp", web::post().to(webhooks::esp))
        .route("/webhooks/esp", web::get().to(webhooks::esp_ping))
        .route("/webhooks/sparkloop", web::post().to(webhooks::sparkloop))
        .route(
            "/webhooks/referralloop",
            web::post().to(webhooks::referralloop),
        )
        .route(
            "/webhooks/loyaltysurf",
            web::post().to(webhooks::loyaltysurf),
        )
        .route("/healthz", web::get().to(ops::healthz))
        .route("/readyz", web::get().to(ops::readyz))
        .route("/metrics", web::get().to(ops::metrics))
        .route(
            "/admin/api/deliveries",
            web::get().to(admin::list_deliveries),
        )
        .route(
            "/admin/api/deliveries/retry-dead",
            web::post().to(admin::retry_dead),
        )
        .route(
            "/admin/api/deliveries/{id}",
            web::get().to(admin::get_delivery),
        )
        .route(
            "/admin/api/deliveries/{id}/retry",
            web::post().to(admin::retry_delivery),
        )
        .route(
            "/admin/api/deliveries/{id}/cancel",
            web::post().to(admin::cancel_delivery),
        )
        .route(
            "/admin/api/subscribers/{email}",
            web::get().to(admin::get_subscriber),
        )
        .route("/admin/api/stats", web::get().to(admin::get_stats))
        .route("/admin/api/openapi.json", web::get().to(openapi::openapi))
        .route("/admin", web::get().to(dashboard::redirect))
        .route("/admin/", web::get().to(dashboard::page))
        .route("/admin/login", web::post().to(dashboard::login))
        .route("/admin/logout", web::post().to(dashboard::logout))
        .route(
            "/admin/deliveries/{id}/retry",
            web::post().to(dashboard::retry),
        )
        .route(
            "/admin/api/{rest:.*}",
            web::route().to(crate::error::admin_api_not_found),
        );
}
