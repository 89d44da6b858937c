//! `ESP_ADAPTER=activecampaign` end to end: the form-encoded webhook (with `?token=`) reaches
//! SparkLoop; a SparkLoop callback becomes `POST /contact/sync` with `fieldValues` by the field
//! ids read once from `GET /fields`; a 429's `Retry-After` holds the writes back.

use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{eventually, TestApp, ESP_SECRET};

#[tokio::test]
async fn activecampaign_contacts_reach_sparkloop_and_fields_come_back_by_id() {
    let app = TestApp::spawn_with(
        &[
            ("ESP_ADAPTER", "activecampaign"),
            ("ESP_API_URL", "{stand-in}/ac/api/3"),
            ("ESP_API_KEY", "ac-token"),
            ("ESP_WRITE_DELAY", "10ms"),
        ],
        Some(
            Mock::given(method("GET"))
                .and(path("/ac/api/3/fields"))
                .and(header("api-token", "ac-token"))
                .respond_with(ResponseTemplate::new(200).set_body_json(json!({"fields": [
                    {"id": "8", "title": "Referral code", "perstag": "RH_CODE", "type": "text"},
                    {"id": "9", "title": "Referrals", "perstag": "RH_TOTREF", "type": "text"},
                    {"id": "10", "title": "Subscriber", "perstag": "RH_SUBID", "type": "text"}],
                    "meta": {"total": "3"}}))),
        ),
    )
    .await;
    // The first write meets ActiveCampaign's rate limit, the next goes through.
    app.sparkloop
        .register(
            Mock::given(method("POST"))
                .and(path("/ac/api/3/contact/sync"))
                .respond_with(
                    ResponseTemplate::new(429)
                        .insert_header("Retry-After", "1")
                        .set_body_json(json!({"message": "Too many requests"})),
                )
                .up_to_n_times(1)
                .with_priority(1),
        )
        .await;
    app.sparkloop
        .register(
            Mock::given(method("POST"))
                .and(path("/ac/api/3/contact/sync"))
                .respond_with(
                    ResponseTemplate::new(201).set_body_json(json!({"contact": {"id": "10"}})),
                )
                .with_priority(2),
        )
        .await;

    // ActiveCampaign's documented webhook, form-encoded, to `...?token=`.
    let form = "type=subscribe&date_time=2024-01-01T09%3A00%3A00-06%3A00&initiated_from=public\
        &initiated_by=contact&list=1&form%5Bid%5D=3&contact%5Bid%5D=10\
        &contact%5Bemail%5D=jane%40example.com&contact%5Bfirst_name%5D=Jane\
        &contact%5Blast_name%5D=Doe&contact%5Bphone%5D=&contact%5Btags%5D=&contact%5Bip%5D=1.2.3.4\
        &contact%5Bfields%5D%5Breferral_code%5D=ab12cd";
    let post = |token: &str| {
        app.client
            .post(format!("{}/webhooks/esp?token={token}", app.address))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
    };
    assert_eq!(post("wrong").await.unwrap().status(), 401);
    assert_eq!(post(ESP_SECRET).await.unwrap().status(), 200);
    let forwarded = app.wait_for_requests(1).await;
    assert_eq!(
        forwarded[0],
        json!({"type": "subscribe", "subscriber": {"email": "jane@example.com", "id": "10",
            "first_name": "Jane", "name": "Jane Doe", "created_at": 1_704_121_200}})
    );

    let callback = json!({"type": "sync_subscriber", "subscriber": {"id": "sub_1",
        "email": "jane@example.com", "referral_code": "ab12cd", "tot_referrals": 3}});
    assert_eq!(
        app.post_sparkloop(&callback.to_string()).await.status(),
        200
    );
    let db = &app.db;
    eventually("the field write", Duration::from_secs(15), || {
        db.count("SELECT COUNT(*) AS n FROM jobs WHERE destination = 'esp' AND status = 'done'")
            == 1
    })
    .await;
    let requests = app.sparkloop.received_requests().await.unwrap();
    let syncs: Vec<&wiremock::Request> = requests
        .iter()
        .filter(|r| r.url.path() == "/ac/api/3/contact/sync")
        .collect();
    assert_eq!(syncs.len(), 2, "the 429, then the write");
    let body: Value = serde_json::from_slice(&syncs[1].body).unwrap();
    assert_eq!(
        body,
        json!({"contact": {"email": "jane@example.com", "fieldValues": [
            {"field": "10", "value": "sub_1"}, {"field": "8", "value": "ab12cd"},
            {"field": "9", "value": "3"}]}})
    );
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.url.path() == "/ac/api/3/fields")
            .count(),
        1,
        "the field ids are read once"
    );
    let gap = db.count(
        "SELECT MAX(started_at) - MIN(started_at) AS n FROM attempts a JOIN jobs j \
         ON j.id = a.job_id WHERE j.destination = 'esp'",
    );
    assert!(gap >= 950, "Retry-After: 1 waited ({gap} ms)");
    app.stop().await;
}
