//! `ESP_ADAPTER=brevo` answers: a 429 waits for the reset Brevo announces, a 404 (no contact yet)
//! is retried, a 400 is dead with Brevo's message kept.

use std::time::Duration;

use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{eventually, TestApp};

const CONTACT: &str = "/brevo/v3/contacts/ann%40example.com";

#[tokio::test]
async fn a_429_waits_for_brevos_reset_a_404_is_retried_and_a_400_kept_dead() {
    let answers = [
        ResponseTemplate::new(429)
            .insert_header("x-sib-ratelimit-limit", "10")
            .insert_header("x-sib-ratelimit-remaining", "0")
            .insert_header("x-sib-ratelimit-reset", "1")
            .set_body_json(json!({"code": "too_many_requests", "message": "slow down"})),
        ResponseTemplate::new(404).set_body_json(
            json!({"code": "document_not_found", "message": "Contact does not exist"}),
        ),
        ResponseTemplate::new(400).set_body_json(
            json!({"code": "invalid_parameter", "message": "attribute RH_TOTREF is not a number"}),
        ),
    ];
    let first = Mock::given(method("PUT"))
        .and(path(CONTACT))
        .respond_with(answers[0].clone())
        .up_to_n_times(1)
        .with_priority(1);
    let app = TestApp::spawn_with(
        &[
            ("ESP_ADAPTER", "brevo"),
            ("ESP_API_URL", "{stand-in}/brevo/v3"),
            ("ESP_API_KEY", "xkeysib-test"),
            ("ESP_WRITE_DELAY", "10ms"),
            ("RETRY_MAX_DELAY", "5s"),
        ],
        Some(first),
    )
    .await;
    app.sparkloop
        .register(
            Mock::given(method("PUT"))
                .and(path(CONTACT))
                .respond_with(answers[1].clone())
                .up_to_n_times(1)
                .with_priority(2),
        )
        .await;
    app.sparkloop
        .register(
            Mock::given(method("PUT"))
                .and(path(CONTACT))
                .respond_with(answers[2].clone())
                .with_priority(3),
        )
        .await;
    let callback = json!({"type": "sync_subscriber",
        "subscriber": {"email": "ann@example.com", "referral_code": "c1", "tot_referrals": 2}});
    assert_eq!(
        app.post_sparkloop(&callback.to_string()).await.status(),
        200
    );
    let db = &app.db;
    eventually("the write to go dead", Duration::from_secs(20), || {
        db.count(
            "SELECT COUNT(*) AS n FROM jobs WHERE destination = 'esp' AND status = 'dead' \
             AND attempts = 3",
        ) == 1
    })
    .await;
    let started = |code: i64| {
        db.count(&format!(
            "SELECT MIN(started_at) AS n FROM attempts WHERE status_code = {code}"
        ))
    };
    assert!(
        started(404) - started(429) >= 1000,
        "the 429's reset was waited for"
    );
    assert_eq!(
        db.count(
            "SELECT COUNT(*) AS n FROM attempts WHERE status_code = 400 \
             AND response_body LIKE '%RH_TOTREF is not a number%'"
        ),
        1
    );
    app.stop().await;
}
