//! LoyaltySurf, both ways.
//!
//! In: webhooks signed `LoyaltySurf-Signature: ts=<unix ms>,v=<hex HMAC-SHA256 of "ts.body">`,
//! JSON `{event, createdAt, data}` about participants (GrowSurf, its sister product, sends the
//! same shapes).
//!
//! Out ([`LoyaltySurfApi`]): ESP events as participant calls with a bearer key, at most
//! [`MAX_CONNECTIONS`] in flight, paced to [`DEFAULT_RATE_LIMIT`] unless configured, a 429
//! pausing for the longest of its `LoyaltySurf-Retry-After-{Second,Minute,Hour}-Milliseconds`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use secrecy::SecretString;
use serde_json::{json, Map};

use crate::outbound::{Answer, Headers, OutboundRequest, WriteVerdict};
use crate::platform::{
    api_url, bearer, email_at, json_call, object_at, usual_platform_verdict, CallError, Callback,
    JobSubscriber, OutboundPlatform, PersonUpdate, PlatformCallbacks, ReferralData, ALL_KINDS,
};
use crate::{InboundRequest, ParseError, VerifyError};

/// The destination name of jobs for LoyaltySurf.
pub const DESTINATION: &str = "loyaltysurf";

/// LoyaltySurf's API base.
pub const DEFAULT_API_URL: &str = "https://api.loyaltysurf.io/v1";

/// `LOYALTYSURF_RATE_LIMIT` unless set: both of LoyaltySurf's windows.
pub const DEFAULT_RATE_LIMIT: &str = "30/5s,200/60s";

/// LoyaltySurf's limit of concurrent connections per client.
pub const MAX_CONNECTIONS: usize = 3;

/// How far a signature's timestamp may be from now when none is configured.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// LoyaltySurf's callbacks, refusing signatures older (or newer) than `tolerance`.
#[derive(Debug, Clone, Copy)]
pub struct LoyaltySurfCallbacks {
    /// How far `ts` may be from now.
    pub tolerance: Duration,
}

impl Default for LoyaltySurfCallbacks {
    fn default() -> Self {
        LoyaltySurfCallbacks {
            tolerance: DEFAULT_TOLERANCE,
        }
    }
}

/// Checks a `LoyaltySurf-Signature` header for `body` as of `now_ms` (unix milliseconds).
pub fn verify_signature(
    header: &[u8],
    body: &[u8],
    secret: &str,
    now_ms: i64,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let header = std::str::from_utf8(header).map_err(|_| VerifyError::Wrong)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("ts", ts)) => timestamp = Some(ts.trim()),
            Some(("v", v)) => signatures.extend(crate::from_hex(v.trim())),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(VerifyError::Wrong)?;
    let sent_at: i64 = timestamp.parse().map_err(|_| VerifyError::Wrong)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key");
    // The timestamp is signed as it was sent, not as re-printed from the number.
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    // verify_slice compares in constant time.
    if !signatures
        .iter()
        .any(|signature| mac.clone().verify_slice(signature).is_ok())
    {
        return Err(VerifyError::Wrong);
    }
    // LoyaltySurf retries for days, re-signing each attempt: an old `ts` is a replay.
    if now_ms.abs_diff(sent_at) > u64::try_from(tolerance.as_millis()).unwrap_or(u64::MAX) {
        return Err(VerifyError::Wrong);
    }
    Ok(())
}

impl PlatformCallbacks for LoyaltySurfCallbacks {
    fn name(&self) -> &'static str {
        "loyaltysurf"
    }

    fn verify(
        &self,
        request: &InboundRequest<'_>,
        secret: Option<&str>,
    ) -> Result<(), VerifyError> {
        let secret = secret.ok_or(VerifyError::NotConfigured)?;
        let header = request
            .header("loyaltysurf-signature")
            .ok_or(VerifyError::Missing)?;
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        verify_signature(header, request.body, secret, now_ms, self.tolerance)
    }

    fn parse(&self, request: &InboundRequest<'_>) -> Result<Callback, ParseError> {
        parse_callback(request.body)
    }
}

fn text(value: Option<&Value>) -> Option<String> {
    value
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// A participant object at `path`: id, names, referral code and link where the payload has them,
/// count (`loyaltyActionCount`, or GrowSurf's `referralCount`), rank, winner flag and fraud risk.
/// A known event needs its participant, with a valid address (DESIGN 3.3: a 400 naming the field).
fn participant(value: Option<&Value>, path: &str) -> Result<PersonUpdate, ParseError> {
    let object = object_at(value, path)?
        .ok_or_else(|| ParseError(format!("the webhook has no `{path}`")))?;
    let email = email_at(object.get("email"), &format!("{path}.email"))?;
    let first_name = text(object.get("firstName"));
    let name = match (first_name.as_deref(), text(object.get("lastName"))) {
        (Some(first), Some(last)) => Some(format!("{first} {last}")),
        (Some(first), None) => Some(first.to_string()),
        (None, last) => last,
    };
    let integer = |key: &str| object.get(key).and_then(Value::as_i64);
    let referral_code = text(object.get("referralCode")).or_else(|| {
        object
            .get("vanityKeys")
            .and_then(Value::as_array)
            .and_then(|keys| text(keys.first()))
    });
    let update = PersonUpdate {
        email,
        data: ReferralData {
            platform_id: text(object.get("id")),
            first_name,
            name,
            referral_code,
            referral_link: text(object.get("shareUrl")),
            referral_count: integer("loyaltyActionCount").or_else(|| integer("referralCount")),
            rank: integer("rank"),
            winner: object.get("isWinner").and_then(Value::as_bool),
            fraud_risk: text(object.get("fraudRiskLevel")),
            ..ReferralData::default()
        },
    };
    update.check(path)?;
    Ok(update)
}

/// Reads a LoyaltySurf webhook:
/// - `NEW_PARTICIPANT_ADDED`: the participant (`data`) and their referral data;
/// - `PARTICIPANT_REACHED_A_GOAL`: once approved (`data.reward.approved`), the reward and coupon
///   with the participant's data, keyed by `data.reward.id` so that a repeat writes nothing; a
///   reward still pending approval is recorded only;
/// - `PARTICIPANT_SUBMITTED_REWARD_FORM`: recorded only;
/// - `PARTICIPANT_FRAUD_STATUS_UPDATED`: the participant's fraud risk level and the rest;
/// - `CAMPAIGN_ENDED`: every winner listed (up to 1,000), flagged as a winner.
///
/// Other events are ignored.
pub fn parse_callback(body: &[u8]) -> Result<Callback, ParseError> {
    let value = ParseError::json(body)?;
    let event_type =
        text(value.get("event")).ok_or_else(|| ParseError("the webhook has no `event`".into()))?;
    let data = value.get("data").unwrap_or(&Value::Null);
    let mut callback = Callback {
        event_type,
        people: Vec::new(),
        redemption: None,
        idempotency_key: None,
    };
    match callback.event_type.as_str() {
        "NEW_PARTICIPANT_ADDED" => callback.people.push(participant(Some(data), "data")?),
        "PARTICIPANT_FRAUD_STATUS_UPDATED" => callback
            .people
            .push(participant(data.get("participant"), "data.participant")?),
        "PARTICIPANT_REACHED_A_GOAL" => {
            let reward = data.get("reward").unwrap_or(&Value::Null);
            // With manual approval the event comes twice; only the approved copy is a reward.
            if reward.get("approved").and_then(Value::as_bool) == Some(true) {
                let mut person = participant(data.get("participant"), "data.participant")?;
                person.data.last_reward =
                    text(reward.get("rewardId")).or_else(|| text(reward.get("id")));
                person.data.last_coupon = text(reward.get("couponCode"));
                callback.idempotency_key = text(reward.get("id")).map(|id| format!("reward:{id}"));
                callback.people.push(person);
            }
        }
        "CAMPAIGN_ENDED" => {
            let winners = data.get("winners").and_then(Value::as_array);
            for (n, winner) in winners.into_iter().flatten().enumerate() {
                let mut person = participant(Some(winner), &format!("data.winners[{n}]"))?;
                person.data.winner = Some(true);
                callback.people.push(person);
            }
        }
        // PARTICIPANT_SUBMITTED_REWARD_FORM and anything new: stored, nothing to write.
        _ => {}
    }
    Ok(callback)
}

/// What LoyaltySurf does with an unsubscribe (`LOYALTYSURF_UNSUBSCRIBE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnsubscribe {
    /// Nothing: the participant stays, with their referrals.
    Keep,
    /// The participant is deleted.
    Delete,
}

/// ESP events sent to one LoyaltySurf campaign (`LOYALTYSURF_*`).
#[derive(Debug, Clone)]
pub struct LoyaltySurfApi {
    /// `LOYALTYSURF_API_URL`.
    pub api_url: String,
    /// `LOYALTYSURF_API_KEY` (`Authorization: Bearer`); events wait while it is unset.
    pub api_key: Option<SecretString>,
    /// `LOYALTYSURF_CAMPAIGN_ID`.
    pub campaign_id: String,
    /// `LOYALTYSURF_UNSUBSCRIBE`.
    pub on_unsubscribe: OnUnsubscribe,
}

impl OutboundPlatform for LoyaltySurfApi {
    fn destination(&self) -> &'static str {
        DESTINATION
    }

    fn rate_limit_variable(&self) -> &'static str {
        "LOYALTYSURF_RATE_LIMIT"
    }

    fn forwards(&self, kind: &str) -> bool {
        match self.on_unsubscribe {
            OnUnsubscribe::Delete => ALL_KINDS.contains(&kind),
            OnUnsubscribe::Keep => matches!(kind, "subscribe" | "update"),
        }
    }

    /// `DELETE /campaign/{id}/participant/{email}`.
    fn deletes(&self) -> Result<(), String> {
        Ok(())
    }

    fn outbound_problem(&self) -> Option<String> {
        self.api_key.is_none().then(|| {
            "LOYALTYSURF_API_KEY is not set: ESP events are stored and queued for LoyaltySurf's \
             API, and are sent once it is"
                .into()
        })
    }

    /// Subscribe is `POST /campaign/{id}/participant` with `email`, `firstName`, `lastName`; an
    /// update `POST /campaign/{id}/participant/{previous email}` (the participant is found by
    /// address) with the new ones; unsubscribe, when it is sent,
    /// `DELETE /campaign/{id}/participant/{email}`.
    fn request(&self, kind: &str, payload: &str) -> Result<OutboundRequest, CallError> {
        let s = JobSubscriber::read(payload)?;
        let variable = "LOYALTYSURF_API_URL";
        let campaign = self.campaign_id.as_str();
        let mut body = Map::new();
        body.insert("email".into(), json!(s.email));
        if let Some(first) = s.first_name {
            body.insert("firstName".into(), json!(first));
        }
        if let Some(last) = s.last_name {
            body.insert("lastName".into(), json!(last));
        }
        let (method, url, body) = match kind {
            "subscribe" => (
                "POST",
                api_url(
                    &self.api_url,
                    variable,
                    &["campaign", campaign, "participant"],
                )?,
                Value::Object(body).to_string(),
            ),
            "update" => {
                let identifier = s.previous_email.unwrap_or_else(|| s.email.clone());
                let segments = ["campaign", campaign, "participant", &identifier];
                (
                    "POST",
                    api_url(&self.api_url, variable, &segments)?,
                    Value::Object(body).to_string(),
                )
            }
            "unsubscribe" | "delete" => {
                let segments = ["campaign", campaign, "participant", &s.email];
                (
                    "DELETE",
                    api_url(&self.api_url, variable, &segments)?,
                    String::new(),
                )
            }
            other => {
                return Err(CallError::NoCall {
                    platform: "LoyaltySurf",
                    kind: other.into(),
                })
            }
        };
        Ok(json_call(method, url, body, bearer(&self.api_key)))
    }

    /// A 409 is a duplicate request still in progress (retried); a participant already
    /// deleted is done.
    fn read_answer(&self, kind: &str, answer: &Answer<'_>) -> WriteVerdict {
        match (kind, answer.status) {
            (_, 409) => WriteVerdict::RetryLater { after: None },
            ("unsubscribe" | "delete", 404) => WriteVerdict::Done,
            _ => usual_platform_verdict(answer),
        }
    }

    fn max_connections(&self) -> Option<usize> {
        Some(MAX_CONNECTIONS)
    }

    /// The longest of the windows' own delays holds, when there is no `Retry-After`.
    fn retry_after(&self, headers: &Headers<'_>, now: SystemTime) -> Option<Duration> {
        headers.retry_after(now).or_else(|| {
            ["Second", "Minute", "Hour"]
                .iter()
                .filter_map(|window| {
                    headers.get(&format!("loyaltysurf-retry-after-{window}-milliseconds"))
                })
                .filter_map(|v| v.parse::<u64>().ok())
                .max()
                .map(Duration::from_millis)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared signature test vector (`fixtures/platforms/signature_vectors`).
    const SECRET: &str = "test_secret_123";
    const BODY: &[u8] = br#"{"event":"NEW_PARTICIPANT_ADDED","createdAt":1700000000000,"data":{"id":"x9a7uu","email":"richard@piedpiper.com"}}"#;
    const HEADER: &[u8] =
        b"ts=1700000000000,v=d5fdcfbcc714ab9fe11a264d2e0fd243fe2fa2811990563bc89c6c8e363308a8";
    const TS: i64 = 1_700_000_000_000;

    #[test]
    fn signatures_follow_the_test_vector_within_the_tolerance() {
        let five_minutes = DEFAULT_TOLERANCE;
        assert_eq!(
            verify_signature(HEADER, BODY, SECRET, TS + 1_000, five_minutes),
            Ok(())
        );
        assert_eq!(
            verify_signature(HEADER, BODY, SECRET, TS - 299_000, five_minutes),
            Ok(())
        );
        // Too old, tampered, wrong secret, no timestamp.
        assert_eq!(
            verify_signature(HEADER, BODY, SECRET, TS + 301_000, five_minutes),
            Err(VerifyError::Wrong)
        );
        let mut tampered = BODY.to_vec();
        tampered[20] ^= 1;
        assert_eq!(
            verify_signature(HEADER, &tampered, SECRET, TS, five_minutes),
            Err(VerifyError::Wrong)
        );
        assert_eq!(
            verify_signature(HEADER, BODY, "other", TS, five_minutes),
            Err(VerifyError::Wrong)
        );
        assert_eq!(
            verify_signature(
                b"v=d5fdcfbcc714ab9fe11a264d2e0fd243fe2fa2811990563bc89c6c8e363308a8",
                BODY,
                SECRET,
                TS,
                five_minutes
            ),
            Err(VerifyError::Wrong)
        );
        let surf = LoyaltySurfCallbacks::default();
        let request = |headers: &'static [(&'static str, &'static [u8])]| InboundRequest {
            query: "",
            headers,
            body: BODY,
        };
        assert_eq!(
            surf.verify(&request(&[]), Some(SECRET)),
            Err(VerifyError::Missing)
        );
        assert_eq!(
            surf.verify(&request(&[("LoyaltySurf-Signature", HEADER)]), None),
            Err(VerifyError::NotConfigured)
        );
        // The vector is from 2023: refused today as a replay.
        assert_eq!(
            surf.verify(&request(&[("LoyaltySurf-Signature", HEADER)]), Some(SECRET)),
            Err(VerifyError::Wrong)
        );
    }

    fn participant_json(email: &str, winner: bool) -> Value {
        serde_json::json!({"id": "x9a7uu", "email": email, "firstName": "Richard",
            "lastName": "Hendricks", "rank": 9, "isWinner": winner, "loyaltyActionCount": 11,
            "fraudRiskLevel": "LOW", "unsubscribed": false})
    }

    #[test]
    fn rewards_count_once_approved_and_carry_their_key() {
        let reached = |approved: bool| {
            serde_json::json!({"event": "PARTICIPANT_REACHED_A_GOAL", "createdAt": 1,
                "data": {"participant": participant_json("Richard@PiedPiper.com", true),
                    "reward": {"approved": approved, "couponCode": "LI_25_GIFT",
                        "rewardId": "xlj123", "id": "ccm2ue"}}})
            .to_string()
        };
        let pending = parse_callback(reached(false).as_bytes()).unwrap();
        assert!(pending.is_ignored());
        assert_eq!(pending.idempotency_key, None);
        let approved = parse_callback(reached(true).as_bytes()).unwrap();
        assert_eq!(approved.idempotency_key.as_deref(), Some("reward:ccm2ue"));
        let person = &approved.people[0];
        assert_eq!(person.email.as_str(), "richard@piedpiper.com");
        assert_eq!(person.data.last_reward.as_deref(), Some("xlj123"));
        assert_eq!(person.data.last_coupon.as_deref(), Some("LI_25_GIFT"));
        assert_eq!(person.data.referral_count, Some(11));
        assert_eq!(person.data.rank, Some(9));
        assert_eq!(person.data.name.as_deref(), Some("Richard Hendricks"));
    }

    #[test]
    fn campaign_end_flags_every_winner() {
        let winners: Vec<Value> = (0..1000)
            .map(|n| participant_json(&format!("w{n}@example.com"), true))
            .collect();
        let body = serde_json::json!({"event": "CAMPAIGN_ENDED", "createdAt": 1,
            "data": {"id": "ct8f71", "winners": winners}})
        .to_string();
        let ended = parse_callback(body.as_bytes()).unwrap();
        assert_eq!(ended.people.len(), 1000);
        assert!(ended.people.iter().all(|p| p.data.winner == Some(true)));
    }

    #[test]
    fn fraud_updates_and_new_participants_and_the_rest() {
        let mut fraud = participant_json("gavin@hooli.com", false);
        fraud["fraudRiskLevel"] = "HIGH".into();
        let body = serde_json::json!({"event": "PARTICIPANT_FRAUD_STATUS_UPDATED",
            "data": {"participant": fraud}})
        .to_string();
        let update = parse_callback(body.as_bytes()).unwrap();
        assert_eq!(update.people[0].data.fraud_risk.as_deref(), Some("HIGH"));
        assert_eq!(update.people[0].data.winner, Some(false));
        let body = serde_json::json!({"event": "NEW_PARTICIPANT_ADDED",
            "data": {"id": "f8g9nl", "email": "gavin@hoolie.com", "referralCount": 2,
                "shareUrl": "https://piedpiper.com?grsf=gavin-f8g9nl",
                "vanityKeys": ["gavin-f8g9nl"]}})
        .to_string();
        let added = parse_callback(body.as_bytes()).unwrap();
        let data = &added.people[0].data;
        assert_eq!(data.referral_code.as_deref(), Some("gavin-f8g9nl"));
        assert_eq!(
            data.referral_link.as_deref(),
            Some("https://piedpiper.com?grsf=gavin-f8g9nl")
        );
        assert_eq!(data.referral_count, Some(2));
        let form = br#"{"event": "PARTICIPANT_SUBMITTED_REWARD_FORM", "data": {"rewardId": "x",
            "formData": {"url": "https://example.com"}}}"#;
        assert!(parse_callback(form).unwrap().is_ignored());
        assert!(parse_callback(br#"{"event": "NEW_COMMISSION_ADDED"}"#)
            .unwrap()
            .is_ignored());
        assert!(parse_callback(br#"{"data": {}}"#).is_err());
        assert!(parse_callback(b"not json").is_err());
    }

    fn api() -> LoyaltySurfApi {
        LoyaltySurfApi {
            api_url: "http://ls.test/v1".into(),
            api_key: Some("k".to_string().into()),
            campaign_id: "ct8f71".into(),
            on_unsubscribe: OnUnsubscribe::Delete,
        }
    }

    #[test]
    fn calls_have_the_documented_shapes() {
        let api = api();
        let call = api
            .request(
                "subscribe",
                r#"{"type":"subscribe","subscriber":{"email":"a@b.co","name":"Ann Lee Smith","first_name":"Ann"}}"#,
            )
            .unwrap();
        assert_eq!(
            (call.method, call.url.as_str()),
            ("POST", "http://ls.test/v1/campaign/ct8f71/participant")
        );
        assert!(call
            .headers
            .contains(&("Authorization".into(), "Bearer k".into())));
        assert_eq!(
            serde_json::from_slice::<Value>(&call.body).unwrap(),
            json!({"email": "a@b.co", "firstName": "Ann", "lastName": "Lee Smith"})
        );
        let call = api
            .request(
                "update",
                r#"{"type":"update","subscriber":{"email":"new@b.co","previous_email":"old+1@b.co"}}"#,
            )
            .unwrap();
        assert_eq!(
            call.url,
            "http://ls.test/v1/campaign/ct8f71/participant/old+1@b.co"
        );
        assert_eq!(call.body, br#"{"email":"new@b.co"}"#);
        let call = api
            .request(
                "unsubscribe",
                r#"{"type":"unsubscribe","subscriber":{"email":"a@b.co"}}"#,
            )
            .unwrap();
        assert_eq!(call.method, "DELETE");
        assert!(call.body.is_empty());
        let keep = LoyaltySurfApi {
            on_unsubscribe: OnUnsubscribe::Keep,
            ..api
        };
        assert!(!keep.forwards("unsubscribe"));
        let answer = |status| Answer {
            status,
            retry_after: None,
            body: "",
        };
        assert_eq!(
            keep.read_answer("subscribe", &answer(409)),
            WriteVerdict::RetryLater { after: None }
        );
        assert_eq!(
            keep.read_answer("unsubscribe", &answer(404)),
            WriteVerdict::Done
        );
        assert_eq!(
            keep.read_answer("subscribe", &answer(404)),
            WriteVerdict::Failed
        );
    }

    #[test]
    fn the_longest_window_holds_after_a_429() {
        let headers = vec![
            (
                "LoyaltySurf-Retry-After-Second-Milliseconds".to_string(),
                "800".to_string(),
            ),
            (
                "loyaltysurf-retry-after-minute-milliseconds".to_string(),
                "41000".to_string(),
            ),
        ];
        assert_eq!(
            api().retry_after(&Headers(&headers), SystemTime::now()),
            Some(Duration::from_millis(41_000))
        );
        assert_eq!(api().retry_after(&Headers(&[]), SystemTime::now()), None);
    }
}
