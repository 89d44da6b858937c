//! The admin API under `/admin/api/`: deliveries (filtered, paged, retried, cancelled), a
//! subscriber's fields and timeline, recent counts, and the OpenAPI document of every endpoint.
//! `Authorization: Bearer BRIDGE_ADMIN_TOKEN` (or the dashboard's session cookie); 404 while
//! the token is unset, 401 for a wrong one. Errors are `application/problem+json`.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::db::admin::{self as store, CancelResult, DeliveryFilter};
use crate::db::jobs::{self, AttemptSummary, JobView, RetryResult};
use crate::db::{now_ms, subscribers, StoreError};
use crate::startup::AppState;

/// The dashboard's session cookie.
pub const SESSION_COOKIE: &str = "bridge_admin";

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
    /// The database is busy or unreachable (503, retry).
    #[error("the database is busy or unreachable; retry shortly")]
    Unavailable(#[source] StoreError),
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
            AdminError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if let AdminError::Unavailable(e) = self {
            log::error!("admin request failed: {e}");
        }
        let mut response = HttpResponse::build(status);
        response.content_type("application/problem+json");
        match self {
            AdminError::Unavailable(_) => {
                response.insert_header((header::RETRY_AFTER, "1"));
            }
            AdminError::Unauthorized => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            _ => {}
        }
        response.body(
            json!({
                "type": "about:blank",
                "title": status.canonical_reason().unwrap_or("Error"),
                "status": status.as_u16(),
                "detail": self.to_string(),
            })
            .to_string(),
        )
    }
}

/// The dashboard's session value for `token`: a hash, so the token itself is never stored in
/// the browser.
pub fn session_value(token: &str) -> String {
    hex::encode(Sha256::digest(format!(
        "referral-bridge admin session\0{token}"
    )))
}

/// Checks the admin credentials: the bearer token, or the dashboard's session cookie.
pub fn authorize(request: &HttpRequest, state: &AppState) -> Result<(), AdminError> {
    let token = state
        .settings
        .admin_token
        .as_ref()
        .ok_or(AdminError::Off)?
        .expose();
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if let Some(bearer) = bearer {
        return if referral_bridge_adapters::secrets_match(bearer.as_bytes(), token.as_bytes()) {
            Ok(())
        } else {
            Err(AdminError::Unauthorized)
        };
    }
    match request.cookie(SESSION_COOKIE) {
        Some(cookie)
            if referral_bridge_adapters::secrets_match(
                cookie.value().as_bytes(),
                session_value(token).as_bytes(),
            ) =>
        {
            Ok(())
        }
        _ => Err(AdminError::Unauthorized),
    }
}

/// A time as RFC 3339 (UTC, seconds).
pub fn rfc3339(ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Reads a time parameter: RFC 3339 (`2026-11-26T10:00:00Z`) or unix milliseconds.
fn parse_time(name: &str, text: &str) -> Result<i64, AdminError> {
    if let Ok(ms) = text.trim().parse::<i64>() {
        return Ok(ms);
    }
    humantime::parse_rfc3339_weak(text.trim())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .ok_or_else(|| {
            AdminError::BadRequest(format!(
                "`{name}`: `{text}` is not a time like 2026-11-26T10:00:00Z or unix milliseconds"
            ))
        })
}

/// A delivery (an outgoing job).
#[derive(Debug, Serialize, ToSchema)]
pub struct Delivery {
    /// The job's id.
    pub id: i64,
    /// Where it goes: `sparkloop`, `loyaltysurf`, `referralloop` or `esp`.
    pub destination: String,
    /// What it does: `subscribe`, `update`, `unsubscribe`, `fields`.
    pub kind: String,
    /// `waiting`, `pending`, `running`, `done` or `dead`.
    pub status: String,
    /// Attempts made so far.
    pub attempts: i32,
    /// The subscriber's current address.
    pub subscriber: String,
    /// When it was queued (RFC 3339).
    pub created_at: String,
    /// When it is due next, while open (RFC 3339).
    pub next_run_at: Option<String>,
    /// When it finished (RFC 3339).
    pub finished_at: Option<String>,
    /// The last error.
    pub last_error: Option<String>,
}

impl From<&JobView> for Delivery {
    fn from(job: &JobView) -> Self {
        Delivery {
            id: job.id,
            destination: job.destination.clone(),
            kind: job.kind.clone(),
            status: job.status.clone(),
            attempts: job.attempts,
            subscriber: job.email.clone(),
            created_at: rfc3339(job.created_at),
            next_run_at: job.finished_at.is_none().then(|| rfc3339(job.run_at)),
            finished_at: job.finished_at.map(rfc3339),
            last_error: job.last_error.clone(),
        }
    }
}

/// One page of deliveries, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    /// The deliveries.
    pub deliveries: Vec<Delivery>,
    /// Pass as `before` for the next page; absent on the last page.
    pub next_before: Option<i64>,
}

/// One HTTP call made for a delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct Attempt {
    /// When it started (RFC 3339).
    pub started_at: String,
    /// How long it took.
    pub duration_ms: i64,
    /// The answer's HTTP status, if one came.
    pub status_code: Option<i32>,
    /// What went wrong.
    pub error: Option<String>,
    /// The start of the answer's body, as stored.
    pub response_body: Option<String>,
}

impl From<&AttemptSummary> for Attempt {
    fn from(a: &AttemptSummary) -> Self {
        Attempt {
            started_at: rfc3339(a.started_at),
            duration_ms: a.duration_ms,
            status_code: a.status_code,
            error: a.error.clone(),
            response_body: a.response_body.clone(),
        }
    }
}

/// A delivery with its request body and every attempt.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryDetail {
    /// The delivery.
    #[serde(flatten)]
    pub delivery: Delivery,
    /// The request body (field writes: the subscriber's fields as they are when sent).
    pub payload: String,
    /// Every attempt, oldest first.
    pub attempts_made: Vec<Attempt>,
}

/// Filters of the delivery list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// `waiting`, `pending`, `running`, `done`, `dead`, or `open` for the first three.
    pub status: Option<String>,
    /// `sparkloop`, `loyaltysurf`, `referralloop` or `esp`.
    pub destination: Option<String>,
    /// The subscriber's address.
    pub email: Option<String>,
    /// Queued at or after (RFC 3339 or unix ms).
    pub since: Option<String>,
    /// Queued before (RFC 3339 or unix ms).
    pub until: Option<String>,
    /// The `next_before` of the previous page.
    pub before: Option<i64>,
    /// Page size, 1 to 500 (50).
    pub limit: Option<i64>,
}

const STATUSES: [&str; 6] = ["waiting", "pending", "running", "done", "dead", "open"];

/// `GET /admin/api/deliveries`.
#[utoipa::path(get, path = "/admin/api/deliveries", tag = "admin",
    params(DeliveryQuery),
    responses((status = 200, body = DeliveryPage), (status = 400), (status = 401), (status = 404)),
    security(("admin_token" = [])))]
pub async fn list_deliveries(
    request: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<DeliveryQuery>,
) -> Result<HttpResponse, AdminError> {
    authorize(&request, &state)?;
    let query = query.into_inner();
    if let Some(status) = &query.status {
        if !STATUSES.contains(&status.as_str()) {
            return Err(AdminError::BadRequest(format!(
                "`status`: `{status}` is not one of {}",
                STATUSES.join(", ")
            )));
        }
    }
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(AdminError::BadRequest(
            "`limit` must be between 1 and 500".into(),
        ));
    }
    let filter = DeliveryFilter {
        status: query.status,
        destination: query.destination,
        email: query.email.map(|e| e.trim().to_lowercase()),
        since: query.since.map(|t| parse_time("since", &t)).transpose()?,
        until: query.until.map(|t| parse_time("until", &t)).transpose()?,
        before: query.before,
    };
    let rows = state
        .db
        .read_async(move |conn| store::list_deliveries(conn, &filter, limit + 1))
        .await?;
    let more = rows.len() as i64 > limit;
    let page: Vec<Delivery> = rows
        .iter()
        .take(limit as usize)
        .map(Delivery::from)
        .collect();
    let next_before = more.then(|| page.last().map(|d| d.id)).flatten();
    Ok(HttpResponse::Ok().json(DeliveryPage {
        deliveries: page,
        next_before,
    }))
}

/// `GET /admin/api/deliveries/{id}`.
#[utoipa::path(get, path = "/admin/api/deliveries/{id}", tag = "admin",
    params(("id" = i64, Path, description = "the delivery's id")),
    responses((status = 200, body = DeliveryDetail), (status = 401), (status = 404)),
    security(("admin_token" = [])))]
pub async fn get_delivery(
    request: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, AdminError> {
    authorize(&request, &state)?;
    let id = id.into_inner();
    let found = state
        .db
        .read_async(move |conn| {
            Ok(match jobs::get(conn, id)? {
                Some(job) => Some((job, jobs::attempts_of(conn, id)?)),
                None => None,
            })
        })
        .await?;
    let (job, attempts) =
        found.ok_or_else(|| AdminError::NotFound(format!("there is no delivery {id}")))?;
    Ok(HttpResponse::Ok().json(DeliveryDetail {
        delivery: Delivery::from(&job),
        payload: job.payload.clone(),
        attempts_made: attempts.iter().map(Attempt::from).collect(),
    }))
}

/// What an action did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActionResult {
    /// `queued`, `cancelled`.
    pub status: String,
    /// How many deliveries it concerned.
    pub count: usize,
}

/// `POST /admin/api/deliveries/{id}/retry`: a dead (or done) delivery queued again, due now.
#[utoipa::path(post, path = "/admin/api/deliveries/{id}/retry", tag = "admin",
    params(("id" = i64, Path, description = "the delivery's id")),
    responses((status = 200, body = ActionResult), (status = 401), (status = 404),
        (status = 409, description = "the delivery is still open")),
    security(("admin_token" = [])))]
pub async fn retry_delivery(
    request: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, AdminError> {
    authorize(&request, &state)?;
    retry_one(&state, id.into_inner()).await?;
    Ok(HttpResponse::Ok().json(ActionResult {
        status: "queued".into(),
        count: 1,
    }))
}

/// Queues delivery `id` again and wakes the workers.
pub async fn retry_one(state: &AppState, id: i64) -> Result<(), AdminError> {
    let now = now_ms();
    match state
        .db
        .write_async(move |conn| jobs::retry(conn, id, now))
        .await?
    {
        RetryResult::Queued => {
            log::info!("admin: delivery {id} queued again");
            state.wake_workers.notify_one();
            Ok(())
        }
        RetryResult::NotFound => Err(AdminError::NotFound(format!("there is no delivery {id}"))),
        RetryResult::AlreadyOpen(status) => Err(AdminError::Conflict(format!(
            "delivery {id} is {status}: it will be sent anyway"
        ))),
    }
}

/// Which dead deliveries to queue again; all when empty.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct RetryDeadRequest {
    /// Only those for this destination.
    pub destination: Option<String>,
    /// Only those queued at or after (RFC 3339 or unix ms).
    pub since: Option<String>,
    /// Only those queued before (RFC 3339 or unix ms).
    pub until: Option<String>,
}

/// `POST /admin/api/deliveries/retry-dead`: every dead delivery (optionally of a destination or a
/// time range) queued again.
#[utoipa::path(post, path = "/admin/api/deliveries/retry-dead", tag = "admin",
    request_body(content = RetryDeadRequest, description = "filters; an empty body retries every dead delivery"),
    responses((status = 200, body = ActionResult), (status = 400), (status = 401)),
    security(("admin_token" = [])))]
pub async fn retry_dead(
    request: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    authorize(&request, &state)?;
    let filters: RetryDeadRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RetryDeadRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| AdminError::BadRequest(format!("the body is not valid: {e}")))?
    };
    let since = filters.since.map(|t| parse_time("since", &t)).transpose()?;
    let until = filters.until.map(|t| parse_time("until", &t)).transpose()?;
    let destination = filters.destination;
    let now = now_ms();
    let count = state
        .db
        .write_async(move |conn| {
            store::retry_dead_matching(conn, destination.as_deref(), since, until, now)
        })
        .await?;
    log::info!("admin: {count} dead deliveries queued again");
    state.wake_workers.notify_one();
    Ok(HttpResponse::Ok().json(ActionResult {
        status: "queued".into(),
        count,
    }))
}

/// `POST /admin/api/deliveries/{id}/cancel`: a waiting or pending delivery given up on (dead,
/// replayable); the next in the subscriber's line goes ahead.
#[utoipa::path(post, path = "/admin/api/deliveries/{id}/cancel", tag = "admin",
    params(("id" = i64, Path, description = "the delivery's id")),
    responses((status = 200, body = ActionResult), (status = 401), (status = 404),
        (status = 409, description = "the delivery is being sent or has finished")),
    security(("admin_token" = [])))]
pub async fn cancel_delivery(
    request: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, AdminError> {
    authorize(&request, &state)?;
    let id = id.into_inner();
    let now = now_ms();
    match state
        .db
        .write_async(move |conn| store::cancel(conn, id, now, "cancelled by the operator"))
        .await?
    {
        CancelResult::Cancelled => {
            log::info!("admin: delivery {id} cancelled");
            state.wake_workers.notify_one();
            Ok(HttpResponse::Ok().json(ActionResult {
                status: "cancelled".into(),
                count: 1,
            }))
        }
        CancelResult::NotFound => Err(AdminError::NotFound(format!("there is no delivery {id}"))),
        CancelResult::NotOpen(status) => Err(AdminError::Conflict(format!(
            "delivery {id} is {status}: only waiting or pending deliveries can be cancelled"
        ))),
    }
}

/// One thing that happened to a subscriber.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineItem {
    /// When (RFC 3339).
    pub at: String,
    /// `inbound` (a webhook about them), `job` (a delivery queued) or `attempt` (a call made).
    pub kind: String,
    /// The webhook's or the delivery's id.
    pub id: i64,
    /// What happened.
    pub summary: String,
}

/// A subscriber, their referral fields as the ESP gets them, and their timeline.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriberView {
    /// Their address.
    pub email: String,
    /// `subscribed` or `unsubscribed`.
    pub status: String,
    /// The ESP's id, as it sent it.
    #[schema(value_type = Object)]
    pub esp_id: Option<Value>,
    /// First name.
    pub first_name: Option<String>,
    /// Full name.
    pub name: Option<String>,
    /// First heard of (RFC 3339).
    pub created_at: String,
    /// Last changed (RFC 3339).
    pub updated_at: String,
    /// Each configured ESP field and its current value.
    #[schema(value_type = Object)]
    pub fields: BTreeMap<String, Value>,
    /// Webhooks, deliveries and attempts, oldest first (the latest 200 of each).
    pub timeline: Vec<TimelineItem>,
}

/// Reads a subscriber's view.
pub async fn subscriber_view(
    state: &AppState,
    email: &str,
) -> Result<Option<SubscriberView>, AdminError> {
    let email = email.trim().to_lowercase();
    let found = state
        .db
        .read_async(move |conn| {
            let Some(subscriber) = store::subscriber_by_email(conn, &email)? else {
                return Ok(None);
            };
            let fields = subscribers::referral_state(conn, subscriber.id)?;
            let timeline = store::timeline(conn, subscriber.id, 200)?;
            Ok(Some((subscriber, fields, timeline)))
        })
        .await?;
    let Some((subscriber, referral, timeline)) = found else {
        return Ok(None);
    };
    let fields = referral
        .map(|state_now| state.settings.esp.fields.values(&state_now))
        .unwrap_or_default()
        .into_iter()
        .collect();
    Ok(Some(SubscriberView {
        email: subscriber.email,
        status: subscriber.status,
        esp_id: subscribers::esp_id_value(subscriber.esp_id.as_deref()),
        first_name: subscriber.first_name,
        name: subscriber.name,
        created_at: rfc3339(subscriber.created_at),
        updated_at: rfc3339(subscriber.updated_at),
        fields,
        timeline: timeline
            .into_iter()
            .map(|e| TimelineItem {
                at: rfc3339(e.at),
                kind: e.kind.into(),
                id: e.id,
                summary: e.summary,
            })
            .collect(),
    }))
}

/// `GET /admin/api/subscribers/{email}`.
#[utoipa::path(get, path = "/admin/api/subscribers/{email}", tag = "admin",
    params(("email" = String, Path, description = "the subscriber's address")),
    responses((status = 200, body = SubscriberView), (status = 401), (status = 404)),
    security(("admin_token" = [])))]
pub async fn get_subscriber(
    request: HttpRequest,
    state: web::Data<AppState>,
    email: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    authorize(&request, &state)?;
    match subscriber_view(&state, &email).await? {
        Some(view) => Ok(HttpResponse::Ok().json(view)),
        None => Err(AdminError::NotFound(
            "no subscriber has that address".into(),
        )),
    }
}

/// Counts over one period.
#[derive(Debug, Serialize, ToSchema)]
pub struct Period {
    /// Webhooks received.
    pub received: i64,
    /// Deliveries done.
    pub delivered: i64,
    /// Deliveries that died.
    pub dead: i64,
    /// Calls made.
    pub attempts: i64,
    /// Share of calls answered 2xx (0 to 1); absent without calls.
    pub success_rate: Option<f64>,
    /// Calls per second over the period.
    pub attempts_per_second: f64,
}

/// One destination's queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct Queue {
    /// The destination.
    pub destination: String,
    /// Open (waiting, pending, running) deliveries.
    pub open: i64,
    /// How long they take at the destination's rate limit, if it is paced.
    pub drain_estimate_seconds: Option<f64>,
}

/// The bridge at a glance.
#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    /// The last hour.
    pub last_hour: Period,
    /// The last 24 hours.
    pub last_day: Period,
    /// Open deliveries per destination.
    pub queues: Vec<Queue>,
    /// How late the most overdue delivery is.
    pub oldest_due_seconds: f64,
}

/// Reads the stats.
pub async fn stats(state: &AppState) -> Result<Stats, AdminError> {
    let now = now_ms();
    let (hour, day, depths, oldest) = state
        .db
        .read_async(move |conn| {
            Ok((
                store::counts_since(conn, now - 3_600_000)?,
                store::counts_since(conn, now - 86_400_000)?,
                jobs::depth_by_destination(conn)?,
                jobs::oldest_due(conn, now)?,
            ))
        })
        .await?;
    let period = |c: store::Counts, seconds: f64| Period {
        received: c.received,
        delivered: c.delivered,
        dead: c.dead,
        attempts: c.attempts,
        success_rate: (c.attempts > 0).then(|| c.attempts_ok as f64 / c.attempts as f64),
        attempts_per_second: c.attempts as f64 / seconds,
    };
    let mut queues: Vec<Queue> = depths
        .into_iter()
        .map(|(destination, open)| Queue {
            drain_estimate_seconds: state.peers.drain_seconds(&destination, open),
            destination,
            open,
        })
        .collect();
    for destination in [
        state.peers.platform.destination(),
        crate::fields::DESTINATION,
    ] {
        if !queues.iter().any(|q| q.destination == destination) {
            queues.push(Queue {
                destination: destination.into(),
                open: 0,
                drain_estimate_seconds: None,
            });
        }
    }
    queues.sort_by(|a, b| a.destination.cmp(&b.destination));
    Ok(Stats {
        last_hour: period(hour, 3600.0),
        last_day: period(day, 86400.0),
        queues,
        oldest_due_seconds: oldest.map_or(0.0, |run_at| (now - run_at).max(0) as f64 / 1000.0),
    })
}

/// `GET /admin/api/stats`.
#[utoipa::path(get, path = "/admin/api/stats", tag = "admin",
    responses((status = 200, body = Stats), (status = 401), (status = 404)),
    security(("admin_token" = [])))]
pub async fn get_stats(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    authorize(&request, &state)?;
    Ok(HttpResponse::Ok().json(stats(&state).await?))
}

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
        list_deliveries,
        get_delivery,
        retry_delivery,
        retry_dead,
        cancel_delivery,
        get_subscriber,
        get_stats,
        openapi,
    ),
    components(schemas(DeliveryPage, Delivery, DeliveryDetail, Attempt, ActionResult,
        RetryDeadRequest, SubscriberView, TimelineItem, Stats, Period, Queue)),
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
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    authorize(&request, &state)?;
    Ok(HttpResponse::Ok().json(ApiDoc::openapi()))
}
