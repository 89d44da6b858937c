//! The dashboard's sessions (DESIGN 3.11): signing in with the admin token creates a random
//! session id, kept in the browser's `HttpOnly`, `SameSite=Strict` cookie (`Secure` unless served
//! on loopback) and stored here only as its SHA-256 with an expiry (`BRIDGE_ADMIN_SESSION_TTL`);
//! signing out deletes it. Every form carries a token derived from the session id, and a
//! cross-site `Origin` is refused. Sign-ins are limited per source address.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::header;
use actix_web::HttpRequest;
use sha2::{Digest, Sha256};

use super::admin::{self, AdminError};
use crate::db::{now_ms, sessions};
use crate::state::AppState;

/// The session cookie.
pub const SESSION_COOKIE: &str = "bridge_session";

/// A signed-in browser's session.
#[derive(Debug, Clone)]
pub struct Session {
    id_sha256: String,
    /// The token its forms carry.
    pub csrf: String,
}

impl Session {
    fn of(id: &str) -> Session {
        Session {
            id_sha256: hex::encode(Sha256::digest(id.as_bytes())),
            // Derived from the id, which no other site can read (the cookie is HttpOnly).
            csrf: hex::encode(&Sha256::digest(format!("referral-bridge form\0{id}"))[..16]),
        }
    }
}

/// The request's live session, if it has one; [`AdminError::Off`] while the admin token is
/// unset.
pub async fn current(
    request: &HttpRequest,
    state: &AppState,
) -> Result<Option<Session>, AdminError> {
    admin::admin_token(state)?;
    let Some(cookie) = request.cookie(SESSION_COOKIE) else {
        return Ok(None);
    };
    let session = Session::of(cookie.value());
    let hash = session.id_sha256.clone();
    let live = state
        .db
        .read_async(move |conn| sessions::is_live(conn, &hash, now_ms()))
        .await?;
    Ok(live.then_some(session))
}

/// Starts a session: stores it and returns the cookie that carries its id.
pub async fn start(request: &HttpRequest, state: &AppState) -> Result<Cookie<'static>, AdminError> {
    let id = hex::encode(rand::random::<[u8; 32]>());
    let session = Session::of(&id);
    let ttl = state.settings.admin_session_ttl;
    let now = now_ms();
    let expires_at = now.saturating_add(crate::config::millis(ttl));
    state
        .db
        .write_async(move |conn| sessions::create(conn, &session.id_sha256, now, expires_at))
        .await?;
    Ok(Cookie::build(SESSION_COOKIE, id)
        .path("/admin")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(!on_loopback(request))
        .max_age(actix_web::cookie::time::Duration::seconds(
            i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
        ))
        .finish())
}

/// Ends `session` (it can no longer sign anything in); returns the cookie that clears it.
pub async fn end(state: &AppState, session: Session) -> Result<Cookie<'static>, AdminError> {
    state
        .db
        .write_async(move |conn| sessions::revoke(conn, &session.id_sha256))
        .await?;
    let mut cookie = Cookie::build(SESSION_COOKIE, "").path("/admin").finish();
    cookie.make_removal();
    Ok(cookie)
}

/// Checks a form that changes something: a live session, from this site, with its form token.
pub async fn check_form(
    request: &HttpRequest,
    state: &AppState,
    csrf: &str,
) -> Result<Session, AdminError> {
    let session = current(request, state)
        .await?
        .ok_or(AdminError::Unauthorized)?;
    if cross_site(request)
        || !referral_bridge_adapters::secrets_match(csrf.as_bytes(), session.csrf.as_bytes())
    {
        return Err(AdminError::BadRequest(
            "the form is stale or came from another site; reload the page".into(),
        ));
    }
    Ok(session)
}

/// Whether the request came from another site (an `Origin` whose host is not ours).
pub fn cross_site(request: &HttpRequest) -> bool {
    let Some(origin) = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let host = request.connection_info().host().to_string();
    origin.split_once("://").map(|(_, rest)| rest) != Some(host.as_str())
}

/// Whether the page is served on a loopback address, where a `Secure` cookie would not be sent
/// back over plain HTTP.
fn on_loopback(request: &HttpRequest) -> bool {
    let info = request.connection_info();
    let host = info.host();
    let name = host
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(host, |(name, _)| name);
    matches!(name, "localhost" | "127.0.0.1" | "[::1]") && info.scheme() == "http"
}
