//! `ESP_ADAPTER=mailchimp` end to end: Mailchimp's form-encoded webhooks in, forwarded to
//! SparkLoop; SparkLoop's callbacks out as merge-field PATCHes; 404, 400 and the validator's GET.

use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{eventually, TestApp, ESP_SECRET};

/// Mailchimp's documented `subscribe` webhook body.
const SUBSCRIBE: &str = "type=subscribe&fired_at=2009-03-26+21%3A35%3A57&data%5Bid%5D=8a25ff1d98&data%5Blist_id%5D=a6b5da1054&data%5Bemail%5D=api%40mailchimp.com&data%5Bemail_type%5D=html&data%5Bmerges%5D%5BEMAIL%5D=api%40mailchimp.com&data%5Bmerges%5D%5BFNAME%5D=Mailchimp&data%5Bmerges%5D%5BLNAME%5D=API&data%5Bmerges%5D%5BINTERESTS%5D=Group1%2CGroup2&data%5Bip_opt%5D=10.20.10.30&data%5Bip_signup%5D=10.20.10.30";

/// The member path of api@mailchimp.com: its md5 under the audience.
const MEMBER: &str = "/mc/3.0/lists/a6b5da1054/members/6def22f266be37015519943ce0c3ae6b";

async fn spawn(mock: Option<Mock>) -> TestApp {
    TestApp::spawn_with(
        &[
            ("ESP_ADAPTER", "mailchimp"),
            ("ESP_API_URL", "{stand-in}/mc/3.0"),
            ("ESP_API_KEY", "0123abcd-us6"),
            ("ESP_LIST_ID", "a6b5da1054"),
            ("ESP_WRITE_DELAY", "10ms"),
        ],
        mock,
    )
    .await
}

async fn post_form(app: &TestApp, query: &str, body: &str) -> reqwest::Response {
    app.client
        .post(format!("{}/webhooks/esp{query}", app.address))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

fn sync_subscriber() -> String {
    json!({"type": "sync_subscriber", "subscriber": {"id": "sub_1",
        "email": "api@mailchimp.com", "referral_code": "ada90f39", "referred": true,
        "tot_referrals": 4, "last_reward": "reward_cdebf4f013"}})
    .to_string()
}

#[tokio::test]
async fn webhooks_in_and_merge_fields_out() {
    let patched = Mock::given(method("PATCH"))
        .and(path(MEMBER))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "6def"})));
    let app = spawn(Some(patched)).await;
    // Mailchimp checks the URL with a GET before it sends anything.
    let ping = app.get("/webhooks/esp").await;
    assert_eq!(ping.status(), 200);
    // Unsigned: the secret is the URL's token.
    assert_eq!(post_form(&app, "", SUBSCRIBE).await.status(), 401);
    let query = format!("?token={ESP_SECRET}");
    assert_eq!(post_form(&app, &query, SUBSCRIBE).await.status(), 200);
    let received = app.wait_for_requests(1).await;
    assert_eq!(
        received[0],
        json!({"type": "subscribe", "subscriber": {"email": "api@mailchimp.com",
            "id": "8a25ff1d98", "first_name": "Mailchimp", "name": "Mailchimp API",
            "created_at": 1238103357}})
    );

    assert_eq!(app.post_sparkloop(&sync_subscriber()).await.status(), 200);
    app.wait_until_esp_idle().await;
    let writes = app.requests_to(MEMBER).await;
    assert_eq!(writes.len(), 1);
    let auth = writes[0]
        .headers
        .get("authorization")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(auth.starts_with("Basic "), "{auth}");
    let body: Value = serde_json::from_slice(&writes[0].body).unwrap();
    assert_eq!(
        body,
        json!({"merge_fields": {"RH_SUBID": "sub_1", "RH_CODE": "ada90f39", "RH_ISREF": "YES",
            "RH_TOTREF": "4", "RH_LASTREW": "reward_cdebf4f013"}})
    );
    app.stop().await;
}

#[tokio::test]
async fn a_missing_member_is_retried_and_a_refused_write_kept_dead() {
    let not_yet = Mock::given(method("PATCH"))
        .and(path(MEMBER))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({
            "title": "Resource Not Found", "status": 404,
            "detail": "The requested resource could not be found."})))
        .up_to_n_times(1)
        .with_priority(1);
    let app = spawn(Some(not_yet)).await;
    app.sparkloop
        .register(Mock::given(method("PATCH")).and(path(MEMBER)).respond_with(
            ResponseTemplate::new(400).set_body_json(json!({
                    "title": "Invalid Resource", "status": 400,
                    "detail": "Your merge fields were invalid.",
                    "errors": [{"field": "RH_TOTREF", "message": "Please enter a number"}]})),
        ))
        .await;
    assert_eq!(app.post_sparkloop(&sync_subscriber()).await.status(), 200);
    let db = &app.db;
    eventually("the write to go dead", Duration::from_secs(15), || {
        db.count(
            "SELECT COUNT(*) AS n FROM jobs WHERE destination = 'esp' AND status = 'dead' \
             AND attempts = 2 AND last_error LIKE 'HTTP 400%'",
        ) == 1
    })
    .await;
    assert_eq!(
        db.count(
            "SELECT COUNT(*) AS n FROM attempts WHERE status_code = 400 \
             AND response_body LIKE '%Please enter a number%'"
        ),
        1,
        "Mailchimp's message is kept for the operator"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_backlog_goes_in_batches_and_a_contact_refused_in_one_is_retried_alone() {
    // The writes queue while no key is set; the bridge that has one finds them all due.
    let app = spawn(None).await;
    let app = app
        .restart_with(&[
            ("ESP_ADAPTER", "mailchimp"),
            ("ESP_API_URL", "{stand-in}/mc/3.0"),
            ("ESP_API_KEY", ""),
            ("ESP_LIST_ID", "a6b5da1054"),
            ("ESP_WRITE_DELAY", "10ms"),
        ])
        .await;
    for email in ["ann@example.com", "bob@example.com", "new@example.com"] {
        let callback = json!({"type": "sync_subscriber",
            "subscriber": {"email": email, "referral_code": "c1", "tot_referrals": 2}});
        assert_eq!(
            app.post_sparkloop(&callback.to_string()).await.status(),
            200
        );
    }
    app.sparkloop
        .register(
            Mock::given(method("POST"))
                .and(path("/mc/3.0/lists/a6b5da1054"))
                .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                    "new_members": [], "updated_members": [{"email_address": "ann@example.com"},
                        {"email_address": "bob@example.com"}],
                    "errors": [{"email_address": "new@example.com",
                        "error": "new@example.com is not subscribed: a status is required",
                        "error_code": "ERROR_GENERIC"}],
                    "total_created": 0, "total_updated": 2, "error_count": 1}))),
        )
        .await;
    // All three are due before the bridge that can send them starts.
    app.wait_until_esp_due(3).await;
    let alone = "/mc/3.0/lists/a6b5da1054/members/b681d72feaf8bf6a93d9a8ab86679ec3";
    app.sparkloop
        .register(
            Mock::given(method("PATCH"))
                .and(path(alone))
                .respond_with(ResponseTemplate::new(200).set_body_json(json!({}))),
        )
        .await;
    let app = app
        .restart_with(&[
            ("ESP_ADAPTER", "mailchimp"),
            ("ESP_API_URL", "{stand-in}/mc/3.0"),
            ("ESP_API_KEY", "0123abcd-us6"),
            ("ESP_LIST_ID", "a6b5da1054"),
            ("ESP_WRITE_DELAY", "10ms"),
        ])
        .await;
    let db = &app.db;
    let start = std::time::Instant::now();
    while db.count("SELECT COUNT(*) AS n FROM jobs WHERE destination = 'esp' AND status = 'done'")
        < 3
    {
        if start.elapsed() > Duration::from_secs(15) {
            let seen: Vec<String> = app
                .sparkloop
                .received_requests()
                .await
                .unwrap()
                .iter()
                .map(|r| format!("{} {}", r.method, r.url.path()))
                .collect();
            panic!("the writes did not all end: {seen:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let batches = app.requests_to("/mc/3.0/lists/a6b5da1054").await;
    assert_eq!(batches.len(), 1, "one call for the three");
    let body: Value = serde_json::from_slice(&batches[0].body).unwrap();
    assert_eq!(body["update_existing"], true);
    let members = body["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    assert!(members.contains(&json!({"email_address": "ann@example.com",
        "merge_fields": {"RH_CODE": "c1", "RH_TOTREF": "2"}})));
    // Only the refused contact was sent again, alone.
    assert_eq!(app.requests_to(alone).await.len(), 1);
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM jobs WHERE destination = 'esp' AND attempts = 2"),
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn merge_fields_named_by_esp_field_in_are_the_signups_attribution() {
    let app = TestApp::spawn_with(
        &[
            ("ESP_ADAPTER", "mailchimp"),
            ("ESP_API_URL", "{stand-in}/mc/3.0"),
            ("ESP_API_KEY", "0123abcd-us6"),
            ("ESP_LIST_ID", "a6b5da1054"),
            ("ESP_FIELD_IN_UTM_SOURCE", "UTMSRC"),
            ("ESP_FIELD_IN_REFERRER_CODE", "REFCODE"),
            ("SPARKLOOP_INCOMING_WEBHOOK_URL", ""),
            ("SPARKLOOP_API_URL", "{stand-in}"),
            ("SPARKLOOP_API_KEY", "sl-key"),
            ("SPARKLOOP_RATE_LIMIT", "100/1s"),
        ],
        Some(
            Mock::given(method("POST"))
                .and(path("/v2/subscribers"))
                .respond_with(ResponseTemplate::new(200).set_body_json(json!({}))),
        ),
    )
    .await;
    let body =
        format!("{SUBSCRIBE}&data%5Bmerges%5D%5BUTMSRC%5D=podcast&data%5Bmerges%5D%5BREFCODE%5D=");
    let query = format!("?token={ESP_SECRET}");
    assert_eq!(post_form(&app, &query, &body).await.status(), 200);
    app.drain().await;
    let posted: Vec<Value> = app
        .requests_to("/v2/subscribers")
        .await
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(posted.len(), 1);
    assert_eq!(posted[0]["utm_source"], "podcast");
    assert!(
        posted[0].get("referrer_code").is_none(),
        "an empty field is not sent: {}",
        posted[0]
    );
    app.stop().await;
}
