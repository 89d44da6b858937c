//! LoyaltySurf's webhooks (`POST /webhooks/loyaltysurf`): signed with a timestamp, every seed
//! event recorded, participants' referral data written to the ESP, a reward written once.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::helpers::TestApp;

const SECRET: &str = "ls-secret";

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/loyaltysurf/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The `LoyaltySurf-Signature` header for `body` sent at `ts` (unix ms).
fn signature(body: &str, ts: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{ts}.{body}").as_bytes());
    format!("ts={ts},v={}", hex::encode(mac.finalize().into_bytes()))
}

async fn post(app: &TestApp, body: &str, signature: Option<String>) -> reqwest::StatusCode {
    let mut request = app
        .client
        .post(format!("{}/webhooks/loyaltysurf", app.address))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(signature) = signature {
        request = request.header("LoyaltySurf-Signature", signature);
    }
    request.send().await.unwrap().status()
}

async fn post_signed(app: &TestApp, body: &Value) -> reqwest::StatusCode {
    let body = body.to_string();
    post(app, &body, Some(signature(&body, now_ms()))).await
}

async fn spawn() -> TestApp {
    TestApp::spawn_with(
        &[
            ("LOYALTYSURF_WEBHOOK_SECRET", SECRET),
            ("ESP_FIELD_RANK", "LS_RANK"),
            ("ESP_FIELD_WINNER", "LS_WINNER"),
            ("ESP_FIELD_FRAUD_RISK", "LS_FRAUD"),
            ("ESP_WRITE_DELAY", "10ms"),
        ],
        None,
    )
    .await
}

fn writes_for(writes: &[Value], email: &str) -> Vec<Value> {
    writes
        .iter()
        .filter(|w| w["email"] == email)
        .map(|w| w["fields"].clone())
        .collect()
}

#[tokio::test]
async fn every_seed_event_is_recorded_and_participants_reach_the_esp() {
    let app = spawn().await;
    let gavin = "gavin.belson@hooli.com";
    let richard = "richard@piedpiper.com";

    assert_eq!(
        post_signed(&app, &fixture("new_participant_added")).await,
        200
    );
    let gavin_fields = |fraud: &str| {
        json!({"RH_SUBID": "p88y0a", "RH_CODE": null, "RH_REFLINK": null, "RH_ISREF": null,
            "RH_TOTREF": 1, "RH_COUPON": null, "RH_LASTREWARD": null,
            "LS_RANK": 762, "LS_WINNER": "NO", "LS_FRAUD": fraud})
    };
    app.wait_for_fields(gavin, &gavin_fields("LOW")).await;

    let mut fraud = fixture("participant_fraud_status_updated");
    fraud["data"]["participant"]["fraudRiskLevel"] = "HIGH".into();
    assert_eq!(post_signed(&app, &fraud).await, 200);
    app.wait_for_fields(gavin, &gavin_fields("HIGH")).await;

    // With manual approval the goal comes twice: pending (recorded only), then approved.
    let mut pending = fixture("participant_reached_a_goal");
    pending["data"]["reward"]["approved"] = false.into();
    pending["data"]["reward"]["approvedAt"] = Value::Null;
    assert_eq!(post_signed(&app, &pending).await, 200);
    let approved = fixture("participant_reached_a_goal");
    assert_eq!(post_signed(&app, &approved).await, 200);
    let richard_fields = |winner: &str| {
        json!({"RH_SUBID": "x9a7uu", "RH_CODE": null, "RH_REFLINK": null, "RH_ISREF": null,
            "RH_TOTREF": 11, "RH_COUPON": "LI_25_GIFT", "RH_LASTREWARD": "xlj123",
            "LS_RANK": 9, "LS_WINNER": winner, "LS_FRAUD": "LOW"})
    };
    app.wait_for_fields(richard, &richard_fields("YES")).await;
    // The same reward again, as a retry with another timestamp (a different body): not acted on.
    let mut again = approved.clone();
    again["createdAt"] = (now_ms()).into();
    assert_eq!(post_signed(&app, &again).await, 200);
    assert_eq!(
        post_signed(&app, &fixture("participant_submitted_reward_form")).await,
        200
    );
    app.wait_until_esp_idle().await;
    assert_eq!(
        writes_for(&app.esp_writes().await, richard).len(),
        1,
        "the reward is written once"
    );

    let ended = fixture("campaign_ended");
    assert_eq!(post_signed(&app, &ended).await, 200);
    app.wait_until_esp_idle().await;
    let outcomes = |outcome: &str| {
        app.db.count(&format!(
            "SELECT COUNT(*) AS n FROM inbound_events WHERE source = 'loyaltysurf' \
             AND outcome = '{outcome}'"
        ))
    };
    // New participant, fraud update, approved reward, campaign end; pending reward and reward
    // form stored without acting; the repeated reward a duplicate.
    assert_eq!(outcomes("processed"), 4);
    assert_eq!(outcomes("ignored"), 2);
    assert_eq!(outcomes("duplicate"), 1);
    assert_eq!(
        app.db.count(
            "SELECT COUNT(*) AS n FROM subscribers WHERE email = 'richard@piedpiper.com' \
             AND winner AND leaderboard_rank = 9"
        ),
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn signatures_are_checked_with_a_tolerance() {
    let app = spawn().await;
    let body = fixture("new_participant_added").to_string();
    let now = now_ms();
    assert_eq!(post(&app, &body, None).await, 401);
    // Tampered body, wrong secret's signature, old and future timestamps.
    let tampered = body.replace("Gavin", "Gavyn");
    assert_eq!(
        post(&app, &tampered, Some(signature(&body, now))).await,
        401
    );
    assert_eq!(
        post(
            &app,
            &body,
            Some(signature(&body, now).replace("v=", "v=00"))
        )
        .await,
        401
    );
    let old = now - 6 * 60 * 1000;
    assert_eq!(post(&app, &body, Some(signature(&body, old))).await, 401);
    assert_eq!(
        post(&app, &body, Some(signature(&body, now + 6 * 60 * 1000))).await,
        401
    );
    assert_eq!(
        app.db.count("SELECT COUNT(*) AS n FROM inbound_events"),
        0,
        "nothing refused is stored"
    );
    assert_eq!(post(&app, &body, Some(signature(&body, now))).await, 200);
    // A longer tolerance lets the same old signature in.
    let app = app
        .restart_with(&[
            ("LOYALTYSURF_WEBHOOK_SECRET", SECRET),
            ("LOYALTYSURF_SIGNATURE_TOLERANCE", "10m"),
        ])
        .await;
    assert_eq!(post(&app, &body, Some(signature(&body, old))).await, 200);
    app.stop().await;

    // Without a secret, every webhook is refused.
    let app = TestApp::spawn().await;
    assert_eq!(post(&app, &body, Some(signature(&body, now))).await, 401);
    app.stop().await;
}

#[tokio::test]
async fn a_campaign_end_with_a_thousand_winners_fits_and_flags_them_all() {
    let app = spawn().await;
    let mut ended = fixture("campaign_ended");
    let template = ended["data"]["winners"][0].clone();
    let winners: Vec<Value> = (0..1000)
        .map(|n| {
            let mut winner = template.clone();
            winner["id"] = format!("w{n:04}").into();
            winner["email"] = format!("winner{n}@example.com").into();
            winner["rank"] = (n + 1).into();
            winner
        })
        .collect();
    ended["data"]["winners"] = winners.into();
    let body = serde_json::to_string_pretty(&ended).unwrap();
    assert!(
        body.len() > 500_000 && body.len() < 2 * 1024 * 1024,
        "{} bytes",
        body.len()
    );
    assert_eq!(
        post(&app, &body, Some(signature(&body, now_ms()))).await,
        200
    );
    assert_eq!(
        app.db
            .count("SELECT COUNT(*) AS n FROM subscribers WHERE winner AND leaderboard_rank > 0"),
        1000
    );
    app.wait_until_esp_idle().await;
    let writes = app.esp_writes().await;
    assert_eq!(writes.len(), 1000);
    let last = writes_for(&writes, "winner999@example.com");
    assert_eq!(last[0]["LS_WINNER"], "YES");
    assert_eq!(last[0]["LS_RANK"], 1000);
    app.stop().await;
}
