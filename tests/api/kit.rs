//! `ESP_ADAPTER=kit` end to end: a signed delivery in (an old one refused), forwarded to
//! SparkLoop; field writes out by Kit's id, found by email when the bridge does not know it yet
//! (retried while Kit has no such contact) and kept.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{eventually, TestApp, ESP_SECRET};

fn signature(t: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(ESP_SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={t},v1={hex}")
}

#[tokio::test]
async fn signed_deliveries_in_and_fields_out_by_id_found_by_email() {
    let not_yet = Mock::given(method("GET"))
        .and(path("/kit/v4/subscribers"))
        .and(query_param("email_address", "bob@example.com"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"subscribers": []})))
        .up_to_n_times(1)
        .with_priority(1);
    let app = TestApp::spawn_with(
        &[
            ("ESP_ADAPTER", "kit"),
            ("ESP_API_URL", "{stand-in}/kit"),
            ("ESP_API_KEY", "kit-key"),
            ("ESP_WRITE_DELAY", "10ms"),
        ],
        Some(not_yet),
    )
    .await;
    for mock in [
        Mock::given(method("GET"))
            .and(path("/kit/v4/subscribers"))
            .respond_with(ResponseTemplate::new(200).set_body_json(
                json!({"subscribers": [{"id": 200, "email_address": "bob@example.com"}]}),
            )),
        Mock::given(method("PUT"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"subscriber": {}}))),
    ] {
        app.sparkloop.register(mock).await;
    }
    let delivery = json!({"delivery_id": 123456, "events": [{"id": "9c2e",
        "type": "subscriber.created", "created": "2026-07-29T14:32:10Z",
        "data": {"subscriber": {"id": 987654, "first_name": "Ada",
            "email_address": "ada@example.com", "state": "active"}}}]})
    .to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let url = format!("{}/webhooks/esp", app.address);
    let post = |header: String| {
        app.client
            .post(&url)
            .header("X-Kit-Signature", header)
            .body(delivery.clone())
            .send()
    };
    assert_eq!(
        post(signature(now - 600, &delivery))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(post(signature(now, &delivery)).await.unwrap().status(), 200);
    let received = app.wait_for_requests(1).await;
    assert_eq!(
        received[0],
        json!({"type": "subscribe", "subscriber": {"email": "ada@example.com", "id": 987654,
            "first_name": "Ada"}})
    );

    // Ada's id came with the webhook; Bob's is looked up (not there at first) and kept.
    for email in ["ada@example.com", "bob@example.com"] {
        let callback = json!({"type": "sync_subscriber",
            "subscriber": {"email": email, "referral_code": "c1", "tot_referrals": 2}});
        assert_eq!(
            app.post_sparkloop(&callback.to_string()).await.status(),
            200
        );
    }
    let db = &app.db;
    eventually("both writes done", Duration::from_secs(20), || {
        db.count("SELECT COUNT(*) AS n FROM jobs WHERE destination = 'esp' AND status = 'done'")
            == 2
    })
    .await;
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM subscribers WHERE email = 'bob@example.com' AND esp_id = '200'"),
        1,
        "the id found is kept"
    );
    assert_eq!(app.requests_to("/kit/v4/subscribers").await.len(), 2);
    for (id, email) in [(987654, "ada@example.com"), (200, "bob@example.com")] {
        let writes = app.requests_to(&format!("/kit/v4/subscribers/{id}")).await;
        assert_eq!(writes.len(), 1, "{email}");
        assert_eq!(writes[0].headers.get("x-kit-api-key").unwrap(), "kit-key");
        let body: Value = serde_json::from_slice(&writes[0].body).unwrap();
        assert_eq!(
            body,
            json!({"email_address": email, "fields": {"rh_code": "c1", "rh_totref": "2"}})
        );
    }
    app.stop().await;
}
