//! Health, readiness, metrics and graceful shutdown.

use std::time::Duration;

use wiremock::matchers::method;
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{base_vars, eventually, subscribe, BridgeProcess, TestApp, TestDb};

#[tokio::test]
async fn health_readiness_and_metrics() {
    let app = TestApp::spawn().await;
    let health = app.get("/healthz").await;
    assert_eq!(health.status(), 200);
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 200);

    app.post_esp(&subscribe("m@b.co")).await;
    app.post_esp("{bad").await;
    app.wait_for_requests(1).await;
    let db = &app.db;
    eventually("the job to be done", Duration::from_secs(5), || {
        db.count("SELECT COUNT(*) AS n FROM jobs WHERE status = 'done'") == 1
    })
    .await;
    let text = app.get("/metrics").await.text().await.unwrap();
    for line in [
        r#"bridge_inbound_requests_total{endpoint="esp",outcome="stored"} 1"#,
        r#"bridge_inbound_requests_total{endpoint="esp",outcome="bad_request"} 1"#,
        r#"bridge_job_attempts_total{kind="subscribe",outcome="done"} 1"#,
        r#"bridge_queue_depth{destination="sparkloop"} 0"#,
        "bridge_oldest_due_job_age_seconds 0",
        r#"bridge_attempt_duration_seconds_count{destination="sparkloop"} 1"#,
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    app.stop().await;
}

#[tokio::test]
async fn readyz_is_503_when_the_database_does_not_answer() {
    if std::env::var("TEST_DATABASE_URL").is_err() {
        // A SQLite file cannot be taken away from a running process; the Postgres run covers it.
        crate::helpers::skipped(
            "readyz_is_503_when_the_database_does_not_answer",
            "needs Postgres (set TEST_DATABASE_URL)",
        );
        return;
    }
    let app = TestApp::spawn_with(
        &[
            ("BRIDGE_DB_TIMEOUT", "300ms"),
            (
                "BRIDGE_ADMIN_TOKEN",
                "admin-token-for-this-test-32-characters-long",
            ),
        ],
        None,
    )
    .await;
    let name = app.db.url.rsplit('/').next().unwrap().to_string();
    // Cut the bridge's connections and keep new ones out.
    let admin = |sql: String| {
        use diesel::connection::SimpleConnection;
        use diesel::Connection;
        let url = std::env::var("TEST_DATABASE_URL").unwrap();
        let mut admin = diesel::PgConnection::establish(&url).unwrap();
        admin.batch_execute(&sql).unwrap();
    };
    admin(format!(
        "ALTER DATABASE {name} ALLOW_CONNECTIONS false; \
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}';"
    ));
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 503);
    let stored = app.post_esp(&subscribe("x@b.co")).await;
    assert_eq!(
        stored.status(),
        503,
        "an event that cannot be stored is refused"
    );
    assert!(stored.headers().contains_key("retry-after"));
    let callback = app
        .post_sparkloop(r#"{"type": "sync_subscriber", "subscriber": {"email": "x@b.co"}}"#)
        .await;
    assert_eq!(callback.status(), 503, "so is a callback");
    assert!(callback.headers().contains_key("retry-after"));
    let stats = app
        .client
        .get(format!("{}/admin/api/stats", app.address))
        .bearer_auth("admin-token-for-this-test-32-characters-long")
        .send()
        .await
        .unwrap();
    assert_eq!(stats.status(), 503, "and an admin API call");
    assert!(stats.headers().contains_key("retry-after"));
    let problem: serde_json::Value = stats.json().await.unwrap();
    assert_eq!(problem["status"], 503, "a problem document: {problem}");
    admin(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"));
    let mut ready = 0;
    for _ in 0..50 {
        ready = app.get("/readyz").await.status().as_u16();
        if ready == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready, 200, "ready again once the database is back");
    app.stop().await;
}

#[tokio::test]
async fn sigterm_lets_a_delivery_in_flight_finish() {
    let sparkloop = wiremock::MockServer::start().await;
    sparkloop
        .register(
            Mock::given(method("POST"))
                .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(1500))),
        )
        .await;
    let db = TestDb::new();
    let bridge = BridgeProcess::start(&base_vars(&db, &sparkloop));
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{}/webhooks/esp", bridge.address))
        .bearer_auth(crate::helpers::ESP_SECRET)
        .body(subscribe("inflight@b.co"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    crate::helpers::wait_for(&sparkloop, 1, Duration::from_secs(5)).await;
    let log = bridge.log.clone();
    assert!(
        bridge.terminate(),
        "exits successfully: {}",
        log.lock().unwrap()
    );
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM jobs WHERE status = 'done'"),
        1
    );
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM jobs WHERE status = 'running'"),
        0
    );
}

#[tokio::test]
async fn json_logs_are_one_object_a_line_with_the_webhook_fields() {
    let sparkloop = wiremock::MockServer::start().await;
    let db = TestDb::new();
    let mut vars = base_vars(&db, &sparkloop);
    vars.insert("BRIDGE_LOG_FORMAT".into(), "json".into());
    let bridge = BridgeProcess::start(&vars);
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{}/webhooks/esp", bridge.address))
        .bearer_auth(crate::helpers::ESP_SECRET)
        .body(subscribe("json@b.co"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    crate::helpers::wait_for(&sparkloop, 1, Duration::from_secs(5)).await;
    let log = bridge.log.clone();
    let exited = bridge.terminate();
    let log = log.lock().unwrap().clone();
    assert!(exited, "exits successfully: {log}");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(lines.len() >= 4, "{log}");
    for line in &lines {
        for key in ["ts", "level", "target", "msg"] {
            assert!(line[key].is_string(), "{key} in {line}");
        }
        assert!(
            humantime::parse_rfc3339(line["ts"].as_str().unwrap()).is_ok(),
            "{line}"
        );
    }
    let webhook = lines
        .iter()
        .find(|line| {
            line["msg"]
                .as_str()
                .unwrap()
                .starts_with("POST /webhooks/esp")
        })
        .unwrap_or_else(|| panic!("{log}"));
    assert_eq!(webhook["endpoint"], "esp");
    assert_eq!(webhook["outcome"], "stored");
    assert!(webhook["latency_ms"].as_f64().unwrap() >= 0.0, "{webhook}");
    assert_eq!(webhook["level"], "INFO");
    assert_eq!(webhook["target"], "referral_bridge::http::webhooks");
    assert!(!log.contains("json@b.co"), "no address at info");
}
