//! `ESP_ADAPTER=listmonk`: listmonk posts no webhooks, so the bridge polls it from a stored
//! checkpoint (signups, email changes, departures reach SparkLoop); field writes PATCH
//! `attribs`, or on a listmonk without PATCH read the subscriber and PUT it back whole, its
//! other attributes and lists kept.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

use crate::helpers::{eventually, TestApp};

/// listmonk's `GET /subscribers`: the pages given, in turn, then empty pages; keeps the queries.
#[derive(Clone, Default)]
struct Pages {
    pages: Arc<Mutex<Vec<Value>>>,
    queries: Arc<Mutex<Vec<Option<String>>>>,
}

impl Respond for Pages {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let query = request
            .url
            .query_pairs()
            .find(|(k, _)| k == "query")
            .map(|(_, v)| v.into_owned());
        self.queries.lock().unwrap().push(query);
        let mut pages = self.pages.lock().unwrap();
        let results = if pages.is_empty() {
            json!([])
        } else {
            pages.remove(0)
        };
        ResponseTemplate::new(200).set_body_json(json!({"data": {"results": results,
            "query": "", "total": 0, "per_page": 100, "page": 1}}))
    }
}

fn subscriber(id: i64, email: &str, status: &str, updated_at: &str) -> Value {
    json!({"id": id, "uuid": format!("u{id}"), "email": email, "name": "Jane Doe",
        "status": status, "attribs": {"city": "Oslo"}, "created_at": "2026-11-26T10:00:00Z",
        "updated_at": updated_at, "lists": [{"id": 1, "subscription_status": "confirmed"}]})
}

/// Jobs delivered to SparkLoop so far.
fn forwarded(app: &TestApp) -> i64 {
    app.db
        .count("SELECT COUNT(*) AS n FROM jobs WHERE destination = 'sparkloop' AND status = 'done'")
}

#[tokio::test]
async fn polled_changes_reach_sparkloop_from_the_checkpoint() {
    let pages = Pages::default();
    *pages.pages.lock().unwrap() = vec![
        json!([
            subscriber(1, "jane@example.com", "enabled", "2026-11-26T10:00:00.5Z"),
            subscriber(
                2,
                "never@example.com",
                "blocklisted",
                "2026-11-26T10:00:01Z"
            )
        ]),
        json!([subscriber(
            1,
            "jane.doe@example.com",
            "enabled",
            "2026-11-26T11:00:00Z"
        )]),
        json!([subscriber(
            1,
            "jane.doe@example.com",
            "blocklisted",
            "2026-11-26T12:00:00Z"
        )]),
    ];
    let app = TestApp::spawn_with(
        &[
            ("ESP_ADAPTER", "listmonk"),
            ("ESP_API_URL", "{stand-in}/lm/api"),
            ("ESP_API_KEY", "bridge:tok"),
            ("ESP_POLL_INTERVAL", "100ms"),
        ],
        Some(
            Mock::given(method("GET"))
                .and(path("/lm/api/subscribers"))
                .respond_with(pages.clone()),
        ),
    )
    .await;
    eventually("three events at SparkLoop", Duration::from_secs(15), || {
        forwarded(&app) >= 3
    })
    .await;
    let received: Vec<Value> = app
        .requests_to("/incoming")
        .await
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(
        received,
        vec![
            json!({"type": "subscribe", "subscriber": {"email": "jane@example.com", "id": 1,
                "first_name": "Jane", "name": "Jane Doe"}}),
            json!({"type": "update", "subscriber": {"email": "jane.doe@example.com",
                "previous_email": "jane@example.com", "first_name": "Jane", "name": "Jane Doe"}}),
            json!({"type": "unsubscribe", "subscriber": {"email": "jane.doe@example.com"}}),
        ]
    );
    // A webhook claiming to be listmonk is told that listmonk is polled.
    let posted = app.post_esp("{}").await;
    assert_eq!(posted.status(), 400);
    assert!(posted.text().await.unwrap().contains("polls it"));
    // Each poll starts after the last change read; the first from the beginning.
    let queries = pages.queries.lock().unwrap().clone();
    assert_eq!(queries[0], None);
    assert!(
        queries[1].as_deref().unwrap().contains(
            "subscribers.updated_at > '2026-11-26T10:00:01Z' OR \
             (subscribers.updated_at = '2026-11-26T10:00:01Z' AND subscribers.id > 2)"
        ),
        "{queries:?}"
    );
    assert_eq!(
        app.db.count(
            "SELECT COUNT(*) AS n FROM poll_checkpoints WHERE position = '2026-11-26T12:00:00Z'"
        ),
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn without_patch_the_subscriber_is_put_back_whole_with_its_attributes_and_lists() {
    let app = TestApp::spawn_with(
        &[
            ("ESP_ADAPTER", "listmonk"),
            ("ESP_API_URL", "{stand-in}/lm/api"),
            ("ESP_API_KEY", "bridge:tok"),
            ("ESP_POLL_INTERVAL", "1h"),
            ("ESP_WRITE_DELAY", "10ms"),
        ],
        Some(
            Mock::given(method("GET"))
                .and(path("/lm/api/subscribers"))
                .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": {
                    "results": [{"id": 7, "email": "jane@example.com", "name": "Jane Doe",
                        "status": "enabled", "attribs": {"city": "Oslo", "plan": {"tier": "gold"}},
                        "lists": [{"id": 1, "subscription_status": "confirmed"},
                                  {"id": 3, "subscription_status": "unconfirmed"}],
                        "updated_at": "2026-11-26T10:00:00Z"}],
                    "total": 1, "per_page": 100, "page": 1}}))),
        ),
    )
    .await;
    // A listmonk before 6.1: PATCH is not a method it has.
    app.sparkloop
        .register(Mock::given(method("PATCH")).respond_with(
            ResponseTemplate::new(405).set_body_json(json!({"message": "Method Not Allowed"})),
        ))
        .await;
    app.sparkloop
        .register(
            Mock::given(method("PUT"))
                .and(path("/lm/api/subscribers/7"))
                .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": {}}))),
        )
        .await;
    // The start-up poll records Jane first; a callback racing it to insert her would be
    // answered 503 (and retried by SparkLoop), which is not what this test is about.
    let db = &app.db;
    eventually("the start-up poll", Duration::from_secs(15), || {
        db.count("SELECT COUNT(*) AS n FROM subscribers WHERE email = 'jane@example.com'") == 1
    })
    .await;
    let callback = json!({"type": "sync_subscriber", "subscriber": {"id": "sub_1",
        "email": "jane@example.com", "referral_code": "ab12cd", "tot_referrals": 3}});
    assert_eq!(
        app.post_sparkloop(&callback.to_string()).await.status(),
        200
    );
    eventually("the write", Duration::from_secs(15), || {
        db.count("SELECT COUNT(*) AS n FROM jobs WHERE destination = 'esp' AND status = 'done'")
            == 1
    })
    .await;
    let requests = app.sparkloop.received_requests().await.unwrap();
    // The start-up poll aside (ordered by updated_at), the write's own calls.
    let methods: Vec<&str> = requests
        .iter()
        .filter(|r| r.url.path().starts_with("/lm/api/subscribers"))
        .filter(|r| !r.url.query().unwrap_or_default().contains("order_by"))
        .map(|r| r.method.as_str())
        .collect();
    assert_eq!(
        methods,
        ["GET", "PATCH", "GET", "PUT"],
        "PATCH tried once, then read-merge-PUT"
    );
    let put = requests
        .iter()
        .find(|r| r.method.as_str() == "PUT")
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&put.body).unwrap(),
        json!({"email": "jane@example.com", "name": "Jane Doe", "status": "enabled",
            "lists": [1, 3],
            "attribs": {"city": "Oslo", "plan": {"tier": "gold"},
                "RH_SUBID": "sub_1", "RH_CODE": "ab12cd", "RH_TOTREF": 3}})
    );
    assert_eq!(put.headers["authorization"], "token bridge:tok");
    app.stop().await;
}
