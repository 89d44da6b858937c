//! listmonk (self-hosted, v6). listmonk sends no subscriber webhooks, so the bridge polls
//! `GET /subscribers` ordered by `updated_at` from a stored checkpoint ([`poll_request`],
//! [`read_page`]): someone new is a signup, a changed address an email change, a blocklisted
//! subscriber (or one unsubscribed from every list) a departure. Out: the fields are top-level
//! keys of the subscriber's `attribs`: `PATCH /subscribers/{id}` with them alone (listmonk 6.1+
//! merges top-level keys); where the server has no PATCH (405), the subscriber is read and `PUT`
//! back whole with the fields merged, its other attributes and its lists kept (a bare `PUT`
//! would wipe both). `Authorization: token <user>:<token>`.

use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{json, Map, Value};

use crate::outbound::{
    usual_verdict, Answer, EspConfig, FieldUpdate, MergeError, MessageId, OutboundEsp,
    OutboundRequest, WriteVerdict,
};
use crate::poll::Polled;
use crate::{Email, EspEvent, InboundEsp, InboundRequest, ParseError, VerifyError};

/// Subscribers read per poll.
pub const PAGE_SIZE: usize = 100;

/// The `ESP_RATE_LIMIT` used unless one is set. listmonk: a modest pace for a self-hosted server.
pub const DEFAULT_RATE_LIMIT: &str = "10/1s";

/// The listmonk adapter.
#[derive(Debug, Default)]
pub struct Listmonk {
    config: EspConfig,
    /// Set once the server answered a PATCH with 405 (listmonk before 6.1).
    no_patch: AtomicBool,
}

impl Listmonk {
    /// The adapter, reaching listmonk as `config` says (`api_url`: `https://<host>/api`,
    /// `api_key`: `<api user>:<token>`).
    pub fn new(config: EspConfig) -> Self {
        Listmonk {
            config,
            no_patch: AtomicBool::new(false),
        }
    }

    fn request(&self, method: &'static str, rest: &str, body: Option<Value>) -> OutboundRequest {
        let base = self.config.api_url.as_deref().unwrap_or_default();
        let mut headers = vec![(
            "Authorization".into(),
            format!("token {}", self.config.key()),
        )];
        if body.is_some() {
            headers.push(("Content-Type".into(), "application/json".into()));
        }
        OutboundRequest {
            method,
            url: format!("{}/{rest}", base.trim_end_matches('/')),
            headers,
            body: body.map_or_else(Vec::new, |b| b.to_string().into_bytes()),
        }
    }

    /// The page of subscribers changed after `since` (listmonk's own timestamp text, as a page
    /// gave it, and the last id seen at that timestamp), oldest change first.
    pub fn page_request(&self, since: Option<(&str, i64)>) -> OutboundRequest {
        let mut rest = format!("subscribers?order_by=updated_at&order=ASC&per_page={PAGE_SIZE}");
        if let Some((at, last_id)) = since {
            // The checkpoint comes from listmonk itself; quotes are doubled all the same.
            let at = at.replace('\'', "''");
            let query = format!(
                "subscribers.updated_at > '{at}' OR \
                 (subscribers.updated_at = '{at}' AND subscribers.id > {last_id})"
            );
            rest.push_str(&format!("&query={}", crate::encode_component(&query)));
        }
        self.request("GET", &rest, None)
    }
}

/// The bridge's fields, for `attribs`: a value not known yet is left out, not cleared.
fn attribs(update: &FieldUpdate<'_>) -> Map<String, Value> {
    update
        .fields
        .iter()
        .filter(|(_, value)| !value.is_null())
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

/// Reads a page of subscribers; an entry without a usable id or address is skipped.
pub fn read_page(body: &str) -> Result<Vec<Polled>, String> {
    let value: Value =
        serde_json::from_str(body).map_err(|e| format!("the page is not JSON: {e}"))?;
    let results = value
        .pointer("/data/results")
        .and_then(Value::as_array)
        .ok_or("the page has no data.results")?;
    Ok(results
        .iter()
        .filter_map(|s| {
            let lists: Vec<&str> = s
                .get("lists")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|l| l.get("subscription_status").and_then(Value::as_str))
                .collect();
            let blocklisted = s.get("status").and_then(Value::as_str) == Some("blocklisted");
            let unsubscribed_everywhere =
                !lists.is_empty() && lists.iter().all(|status| *status == "unsubscribed");
            Some(Polled {
                id: s.get("id")?.as_i64()?,
                email: Email::parse(s.get("email")?.as_str()?).ok()?,
                name: s
                    .get("name")
                    .and_then(Value::as_str)
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(str::to_string),
                gone: blocklisted || unsubscribed_everywhere,
                updated_at: s.get("updated_at")?.as_str()?.to_string(),
                raw: s.clone(),
            })
        })
        .collect())
}

impl InboundEsp for Listmonk {
    fn poll_request(&self, since: Option<(&str, i64)>) -> Option<OutboundRequest> {
        Some(self.page_request(since))
    }

    fn read_poll(&self, body: &str) -> Result<Vec<Polled>, String> {
        read_page(body)
    }

    fn poll_page_size(&self) -> usize {
        PAGE_SIZE
    }

    /// None: listmonk posts no webhooks (its subscribers are polled).
    fn credentials(&self) -> &'static [crate::WebhookCredential] {
        &[]
    }

    fn name(&self) -> &'static str {
        "listmonk"
    }

    fn verify(
        &self,
        _request: &InboundRequest<'_>,
        _secret: Option<&str>,
    ) -> Result<(), VerifyError> {
        // listmonk posts nothing: its subscribers are polled. A webhook claiming to be listmonk
        // is refused.
        Err(VerifyError::NotConfigured)
    }

    fn parse(&self, _request: &InboundRequest<'_>) -> Result<Vec<EspEvent>, ParseError> {
        Err(ParseError(
            "listmonk sends no webhooks; the bridge polls it".into(),
        ))
    }
}

impl OutboundEsp for Listmonk {
    fn outbound_problem(&self) -> Option<String> {
        if self.config.api_url.is_none() {
            return Some(
                "ESP_API_URL is not set: listmonk attributes are queued, and written once it names \
                 the API (https://<host>/api)"
                    .into(),
            );
        }
        self.config.api_key.is_none().then(|| {
            "ESP_API_KEY is not set: listmonk attributes are queued, and written once it holds \
             `<api user>:<token>`"
                .into()
        })
    }

    fn field_update(&self, update: &FieldUpdate<'_>, _: &MessageId) -> OutboundRequest {
        let id = update.esp_id.map(Value::to_string).unwrap_or_default();
        self.request(
            "PATCH",
            &format!("subscribers/{}", id.trim_matches('"')),
            Some(json!({ "attribs": attribs(update) })),
        )
    }

    fn read_answer(&self, answer: &Answer<'_>) -> WriteVerdict {
        if answer.status == 405 && !self.no_patch.swap(true, Ordering::Relaxed) {
            // listmonk before 6.1 has no PATCH: from now on, read, merge and PUT.
            return WriteVerdict::RetryLater {
                after: Some(std::time::Duration::ZERO),
            };
        }
        match answer.status {
            // listmonk answers an unknown subscriber with 400 "... not found."
            400 if answer.body.contains("not found") => WriteVerdict::NotThereYet,
            _ => usual_verdict(answer),
        }
    }

    fn read_before_write(&self, email: &str) -> Option<OutboundRequest> {
        let query = format!("subscribers.email = '{}'", email.replace('\'', "''"));
        Some(self.request(
            "GET",
            &format!(
                "subscribers?per_page=1&query={}",
                crate::encode_component(&query)
            ),
            None,
        ))
    }

    fn merged_update(
        &self,
        update: &FieldUpdate<'_>,
        _: &MessageId,
        current: &Answer<'_>,
    ) -> Result<OutboundRequest, MergeError> {
        let body = crate::outbound::read_json(current, "subscriber")?;
        let subscriber = body
            .pointer("/data/results/0")
            .ok_or(MergeError::NotThereYet)?;
        let id = subscriber
            .get("id")
            .and_then(Value::as_i64)
            .ok_or(MergeError::NotThereYet)?;
        let ours = attribs(update);
        if !self.no_patch.load(Ordering::Relaxed) {
            return Ok(self.request(
                "PATCH",
                &format!("subscribers/{id}"),
                Some(json!({ "attribs": ours })),
            ));
        }
        // A PUT replaces everything: send the subscriber back as it is, fields merged in.
        let mut merged = subscriber
            .get("attribs")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        merged.extend(ours);
        let lists: Vec<i64> = subscriber
            .get("lists")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|l| l.get("id").and_then(Value::as_i64))
            .collect();
        // The lists it is on already keep their subscription status; none is added.
        let mut whole = json!({
            "email": subscriber.get("email").cloned().unwrap_or_else(|| update.email.into()),
            "lists": lists,
            "attribs": merged,
        });
        for key in ["name", "status"] {
            if let Some(value) = subscriber.get(key) {
                whole[key] = value.clone();
            }
        }
        Ok(self.request("PUT", &format!("subscribers/{id}"), Some(whole)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listmonk() -> Listmonk {
        Listmonk::new(EspConfig {
            api_url: Some("http://listmonk.test/api".into()),
            api_key: Some("bridge:tok".into()),
            ..EspConfig::default()
        })
    }

    const PAGE: &str = r#"{"data": {"results": [
        {"id": 1, "email": "Jane@Example.com", "name": "Jane Doe", "status": "enabled",
         "created_at": "2026-11-26T10:00:00.000000Z", "updated_at": "2026-11-26T10:00:00.123456Z",
         "attribs": {"city": "Oslo"}, "lists": [{"id": 1, "subscription_status": "confirmed"},
            {"id": 2, "subscription_status": "unsubscribed"}]},
        {"id": 2, "email": "gone@example.com", "status": "blocklisted",
         "updated_at": "2026-11-26T10:01:00Z", "lists": []},
        {"id": 3, "email": "left@example.com", "status": "enabled",
         "updated_at": "2026-11-26T10:02:00Z", "lists": [{"id": 1, "subscription_status": "unsubscribed"}]}],
        "total": 3, "per_page": 100, "page": 1}}"#;

    #[test]
    fn pages_become_events_against_what_the_bridge_knew() {
        let page = read_page(PAGE).unwrap();
        assert_eq!(page.len(), 3);
        assert_eq!(page[0].email.as_str(), "jane@example.com");
        assert!(!page[0].gone);
        assert!(page[1].gone && page[2].gone);
        assert_eq!(page[0].updated_at, "2026-11-26T10:00:00.123456Z");
        use crate::poll::event_for;
        assert!(matches!(
            event_for(&page[0], None, false),
            EspEvent::Subscribed { ref person, .. } if person.esp_id == Some(json!(1))
        ));
        assert!(matches!(
            event_for(&page[0], Some("old@example.com"), true),
            EspEvent::Updated { previous_email: Some(ref e), .. } if e.as_str() == "old@example.com"
        ));
        assert!(matches!(
            event_for(&page[2], Some("left@example.com"), true),
            EspEvent::Unsubscribed { .. }
        ));
        assert!(matches!(
            event_for(&page[1], None, false),
            EspEvent::Ignored { .. }
        ));
        let poll = listmonk().page_request(Some(("2026-11-26T10:02:00Z", 3)));
        assert_eq!(
            poll.url,
            "http://listmonk.test/api/subscribers?order_by=updated_at&order=ASC&per_page=100\
             &query=subscribers.updated_at%20%3E%20%272026-11-26T10%3A02%3A00Z%27%20OR%20\
             %28subscribers.updated_at%20%3D%20%272026-11-26T10%3A02%3A00Z%27%20AND%20\
             subscribers.id%20%3E%203%29"
        );
        assert!(poll
            .headers
            .contains(&("Authorization".into(), "token bridge:tok".into())));
    }

    #[test]
    fn writes_patch_or_put_back_whole_with_everything_kept() {
        let esp = listmonk();
        let fields = vec![
            ("RH_CODE".to_string(), json!("ab12cd")),
            ("RH_TOTREF".to_string(), json!(3)),
            ("RH_COUPON".to_string(), Value::Null),
        ];
        let update = FieldUpdate {
            email: "jane@example.com",
            esp_id: None,
            fields: &fields,
        };
        let message = MessageId {
            id: "m".into(),
            timestamp: 0,
        };
        let read = r#"{"data": {"results": [{"id": 1, "email": "jane@example.com",
            "name": "Jane Doe", "status": "enabled", "attribs": {"city": "Oslo", "RH_CODE": "old"},
            "lists": [{"id": 1, "subscription_status": "confirmed"},
                      {"id": 2, "subscription_status": "unsubscribed"}]}]}}"#;
        let current = Answer {
            status: 200,
            retry_after: None,
            body: read,
        };
        let patch = esp.merged_update(&update, &message, &current).unwrap();
        assert_eq!(
            (patch.method, patch.url.as_str()),
            ("PATCH", "http://listmonk.test/api/subscribers/1")
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&patch.body).unwrap(),
            json!({"attribs": {"RH_CODE": "ab12cd", "RH_TOTREF": 3}})
        );
        // A server without PATCH: retried at once, then read-merge-PUT.
        let no_patch = Answer {
            status: 405,
            retry_after: None,
            body: r#"{"message": "Method Not Allowed"}"#,
        };
        assert!(matches!(
            esp.read_answer(&no_patch),
            WriteVerdict::RetryLater { .. }
        ));
        let put = esp.merged_update(&update, &message, &current).unwrap();
        assert_eq!(put.method, "PUT");
        assert_eq!(
            serde_json::from_slice::<Value>(&put.body).unwrap(),
            json!({"email": "jane@example.com", "name": "Jane Doe", "status": "enabled",
                "lists": [1, 2],
                "attribs": {"city": "Oslo", "RH_CODE": "ab12cd", "RH_TOTREF": 3}})
        );
        let missing = Answer {
            status: 400,
            retry_after: None,
            body: r#"{"message": "Subscriber (42: ) not found."}"#,
        };
        assert_eq!(esp.read_answer(&missing), WriteVerdict::NotThereYet);
        let none = Answer {
            status: 200,
            retry_after: None,
            body: r#"{"data": {"results": [], "total": 0}}"#,
        };
        assert_eq!(
            esp.merged_update(&update, &message, &none),
            Err(MergeError::NotThereYet)
        );
    }
}
