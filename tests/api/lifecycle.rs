//! The data's lifecycle (DESIGN 3.10), black-box on both backends: retention in the background
//! and by `prune`, erasure by `forget`, the admin API and Brevo's `contact_deleted`, and the
//! redemptions export.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{base_vars, eventually, run_command, subscribe, TestApp, ESP_SECRET};

const TOKEN: &str = "admin-token-for-lifecycle-tests-32-chars";

fn fixture(name: &str) -> String {
    let file = format!(
        "{}/tests/fixtures/sparkloop/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// The variables of `app`, for a command run beside it, with `extra`.
fn vars_of(app: &TestApp, extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut vars = base_vars(&app.db, &app.sparkloop);
    for (k, v) in extra {
        vars.insert(k.to_string(), v.to_string());
    }
    vars
}

fn count(app: &TestApp, sql: &str) -> i64 {
    app.db.count(&format!("SELECT COUNT(*) AS n FROM {sql}"))
}

/// ReferralLoop's signups, at the stand-in.
const SIGNUPS: &str = "/rl/api/v1/waitlists/w1/signups";
/// The signup id ReferralLoop gives `user@example.com` (its `signup.created` fixture).
const SIGNUP_ID: &str = "789e0123-e89b-12d3-a456-426614174000";

/// A bridge sending to ReferralLoop, with `extra` variables; the stand-in answers a signup with
/// [`SIGNUP_ID`] and its deletion with 200.
async fn with_referralloop(extra: &[(&str, &str)]) -> TestApp {
    let mut vars = vec![
        ("BRIDGE_PLATFORM", "referralloop"),
        ("REFERRALLOOP_API_URL", "{stand-in}/rl/api/v1"),
        ("REFERRALLOOP_API_KEY", "pk_test_1"),
        ("REFERRALLOOP_WAITLIST_ID", "w1"),
        ("REFERRALLOOP_WEBHOOK_SECRET", crate::referralloop::SECRET),
        ("REFERRALLOOP_RATE_LIMIT", "100/1s"),
    ];
    vars.extend_from_slice(extra);
    let app = TestApp::spawn_with(&vars, None).await;
    for (verb, at, answer) in [
        ("POST", SIGNUPS.to_string(), json!({"id": SIGNUP_ID})),
        ("DELETE", format!("{SIGNUPS}/{SIGNUP_ID}"), json!({})),
    ] {
        app.sparkloop
            .register(
                Mock::given(method(verb))
                    .and(path(at))
                    .respond_with(ResponseTemplate::new(200).set_body_json(answer)),
            )
            .await;
    }
    app
}

/// ReferralLoop's `signup.created` for `user@example.com`, signed, accepted by the bridge.
async fn hear_signup_created(app: &TestApp) {
    let created = std::fs::read_to_string(format!(
        "{}/tests/fixtures/referralloop/signup_created.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let heard = app
        .client
        .post(format!("{}/webhooks/referralloop", app.address))
        .header(
            "X-Webhook-Signature",
            crate::referralloop::signature(&created),
        )
        .body(created)
        .send()
        .await
        .unwrap();
    assert_eq!(heard.status(), 200);
}

/// The paths of the `DELETE`s the stand-in received.
async fn deletes_at_stand_in(app: &TestApp) -> Vec<String> {
    app.sparkloop
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() == "DELETE")
        .map(|r| r.url.path().to_string())
        .collect()
}

/// Brevo's webhook `body`, posted with the ESP's secret; the answer's status.
async fn post_brevo(app: &TestApp, body: Value) -> reqwest::StatusCode {
    app.client
        .post(format!("{}/webhooks/esp", app.address))
        .bearer_auth(ESP_SECRET)
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
}

/// Rows pointing at rows that are gone: none, though Postgres checks three of these references
/// only through the way the bridge deletes (migration 9).
fn assert_no_orphans(app: &TestApp) {
    for (what, sql) in [
        ("jobs without their subscriber", "jobs j WHERE NOT EXISTS (SELECT 1 FROM subscribers s WHERE s.id = j.subscriber_id)"),
        ("jobs without their body", "jobs j WHERE j.inbound_event_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM inbound_events e WHERE e.id = j.inbound_event_id)"),
        ("bodies without their subscriber", "inbound_events e WHERE e.subscriber_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM subscribers s WHERE s.id = e.subscriber_id)"),
        ("attempts without their job", "attempts a WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = a.job_id)"),
        ("redemptions without their subscriber", "redemptions r WHERE NOT EXISTS (SELECT 1 FROM subscribers s WHERE s.id = r.subscriber_id)"),
    ] {
        assert_eq!((what, count(app, sql)), (what, 0));
    }
}

/// A reference the database follows when a row is deleted (a foreign key: checked, or an
/// `ON DELETE` action) reads the referencing table by that column for every deleted row; without
/// an index leading with it, each of a pass's deletions is a scan of the whole table.
#[tokio::test]
async fn every_reference_followed_on_delete_is_indexed() {
    let app = TestApp::spawn().await;
    let unindexed = if app.db.is_postgres() {
        app.db.strings(
            "SELECT c.conrelid::regclass::text || '.' || a.attname AS s FROM pg_constraint c \
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] \
             WHERE c.contype = 'f' AND NOT EXISTS (SELECT 1 FROM pg_index i \
             WHERE i.indrelid = c.conrelid AND i.indkey[0] = c.conkey[1]) ORDER BY s",
        )
    } else {
        app.db.strings(
            "SELECT m.name || '.' || f.\"from\" AS s FROM sqlite_master m \
             JOIN pragma_foreign_key_list(m.name) f WHERE m.type = 'table' AND NOT EXISTS \
             (SELECT 1 FROM pragma_index_list(m.name) l JOIN pragma_index_info(l.name) i \
             WHERE i.seqno = 0 AND i.name = f.\"from\") ORDER BY s",
        )
    };
    // A subscriber is deleted only by an erasure, which reads every stored body anyway (it
    // looks for the address in each): an index for that would cost every ingest a write.
    let allowed = ["inbound_events.subscriber_id"];
    let unindexed: Vec<String> = unindexed
        .into_iter()
        .filter(|reference| !allowed.contains(&reference.as_str()))
        .collect();
    assert_eq!(unindexed, Vec::<String>::new());
    app.stop().await;
}

#[tokio::test]
async fn retention_prunes_old_bodies_and_finished_jobs_and_keeps_the_dead() {
    let refuse = Mock::given(method("POST"))
        .and(path("/incoming"))
        .and(body_partial_json(
            json!({"subscriber": {"email": "refused@example.com"}}),
        ))
        .respond_with(ResponseTemplate::new(400).set_body_string("refused"));
    let app = TestApp::spawn_with(
        &[
            ("BRIDGE_RETENTION", "1s"),
            ("DEDUPE_WINDOW", "1s"),
            ("BRIDGE_ADMIN_TOKEN", TOKEN),
        ],
        Some(refuse),
    )
    .await;
    for email in ["ada@example.com", "refused@example.com"] {
        assert_eq!(app.post_esp(&subscribe(email)).await.status(), 200);
    }
    app.wait_for_requests(2).await;
    eventually("one done, one dead", Duration::from_secs(15), || {
        count(&app, "jobs WHERE status = 'dead'") == 1
    })
    .await;
    // The background pass (every second here) takes the finished job and its body and
    // attempts; the dead one keeps all three.
    eventually("the done job pruned", Duration::from_secs(20), || {
        count(&app, "jobs") == 1 && count(&app, "inbound_events") == 1
    })
    .await;
    assert_eq!(count(&app, "jobs WHERE status = 'dead'"), 1);
    assert_eq!(count(&app, "attempts"), 1, "the dead job's attempt stays");
    assert_eq!(
        count(
            &app,
            "inbound_events e JOIN jobs j ON j.inbound_event_id = e.id"
        ),
        1,
        "the dead job's body stays"
    );
    assert_eq!(count(&app, "subscribers"), 2, "subscribers are kept");
    // A pruned person's next event queues and is delivered as usual.
    let unsubscribe = json!({"type": "unsubscribe", "subscriber": {"email": "ada@example.com"}});
    assert_eq!(app.post_esp(&unsubscribe.to_string()).await.status(), 200);
    let received = app.wait_for_requests(3).await;
    assert_eq!(received[2]["type"], "unsubscribe");
    assert_no_orphans(&app);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let pruned = metrics
        .lines()
        .find(|l| l.starts_with("bridge_pruned_rows_total{table=\"inbound_events\"}"))
        .unwrap_or_else(|| panic!("no pruned rows metric:\n{metrics}"));
    assert!(!pruned.ends_with(" 0"), "{pruned}");
    app.stop().await;
}

#[tokio::test]
async fn prune_counts_dry_and_never_takes_what_dedupe_still_needs() {
    let app = TestApp::spawn().await;
    let body = subscribe("bob@example.com");
    assert_eq!(app.post_esp(&body).await.status(), 200);
    assert_eq!(
        app.post_esp(&subscribe("carol@example.com")).await.status(),
        200
    );
    app.wait_for_requests(2).await;
    app.drain().await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let before = (
        count(&app, "inbound_events"),
        count(&app, "jobs"),
        count(&app, "attempts"),
    );
    assert_eq!(before, (2, 2, 2));

    let short = [("BRIDGE_RETENTION", "1s"), ("DEDUPE_WINDOW", "1s")];
    let (ok, out, err) = run_command(&["prune", "--dry-run"], &vars_of(&app, &short));
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("would remove 2 stored webhook bodies, 2 finished jobs, 2 attempts"),
        "{out}"
    );
    let after = (
        count(&app, "inbound_events"),
        count(&app, "jobs"),
        count(&app, "attempts"),
    );
    assert_eq!(after, before, "a dry run writes nothing");

    // The dedupe window holds whatever the retention: bob's repeat is still a duplicate.
    let window = [("BRIDGE_RETENTION", "1s"), ("DEDUPE_WINDOW", "1h")];
    let (ok, out, err) = run_command(&["prune"], &vars_of(&app, &window));
    assert!(ok, "{out}{err}");
    assert!(out.contains("removed 0 stored webhook bodies"), "{out}");
    let repeat: Value = app.post_esp(&body).await.json().await.unwrap();
    assert_eq!(repeat["status"], "duplicate");

    let (ok, out, err) = run_command(&["prune"], &vars_of(&app, &short));
    assert!(ok, "{out}{err}");
    // The duplicate's own row is younger than a second: it stays.
    assert!(
        out.contains("removed 2 stored webhook bodies, 2 finished jobs, 2 attempts"),
        "{out}"
    );
    // On a Postgres server that does not vacuum by itself, the pass did, and says so.
    let server_vacuums = !app.db.is_postgres()
        || app.db.strings(
            "SELECT current_setting('autovacuum') || current_setting('track_counts') AS s",
        ) == ["onon"];
    assert_eq!(
        out.contains("tables vacuumed: the Postgres server's autovacuum is off"),
        !server_vacuums,
        "{out}"
    );
    assert_eq!(count(&app, "inbound_events"), 1);
    assert_eq!(count(&app, "jobs"), 0);
    assert_eq!(count(&app, "subscribers"), 2);
    app.stop().await;
}

/// Whether `needle` is stored anywhere: SQLite, in the file's bytes (and its log's); Postgres,
/// in any row of any table.
fn stored_anywhere(app: &TestApp, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    if app.db.is_postgres() {
        for table in [
            "subscribers",
            "inbound_events",
            "jobs",
            "attempts",
            "redemptions",
            "poll_checkpoints",
            "admin_sessions",
        ] {
            let n = app.db.count(&format!(
                "SELECT COUNT(*) AS n FROM {table} t WHERE lower(t::text) LIKE '%{needle}%'"
            ));
            if n > 0 {
                found.push(format!("{n} rows of {table}"));
            }
        }
    } else {
        for suffix in ["", "-wal"] {
            let file = format!("{}{suffix}", app.db.url);
            let bytes = std::fs::read(&file)
                .unwrap_or_default()
                .to_ascii_lowercase();
            let hits = bytes
                .windows(needle.len())
                .filter(|w| *w == needle.as_bytes())
                .count();
            if hits > 0 {
                found.push(format!("{hits} times in {file}"));
            }
        }
    }
    found
}

#[tokio::test]
async fn forgetting_removes_every_trace_and_keeps_the_others() {
    let app = TestApp::spawn_with(&[("BRIDGE_ADMIN_TOKEN", TOKEN)], None).await;
    let ada = "ada.lovelace@example.com";
    assert_eq!(app.post_esp(&subscribe(ada)).await.status(), 200);
    assert_eq!(
        app.post_esp(&subscribe("zed@example.com")).await.status(),
        200
    );
    let callback = json!({"type": "new_referral", "subscriber": {"email": "zed@example.com",
        "referral_code": "zzz"}, "referrer": {"email": ada, "referral_code": "aaa", "tot_referrals": 1}});
    assert_eq!(
        app.post_sparkloop(&callback.to_string()).await.status(),
        200
    );
    let mut redeemed: Value = serde_json::from_str(&fixture("reward_redeemed")).unwrap();
    redeemed["subscriber"]["email"] = json!(ada);
    assert_eq!(
        app.post_sparkloop(&redeemed.to_string()).await.status(),
        200
    );
    app.wait_for_requests(2).await;
    app.drain().await;
    assert!(
        !stored_anywhere(&app, ada).is_empty(),
        "the address is stored before"
    );

    let response = app
        .client
        .delete(format!("{}/admin/api/subscribers/{ada}", app.address))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["status"], "erased");
    let found = stored_anywhere(&app, ada);
    assert!(found.is_empty(), "the address is still stored: {found:?}");
    let after = app
        .client
        .get(format!("{}/admin/api/subscribers/{ada}", app.address))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 404);
    // zed stays, with their referral code, though the callback that named ada is gone.
    let zed: Value = app
        .client
        .get(format!(
            "{}/admin/api/subscribers/zed@example.com",
            app.address
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(zed["email"], "zed@example.com", "{zed}");
    assert_no_orphans(&app);
    // Again: nothing is there to erase.
    let (ok, _, err) = run_command(&["forget", ada], &vars_of(&app, &[]));
    assert!(!ok);
    assert!(err.contains("no subscriber"), "{err}");
    app.stop().await;
}

#[tokio::test]
async fn forgetting_at_the_platform_first_keeps_the_data_until_it_has_deleted() {
    // SparkLoop's API refuses the deletion twice with 500, then takes it.
    let refuse = Mock::given(method("DELETE"))
        .and(path("/v2/subscribers/ann@example.com"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(2);
    let app = TestApp::spawn_with(
        &[
            ("SPARKLOOP_INCOMING_WEBHOOK_URL", ""),
            ("SPARKLOOP_API_URL", "{stand-in}"),
            ("SPARKLOOP_API_KEY", "sl-key"),
            ("SPARKLOOP_RATE_LIMIT", "100/1s"),
            ("RETRY_BASE_DELAY", "300ms"),
            ("RETRY_MAX_DELAY", "300ms"),
        ],
        Some(refuse),
    )
    .await;
    for (verb, at) in [
        ("POST", "/v2/subscribers"),
        ("DELETE", "/v2/subscribers/ann@example.com"),
    ] {
        app.sparkloop
            .register(
                Mock::given(method(verb))
                    .and(path(at))
                    .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
                    .with_priority(8),
            )
            .await;
    }
    assert_eq!(
        app.post_esp(&subscribe("ann@example.com")).await.status(),
        200
    );
    app.drain().await;
    let vars = vars_of(
        &app,
        &[
            ("SPARKLOOP_INCOMING_WEBHOOK_URL", ""),
            ("SPARKLOOP_API_URL", &app.sparkloop.uri()),
            ("SPARKLOOP_API_KEY", "sl-key"),
        ],
    );
    let (ok, out, err) = run_command(&["forget", "ann@example.com", "--platform"], &vars);
    assert!(ok, "{out}{err}");
    assert!(out.contains("queued"), "{out}");
    // While SparkLoop refuses, everything stays here.
    let start = std::time::Instant::now();
    while deletes_at_stand_in(&app).await.is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no DELETE reached SparkLoop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        count(&app, "subscribers WHERE email = 'ann@example.com'"),
        1
    );
    // Once it has deleted them, the erasure follows.
    eventually("ann erased", Duration::from_secs(20), || {
        count(&app, "subscribers WHERE email = 'ann@example.com'") == 0
    })
    .await;
    assert_eq!(deletes_at_stand_in(&app).await.len(), 3);
    assert_eq!(count(&app, "jobs"), 0);
    app.stop().await;

    // Webhook mode has no deletion: said, and nothing queued.
    let app = TestApp::spawn().await;
    assert_eq!(
        app.post_esp(&subscribe("ann@example.com")).await.status(),
        200
    );
    app.drain().await;
    let (ok, _, err) = run_command(
        &["forget", "ann@example.com", "--platform"],
        &vars_of(&app, &[]),
    );
    assert!(!ok);
    assert!(err.contains("SPARKLOOP_API_KEY"), "{err}");
    assert_eq!(count(&app, "subscribers"), 1);
    app.stop().await;
}

/// ReferralLoop deletes a signup by its id, which the bridge hears in `signup.created`: until
/// then an erasure with the platform is refused (saying why and what to do instead), after it
/// the deletion goes by that id and the erasure follows.
#[tokio::test]
async fn forgetting_at_referralloop_goes_by_the_signup_id_it_heard() {
    let app = with_referralloop(&[("BRIDGE_ADMIN_TOKEN", TOKEN)]).await;
    let user = "user@example.com";
    assert_eq!(app.post_esp(&subscribe(user)).await.status(), 200);
    app.drain().await;
    let forget_here_and_there = || {
        app.client
            .delete(format!("{}/admin/api/subscribers/{user}", app.address))
            .bearer_auth(TOKEN)
            .json(&json!({"platform": true}))
            .send()
    };
    let refused = forget_here_and_there().await.unwrap();
    assert_eq!(refused.status(), 409);
    let why = refused.text().await.unwrap();
    assert!(
        why.contains("signup id") && why.contains("without --platform"),
        "{why}"
    );
    assert!(!why.contains(user), "{why}");
    assert_eq!(count(&app, "subscribers"), 1);
    assert_eq!(count(&app, "jobs WHERE kind = 'delete'"), 0);

    hear_signup_created(&app).await;
    let queued = forget_here_and_there().await.unwrap();
    assert_eq!(queued.status(), 202);
    eventually("the subscriber erased", Duration::from_secs(20), || {
        count(&app, "subscribers") == 0
    })
    .await;
    let deletes: Vec<(String, String)> = app
        .sparkloop
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() == "DELETE")
        .map(|r| {
            let auth = r.headers["authorization"].to_str().unwrap().to_string();
            (r.url.path().to_string(), auth)
        })
        .collect();
    assert_eq!(
        deletes,
        [(
            format!("{SIGNUPS}/{SIGNUP_ID}"),
            "Bearer pk_test_1".to_string()
        )]
    );
    let after = app
        .client
        .get(format!("{}/admin/api/subscribers/{user}", app.address))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 404);
    assert!(stored_anywhere(&app, user).is_empty());
    app.stop().await;
}

/// An ESP's deletion queued for ReferralLoop (`BRIDGE_ERASE_ON_DELETE`) before the bridge heard
/// the person's signup id is not sent, and nothing is erased here: it is tried again, and once
/// `signup.created` brings the id, the retry deletes by it and the erasure follows.
#[tokio::test]
async fn a_referralloop_deletion_waits_for_the_signup_id() {
    let user = "user@example.com";
    let app = with_referralloop(&[
        ("ESP_ADAPTER", "brevo"),
        ("ESP_API_URL", "{stand-in}/brevo/v3"),
        ("ESP_API_KEY", "brevo-key"),
        ("BRIDGE_ERASE_ON_DELETE", "true"),
    ])
    .await;
    let added = json!({"id": 1, "email": user, "event": "list_addition",
        "key": "k", "list_id": [35], "date": "2020-10-09 00:00:00", "ts": 1604937111});
    assert_eq!(post_brevo(&app, added).await, 200);
    app.drain().await;
    let deleted = json!({"id": 1, "email": user, "event": "contact_deleted",
        "key": "k", "list_id": [35], "ts": 1604937112});
    assert_eq!(post_brevo(&app, deleted).await, 200);
    // Tried (at 100 ms, then doubling) and put back, never sent without the id.
    eventually("the deletion tried", Duration::from_secs(10), || {
        count(
            &app,
            "jobs WHERE kind = 'delete' AND status = 'pending' AND attempts >= 2 \
             AND last_error LIKE '%signup id%'",
        ) == 1
    })
    .await;
    assert_eq!(deletes_at_stand_in(&app).await, Vec::<String>::new());
    assert_eq!(count(&app, "subscribers"), 1);

    hear_signup_created(&app).await;
    eventually("the subscriber erased", Duration::from_secs(20), || {
        count(&app, "subscribers") == 0
    })
    .await;
    assert_eq!(
        deletes_at_stand_in(&app).await,
        [format!("{SIGNUPS}/{SIGNUP_ID}")]
    );
    assert!(stored_anywhere(&app, user).is_empty());
    app.stop().await;
}

#[tokio::test]
async fn brevos_contact_deleted_erases_with_the_platform_when_asked() {
    let app = TestApp::spawn_with(
        &[
            ("ESP_ADAPTER", "brevo"),
            ("ESP_API_URL", "{stand-in}/brevo/v3"),
            ("ESP_API_KEY", "brevo-key"),
            ("BRIDGE_ERASE_ON_DELETE", "true"),
            ("SPARKLOOP_INCOMING_WEBHOOK_URL", ""),
            ("SPARKLOOP_API_URL", "{stand-in}"),
            ("SPARKLOOP_API_KEY", "sl-key"),
            ("SPARKLOOP_RATE_LIMIT", "100/1s"),
        ],
        None,
    )
    .await;
    app.sparkloop
        .register(
            Mock::given(wiremock::matchers::any())
                .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
                .with_priority(9),
        )
        .await;
    let added = json!({"id": 1, "email": "bea@example.com", "event": "list_addition",
        "key": "k", "list_id": [35], "date": "2020-10-09 00:00:00", "ts": 1604937111});
    assert_eq!(post_brevo(&app, added).await, 200);
    let deleted = json!({"id": 1, "email": "bea@example.com", "event": "contact_deleted",
        "key": "k", "list_id": [35], "ts": 1604937112});
    assert_eq!(post_brevo(&app, deleted).await, 200);
    eventually("bea erased", Duration::from_secs(20), || {
        count(&app, "subscribers WHERE email = 'bea@example.com'") == 0
    })
    .await;
    let calls: Vec<String> = app
        .sparkloop
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path().starts_with("/v2/"))
        .map(|r| format!("{} {}", r.method, r.url.path()))
        .collect();
    assert_eq!(
        calls,
        [
            "POST /v2/subscribers",
            "PUT /v2/subscribers/bea@example.com/unsubscribe",
            "DELETE /v2/subscribers/bea@example.com"
        ]
    );
    assert_eq!(count(&app, "inbound_events"), 0);
    app.stop().await;

    // Asked for with a platform that cannot delete, it is a configuration error.
    let app = TestApp::spawn().await;
    let vars = vars_of(&app, &[("BRIDGE_ERASE_ON_DELETE", "true")]);
    let (ok, out, err) = run_command(&["deliveries", "list"], &vars);
    assert!(!ok, "{out}");
    assert!(err.contains("BRIDGE_ERASE_ON_DELETE"), "{err}");
    app.stop().await;
}

#[tokio::test]
async fn redemptions_export_as_csv_with_quoting() {
    let app = TestApp::spawn().await;
    let mut redeemed: Value = serde_json::from_str(&fixture("reward_redeemed")).unwrap();
    redeemed["reward"]["name"] = json!("T-shirt, \"limited\"");
    redeemed["shipping_details"]["shipping_address_2"] = json!("Flat 2\nBack door");
    assert_eq!(
        app.post_sparkloop(&redeemed.to_string()).await.status(),
        200
    );
    app.drain().await;
    eventually("the redemption stored", Duration::from_secs(10), || {
        count(&app, "redemptions") == 1
    })
    .await;
    let (ok, out, err) = run_command(
        &["redemptions", "export", "--since", "2020-01-01"],
        &vars_of(&app, &[]),
    );
    assert!(ok, "{err}");
    let mut reader = csv::Reader::from_reader(out.as_bytes());
    let headers: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        headers,
        [
            "email",
            "reward_id",
            "reward",
            "variant",
            "sku",
            "coupon",
            "shipping_details",
            "redeemed_at"
        ]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 1, "{out}");
    let row = &rows[0];
    assert_eq!(&row[0], "john.doe@email.com");
    assert_eq!(&row[1], "reward_cdebf4f013");
    assert_eq!(&row[2], "T-shirt, \"limited\"");
    assert_eq!(&row[3], "T-Shirt XXL");
    assert_eq!(&row[4], "t_shirt_xxl");
    assert_eq!(&row[5], "9wusha0");
    let shipping: Value = serde_json::from_str(&row[6]).unwrap();
    assert_eq!(shipping["shipping_address_2"], "Flat 2\nBack door");
    assert!(row[7].ends_with('Z'), "{}", &row[7]);

    let (ok, out, _) = run_command(
        &["redemptions", "export", "--since", "2100-01-01T00:00:00Z"],
        &vars_of(&app, &[]),
    );
    assert!(ok);
    assert_eq!(out.lines().count(), 1, "only the header: {out}");
    let (ok, _, err) = run_command(
        &["redemptions", "export", "--since", "last week"],
        &vars_of(&app, &[]),
    );
    assert!(!ok);
    assert!(err.contains("--since"), "{err}");
    app.stop().await;
}
