//! Start-up with bad configuration: a one-line reason naming the variable, a non-zero exit.

use std::collections::HashMap;

use crate::helpers::{run_command, TestDb};

fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn invalid_values_stop_start_up_naming_the_variable() {
    let db = TestDb::new();
    for (pairs, variable) in [
        (vec![("RETRY_MAX_AGE", "a month")], "RETRY_MAX_AGE"),
        (vec![("BRIDGE_MAX_BODY", "-1")], "BRIDGE_MAX_BODY"),
        (vec![("ESP_ADAPTER", "hotmail")], "ESP_ADAPTER"),
        (
            vec![("SPARKLOOP_UPSTREAM", "carrier-pigeon")],
            "SPARKLOOP_UPSTREAM",
        ),
        (
            vec![("SPARKLOOP_UPSTREAM", "webhook")],
            "SPARKLOOP_INCOMING_WEBHOOK_URL",
        ),
        (vec![("DEDUPE_WINDOW", "1 fortnight")], "DEDUPE_WINDOW"),
        (vec![("ESP_RATE_LIMIT", "fast")], "ESP_RATE_LIMIT"),
        (vec![("ESP_RATE_LIMIT", "0/1s")], "ESP_RATE_LIMIT"),
        (vec![("ESP_WRITE_DELAY", "later")], "ESP_WRITE_DELAY"),
        (
            vec![("ESP_FIELD_NEXTREWARD", "RH_CODE")],
            "ESP_FIELD_NEXTREWARD",
        ),
        (
            vec![("BRIDGE_CONFIG", "/nonexistent/bridge.toml")],
            "BRIDGE_CONFIG",
        ),
    ] {
        let mut all = vars(&pairs);
        all.insert("DATABASE_URL".into(), db.url.clone());
        for command in [&["serve"][..], &["migrate"], &["check"]] {
            let (ok, _, stderr) = run_command(command, &all);
            assert!(!ok, "{command:?} {pairs:?} started");
            assert!(stderr.contains(variable), "{command:?} {pairs:?}: {stderr}");
            assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
            assert!(!stderr.contains("panicked"), "{stderr}");
        }
    }
}

#[test]
fn an_unreachable_database_is_reported_as_it_is() {
    // Nothing listens on port 1: the real error (connection refused) is shown, not "invalid URL".
    let (ok, _, stderr) = run_command(
        &["migrate"],
        &vars(&[("DATABASE_URL", "postgres://postgres@127.0.0.1:1/nothing")]),
    );
    assert!(!ok);
    assert!(stderr.to_lowercase().contains("refused"), "{stderr}");

    let (ok, _, stderr) = run_command(
        &["migrate"],
        &vars(&[("DATABASE_URL", "/nonexistent-folder/bridge.db")]),
    );
    assert!(!ok);
    assert!(stderr.contains("/nonexistent-folder"), "{stderr}");
}

#[test]
fn a_toml_file_is_read_and_the_environment_wins() {
    let db = TestDb::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bridge.toml");
    std::fs::write(&file, "retry_base_delay = \"never\"\n").unwrap();
    let mut all = vars(&[("BRIDGE_CONFIG", file.to_str().unwrap())]);
    all.insert("DATABASE_URL".into(), db.url.clone());
    let (ok, _, stderr) = run_command(&["migrate"], &all);
    assert!(!ok && stderr.contains("RETRY_BASE_DELAY"), "{stderr}");
    all.insert("RETRY_BASE_DELAY".into(), "5s".into());
    let (ok, stdout, stderr) = run_command(&["migrate"], &all);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("up to date"), "{stdout}");
}

#[test]
fn check_reports_problems_and_exits_non_zero() {
    let db = TestDb::new();
    let (ok, stdout, _) = run_command(&["check"], &vars(&[("DATABASE_URL", &db.url)]));
    assert!(!ok);
    assert!(stdout.contains("ESP_WEBHOOK_SECRET is not set"), "{stdout}");
    assert!(
        stdout.contains(
            "neither SPARKLOOP_INCOMING_WEBHOOK_URL (webhook mode) nor SPARKLOOP_API_KEY"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("ok      database answers"), "{stdout}");
    assert!(
        stdout.contains("SPARKLOOP_WEBHOOK_TOKEN is not set"),
        "{stdout}"
    );
    assert!(stdout.contains("ESP_API_URL is not set"), "{stdout}");
}

#[tokio::test]
async fn check_passes_when_everything_is_reachable() {
    let db = TestDb::new();
    let sparkloop = wiremock::MockServer::start().await;
    let (ok, stdout, stderr) = run_command(
        &["check"],
        &vars(&[
            ("DATABASE_URL", &db.url),
            ("ESP_WEBHOOK_SECRET", "s3cret"),
            ("SPARKLOOP_WEBHOOK_TOKEN", "t0ken"),
            ("ESP_API_URL", &format!("{}/esp", sparkloop.uri())),
            (
                "SPARKLOOP_INCOMING_WEBHOOK_URL",
                &format!("{}/incoming", sparkloop.uri()),
            ),
        ]),
    );
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("ESP API reachable"), "{stdout}");
    assert!(!stdout.contains("t0ken"), "{stdout}");
    assert!(
        stdout.contains("SparkLoop incoming webhook reachable"),
        "{stdout}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
    assert!(
        !stdout.contains("s3cret"),
        "the secret is not printed: {stdout}"
    );
    // Nothing was posted: SparkLoop would count a POST as an event.
    let requests = sparkloop.received_requests().await.unwrap();
    assert!(requests.iter().all(|r| r.method.as_str() != "POST"));

    // A webhook URL nothing answers is a problem.
    let (ok, stdout, _) = run_command(
        &["check"],
        &vars(&[
            ("DATABASE_URL", &db.url),
            ("ESP_WEBHOOK_SECRET", "s3cret"),
            (
                "SPARKLOOP_INCOMING_WEBHOOK_URL",
                "http://127.0.0.1:1/incoming",
            ),
        ]),
    );
    assert!(!ok);
    assert!(
        stdout.contains("SPARKLOOP_INCOMING_WEBHOOK_URL cannot be reached"),
        "{stdout}"
    );
}

#[test]
fn help_explains_every_command() {
    let (ok, stdout, _) = run_command(&["--help"], &HashMap::new());
    assert!(ok);
    for command in ["serve", "migrate", "deliveries", "check"] {
        assert!(stdout.contains(command), "{stdout}");
    }
    let (ok, stdout, _) = run_command(&["deliveries", "retry", "--help"], &HashMap::new());
    assert!(ok && stdout.contains("--dead"), "{stdout}");
}
