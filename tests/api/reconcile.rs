//! SparkLoop as it is today and reconciliation (DESIGN 3.8, 3.9), black-box on both backends,
//! against a stand-in SparkLoop that keeps state: it creates subscribers (answering with their
//! `uuid` and `ref_code`), refuses a second one as "already taken", confirms, and lists them in
//! pages of the documented shape, newest first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::path_regex;
use wiremock::{Mock, Request, ResponseTemplate};

use crate::helpers::{
    base_vars, eventually, run_command, BridgeProcess, TestApp, TestDb, ESP_SECRET,
};

const CAMPAIGN: &str = "camp_test";
const TOKEN: &str = "admin-token-for-reconcile-tests-32-chars";

/// What the stand-in SparkLoop holds.
#[derive(Default)]
struct State {
    /// Subscriber objects, newest first.
    subscribers: Vec<Value>,
    /// Addresses confirmed with `PUT {"status": "confirmed"}`.
    confirmed: Vec<String>,
    /// Pages asked for, in order (a 429 counted too).
    pages: Vec<u32>,
    /// This page is answered 429 once.
    throttle_page: Option<u32>,
    /// This page is answered only after a long delay (a run to interrupt).
    slow_page: Option<u32>,
    next_id: u32,
}

/// The stand-in SparkLoop API.
#[derive(Clone, Default)]
struct SparkLoop(Arc<Mutex<State>>);

/// SparkLoop's subscriber object (docs.sparkloop.app), as the stand-in keeps them.
fn subscriber_object(email: &str, uuid: &str, code: &str) -> Value {
    json!({"uuid": uuid, "email": email, "name": null, "ref_code": code,
        "referrer_code": null, "referred": false, "referral_status": null, "ip_address": null,
        "user_agent": null, "origin": "api", "country_code": null, "cpa": null,
        "utm_source": null, "utm_campaign": null, "created_at": "2026-12-01T10:00:00.000Z"})
}

impl SparkLoop {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    /// Adds a subscriber the bridge never heard of (its site script tracked them).
    fn add(&self, email: &str) -> Value {
        let mut state = self.state();
        state.next_id += 1;
        let n = state.next_id;
        let object = subscriber_object(email, &format!("sub_{n:06}"), &format!("code{n}"));
        state.subscribers.insert(0, object.clone());
        object
    }

    /// Changes what SparkLoop has of `email`.
    fn change(&self, email: &str, key: &str, value: Value) {
        let mut state = self.state();
        let object = state
            .subscribers
            .iter_mut()
            .find(|s| s["email"] == email)
            .expect("the stand-in has them");
        object[key] = value;
    }

    /// Forgets `email` (as if created and then lost there).
    fn remove(&self, email: &str) {
        self.state().subscribers.retain(|s| s["email"] != email);
    }

    fn page(&self, request: &Request) -> ResponseTemplate {
        let query: HashMap<String, String> = request.url.query_pairs().into_owned().collect();
        assert_eq!(query.get("per_page").map(String::as_str), Some("200"));
        let page: u32 = query["page"].parse().unwrap();
        let mut state = self.state();
        state.pages.push(page);
        if state.throttle_page == Some(page) {
            state.throttle_page = None;
            return ResponseTemplate::new(429)
                .insert_header("Retry-After", "1")
                .set_body_json(json!({"error": "Too many requests"}));
        }
        let total = state.subscribers.len();
        let total_pages = total.div_ceil(200).max(1);
        let start = ((page as usize - 1) * 200).min(total);
        let end = (start + 200).min(total);
        let body = json!({"subscribers": state.subscribers[start..end],
            "meta": {"per_page": 200, "page": page, "total_pages": total_pages,
                "total_subscribers": total}});
        let answer = ResponseTemplate::new(200).set_body_json(body);
        if state.slow_page == Some(page) {
            return answer.set_delay(Duration::from_secs(60));
        }
        answer
    }
}

impl wiremock::Respond for SparkLoop {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        assert_eq!(request.headers.get("x-api-key").unwrap(), "sl-key");
        let path = request.url.path().to_string();
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        match (request.method.as_str(), path.as_str()) {
            ("GET", p) if p == format!("/v2/campaigns/{CAMPAIGN}/subscribers") => {
                self.page(request)
            }
            ("POST", "/v2/subscribers") => {
                let email = body["email"].as_str().unwrap().to_string();
                if self.state().subscribers.iter().any(|s| s["email"] == email) {
                    return ResponseTemplate::new(400)
                        .set_body_json(json!({"error": "Email has already been taken"}));
                }
                let object = self.add(&email);
                ResponseTemplate::new(200).set_body_json(json!({"subscriber": object}))
            }
            ("PUT", p) if p.ends_with("/unsubscribe") => ResponseTemplate::new(200),
            ("PUT", p) => {
                let email = p.trim_start_matches("/v2/subscribers/").to_string();
                if body["status"] == "confirmed" {
                    self.state().confirmed.push(email.clone());
                }
                let state = self.state();
                match state.subscribers.iter().find(|s| s["email"] == email) {
                    Some(object) => {
                        ResponseTemplate::new(200).set_body_json(json!({"subscriber": object}))
                    }
                    None => ResponseTemplate::new(404).set_body_json(json!({"error": "Not found"})),
                }
            }
            _ => ResponseTemplate::new(404),
        }
    }
}

/// API mode against the stand-in, with a campaign and the admin API.
const API_MODE: &[(&str, &str)] = &[
    ("SPARKLOOP_INCOMING_WEBHOOK_URL", ""),
    ("SPARKLOOP_API_URL", "{stand-in}"),
    ("SPARKLOOP_API_KEY", "sl-key"),
    ("SPARKLOOP_CAMPAIGN_ID", CAMPAIGN),
    ("SPARKLOOP_RATE_LIMIT", "1000/1s"),
    ("BRIDGE_ADMIN_TOKEN", TOKEN),
];

/// A bridge in API mode whose SparkLoop is a fresh stand-in.
async fn spawn(extra: &[(&str, &str)]) -> (TestApp, SparkLoop) {
    let mut vars = API_MODE.to_vec();
    vars.extend_from_slice(extra);
    let app = TestApp::spawn_with(&vars, None).await;
    let sparkloop = SparkLoop::default();
    app.sparkloop
        .register(Mock::given(path_regex("^/v2/")).respond_with(sparkloop.clone()))
        .await;
    (app, sparkloop)
}

/// The variables of `app`, for `reconcile` run beside it.
fn vars_of(app: &TestApp) -> HashMap<String, String> {
    let mut vars = base_vars(&app.db, &app.sparkloop);
    for (k, v) in API_MODE {
        vars.insert(k.to_string(), v.replace("{stand-in}", &app.sparkloop.uri()));
    }
    vars
}

/// Runs `referral-bridge reconcile ARGS`; returns (success, stdout, stderr).
async fn reconcile(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let vars = vars_of(app);
    let mut all = vec!["reconcile".to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        run_command(&args, &vars)
    })
    .await
    .unwrap()
}

/// The counts `reconcile` printed, by kind (and `platform`, `here`, `differences`).
fn counts(stdout: &str) -> HashMap<String, u64> {
    let mut counts = HashMap::new();
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("reconciled: ") {
            let numbers: Vec<u64> = rest
                .split(", ")
                .map(|part| part.split(' ').next().unwrap().parse().unwrap())
                .collect();
            counts.insert("platform".into(), numbers[0]);
            counts.insert("here".into(), numbers[1]);
            counts.insert("differences".into(), numbers[2]);
        } else if let Some((kind, count)) = line.split_once(": ") {
            counts.insert(
                kind.into(),
                count.split(' ').next().unwrap().parse().unwrap(),
            );
        }
    }
    counts
}

fn expect(stdout: &str, expected: &[(&str, u64)]) {
    let counts = counts(stdout);
    for (kind, n) in expected {
        assert_eq!(
            (*kind, counts.get(*kind).copied()),
            (*kind, Some(*n)),
            "{stdout}"
        );
    }
}

async fn post(app: &TestApp, event: Value) {
    assert_eq!(app.post_esp(&event.to_string()).await.status(), 200);
}

fn subscribe(email: &str) -> Value {
    json!({"type": "subscribe", "subscriber": {"email": email}})
}

#[tokio::test]
async fn a_taken_or_returning_signup_is_confirmed_and_sparkloops_answer_fills_the_fields() {
    let (app, sparkloop) = spawn(&[]).await;
    // Tracked by SparkLoop's site script before the ESP's webhook arrives.
    sparkloop.add("tracked@example.com");
    post(&app, subscribe("tracked@example.com")).await;
    post(&app, subscribe("new@example.com")).await;
    app.drain().await;
    // A new one takes its id and code from the answer to the POST, without a callback.
    let write = app.wait_for_write("new@example.com").await;
    assert_eq!(write["fields"]["RH_SUBID"], "sub_000002", "{write}");
    assert_eq!(write["fields"]["RH_CODE"], "code2", "{write}");
    // The tracked one is confirmed, and its id and code come from the PUT's answer.
    let write = app.wait_for_write("tracked@example.com").await;
    assert_eq!(write["fields"]["RH_CODE"], "code1", "{write}");
    assert_eq!(sparkloop.state().confirmed, ["tracked@example.com"]);

    // A resubscribe: POST, "already taken", then the confirming PUT.
    post(
        &app,
        json!({"type": "unsubscribe", "subscriber": {"email": "new@example.com"}}),
    )
    .await;
    post(&app, subscribe("new@example.com")).await;
    app.drain().await;
    eventually("the return confirmed", Duration::from_secs(15), || {
        sparkloop.state().confirmed.len() == 2
    })
    .await;
    assert_eq!(
        sparkloop.state().confirmed,
        ["tracked@example.com", "new@example.com"]
    );
    app.stop().await;
}

#[tokio::test]
async fn every_kind_of_difference_is_found_reported_and_mended() {
    let (app, sparkloop) = spawn(&[]).await;
    // One by one, so that SparkLoop numbers them in this order.
    for email in [
        "same@example.com",
        "differ@example.com",
        "lost@example.com",
        "left@example.com",
    ] {
        post(&app, subscribe(email)).await;
        app.drain().await;
    }
    app.wait_until_esp_idle().await;
    post(
        &app,
        json!({"type": "unsubscribe", "subscriber": {"email": "left@example.com"}}),
    )
    .await;
    app.drain().await;
    // Drift: SparkLoop lost one, changed another's code and rejected their referral, and has
    // one the bridge never saw.
    sparkloop.remove("lost@example.com");
    sparkloop.change("differ@example.com", "ref_code", json!("newcode"));
    sparkloop.change("differ@example.com", "referral_status", json!("rejected"));
    sparkloop.add("unknown@example.com");
    let jobs_before = app.db.count("SELECT COUNT(*) AS n FROM jobs");

    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.csv");
    let report_arg = report.to_str().unwrap().to_string();
    let (ok, stdout, stderr) = reconcile(&app, &["--report", &report_arg]).await;
    assert!(ok, "{stdout}{stderr}");
    expect(
        &stdout,
        &[
            ("missing_at_platform", 1),
            ("unsubscribed_here", 1),
            ("unknown_here", 1),
            ("fields_differ", 2),
            ("platform", 4),
            ("here", 4),
            ("differences", 5),
        ],
    );
    let mut rows: Vec<String> = std::fs::read_to_string(&report)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(rows.remove(0), "email,kind,field,here,platform");
    rows.sort();
    assert_eq!(
        rows,
        [
            "differ@example.com,fields_differ,RH_CODE,code2,newcode",
            "differ@example.com,fields_differ,RH_ISREF,NO,REJECTED",
            "left@example.com,unsubscribed_here,,unsubscribed,sub_000004",
            "lost@example.com,missing_at_platform,,subscribed,",
            "unknown@example.com,unknown_here,,,sub_000005",
        ]
    );
    // Without --fix nothing is written.
    assert_eq!(app.db.count("SELECT COUNT(*) AS n FROM jobs"), jobs_before);
    assert_eq!(app.db.count("SELECT COUNT(*) AS n FROM subscribers"), 4);
    assert_eq!(app.db.count("SELECT COUNT(*) AS n FROM reconcile_runs"), 0);

    let (ok, stdout, stderr) = reconcile(&app, &["--fix"]).await;
    assert!(ok, "{stdout}{stderr}");
    expect(&stdout, &[("differences", 5)]);
    app.drain().await;
    app.wait_until_esp_idle().await;
    // The lost one is subscribed at SparkLoop again; the others' fields are SparkLoop's.
    assert!(sparkloop
        .state()
        .subscribers
        .iter()
        .any(|s| s["email"] == "lost@example.com"));
    let writes = app.esp_writes().await;
    let last = |email: &str| {
        writes
            .iter()
            .rev()
            .find(|w| w["email"] == email)
            .unwrap_or_else(|| panic!("no write for {email}: {writes:#?}"))
            .clone()
    };
    assert_eq!(last("differ@example.com")["fields"]["RH_CODE"], "newcode");
    assert_eq!(last("differ@example.com")["fields"]["RH_ISREF"], "REJECTED");
    assert_eq!(
        last("unknown@example.com")["fields"]["RH_SUBID"],
        "sub_000005"
    );
    assert_eq!(last("lost@example.com")["fields"]["RH_SUBID"], "sub_000006");

    // Once the queue has drained, nothing is left but the unsubscribed one.
    let (ok, stdout, stderr) = reconcile(&app, &[]).await;
    assert!(ok, "{stdout}{stderr}");
    expect(
        &stdout,
        &[
            ("missing_at_platform", 0),
            ("unsubscribed_here", 1),
            ("unknown_here", 0),
            ("fields_differ", 0),
            ("platform", 5),
            ("here", 5),
        ],
    );

    // The run that mended is what the API, the metrics and the dashboard show.
    let status: Value = app
        .client
        .get(format!("{}/admin/api/reconcile", app.address))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run = &status["last_run"];
    assert_eq!(run["total_differences"], 5, "{status}");
    assert_eq!(run["differences"]["fields_differ"], 2, "{status}");
    assert_eq!(run["platform_subscribers"], 4, "{status}");
    assert_eq!(status["every"], Value::Null);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("bridge_reconcile_differences{kind=\"missing_at_platform\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("bridge_reconcile_last_run_timestamp_seconds "));
    app.stop().await;
}

#[tokio::test]
async fn pages_are_read_to_the_end_through_a_429_and_a_second_run_is_clean() {
    let (app, sparkloop) = spawn(&[]).await;
    for i in 0..450 {
        sparkloop.add(&format!("reader{i}@example.com"));
    }
    sparkloop.state().throttle_page = Some(2);
    let (ok, stdout, stderr) = reconcile(&app, &["--fix"]).await;
    assert!(ok, "{stdout}{stderr}");
    expect(
        &stdout,
        &[("unknown_here", 450), ("platform", 450), ("here", 0)],
    );
    assert_eq!(sparkloop.state().pages, [1, 2, 2, 3]);
    assert!(stderr.contains("SparkLoop asked to wait (429)"), "{stderr}");
    assert!(stderr.contains("page 3/3, 450 subscribers"), "{stderr}");
    assert_eq!(app.db.count("SELECT COUNT(*) AS n FROM subscribers"), 450);
    let (ok, stdout, stderr) = reconcile(&app, &[]).await;
    assert!(ok, "{stdout}{stderr}");
    expect(
        &stdout,
        &[("differences", 0), ("platform", 450), ("here", 450)],
    );
    app.stop().await;
}

#[tokio::test]
async fn a_run_killed_half_way_leaves_whole_pages_and_the_next_run_goes_on() {
    let (app, sparkloop) = spawn(&[]).await;
    for i in 0..450 {
        sparkloop.add(&format!("reader{i}@example.com"));
    }
    sparkloop.state().slow_page = Some(2);
    let vars = vars_of(&app);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_referral-bridge"))
        .args(["reconcile", "--fix", "--report", "/dev/null/never"])
        .current_dir(std::env::temp_dir())
        .env_clear()
        .envs(&vars)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // A report that cannot be written stops the run before it reads anything.
    assert!(!child.wait().unwrap().success());
    assert!(sparkloop.state().pages.is_empty());

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_referral-bridge"))
        .args(["reconcile", "--fix"])
        .current_dir(std::env::temp_dir())
        .env_clear()
        .envs(&vars)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let db = &app.db;
    eventually("page 2 asked for", Duration::from_secs(20), || {
        sparkloop.state().pages.contains(&2)
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    // Page 1 is mended whole; nothing of page 2; no run recorded.
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM subscribers"), 200);
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM reconcile_runs"), 0);

    sparkloop.state().slow_page = None;
    let (ok, stdout, stderr) = reconcile(&app, &["--fix"]).await;
    assert!(ok, "{stdout}{stderr}");
    expect(&stdout, &[("unknown_here", 250), ("fields_differ", 0)]);
    let (ok, stdout, stderr) = reconcile(&app, &[]).await;
    assert!(ok, "{stdout}{stderr}");
    expect(&stdout, &[("differences", 0), ("here", 450)]);
    app.stop().await;
}

#[tokio::test]
async fn a_missing_setting_is_named() {
    let (app, _sparkloop) = spawn(&[]).await;
    let mut vars = vars_of(&app);
    vars.remove("SPARKLOOP_CAMPAIGN_ID");
    let (ok, _, stderr) = tokio::task::spawn_blocking(move || run_command(&["reconcile"], &vars))
        .await
        .unwrap();
    assert!(!ok);
    assert!(
        stderr.contains("SPARKLOOP_CAMPAIGN_ID is not set"),
        "{stderr}"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_periodic_run_on_two_instances_runs_once() {
    let db = TestDb::new();
    let server = wiremock::MockServer::start().await;
    let sparkloop = SparkLoop::default();
    server
        .register(Mock::given(path_regex("^/v2/")).respond_with(sparkloop.clone()))
        .await;
    sparkloop.add("one@example.com");
    let mut vars = base_vars(&db, &server);
    for (k, v) in API_MODE {
        vars.insert(k.to_string(), v.replace("{stand-in}", &server.uri()));
    }
    vars.insert("BRIDGE_RECONCILE_EVERY".into(), "1h".into());
    vars.insert("ESP_WEBHOOK_SECRET".into(), ESP_SECRET.into());
    // The first creates the database; the second starts once it is there.
    let first = BridgeProcess::start(&vars);
    let second = BridgeProcess::start(&vars);
    eventually("a run recorded", Duration::from_secs(20), || {
        db.count("SELECT COUNT(*) AS n FROM reconcile_runs") == 1
    })
    .await;
    // Both check the schedule every second; neither runs again within the hour.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM reconcile_runs"), 1);
    assert_eq!(sparkloop.state().pages, [1]);
    let logs = format!(
        "{}{}",
        first.log.lock().unwrap(),
        second.log.lock().unwrap()
    );
    assert_eq!(
        logs.matches("reconcile: 1 platform subscribers").count(),
        1,
        "{logs}"
    );
    assert!(first.terminate());
    assert!(second.terminate());
}

#[tokio::test]
async fn an_esp_that_cannot_list_its_contacts_is_named() {
    let (app, _sparkloop) = spawn(&[]).await;
    let vars = vars_of(&app);
    let (ok, _, stderr) =
        tokio::task::spawn_blocking(move || run_command(&["reconcile", "--esp"], &vars))
            .await
            .unwrap();
    assert!(!ok);
    assert!(
        stderr.contains("ESP_ADAPTER custom cannot list its contacts"),
        "{stderr}"
    );
    app.stop().await;
}
