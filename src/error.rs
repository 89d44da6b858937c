//! Errors of the HTTP boundary, mapped to status codes and JSON bodies in one place.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};

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
            WebhookError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if let WebhookError::Unavailable(_) = self {
            response.insert_header((header::RETRY_AFTER, "1"));
        }
        response.json(serde_json::json!({ "error": self.to_string() }))
    }
}
