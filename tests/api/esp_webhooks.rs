//! `POST /webhooks/esp` with the custom adapter: what is accepted, what is refused, what is sent.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{subscribe, TestApp, ESP_SECRET};

#[tokio::test]
async fn every_event_shape_is_forwarded_exactly() {
    let app = TestApp::spawn().await;
    // The seed's three shapes, from three different subscribers so that order does not matter.
    let events = [
        (
            json!({"type": "subscribe", "subscriber": {"email": "John.Doe@Email.com ", "id": 123,
                "first_name": "John", "name": "John Doe", "created_at": 1564400550}}),
            json!({"type": "subscribe", "subscriber": {"email": "john.doe@email.com", "id": 123,
                "first_name": "John", "name": "John Doe", "created_at": 1564400550}}),
        ),
        (
            json!({"type": "subscribe", "subscriber": {"email": "jane@email.com", "id": "abc-9"}}),
            json!({"type": "subscribe", "subscriber": {"email": "jane@email.com", "id": "abc-9"}}),
        ),
        (
            json!({"type": "update", "subscriber": {"first_name": "John", "name": "John Doe",
                "email": "john.new@email.com", "previous_email": "john.doe.previous@email.com",
                "updated_at": 1564400550}}),
            json!({"type": "update", "subscriber": {"first_name": "John", "name": "John Doe",
                "email": "john.new@email.com", "previous_email": "john.doe.previous@email.com",
                "updated_at": 1564400550}}),
        ),
        (
            json!({"type": "unsubscribe", "subscriber": {"email": "gone@email.com", "name": "x"}}),
            json!({"type": "unsubscribe", "subscriber": {"email": "gone@email.com"}}),
        ),
    ];
    for (sent, _) in &events {
        let response = app.post_esp(&sent.to_string()).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.json::<serde_json::Value>().await.unwrap(),
            json!({"status": "stored"})
        );
    }
    let received = app.wait_for_requests(events.len()).await;
    for (_, expected) in &events {
        assert!(
            received.contains(expected),
            "{expected} not in {received:?}"
        );
    }
    assert_eq!(received.len(), events.len());
    let requests = app.sparkloop.received_requests().await.unwrap();
    assert!(requests
        .iter()
        .all(|r| r.headers.get("content-type").unwrap() == "application/json"));
    app.stop().await;
}

#[tokio::test]
async fn an_email_change_keeps_the_subscriber() {
    let app = TestApp::spawn().await;
    app.post_esp(
        &json!({"type": "subscribe", "subscriber": {"email": "old@x.com", "id": 7}}).to_string(),
    )
    .await;
    app.post_esp(
        &json!({"type": "update", "subscriber": {"email": "new@x.com", "previous_email": "old@x.com"}})
            .to_string(),
    )
    .await;
    app.wait_for_requests(2).await;
    assert_eq!(app.db.count("SELECT COUNT(*) AS n FROM subscribers"), 1);
    assert_eq!(
        app.db.count(
            "SELECT COUNT(*) AS n FROM subscribers WHERE email = 'new@x.com' AND esp_id = '7'"
        ),
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn a_profile_update_that_only_echoes_the_bridges_fields_is_not_forwarded() {
    let app = TestApp::spawn().await;
    let person = json!({"email": "echo@x.com", "id": 9, "first_name": "Ann", "name": "Ann Lee"});
    app.post_esp(&json!({"type": "subscribe", "subscriber": person}).to_string())
        .await;
    // What an ESP sends after the bridge wrote its fields: the same person, nothing new.
    let echo = json!({"type": "update", "subscriber": person, "updated_at": 1564400999});
    assert_eq!(app.post_esp(&echo.to_string()).await.status(), 200);
    // A real change of name is news.
    let renamed = json!({"type": "update", "subscriber":
        {"email": "echo@x.com", "first_name": "Anna", "name": "Anna Lee"}});
    app.post_esp(&renamed.to_string()).await;
    let received = app.wait_for_requests(2).await;
    app.drain().await;
    let received_now = app.received().await;
    assert_eq!(received_now.len(), 2, "{received_now:#?}");
    assert_eq!(received[0]["type"], "subscribe");
    assert_eq!(received[1]["type"], "update");
    assert_eq!(received[1]["subscriber"]["first_name"], "Anna");
    assert_eq!(
        app.db.count(
            "SELECT COUNT(*) AS n FROM inbound_events WHERE outcome = 'unchanged' \
             AND event_type = 'update'"
        ),
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn missing_wrong_and_unconfigured_secrets_are_refused_and_nothing_is_forwarded() {
    let app = TestApp::spawn().await;
    let url = format!("{}/webhooks/esp", app.address);
    let body = subscribe("a@b.co");
    let attempts = [
        app.client
            .post(&url)
            .body(body.clone())
            .send()
            .await
            .unwrap(),
        app.client
            .post(&url)
            .bearer_auth("wrong")
            .body(body.clone())
            .send()
            .await
            .unwrap(),
        app.client
            .post(format!("{url}?token=wrong"))
            .body(body.clone())
            .send()
            .await
            .unwrap(),
        app.client
            .post(&url)
            .header("authorization", format!("Basic {ESP_SECRET}"))
            .body(body.clone())
            .send()
            .await
            .unwrap(),
    ];
    for response in attempts {
        assert_eq!(response.status(), 401);
        let error = response.json::<serde_json::Value>().await.unwrap();
        assert!(error["error"].is_string(), "{error}");
        assert!(!error.to_string().contains(ESP_SECRET));
    }
    // The token in the query string is accepted too.
    let ok = app
        .client
        .post(format!("{url}?token={ESP_SECRET}"))
        .body(subscribe("token@b.co"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    app.wait_for_requests(1).await;
    app.drain().await;
    assert_eq!(
        app.received().await,
        vec![json!({"type": "subscribe", "subscriber": {"email": "token@b.co"}})]
    );
    assert_eq!(app.db.count("SELECT COUNT(*) AS n FROM inbound_events"), 1);
    app.stop().await;

    let unconfigured = TestApp::spawn_with(&[("ESP_WEBHOOK_SECRET", "")], None).await;
    let response = unconfigured.post_esp(&subscribe("a@b.co")).await;
    assert_eq!(response.status(), 401);
    let error = response.json::<serde_json::Value>().await.unwrap();
    assert!(error["error"]
        .as_str()
        .unwrap()
        .contains("ESP_WEBHOOK_SECRET"));
    unconfigured.stop().await;
}

#[tokio::test]
async fn bad_bodies_are_refused_with_a_reason() {
    let app = TestApp::spawn().await;
    for (body, reason) in [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        (r#"{"subscriber": {"email": "a@b.co"}}"#, "no `type`"),
        (
            r#"{"type": "subscribe", "subscriber": {"name": "A"}}"#,
            "subscriber.email",
        ),
        (
            r#"{"type": "unsubscribe", "subscriber": {"email": "not-an-email"}}"#,
            "not a valid email",
        ),
        (r#"{"type": "subscribe"}"#, "no `subscriber`"),
    ] {
        let response = app.post_esp(body).await;
        assert_eq!(response.status(), 400, "{body}");
        let error = response.json::<serde_json::Value>().await.unwrap();
        assert!(
            error["error"].as_str().unwrap().contains(reason),
            "{body}: {error}"
        );
    }
    assert_eq!(app.db.count("SELECT COUNT(*) AS n FROM inbound_events"), 0);
    app.stop().await;
}

#[tokio::test]
async fn unknown_event_types_are_stored_answered_200_and_not_forwarded() {
    let app = TestApp::spawn().await;
    let response = app
        .post_esp(r#"{"type": "bounce", "whatever": true}"#)
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap(),
        json!({"status": "ignored"})
    );
    app.post_esp(&subscribe("after@b.co")).await;
    app.wait_for_requests(1).await;
    app.drain().await;
    assert_eq!(app.received().await.len(), 1);
    assert_eq!(
        app.db
            .count("SELECT COUNT(*) AS n FROM inbound_events WHERE outcome = 'ignored'"),
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn oversize_bodies_are_refused_with_413_before_authentication() {
    let app = TestApp::spawn_with(&[("BRIDGE_MAX_BODY", "1KiB")], None).await;
    let padding = "x".repeat(4096);
    let big = json!({"type": "subscribe", "subscriber": {"email": "a@b.co", "name": padding}})
        .to_string();
    // With a declared length, and without credentials: the size is checked first.
    let response = app
        .client
        .post(format!("{}/webhooks/esp", app.address))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let error = response.json::<serde_json::Value>().await.unwrap();
    assert!(error["error"].as_str().unwrap().contains("BRIDGE_MAX_BODY"));
    // Streamed (chunked, no declared length), with credentials.
    let chunks: Vec<Result<String, std::io::Error>> = big
        .as_bytes()
        .chunks(512)
        .map(|c| Ok(String::from_utf8(c.to_vec()).unwrap()))
        .collect();
    let response = app
        .client
        .post(format!("{}/webhooks/esp", app.address))
        .bearer_auth(ESP_SECRET)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    // A body just under the limit is fine.
    assert_eq!(app.post_esp(&subscribe("small@b.co")).await.status(), 200);
    app.wait_for_requests(1).await;
    assert_eq!(app.db.count("SELECT COUNT(*) AS n FROM inbound_events"), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_duplicate_delivery_is_answered_200_and_forwarded_once() {
    let app = TestApp::spawn().await;
    let body = subscribe("dup@b.co");
    assert_eq!(
        app.post_esp(&body)
            .await
            .json::<serde_json::Value>()
            .await
            .unwrap()["status"],
        "stored"
    );
    for _ in 0..3 {
        let response = app.post_esp(&body).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.json::<serde_json::Value>().await.unwrap()["status"],
            "duplicate"
        );
    }
    app.wait_for_requests(1).await;
    app.drain().await;
    assert_eq!(app.received().await.len(), 1);
    assert_eq!(app.db.count("SELECT COUNT(*) AS n FROM jobs"), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_genuine_repeat_after_another_event_is_processed() {
    let app = TestApp::spawn().await;
    let sub = subscribe("again@b.co");
    let unsub = json!({"type": "unsubscribe", "subscriber": {"email": "again@b.co"}}).to_string();
    for body in [&sub, &unsub, &sub] {
        let response = app.post_esp(body).await;
        assert_eq!(
            response.json::<serde_json::Value>().await.unwrap()["status"],
            "stored"
        );
    }
    let received = app.wait_for_requests(3).await;
    let types: Vec<_> = received
        .iter()
        .map(|b| b["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(types, ["subscribe", "unsubscribe", "subscribe"]);
    assert_eq!(
        app.db
            .count("SELECT COUNT(*) AS n FROM subscribers WHERE status = 'subscribed'"),
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn the_same_body_after_the_dedupe_window_is_processed_again() {
    let app = TestApp::spawn_with(&[("DEDUPE_WINDOW", "300ms")], None).await;
    let body = subscribe("late@b.co");
    app.post_esp(&body).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let response = app.post_esp(&body).await;
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["status"],
        "stored"
    );
    app.wait_for_requests(2).await;
    app.stop().await;
}
