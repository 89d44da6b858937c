//! `/admin/api/deliveries`: outgoing jobs filtered, paged, shown, retried and cancelled.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{parse_time, rfc3339, AdminAuth, AdminError};
use crate::db::admin::{
    self as store, AttemptSummary, CancelResult, DeliveryFilter, JobView, RetryResult,
};
use crate::db::now_ms;
use crate::state::AppState;

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
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    /// `waiting`, `pending`, `running`, `done`, `skipped` (a field write with nothing new),
    /// `dead`, or `open` for the first three.
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

/// The `status` filters the list takes.
pub const STATUSES: [&str; 7] = [
    "waiting", "pending", "running", "done", "skipped", "dead", "open",
];

/// The destinations a delivery can have.
pub use crate::db::jobs::DESTINATIONS;

/// The largest page.
pub const MAX_LIMIT: i64 = 500;

/// `destination`, when it is one there can be, or a 400 naming the known ones.
fn known_destination(destination: Option<String>) -> Result<Option<String>, AdminError> {
    match destination {
        Some(d) if !DESTINATIONS.contains(&d.as_str()) => Err(AdminError::BadRequest(format!(
            "`destination`: `{}` is not one of {}",
            referral_bridge_adapters::excerpt(&d),
            DESTINATIONS.join(", ")
        ))),
        other => Ok(other),
    }
}

/// `GET /admin/api/deliveries`.
#[utoipa::path(get, path = "/admin/api/deliveries", tag = "admin",
    params(DeliveryQuery),
    responses((status = 200, body = DeliveryPage, description = "a page of deliveries, newest first"), (status = 400), (status = 401), (status = 404)),
    security(("admin_token" = [])))]
pub async fn list_deliveries(
    _admin: AdminAuth,
    state: web::Data<AppState>,
    query: web::Query<DeliveryQuery>,
) -> Result<HttpResponse, AdminError> {
    let query = query.into_inner();
    if let Some(status) = &query.status {
        if !STATUSES.contains(&status.as_str()) {
            return Err(AdminError::BadRequest(format!(
                "`status`: `{}` is not one of {}",
                referral_bridge_adapters::excerpt(status),
                STATUSES.join(", ")
            )));
        }
    }
    if query.email.as_deref().is_some_and(|e| e.contains('\0')) {
        return Err(AdminError::BadRequest(
            "`email` holds a NUL character (U+0000), which the bridge does not take".into(),
        ));
    }
    let limit = query.limit.unwrap_or(50);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(AdminError::BadRequest(format!(
            "`limit` must be between 1 and {MAX_LIMIT}"
        )));
    }
    let filter = DeliveryFilter {
        status: query.status,
        destination: known_destination(query.destination)?,
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
    responses((status = 200, body = DeliveryDetail, description = "the delivery, its request body and every attempt"), (status = 401), (status = 404)),
    security(("admin_token" = [])))]
pub async fn get_delivery(
    _admin: AdminAuth,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, AdminError> {
    let id = id.into_inner();
    let found = state
        .db
        .read_async(move |conn| {
            Ok(match store::get(conn, id)? {
                Some(job) => Some((job, store::attempts_of(conn, id)?)),
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
    request_body(content = Option<RetryRequest>, description = "optional; `{\"force\": true}` retries even with earlier dead deliveries in the subscriber's line"),
    responses((status = 200, body = ActionResult, description = "queued again, due now"), (status = 400), (status = 401), (status = 404),
        (status = 409, description = "the delivery is still open, or earlier deliveries of the same subscriber and destination are dead (their ids are listed)")),
    security(("admin_token" = [])))]
pub async fn retry_delivery(
    _admin: AdminAuth,
    state: web::Data<AppState>,
    id: web::Path<i64>,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    let request: RetryRequest = json_object(&body)?;
    retry_one(&state, id.into_inner(), request.force).await?;
    Ok(HttpResponse::Ok().json(ActionResult {
        status: "queued".into(),
        count: 1,
    }))
}

/// How a single delivery is retried.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    /// Retry even though earlier deliveries of the same subscriber and destination are dead
    /// (they stay dead, and this one goes first).
    #[serde(default)]
    pub force: bool,
}

/// An optional JSON object body: no body (zero bytes) is the default; anything but an object
/// (whitespace alone is not JSON either), or an object with a key the endpoint does not know, is
/// a 400 naming what is wrong.
pub(super) fn json_object<T: Default + serde::de::DeserializeOwned>(
    body: &[u8],
) -> Result<T, AdminError> {
    if body.is_empty() {
        return Ok(T::default());
    }
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| AdminError::BadRequest(format!("the body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(AdminError::BadRequest(
            "the body must be a JSON object".into(),
        ));
    }
    serde_json::from_value(value)
        .map_err(|e| AdminError::BadRequest(format!("the body is not valid: {e}")))
}

/// Queues delivery `id` again and wakes the workers.
pub async fn retry_one(state: &AppState, id: i64, force: bool) -> Result<(), AdminError> {
    let now = now_ms();
    match state
        .db
        .write_async(move |conn| store::retry(conn, id, now, force))
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
        RetryResult::EarlierDead(earlier) => Err(AdminError::Conflict(earlier_dead(id, &earlier))),
    }
}

/// Why a retry was refused: the earlier dead deliveries, to retry first (or `force`).
fn earlier_dead(id: i64, earlier: &[i64]) -> String {
    let ids: Vec<String> = earlier.iter().map(i64::to_string).collect();
    format!(
        "delivery {id} has earlier dead deliveries to the same destination for the same \
         subscriber: {}; retry those first, or send `{{\"force\": true}}` to send this one \
         before them",
        ids.join(", ")
    )
}

/// Which dead deliveries to queue again; all when empty.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
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
    responses((status = 200, body = ActionResult, description = "how many dead deliveries were queued again"), (status = 400), (status = 401)),
    security(("admin_token" = [])))]
pub async fn retry_dead(
    _admin: AdminAuth,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    let filters: RetryDeadRequest = json_object(&body)?;
    let since = filters.since.map(|t| parse_time("since", &t)).transpose()?;
    let until = filters.until.map(|t| parse_time("until", &t)).transpose()?;
    let destination = known_destination(filters.destination)?;
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
    responses((status = 200, body = ActionResult, description = "cancelled: dead, replayable"), (status = 401), (status = 404),
        (status = 409, description = "the delivery is being sent or has finished")),
    security(("admin_token" = [])))]
pub async fn cancel_delivery(
    _admin: AdminAuth,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, AdminError> {
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
