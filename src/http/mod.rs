//! Thin HTTP handlers: read the request, call the domain, map the result.

pub mod ops;
pub mod webhooks;

use actix_web::web;

/// Registers every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
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
        .route("/metrics", web::get().to(ops::metrics));
}
