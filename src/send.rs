//! Sending the requests the adapters describe: one `reqwest::Client` per kind of peer, none
//! following redirects (a key header such as `X-Api-Key` or `api-key` must never be carried to
//! another host), and the answers read as far as they are needed.

use std::time::Duration;

use referral_bridge_adapters::outbound::{self, Headers};

/// A client for one kind of peer: calls time out after `timeout` and never follow a redirect.
pub fn client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("referral-bridge/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Why an adapter's request could not be sent or answered.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The adapter asked for a method HTTP does not have.
    #[error("the adapter asked for method {0}")]
    Method(&'static str),
    /// No answer came (a timeout, a refused connection...).
    #[error("{}", describe(.0))]
    Network(#[from] reqwest::Error),
}

/// An adapter's request as a reqwest request on `client` (headers, and the body when it has one).
pub fn http_request(
    client: &reqwest::Client,
    request: outbound::OutboundRequest,
) -> Result<reqwest::RequestBuilder, SendError> {
    let method = reqwest::Method::from_bytes(request.method.as_bytes())
        .map_err(|_| SendError::Method(request.method))?;
    let mut call = client.request(method, &request.url);
    if !request.body.is_empty() {
        call = call.body(request.body);
    }
    for (name, value) in &request.headers {
        call = call.header(name, value);
    }
    Ok(call)
}

/// What came back from a call.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// How long the peer asked to be left alone, as its adapter reads its headers.
    pub retry_after: Option<Duration>,
    /// The body, up to the limit it was read to.
    pub body: String,
}

impl Answer {
    /// Reads the status, the peer's delay (`retry_after` reads the headers as the peer's adapter
    /// does) and the body up to `limit` bytes.
    pub async fn read(
        mut response: reqwest::Response,
        limit: usize,
        retry_after: impl FnOnce(&Headers<'_>) -> Option<Duration>,
    ) -> Answer {
        let status = response.status().as_u16();
        let headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_string())))
            .collect();
        let retry_after = retry_after(&Headers(&headers));
        let mut body = Vec::new();
        while body.len() < limit {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                // The status is what matters; a body cut short is kept as far as it came.
                Err(_) => break,
            }
        }
        body.truncate(limit);
        Answer {
            status,
            retry_after,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    /// The answer as the adapters read it.
    pub fn as_adapter(&self) -> outbound::Answer<'_> {
        outbound::Answer {
            status: self.status,
            retry_after: self.retry_after,
            body: &self.body,
        }
    }
}

/// A network error in words an operator can act on (timed out, connection refused, the host
/// name does not resolve, TLS failed), with the deepest cause's text; never the URL (which may
/// hold a token).
pub fn describe(e: &reqwest::Error) -> String {
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    let lower = detail.to_lowercase();
    let cause = if e.is_timeout() {
        "timed out"
    } else if [
        "dns",
        "lookup address",
        "name or service not known",
        "failed to resolve",
    ]
    .iter()
    .any(|sign| lower.contains(sign))
    {
        "the host name does not resolve"
    } else if lower.contains("connection refused") {
        "connection refused"
    } else if ["certificate", "tls", "ssl", "handshake"]
        .iter()
        .any(|sign| lower.contains(sign))
    {
        "TLS failed"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    if detail.is_empty() || lower == cause.to_lowercase() {
        cause.to_string()
    } else {
        format!("{cause} ({detail})")
    }
}
