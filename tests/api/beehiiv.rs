//! `ESP_ADAPTER=beehiiv` end to end: beehiiv's webhook (with `?token=`) reaches SparkLoop with
//! the subscription id kept; a SparkLoop callback becomes a PATCH of that subscription's custom
//! fields; someone the bridge knows no id for is looked up by address first.

use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{eventually, TestApp, ESP_SECRET};

const PUBLICATION: &str = "/bh/v2/publications/pub_1";

async fn spawn() -> TestApp {
    let app = TestApp::spawn_with(
        &[
            ("ESP_ADAPTER", "beehiiv"),
            ("ESP_API_URL", "{stand-in}/bh/v2"),
            ("ESP_API_KEY", "bh-key"),
            ("ESP_LIST_ID", "pub_1"),
            ("ESP_WRITE_DELAY", "10ms"),
        ],
        Some(
            Mock::given(method("PATCH"))
                .and(header("authorization", "Bearer bh-key"))
                .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": {}}))),
        ),
    )
    .await;
    app.sparkloop
        .register(
            Mock::given(method("GET"))
                .and(path(format!(
                    "{PUBLICATION}/subscriptions/by_email/bob%40example.com"
                )))
                .respond_with(ResponseTemplate::new(200).set_body_json(
                    json!({"data": {"id": "sub_bob", "email": "bob@example.com", "status": "active"}}),
                )),
        )
        .await;
    app
}

fn patches(requests: &[wiremock::Request]) -> Vec<(String, Value)> {
    requests
        .iter()
        .filter(|r| r.method.as_str() == "PATCH")
        .map(|r| {
            (
                r.url.path().to_string(),
                serde_json::from_slice(&r.body).unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn beehiiv_subscriptions_reach_sparkloop_and_referral_fields_come_back() {
    let app = spawn().await;
    // beehiiv's documented sample, as its webhook posts it to `...?token=`.
    let created = json!({"data": {"created": 1666800076, "email": "example@example.com",
        "id": "sub_00000000-0000-0000-0000-000000000000", "referral_code": "ABC123",
        "status": "active", "subscription_tier": "free"},
        "event_timestamp": 1666800076, "event_type": "subscription.created",
        "uid": "evt_00000000-0000-0000-0000-000000000000"});
    let post = |body: Value, token: &str| {
        app.client
            .post(format!("{}/webhooks/esp?token={token}", app.address))
            .json(&body)
            .send()
    };
    assert_eq!(post(created.clone(), "wrong").await.unwrap().status(), 401);
    assert_eq!(post(created, ESP_SECRET).await.unwrap().status(), 200);
    let forwarded = app.wait_for_requests(1).await;
    assert_eq!(
        forwarded[0],
        json!({"type": "subscribe", "subscriber": {"email": "example@example.com",
            "id": "sub_00000000-0000-0000-0000-000000000000", "created_at": 1666800076}})
    );

    // Referral data back: a PATCH of the subscription by the id beehiiv gave.
    let callback = json!({"type": "sync_subscriber", "subscriber": {"id": "sub_sl",
        "email": "example@example.com", "referral_code": "ab12cd", "tot_referrals": 3}});
    assert_eq!(
        app.post_sparkloop(&callback.to_string()).await.status(),
        200
    );
    // Someone beehiiv never told the bridge about: looked up by address first.
    let bob = json!({"type": "sync_subscriber", "subscriber": {"email": "bob@example.com",
        "referral_code": "bob1"}});
    assert_eq!(app.post_sparkloop(&bob.to_string()).await.status(), 200);
    let db = &app.db;
    eventually("both field writes", Duration::from_secs(15), || {
        db.count("SELECT COUNT(*) AS n FROM jobs WHERE destination = 'esp' AND status = 'done'")
            == 2
    })
    .await;
    let mut written = patches(&app.sparkloop.received_requests().await.unwrap());
    written.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        written,
        vec![
            (
                format!("{PUBLICATION}/subscriptions/sub_00000000-0000-0000-0000-000000000000"),
                json!({"custom_fields": [{"name": "RH_SUBID", "value": "sub_sl"},
                    {"name": "RH_CODE", "value": "ab12cd"}, {"name": "RH_TOTREF", "value": 3}]})
            ),
            (
                format!("{PUBLICATION}/subscriptions/sub_bob"),
                json!({"custom_fields": [{"name": "RH_CODE", "value": "bob1"}]})
            ),
        ]
    );
    // The looked-up id is kept: no second lookup for Bob.
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM subscribers WHERE esp_id = '\"sub_bob\"'"),
        1
    );
    app.stop().await;
}
