//! The referral platform ESP events go to (`BRIDGE_PLATFORM`). Jobs always carry the
//! `subscribe` / `update` / `unsubscribe` bodies of SparkLoop's custom integration
//! ([`crate::sparkloop::webhook_payload`]); LoyaltySurf's and ReferralLoop's API calls are made
//! from them when the job is sent, as for SparkLoop's API.

use referral_bridge_adapters::outbound::WriteVerdict;
use serde_json::{json, Map, Value};

use crate::config::{LoyaltySurfApi, OnUnsubscribe, Platform, ReferralLoopApi};
use crate::sparkloop::ApiCall;

/// The destination name of jobs for LoyaltySurf.
pub const LOYALTYSURF: &str = "loyaltysurf";

/// The destination name of jobs for ReferralLoop.
pub const REFERRALLOOP: &str = "referralloop";

/// Which ESP events are queued for the platform, and under which destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarding {
    /// `jobs.destination`.
    pub destination: &'static str,
    /// The job kinds the platform is told of; other events are recorded only.
    pub kinds: &'static [&'static str],
}

impl Forwarding {
    /// The forwarding of `platform`: SparkLoop and LoyaltySurf (deleting on unsubscribe) take
    /// all three; LoyaltySurf keeping its participants takes signups and changes; ReferralLoop's
    /// API can only add signups.
    pub fn for_platform(platform: &Platform) -> Forwarding {
        const ALL: &[&str] = &["subscribe", "update", "unsubscribe"];
        match platform {
            Platform::SparkLoop => Forwarding {
                destination: crate::sparkloop::DESTINATION,
                kinds: ALL,
            },
            Platform::LoyaltySurf(api) => Forwarding {
                destination: LOYALTYSURF,
                kinds: match api.on_unsubscribe {
                    OnUnsubscribe::Delete => ALL,
                    OnUnsubscribe::Keep => &["subscribe", "update"],
                },
            },
            Platform::ReferralLoop(_) => Forwarding {
                destination: REFERRALLOOP,
                kinds: &["subscribe"],
            },
        }
    }

    /// Whether a job of `kind` is queued.
    pub fn forwards(&self, kind: &str) -> bool {
        self.kinds.contains(&kind)
    }
}

/// The person in a job's body: email, previous email, first and last name.
struct Subscriber {
    email: String,
    previous_email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    name: Option<String>,
}

fn subscriber(payload: &str) -> Result<Subscriber, String> {
    let body: Value =
        serde_json::from_str(payload).map_err(|e| format!("the job's body is not JSON: {e}"))?;
    let s = &body["subscriber"];
    let text = |key: &str| {
        s[key]
            .as_str()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
    };
    let email = text("email").ok_or("the job's body has no subscriber email")?;
    let name = text("name");
    // The ESP gives a first name, a full name, or both; platforms want first and last.
    let first_name = text("first_name").or_else(|| {
        name.as_deref()
            .and_then(|n| n.split_whitespace().next())
            .map(str::to_string)
    });
    let last_name = match (&name, &first_name) {
        (Some(name), Some(first)) => name
            .strip_prefix(first.as_str())
            .map(str::trim)
            .filter(|rest| !rest.is_empty() && name.starts_with(&format!("{first} ")))
            .map(str::to_string),
        _ => None,
    };
    Ok(Subscriber {
        email,
        previous_email: text("previous_email"),
        first_name,
        last_name,
        name: name.or_else(|| text("first_name")),
    })
}

/// `base` with `segments` appended, each percent-encoded as a path segment.
fn url(base: &str, variable: &str, segments: &[&str]) -> Result<String, String> {
    let mut url = reqwest::Url::parse(base).map_err(|e| format!("{variable} is not a URL: {e}"))?;
    url.path_segments_mut()
        .map_err(|_| format!("{variable} cannot take a path"))?
        .pop_if_empty()
        .extend(segments);
    Ok(url.to_string())
}

fn insert_some(map: &mut Map<String, Value>, key: &str, value: Option<String>) {
    if let Some(value) = value {
        map.insert(key.into(), Value::String(value));
    }
}

/// The LoyaltySurf call for a job: subscribe is `POST /campaign/{id}/participant` with `email`,
/// `firstName`, `lastName`; an update `POST /campaign/{id}/participant/{previous email}` (the
/// participant is found by address) with the new ones; unsubscribe, when it is sent,
/// `DELETE /campaign/{id}/participant/{email}`.
pub fn loyaltysurf_call(
    api: &LoyaltySurfApi,
    kind: &str,
    payload: &str,
) -> Result<ApiCall, String> {
    let s = subscriber(payload)?;
    let variable = "LOYALTYSURF_API_URL";
    let campaign = api.campaign_id.as_str();
    let mut body = Map::new();
    body.insert("email".into(), json!(s.email));
    insert_some(&mut body, "firstName", s.first_name);
    insert_some(&mut body, "lastName", s.last_name);
    Ok(match kind {
        "subscribe" => ApiCall {
            method: "POST",
            url: url(
                &api.api_url,
                variable,
                &["campaign", campaign, "participant"],
            )?,
            body: Value::Object(body).to_string(),
        },
        "update" => {
            let identifier = s.previous_email.unwrap_or_else(|| s.email.clone());
            ApiCall {
                method: "POST",
                url: url(
                    &api.api_url,
                    variable,
                    &["campaign", campaign, "participant", &identifier],
                )?,
                body: Value::Object(body).to_string(),
            }
        }
        "unsubscribe" => ApiCall {
            method: "DELETE",
            url: url(
                &api.api_url,
                variable,
                &["campaign", campaign, "participant", &s.email],
            )?,
            body: String::new(),
        },
        other => return Err(format!("LoyaltySurf's API has no call for a `{other}` job")),
    })
}

/// The ReferralLoop call for a job: subscribe is `POST /waitlists/{id}/signups` with `email`
/// and `name`. Its API has no update or unsubscribe, so no other job is queued for it.
pub fn referralloop_call(
    api: &ReferralLoopApi,
    kind: &str,
    payload: &str,
) -> Result<ApiCall, String> {
    let s = subscriber(payload)?;
    match kind {
        "subscribe" => {
            let mut body = Map::new();
            body.insert("email".into(), json!(s.email));
            insert_some(&mut body, "name", s.name);
            Ok(ApiCall {
                method: "POST",
                url: url(
                    &api.api_url,
                    "REFERRALLOOP_API_URL",
                    &["waitlists", &api.waitlist_id, "signups"],
                )?,
                body: Value::Object(body).to_string(),
            })
        }
        other => Err(format!(
            "ReferralLoop's API has no call for a `{other}` job"
        )),
    }
}

/// How the platform's answer is taken where it differs from the usual reading of a status:
/// LoyaltySurf's 409 is a duplicate request still in progress (retried), a participant already
/// deleted is done; ReferralLoop's 409 is a signup that already exists (done).
pub fn special_verdict(platform: &Platform, kind: &str, status: u16) -> Option<WriteVerdict> {
    match (platform, kind, status) {
        (Platform::LoyaltySurf(_), _, 409) => Some(WriteVerdict::RetryLater { after: None }),
        (Platform::LoyaltySurf(_), "unsubscribe", 404) => Some(WriteVerdict::Done),
        (Platform::ReferralLoop(_), "subscribe", 409) => Some(WriteVerdict::Done),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RateLimit;

    fn loyaltysurf() -> LoyaltySurfApi {
        LoyaltySurfApi {
            api_url: "http://ls.test/v1".into(),
            api_key: None,
            campaign_id: "ct8f71".into(),
            rate_limits: vec![RateLimit::parse("30/5s").unwrap()],
            on_unsubscribe: OnUnsubscribe::Delete,
        }
    }

    #[test]
    fn loyaltysurf_calls_have_the_documented_shapes() {
        let api = loyaltysurf();
        let call = loyaltysurf_call(
            &api,
            "subscribe",
            r#"{"type":"subscribe","subscriber":{"email":"a@b.co","name":"Ann Lee Smith","first_name":"Ann"}}"#,
        )
        .unwrap();
        assert_eq!(
            (call.method, call.url.as_str()),
            ("POST", "http://ls.test/v1/campaign/ct8f71/participant")
        );
        assert_eq!(
            serde_json::from_str::<Value>(&call.body).unwrap(),
            json!({"email": "a@b.co", "firstName": "Ann", "lastName": "Lee Smith"})
        );
        let call = loyaltysurf_call(
            &api,
            "update",
            r#"{"type":"update","subscriber":{"email":"new@b.co","previous_email":"old+1@b.co"}}"#,
        )
        .unwrap();
        assert_eq!(
            call.url,
            "http://ls.test/v1/campaign/ct8f71/participant/old+1@b.co"
        );
        assert_eq!(call.body, r#"{"email":"new@b.co"}"#);
        let call = loyaltysurf_call(
            &api,
            "unsubscribe",
            r#"{"type":"unsubscribe","subscriber":{"email":"a@b.co"}}"#,
        )
        .unwrap();
        assert_eq!(call.method, "DELETE");
        let keep = Platform::LoyaltySurf(LoyaltySurfApi {
            on_unsubscribe: OnUnsubscribe::Keep,
            ..api
        });
        assert!(!Forwarding::for_platform(&keep).forwards("unsubscribe"));
        assert_eq!(
            special_verdict(&keep, "subscribe", 409),
            Some(WriteVerdict::RetryLater { after: None })
        );
    }

    #[test]
    fn referralloop_takes_signups_only() {
        let api = ReferralLoopApi {
            api_url: "http://rl.test/api/v1/".into(),
            api_key: None,
            waitlist_id: "w 1".into(),
            rate_limit: RateLimit::parse("1000/1h").unwrap(),
        };
        let call = referralloop_call(
            &api,
            "subscribe",
            r#"{"type":"subscribe","subscriber":{"email":"a@b.co","first_name":"Ann"}}"#,
        )
        .unwrap();
        assert_eq!(call.url, "http://rl.test/api/v1/waitlists/w%201/signups");
        assert_eq!(call.body, r#"{"email":"a@b.co","name":"Ann"}"#);
        let platform = Platform::ReferralLoop(api);
        assert!(!Forwarding::for_platform(&platform).forwards("update"));
        assert_eq!(
            special_verdict(&platform, "subscribe", 409),
            Some(WriteVerdict::Done)
        );
    }
}
