//! Thin HTTP handlers: read the request, call the domain, map the result.

pub mod admin;
pub mod chart;
pub mod dashboard;
pub mod limits;
pub mod openapi;
pub mod ops;
pub mod session;
pub mod webhooks;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, FromRequest, Handler, HttpRequest, Responder, ResponseError};

use crate::error::{admin_api_not_found, method_not_allowed, no_endpoint};
use crate::state::AppState;

/// Registers every route. Each path answers the methods it serves and 405 with `Allow` to any
/// other; everything under `/admin/api` checks the admin token first (401 before a path or a
/// method is looked at).
pub fn routes(cfg: &mut web::ServiceConfig) {
    crate::error::extractor_configs(cfg);
    cfg.service(
        Endpoint::new("/webhooks/esp")
            .get(webhooks::esp_ping)
            .post(webhooks::esp)
            .done(),
    )
    .service(
        Endpoint::new("/webhooks/sparkloop")
            .post(webhooks::sparkloop)
            .done(),
    )
    .service(
        Endpoint::new("/webhooks/referralloop")
            .post(webhooks::referralloop)
            .done(),
    )
    .service(
        Endpoint::new("/webhooks/loyaltysurf")
            .post(webhooks::loyaltysurf)
            .done(),
    )
    .service(Endpoint::new("/healthz").get(ops::healthz).done())
    .service(Endpoint::new("/readyz").get(ops::readyz).done())
    .service(Endpoint::new("/metrics").get(ops::metrics).done())
    .service(
        web::scope("/admin/api")
            .wrap(from_fn(admin_token_first))
            .service(
                Endpoint::new("/deliveries")
                    .get(admin::list_deliveries)
                    .done(),
            )
            .service(
                Endpoint::new("/deliveries/retry-dead")
                    .post(admin::retry_dead)
                    .done(),
            )
            .service(
                Endpoint::new("/deliveries/{id}")
                    .get(admin::get_delivery)
                    .done(),
            )
            .service(
                Endpoint::new("/deliveries/{id}/retry")
                    .post(admin::retry_delivery)
                    .done(),
            )
            .service(
                Endpoint::new("/deliveries/{id}/cancel")
                    .post(admin::cancel_delivery)
                    .done(),
            )
            .service(
                Endpoint::new("/subscribers/{email}")
                    .get(admin::get_subscriber)
                    .delete(admin::subscribers::erase_subscriber)
                    .done(),
            )
            .service(Endpoint::new("/stats").get(admin::get_stats).done())
            .service(
                Endpoint::new("/reconcile")
                    .get(admin::reconcile::get_reconcile)
                    .done(),
            )
            .service(Endpoint::new("/openapi.json").get(openapi::openapi).done())
            .default_service(web::to(admin_api_not_found)),
    )
    .service(Endpoint::new("/admin").get(dashboard::redirect).done())
    .service(Endpoint::new("/admin/").get(dashboard::page).done())
    .service(Endpoint::new("/admin/login").post(dashboard::login).done())
    .service(
        Endpoint::new("/admin/logout")
            .post(dashboard::logout)
            .done(),
    )
    .service(
        Endpoint::new("/admin/deliveries/{id}/retry")
            .post(dashboard::retry)
            .done(),
    )
    .default_service(web::to(no_endpoint));
}

/// One path and the methods it serves; `done` adds the 405 for the others. A `GET` serves
/// `HEAD` too (actix leaves the body out), as RFC 9110 asks of every server.
struct Endpoint {
    resource: actix_web::Resource,
    allow: Vec<&'static str>,
}

impl Endpoint {
    fn new(path: &str) -> Self {
        Endpoint {
            resource: web::resource(path),
            allow: Vec::new(),
        }
    }

    /// `GET` (and `HEAD`) by `handler`.
    fn get<F, Args>(mut self, handler: F) -> Self
    where
        F: Handler<Args> + Clone,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.resource = self
            .resource
            .route(web::get().to(handler.clone()))
            .route(web::head().to(handler));
        self.allow.extend(["GET", "HEAD"]);
        self
    }

    /// `POST` by `handler`.
    fn post<F, Args>(mut self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.resource = self.resource.route(web::method(Method::POST).to(handler));
        self.allow.push("POST");
        self
    }

    /// `DELETE` by `handler`.
    fn delete<F, Args>(mut self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.resource = self.resource.route(web::delete().to(handler));
        self.allow.push("DELETE");
        self
    }

    /// The resource, answering 405 with `Allow` to the methods it does not serve.
    fn done(self) -> actix_web::Resource {
        let allow = self.allow.join(", ");
        self.resource
            .default_service(web::to(move |request: HttpRequest| {
                let allow = allow.clone();
                async move { method_not_allowed(&request, &allow) }
            }))
    }
}

/// The admin token, checked before routing inside `/admin/api`: an unauthenticated request is a
/// 401 (404 while no token is configured) whatever its path, method or parameters.
async fn admin_token_first(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let checked = match request.app_data::<web::Data<AppState>>() {
        Some(state) => admin::authorize(request.request(), state),
        None => Err(admin::AdminError::Off),
    };
    match checked {
        Ok(()) => Ok(next.call(request).await?.map_into_left_body()),
        Err(e) => Ok(request
            .into_response(e.error_response())
            .map_into_right_body()),
    }
}
