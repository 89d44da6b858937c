//! SparkLoop's subscriber objects as its API v2 returns them ("Referral Campaigns /
//! Subscribers", DESIGN 3.9): the campaign's subscribers a page at a time, for reconciliation,
//! and the subscriber SparkLoop answers a `POST /v2/subscribers` with (its `uuid` and
//! `ref_code`, kept so that the ESP's fields need not wait for a callback).

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::{boolean, text};
use crate::outbound::OutboundRequest;
use crate::platform::{api_url, email_at, json_call, CallError, PersonUpdate, ReferralData};
use crate::{Email, ParseError};

/// Subscribers asked for per page: SparkLoop's maximum.
pub const PER_PAGE: u32 = 200;

/// One of the campaign's subscribers, as SparkLoop lists them.
#[derive(Debug, Clone, PartialEq)]
pub struct PlatformSubscriber {
    /// Their address, trimmed and lower-cased.
    pub email: Email,
    /// SparkLoop's id (`sub_...`): what the bridge writes as `RH_SUBID`.
    pub uuid: Option<String>,
    /// Their name.
    pub name: Option<String>,
    /// Their referral code: `RH_CODE`.
    pub ref_code: Option<String>,
    /// Whether someone referred them.
    pub referred: Option<bool>,
    /// The referral's status (`pending`, `verified`, `rejected`).
    pub referral_status: Option<String>,
}

impl PlatformSubscriber {
    /// Reads a subscriber object; `path` names it for the error.
    pub fn read(value: &Value, path: &str) -> Result<Self, ParseError> {
        let object = value
            .as_object()
            .ok_or_else(|| ParseError(format!("`{path}` must be an object")))?;
        Ok(PlatformSubscriber {
            email: email_at(object.get("email"), &format!("{path}.email"))?,
            uuid: text(object.get("uuid")),
            name: text(object.get("name")),
            ref_code: text(object.get("ref_code")),
            referred: boolean(object.get("referred")),
            referral_status: text(object.get("referral_status")).map(|s| s.to_ascii_lowercase()),
        })
    }

    /// What `RH_ISREF` says of them as SparkLoop has them: `REJECTED` for a referral it
    /// rejected, else `YES` or `NO`; `None` when it does not say.
    pub fn is_referred(&self) -> Option<&'static str> {
        if self.referral_status.as_deref() == Some("rejected") {
            return Some("REJECTED");
        }
        self.referred.map(|r| if r { "YES" } else { "NO" })
    }

    /// Their state as the bridge keeps it: the id, the code, the referred flag and the
    /// referral's status (the name only when SparkLoop has one).
    pub fn update(&self) -> PersonUpdate {
        PersonUpdate {
            email: self.email.clone(),
            data: ReferralData {
                platform_id: self.uuid.clone(),
                name: self.name.clone(),
                referral_code: self.ref_code.clone(),
                referred: self.referred,
                partner_status: self.referral_status.clone(),
                ..ReferralData::default()
            },
        }
    }
}

/// One page of the campaign's subscribers.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// Its subscribers, newest first (as SparkLoop orders them).
    pub subscribers: Vec<PlatformSubscriber>,
    /// `meta.total_pages`.
    pub total_pages: u32,
    /// `meta.total_subscribers`, when given.
    pub total_subscribers: Option<u64>,
}

/// The campaign's subscriber list at SparkLoop.
#[derive(Debug, Clone)]
pub struct SubscriberList {
    api_url: String,
    api_key: SecretString,
    campaign: String,
}

impl SubscriberList {
    /// The list of `campaign` at `api_url` (`SPARKLOOP_API_URL`), read with `api_key`.
    pub fn new(api_url: &str, api_key: SecretString, campaign: &str) -> Self {
        SubscriberList {
            api_url: api_url.to_string(),
            api_key,
            campaign: campaign.to_string(),
        }
    }

    /// `GET /v2/campaigns/{campaign}/subscribers?per_page=200&page={page}` (pages count from 1).
    pub fn page(&self, page: u32) -> Result<OutboundRequest, CallError> {
        let mut url = api_url(
            &self.api_url,
            "SPARKLOOP_API_URL",
            &["v2", "campaigns", &self.campaign, "subscribers"],
        )?;
        url.push_str(&format!("?per_page={PER_PAGE}&page={page}"));
        Ok(json_call(
            "GET",
            url,
            String::new(),
            ("X-Api-Key", self.api_key.expose_secret().to_string()),
        ))
    }

    /// Reads a page's body: `subscribers` and `meta.total_pages`. A subscriber object without a
    /// valid address makes the whole page unreadable: counting on it would miss a person.
    pub fn read_page(body: &str) -> Result<Page, ParseError> {
        let value = ParseError::json(body.as_bytes())?;
        let list = value
            .get("subscribers")
            .and_then(Value::as_array)
            .ok_or_else(|| ParseError("the answer has no `subscribers` list".into()))?;
        let subscribers = list
            .iter()
            .enumerate()
            .map(|(i, s)| PlatformSubscriber::read(s, &format!("subscribers[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let meta = &value["meta"];
        let total_pages = meta["total_pages"]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| ParseError("the answer has no `meta.total_pages`".into()))?;
        Ok(Page {
            subscribers,
            total_pages,
            total_subscribers: meta["total_subscribers"].as_u64(),
        })
    }
}

/// The subscriber in SparkLoop's answer to a subscribe (`{"subscriber": {...}}`, or the object
/// itself), when it is there and has an id or a code: what the bridge can keep of them at once.
pub fn created(body: &str) -> Option<PersonUpdate> {
    let value: Value = serde_json::from_str(body).ok()?;
    let object = match value.get("subscriber") {
        Some(inner @ Value::Object(_)) => inner,
        _ => &value,
    };
    let subscriber = PlatformSubscriber::read(object, "subscriber").ok()?;
    (subscriber.uuid.is_some() || subscriber.ref_code.is_some()).then(|| subscriber.update())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The documented subscriber object (docs.sparkloop.app), `_` keys stripped.
    fn documented() -> Value {
        let text = include_str!("../../../tests/fixtures/sparkloop/api_v2_subscriber_object.json");
        let mut value: Value = serde_json::from_str(text).unwrap();
        value
            .as_object_mut()
            .unwrap()
            .retain(|k, _| !k.starts_with('_'));
        value
    }

    #[test]
    fn the_documented_object_is_read() {
        let s = PlatformSubscriber::read(&documented(), "s").unwrap();
        assert_eq!(s.email.as_str(), "drago@sparkloop.app");
        assert_eq!(s.uuid.as_deref(), Some("sub_4bc1056297"));
        assert_eq!(s.ref_code.as_deref(), Some("c784ef4f"));
        assert_eq!(s.is_referred(), Some("YES"));
        assert_eq!(s.name, None);
    }

    #[test]
    fn a_rejected_referral_is_rejected() {
        let mut value = documented();
        value["referral_status"] = json!("rejected");
        let s = PlatformSubscriber::read(&value, "s").unwrap();
        assert_eq!(s.is_referred(), Some("REJECTED"));
        assert_eq!(s.update().data.partner_status.as_deref(), Some("rejected"));
    }

    #[test]
    fn pages_are_read_and_bad_ones_refused() {
        let body = json!({"subscribers": [documented()],
            "meta": {"per_page": 1, "page": 1, "total_pages": 3, "total_subscribers": 3}});
        let page = SubscriberList::read_page(&body.to_string()).unwrap();
        assert_eq!((page.subscribers.len(), page.total_pages), (1, 3));
        assert_eq!(page.total_subscribers, Some(3));
        for bad in [
            json!({"meta": {"total_pages": 1}}),
            json!({"subscribers": []}),
            json!({"subscribers": [{"email": "not an address"}], "meta": {"total_pages": 1}}),
        ] {
            assert!(
                SubscriberList::read_page(&bad.to_string()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_page_request_has_the_documented_shape() {
        let list = SubscriberList::new("http://127.0.0.1:9/", "k".to_string().into(), "camp_1");
        let request = list.page(2).unwrap();
        assert_eq!(request.method, "GET");
        assert_eq!(
            request.url,
            "http://127.0.0.1:9/v2/campaigns/camp_1/subscribers?per_page=200&page=2"
        );
        assert!(request
            .headers
            .iter()
            .any(|(k, v)| k == "X-Api-Key" && v == "k"));
    }

    #[test]
    fn the_subscribe_answer_gives_the_id_and_code() {
        let v1 = json!({"subscriber": {"uuid": "sub_37775e51c5", "email": "drago@example.com",
            "ref_code": "drago785f"}});
        let update = created(&v1.to_string()).unwrap();
        assert_eq!(update.data.platform_id.as_deref(), Some("sub_37775e51c5"));
        assert_eq!(update.data.referral_code.as_deref(), Some("drago785f"));
        assert!(created(&documented().to_string()).is_some());
        assert!(created(r#"{"error": "Email has already been taken"}"#).is_none());
        assert!(created("").is_none());
    }
}
