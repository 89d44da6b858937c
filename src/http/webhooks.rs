//! Inbound webhooks: size limit, then credentials on the raw request, then parsing, then a
//! durable write; answered 200 only once the write has committed.

use secrecy::ExposeSecret;
use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use referral_bridge_adapters::platform::PlatformCallbacks;
use referral_bridge_adapters::{InboundRequest, VerifyError};
use serde_json::json;

use crate::db::now_ms;
use crate::error::WebhookError;
use crate::inbound::ingest;
use crate::state::AppState;

/// Reads the body, refusing it with 413 once it passes `limit`. A declared length over the
/// limit is refused before reading; the rest of an oversize body is still read (and dropped),
/// up to a bound, so that the client is listening when the 413 arrives.
/// A webhook's body, once its sender is within `BRIDGE_INBOUND_RATE_LIMIT`: at most `limit`
/// bytes (else 413), arrived within `BRIDGE_BODY_TIMEOUT` (else 408, so that a sender that
/// trickles its body cannot hold a connection for ever).
async fn read_body(
    request: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<web::Bytes, WebhookError> {
    if let Some(limiter) = &state.inbound_limit {
        limiter.check(request)?;
    }
    let after = state.settings.body_timeout;
    tokio::time::timeout(
        after,
        read_limited(request, payload, state.settings.max_body),
    )
    .await
    .map_err(|_| WebhookError::BodyTimeout { after })?
}

async fn read_limited(
    request: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, WebhookError> {
    let declared = request
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let drain_bound = limit.saturating_mul(4).max(8 << 20);
    if declared.is_some_and(|len| len > limit as u64) {
        drain(&mut payload, drain_bound).await;
        return Err(WebhookError::TooLarge { limit });
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(0) as usize);
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|e| WebhookError::BadRequest(format!("cannot read the request body: {e}")))?;
        if body.len() + chunk.len() > limit {
            drain(&mut payload, drain_bound).await;
            return Err(WebhookError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

async fn drain(payload: &mut web::Payload, bound: usize) {
    let mut seen = 0usize;
    while let Some(Ok(chunk)) = payload.next().await {
        seen += chunk.len();
        if seen > bound {
            break;
        }
    }
}

/// Counts and logs one webhook request on `endpoint` (`esp`, `sparkloop`), with its outcome
/// and latency, and why it could not be stored when it could not.
fn observe(
    state: &AppState,
    endpoint: &'static str,
    started: Instant,
    result: &Result<ingest::Accepted, WebhookError>,
) {
    let outcome = match result {
        Ok(accepted) => accepted.as_str(),
        Err(e) => e.outcome(),
    };
    state.metrics.inbound(endpoint, outcome);
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    log::info!(
        endpoint, outcome, latency_ms;
        "POST /webhooks/{endpoint} {outcome} in {latency_ms:.1} ms"
    );
    if let Err(WebhookError::Unavailable(e)) = result {
        log::error!("a webhook to /webhooks/{endpoint} could not be stored: {e}");
    }
}

/// The request's headers as an adapter sees them.
fn raw_headers(request: &HttpRequest) -> Vec<(&str, &[u8])> {
    request
        .headers()
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_bytes()))
        .collect()
}

/// `POST /webhooks/esp`: an ESP event, through the configured adapter.
#[utoipa::path(post, path = "/webhooks/esp", tag = "webhooks",
    description = "An ESP's webhook, read by the ESP_ADAPTER (custom: the JSON subscribe / update / unsubscribe of SparkLoop's custom integration). Credentials: `Authorization: Bearer <ESP_WEBHOOK_SECRET>` or `?token=`, or the ESP's own signature.",
    request_body(content = Object, description = "the ESP's webhook body, as it sends it"),
    responses((status = 200, description = "stored: {\"status\": \"stored\" | \"duplicate\" | \"ignored\" | \"unchanged\"}"),
        (status = 400, description = "not an event the adapter can read"), (status = 401, description = "missing or wrong credentials"),
        (status = 413, description = "over BRIDGE_MAX_BODY"), (status = 503, description = "not stored; retry (Retry-After)")))]
pub async fn esp(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebhookError> {
    let started = Instant::now();
    let result = accept_esp(&request, payload, &state).await;
    observe(&state, "esp", started, &result);
    let accepted = result?;
    Ok(HttpResponse::Ok().json(json!({"status": accepted.as_str()})))
}

/// `GET /webhooks/esp`: 200, for ESPs that check a webhook URL with a GET before using it
/// (Mailchimp's validator); nothing is read or stored.
#[utoipa::path(get, path = "/webhooks/esp", tag = "webhooks",
    responses((status = 200, description = "the URL exists (Mailchimp's validator)")))]
pub async fn esp_ping() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// A referral platform's callback endpoint: its adapter, its secret and how to name them to
/// the sender.
struct Platform<'a> {
    name: &'static str,
    callbacks: &'a dyn PlatformCallbacks,
    secret: Option<&'a str>,
    /// The variable that holds the secret.
    variable: &'static str,
    /// Where the sender puts its credentials.
    credentials: &'static str,
}

/// `POST /webhooks/sparkloop`: a SparkLoop callback, answered 200 with an empty body as SparkLoop
/// asks.
#[utoipa::path(post, path = "/webhooks/sparkloop", tag = "webhooks",
    description = "SparkLoop's callbacks (sync_subscriber, new_referral, reward_unlocked, reward_redeemed, partner events), with `SparkLoop-Token: <SPARKLOOP_WEBHOOK_TOKEN>`.",
    request_body(content = Object, description = "SparkLoop's callback"),
    responses((status = 200, description = "stored (empty body)"), (status = 400), (status = 401), (status = 413), (status = 503)))]
pub async fn sparkloop(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebhookError> {
    let platform = Platform {
        name: "sparkloop",
        callbacks: state.sparkloop.as_ref(),
        secret: state
            .settings
            .sparkloop
            .webhook_token
            .as_ref()
            .map(|s| s.expose_secret()),
        variable: "SPARKLOOP_WEBHOOK_TOKEN",
        credentials: "the SparkLoop-Token header",
    };
    let result = receive_callback(&request, payload, &state, &platform).await;
    result?;
    Ok(HttpResponse::Ok().finish())
}

/// `POST /webhooks/referralloop`: a ReferralLoop webhook, signed with `X-Webhook-Signature`.
#[utoipa::path(post, path = "/webhooks/referralloop", tag = "webhooks",
    description = "ReferralLoop's signup.created / position_changed / deleted, with `X-Webhook-Signature: sha256=<hex HMAC-SHA256 of the body with REFERRALLOOP_WEBHOOK_SECRET>`.",
    request_body(content = Object, description = "ReferralLoop's webhook"),
    responses((status = 200, description = "stored: {\"status\": ...}"), (status = 400), (status = 401), (status = 413), (status = 503)))]
pub async fn referralloop(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebhookError> {
    let platform = Platform {
        name: "referralloop",
        callbacks: state.referralloop.as_ref(),
        secret: state
            .settings
            .referralloop_secret
            .as_ref()
            .map(|s| s.expose_secret()),
        variable: "REFERRALLOOP_WEBHOOK_SECRET",
        credentials: "the X-Webhook-Signature header",
    };
    let result = receive_callback(&request, payload, &state, &platform).await;
    let accepted = result?;
    Ok(HttpResponse::Ok().json(json!({"status": accepted.as_str()})))
}

/// `POST /webhooks/loyaltysurf`: a LoyaltySurf webhook, signed with `LoyaltySurf-Signature`.
#[utoipa::path(post, path = "/webhooks/loyaltysurf", tag = "webhooks",
    description = "LoyaltySurf's five events, with `LoyaltySurf-Signature: ts=<unix ms>,v=<hex HMAC-SHA256 of \"ts.body\" with LOYALTYSURF_WEBHOOK_SECRET>`, ts within LOYALTYSURF_SIGNATURE_TOLERANCE.",
    request_body(content = Object, description = "LoyaltySurf's webhook"),
    responses((status = 200, description = "stored: {\"status\": ...}"), (status = 400), (status = 401), (status = 413), (status = 503)))]
pub async fn loyaltysurf(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebhookError> {
    let platform = Platform {
        name: "loyaltysurf",
        callbacks: state.loyaltysurf.as_ref(),
        secret: state
            .settings
            .loyaltysurf_secret
            .as_ref()
            .map(|s| s.expose_secret()),
        variable: "LOYALTYSURF_WEBHOOK_SECRET",
        credentials: "the LoyaltySurf-Signature header",
    };
    let result = receive_callback(&request, payload, &state, &platform).await;
    let accepted = result?;
    Ok(HttpResponse::Ok().json(json!({"status": accepted.as_str()})))
}

/// Accepts one platform callback, counted and logged under the platform's endpoint.
async fn receive_callback(
    request: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    platform: &Platform<'_>,
) -> Result<ingest::Accepted, WebhookError> {
    let started = Instant::now();
    let result = accept_callback(request, payload, state, platform).await;
    observe(state, platform.name, started, &result);
    result
}

async fn accept_callback(
    request: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    platform: &Platform<'_>,
) -> Result<ingest::Accepted, WebhookError> {
    let body = read_body(request, payload, state).await?;
    let headers = raw_headers(request);
    let inbound = InboundRequest {
        query: request.query_string(),
        headers: &headers,
        body: &body,
    };
    platform
        .callbacks
        .verify(&inbound, platform.secret)
        .map_err(|e| {
            WebhookError::Unauthorized(match e {
                VerifyError::NotConfigured => format!(
                    "{} webhooks are refused until {} is set",
                    platform.name, platform.variable
                ),
                VerifyError::Missing => format!("missing credentials: {}", platform.credentials),
                VerifyError::Wrong => "wrong credentials".into(),
            })
        })?;
    let callback = platform
        .callbacks
        .parse(&inbound)
        .map_err(|e| WebhookError::BadRequest(e.0))?;
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| WebhookError::BadRequest("the body is not UTF-8".into()))?;
    log::debug!("{} callback: {callback:?}", platform.name);
    let accepted = state
        .callbacks
        .write(crate::inbound::callbacks::CallbackDelivery {
            platform: platform.name,
            callback,
            hash: ingest::body_hash(&body),
            body: text,
            now: now_ms(),
        })
        .await
        .map_err(|e| WebhookError::Unavailable(e.to_string()))?;
    if accepted == ingest::Accepted::Stored && state.esp_deliverable {
        state.wake_workers.notify_one();
    }
    Ok(accepted)
}

async fn accept_esp(
    request: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<ingest::Accepted, WebhookError> {
    let body = read_body(request, payload, state).await?;
    let headers = raw_headers(request);
    let inbound = InboundRequest {
        query: request.query_string(),
        headers: &headers,
        body: &body,
    };
    let secret = state
        .settings
        .esp
        .webhook_secret
        .as_ref()
        .map(|s| s.expose_secret());
    if state.esp.poll_request(None).is_some() {
        return Err(WebhookError::BadRequest(format!(
            "{} posts no webhooks: the bridge polls it every ESP_POLL_INTERVAL",
            state.esp.name()
        )));
    }
    state.esp.verify(&inbound, secret).map_err(|e| {
        WebhookError::Unauthorized(match e {
            VerifyError::NotConfigured => {
                "ESP webhooks are refused until ESP_WEBHOOK_SECRET is set".into()
            }
            VerifyError::Missing => {
                format!("missing credentials: {}", state.esp.credentials_hint())
            }
            VerifyError::Wrong => "wrong credentials".into(),
        })
    })?;
    let events = state
        .esp
        .parse(&inbound)
        .map_err(|e| WebhookError::BadRequest(e.0))?;
    for event in &events {
        event.check().map_err(|e| WebhookError::BadRequest(e.0))?;
    }
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| WebhookError::BadRequest("the body is not UTF-8".into()))?;
    let hash = ingest::body_hash(&body);
    log::debug!("ESP events: {events:?}");
    let accepted = state
        .ingest
        .write(ingest::Delivery {
            events,
            body: text,
            hash,
            now: now_ms(),
        })
        .await
        .map_err(|e| WebhookError::Unavailable(e.to_string()))?;
    if accepted == ingest::Accepted::Stored && state.platform_deliverable {
        state.wake_workers.notify_one();
    }
    Ok(accepted)
}
