//! ESP events sent to LoyaltySurf or ReferralLoop (`BRIDGE_PLATFORM`): the documented calls,
//! their answers (409s, 429 with LoyaltySurf's own headers), LoyaltySurf's two rate limits and
//! three connections, on the stand-in's own clock.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wiremock::matchers::path_regex;
use wiremock::{Mock, Request, Respond, ResponseTemplate};

use crate::helpers::{eventually, subscribe, TestApp};

/// Answers in turn as told (then `otherwise`), noting every request and when it arrived.
#[derive(Clone)]
struct Platform {
    seen: Arc<Mutex<Vec<(Instant, Request)>>>,
    answers: Arc<Mutex<Vec<ResponseTemplate>>>,
    otherwise: ResponseTemplate,
}

impl Platform {
    fn new(first: Vec<ResponseTemplate>, otherwise: ResponseTemplate) -> Platform {
        Platform {
            seen: Arc::default(),
            answers: Arc::new(Mutex::new(first.into_iter().rev().collect())),
            otherwise,
        }
    }

    fn requests(&self) -> Vec<(Instant, Request)> {
        self.seen.lock().unwrap().clone()
    }

    /// Each request as `METHOD path body`.
    fn calls(&self) -> Vec<(String, String, Value)> {
        self.requests()
            .into_iter()
            .map(|(_, r)| {
                (
                    r.method.to_string(),
                    r.url.path().to_string(),
                    serde_json::from_slice(&r.body).unwrap_or(Value::Null),
                )
            })
            .collect()
    }

    async fn wait_for(&self, n: usize) {
        eventually(
            &format!("{n} calls to the platform"),
            Duration::from_secs(30),
            || self.seen.lock().unwrap().len() >= n,
        )
        .await;
    }
}

impl Respond for Platform {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        self.seen
            .lock()
            .unwrap()
            .push((Instant::now(), request.clone()));
        self.answers
            .lock()
            .unwrap()
            .pop()
            .unwrap_or_else(|| self.otherwise.clone())
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

async fn spawn(vars: &[(&str, &str)], platform: &Platform) -> TestApp {
    let mock = Mock::given(path_regex("^/(ls|rl)/")).respond_with(platform.clone());
    TestApp::spawn_with(vars, Some(mock)).await
}

const LOYALTYSURF: &[(&str, &str)] = &[
    ("BRIDGE_PLATFORM", "loyaltysurf"),
    ("LOYALTYSURF_API_URL", "{stand-in}/ls/v1"),
    ("LOYALTYSURF_API_KEY", "ls-key"),
    ("LOYALTYSURF_CAMPAIGN_ID", "ct8f71"),
];

#[tokio::test]
async fn loyaltysurf_gets_participants_changes_and_deletions() {
    let platform = Platform::new(
        vec![
            // The documented duplicate-request answer: retried, not dead.
            ResponseTemplate::new(409).set_body_json(json!({"name": "DuplicateRequestError",
                "code": "DUPLICATE_REQUEST_ERROR",
                "message": "Duplicate request is already in progress.", "status": 409})),
        ],
        ResponseTemplate::new(200).set_body_json(json!({"id": "x9a7uu"})),
    );
    let vars = [LOYALTYSURF, &[("LOYALTYSURF_UNSUBSCRIBE", "delete")]].concat();
    let app = spawn(&vars, &platform).await;
    let events = [
        json!({"type": "subscribe", "subscriber": {"email": "ann@example.com",
            "first_name": "Ann", "name": "Ann Lee", "created_at": 1564400550}}),
        json!({"type": "update", "subscriber": {"email": "ann.lee@example.com",
            "previous_email": "ann@example.com", "first_name": "Ann", "name": "Ann Lee"}}),
        json!({"type": "unsubscribe", "subscriber": {"email": "ann.lee@example.com"}}),
    ];
    for event in &events {
        assert_eq!(app.post_esp(&event.to_string()).await.status(), 200);
    }
    platform.wait_for(4).await;
    let calls = platform.calls();
    let participant = json!({"email": "ann@example.com", "firstName": "Ann", "lastName": "Lee"});
    assert_eq!(
        calls,
        vec![
            (
                "POST".into(),
                "/ls/v1/campaign/ct8f71/participant".into(),
                participant.clone()
            ),
            (
                "POST".into(),
                "/ls/v1/campaign/ct8f71/participant".into(),
                participant
            ),
            (
                "POST".into(),
                "/ls/v1/campaign/ct8f71/participant/ann@example.com".into(),
                json!({"email": "ann.lee@example.com", "firstName": "Ann", "lastName": "Lee"})
            ),
            (
                "DELETE".into(),
                "/ls/v1/campaign/ct8f71/participant/ann.lee@example.com".into(),
                Value::Null
            ),
        ]
    );
    for (_, request) in platform.requests() {
        assert_eq!(request.headers["authorization"], "Bearer ls-key");
    }
    eventually("the jobs to be done", Duration::from_secs(10), || {
        app.db.count(
            "SELECT COUNT(*) AS n FROM jobs WHERE destination = 'loyaltysurf' AND status = 'done'",
        ) == 3
    })
    .await;
    app.stop().await;

    // Keeping participants (the default), an unsubscribe is recorded and not sent.
    let platform = Platform::new(vec![], ResponseTemplate::new(200));
    let app = spawn(LOYALTYSURF, &platform).await;
    assert_eq!(
        app.post_esp(&subscribe("bo@example.com")).await.status(),
        200
    );
    let unsubscribe = json!({"type": "unsubscribe", "subscriber": {"email": "bo@example.com"}});
    assert_eq!(app.post_esp(&unsubscribe.to_string()).await.status(), 200);
    platform.wait_for(1).await;
    app.drain().await;
    assert_eq!(platform.calls().len(), 1);
    assert_eq!(
        app.db
            .count("SELECT COUNT(*) AS n FROM jobs WHERE destination = 'loyaltysurf'"),
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn loyaltysurf_deleting_a_participant_already_gone_is_done_and_other_404s_are_dead() {
    let not_found = || {
        ResponseTemplate::new(404).set_body_json(json!({"name": "NotFoundError",
            "code": "NOT_FOUND", "message": "Participant not found.", "status": 404}))
    };
    let platform = Platform::new(
        vec![ResponseTemplate::new(200), not_found(), not_found()],
        ResponseTemplate::new(200),
    );
    let vars = [LOYALTYSURF, &[("LOYALTYSURF_UNSUBSCRIBE", "delete")]].concat();
    let app = spawn(&vars, &platform).await;
    let status_of = |kind: &str| {
        app.db.count(&format!(
            "SELECT COUNT(*) AS n FROM jobs WHERE destination = 'loyaltysurf' AND kind = '{kind}' \
             AND status = 'done'"
        ))
    };
    assert_eq!(
        app.post_esp(&subscribe("cy@example.com")).await.status(),
        200
    );
    platform.wait_for(1).await;
    let unsubscribe = json!({"type": "unsubscribe", "subscriber": {"email": "cy@example.com"}});
    assert_eq!(app.post_esp(&unsubscribe.to_string()).await.status(), 200);
    platform.wait_for(2).await;
    // Deleted already (by hand, or by an earlier attempt whose answer was lost): done.
    eventually("the deletion to be done", Duration::from_secs(10), || {
        status_of("unsubscribe") == 1
    })
    .await;
    // A 404 to anything else is an ordinary refusal: dead at once, the answer kept.
    assert_eq!(
        app.post_esp(&subscribe("dee@example.com")).await.status(),
        200
    );
    platform.wait_for(3).await;
    eventually(
        "the refused signup to be dead",
        Duration::from_secs(10),
        || {
            app.db.count(
                "SELECT COUNT(*) AS n FROM jobs j JOIN attempts a ON a.job_id = j.id \
             WHERE j.destination = 'loyaltysurf' AND j.status = 'dead' AND a.status_code = 404 \
             AND a.response_body LIKE '%NOT_FOUND%'",
            ) == 1
        },
    )
    .await;
    assert_eq!(status_of("subscribe"), 1);
    assert_eq!(platform.calls()[1].0, "DELETE");
    app.stop().await;
}

#[tokio::test]
async fn loyaltysurf_limits_hold_and_its_retry_after_headers_are_honoured() {
    // LoyaltySurf's 30 per 5 s and 200 per minute, scaled down; answers take 300 ms, so
    // calls in flight overlap unless the three-connection cap holds them back.
    let platform = Platform::new(
        vec![ResponseTemplate::new(429)
            .insert_header("LoyaltySurf-Retry-After-Second-Milliseconds", "1500")
            .set_body_json(json!({"name": "RateLimit", "code": "RATE_LIMIT",
                "message": "You have reached your second limit.", "status": 429,
                "policyName": "SECOND"}))],
        ResponseTemplate::new(200).set_delay(Duration::from_millis(300)),
    );
    let vars = [
        LOYALTYSURF,
        &[
            ("LOYALTYSURF_RATE_LIMIT", "5/1s,8/4s"),
            ("BRIDGE_WORKERS", "8"),
        ],
    ]
    .concat();
    let app = spawn(&vars, &platform).await;
    for n in 0..12 {
        let body = subscribe(&format!("p{n}@example.com"));
        assert_eq!(app.post_esp(&body).await.status(), 200);
    }
    platform.wait_for(13).await;
    let arrivals: Vec<Instant> = platform.requests().iter().map(|(at, _)| *at).collect();
    // After the 429 (answered at once), nothing new starts for the 1.5 s LoyaltySurf asked;
    // only the calls already in flight with the first arrive meanwhile.
    let since_429: Vec<Duration> = arrivals
        .iter()
        .map(|t| t.duration_since(arrivals[0]))
        .collect();
    assert!(
        since_429
            .iter()
            .all(|d| *d < Duration::from_millis(50) || *d >= Duration::from_millis(1450)),
        "{since_429:?}"
    );
    // Both windows hold on the stand-in's clock (less the margin the pacer keeps).
    assert!(
        busiest(&arrivals, Duration::from_millis(1000)) <= 5,
        "{arrivals:?}"
    );
    assert!(
        busiest(&arrivals, Duration::from_millis(4000)) <= 8,
        "{arrivals:?}"
    );
    // At most three calls in flight: no four arrivals within one answer's 300 ms.
    assert!(
        busiest(&arrivals, Duration::from_millis(290)) <= 3,
        "{arrivals:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn referralloop_gets_signups_and_an_existing_one_is_done() {
    let platform = Platform::new(
        vec![ResponseTemplate::new(409).set_body_json(json!({"error": "Signup already exists"}))],
        ResponseTemplate::new(201).set_body_json(json!({"id": "789e", "position": 2})),
    );
    let vars = [
        ("BRIDGE_PLATFORM", "referralloop"),
        ("REFERRALLOOP_API_URL", "{stand-in}/rl/api/v1"),
        ("REFERRALLOOP_API_KEY", "pk_test_1"),
        (
            "REFERRALLOOP_WAITLIST_ID",
            "123e4567-e89b-12d3-a456-426614174000",
        ),
    ];
    let app = spawn(&vars, &platform).await;
    let first = json!({"type": "subscribe", "subscriber": {"email": "user@example.com",
        "first_name": "John", "name": "John Doe"}});
    assert_eq!(app.post_esp(&first.to_string()).await.status(), 200);
    assert_eq!(
        app.post_esp(&subscribe("two@example.com")).await.status(),
        200
    );
    // ReferralLoop's API cannot change or remove a signup: these are recorded, not sent.
    let update = json!({"type": "update", "subscriber": {"email": "user2@example.com",
        "previous_email": "user@example.com"}});
    assert_eq!(app.post_esp(&update.to_string()).await.status(), 200);
    platform.wait_for(2).await;
    let signups = "/rl/api/v1/waitlists/123e4567-e89b-12d3-a456-426614174000/signups";
    let mut calls = platform.calls();
    calls.sort_by(|a, b| a.2["email"].as_str().cmp(&b.2["email"].as_str()));
    assert_eq!(
        calls,
        vec![
            (
                "POST".into(),
                signups.into(),
                json!({"email": "two@example.com"})
            ),
            (
                "POST".into(),
                signups.into(),
                json!({"email": "user@example.com", "name": "John Doe"})
            ),
        ]
    );
    assert_eq!(
        platform.requests()[0].1.headers["authorization"],
        "Bearer pk_test_1"
    );
    eventually("the signups to be done", Duration::from_secs(10), || {
        app.db.count(
            "SELECT COUNT(*) AS n FROM jobs WHERE destination = 'referralloop' AND status = 'done'",
        ) == 2
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn check_tries_the_platform_key_without_writing() {
    let server = wiremock::MockServer::start().await;
    Mock::given(wiremock::matchers::method("GET"))
        .and(wiremock::matchers::path("/ls/v1/campaign/ct8f71"))
        .and(wiremock::matchers::header("authorization", "Bearer ls-key"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "ct8f71"})))
        .mount(&server)
        .await;
    Mock::given(wiremock::matchers::method("GET"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"message": "no"})))
        .with_priority(10)
        .mount(&server)
        .await;
    let db = crate::helpers::TestDb::new();
    let mut vars = crate::helpers::base_vars(&db, &server);
    for (k, v) in LOYALTYSURF {
        vars.insert(k.to_string(), v.replace("{stand-in}", &server.uri()));
    }
    let run = |vars: std::collections::HashMap<String, String>| {
        tokio::task::spawn_blocking(move || crate::helpers::run_command(&["check"], &vars))
    };
    let (_, stdout, _) = run(vars.clone()).await.unwrap();
    assert!(
        stdout.contains("LoyaltySurf API reachable, LOYALTYSURF_API_KEY accepted"),
        "{stdout}"
    );
    vars.insert("LOYALTYSURF_API_KEY".into(), "wrong".into());
    let (ok, stdout, _) = run(vars).await.unwrap();
    assert!(!ok);
    assert!(
        stdout.contains("LOYALTYSURF_API_KEY was refused (HTTP 401)"),
        "{stdout}"
    );
    assert!(!stdout.contains("wrong"), "{stdout}");
    let writes = server.received_requests().await.unwrap();
    assert!(writes.iter().all(|r| r.method.as_str() == "GET"));
}
