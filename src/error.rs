//! Errors of the HTTP boundary, mapped to status codes and JSON bodies in one place: the
//! webhooks' and operations' `{"error": ...}`, the admin API's problem documents (which carry the
//! same `error` member), and actix's own failures to read a query, a path, a form or a body,
//! answered in the shape of the endpoint they hit.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde_json::json;

use crate::db::StoreError;

/// Why a webhook request was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// Missing or wrong credentials, or none configured: 401.
    #[error("{0}")]
    Unauthorized(String),
    /// A body that is not valid for the endpoint: 400.
    #[error("{0}")]
    BadRequest(String),
    /// A body over `BRIDGE_MAX_BODY`: 413.
    #[error("the request body is larger than the limit of {limit} bytes (BRIDGE_MAX_BODY)")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Over `BRIDGE_INBOUND_RATE_LIMIT` for the sender's address: 429, retry after `wait`.
    #[error("too many requests from this address (BRIDGE_INBOUND_RATE_LIMIT); retry in {} s", wait_seconds(.wait))]
    TooManyRequests {
        /// How long until the next request is taken.
        wait: std::time::Duration,
    },
    /// The body did not arrive within `BRIDGE_BODY_TIMEOUT`: 408.
    #[error("the request body did not arrive within {} (BRIDGE_BODY_TIMEOUT)", humantime::format_duration(*.after))]
    BodyTimeout {
        /// The timeout.
        after: std::time::Duration,
    },
    /// The request could not be stored: 503, the sender retries and nothing is lost. The text
    /// says why, for the log; the sender is told only to retry.
    #[error("the event could not be stored; retry later")]
    Unavailable(String),
}

impl WebhookError {
    /// The outcome label used in metrics and logs.
    pub fn outcome(&self) -> &'static str {
        match self {
            WebhookError::Unauthorized(_) => "unauthorized",
            WebhookError::BadRequest(_) => "bad_request",
            WebhookError::TooLarge { .. } => "too_large",
            WebhookError::TooManyRequests { .. } => "rate_limited",
            WebhookError::BodyTimeout { .. } => "body_timeout",
            WebhookError::Unavailable(_) => "unavailable",
        }
    }
}

impl ResponseError for WebhookError {
    fn status_code(&self) -> StatusCode {
        match self {
            WebhookError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            WebhookError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebhookError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            WebhookError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            WebhookError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            WebhookError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            WebhookError::Unavailable(_) => {
                response.insert_header((header::RETRY_AFTER, "1"));
            }
            WebhookError::TooManyRequests { wait } => {
                response.insert_header((header::RETRY_AFTER, wait_seconds(wait)));
            }
            // The rest of the body is not read: the connection cannot carry another request.
            WebhookError::BodyTimeout { .. } => {
                response.insert_header((header::CONNECTION, "close"));
            }
            _ => {}
        }
        response.json(serde_json::json!({ "error": bounded(&self.to_string()) }))
    }
}

/// The longest error message answered: each names at most ~80 characters of what was sent,
/// and this bound holds whatever a message quotes (a serde error naming a megabyte-long key).
const MAX_MESSAGE_CHARS: usize = 400;

/// `message`, cut to [`MAX_MESSAGE_CHARS`].
fn bounded(message: &str) -> String {
    match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        None => message.to_string(),
        Some((end, _)) => format!("{}…", &message[..end]),
    }
}

/// A wait in whole seconds for `Retry-After`, at least 1.
fn wait_seconds(wait: &std::time::Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// Why an admin request failed; each maps to a status and a problem document.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// `BRIDGE_ADMIN_TOKEN` is unset: the admin API does not exist (404).
    #[error("not found")]
    Off,
    /// Missing or wrong credentials (401).
    #[error("missing or wrong admin token: send `Authorization: Bearer <BRIDGE_ADMIN_TOKEN>`")]
    Unauthorized,
    /// Nothing by that id or address (404).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// A malformed parameter (400).
    #[error("{0}")]
    BadRequest(String),
    /// Refused whoever asks (403): a form sent from another site.
    #[error("{0}")]
    Forbidden(String),
    /// The database is busy or unreachable (503, retry).
    #[error("the database is busy or unreachable; retry shortly")]
    Unavailable(#[source] StoreError),
    /// Too many attempts from this address (429): retry after the duration.
    #[error("too many sign-in attempts from this address; retry in {} s", .0.as_secs().max(1))]
    TooManyRequests(std::time::Duration),
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        AdminError::Unavailable(e)
    }
}

impl ResponseError for AdminError {
    fn status_code(&self) -> StatusCode {
        match self {
            AdminError::Off | AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::Unauthorized => StatusCode::UNAUTHORIZED,
            AdminError::Conflict(_) => StatusCode::CONFLICT,
            AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::Forbidden(_) => StatusCode::FORBIDDEN,
            AdminError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AdminError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if let AdminError::Unavailable(e) = self {
            log::error!("admin request failed: {e}");
        }
        let mut response = problem(status, &self.to_string());
        let headers = response.headers_mut();
        match self {
            AdminError::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            }
            AdminError::TooManyRequests(wait) => {
                headers.insert(
                    header::RETRY_AFTER,
                    header::HeaderValue::from(wait.as_secs().max(1)),
                );
            }
            AdminError::Unauthorized => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
            }
            _ => {}
        }
        response
    }
}

/// What a request that could not be read is told, in the shape of the endpoint it hit: a problem
/// document under `/admin/api/`, else `{"error": ...}`; `status` is the one actix chose (400 for
/// a parameter that does not parse, 413 for a body too large, 415 for a content type...).
fn unreadable(request: &HttpRequest, status: StatusCode, message: String) -> actix_web::Error {
    let response = in_shape(request, status, &message);
    actix_web::error::InternalError::from_response(message, response).into()
}

/// An error answer in the shape of the endpoint `request` hit: a problem document under
/// `/admin/api`, else `{"error": ...}`.
fn in_shape(request: &HttpRequest, status: StatusCode, message: &str) -> HttpResponse {
    if request.path().starts_with("/admin/api") {
        problem(status, message)
    } else {
        HttpResponse::build(status).json(json!({ "error": bounded(message) }))
    }
}

/// `405` for a method the path does not serve, with `Allow` naming those it does.
pub fn method_not_allowed(request: &HttpRequest, allow: &str) -> HttpResponse {
    let mut response = in_shape(
        request,
        StatusCode::METHOD_NOT_ALLOWED,
        &format!(
            "{} does not take {}; it takes {allow}",
            request.path(),
            request.method()
        ),
    );
    if let Ok(value) = header::HeaderValue::from_str(allow) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}

/// `404` for a path that names no endpoint.
pub async fn no_endpoint(request: HttpRequest) -> HttpResponse {
    in_shape(
        &request,
        StatusCode::NOT_FOUND,
        &format!("no endpoint at {}", request.path()),
    )
}

/// A problem document (`application/problem+json`) with the `error` member beside `detail`.
fn problem(status: StatusCode, detail: &str) -> HttpResponse {
    let detail = bounded(detail);
    HttpResponse::build(status)
        .content_type("application/problem+json")
        .body(
            json!({
                "type": "about:blank",
                "title": status.canonical_reason().unwrap_or("Error"),
                "status": status.as_u16(),
                "detail": detail,
                "error": detail,
            })
            .to_string(),
        )
}

/// The extractor settings that answer actix's own failures through [`unreadable`]: query
/// strings, path parameters, forms and JSON bodies (the webhooks read their raw bodies
/// themselves, with `BRIDGE_MAX_BODY`).
pub fn extractor_configs(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::QueryConfig::default().error_handler(|e, request| {
        let status = e.status_code();
        unreadable(request, status, format!("the query string: {e}"))
    }))
    .app_data(web::PathConfig::default().error_handler(|e, request| {
        // A path parameter that does not parse names nothing there is: 404, as actix answers
        // without this handler.
        unreadable(request, StatusCode::NOT_FOUND, format!("the path: {e}"))
    }))
    .app_data(web::FormConfig::default().error_handler(|e, request| {
        let status = e.status_code();
        unreadable(request, status, format!("the form: {e}"))
    }))
    .app_data(web::JsonConfig::default().error_handler(|e, request| {
        let status = e.status_code();
        unreadable(request, status, format!("the JSON body: {e}"))
    }));
}

/// `404` for a path under `/admin/api/` that names no endpoint, as a problem document.
pub async fn admin_api_not_found(request: HttpRequest) -> HttpResponse {
    problem(
        StatusCode::NOT_FOUND,
        &format!("no admin API endpoint at {}", request.path()),
    )
}
