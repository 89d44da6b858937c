//! The ESP adapters against Stoplight Prism serving the vendors' own OpenAPI files, so that a
//! request the real API would reject fails the test. Prism is installed by `.ci/run` (npm, into
//! `target/prism`); `PRISM_BIN` names another one. Without it these tests say that they were
//! skipped, unless `REQUIRE_PRISM=1` (as in CI), when they fail.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::helpers::{eventually, skipped, TestApp, ESP_SECRET};

/// A Prism mock server, killed when dropped.
struct Prism {
    child: Child,
    url: String,
}

impl Prism {
    /// Serves `spec` (under `tests/fixtures/specs/`), or `None` when Prism is not installed.
    fn start(test: &str, spec: &str) -> Option<Prism> {
        let spec = format!("{}/tests/fixtures/specs/{spec}", env!("CARGO_MANIFEST_DIR"));
        Self::start_file(test, &spec)
    }

    /// Serves the spec at `spec`, or `None` when Prism is not installed.
    fn start_file(test: &str, spec: &str) -> Option<Prism> {
        let bin = std::env::var("PRISM_BIN").unwrap_or_else(|_| {
            format!(
                "{}/target/prism/node_modules/.bin/prism",
                env!("CARGO_MANIFEST_DIR")
            )
        });
        if !std::path::Path::new(&bin).exists() {
            if std::env::var("REQUIRE_PRISM").is_ok_and(|v| v == "1") {
                panic!("REQUIRE_PRISM=1 but Prism is not at {bin}");
            }
            skipped(
                test,
                "needs Prism (npm install --prefix target/prism @stoplight/prism-cli)",
            );
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(&bin)
            .args(["mock", "-h", "127.0.0.1", "-p", &port.to_string(), spec])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("Prism starts");
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            // Read to the end, so that Prism never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("Prism is listening") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(60))
            .expect("Prism listens within a minute");
        Some(Prism {
            child,
            url: format!("http://127.0.0.1:{port}"),
        })
    }
}

impl Drop for Prism {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a callback and waits for its field write to end; returns (status, HTTP status).
async fn write_through(app: &TestApp, email: &str) -> (String, i64) {
    let callback = json!({"type": "sync_subscriber", "subscriber": {"id": "sub_1",
        "email": email, "referral_code": "ada90f39",
        "referral_link": "https://mywebsite.com?rh_ref=ada90f39", "referred": true,
        "tot_referrals": 4, "last_reward": "reward_cdebf4f013"}});
    assert_eq!(
        app.post_sparkloop(&callback.to_string()).await.status(),
        200
    );
    let db = &app.db;
    eventually("the field write to end", Duration::from_secs(20), || {
        db.count(
            "SELECT COUNT(*) AS n FROM jobs WHERE destination = 'esp' \
             AND status IN ('done', 'dead')",
        ) == 1
    })
    .await;
    let done =
        db.count("SELECT COUNT(*) AS n FROM jobs WHERE destination = 'esp' AND status = 'done'");
    let code = db.count("SELECT CAST(MAX(status_code) AS BIGINT) AS n FROM attempts");
    ((if done == 1 { "done" } else { "dead" }).into(), code)
}

#[tokio::test]
async fn brevo_attribute_writes_are_valid_for_brevos_own_spec() {
    let Some(prism) = Prism::start(
        "prism::brevo_attribute_writes_are_valid_for_brevos_own_spec",
        "brevo_swagger_v3.yaml",
    ) else {
        return;
    };
    let app = TestApp::spawn_with(
        &[
            ("ESP_ADAPTER", "brevo"),
            ("ESP_API_URL", &prism.url),
            ("ESP_API_KEY", "xkeysib-test"),
            ("ESP_WRITE_DELAY", "10ms"),
        ],
        None,
    )
    .await;
    // Brevo's list_addition webhook, with the token configured on the webhook.
    let addition = json!({"id": 123456, "email": "jane+x@example.com", "event": "list_addition",
        "key": "x", "list_id": [34, 12], "date": "2020-10-09 00:00:00", "ts": 1604937111});
    let response = app
        .client
        .post(format!("{}/webhooks/esp?token={ESP_SECRET}", app.address))
        .json(&addition)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let received = app.wait_for_requests(1).await;
    assert_eq!(
        received[0],
        json!({"type": "subscribe", "subscriber": {"email": "jane+x@example.com",
            "id": 123456, "created_at": 1604937111}})
    );
    // Prism answers 204 only to a request its spec accepts (400 otherwise).
    assert_eq!(
        write_through(&app, "jane+x@example.com").await,
        ("done".into(), 204)
    );
    app.stop().await;
}

#[tokio::test]
async fn mailchimp_merge_field_writes_are_valid_for_mailchimps_own_spec() {
    let Some(prism) = Prism::start(
        "prism::mailchimp_merge_field_writes_are_valid_for_mailchimps_own_spec",
        "mailchimp_members_openapi.yml",
    ) else {
        return;
    };
    let app = TestApp::spawn_with(
        &[
            ("ESP_ADAPTER", "mailchimp"),
            ("ESP_API_URL", &prism.url),
            ("ESP_API_KEY", "0123abcd-us6"),
            ("ESP_LIST_ID", "a6b5da1054"),
            ("ESP_WRITE_DELAY", "10ms"),
        ],
        None,
    )
    .await;
    assert_eq!(
        write_through(&app, "api@mailchimp.com").await,
        ("done".into(), 200)
    );
    app.stop().await;
}

#[tokio::test]
async fn kit_lookups_and_field_writes_are_valid_for_kits_own_spec() {
    let Some(prism) = Prism::start(
        "prism::kit_lookups_and_field_writes_are_valid_for_kits_own_spec",
        "kit_v4_openapi.json",
    ) else {
        return;
    };
    let app = TestApp::spawn_with(
        &[
            ("ESP_ADAPTER", "kit"),
            ("ESP_API_URL", &prism.url),
            ("ESP_API_KEY", "kit-key"),
            ("ESP_WRITE_DELAY", "10ms"),
        ],
        None,
    )
    .await;
    // The id is unknown: the lookup by email (answered with the spec's example) comes first.
    assert_eq!(
        write_through(&app, "alice@convertkit.dev").await,
        ("done".into(), 200)
    );
    assert_eq!(
        app.db
            .count("SELECT COUNT(*) AS n FROM subscribers WHERE esp_id IS NOT NULL"),
        1
    );
    app.stop().await;
}

/// Runs `esp provision-fields` against Prism serving `spec`, with `vars`.
async fn provision_against(test: &str, spec: &str, vars: &[(&str, &str)]) {
    let Some(prism) = Prism::start(test, spec) else {
        return;
    };
    let db = crate::helpers::TestDb::new();
    let mut all: std::collections::HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.replace("{prism}", &prism.url)))
        .collect();
    all.insert("DATABASE_URL".into(), db.url.clone());
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || {
        crate::helpers::run_command(&["esp", "provision-fields"], &all)
    })
    .await
    .unwrap();
    // Prism answers an invalid listing or creation with 4xx, which fails the command.
    assert!(ok, "{stdout}{stderr}");
    assert!(!stdout.contains("FAILED"), "{stdout}");
    let fields = stdout
        .lines()
        .filter(|l| !l.starts_with("warning:"))
        .count();
    assert_eq!(fields, 7, "one line per default field: {stdout}");
}

#[tokio::test]
async fn provisioning_calls_are_valid_for_each_vendors_spec() {
    provision_against(
        "prism::provisioning (brevo)",
        "brevo_swagger_v3.yaml",
        &[
            ("ESP_ADAPTER", "brevo"),
            ("ESP_API_URL", "{prism}"),
            ("ESP_API_KEY", "k"),
        ],
    )
    .await;
    provision_against(
        "prism::provisioning (kit)",
        "kit_v4_openapi.json",
        &[
            ("ESP_ADAPTER", "kit"),
            ("ESP_API_URL", "{prism}"),
            ("ESP_API_KEY", "k"),
        ],
    )
    .await;
    provision_against(
        "prism::provisioning (mailchimp)",
        "mailchimp_merge_fields_openapi.yml",
        &[
            ("ESP_ADAPTER", "mailchimp"),
            ("ESP_API_URL", "{prism}"),
            ("ESP_API_KEY", "k-us6"),
            ("ESP_LIST_ID", "a6b5da1054"),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_brevo_backlog_goes_in_one_batch_valid_for_brevos_own_spec() {
    let Some(prism) = Prism::start(
        "prism::a_brevo_backlog_goes_in_one_batch_valid_for_brevos_own_spec",
        "brevo_swagger_v3.yaml",
    ) else {
        return;
    };
    let brevo = |key: &'static str| {
        [
            ("ESP_ADAPTER", "brevo".to_string()),
            ("ESP_API_URL", prism.url.clone()),
            ("ESP_API_KEY", key.to_string()),
            ("ESP_WRITE_DELAY", "10ms".to_string()),
        ]
    };
    let vars = brevo("");
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Queued while no key is set, so that they are all due when the sender starts.
    let app = TestApp::spawn_with(&vars, None).await;
    for n in 0..3 {
        let callback = json!({"type": "sync_subscriber", "subscriber": {
            "email": format!("p{n}@example.com"), "referral_code": "c1", "tot_referrals": n}});
        assert_eq!(
            app.post_sparkloop(&callback.to_string()).await.status(),
            200
        );
    }
    app.wait_until_esp_due(3).await;
    let vars = brevo("xkeysib-test");
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = app.restart_with(&vars).await;
    let db = &app.db;
    eventually("the batch to be written", Duration::from_secs(20), || {
        db.count("SELECT COUNT(*) AS n FROM jobs WHERE destination = 'esp' AND status = 'done'")
            == 3
    })
    .await;
    // One call: the three attempts share its start and its answer, 204 "All contacts updated".
    assert_eq!(
        db.count("SELECT COUNT(DISTINCT started_at) AS n FROM attempts WHERE status_code = 204"),
        1
    );
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM attempts"), 3);
    app.stop().await;
}

/// `spec` with every `oneOf` replaced by its first branch (other keys, such as `nullable`,
/// kept): Prism skips validating a request body whose schema holds a `oneOf` anywhere
/// (`shared/specs/PRISM.md`), so Klaviyo's spec is served flattened, which validates.
fn flatten_one_of(spec: &mut serde_json::Value) {
    use serde_json::Value;
    match spec {
        Value::Object(map) => {
            if let Some(Value::Array(branches)) = map.remove("oneOf") {
                if let Some(Value::Object(first)) = branches.into_iter().next() {
                    for (key, value) in first {
                        map.entry(key).or_insert(value);
                    }
                }
            }
            map.values_mut().for_each(flatten_one_of);
        }
        Value::Array(items) => items.iter_mut().for_each(flatten_one_of),
        _ => {}
    }
}

#[tokio::test]
async fn klaviyo_profile_imports_and_patches_are_valid_for_klaviyos_own_spec() {
    let test = "prism::klaviyo_profile_imports_and_patches_are_valid_for_klaviyos_own_spec";
    let original = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/specs/klaviyo_openapi_stable_2026-07-15.json"
    );
    let mut spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(original).unwrap()).unwrap();
    flatten_one_of(&mut spec);
    let dir = tempfile::tempdir().unwrap();
    let flattened = dir.path().join("klaviyo_flattened.json");
    std::fs::write(&flattened, spec.to_string()).unwrap();
    let Some(prism) = Prism::start_file(test, flattened.to_str().unwrap()) else {
        return;
    };
    // Validation is on: a body without `data`, or without the revision header, is refused.
    let client = reqwest::Client::new();
    let refused = client
        .patch(format!(
            "{}/api/profiles/01GDDKASAP8TKDDA2GRZDSVP4H",
            prism.url
        ))
        .header("Authorization", "Klaviyo-API-Key pk_test")
        .header("revision", "2026-07-15")
        .header("Content-Type", "application/vnd.api+json")
        .header("Accept", "application/vnd.api+json")
        .body(r#"{"type": "profile"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422, "Prism validates request bodies");

    let app = TestApp::spawn_with(
        &[
            ("ESP_ADAPTER", "klaviyo"),
            ("ESP_API_URL", &format!("{}/api", prism.url)),
            ("ESP_API_KEY", "pk_test"),
            ("ESP_WRITE_DELAY", "10ms"),
        ],
        None,
    )
    .await;
    // No profile id yet: the profile import (by email) comes first, then the PATCH.
    assert_eq!(
        write_through(&app, "sarah.mason@klaviyo-demo.com").await,
        ("done".into(), 200)
    );
    assert_eq!(
        app.db
            .count("SELECT COUNT(*) AS n FROM subscribers WHERE esp_id IS NOT NULL"),
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn listmonk_polls_and_merged_writes_are_valid_for_listmonks_own_spec() {
    let Some(prism) = Prism::start(
        "prism::listmonk_polls_and_merged_writes_are_valid_for_listmonks_own_spec",
        "listmonk_collections.yaml",
    ) else {
        return;
    };
    let app = TestApp::spawn_with(
        &[
            ("ESP_ADAPTER", "listmonk"),
            ("ESP_API_URL", &prism.url),
            ("ESP_API_KEY", "bridge:tok"),
            ("ESP_POLL_INTERVAL", "1h"),
            ("ESP_WRITE_DELAY", "10ms"),
        ],
        None,
    )
    .await;
    // The spec has no PATCH (listmonk before 6.1): the subscriber is read, merged and PUT,
    // and Prism answers 200 only to a PUT its spec accepts.
    assert_eq!(write_through(&app, "john@example.com").await.0, "done");
    let answered = |code: i64| {
        app.db.count(&format!(
            "SELECT COUNT(*) AS n FROM attempts WHERE status_code = {code}"
        ))
    };
    assert_eq!(
        (answered(405), answered(200)),
        (1, 1),
        "PATCH refused, PUT taken"
    );
    app.stop().await;
}

/// Writes `known` through the bridge (when given), then runs `reconcile --esp` and, when the
/// read-back found differences, `reconcile --esp --fix` against Prism serving `spec`; Prism
/// answers a listing its spec refuses (a `limit` over Brevo's 1,000, a `count` over
/// Mailchimp's) with 4xx, which fails the command. Returns the read-back's summary line.
async fn read_back_against(
    test: &str,
    spec: &str,
    vars: &[(&str, &str)],
    known: Option<&str>,
) -> Option<String> {
    let prism = Prism::start(test, spec)?;
    let vars: Vec<(&str, String)> = vars
        .iter()
        .map(|(k, v)| (*k, v.replace("{prism}", &prism.url)))
        .chain([("ESP_WRITE_DELAY", "10ms".to_string())])
        .collect();
    let borrowed: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = TestApp::spawn_with(&borrowed, None).await;
    if let Some(email) = known {
        assert_eq!(write_through(&app, email).await.0, "done");
    }
    let mut all = crate::helpers::base_vars(&app.db, &app.sparkloop);
    for (k, v) in &vars {
        all.insert(k.to_string(), v.clone());
    }
    let run = |args: &'static [&'static str]| {
        let all = all.clone();
        tokio::task::spawn_blocking(move || crate::helpers::run_command(args, &all))
    };
    let (ok, stdout, stderr) = run(&["reconcile", "--esp"]).await.unwrap();
    assert!(ok, "{stdout}{stderr}");
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("read back:"))
        .unwrap_or_else(|| panic!("{stdout}"))
        .to_string();
    if !summary.ends_with(" 0 differences") {
        let (ok, stdout, stderr) = run(&["reconcile", "--esp", "--fix"]).await.unwrap();
        assert!(ok, "{stdout}{stderr}");
        assert!(stderr.contains("queued 1 field writes"), "{stderr}");
        let db = &app.db;
        eventually("the rewrite done", Duration::from_secs(20), || {
            db.count("SELECT COUNT(*) AS n FROM jobs WHERE destination = 'esp' AND status = 'done'")
                == 2
        })
        .await;
    }
    app.stop().await;
    Some(summary)
}

#[tokio::test]
async fn esp_read_backs_are_valid_for_each_vendors_spec() {
    // Brevo's example lists contact1@example.com (2 of 3 contacts a page: listed twice).
    if let Some(summary) = read_back_against(
        "prism::esp_read_backs (brevo)",
        "brevo_swagger_v3.yaml",
        &[
            ("ESP_ADAPTER", "brevo"),
            ("ESP_API_URL", "{prism}"),
            ("ESP_API_KEY", "xkeysib-test"),
        ],
        Some("contact1@example.com"),
    )
    .await
    {
        // Prism serves the same page for every offset: the read stops at `count`, and the
        // contacts listed twice count once.
        assert!(
            summary.starts_with("read back: 2 ESP contacts, 1 subscribed here, "),
            "{summary}"
        );
        assert!(!summary.ends_with(" 0 differences"), "{summary}");
    }
    // Kit's example lists four subscribers, alice@convertkit.dev among them, whose fields hold
    // none of the bridge's.
    if let Some(summary) = read_back_against(
        "prism::esp_read_backs (kit)",
        "kit_v4_openapi.json",
        &[
            ("ESP_ADAPTER", "kit"),
            ("ESP_API_URL", "{prism}"),
            ("ESP_API_KEY", "kit-key"),
        ],
        Some("alice@convertkit.dev"),
    )
    .await
    {
        assert!(
            summary.starts_with("read back: 4 ESP contacts, 1 subscribed here, "),
            "{summary}"
        );
        assert!(!summary.ends_with(" 0 differences"), "{summary}");
    }
    // Mailchimp's example member has no valid address: read, and matched to no one.
    if let Some(summary) = read_back_against(
        "prism::esp_read_backs (mailchimp)",
        "mailchimp_members_openapi.yml",
        &[
            ("ESP_ADAPTER", "mailchimp"),
            ("ESP_API_URL", "{prism}"),
            ("ESP_API_KEY", "0123abcd-us6"),
            ("ESP_LIST_ID", "a6b5da1054"),
        ],
        None,
    )
    .await
    {
        assert_eq!(
            summary,
            "read back: 1 ESP contacts, 0 subscribed here, 0 differences"
        );
    }
}
