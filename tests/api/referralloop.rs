//! ReferralLoop's webhooks (`POST /webhooks/referralloop`): signed, the signup's code and place
//! in the waitlist written to the ESP, moves and removals too.

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::helpers::TestApp;

/// `REFERRALLOOP_WEBHOOK_SECRET` of these tests.
pub(crate) const SECRET: &str = "rl-secret";

/// A webhook of ReferralLoop's documentation (`tests/fixtures/referralloop`), as sent.
fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/referralloop/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(path).unwrap()
}

/// `X-Webhook-Signature` of `body` under [`SECRET`].
pub(crate) fn signature(body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

async fn post(app: &TestApp, body: &str, signature: Option<String>) -> reqwest::StatusCode {
    let mut request = app
        .client
        .post(format!("{}/webhooks/referralloop", app.address))
        .body(body.to_string());
    if let Some(signature) = signature {
        request = request.header("X-Webhook-Signature", signature);
    }
    request.send().await.unwrap().status()
}

#[tokio::test]
async fn signed_signups_reach_the_esp_with_their_place_in_the_waitlist() {
    let app = TestApp::spawn_with(
        &[
            ("REFERRALLOOP_WEBHOOK_SECRET", SECRET),
            ("ESP_FIELD_POSITION", "RL_POSITION"),
            ("ESP_FIELD_REMOVED", "RL_REMOVED"),
            ("ESP_FIELD_COUPON", "off"),
            ("ESP_FIELD_LASTREWARD", "off"),
            ("ESP_WRITE_DELAY", "10ms"),
        ],
        None,
    )
    .await;
    let created = fixture("signup_created");
    assert_eq!(post(&app, &created, None).await, 401);
    assert_eq!(post(&app, &created, Some(signature("{}"))).await, 401);
    assert_eq!(post(&app, &created, Some(signature(&created))).await, 200);
    let fields = |position: i64, removed: &str| {
        json!({"RH_SUBID": "789e0123-e89b-12d3-a456-426614174000", "RH_CODE": "ABC123",
            "RH_REFLINK": null, "RH_ISREF": null, "RH_TOTREF": null,
            "RL_POSITION": position, "RL_REMOVED": removed})
    };
    app.wait_for_fields("user@example.com", &fields(1, "NO"))
        .await;

    let moved = fixture("signup_position_changed");
    assert_eq!(post(&app, &moved, Some(signature(&moved))).await, 200);
    app.wait_for_fields("user@example.com", &fields(5, "NO"))
        .await;

    let deleted = fixture("signup_deleted");
    assert_eq!(post(&app, &deleted, Some(signature(&deleted))).await, 200);
    app.wait_for_fields("user@example.com", &fields(5, "YES"))
        .await;
    assert_eq!(
        app.db.count(
            "SELECT COUNT(*) AS n FROM inbound_events WHERE source = 'referralloop' \
             AND outcome = 'processed'"
        ),
        3
    );
    app.stop().await;

    // Without a secret, every webhook is refused.
    let app = TestApp::spawn().await;
    assert_eq!(post(&app, &created, Some(signature(&created))).await, 401);
    app.stop().await;
}
