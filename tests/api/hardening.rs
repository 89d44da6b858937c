//! Strict input and exact output (DESIGN 3.3, 3.7): ids digit for digit, emails and names
//! validated at the edge, known event types with a bad subject refused, no-op writes not sent.

use serde_json::{json, Value};

use crate::helpers::{run_command, TestApp, ESP_FIELDS_PATH};

const TOKEN: &str = "hardening-admin-token-of-32-characters-or-more";

/// An id beyond 64 bits, as an ESP may send it.
const BIG_ID: &str = "12345678901234567890123";

/// A SparkLoop callback for `email`, as the `sync_subscriber` fixture has it.
fn sync_subscriber(email: &str) -> String {
    json!({"type": "sync_subscriber", "subscriber": {"id": "sub_1", "email": email,
        "referral_code": "abc", "referral_count": 1}})
    .to_string()
}

#[tokio::test]
async fn a_numeric_id_of_any_length_is_forwarded_digit_for_digit() {
    let app = TestApp::spawn_with(&[("BRIDGE_ADMIN_TOKEN", TOKEN)], None).await;
    let subscribe = format!(
        r#"{{"type":"subscribe","subscriber":{{"email":"big@example.com","id":{BIG_ID}}}}}"#
    );
    assert_eq!(app.post_esp(&subscribe).await.status(), 200);
    app.wait_for_requests(1).await;
    let sent = String::from_utf8(app.requests_to("/incoming").await[0].body.clone()).unwrap();
    assert!(sent.contains(&format!(r#""id":{BIG_ID}"#)), "{sent}");

    assert_eq!(
        app.post_sparkloop(&sync_subscriber("big@example.com"))
            .await
            .status(),
        200
    );
    app.drain().await;
    let writes = app.requests_to(ESP_FIELDS_PATH).await;
    let write = String::from_utf8(writes.last().expect("a field write").body.clone()).unwrap();
    assert!(write.contains(&format!(r#""id":{BIG_ID}"#)), "{write}");

    let view = app
        .client
        .get(format!(
            "{}/admin/api/subscribers/big@example.com",
            app.address
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(view.contains(&format!(r#""esp_id":{BIG_ID}"#)), "{view}");
    app.stop().await;
}

#[tokio::test]
async fn an_imported_numeric_id_of_any_length_stays_a_number() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("people.csv");
    std::fs::write(
        &file,
        format!("email,id\nbig@example.com,{BIG_ID}\nzero@example.com,0012\n"),
    )
    .unwrap();
    let vars = std::collections::HashMap::from([
        ("DATABASE_URL".to_string(), app.db.url.clone()),
        (
            "SPARKLOOP_INCOMING_WEBHOOK_URL".to_string(),
            format!("{}/incoming", app.sparkloop.uri()),
        ),
    ]);
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        run_command(&["import", file.to_str().unwrap()], &vars)
    })
    .await
    .unwrap();
    assert!(ok, "{out}{err}");
    app.wait_for_requests(2).await;
    let bodies: Vec<String> = app
        .requests_to("/incoming")
        .await
        .iter()
        .map(|r| String::from_utf8(r.body.clone()).unwrap())
        .collect();
    assert!(
        bodies
            .iter()
            .any(|b| b.contains(&format!(r#""id":{BIG_ID}"#))),
        "{bodies:?}"
    );
    // A leading zero is not a number's: it stays text.
    assert!(
        bodies.iter().any(|b| b.contains(r#""id":"0012""#)),
        "{bodies:?}"
    );
    let _: Vec<Value> = bodies
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    app.stop().await;
}

#[tokio::test]
async fn bad_addresses_and_long_names_are_refused_naming_the_field() {
    let app = TestApp::spawn_with(&[("BRIDGE_ADMIN_TOKEN", TOKEN)], None).await;
    let huge = format!("{}@example.com", "x".repeat(1_000_000));
    let long_name = "n".repeat(257);
    for (subscriber, field) in [
        (
            json!({"email": "<script>alert(1)</script>@example.com"}),
            "subscriber.email",
        ),
        (
            json!({"email": format!("{}@example.com", "a".repeat(300))}),
            "subscriber.email",
        ),
        (json!({"email": huge}), "subscriber.email"),
        (
            json!({"email": "ok@example.com", "first_name": long_name}),
            "first_name",
        ),
    ] {
        let body = json!({"type": "subscribe", "subscriber": subscriber}).to_string();
        let response = app.post_esp(&body).await;
        assert_eq!(response.status(), 400, "{field}");
        let error: Value = response.json().await.unwrap();
        let message = error["error"].as_str().unwrap();
        assert!(message.contains(&format!("`{field}`")), "{message}");
        assert!(
            message.len() < 400,
            "the error echoes the input: {} bytes",
            message.len()
        );
    }
    // Callbacks of a known type need their subject; unknown types stay 200.
    for (body, field) in [
        (json!({"type": "sync_subscriber"}), "subscriber"),
        (
            json!({"type": "sync_subscriber", "subscriber": {"email": "nope"}}),
            "subscriber.email",
        ),
    ] {
        let response = app.post_sparkloop(&body.to_string()).await;
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.unwrap();
        assert!(
            error["error"]
                .as_str()
                .unwrap()
                .contains(&format!("`{field}`")),
            "{error}"
        );
    }
    let unknown = json!({"type": "brand_new_event", "subscriber": {"email": "nope"}});
    assert_eq!(app.post_sparkloop(&unknown.to_string()).await.status(), 200);
    // The admin API: no subscriber has a text that is not an address (404, saying why: the
    // OpenAPI document declares the path parameter as any text).
    let response = app
        .client
        .get(format!(
            "{}/admin/api/subscribers/a%20b@example.com",
            app.address
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let problem: Value = response.json().await.unwrap();
    assert!(
        problem["error"].as_str().unwrap().contains("no subscriber"),
        "{problem}"
    );
    app.drain().await;
    assert!(
        app.received().await.is_empty(),
        "nothing refused was forwarded"
    );
    assert_eq!(app.db.count("SELECT COUNT(*) AS n FROM subscribers"), 0);
    app.stop().await;
}

#[tokio::test]
async fn the_echo_of_a_field_write_is_answered_unchanged() {
    let app = TestApp::spawn().await;
    let subscribe = json!({"type": "subscribe",
        "subscriber": {"email": "echo@example.com", "first_name": "Echo"}});
    let answer: Value = app
        .post_esp(&subscribe.to_string())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answer, json!({"status": "stored"}));
    // The ESP tells of the same person again, with nothing new (as after the bridge's write).
    let update = json!({"type": "update",
        "subscriber": {"email": "echo@example.com", "first_name": "Echo"}});
    let answer: Value = app
        .post_esp(&update.to_string())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answer, json!({"status": "unchanged"}));
    app.drain().await;
    assert_eq!(app.received().await.len(), 1, "only the subscribe was sent");
    app.stop().await;
}

/// `POST` of `body` to an admin API path; the status and the JSON answer.
async fn admin_post(app: &TestApp, path: &str, body: &str) -> (u16, Value) {
    let response = app
        .client
        .post(format!("{}{path}", app.address))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The ids of `email`'s jobs to SparkLoop in `status`, oldest first.
fn job_ids(app: &TestApp, email: &str, status: &str) -> Vec<i64> {
    let mut ids = Vec::new();
    for n in 0.. {
        let found = app.db.count(&format!(
            "SELECT COALESCE(MIN(j.id), 0) AS n FROM jobs j JOIN subscribers s ON s.id = j.subscriber_id \
             WHERE s.email = '{email}' AND j.destination = 'sparkloop' AND j.status = '{status}' \
             AND j.id > {}",
            ids.last().copied().unwrap_or(0)
        ));
        if found == 0 || n > 100 {
            break;
        }
        ids.push(found);
    }
    ids
}

fn cli_vars(app: &TestApp) -> std::collections::HashMap<String, String> {
    std::collections::HashMap::from([
        ("DATABASE_URL".to_string(), app.db.url.clone()),
        (
            "SPARKLOOP_INCOMING_WEBHOOK_URL".to_string(),
            format!("{}/incoming", app.sparkloop.uri()),
        ),
    ])
}

#[tokio::test]
async fn replays_keep_each_subscribers_order_and_admin_bodies_are_strict() {
    let app = TestApp::spawn_with(
        &[("BRIDGE_ADMIN_TOKEN", TOKEN)],
        Some(
            wiremock::Mock::given(wiremock::matchers::method("POST"))
                .and(wiremock::matchers::path("/incoming"))
                .and(wiremock::matchers::body_string_contains("order@"))
                .respond_with(wiremock::ResponseTemplate::new(400)),
        ),
    )
    .await;
    let subscribe = json!({"type": "subscribe", "subscriber": {"email": "order@example.com"}});
    let update = json!({"type": "update",
        "subscriber": {"email": "order@example.com", "first_name": "Later"}});
    assert_eq!(app.post_esp(&subscribe.to_string()).await.status(), 200);
    assert_eq!(app.post_esp(&update.to_string()).await.status(), 200);
    app.drain().await;
    let dead = job_ids(&app, "order@example.com", "dead");
    assert_eq!(dead.len(), 2, "the subscribe and the update are dead");
    let (first, second) = (dead[0], dead[1]);

    // The update alone would overtake the subscribe: refused, naming it.
    let (status, answer) =
        admin_post(&app, &format!("/admin/api/deliveries/{second}/retry"), "").await;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains(&first.to_string()),
        "{answer}"
    );
    let vars = cli_vars(&app);
    let cli = vars.clone();
    let (ok, _, stderr) = tokio::task::spawn_blocking(move || {
        run_command(&["deliveries", "retry", &second.to_string()], &cli)
    })
    .await
    .unwrap();
    assert!(!ok && stderr.contains(&first.to_string()), "{stderr}");

    // A typo in a filter is a 400 naming the key, not a retry of everything.
    let (status, answer) = admin_post(
        &app,
        "/admin/api/deliveries/retry-dead",
        r#"{"destinaton": "sparkloop"}"#,
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("`destinaton`"),
        "{answer}"
    );
    let (status, _) = admin_post(
        &app,
        "/admin/api/deliveries/retry-dead",
        "[null, null, null]",
    )
    .await;
    assert_eq!(status, 400);
    let (status, answer) = admin_post(
        &app,
        &format!("/admin/api/deliveries/{second}/retry"),
        r#"{"forse": true}"#,
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        job_ids(&app, "order@example.com", "dead"),
        dead,
        "nothing was queued"
    );

    // The CLI lists them by destination, address and status.
    let cli = vars.clone();
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || {
        run_command(
            &[
                "deliveries",
                "list",
                "--status",
                "dead",
                "--destination",
                "sparkloop",
                "--email",
                "Order@Example.com",
            ],
            &cli,
        )
    })
    .await
    .unwrap();
    assert!(ok, "{stderr}");
    assert_eq!(stdout.matches("order@example.com").count(), 2, "{stdout}");
    let cli = vars.clone();
    let (ok, stdout, _) = tokio::task::spawn_blocking(move || {
        run_command(&["deliveries", "list", "--destination", "esp"], &cli)
    })
    .await
    .unwrap();
    assert!(ok && !stdout.contains("order@example.com"), "{stdout}");

    // Once SparkLoop takes them, `retry --dead` sends them in their order.
    app.sparkloop.reset().await;
    app.sparkloop
        .register(
            wiremock::Mock::given(wiremock::matchers::method("POST"))
                .respond_with(wiremock::ResponseTemplate::new(200)),
        )
        .await;
    let cli = vars.clone();
    let (ok, _, stderr) =
        tokio::task::spawn_blocking(move || run_command(&["deliveries", "retry", "--dead"], &cli))
            .await
            .unwrap();
    assert!(ok, "{stderr}");
    app.drain().await;
    let kinds: Vec<Value> = app
        .received()
        .await
        .iter()
        .map(|body| body["type"].clone())
        .collect();
    assert_eq!(kinds, [json!("subscribe"), json!("update")]);
    app.stop().await;
}

#[tokio::test]
async fn the_cli_cancels_a_waiting_job_and_the_next_goes_ahead() {
    let app = TestApp::spawn_with(
        &[("RETRY_BASE_DELAY", "1h"), ("RETRY_MAX_DELAY", "1h")],
        Some(
            wiremock::Mock::given(wiremock::matchers::method("POST"))
                .and(wiremock::matchers::path("/incoming"))
                .respond_with(wiremock::ResponseTemplate::new(503))
                .up_to_n_times(1),
        ),
    )
    .await;
    let subscribe = json!({"type": "subscribe", "subscriber": {"email": "stuck@example.com"}});
    let update = json!({"type": "update",
        "subscriber": {"email": "stuck@example.com", "first_name": "Next"}});
    assert_eq!(app.post_esp(&subscribe.to_string()).await.status(), 200);
    assert_eq!(app.post_esp(&update.to_string()).await.status(), 200);
    // The subscribe failed once and waits an hour; the update waits behind it.
    crate::helpers::eventually("the first try", std::time::Duration::from_secs(15), || {
        job_ids(&app, "stuck@example.com", "pending").len() == 1
    })
    .await;
    let pending = job_ids(&app, "stuck@example.com", "pending")[0];
    let vars = cli_vars(&app);
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || {
        run_command(&["deliveries", "cancel", &pending.to_string()], &vars)
    })
    .await
    .unwrap();
    assert!(ok, "{stdout}{stderr}");
    app.drain().await;
    let received = app.received().await;
    assert_eq!(
        received.last().unwrap()["type"],
        json!("update"),
        "{received:?}"
    );
    assert_eq!(job_ids(&app, "stuck@example.com", "dead"), [pending]);
    app.stop().await;
}

#[tokio::test]
async fn start_up_says_which_endpoints_are_closed_and_each_adapter_says_how_to_open_it() {
    let db = crate::helpers::TestDb::new();
    let sparkloop = wiremock::MockServer::start().await;
    let mut vars = crate::helpers::base_vars(&db, &sparkloop);
    vars.remove("ESP_WEBHOOK_SECRET");
    vars.remove("SPARKLOOP_WEBHOOK_TOKEN");
    let bridge = crate::helpers::BridgeProcess::start(&vars);
    let log = bridge.log.lock().unwrap().clone();
    assert!(
        log.contains("ESP_WEBHOOK_SECRET is not set: POST /webhooks/esp answers 401 to everything"),
        "{log}"
    );
    assert!(
        log.contains("SPARKLOOP_WEBHOOK_TOKEN is not set: POST /webhooks/sparkloop answers 401"),
        "{log}"
    );
    bridge.kill();

    // Mailchimp cannot send a header: its 401 says to put the token in the URL.
    let app = TestApp::spawn_with(&[("ESP_ADAPTER", "mailchimp")], None).await;
    let response = app
        .client
        .post(format!("{}/webhooks/esp", app.address))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("type=subscribe&data[email]=a@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let error: Value = response.json().await.unwrap();
    let message = error["error"].as_str().unwrap();
    assert!(
        message.contains("?token=") && message.contains("Mailchimp"),
        "{message}"
    );
    assert!(!message.contains("Authorization"), "{message}");
    app.stop().await;
}

fn sparkloop_fixture(name: &str) -> String {
    let file = format!(
        "{}/tests/fixtures/sparkloop/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}"))
}

#[tokio::test]
async fn a_write_identical_to_the_last_one_is_skipped() {
    let app = TestApp::spawn().await;
    // The redemption's subscriber, as it stands: the first callback writes their fields.
    let redeemed = sparkloop_fixture("reward_redeemed");
    let redeemed_value: Value = serde_json::from_str(&redeemed).unwrap();
    let sync = json!({"type": "sync_subscriber", "subscriber": redeemed_value["subscriber"]});
    assert_eq!(app.post_sparkloop(&sync.to_string()).await.status(), 200);
    app.drain().await;
    assert_eq!(app.esp_writes().await.len(), 1);
    // A redemption changes none of the fields: the write it queues is not sent.
    assert_eq!(app.post_sparkloop(&redeemed).await.status(), 200);
    app.drain().await;
    assert_eq!(
        app.esp_writes().await.len(),
        1,
        "the identical write was sent"
    );
    assert_eq!(
        app.db.count(
            "SELECT COUNT(*) AS n FROM jobs WHERE destination = 'esp' AND status = 'skipped'"
        ),
        1
    );
    // A change is written again.
    let mut changed = redeemed_value["subscriber"].clone();
    changed["tot_referrals"] = json!(5);
    let sync = json!({"type": "sync_subscriber", "subscriber": changed});
    assert_eq!(app.post_sparkloop(&sync.to_string()).await.status(), 200);
    app.drain().await;
    let writes = app.esp_writes().await;
    assert_eq!(writes.len(), 2);
    assert_eq!(writes[1]["fields"]["RH_TOTREF"], json!(5));
    // `deliveries show` of the first write shows the body it sent.
    let first = app
        .db
        .count("SELECT MIN(id) AS n FROM jobs WHERE destination = 'esp'");
    let vars = cli_vars(&app);
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || {
        run_command(&["deliveries", "show", &first.to_string()], &vars)
    })
    .await
    .unwrap();
    assert!(ok, "{stderr}");
    assert!(stdout.contains("body sent:  {"), "{stdout}");
    assert!(stdout.contains("\"RH_TOTREF\":4"), "{stdout}");
    app.stop().await;
}

#[tokio::test]
async fn the_bearer_scheme_is_matched_whatever_its_case() {
    let app = TestApp::spawn_with(&[("BRIDGE_ADMIN_TOKEN", TOKEN)], None).await;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let response = app
            .client
            .get(format!("{}/admin/api/stats", app.address))
            .header("Authorization", format!("{scheme} {TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{scheme}");
    }
    let response = app
        .client
        .get(format!("{}/admin/api/stats", app.address))
        .header("Authorization", format!("Basic {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    app.stop().await;
}

#[tokio::test]
async fn a_sender_over_its_rate_is_told_to_wait_and_a_slow_body_is_cut_off() {
    let app = TestApp::spawn_with(
        &[
            ("BRIDGE_INBOUND_RATE_LIMIT", "3/1m"),
            ("BRIDGE_BODY_TIMEOUT", "300ms"),
        ],
        None,
    )
    .await;
    for n in 0..3 {
        let response = app
            .post_esp(&crate::helpers::subscribe(&format!("r{n}@example.com")))
            .await;
        assert_eq!(response.status(), 200);
    }
    let limited = app
        .post_esp(&crate::helpers::subscribe("r9@example.com"))
        .await;
    assert_eq!(limited.status(), 429);
    let wait: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let error: Value = limited.json().await.unwrap();
    assert!(error["error"]
        .as_str()
        .unwrap()
        .contains("BRIDGE_INBOUND_RATE_LIMIT"));
    // The other endpoints share the sender's allowance.
    assert_eq!(app.post_sparkloop("{}").await.status(), 429);
    app.drain().await;
    assert_eq!(
        app.received().await.len(),
        3,
        "the refused one was not stored"
    );
    app.stop().await;

    // A body that never finishes arriving is answered 408, not waited for.
    let app = TestApp::spawn_with(&[("BRIDGE_BODY_TIMEOUT", "300ms")], None).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = app.address.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /webhooks/esp HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Authorization: Bearer {}\r\nContent-Length: 100\r\n\r\n{{\"type\":",
        crate::helpers::ESP_SECRET
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 1024];
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("answered before the sender gave up")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("BRIDGE_BODY_TIMEOUT"), "{answer}");
    app.stop().await;
}

#[tokio::test]
async fn no_error_echoes_a_megabyte() {
    let app = TestApp::spawn_with(&[("BRIDGE_ADMIN_TOKEN", TOKEN)], None).await;
    // As long as the admin API takes (its bodies are at most 256 KiB).
    let huge = "k".repeat(200_000);
    let body = format!(r#"{{"{huge}": 1}}"#);
    let (status, answer) = admin_post(&app, "/admin/api/deliveries/retry-dead", &body).await;
    assert_eq!(status, 400);
    let text = answer.to_string();
    assert!(text.len() < 2_000, "{} bytes", text.len());
    let response = app
        .client
        .get(format!(
            "{}/admin/api/deliveries?since={}",
            app.address,
            &huge[..10_000]
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().len() < 2_000);
    app.stop().await;
}
