//! The dashboard at `/admin/`: one server-rendered page (no front-end build) with the queues,
//! recent rates, dead deliveries with a Retry button, and a subscriber search with their
//! timeline. The admin token is entered once, for a session that ends ([`super::session`]).

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde::Deserialize;

use super::admin::{self, AdminError, Delivery, SubscriberView};
use super::session::{self, cross_site};
use crate::db::admin::{list_deliveries, DeliveryFilter};
use crate::state::AppState;

const STYLE: &str = r#"
:root { color-scheme: light dark; --bg: #f6f7f9; --card: #fff; --ink: #1d2330; --muted: #667085;
  --line: #e4e7ec; --accent: #3b5bdb; --bad: #c92a2a; --good: #2b8a3e; }
@media (prefers-color-scheme: dark) { :root { --bg: #11151c; --card: #1a202a; --ink: #e6e9ef;
  --muted: #98a2b3; --line: #2a3240; --accent: #7b93ff; --bad: #ff6b6b; --good: #69db7c; } }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  background: var(--bg); color: var(--ink); }
header { display: flex; align-items: center; justify-content: space-between; gap: 1rem;
  padding: .9rem 1.2rem; background: var(--card); border-bottom: 1px solid var(--line); }
header h1 { font-size: 1.05rem; margin: 0; letter-spacing: .01em; }
main { max-width: 1100px; margin: 0 auto; padding: 1.2rem; display: grid; gap: 1.2rem; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 12px; padding: 1rem 1.2rem; }
h2 { font-size: .95rem; margin: 0 0 .8rem; color: var(--muted); text-transform: uppercase; letter-spacing: .06em; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(140px, 1fr)); gap: .8rem; }
.card { border: 1px solid var(--line); border-radius: 10px; padding: .7rem .9rem; }
.card .n { font-size: 1.6rem; font-weight: 650; }
.card .l { color: var(--muted); font-size: .85rem; }
table { width: 100%; border-collapse: collapse; font-size: .9rem; }
th, td { text-align: left; padding: .45rem .5rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 600; }
td.err { color: var(--bad); word-break: break-word; max-width: 28rem; }
button, input[type=submit] { font: inherit; border: 0; border-radius: 8px; padding: .4rem .8rem;
  background: var(--accent); color: #fff; cursor: pointer; }
button.quiet { background: transparent; color: var(--muted); border: 1px solid var(--line); }
input[type=text], input[type=password], input[type=email] { font: inherit; padding: .45rem .6rem;
  border: 1px solid var(--line); border-radius: 8px; background: var(--bg); color: var(--ink); min-width: 0; flex: 1; }
form.row { display: flex; gap: .5rem; }
.note { padding: .6rem .9rem; border-radius: 8px; background: color-mix(in srgb, var(--good) 15%, transparent); }
.bad { color: var(--bad); } .good { color: var(--good); } .muted { color: var(--muted); }
svg.chart { width: 100%; height: auto; max-height: 260px; margin-top: 1rem; display: block; }
svg.chart .axis { stroke: var(--line); } svg.chart .tick { fill: var(--muted); font-size: 9px; }
svg.chart .received, .key.received { fill: var(--accent); background: var(--accent); }
svg.chart .done, .key.done { fill: var(--good); background: var(--good); }
svg.chart .dead, .key.dead { fill: var(--bad); background: var(--bad); }
.legend { color: var(--muted); font-size: .85rem; margin: .4rem 0 0; }
.key { display: inline-block; width: .8em; height: .8em; border-radius: 2px; margin-left: .6em; }
.login { max-width: 380px; margin: 12vh auto; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .3rem 1rem; margin: 0 0 1rem; }
dt { color: var(--muted); } dd { margin: 0; word-break: break-word; }
@media (max-width: 640px) { .hide-s { display: none; } main { padding: .7rem; } section { padding: .8rem; } }
"#;

fn layout(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body { (body) }
        }
    }
}

fn login_page(error: Option<&str>) -> Markup {
    layout(
        "referral-bridge: sign in",
        html! {
            main {
                section.login {
                    h2 { "referral-bridge" }
                    p.muted { "Enter the admin token (BRIDGE_ADMIN_TOKEN) to open the dashboard." }
                    @if let Some(error) = error { p.bad { (error) } }
                    form.row method="post" action="/admin/login" {
                        input type="password" name="token" id="token" placeholder="admin token"
                            autocomplete="current-password" required;
                        input type="submit" value="Sign in";
                    }
                }
            }
        },
    )
}

fn html_response(status: actix_web::http::StatusCode, markup: Markup) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("X-Frame-Options", "DENY"))
        .body(markup.into_string())
}

/// `GET /admin`: to `/admin/`.
pub async fn redirect() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/admin/"))
        .finish()
}

/// The page's query: a subscriber to look up, a delivery just retried.
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    email: Option<String>,
    retried: Option<i64>,
    error: Option<String>,
    /// Why the last sign-in was refused ([`SignInRefused`]'s code).
    signin: Option<String>,
}

/// `GET /admin/`: the dashboard, or the sign-in form.
pub async fn page(
    request: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, AdminError> {
    let Some(session) = session::current(&request, &state).await? else {
        return Ok(html_response(
            actix_web::http::StatusCode::OK,
            login_page(
                query
                    .signin
                    .as_deref()
                    .and_then(SignInRefused::from_code)
                    .map(SignInRefused::message),
            ),
        ));
    };
    let csrf = session.csrf;
    let stats = admin::stats(&state).await?;
    let reconcile = admin::reconcile::status(&state).await?;
    let now = crate::db::now_ms();
    let current_hour = now / 3_600_000;
    let since = (current_hour - crate::http::chart::HOURS as i64 + 1) * 3_600_000;
    let (hourly, size, oldest) = state
        .db
        .read_async(move |conn| {
            Ok((
                crate::db::admin::hourly(conn, since)?,
                crate::db::prune::database_size(conn)?,
                crate::db::prune::oldest_body(conn)?,
            ))
        })
        .await?;
    let hours = crate::http::chart::by_hour(&hourly, current_hour);
    let retention = match state.settings.retention.as_secs() {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{} days", s / 86_400),
        s if s >= 3_600 && s % 3_600 == 0 => format!("{} h", s / 3_600),
        _ => humantime::format_duration(state.settings.retention).to_string(),
    };
    let dead = state
        .db
        .read_async(|conn| {
            list_deliveries(
                conn,
                &DeliveryFilter {
                    status: Some("dead".into()),
                    ..DeliveryFilter::default()
                },
                50,
            )
        })
        .await?;
    let dead: Vec<Delivery> = dead.iter().map(Delivery::from).collect();
    let searched = match query
        .email
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        Some(email) => Some((
            email.to_string(),
            admin::subscriber_view(&state, email).await?,
        )),
        None => None,
    };
    let percent =
        |rate: Option<f64>| rate.map_or("–".to_string(), |r| format!("{:.1}%", r * 100.0));
    let body = html! {
        header {
            h1 { "referral-bridge" }
            form method="post" action="/admin/logout" {
                input type="hidden" name="csrf" value=(csrf);
                button.quiet type="submit" { "Sign out" }
            }
        }
        main {
            @if let Some(id) = query.retried {
                p.note id="flash" { "Delivery " (id) " queued again." }
            }
            @if let Some(error) = &query.error {
                p.bad id="flash" { (error) }
            }
            section {
                h2 { "Queues" }
                div.cards {
                    @for queue in &stats.queues {
                        div.card {
                            div.n data-queue=(queue.destination) { (queue.open) }
                            div.l {
                                "open to " (queue.destination)
                                @if let Some(seconds) = queue.drain_estimate_seconds {
                                    @if seconds > 0.0 { " · ~" (format_seconds(seconds)) " to drain" }
                                }
                            }
                        }
                    }
                    div.card {
                        div.n { (format_seconds(stats.oldest_due_seconds)) }
                        div.l { "oldest due delivery waiting" }
                    }
                }
            }
            section {
                h2 { "Last hour · last 24 hours" }
                div.cards {
                    div.card { div.n { (stats.last_hour.received) " · " (stats.last_day.received) } div.l { "webhooks received" } }
                    div.card { div.n.good { (stats.last_hour.delivered) " · " (stats.last_day.delivered) } div.l { "deliveries done" } }
                    div.card { div.n.bad { (stats.last_hour.dead) " · " (stats.last_day.dead) } div.l { "deliveries dead" } }
                    div.card { div.n { (percent(stats.last_hour.success_rate)) " · " (percent(stats.last_day.success_rate)) } div.l { "calls answered 2xx" } }
                }
                (crate::http::chart::last_day(&hours))
            }
            section id="storage" {
                h2 { "Storage" }
                div.cards {
                    div.card { div.n id="database-size" { (format_bytes(size)) } div.l { "database size" } }
                    div.card {
                        div.n id="oldest-body" {
                            @match oldest {
                                Some(at) => (format_seconds(((now - at).max(0) / 1000) as f64)),
                                None => "–",
                            }
                        }
                        div.l { "oldest stored webhook body (kept for " (retention) ")" }
                    }
                }
                p id="reconcile" {
                    "Reconciliation with the platform: "
                    @match &reconcile.last_run {
                        Some(run) => {
                            "last run " (run.finished_at) ", " (run.total_differences) " differences ("
                            (run.differences.missing_at_platform) " missing at the platform, "
                            (run.differences.unsubscribed_here) " unsubscribed here, "
                            (run.differences.unknown_here) " unknown here, "
                            (run.differences.fields_differ) " fields differing), "
                            (run.queued) " jobs queued"
                        }
                        None => "never run",
                    }
                    @match &reconcile.every {
                        Some(every) => { "; runs every " (every) "." }
                        None => { "; BRIDGE_RECONCILE_EVERY is unset (`referral-bridge reconcile --fix` runs it)." }
                    }
                }
            }
            section id="dead" {
                h2 { "Dead deliveries" }
                @if dead.is_empty() {
                    p.muted id="no-dead" { "None: everything acknowledged has been delivered or is on its way." }
                } @else {
                    table {
                        thead { tr { th { "#" } th { "to" } th.hide-s { "kind" } th { "subscriber" } th { "last error" } th.hide-s { "finished" } th {} } }
                        tbody {
                            @for d in &dead {
                                tr data-delivery=(d.id) {
                                    td { (d.id) }
                                    td { (d.destination) }
                                    td.hide-s { (d.kind) }
                                    td { a href={ "/admin/?email=" (urlencode(&d.subscriber)) } { (d.subscriber) } }
                                    td.err { (d.last_error.as_deref().unwrap_or("")) }
                                    td.hide-s.muted { (d.finished_at.as_deref().unwrap_or("")) }
                                    td {
                                        form method="post" action={ "/admin/deliveries/" (d.id) "/retry" } {
                                            input type="hidden" name="csrf" value=(csrf);
                                            button type="submit" { "Retry" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            section id="subscriber" {
                h2 { "Subscriber" }
                form.row method="get" action="/admin/" {
                    input type="email" name="email" placeholder="subscriber@example.com"
                        value=(searched.as_ref().map(|(e, _)| e.as_str()).unwrap_or(""));
                    input type="submit" value="Search";
                }
                @if let Some((email, view)) = &searched {
                    @match view {
                        None => p.muted { "No subscriber is known as " (email) "." },
                        Some(view) => (subscriber(view)),
                    }
                }
            }
        }
    };
    Ok(html_response(
        actix_web::http::StatusCode::OK,
        layout("referral-bridge", body),
    ))
}

fn subscriber(view: &SubscriberView) -> Markup {
    html! {
        dl style="margin-top:1rem" {
            dt { "email" } dd { (view.email) }
            dt { "status" } dd { (view.status) }
            @if let Some(name) = &view.name { dt { "name" } dd { (name) } }
            @for (field, value) in &view.fields {
                dt { (field) }
                dd { @if value.is_null() { span.muted { "not known yet" } } @else { (value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string())) } }
            }
        }
        table {
            thead { tr { th { "when" } th { "what" } th { "" } } }
            tbody {
                @for item in &view.timeline {
                    tr { td.muted { (item.at) } td { (item.kind) } td { (item.summary) } }
                }
            }
        }
    }
}

/// Bytes in binary units, one decimal.
fn format_bytes(bytes: i64) -> String {
    let mut value = bytes.max(0) as f64;
    for unit in ["B", "KiB", "MiB", "GiB"] {
        if value < 1024.0 || unit == "GiB" {
            return if unit == "B" {
                format!("{value:.0} B")
            } else {
                format!("{value:.1} {unit}")
            };
        }
        value /= 1024.0;
    }
    unreachable!("the loop returns at GiB")
}

fn format_seconds(seconds: f64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(seconds.round() as u64)).to_string()
}

fn urlencode(text: &str) -> String {
    referral_bridge_adapters::encode_component(text)
}

/// The sign-in form.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    token: String,
}

/// `POST /admin/login`: checks the token (a limited number of times a minute per address) and
/// starts a session. A browser is sent back to the sign-in page, with the reason; any other
/// client gets the usual JSON error.
pub async fn login(
    request: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, AdminError> {
    let token = admin::admin_token(&state)?;
    // A browser is sent back to the sign-in page, which shows the reason (every error answer
    // stays JSON, DESIGN 3.3); any other client gets the error itself.
    let refused = |reason: SignInRefused, error: AdminError| {
        if wants_html(&request) {
            Ok(HttpResponse::SeeOther()
                .insert_header((
                    header::LOCATION,
                    format!("/admin/?signin={}", reason.code()),
                ))
                .finish())
        } else {
            Err(error)
        }
    };
    if cross_site(&request) {
        return refused(
            SignInRefused::CrossSite,
            AdminError::Forbidden("the sign-in form was sent from another site".into()),
        );
    }
    if let Err(limited) = state.sign_ins.attempt(&request) {
        log::warn!("admin: sign-ins refused for a while: too many from one address");
        return refused(SignInRefused::TooMany, limited);
    }
    if !referral_bridge_adapters::secrets_match(form.token.trim().as_bytes(), token.as_bytes()) {
        log::warn!("admin: a sign-in with a wrong token");
        return refused(SignInRefused::WrongToken, AdminError::Unauthorized);
    }
    let cookie = session::start(&request, &state).await?;
    log::info!("admin: signed in");
    Ok(HttpResponse::SeeOther()
        .cookie(cookie)
        .insert_header((header::LOCATION, "/admin/"))
        .finish())
}

/// Why a sign-in was refused, as the sign-in page says it (a fixed text per reason: the page
/// shows nothing a link could make it say).
#[derive(Debug, Clone, Copy)]
enum SignInRefused {
    WrongToken,
    CrossSite,
    TooMany,
}

impl SignInRefused {
    const ALL: [SignInRefused; 3] = [
        SignInRefused::WrongToken,
        SignInRefused::CrossSite,
        SignInRefused::TooMany,
    ];

    fn code(self) -> &'static str {
        match self {
            SignInRefused::WrongToken => "wrong",
            SignInRefused::CrossSite => "cross-site",
            SignInRefused::TooMany => "too-many",
        }
    }

    fn from_code(code: &str) -> Option<SignInRefused> {
        Self::ALL.into_iter().find(|reason| reason.code() == code)
    }

    fn message(self) -> &'static str {
        match self {
            SignInRefused::WrongToken => "That is not the admin token.",
            SignInRefused::CrossSite => "Refused: the form was sent from another site.",
            SignInRefused::TooMany => {
                "Too many sign-ins from this address: wait a minute, then try again."
            }
        }
    }
}

/// Whether the client asked for a page (a browser's form post does).
fn wants_html(request: &HttpRequest) -> bool {
    request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// A form that changes something: only its token.
#[derive(Debug, Deserialize)]
pub struct ActionForm {
    csrf: String,
}

/// `POST /admin/logout`: ends the session (the cookie can sign nothing in any more).
pub async fn logout(
    request: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<ActionForm>,
) -> Result<HttpResponse, AdminError> {
    let session = session::check_form(&request, &state, &form.csrf).await?;
    let cookie = session::end(&state, session).await?;
    log::info!("admin: signed out");
    Ok(HttpResponse::SeeOther()
        .cookie(cookie)
        .insert_header((header::LOCATION, "/admin/"))
        .finish())
}

/// `POST /admin/deliveries/{id}/retry`: the Retry button.
pub async fn retry(
    request: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<i64>,
    form: web::Form<ActionForm>,
) -> Result<HttpResponse, AdminError> {
    session::check_form(&request, &state, &form.csrf).await?;
    let id = id.into_inner();
    let location = match admin::retry_one(&state, id, false).await {
        Ok(()) => format!("/admin/?retried={id}"),
        Err(AdminError::NotFound(reason) | AdminError::Conflict(reason)) => {
            format!("/admin/?error={}", urlencode(&reason))
        }
        Err(e) => return Err(e),
    };
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish())
}
