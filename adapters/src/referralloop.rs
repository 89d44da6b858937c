//! ReferralLoop, both ways.
//!
//! In: webhooks signed `X-Webhook-Signature: sha256=<hex HMAC-SHA256 of the raw body>`, JSON
//! with `event_type` and the signup in `data`.
//!
//! Out ([`ReferralLoopApi`]): signups, `POST /waitlists/{id}/signups` with a bearer key, and
//! the deletion of an erasure (DESIGN 3.10), `DELETE /waitlists/{id}/signups/{signup id}`, by
//! the signup id its webhooks told the bridge. Its API cannot change a signup, so the ESP's
//! updates and unsubscribes are recorded, not sent.

use hmac::{Hmac, Mac};
use secrecy::SecretString;
use serde_json::{json, Map, Value};
use sha2::Sha256;

use crate::outbound::{Answer, OutboundRequest, WriteVerdict};
use crate::platform::{
    api_url, bearer, email_at, json_call, usual_platform_verdict, CallError, Callback,
    JobSubscriber, OutboundPlatform, PersonUpdate, PlatformCallbacks, ReferralData, DELETE,
};
use crate::{InboundRequest, ParseError, VerifyError};

/// The destination name of jobs for ReferralLoop.
pub const DESTINATION: &str = "referralloop";

/// ReferralLoop's API base.
pub const DEFAULT_API_URL: &str = "https://www.referralloop.dev/api/v1";

/// `REFERRALLOOP_RATE_LIMIT` unless set.
pub const DEFAULT_RATE_LIMIT: &str = "1000/1h";

/// ESP signups sent to one ReferralLoop waitlist (`REFERRALLOOP_*`).
#[derive(Debug, Clone)]
pub struct ReferralLoopApi {
    /// `REFERRALLOOP_API_URL`.
    pub api_url: String,
    /// `REFERRALLOOP_API_KEY` (`Authorization: Bearer`); signups wait while it is unset.
    pub api_key: Option<SecretString>,
    /// `REFERRALLOOP_WAITLIST_ID`.
    pub waitlist_id: String,
}

impl OutboundPlatform for ReferralLoopApi {
    fn destination(&self) -> &'static str {
        DESTINATION
    }

    fn rate_limit_variable(&self) -> &'static str {
        "REFERRALLOOP_RATE_LIMIT"
    }

    fn forwards(&self, kind: &str) -> bool {
        kind == "subscribe"
    }

    fn outbound_problem(&self) -> Option<String> {
        self.api_key.is_none().then(|| {
            "REFERRALLOOP_API_KEY is not set: ESP events are stored and queued for \
             ReferralLoop's API, and are sent once it is"
                .into()
        })
    }

    /// `DELETE /waitlists/{id}/signups/{signup id}`, for a person whose signup id the bridge
    /// has heard (their `signup.created` webhook).
    fn deletes(&self) -> Result<(), String> {
        Ok(())
    }

    /// Subscribe is `POST /waitlists/{id}/signups` with `email` and `name`; a deletion
    /// `DELETE /waitlists/{id}/signups/{signup id}`.
    fn request(&self, kind: &str, payload: &str) -> Result<OutboundRequest, CallError> {
        let s = JobSubscriber::read(payload)?;
        if kind == DELETE {
            let signup = s.platform_id.ok_or(CallError::NoPlatformId {
                platform: "ReferralLoop",
                what: "signup id",
            })?;
            let url = api_url(
                &self.api_url,
                "REFERRALLOOP_API_URL",
                &["waitlists", &self.waitlist_id, "signups", &signup],
            )?;
            return Ok(json_call(
                "DELETE",
                url,
                String::new(),
                bearer(&self.api_key),
            ));
        }
        if kind != "subscribe" {
            return Err(CallError::NoCall {
                platform: "ReferralLoop",
                kind: kind.into(),
            });
        }
        let mut body = Map::new();
        body.insert("email".into(), json!(s.email));
        if let Some(name) = s.name {
            body.insert("name".into(), json!(name));
        }
        let url = api_url(
            &self.api_url,
            "REFERRALLOOP_API_URL",
            &["waitlists", &self.waitlist_id, "signups"],
        )?;
        Ok(json_call(
            "POST",
            url,
            Value::Object(body).to_string(),
            bearer(&self.api_key),
        ))
    }

    /// A 409 to a signup is a signup that already exists: done; a 404 to a deletion, a
    /// signup already gone: done.
    fn read_answer(&self, kind: &str, answer: &Answer<'_>) -> WriteVerdict {
        match (kind, answer.status) {
            ("subscribe", 409) | (DELETE, 404) => WriteVerdict::Done,
            _ => usual_platform_verdict(answer),
        }
    }
}

/// ReferralLoop's callbacks.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReferralLoopCallbacks;

impl PlatformCallbacks for ReferralLoopCallbacks {
    fn name(&self) -> &'static str {
        "referralloop"
    }

    fn verify(
        &self,
        request: &InboundRequest<'_>,
        secret: Option<&str>,
    ) -> Result<(), VerifyError> {
        let secret = secret.ok_or(VerifyError::NotConfigured)?;
        let header = request
            .header("x-webhook-signature")
            .ok_or(VerifyError::Missing)?;
        let signature = std::str::from_utf8(header)
            .ok()
            .map(str::trim)
            .and_then(|h| h.strip_prefix("sha256="))
            .and_then(crate::from_hex)
            .ok_or(VerifyError::Wrong)?;
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key");
        mac.update(request.body);
        // verify_slice compares in constant time.
        mac.verify_slice(&signature).map_err(|_| VerifyError::Wrong)
    }

    fn parse(&self, request: &InboundRequest<'_>) -> Result<Callback, ParseError> {
        parse_callback(request.body)
    }
}

/// Reads a ReferralLoop webhook: `signup.created` (the signup's id, name, referral code and
/// place in the waitlist), `signup.position_changed` (the new place), `signup.deleted` (the
/// signup left the waitlist). A signup without a usable address is left out; other events are
/// ignored.
pub fn parse_callback(body: &[u8]) -> Result<Callback, ParseError> {
    let value = ParseError::json(body)?;
    let event_type = ParseError::event_type(&value, "event_type")?.to_string();
    let data = value.get("data").unwrap_or(&Value::Null);
    let text = |key: &str| {
        data.get(key)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let known = matches!(
        event_type.as_str(),
        "signup.created" | "signup.position_changed" | "signup.deleted"
    );
    let email = if known {
        Some(email_at(data.get("email"), "data.email")?)
    } else {
        None
    };
    let mut update = ReferralData {
        platform_id: text("id"),
        ..ReferralData::default()
    };
    match event_type.as_str() {
        "signup.created" => {
            update.name = text("name");
            update.referral_code = text("referral_code");
            update.position = data.get("position").and_then(Value::as_i64);
            update.removed = Some(false);
        }
        "signup.position_changed" => {
            update.position = data.get("new_position").and_then(Value::as_i64);
        }
        "signup.deleted" => update.removed = Some(true),
        _ => {
            return Ok(Callback {
                event_type,
                people: Vec::new(),
                redemption: None,
                idempotency_key: None,
            })
        }
    }
    let people: Vec<PersonUpdate> = email
        .map(|email| PersonUpdate {
            email,
            data: update,
        })
        .into_iter()
        .collect();
    for person in &people {
        person.check("data")?;
    }
    Ok(Callback {
        event_type,
        people,
        redemption: None,
        idempotency_key: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared signature test vector (`fixtures/platforms/signature_vectors`).
    const SECRET: &str = "test_secret_123";
    const BODY: &[u8] = br#"{"event":"NEW_PARTICIPANT_ADDED","createdAt":1700000000000,"data":{"id":"x9a7uu","email":"richard@piedpiper.com"}}"#;
    const HEADER: &[u8] =
        b"sha256=41df5d80f08cedc09f76c7208dba0b2295cc0548e704ff9f48c3f3c17f9127b7";

    #[test]
    fn signatures_follow_the_test_vector() {
        let request = |headers: &'static [(&'static str, &'static [u8])], body| InboundRequest {
            query: "",
            headers,
            body,
        };
        let rl = ReferralLoopCallbacks;
        let signed: &[(&str, &[u8])] = &[("X-Webhook-Signature", HEADER)];
        assert_eq!(rl.verify(&request(signed, BODY), Some(SECRET)), Ok(()));
        assert_eq!(
            rl.verify(&request(signed, b"{}"), Some(SECRET)),
            Err(VerifyError::Wrong)
        );
        assert_eq!(
            rl.verify(&request(&[], BODY), Some(SECRET)),
            Err(VerifyError::Missing)
        );
        assert_eq!(
            rl.verify(&request(signed, BODY), None),
            Err(VerifyError::NotConfigured)
        );
    }

    #[test]
    fn the_documented_events_are_understood() {
        let created = br#"{"event_type": "signup.created", "waitlist_id": "w1", "data": {
            "id": "789e", "email": "User@example.com", "name": "John Doe", "position": 1,
            "referral_code": "ABC123", "created_at": "2024-01-15T10:00:00Z"},
            "timestamp": "2024-01-15T10:00:00Z"}"#;
        let callback = parse_callback(created).unwrap();
        let person = &callback.people[0];
        assert_eq!(person.email.as_str(), "user@example.com");
        assert_eq!(person.data.referral_code.as_deref(), Some("ABC123"));
        assert_eq!(person.data.position, Some(1));
        assert_eq!(person.data.platform_id.as_deref(), Some("789e"));
        let moved = br#"{"event_type": "signup.position_changed", "data": {"id": "789e",
            "email": "user@example.com", "old_position": 10, "new_position": 5, "position_change": -5}}"#;
        assert_eq!(
            parse_callback(moved).unwrap().people[0].data.position,
            Some(5)
        );
        let deleted = br#"{"event_type": "signup.deleted", "data": {"id": "789e", "email": "user@example.com"}}"#;
        assert_eq!(
            parse_callback(deleted).unwrap().people[0].data.removed,
            Some(true)
        );
        assert!(parse_callback(br#"{"event_type": "waitlist.updated"}"#)
            .unwrap()
            .is_ignored());
        assert!(parse_callback(br#"{"data": {}}"#).is_err());
    }

    /// A deletion names the signup by the id the bridge heard, and waits (an error, tried
    /// again) while it has heard none; a signup already gone is deleted.
    #[test]
    fn a_deletion_goes_by_the_signup_id() {
        let api = ReferralLoopApi {
            api_url: "http://rl.test/api/v1".into(),
            api_key: Some("k".to_string().into()),
            waitlist_id: "w1".into(),
        };
        assert!(api.deletes().is_ok());
        let known = crate::platform::deletion_payload("a@b.co", Some("789e/0"));
        let call = api.request(DELETE, &known).unwrap();
        assert_eq!(call.method, "DELETE");
        assert_eq!(
            call.url,
            "http://rl.test/api/v1/waitlists/w1/signups/789e%2F0"
        );
        assert!(call.body.is_empty());
        assert!(call
            .headers
            .contains(&("Authorization".to_string(), "Bearer k".to_string())));
        let unknown = crate::platform::deletion_payload("a@b.co", None);
        let why = api.request(DELETE, &unknown).unwrap_err().to_string();
        assert_eq!(
            why,
            "ReferralLoop's call needs the subscriber's signup id, which the bridge has not heard from ReferralLoop yet"
        );
        let gone = Answer {
            status: 404,
            retry_after: None,
            body: "",
        };
        assert_eq!(api.read_answer(DELETE, &gone), WriteVerdict::Done);
        assert_eq!(api.read_answer("subscribe", &gone), WriteVerdict::Failed);
    }

    #[test]
    fn signups_and_no_other_change() {
        let api = ReferralLoopApi {
            api_url: "http://rl.test/api/v1/".into(),
            api_key: Some("k".to_string().into()),
            waitlist_id: "w 1".into(),
        };
        let call = api
            .request(
                "subscribe",
                r#"{"type":"subscribe","subscriber":{"email":"a@b.co","first_name":"Ann"}}"#,
            )
            .unwrap();
        assert_eq!(call.url, "http://rl.test/api/v1/waitlists/w%201/signups");
        assert_eq!(call.body, br#"{"email":"a@b.co","name":"Ann"}"#);
        assert!(!api.forwards("update"));
        assert!(api
            .request("update", r#"{"subscriber":{"email":"a@b.co"}}"#)
            .is_err());
        let answer = Answer {
            status: 409,
            retry_after: None,
            body: "",
        };
        assert_eq!(api.read_answer("subscribe", &answer), WriteVerdict::Done);
    }
}
