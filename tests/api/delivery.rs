//! Delivery to SparkLoop: retries, order, dead jobs and replay.

use std::time::{Duration, Instant};

use serde_json::json;
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{eventually, run_command, subscribe, TestApp};

#[tokio::test]
async fn retries_503_until_accepted_and_keeps_one_subscribers_order() {
    let app = TestApp::spawn_with(
        &[],
        Some(
            Mock::given(method("POST"))
                .and(path("/incoming"))
                .respond_with(ResponseTemplate::new(503).set_body_string("busy"))
                .up_to_n_times(3),
        ),
    )
    .await;
    app.post_esp(
        &json!({"type": "subscribe", "subscriber": {"email": "o@b.co", "name": "O"}}).to_string(),
    )
    .await;
    app.post_esp(
        &json!({"type": "update", "subscriber": {"email": "o2@b.co", "previous_email": "o@b.co"}})
            .to_string(),
    )
    .await;
    let received = app.wait_for_requests(5).await;
    let types: Vec<_> = received
        .iter()
        .map(|b| b["type"].as_str().unwrap())
        .collect();
    // Three refused subscribes, the accepted one, and only then the update.
    assert_eq!(
        types,
        ["subscribe", "subscribe", "subscribe", "subscribe", "update"]
    );
    let db = &app.db;
    eventually("both jobs done", Duration::from_secs(5), || {
        db.count("SELECT COUNT(*) AS n FROM jobs WHERE status = 'done'") == 2
    })
    .await;
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM attempts"), 5);
    assert_eq!(
        db.count(
            "SELECT COUNT(*) AS n FROM attempts WHERE status_code = 503 AND response_body = 'busy'"
        ),
        3
    );
    app.stop().await;
}

#[tokio::test]
async fn one_failing_subscriber_does_not_hold_up_the_others() {
    let app = TestApp::spawn_with(
        &[("RETRY_BASE_DELAY", "2s"), ("RETRY_MAX_DELAY", "2s")],
        Some(
            Mock::given(method("POST"))
                .and(body_partial_json(
                    json!({"subscriber": {"email": "stuck@b.co"}}),
                ))
                .respond_with(ResponseTemplate::new(500)),
        ),
    )
    .await;
    app.post_esp(&subscribe("stuck@b.co")).await;
    app.post_esp(
        &json!({"type": "unsubscribe", "subscriber": {"email": "stuck@b.co"}}).to_string(),
    )
    .await;
    for i in 0..5 {
        app.post_esp(&subscribe(&format!("free{i}@b.co"))).await;
    }
    let received = app.wait_for_requests(6).await;
    let for_stuck: Vec<_> = received
        .iter()
        .filter(|b| b["subscriber"]["email"] == "stuck@b.co")
        .collect();
    // The unsubscribe waits behind the failing subscribe; the others went through.
    assert_eq!(for_stuck.len(), 1);
    assert_eq!(for_stuck[0]["type"], "subscribe");
    app.stop().await;
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let app = TestApp::spawn_with(
        &[("RETRY_BASE_DELAY", "50ms"), ("RETRY_MAX_DELAY", "5s")],
        Some(
            Mock::given(method("POST"))
                .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "2"))
                .up_to_n_times(1),
        ),
    )
    .await;
    let start = Instant::now();
    app.post_esp(&subscribe("slow@b.co")).await;
    app.wait_for_requests(2).await;
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "retried after {:?}",
        start.elapsed()
    );
    app.stop().await;
}

#[tokio::test]
async fn a_job_failing_past_the_retry_horizon_is_dead_and_kept() {
    let app = TestApp::spawn_with(
        &[("RETRY_MAX_AGE", "700ms")],
        Some(Mock::given(method("POST")).respond_with(ResponseTemplate::new(502))),
    )
    .await;
    app.post_esp(&subscribe("never@b.co")).await;
    let db = &app.db;
    eventually("the job to die", Duration::from_secs(10), || {
        db.count("SELECT COUNT(*) AS n FROM jobs WHERE status = 'dead'") == 1
    })
    .await;
    assert!(db.count("SELECT COUNT(*) AS n FROM attempts") >= 2);
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM jobs WHERE last_error LIKE 'gave up after%'"),
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn a_400_is_dead_at_once_with_the_answer_kept_and_deliveries_retry_sends_it_again() {
    let refusal = r#"{"error":"Invalid subscriber"}"#;
    let app = TestApp::spawn_with(
        &[],
        Some(
            Mock::given(method("POST"))
                .respond_with(ResponseTemplate::new(400).set_body_string(refusal))
                .up_to_n_times(1),
        ),
    )
    .await;
    app.post_esp(&subscribe("refused@b.co")).await;
    let db = &app.db;
    eventually("the job to die", Duration::from_secs(5), || {
        db.count("SELECT COUNT(*) AS n FROM jobs WHERE status = 'dead'") == 1
    })
    .await;
    // Not retried on its own.
    app.drain().await;
    assert_eq!(app.received().await.len(), 1);

    let vars = [("DATABASE_URL".to_string(), app.db.url.clone())]
        .into_iter()
        .collect();
    let (ok, listed, err) = run_command(&["deliveries", "list", "--status", "dead"], &vars);
    assert!(ok, "{err}");
    assert!(
        listed.contains("refused@b.co") && listed.contains("HTTP 400"),
        "{listed}"
    );
    let id = db.count("SELECT id AS n FROM jobs");
    let (ok, shown, err) = run_command(&["deliveries", "show", &id.to_string()], &vars);
    assert!(ok, "{err}");
    assert!(shown.contains(refusal), "the answer is kept: {shown}");

    let (ok, out, err) = run_command(&["deliveries", "retry", &id.to_string()], &vars);
    assert!(ok, "{out}{err}");
    app.wait_for_requests(2).await;
    eventually("the job to be done", Duration::from_secs(5), || {
        db.count("SELECT COUNT(*) AS n FROM jobs WHERE status = 'done'") == 1
    })
    .await;
    let (ok, _, err) = run_command(&["deliveries", "retry", "999999"], &vars);
    assert!(!ok && err.contains("no job 999999"), "{err}");
    app.stop().await;
}

#[tokio::test]
async fn deliveries_retry_dead_requeues_every_dead_job() {
    let app = TestApp::spawn_with(
        &[],
        Some(
            Mock::given(method("POST"))
                .respond_with(ResponseTemplate::new(422))
                .up_to_n_times(3),
        ),
    )
    .await;
    for i in 0..3 {
        app.post_esp(&subscribe(&format!("d{i}@b.co"))).await;
    }
    let db = &app.db;
    eventually("three dead jobs", Duration::from_secs(5), || {
        db.count("SELECT COUNT(*) AS n FROM jobs WHERE status = 'dead'") == 3
    })
    .await;
    let vars = [("DATABASE_URL".to_string(), app.db.url.clone())]
        .into_iter()
        .collect();
    let (ok, out, _) = run_command(&["deliveries", "retry", "--dead"], &vars);
    assert!(ok && out.contains("3 dead jobs queued again"), "{out}");
    app.wait_for_requests(6).await;
    eventually("three done jobs", Duration::from_secs(5), || {
        db.count("SELECT COUNT(*) AS n FROM jobs WHERE status = 'done'") == 3
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_burst_for_one_subscriber_arrives_complete_and_in_order() {
    let app = TestApp::spawn_with(
        &[],
        Some(
            Mock::given(method("POST"))
                .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(20))),
        ),
    )
    .await;
    // Each event is appended while earlier ones are being delivered, and each finished job
    // hands the line to the next: none may be skipped, stranded or overtaken.
    let names: Vec<String> = (0..30).map(|i| format!("Name {i}")).collect();
    for name in &names {
        let body =
            json!({"type": "subscribe", "subscriber": {"email": "burst@b.co", "name": name}});
        let response = app.post_esp(&body.to_string()).await;
        assert_eq!(
            response.json::<serde_json::Value>().await.unwrap()["status"],
            "stored"
        );
    }
    let received = app.wait_for_requests(names.len()).await;
    let got: Vec<_> = received
        .iter()
        .map(|b| b["subscriber"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, names);
    app.stop().await;
}
