//! `ESP_FIELD_IN_*` on the adapters whose webhooks carry custom fields beside Mailchimp's and
//! MailerLite's (tested with them): beehiiv (its subscription's own UTM keys and custom fields),
//! ActiveCampaign (`contact[fields][...]`) and Kit (the subscriber's `fields`). The values reach
//! SparkLoop's API with the signup (DESIGN 3.8); an unconfigured field is not read.

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{TestApp, ESP_SECRET};

/// API mode with `adapter` and its variables, and the attribution fields named.
async fn spawn(adapter: &[(&str, &str)]) -> TestApp {
    let mut vars = vec![
        ("SPARKLOOP_INCOMING_WEBHOOK_URL", ""),
        ("SPARKLOOP_API_URL", "{stand-in}"),
        ("SPARKLOOP_API_KEY", "sl-key"),
        ("SPARKLOOP_RATE_LIMIT", "100/1s"),
        ("ESP_FIELD_IN_UTM_SOURCE", "utm_source"),
        ("ESP_FIELD_IN_REFERRER_CODE", "sl_referrer"),
    ];
    vars.extend_from_slice(adapter);
    TestApp::spawn_with(
        &vars,
        Some(
            Mock::given(method("POST"))
                .and(path("/v2/subscribers"))
                .respond_with(ResponseTemplate::new(200).set_body_json(json!({}))),
        ),
    )
    .await
}

/// The one subscriber SparkLoop's API was sent.
async fn posted(app: &TestApp) -> Value {
    app.drain().await;
    let posted: Vec<Value> = app
        .requests_to("/v2/subscribers")
        .await
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(posted.len(), 1, "{posted:?}");
    posted[0].clone()
}

#[tokio::test]
async fn beehiiv_utm_keys_and_custom_fields_are_read() {
    let app = spawn(&[
        ("ESP_ADAPTER", "beehiiv"),
        ("ESP_API_URL", "{stand-in}/bh/v2"),
        ("ESP_API_KEY", "bh-key"),
        ("ESP_LIST_ID", "pub_1"),
    ])
    .await;
    // beehiiv's documented subscription (shared/fixtures), with a custom field.
    let body = json!({"data": {"created": 1666800076, "email": "example@example.com",
        "id": "sub_00000000-0000-0000-0000-000000000000", "referral_code": "ABC123",
        "referring_site": "https://www.blog.com", "status": "active",
        "subscription_tier": "free", "subscription_premium_tier_names": [],
        "utm_campaign": "Q1 Campaign", "utm_channel": "website", "utm_medium": "organic",
        "utm_source": "Twitter",
        "custom_fields": [{"name": "sl_referrer", "kind": "string", "value": "joanne123"}]},
        "event_timestamp": 1666800076, "event_type": "subscription.created",
        "uid": "evt_00000000-0000-0000-0000-000000000000"});
    let response = app
        .client
        .post(format!("{}/webhooks/esp?token={ESP_SECRET}", app.address))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let sent = posted(&app).await;
    assert_eq!(sent["utm_source"], "Twitter", "{sent}");
    assert_eq!(sent["referrer_code"], "joanne123", "{sent}");
    // beehiiv's own referral code is not SparkLoop's, and utm_campaign is not configured.
    assert!(sent.get("utm_campaign").is_none(), "{sent}");
    app.stop().await;
}

#[tokio::test]
async fn activecampaign_contact_fields_are_read() {
    let app = spawn(&[
        ("ESP_ADAPTER", "activecampaign"),
        ("ESP_API_URL", "{stand-in}/ac/api/3"),
        ("ESP_API_KEY", "ac-token"),
    ])
    .await;
    // The documented subscribe (shared/fixtures), with two custom fields.
    let body = "type=subscribe&date_time=2024-01-01T09%3A00%3A00-06%3A00&initiated_from=public\
        &initiated_by=contact&list=1&form%5Bid%5D=3&contact%5Bid%5D=10\
        &contact%5Bemail%5D=jane%40example.com&contact%5Bfirst_name%5D=Jane\
        &contact%5Blast_name%5D=Doe&contact%5Bphone%5D=&contact%5Btags%5D=\
        &contact%5Bip%5D=1.2.3.4&contact%5Bfields%5D%5Breferral_code%5D=ab12cd\
        &contact%5Bfields%5D%5Butm_source%5D=podcast&contact%5Bfields%5D%5Bsl_referrer%5D=";
    let response = app
        .client
        .post(format!("{}/webhooks/esp?token={ESP_SECRET}", app.address))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let sent = posted(&app).await;
    assert_eq!(sent["email"], "jane@example.com", "{sent}");
    assert_eq!(sent["utm_source"], "podcast", "{sent}");
    assert!(
        sent.get("referrer_code").is_none(),
        "an empty field is not sent: {sent}"
    );
    app.stop().await;
}

#[tokio::test]
async fn kit_subscriber_fields_are_read() {
    let app = spawn(&[
        ("ESP_ADAPTER", "kit"),
        ("ESP_API_URL", "{stand-in}/kit"),
        ("ESP_API_KEY", "kit-key"),
    ])
    .await;
    // Kit's documented delivery (shared/fixtures), with the fields configured.
    let body = json!({"delivery_id": 123456, "events": [{
        "id": "9c2e1f3a-6b7d-4e8f-a1b2-c3d4e5f60718", "type": "subscriber.created",
        "created": "2026-07-29T14:32:10Z", "data": {"subscriber": {"id": 987654,
            "first_name": "Ada", "email_address": "ada@example.com", "state": "active",
            "created_at": "2026-07-29T14:32:10Z",
            "fields": {"company": "Kit", "utm_source": "newsletter", "sl_referrer": "rc9"}}}}]})
    .to_string();
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut mac = Hmac::<Sha256>::new_from_slice(ESP_SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let response = app
        .client
        .post(format!("{}/webhooks/esp", app.address))
        .header("Content-Type", "application/json")
        .header("X-Kit-Signature", format!("t={t},v1={hex}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let sent = posted(&app).await;
    assert_eq!(sent["utm_source"], "newsletter", "{sent}");
    assert_eq!(sent["referrer_code"], "rc9", "{sent}");
    app.stop().await;
}
