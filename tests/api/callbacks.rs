//! SparkLoop callbacks become ESP custom-field writes: every documented payload, credentials,
//! duplicates, coalescing, the ESP's 404 and 429, field names, and the signature.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{TestApp, ESP_FIELDS_PATH, SPARKLOOP_TOKEN};

/// A payload from `tests/fixtures/sparkloop/`.
fn fixture(name: &str) -> String {
    let file = format!(
        "{}/tests/fixtures/sparkloop/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// Every field, the optional ones switched on.
const ALL_FIELDS: &[(&str, &str)] = &[
    ("ESP_FIELD_NEXTREWARD", "RH_NEXTREWARD"),
    ("ESP_FIELD_LASTREF", "RH_LASTREF"),
    ("ESP_FIELD_PARTNER_STATUS", "RH_PARTNER"),
];

async fn post_ok(app: &TestApp, body: &str) {
    let response = app.post_sparkloop(body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        "",
        "SparkLoop asks for an empty body"
    );
}

#[tokio::test]
async fn every_documented_callback_writes_the_right_fields_for_the_right_people() {
    let app = TestApp::spawn_with(ALL_FIELDS, None).await;
    // The ESP told the bridge of John first, with its own numeric id.
    let subscribe = json!({"type": "subscribe",
        "subscriber": {"email": "john.doe@email.com", "id": 123}});
    assert_eq!(app.post_esp(&subscribe.to_string()).await.status(), 200);

    post_ok(&app, &fixture("sync_subscriber")).await;
    let write = app
        .wait_for_fields(
            "john.doe@email.com",
            &json!({"RH_SUBID": "sub_hjdgc74u", "RH_CODE": "ada90f39",
                "RH_REFLINK": "https://mywebsite.com?rh_ref=ada90f39", "RH_ISREF": "YES",
                "RH_TOTREF": 0, "RH_COUPON": null, "RH_LASTREWARD": "reward_38sf38hd",
                "RH_NEXTREWARD": 2, "RH_LASTREF": null, "RH_PARTNER": null}),
        )
        .await;
    assert_eq!(write["id"], json!(123), "the ESP's id, in the type it sent");

    // new_referral: the new subscriber and the referrer, each with their own state.
    post_ok(&app, &fixture("new_referral")).await;
    app.wait_for_fields(
        "john.smith@email.com",
        &json!({"RH_SUBID": "sub_93ehus8h", "RH_CODE": "f9464199",
            "RH_REFLINK": "https://mywebsite.com?rh_ref=f9464199", "RH_ISREF": "NO",
            "RH_TOTREF": 4, "RH_COUPON": null, "RH_LASTREWARD": null, "RH_NEXTREWARD": 1,
            "RH_LASTREF": "2019-07-29T11:42:30Z", "RH_PARTNER": null}),
    )
    .await;
    app.wait_for_fields(
        "john.doe@email.com",
        &json!({"RH_SUBID": "sub_hjdgc74u", "RH_CODE": "ada90f39",
            "RH_REFLINK": "https://mywebsite.com?rh_ref=ada90f39", "RH_ISREF": "YES",
            "RH_TOTREF": 0, "RH_COUPON": null, "RH_LASTREWARD": "reward_38sf38hd",
            "RH_NEXTREWARD": 2, "RH_LASTREF": null, "RH_PARTNER": null}),
    )
    .await;

    // reward_unlocked: the coupon and the reward won.
    post_ok(&app, &fixture("reward_unlocked")).await;
    let unlocked = json!({"RH_SUBID": "sub_hjdgc74u", "RH_CODE": "f9464199",
        "RH_REFLINK": "https://mywebsite.com?rh_ref=f9464199", "RH_ISREF": "YES",
        "RH_TOTREF": 4, "RH_COUPON": "9wusha0", "RH_LASTREWARD": "reward_cdebf4f013",
        "RH_NEXTREWARD": 2, "RH_LASTREF": null, "RH_PARTNER": null});
    app.wait_for_fields("john.doe@email.com", &unlocked).await;

    // reward_redeemed: recorded with the shipping details, which never reach the ESP; the
    // fields it brings are those already written, so no write is sent (DESIGN 3.7).
    let writes_before = app.esp_writes().await.len();
    post_ok(&app, &fixture("reward_redeemed")).await;
    app.drain().await;
    assert_eq!(
        app.esp_writes().await.len(),
        writes_before,
        "the same fields are not written twice"
    );
    assert_eq!(
        app.db.count(
            "SELECT COUNT(*) AS n FROM jobs WHERE destination = 'esp' AND status = 'skipped'"
        ),
        // This one, and new_referral's for john.doe, whose fields sync_subscriber had set.
        2
    );
    let last = app.esp_writes().await.last().cloned().unwrap();
    assert_eq!(last["fields"], unlocked);
    assert!(!app
        .esp_writes()
        .await
        .iter()
        .any(|w| w.to_string().contains("Pearl Drive")));
    assert_eq!(
        app.db.count(
            "SELECT COUNT(*) AS n FROM redemptions WHERE variant_name = 'T-Shirt XXL' \
             AND variant_sku = 't_shirt_xxl' AND reward_id = 'reward_cdebf4f013' \
             AND coupon = '9wusha0' AND shipping_details LIKE '%7838 Pearl Drive%'"
        ),
        1
    );

    // The partner events: the partner referral's status.
    for (event, status) in [
        ("new_partner_pending_referral", "pending"),
        ("new_partner_referral", "verified"),
    ] {
        post_ok(&app, &fixture(event)).await;
        app.wait_for_fields(
            "test12345@test.com",
            &json!({"RH_SUBID": "sub_042448acb02a", "RH_CODE": "6363a0b5",
                "RH_REFLINK": null, "RH_ISREF": "YES", "RH_TOTREF": 0, "RH_COUPON": null,
                "RH_LASTREWARD": null, "RH_NEXTREWARD": null, "RH_LASTREF": null,
                "RH_PARTNER": status}),
        )
        .await;
    }
    app.stop().await;
}

#[tokio::test]
async fn missing_wrong_and_unconfigured_tokens_write_nothing() {
    let app = TestApp::spawn().await;
    let url = format!("{}/webhooks/sparkloop", app.address);
    let body = fixture("sync_subscriber");
    for token in [None, Some("wrong"), Some("")] {
        let mut request = app.client.post(&url).body(body.clone());
        if let Some(token) = token {
            request = request.header("SparkLoop-Token", token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "token {token:?}");
        let error: Value = response.json().await.unwrap();
        assert!(!error["error"].as_str().unwrap().contains(SPARKLOOP_TOKEN));
    }
    app.stop().await;

    // No token configured: every callback is refused.
    let app = TestApp::spawn_with(&[("SPARKLOOP_WEBHOOK_TOKEN", "")], None).await;
    let response = app.post_sparkloop(&body).await;
    assert_eq!(response.status(), 401);
    let error: Value = response.json().await.unwrap();
    assert!(error["error"]
        .as_str()
        .unwrap()
        .contains("SPARKLOOP_WEBHOOK_TOKEN"));
    app.drain().await;
    for table in ["inbound_events", "subscribers", "jobs"] {
        assert_eq!(
            app.db.count(&format!("SELECT COUNT(*) AS n FROM {table}")),
            0,
            "{table}"
        );
    }
    assert!(app.esp_writes().await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn unknown_types_and_duplicates_are_acknowledged_and_acted_on_once() {
    let app = TestApp::spawn().await;
    post_ok(
        &app,
        r#"{"type": "new_offer_lead", "subscriber": {"email": "lead@example.com"}}"#,
    )
    .await;
    post_ok(&app, r#"{"type": "partner_referral_rejected"}"#).await;
    // A body that is not a callback at all is refused with a reason.
    let response = app.post_sparkloop(r#"{"subscriber": {}}"#).await;
    assert_eq!(response.status(), 400);

    let body = fixture("sync_subscriber");
    post_ok(&app, &body).await;
    post_ok(&app, &body).await;
    app.drain().await;
    assert_eq!(app.esp_writes().await.len(), 1);
    let outcomes = |outcome: &str| {
        app.db.count(&format!(
            "SELECT COUNT(*) AS n FROM inbound_events WHERE source = 'sparkloop' \
             AND outcome = '{outcome}'"
        ))
    };
    assert_eq!(
        (
            outcomes("ignored"),
            outcomes("processed"),
            outcomes("duplicate")
        ),
        (2, 1, 1)
    );
    assert_eq!(
        app.db
            .count("SELECT COUNT(*) AS n FROM subscribers WHERE email = 'lead@example.com'"),
        0
    );
    app.stop().await;
}

#[tokio::test]
async fn a_burst_for_ten_subscribers_is_coalesced_and_ends_in_the_last_state() {
    // A slow ESP, so that callbacks keep arriving while writes are in flight.
    let slow = Mock::given(method("POST"))
        .and(path(ESP_FIELDS_PATH))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(30)));
    // A write waits 3 s for further changes: a burst this size spans well under that, even on
    // a machine busy with other work, so each person's callbacks fit in one or two writes.
    let app = TestApp::spawn_with(&[("ESP_WRITE_DELAY", "3s")], Some(slow)).await;
    let senders = (0..10).map(|n| {
        let app = &app;
        async move {
            for count in 1..=20 {
                let body = json!({"type": "sync_subscriber", "subscriber": {
                    "id": format!("sub_{n}"), "email": format!("burst{n}@example.com"),
                    "referral_code": format!("code{n}"), "tot_referrals": count}});
                post_ok(app, &body.to_string()).await;
            }
        }
    });
    futures_util::future::join_all(senders).await;
    app.wait_until_esp_idle().await;
    let writes = app.esp_writes().await;
    assert!(
        writes.len() <= 20,
        "200 callbacks for 10 people cost {} ESP calls",
        writes.len()
    );
    for n in 0..10 {
        let email = format!("burst{n}@example.com");
        let last = writes.iter().rev().find(|w| w["email"] == email).unwrap();
        assert_eq!(last["fields"]["RH_TOTREF"], 20, "{email}: {last}");
        assert_eq!(last["fields"]["RH_CODE"], format!("code{n}"));
    }
    app.stop().await;
}

#[tokio::test]
async fn an_esp_404_is_retried_until_the_contact_exists() {
    let not_yet = Mock::given(method("POST"))
        .and(path(ESP_FIELDS_PATH))
        .respond_with(ResponseTemplate::new(404).set_body_string("contact not found"))
        .up_to_n_times(2)
        .with_priority(1);
    let app = TestApp::spawn_with(&[], Some(not_yet)).await;
    post_ok(&app, &fixture("sync_subscriber")).await;
    app.wait_until_esp_idle().await;
    assert_eq!(app.esp_writes().await.len(), 3);
    assert_eq!(
        app.db.count(
            "SELECT COUNT(*) AS n FROM jobs WHERE destination = 'esp' AND status = 'done' \
             AND attempts = 3"
        ),
        1
    );
    assert_eq!(
        app.db.count(
            "SELECT COUNT(*) AS n FROM attempts WHERE status_code = 404 \
             AND response_body = 'contact not found'"
        ),
        2
    );
    app.stop().await;
}

#[tokio::test]
async fn an_esp_429_is_retried_after_the_delay_it_asks_for() {
    let busy = Mock::given(method("POST"))
        .and(path(ESP_FIELDS_PATH))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
        .up_to_n_times(1)
        .with_priority(1);
    let app = TestApp::spawn_with(&[("RETRY_MAX_DELAY", "10s")], Some(busy)).await;
    post_ok(&app, &fixture("sync_subscriber")).await;
    app.wait_until_esp_idle().await;
    assert_eq!(app.esp_writes().await.len(), 2);
    // The back-off alone would have waited 50-100 ms.
    let gap = app
        .db
        .count("SELECT MAX(started_at) - MIN(started_at) AS n FROM attempts");
    assert!(gap >= 1000, "retried after {gap} ms");
    app.stop().await;
}

#[tokio::test]
async fn fields_can_be_renamed_switched_off_and_switched_on() {
    let app = TestApp::spawn_with(
        &[
            ("ESP_FIELD_CODE", "REF_CODE"),
            ("ESP_FIELD_ISREF", "off"),
            ("ESP_FIELD_COUPON", "OFF"),
            ("ESP_FIELD_NEXTREWARD", "NEXT_REWARD"),
        ],
        None,
    )
    .await;
    post_ok(&app, &fixture("sync_subscriber")).await;
    app.wait_for_fields(
        "john.doe@email.com",
        &json!({"RH_SUBID": "sub_hjdgc74u", "REF_CODE": "ada90f39",
            "RH_REFLINK": "https://mywebsite.com?rh_ref=ada90f39", "RH_TOTREF": 0,
            "RH_LASTREWARD": "reward_38sf38hd", "NEXT_REWARD": 2}),
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn field_writes_carry_the_api_key_and_a_verifiable_standard_webhooks_signature() {
    // The Standard Webhooks specification's example secret.
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let app = TestApp::spawn_with(
        &[("ESP_SIGNING_SECRET", secret), ("ESP_API_KEY", "esp-key")],
        None,
    )
    .await;
    post_ok(&app, &fixture("sync_subscriber")).await;
    app.wait_until_esp_idle().await;
    let requests = app.requests_to(ESP_FIELDS_PATH).await;
    let request = requests.first().expect("one field write");
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(header("authorization"), "Bearer esp-key");
    assert_eq!(header("content-type"), "application/json");
    let (id, timestamp) = (header("webhook-id"), header("webhook-timestamp"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - timestamp.parse::<i64>().unwrap()).abs() < 60);
    // Verified as a receiver would, from the specification: the key is the base64 after
    // `whsec_`, the signed content `id.timestamp.body`.
    let key = STANDARD.decode(&secret["whsec_".len()..]).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(&request.body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    assert!(
        header("webhook-signature")
            .split(' ')
            .any(|signature| signature == expected),
        "signature {} is not {expected}",
        header("webhook-signature")
    );
    app.stop().await;
}

#[tokio::test]
async fn field_writes_are_paced_and_a_long_wait_never_sends_a_job_twice() {
    // One write per 2 s, and claims shorter than the wait of the third job in line.
    let app = TestApp::spawn_with(
        &[
            ("ESP_RATE_LIMIT", "1/2s"),
            ("BRIDGE_LEASE", "3s"),
            ("BRIDGE_REQUEST_TIMEOUT", "1s"),
            ("ESP_WRITE_DELAY", "10ms"),
        ],
        None,
    )
    .await;
    for n in 0..3 {
        let body = json!({"type": "sync_subscriber",
            "subscriber": {"email": format!("paced{n}@example.com"), "tot_referrals": n}});
        post_ok(&app, &body.to_string()).await;
    }
    app.drain().await;
    let writes = app.esp_writes().await;
    let mut emails: Vec<&str> = writes
        .iter()
        .map(|w| w["email"].as_str().unwrap())
        .collect();
    emails.sort();
    assert_eq!(
        emails,
        [
            "paced0@example.com",
            "paced1@example.com",
            "paced2@example.com"
        ]
    );
    let spread = app
        .db
        .count("SELECT MAX(started_at) - MIN(started_at) AS n FROM attempts");
    assert!(spread >= 3500, "three writes at 1 per 2 s took {spread} ms");
    app.stop().await;
}

#[tokio::test]
async fn a_rejected_referral_is_written_as_rejected() {
    let app = TestApp::spawn().await;
    let rejected = json!({"type": "new_partner_referral", "subscriber": {"email": "fraud@example.com",
        "referral_status": "rejected", "referred": true}});
    post_ok(&app, &rejected.to_string()).await;
    let write = app.wait_for_write("fraud@example.com").await;
    assert_eq!(write["fields"]["RH_ISREF"], "REJECTED", "{write}");
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_link_is_made_from_the_code_with_the_template() {
    let app = TestApp::spawn_with(
        &[(
            "SPARKLOOP_REFLINK_TEMPLATE",
            "https://news.example.com/?rh_ref={code}",
        )],
        None,
    )
    .await;
    let sync = json!({"type": "sync_subscriber", "subscriber": {"email": "coded@example.com",
        "referral_code": "c 1/x"}});
    post_ok(&app, &sync.to_string()).await;
    let linked = json!({"type": "sync_subscriber", "subscriber": {"email": "linked@example.com",
        "referral_code": "c2", "referral_link": "https://sparkloop.example/c2"}});
    post_ok(&app, &linked.to_string()).await;
    for (email, link) in [
        (
            "coded@example.com",
            "https://news.example.com/?rh_ref=c%201%2Fx",
        ),
        ("linked@example.com", "https://sparkloop.example/c2"),
    ] {
        let write = app.wait_for_write(email).await;
        assert_eq!(write["fields"]["RH_REFLINK"], link, "{write}");
    }
    app.stop().await;
}
