//! `ESP_ADAPTER=mailerlite` end to end: a signed webhook in, forwarded to SparkLoop; a callback
//! out as a field write by MailerLite's id, retried after MailerLite's 429 and `Retry-After`.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{eventually, TestApp, ESP_SECRET};

const SUBSCRIBER: &str = "/ml/subscribers/100000000000000000";

fn sign(body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(ESP_SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn a_signed_webhook_in_and_fields_out_by_id_after_a_429() {
    let busy = Mock::given(method("PUT"))
        .and(path(SUBSCRIBER))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "1")
                .set_body_json(json!({"message": "Too Many Attempts."})),
        )
        .up_to_n_times(1)
        .with_priority(1);
    let app = TestApp::spawn_with(
        &[
            ("ESP_ADAPTER", "mailerlite"),
            ("ESP_API_URL", "{stand-in}/ml"),
            ("ESP_API_KEY", "ml-token"),
            ("ESP_WRITE_DELAY", "10ms"),
            ("RETRY_MAX_DELAY", "5s"),
        ],
        Some(busy),
    )
    .await;
    app.sparkloop
        .register(
            Mock::given(method("PUT"))
                .and(path(SUBSCRIBER))
                .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": {}}))),
        )
        .await;
    let webhook = json!({"id": "100000000000000000", "email": "john.doe@example.com",
        "status": "active", "source": "ecommerce",
        "fields": {"name": "John", "last_name": "Doe", "company": "", "country": ""},
        "event": "subscriber.created", "account_id": 0})
    .to_string();
    let url = format!("{}/webhooks/esp", app.address);
    let unsigned = app
        .client
        .post(&url)
        .body(webhook.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    let forged = app
        .client
        .post(&url)
        .header("Signature", sign("something else"))
        .body(webhook.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let signed = app
        .client
        .post(&url)
        .header("Signature", sign(&webhook))
        .body(webhook.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 200);
    let received = app.wait_for_requests(1).await;
    assert_eq!(
        received[0],
        json!({"type": "subscribe", "subscriber": {"email": "john.doe@example.com",
            "id": "100000000000000000", "first_name": "John", "name": "John Doe"}})
    );

    let callback = json!({"type": "sync_subscriber", "subscriber": {"id": "sub_1",
        "email": "john.doe@example.com", "referral_code": "ada90f39", "tot_referrals": 4}});
    assert_eq!(
        app.post_sparkloop(&callback.to_string()).await.status(),
        200
    );
    let db = &app.db;
    eventually("the write to be done", Duration::from_secs(15), || {
        db.count("SELECT COUNT(*) AS n FROM jobs WHERE destination = 'esp' AND status = 'done'")
            == 1
    })
    .await;
    let writes = app.requests_to(SUBSCRIBER).await;
    assert_eq!(writes.len(), 2, "one 429, then the write");
    let body: Value = serde_json::from_slice(&writes[1].body).unwrap();
    assert_eq!(
        body,
        json!({"fields": {"rh_subid": "sub_1", "rh_code": "ada90f39", "rh_totref": 4}})
    );
    assert_eq!(
        writes[1].headers.get("authorization").unwrap(),
        "Bearer ml-token"
    );
    let gap = db.count(
        "SELECT MAX(started_at) - MIN(started_at) AS n FROM attempts a \
        JOIN jobs j ON j.id = a.job_id WHERE j.destination = 'esp'",
    );
    assert!(gap >= 1000, "retried {gap} ms after the 429");
    app.stop().await;
}

#[tokio::test]
async fn a_backlog_goes_in_a_batch_and_a_refused_write_is_retried_alone() {
    let ml = |key: &'static str| {
        vec![
            ("ESP_ADAPTER", "mailerlite"),
            ("ESP_API_URL", "{stand-in}/ml"),
            ("ESP_API_KEY", key),
            ("ESP_WRITE_DELAY", "10ms"),
        ]
    };
    let app = TestApp::spawn_with(&ml(""), None).await;
    // MailerLite told the bridge both ids; the writes queue while no key is set.
    for (id, email) in [("11", "a@example.com"), ("22", "b@example.com")] {
        let webhook = json!({"id": id, "email": email, "status": "active",
            "event": "subscriber.created", "fields": {}})
        .to_string();
        let response = app
            .client
            .post(format!("{}/webhooks/esp", app.address))
            .header("Signature", sign(&webhook))
            .body(webhook)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let callback = json!({"type": "sync_subscriber",
            "subscriber": {"email": email, "referral_code": "c1"}});
        assert_eq!(
            app.post_sparkloop(&callback.to_string()).await.status(),
            200
        );
    }
    app.wait_until_esp_due(2).await;
    app.sparkloop
        .register(
            Mock::given(method("POST"))
                .and(path("/ml/batch"))
                // One result per request, in their order: b's write is refused.
                .respond_with(|request: &wiremock::Request| {
                    let body: Value = serde_json::from_slice(&request.body).unwrap();
                    let responses: Vec<Value> = body["requests"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|r| match r["path"].as_str() {
                            Some("api/subscribers/22") => json!({"code": 422,
                                "body": {"message": "The given data was invalid."}}),
                            _ => json!({"code": 200, "body": {"data": {}}}),
                        })
                        .collect();
                    ResponseTemplate::new(200).set_body_json(json!({"responses": responses}))
                }),
        )
        .await;
    app.sparkloop
        .register(
            Mock::given(method("PUT"))
                .and(path("/ml/subscribers/22"))
                .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": {}}))),
        )
        .await;
    let app = app.restart_with(&ml("ml-token")).await;
    let db = &app.db;
    eventually("both writes done", Duration::from_secs(15), || {
        db.count("SELECT COUNT(*) AS n FROM jobs WHERE destination = 'esp' AND status = 'done'")
            == 2
    })
    .await;
    let batches = app.requests_to("/ml/batch").await;
    assert_eq!(batches.len(), 1);
    let body: Value = serde_json::from_slice(&batches[0].body).unwrap();
    let requests = body["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 2);
    assert!(
        requests.contains(&json!({"method": "PUT", "path": "api/subscribers/11",
        "body": {"fields": {"rh_code": "c1"}}}))
    );
    assert_eq!(
        app.requests_to("/ml/subscribers/22").await.len(),
        1,
        "retried alone"
    );
    assert_eq!(app.requests_to("/ml/subscribers/11").await.len(), 0);
    app.stop().await;
}

#[tokio::test]
async fn fields_named_by_esp_field_in_are_the_signups_attribution() {
    let app = TestApp::spawn_with(
        &[
            ("ESP_ADAPTER", "mailerlite"),
            ("ESP_API_URL", "{stand-in}/ml"),
            ("ESP_API_KEY", "ml-token"),
            ("ESP_FIELD_IN_COUNTRY_CODE", "country"),
            ("SPARKLOOP_INCOMING_WEBHOOK_URL", ""),
            ("SPARKLOOP_API_URL", "{stand-in}"),
            ("SPARKLOOP_API_KEY", "sl-key"),
            ("SPARKLOOP_RATE_LIMIT", "100/1s"),
        ],
        Some(
            wiremock::Mock::given(wiremock::matchers::method("POST"))
                .and(wiremock::matchers::path("/v2/subscribers"))
                .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(json!({}))),
        ),
    )
    .await;
    let webhook = json!({"id": "31", "email": "c@example.com", "status": "active",
        "event": "subscriber.created", "fields": {"country": "NL", "name": "Cor"}})
    .to_string();
    let response = app
        .client
        .post(format!("{}/webhooks/esp", app.address))
        .header("Signature", sign(&webhook))
        .body(webhook)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    app.drain().await;
    let posted: Vec<serde_json::Value> = app
        .requests_to("/v2/subscribers")
        .await
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(posted.len(), 1, "{posted:?}");
    assert_eq!(posted[0]["country_code"], "NL");
    app.stop().await;
}
