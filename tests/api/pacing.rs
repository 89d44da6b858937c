//! SparkLoop's API v2 upstream and the rate limits of both peers: the documented calls, "already
//! done" answers, no window over a configured limit (on the stand-in's own clock), and 429.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

use crate::helpers::{eventually, TestApp, ESP_FIELDS_PATH};

/// Answers as `template` says and notes when each request arrived.
#[derive(Clone)]
struct Clock {
    arrivals: Arc<Mutex<Vec<Instant>>>,
    answers: Arc<Mutex<Vec<ResponseTemplate>>>,
}

impl Clock {
    /// Answers `first` in turn, then 200.
    fn new(first: Vec<ResponseTemplate>) -> Clock {
        Clock {
            arrivals: Arc::default(),
            answers: Arc::new(Mutex::new(first.into_iter().rev().collect())),
        }
    }

    fn arrivals(&self) -> Vec<Instant> {
        self.arrivals.lock().unwrap().clone()
    }
}

impl Respond for Clock {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        self.arrivals.lock().unwrap().push(Instant::now());
        self.answers
            .lock()
            .unwrap()
            .pop()
            .unwrap_or_else(|| ResponseTemplate::new(200))
    }
}

/// The most arrivals in any window of `window`.
fn busiest(arrivals: &[Instant], window: Duration) -> usize {
    arrivals
        .iter()
        .map(|start| {
            arrivals
                .iter()
                .filter(|t| **t >= *start && t.duration_since(*start) < window)
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// Variables of a bridge in API mode against the stand-in.
fn api_mode(app_uri: &str, limit: &str) -> Vec<(&'static str, String)> {
    vec![
        ("SPARKLOOP_INCOMING_WEBHOOK_URL", String::new()),
        ("SPARKLOOP_API_URL", app_uri.to_string()),
        ("SPARKLOOP_API_KEY", "sl-key".into()),
        ("SPARKLOOP_RATE_LIMIT", limit.into()),
    ]
}

async fn spawn_api_mode(limit: &str, mocks: Vec<Mock>) -> TestApp {
    // The stand-in's address is known only once it runs, so the bridge is built in two steps:
    // a first app provides the mock server, whose URI the second one is pointed at.
    let server = wiremock::MockServer::start().await;
    for mock in mocks {
        server.register(mock).await;
    }
    let vars = api_mode(&server.uri(), limit);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut app = TestApp::spawn_with(&vars, None).await;
    app.sparkloop = server;
    app
}

#[tokio::test]
async fn api_mode_sends_the_documented_calls_confirms_the_taken_and_takes_already_done_as_done() {
    // Ann's three calls in her line, then Bob's signup, which SparkLoop already has (its site
    // script tracked it): confirmed with a PUT (DESIGN 3.8).
    let calls = Clock::new(vec![
        ResponseTemplate::new(200),
        ResponseTemplate::new(200),
        ResponseTemplate::new(409).set_body_json(json!({"error": "already unsubscribed"})),
        ResponseTemplate::new(400).set_body_json(json!({"error": "Email has already been taken"})),
        ResponseTemplate::new(200),
    ]);
    let app = spawn_api_mode(
        "100/1s",
        vec![Mock::given(path_regex_any()).respond_with(calls.clone())],
    )
    .await;
    let events = [
        json!({"type": "subscribe", "subscriber": {"email": "ann@example.com", "id": 1,
            "first_name": "Ann", "name": "Ann Lee", "created_at": 1564400550}}),
        json!({"type": "subscribe", "subscriber": {"email": "bob@example.com"}}),
        json!({"type": "update", "subscriber": {"email": "ann.lee@example.com",
            "previous_email": "ann@example.com"}}),
        json!({"type": "unsubscribe", "subscriber": {"email": "ann.lee@example.com"}}),
    ];
    let db = &app.db;
    for event in [&events[0], &events[2], &events[3]] {
        assert_eq!(app.post_esp(&event.to_string()).await.status(), 200);
    }
    eventually("Ann's three calls done", Duration::from_secs(15), || {
        db.count("SELECT COUNT(*) AS n FROM jobs WHERE status = 'done'") == 3
    })
    .await;
    assert_eq!(app.post_esp(&events[1].to_string()).await.status(), 200);
    eventually("four jobs done", Duration::from_secs(15), || {
        db.count("SELECT COUNT(*) AS n FROM jobs WHERE status = 'done'") == 4
    })
    .await;
    let requests = app.sparkloop.received_requests().await.unwrap();
    let mut seen: Vec<(String, String, Value)> = requests
        .iter()
        .map(|r| {
            assert_eq!(r.headers.get("x-api-key").unwrap(), "sl-key");
            (
                r.method.to_string(),
                r.url.path().to_string(),
                serde_json::from_slice(&r.body).unwrap(),
            )
        })
        .collect();
    // Ann's three calls are in order; Bob's runs beside them.
    seen.sort_by_key(|(_, path, body)| {
        (
            body["email"].as_str() == Some("bob@example.com") || path.contains("bob@"),
            path.len(),
        )
    });
    assert_eq!(
        seen,
        [
            (
                "POST".into(),
                "/v2/subscribers".into(),
                json!({"email": "ann@example.com", "name": "Ann Lee",
                    "created_at": "2019-07-29T11:42:30Z"})
            ),
            (
                "PUT".into(),
                "/v2/subscribers/ann@example.com".into(),
                json!({"email": "ann.lee@example.com"})
            ),
            (
                "PUT".into(),
                "/v2/subscribers/ann.lee@example.com/unsubscribe".into(),
                json!({})
            ),
            (
                "POST".into(),
                "/v2/subscribers".into(),
                json!({"email": "bob@example.com"})
            ),
            (
                "PUT".into(),
                "/v2/subscribers/bob@example.com".into(),
                json!({"status": "confirmed"})
            ),
        ]
    );
    app.stop().await;
}

fn path_regex_any() -> wiremock::matchers::PathRegexMatcher {
    wiremock::matchers::path_regex("^/v2/subscribers")
}

/// Posts `n` subscribes and waits until SparkLoop has taken all of them.
async fn subscribe_all(app: &TestApp, n: usize) {
    for i in 0..n {
        let body =
            json!({"type": "subscribe", "subscriber": {"email": format!("p{i}@example.com")}});
        app.post_esp(&body.to_string()).await;
    }
    let db = &app.db;
    eventually("every subscriber sent", Duration::from_secs(30), || {
        db.count("SELECT COUNT(*) AS n FROM jobs WHERE status = 'done'") == n as i64
    })
    .await;
}

#[tokio::test]
async fn api_calls_keep_to_the_limit_in_any_window() {
    let calls = Clock::new(Vec::new());
    let app = spawn_api_mode(
        "3/1s",
        vec![Mock::given(method("POST"))
            .and(path("/v2/subscribers"))
            .respond_with(calls.clone())],
    )
    .await;
    subscribe_all(&app, 9).await;
    let arrivals = calls.arrivals();
    assert_eq!(arrivals.len(), 9);
    assert!(busiest(&arrivals, Duration::from_secs(1)) <= 3);
    let spread = arrivals.last().unwrap().duration_since(arrivals[0]);
    assert!(spread >= Duration::from_secs(2), "{spread:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_429_holds_back_every_call_for_the_time_it_asks() {
    let calls = Clock::new(vec![
        ResponseTemplate::new(200),
        ResponseTemplate::new(429).insert_header("Retry-After", "2"),
    ]);
    let app = spawn_api_mode(
        "1/1s",
        vec![Mock::given(method("POST"))
            .and(path("/v2/subscribers"))
            .respond_with(calls.clone())],
    )
    .await;
    subscribe_all(&app, 3).await;
    let arrivals = calls.arrivals();
    assert_eq!(
        arrivals.len(),
        4,
        "three calls and one retried after the 429"
    );
    // At one call a second, the next would have come 1 s after the 429; it came 2 s after.
    let after_429 = arrivals[2].duration_since(arrivals[1]);
    assert!(after_429 >= Duration::from_millis(1990), "{after_429:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_burst_of_callbacks_is_written_to_the_esp_within_its_limit() {
    let writes = Clock::new(Vec::new());
    let esp = Mock::given(method("POST"))
        .and(path(ESP_FIELDS_PATH))
        .respond_with(writes.clone());
    // The writes fall due once the burst is in, so that the posting does not crowd the
    // machine while the stand-in times the writes.
    let app = TestApp::spawn_with(
        &[("ESP_RATE_LIMIT", "400/1s"), ("ESP_WRITE_DELAY", "3s")],
        Some(esp),
    )
    .await;
    let people = 2_000;
    let posts = (0..people).map(|n| {
        let app = &app;
        async move {
            let body = json!({"type": "sync_subscriber", "subscriber": {
                "email": format!("burst{n}@example.com"), "referral_code": format!("c{n}"),
                "tot_referrals": n}});
            app.post_sparkloop(&body.to_string()).await.status()
        }
    });
    use futures_util::StreamExt;
    let statuses: Vec<_> = futures_util::stream::iter(posts)
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 200));
    app.wait_until_esp_idle().await;
    let written = app.esp_writes().await;
    assert_eq!(written.len(), people);
    for n in [0, 999, 1999] {
        let write = written
            .iter()
            .find(|w| w["email"] == format!("burst{n}@example.com"))
            .unwrap();
        assert_eq!(write["fields"]["RH_TOTREF"], n);
    }
    let busiest = busiest(&writes.arrivals(), Duration::from_secs(1));
    assert!(busiest <= 400, "{busiest} writes in one second");
    app.stop().await;
}

#[tokio::test]
async fn the_backlog_and_its_time_to_drain_are_shown() {
    // API mode without a key: the jobs wait, and the estimate is what they will take.
    let app = TestApp::spawn_with(
        &[
            ("SPARKLOOP_INCOMING_WEBHOOK_URL", ""),
            ("SPARKLOOP_RATE_LIMIT", "2/1m"),
        ],
        None,
    )
    .await;
    for n in 0..5 {
        let body =
            json!({"type": "subscribe", "subscriber": {"email": format!("w{n}@example.com")}});
        assert_eq!(app.post_esp(&body.to_string()).await.status(), 200);
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    for line in [
        r#"bridge_queue_depth{destination="sparkloop"} 5"#,
        r#"bridge_queue_drain_estimate_seconds{destination="sparkloop"} 180.0"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    let vars: std::collections::HashMap<String, String> = [
        ("DATABASE_URL", app.db.url.clone()),
        ("SPARKLOOP_RATE_LIMIT", "2/1m".to_string()),
        ("RUST_LOG", "warn".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || {
        crate::helpers::run_command(&["deliveries", "list"], &vars)
    })
    .await
    .unwrap();
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("backlog to sparkloop: 5 open jobs, about 3m at 2/1m"),
        "{stdout}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_failed_confirmation_is_retried_until_sparkloop_takes_it() {
    // Taken, and the confirming PUT fails once: the job is not done until a PUT succeeds.
    let taken = || {
        ResponseTemplate::new(400).set_body_json(json!({"error": "Email has already been taken"}))
    };
    let calls = Clock::new(vec![taken(), ResponseTemplate::new(500), taken()]);
    let app = spawn_api_mode(
        "100/1s",
        vec![Mock::given(path_regex_any()).respond_with(calls.clone())],
    )
    .await;
    let back =
        json!({"type": "subscribe", "subscriber": {"email": "cy@example.com", "name": "Cy Young"}});
    assert_eq!(app.post_esp(&back.to_string()).await.status(), 200);
    let db = &app.db;
    eventually("the signup confirmed", Duration::from_secs(15), || {
        db.count("SELECT COUNT(*) AS n FROM jobs WHERE status = 'done'") == 1
    })
    .await;
    let calls: Vec<(String, String, Value)> = app
        .sparkloop
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.method.to_string(),
                r.url.path().to_string(),
                serde_json::from_slice(&r.body).unwrap(),
            )
        })
        .collect();
    let confirm = (
        "PUT".to_string(),
        "/v2/subscribers/cy@example.com".to_string(),
        json!({"status": "confirmed", "name": "Cy Young"}),
    );
    let post = (
        "POST".to_string(),
        "/v2/subscribers".to_string(),
        json!({"email": "cy@example.com", "name": "Cy Young"}),
    );
    assert_eq!(calls, [post.clone(), confirm.clone(), post, confirm]);
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM attempts"), 2);
    app.stop().await;
}
