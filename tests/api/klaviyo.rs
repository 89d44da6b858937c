//! `ESP_ADAPTER=klaviyo` inbound, end to end: a signed, batched system-webhook delivery reaches
//! SparkLoop (the profile id kept); unsigned, re-addressed or stale deliveries are refused. The
//! writes are tested against Klaviyo's own spec in `prism.rs`.

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::helpers::{TestApp, ESP_SECRET};

fn signature(body: &str, timestamp: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(ESP_SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    mac.update(timestamp.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn signed_klaviyo_deliveries_reach_sparkloop() {
    let app = TestApp::spawn_with(&[("ESP_ADAPTER", "klaviyo")], None).await;
    let profile = |email: &str, id: &str| {
        json!({"data": {"type": "event", "id": format!("evt_{id}"),
            "relationships": {"profile": {"data": {"type": "profile", "id": id}}}},
            "included": [{"type": "profile", "id": id, "attributes": {"email": email}}]})
    };
    let body = json!({"data": [
            {"external_id": "evt_1", "topic": "event:klaviyo.subscribed_to_email_marketing",
             "payload": profile("sarah.mason@klaviyo-demo.com", "01GDDKASAP8TKDDA2GRZDSVP4H")},
            {"external_id": "evt_2", "topic": "event:klaviyo.unsubscribed_from_email_marketing",
             "payload": profile("gone@example.com", "01GOTHER")}],
        "meta": {"klaviyo_account_id": "acc", "klaviyo_webhook_id": "01JWEBHOOK",
            "timestamp": "2026-04-13T22:50:12.101159+00:00"}})
    .to_string();
    let now = httpdate::fmt_http_date(std::time::SystemTime::now());
    let post = |timestamp: &str, webhook: &str, signature: String| {
        app.client
            .post(format!("{}/webhooks/esp", app.address))
            .header("content-type", "application/json")
            .header("Klaviyo-Timestamp", timestamp)
            .header("Klaviyo-Webhook-Id", webhook)
            .header("Klaviyo-Signature", signature)
            .body(body.clone())
            .send()
    };
    let stale = "Tue, 14 Apr 2026 03:50:12 GMT";
    assert_eq!(
        post(stale, "01JWEBHOOK", signature(&body, stale))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        post(&now, "01JOTHER", signature(&body, &now))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        post(&now, "01JWEBHOOK", signature("{}", &now))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        post(&now, "01JWEBHOOK", signature(&body, &now))
            .await
            .unwrap()
            .status(),
        200
    );
    let mut received = app.wait_for_requests(2).await;
    received.sort_by_key(|r| r["type"].as_str().unwrap().to_string());
    assert_eq!(
        received,
        vec![
            json!({"type": "subscribe", "subscriber": {"email": "sarah.mason@klaviyo-demo.com",
                "id": "01GDDKASAP8TKDDA2GRZDSVP4H"}}),
            json!({"type": "unsubscribe", "subscriber": {"email": "gone@example.com"}}),
        ]
    );
    app.stop().await;
}
