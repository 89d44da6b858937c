//! `ESP_ADAPTER=ghost` end to end: Ghost's signed member webhook (an email change) reaches
//! SparkLoop; a SparkLoop callback is written into the member's note and labels, read first
//! and merged, with an Admin API JWT.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{eventually, TestApp, ESP_SECRET};

const KEY: &str =
    "6489ab5c7f8d2e0001a1b2c3:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const MEMBERS: &str = "/site/ghost/api/admin/members/";

/// `X-Ghost-Signature` for `body` now.
fn signature(body: &str) -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(ESP_SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    mac.update(t.as_bytes());
    format!("sha256={}, t={t}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn ghost_members_reach_sparkloop_and_referral_data_lands_in_note_and_labels() {
    let app = TestApp::spawn_with(
        &[
            ("ESP_ADAPTER", "ghost"),
            ("ESP_API_URL", "{stand-in}/site"),
            ("ESP_API_KEY", KEY),
            ("ESP_WRITE_TO", "note,labels"),
            ("ESP_FIELD_ISREF", "off"),
            ("ESP_FIELD_REFLINK", "off"),
            ("ESP_WRITE_DELAY", "10ms"),
        ],
        Some(
            Mock::given(method("GET"))
                .and(path(MEMBERS))
                .and(query_param("filter", "email:'new@example.com'"))
                .respond_with(
                    ResponseTemplate::new(200).set_body_json(json!({"members": [{
                    "id": "64f1", "email": "new@example.com", "name": "Jane",
                    "note": "Met at the conference", "labels": [{"id": "l1", "name": "Podcast",
                    "slug": "podcast"}]}], "meta": {"pagination": {"total": 1}}})),
                ),
        ),
    )
    .await;
    app.sparkloop
        .register(
            Mock::given(method("PUT"))
                .and(path(format!("{MEMBERS}64f1/")))
                .respond_with(ResponseTemplate::new(200).set_body_json(json!({"members": [{}]}))),
        )
        .await;

    // Ghost's documented member.edited (an email change), signed.
    let edited = json!({"member": {"current": {"id": "64f1", "uuid": "u1",
        "email": "new@example.com", "name": "Jane", "note": null, "status": "free",
        "subscribed": true, "labels": [], "newsletters": [], "tiers": []},
        "previous": {"email": "old@example.com"}}})
    .to_string();
    let post = |signature: Option<String>| {
        let mut request = app
            .client
            .post(format!("{}/webhooks/esp", app.address))
            .header("content-type", "application/json")
            .body(edited.clone());
        if let Some(signature) = signature {
            request = request.header("X-Ghost-Signature", signature);
        }
        request.send()
    };
    assert_eq!(post(None).await.unwrap().status(), 401);
    assert_eq!(
        post(Some(signature("{}"))).await.unwrap().status(),
        401,
        "a signature of another body"
    );
    assert_eq!(post(Some(signature(&edited))).await.unwrap().status(), 200);
    let forwarded = app.wait_for_requests(1).await;
    assert_eq!(
        forwarded[0],
        json!({"type": "update", "subscriber": {"email": "new@example.com",
            "previous_email": "old@example.com", "first_name": "Jane", "name": "Jane"}})
    );

    let callback = json!({"type": "sync_subscriber", "subscriber": {"id": "sub_1",
        "email": "new@example.com", "referral_code": "ab12cd", "tot_referrals": 3}});
    assert_eq!(
        app.post_sparkloop(&callback.to_string()).await.status(),
        200
    );
    let db = &app.db;
    eventually("the member write", Duration::from_secs(15), || {
        db.count("SELECT COUNT(*) AS n FROM jobs WHERE destination = 'esp' AND status = 'done'")
            == 1
    })
    .await;
    let requests = app.sparkloop.received_requests().await.unwrap();
    let put = requests
        .iter()
        .find(|r| r.method.as_str() == "PUT")
        .expect("a member write");
    assert_eq!(
        serde_json::from_slice::<Value>(&put.body).unwrap(),
        json!({"members": [{
            "note": "Met at the conference\nreferral-bridge: {\"RH_CODE\":\"ab12cd\",\"RH_SUBID\":\"sub_1\",\"RH_TOTREF\":3}",
            "labels": [{"name": "Podcast"}, {"name": "RH_SUBID: sub_1"},
                {"name": "RH_CODE: ab12cd"}, {"name": "RH_TOTREF: 3"}]}]})
    );
    for request in requests
        .iter()
        .filter(|r| r.url.path().starts_with(MEMBERS))
    {
        let auth = request.headers["authorization"].to_str().unwrap();
        assert!(auth.starts_with("Ghost "), "{auth}");
        assert_eq!(auth.matches('.').count(), 2, "a JWT");
        assert_eq!(request.headers["accept-version"], "v5.0");
    }
    app.stop().await;
}
