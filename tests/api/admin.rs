//! The admin API (`/admin/api/`) and the dashboard's forms, black-box: authentication, filters,
//! keyset pagination, retry and cancel changing what is sent, a subscriber's timeline, counts,
//! and the OpenAPI document.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{eventually, subscribe, TestApp};

const TOKEN: &str = "admin-token-for-tests-of-32-characters-or-more";

async fn get(app: &TestApp, url: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut request = app.client.get(format!("{}{url}", app.address));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn post(app: &TestApp, url: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut request = app
        .client
        .post(format!("{}{url}", app.address))
        .bearer_auth(TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A bridge with the admin token whose SparkLoop refuses `refused@` once (400: dead at once)
/// and fails `stuck@` with 503 (retried again and again).
async fn spawn() -> TestApp {
    let app = TestApp::spawn_with(
        &[
            ("BRIDGE_ADMIN_TOKEN", TOKEN),
            ("RETRY_BASE_DELAY", "1s"),
            ("RETRY_MAX_DELAY", "2s"),
        ],
        Some(
            Mock::given(method("POST"))
                .and(path("/incoming"))
                .and(body_string_contains("refused@"))
                .respond_with(
                    ResponseTemplate::new(400).set_body_json(json!({"error": "Email is invalid"})),
                )
                .up_to_n_times(1),
        ),
    )
    .await;
    app.sparkloop
        .register(
            Mock::given(method("POST"))
                .and(path("/incoming"))
                .and(body_string_contains("stuck@"))
                .respond_with(ResponseTemplate::new(503)),
        )
        .await;
    app
}

fn ids(page: &Value) -> Vec<i64> {
    page["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn the_admin_api_is_off_without_a_token_and_refuses_wrong_ones() {
    let app = TestApp::spawn().await;
    let (status, _) = get(&app, "/admin/api/stats", Some("anything")).await;
    assert_eq!(status, 404);
    let page = app.get("/admin/").await;
    assert_eq!(page.status(), 404);
    app.stop().await;

    let app = spawn().await;
    let response = app.get("/admin/api/deliveries").await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["status"], 401);
    assert!(problem["error"].as_str().unwrap().contains("admin token"));
    assert_eq!(get(&app, "/admin/api/stats", Some("wrong")).await.0, 401);
    // Credentials are checked before anything else of the request is read.
    for path in [
        "/admin/api/deliveries/9223372036854775808",
        "/admin/api/deliveries?limit=null",
        "/admin/api/deliveries/abc",
    ] {
        let (status, problem) = get(&app, path, None).await;
        assert_eq!((path, status), (path, StatusCode::UNAUTHORIZED));
        assert_eq!(problem["status"], 401);
    }
    let (status, stats) = get(&app, "/admin/api/stats", Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(stats["last_hour"]["received"], 0);
    // Parameters that do not parse, and paths that name nothing, answer problem documents too.
    for (path, code) in [
        ("/admin/api/deliveries?limit=abc", 400),
        ("/admin/api/deliveries/abc", 404),
        ("/admin/api/no-such-thing", 404),
    ] {
        let response = app
            .client
            .get(format!("{}{path}", app.address))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!((path, response.status().as_u16()), (path, code));
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.unwrap();
        assert!(problem["error"].is_string(), "{path}: {problem}");
        assert_eq!(problem["status"], code);
    }

    // The OpenAPI document covers the webhooks and the admin API, and names no secret.
    let (status, doc) = get(&app, "/admin/api/openapi.json", Some(TOKEN)).await;
    assert_eq!(status, 200);
    for path in [
        "/webhooks/esp",
        "/webhooks/sparkloop",
        "/webhooks/loyaltysurf",
        "/webhooks/referralloop",
        "/healthz",
        "/admin/api/deliveries",
        "/admin/api/deliveries/{id}/retry",
        "/admin/api/deliveries/{id}/cancel",
        "/admin/api/deliveries/retry-dead",
        "/admin/api/subscribers/{email}",
        "/admin/api/stats",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    assert!(!doc.to_string().contains(TOKEN));
    app.stop().await;
}

#[tokio::test]
async fn deliveries_are_filtered_paged_retried_and_cancelled() {
    let app = spawn().await;
    for n in 0..5 {
        app.post_esp(&subscribe(&format!("ok{n}@example.com")))
            .await;
    }
    app.post_esp(&subscribe("refused@example.com")).await;
    let db = &app.db;
    eventually("the six first tries", Duration::from_secs(15), || {
        db.count("SELECT COUNT(*) AS n FROM jobs WHERE status IN ('done', 'dead')") == 6
    })
    .await;

    // Filters and keyset pages.
    let (_, dead) = get(&app, "/admin/api/deliveries?status=dead", Some(TOKEN)).await;
    assert_eq!(dead["deliveries"].as_array().unwrap().len(), 1);
    let dead_job = &dead["deliveries"][0];
    assert_eq!(dead_job["subscriber"], "refused@example.com");
    assert_eq!(dead_job["destination"], "sparkloop");
    let dead_id = dead_job["id"].as_i64().unwrap();
    let (_, first) = get(
        &app,
        "/admin/api/deliveries?status=done&limit=2",
        Some(TOKEN),
    )
    .await;
    let (_, second) = get(
        &app,
        &format!(
            "/admin/api/deliveries?status=done&limit=2&before={}",
            first["next_before"]
        ),
        Some(TOKEN),
    )
    .await;
    let (_, third) = get(
        &app,
        &format!(
            "/admin/api/deliveries?status=done&limit=2&before={}",
            second["next_before"]
        ),
        Some(TOKEN),
    )
    .await;
    let all: Vec<i64> = [ids(&first), ids(&second), ids(&third)].concat();
    assert_eq!(all.len(), 5);
    assert!(all.windows(2).all(|w| w[0] > w[1]), "{all:?}");
    assert!(third["next_before"].is_null());
    let (_, one) = get(
        &app,
        "/admin/api/deliveries?email=OK3@example.com",
        Some(TOKEN),
    )
    .await;
    assert_eq!(one["deliveries"].as_array().unwrap().len(), 1);
    let (_, none) = get(&app, "/admin/api/deliveries?destination=esp", Some(TOKEN)).await;
    assert_eq!(ids(&none), Vec::<i64>::new());
    let (_, later) = get(
        &app,
        "/admin/api/deliveries?since=2100-01-01T00:00:00Z",
        Some(TOKEN),
    )
    .await;
    assert_eq!(ids(&later), Vec::<i64>::new());
    let (_, earlier) = get(
        &app,
        "/admin/api/deliveries?until=2100-01-01T00:00:00Z",
        Some(TOKEN),
    )
    .await;
    assert_eq!(ids(&earlier).len(), 6);
    let (status, problem) = get(&app, "/admin/api/deliveries?status=lost", Some(TOKEN)).await;
    assert_eq!(status, 400);
    assert!(problem["detail"].as_str().unwrap().contains("status"));
    assert_eq!(
        get(&app, "/admin/api/deliveries?since=yesterday", Some(TOKEN))
            .await
            .0,
        400
    );

    // One delivery, with its attempt and SparkLoop's answer.
    let (_, detail) = get(
        &app,
        &format!("/admin/api/deliveries/{dead_id}"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(detail["status"], "dead");
    assert_eq!(detail["attempts_made"][0]["status_code"], 400);
    assert!(detail["attempts_made"][0]["response_body"]
        .as_str()
        .unwrap()
        .contains("Email is invalid"));
    assert!(detail["payload"]
        .as_str()
        .unwrap()
        .contains("refused@example.com"));
    assert_eq!(
        get(&app, "/admin/api/deliveries/999999", Some(TOKEN))
            .await
            .0,
        404
    );

    // Retry: SparkLoop takes it now; it is sent again and done.
    let (status, result) = post(
        &app,
        &format!("/admin/api/deliveries/{dead_id}/retry"),
        None,
    )
    .await;
    assert_eq!(
        (status, &result["status"]),
        (StatusCode::OK, &json!("queued"))
    );
    eventually(
        "the retried delivery to be done",
        Duration::from_secs(10),
        || {
            db.count(&format!(
                "SELECT COUNT(*) AS n FROM jobs WHERE id = {dead_id} AND status = 'done'"
            )) == 1
        },
    )
    .await;
    let refused_calls = app
        .requests_to("/incoming")
        .await
        .iter()
        .filter(|r| String::from_utf8_lossy(&r.body).contains("refused@"))
        .count();
    assert_eq!(refused_calls, 2);

    // Cancel: a subscriber whose line is stuck behind a failing head; the waiting job behind it
    // is cancelled (dead, replayable), the head cannot be while it is open and retrying.
    app.post_esp(&subscribe("stuck@example.com")).await;
    let unsubscribe = json!({"type": "unsubscribe", "subscriber": {"email": "stuck@example.com"}});
    app.post_esp(&unsubscribe.to_string()).await;
    let (_, waiting) = get(
        &app,
        "/admin/api/deliveries?status=waiting&email=stuck@example.com",
        Some(TOKEN),
    )
    .await;
    let waiting_id = ids(&waiting)[0];
    let (status, result) = post(
        &app,
        &format!("/admin/api/deliveries/{waiting_id}/cancel"),
        None,
    )
    .await;
    assert_eq!(
        (status, &result["status"]),
        (StatusCode::OK, &json!("cancelled"))
    );
    let (_, cancelled) = get(
        &app,
        &format!("/admin/api/deliveries/{waiting_id}"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(cancelled["status"], "dead");
    assert_eq!(cancelled["last_error"], "cancelled by the operator");
    assert_eq!(
        post(
            &app,
            &format!("/admin/api/deliveries/{waiting_id}/cancel"),
            None
        )
        .await
        .0,
        409
    );
    assert_eq!(
        post(
            &app,
            &format!("/admin/api/deliveries/{dead_id}/cancel"),
            None
        )
        .await
        .0,
        409
    );

    // Retry every dead one, by destination: none for the ESP, the cancelled one for SparkLoop.
    let (_, esp) = post(
        &app,
        "/admin/api/deliveries/retry-dead",
        Some(json!({"destination": "esp"})),
    )
    .await;
    assert_eq!(esp["count"], 0);
    let (_, all_dead) = post(&app, "/admin/api/deliveries/retry-dead", None).await;
    assert_eq!(all_dead["count"], 1);
    let (_, requeued) = get(
        &app,
        &format!("/admin/api/deliveries/{waiting_id}"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(requeued["status"], "waiting", "behind the stuck head again");
    app.stop().await;
}

#[tokio::test]
async fn a_subscriber_has_fields_and_a_timeline_and_stats_count() {
    let app = spawn().await;
    app.post_esp(&subscribe("ann@example.com")).await;
    app.wait_for_requests(1).await;
    let db = &app.db;
    eventually(
        "the subscribe to be recorded",
        Duration::from_secs(10),
        || db.count("SELECT COUNT(*) AS n FROM attempts") == 1,
    )
    .await;
    let callback = json!({"type": "sync_subscriber", "subscriber": {"id": "sub_1",
        "email": "ann@example.com", "referral_code": "ann1", "tot_referrals": 2}});
    assert_eq!(
        app.post_sparkloop(&callback.to_string()).await.status(),
        200
    );
    app.wait_until_esp_idle().await;
    eventually(
        "both deliveries to be done",
        Duration::from_secs(10),
        || db.count("SELECT COUNT(*) AS n FROM jobs WHERE status = 'done'") == 2,
    )
    .await;

    let (status, view) = get(&app, "/admin/api/subscribers/Ann@Example.com", Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(view["email"], "ann@example.com");
    assert_eq!(view["fields"]["RH_CODE"], "ann1");
    assert_eq!(view["fields"]["RH_TOTREF"], 2);
    let kinds: Vec<&str> = view["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["inbound", "job", "attempt", "inbound", "job", "attempt"],
        "{view:#}"
    );
    assert!(view["timeline"][0]["summary"]
        .as_str()
        .unwrap()
        .contains("esp subscribe"));
    assert_eq!(
        get(
            &app,
            "/admin/api/subscribers/nobody@example.com",
            Some(TOKEN)
        )
        .await
        .0,
        404
    );

    let (_, stats) = get(&app, "/admin/api/stats", Some(TOKEN)).await;
    assert_eq!(stats["last_hour"]["received"], 2);
    assert_eq!(stats["last_hour"]["delivered"], 2);
    assert_eq!(stats["last_hour"]["success_rate"], 1.0);
    assert_eq!(stats["last_day"]["attempts"], 2);
    let queues = stats["queues"].as_array().unwrap();
    assert!(queues
        .iter()
        .any(|q| q["destination"] == "sparkloop" && q["open"] == 0));
    app.stop().await;
}

#[tokio::test]
async fn the_dashboard_signs_in_with_a_strict_cookie_and_refuses_forged_forms() {
    let app = spawn().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = |token: &str, origin: Option<&str>| {
        let mut request = client
            .post(format!("{}/admin/login", app.address))
            .form(&[("token", token)]);
        if let Some(origin) = origin {
            request = request.header("Origin", origin);
        }
        request.send()
    };
    let page = client
        .get(format!("{}/admin/", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("name=\"token\""), "the sign-in form");
    assert_eq!(login("wrong", None).await.unwrap().status(), 401);
    // A browser is sent back to the sign-in page, which says why (a fixed text per reason).
    let browser = client
        .post(format!("{}/admin/login", app.address))
        .header("Accept", "text/html")
        .form(&[("token", "wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(browser.status(), 303);
    let back = browser.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(back, "/admin/?signin=wrong");
    let page = client
        .get(format!("{}{back}", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("That is not the admin token."), "{page}");
    assert_eq!(
        login(TOKEN, Some("https://evil.example"))
            .await
            .unwrap()
            .status(),
        403
    );
    let signed_in = login(TOKEN, Some(&app.address)).await.unwrap();
    assert_eq!(signed_in.status(), 303);
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP on loopback: {cookie}"
    );
    assert!(!cookie.contains(TOKEN), "the token itself is not kept");
    let session = cookie.split(';').next().unwrap().to_string();

    let page = client
        .get(format!("{}/admin/", app.address))
        .header("Cookie", &session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Dead deliveries"), "{page}");
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_string();
    // The session is the dashboard's only: the API takes the bearer token alone, so no other
    // site can make a signed-in browser call it.
    let api = client
        .get(format!("{}/admin/api/stats", app.address))
        .header("Cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 401);
    let api = client
        .post(format!("{}/admin/api/deliveries/retry-dead", app.address))
        .header("Cookie", &session)
        .header("Origin", "http://evil.example")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        api.status(),
        401,
        "a cross-site POST with the cookie does nothing"
    );
    let forged = client
        .post(format!("{}/admin/deliveries/1/retry", app.address))
        .header("Cookie", &session)
        .form(&[("csrf", "guess")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 400);
    let error: Value = forged.json().await.unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("stale"),
        "{error}"
    );
    let cross = client
        .post(format!("{}/admin/deliveries/1/retry", app.address))
        .header("Cookie", &session)
        .header("Origin", "https://evil.example")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 400);
    let unknown = client
        .post(format!("{}/admin/deliveries/999/retry", app.address))
        .header("Cookie", &session)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 303);
    assert!(unknown.headers()["location"]
        .to_str()
        .unwrap()
        .contains("error="));

    // Each sign-in is a session of its own, stored only as a hash, with the configured expiry.
    let second = login(TOKEN, None).await.unwrap();
    let second = second.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        second.contains("Max-Age=43200"),
        "12 h by default: {second}"
    );
    let second = second.split(';').next().unwrap().to_string();
    assert_ne!(second, session, "a random id each time");
    let id = session.split_once('=').unwrap().1;
    assert_eq!(
        app.db.count(&format!(
            "SELECT COUNT(*) AS n FROM admin_sessions WHERE id_sha256 = '{id}'"
        )),
        0,
        "the id itself is not stored"
    );
    assert_eq!(
        app.db.count(
            "SELECT COUNT(*) AS n FROM admin_sessions WHERE expires_at - created_at = 43200000"
        ),
        2
    );
    let signed_in = |cookie: String| {
        let request = client
            .get(format!("{}/admin/", app.address))
            .header("Cookie", cookie)
            .send();
        async move {
            request
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
                .contains("Dead deliveries")
        }
    };
    // Signing out ends that session, not the other one.
    let out = client
        .post(format!("{}/admin/logout", app.address))
        .header("Cookie", &session)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    assert!(
        !signed_in(session.clone()).await,
        "a revoked session signs nothing in"
    );
    assert!(signed_in(second.clone()).await);
    // An expired one neither.
    app.db
        .execute("UPDATE admin_sessions SET expires_at = created_at");
    assert!(
        !signed_in(second).await,
        "an expired session signs nothing in"
    );

    // Five sign-ins a minute from one address (four so far): one more wrong one is told so, the
    // sixth attempt is refused whatever its token, with the time to wait.
    assert_eq!(login("wrong", None).await.unwrap().status(), 401);
    for token in ["wrong", TOKEN] {
        let limited = login(token, None).await.unwrap();
        assert_eq!(limited.status(), 429, "{token}");
        let wait: u64 = limited.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&wait), "{wait}");
    }
    app.stop().await;
}
