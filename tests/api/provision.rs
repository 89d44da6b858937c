//! `referral-bridge esp provision-fields` and `check`'s field report, against a stand-in ESP.

use std::collections::HashMap;

use serde_json::{json, Value};
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{run_command, TestDb};

const FIELDS: &str = "/mc/3.0/lists/a6b5da1054/merge-fields";

async fn mailchimp() -> MockServer {
    let server = MockServer::start().await;
    server
        .register(Mock::given(method("GET")).and(path(FIELDS)).respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"merge_fields": [
                {"tag": "EMAIL", "required": true}, {"tag": "FNAME", "required": false},
                {"tag": "BIRTHDAY", "required": true},
                {"tag": "RH_SUBID", "required": false}, {"tag": "RH_CODE"}]})),
        ))
        .await;
    server
        .register(
            Mock::given(method("POST"))
                .and(path(FIELDS))
                .and(body_partial_json(json!({"tag": "RH_COUPON"})))
                .respond_with(ResponseTemplate::new(400).set_body_json(json!({
                    "title": "Invalid Resource", "status": 400,
                    "detail": "This account has reached its merge field limit."})))
                .with_priority(1),
        )
        .await;
    server
        .register(
            Mock::given(method("POST"))
                .and(path(FIELDS))
                .respond_with(ResponseTemplate::new(200).set_body_json(json!({"merge_id": 9}))),
        )
        .await;
    server
}

fn vars(db: &TestDb, server: &MockServer) -> HashMap<String, String> {
    [
        ("DATABASE_URL", db.url.clone()),
        ("ESP_ADAPTER", "mailchimp".into()),
        ("ESP_API_URL", format!("{}/mc/3.0", server.uri())),
        ("ESP_API_KEY", "0123abcd-us6".into()),
        ("ESP_LIST_ID", "a6b5da1054".into()),
        ("RUST_LOG", "warn".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

#[tokio::test]
async fn missing_fields_are_created_and_reported() {
    let (db, server) = (TestDb::new(), mailchimp().await);
    let vars = vars(&db, &server);
    let (ok, stdout, stderr) =
        tokio::task::spawn_blocking(move || run_command(&["esp", "provision-fields"], &vars))
            .await
            .unwrap();
    assert!(
        !ok,
        "a field that could not be created fails the command: {stdout}{stderr}"
    );
    for line in [
        "RH_SUBID             already there",
        "RH_CODE              already there",
        "RH_REFLINK           created",
        "RH_TOTREF            created",
        "RH_LASTREW           created",
        "RH_COUPON            FAILED: HTTP 400: This account has reached its merge field limit.",
        "warning: the ESP requires `BIRTHDAY` on every contact",
    ] {
        assert!(stdout.contains(line), "{line} in {stdout}");
    }
    let created: Vec<Value> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "POST")
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert!(created.contains(
        &json!({"tag": "RH_TOTREF", "name": "RH_TOTREF", "type": "number",
        "required": false, "public": false})
    ));
    assert!(
        created.contains(&json!({"tag": "RH_LASTREW", "name": "RH_LASTREWARD",
        "type": "text", "required": false, "public": false}))
    );
}

#[tokio::test]
async fn check_names_the_missing_fields() {
    let (db, server) = (TestDb::new(), mailchimp().await);
    let vars = vars(&db, &server);
    let (ok, stdout, _) = tokio::task::spawn_blocking(move || run_command(&["check"], &vars))
        .await
        .unwrap();
    assert!(!ok);
    assert!(
        stdout.contains(
            "fields missing in the ESP: RH_REFLINK, RH_ISREF, RH_TOTREF, RH_COUPON, RH_LASTREW \
             (referral-bridge esp provision-fields creates them)"
        ),
        "{stdout}"
    );
    // check creates nothing.
    let posts = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "POST")
        .count();
    assert_eq!(posts, 0);
}

/// Runs `esp provision-fields` for `adapter` with the ESP's variables `extra`.
async fn provision(adapter: &str, extra: &[(&str, String)]) -> (bool, String, String) {
    let db = TestDb::new();
    let mut vars: HashMap<String, String> = [
        ("DATABASE_URL", db.url.clone()),
        ("ESP_ADAPTER", adapter.to_string()),
        ("RUST_LOG", "warn".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in extra {
        vars.insert(k.to_string(), v.clone());
    }
    tokio::task::spawn_blocking(move || run_command(&["esp", "provision-fields"], &vars))
        .await
        .unwrap()
}

#[tokio::test]
async fn beehiiv_and_activecampaign_fields_are_created_where_missing() {
    let server = MockServer::start().await;
    let beehiiv = "/bh/v2/publications/pub_1/custom_fields";
    server
        .register(Mock::given(method("GET")).and(path(beehiiv)).respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"data": [
                {"id": "f1", "kind": "string", "display": "RH_CODE"},
                {"id": "f2", "kind": "string", "display": "First Name"}]})),
        ))
        .await;
    server
        .register(
            Mock::given(method("POST"))
                .and(path(beehiiv))
                .respond_with(ResponseTemplate::new(201).set_body_json(json!({"data": {}}))),
        )
        .await;
    let (ok, stdout, stderr) = provision(
        "beehiiv",
        &[
            ("ESP_API_URL", format!("{}/bh/v2", server.uri())),
            ("ESP_API_KEY", "bh-key".into()),
            ("ESP_LIST_ID", "pub_1".into()),
        ],
    )
    .await;
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("RH_CODE") && stdout.contains("already there"),
        "{stdout}"
    );
    let created: Vec<Value> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "POST")
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert!(created.contains(&json!({"kind": "integer", "display": "RH_TOTREF"})));
    assert!(created.contains(&json!({"kind": "string", "display": "RH_REFLINK"})));
    assert!(!created.iter().any(|c| c["display"] == "RH_CODE"));

    let server = MockServer::start().await;
    server
        .register(
            Mock::given(method("GET"))
                .and(path("/ac/api/3/fields"))
                .respond_with(ResponseTemplate::new(200).set_body_json(json!({"fields": [
                {"id": "8", "title": "Referral code", "perstag": "RH_CODE"}]}))),
        )
        .await;
    server
        .register(
            Mock::given(method("POST"))
                .and(path("/ac/api/3/fields"))
                .respond_with(
                    ResponseTemplate::new(201).set_body_json(json!({"field": {"id": "9"}})),
                ),
        )
        .await;
    let (ok, stdout, stderr) = provision(
        "activecampaign",
        &[
            ("ESP_API_URL", format!("{}/ac/api/3", server.uri())),
            ("ESP_API_KEY", "ac-token".into()),
        ],
    )
    .await;
    assert!(ok, "{stdout}{stderr}");
    let created: Vec<Value> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "POST")
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert!(
        created.contains(&json!({"field": {"type": "text", "title": "RH_TOTREF",
        "perstag": "RH_TOTREF", "visible": 1}}))
    );
    assert_eq!(
        created.len(),
        6,
        "every configured field but RH_CODE: {created:?}"
    );

    // Ghost has nowhere to create fields, and says so.
    let (ok, stdout, _) = provision(
        "ghost",
        &[
            ("ESP_API_URL", server.uri()),
            (
                "ESP_API_KEY",
                "6489ab5c7f8d2e0001a1b2c3:0123456789abcdef0123456789abcdef".into(),
            ),
        ],
    )
    .await;
    assert!(ok);
    assert!(stdout.contains("no field definitions"), "{stdout}");
}
