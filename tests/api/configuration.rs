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
    assert!(stdout.contains("ok      database"), "{stdout}");
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
    assert!(
        stdout.contains("the ESP API (custom) reachable"),
        "{stdout}"
    );
    assert!(!stdout.contains("t0ken"), "{stdout}");
    assert!(
        stdout.contains("the SparkLoop incoming webhook reachable"),
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
        stdout.contains("SPARKLOOP_INCOMING_WEBHOOK_URL cannot be reached: connection refused"),
        "{stdout}"
    );
}

#[tokio::test]
async fn check_fails_when_the_peers_refuse_the_credentials_or_fail() {
    use wiremock::matchers::{header, method, path};
    use wiremock::{Mock, ResponseTemplate};
    let db = TestDb::new();
    let peers = wiremock::MockServer::start().await;
    Mock::given(path("/esp"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&peers)
        .await;
    Mock::given(path("/incoming"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&peers)
        .await;
    let esp = format!("{}/esp", peers.uri());
    let incoming = format!("{}/incoming", peers.uri());
    let base = [
        ("DATABASE_URL", db.url.as_str()),
        ("ESP_WEBHOOK_SECRET", "s3cret"),
        ("SPARKLOOP_WEBHOOK_TOKEN", "t0ken"),
        ("ESP_API_URL", esp.as_str()),
        ("ESP_API_KEY", "the-esp-key"),
        ("SPARKLOOP_INCOMING_WEBHOOK_URL", incoming.as_str()),
    ];
    let (ok, stdout, _) = run_command(&["check"], &vars(&base));
    assert!(!ok, "{stdout}");
    assert!(
        stdout.contains(
            "PROBLEM the ESP API (custom) refused the credentials (HTTP 401): check ESP_API_KEY"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("PROBLEM the SparkLoop incoming webhook is failing (HTTP 500)"),
        "{stdout}"
    );
    assert!(!stdout.contains("all checks passed"), "{stdout}");
    assert!(!stdout.contains("the-esp-key"), "{stdout}");
    // The probe carried the key: with the key the ESP accepts, the ESP line passes.
    peers.reset().await;
    Mock::given(method("GET"))
        .and(path("/esp"))
        .and(header("authorization", "Bearer the-esp-key"))
        .respond_with(ResponseTemplate::new(405))
        .mount(&peers)
        .await;
    Mock::given(path("/incoming"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&peers)
        .await;
    let (ok, stdout, _) = run_command(&["check"], &vars(&base));
    assert!(ok, "{stdout}");
}

#[test]
fn check_and_a_dry_run_create_no_database() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("new.db");
    let csv = dir.path().join("people.csv");
    std::fs::write(&csv, "email\nann@example.com\n").unwrap();
    let all = vars(&[("DATABASE_URL", file.to_str().unwrap())]);
    let (_, stdout, _) = run_command(&["check"], &all);
    assert!(stdout.contains("does not exist yet"), "{stdout}");
    let (ok, stdout, stderr) = run_command(&["import", "--dry-run", csv.to_str().unwrap()], &all);
    assert!(ok, "{stdout}{stderr}");
    assert!(stderr.contains("does not exist yet"), "{stderr}");
    assert!(stdout.contains("new 1"), "{stdout}");
    assert!(!file.exists(), "no database was created");
    // A database with migrations to apply says how many, and is left as it is.
    let (ok, _, _) = run_command(&["migrate"], &all);
    assert!(ok);
    {
        use diesel::connection::SimpleConnection;
        use diesel::Connection;
        let mut conn = diesel::SqliteConnection::establish(file.to_str().unwrap()).unwrap();
        conn.batch_execute(
            "DELETE FROM __diesel_schema_migrations \
             WHERE version = (SELECT MAX(version) FROM __diesel_schema_migrations)",
        )
        .unwrap();
    }
    let (_, stdout, _) = run_command(&["check"], &all);
    assert!(stdout.contains("1 migration(s) pending"), "{stdout}");
    let (ok, _, stderr) = run_command(&["import", "--dry-run", csv.to_str().unwrap()], &all);
    assert!(!ok && stderr.contains("lacks 1 migration(s)"), "{stderr}");
    let (_, stdout, _) = run_command(&["check"], &all);
    assert!(stdout.contains("1 migration(s) pending"), "still: {stdout}");
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

/// Runs the binary in `dir` with only `vars` in its environment.
fn run_in(dir: &std::path::Path, args: &[&str], vars: &[(&str, &str)]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_referral-bridge"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .envs(vars.iter().copied())
        .output()
        .expect("the binary runs")
}

#[test]
fn env_files_come_from_the_working_directory_or_bridge_env_file_only() {
    let parent = tempfile::tempdir().unwrap();
    let child = parent.path().join("child");
    std::fs::create_dir(&child).unwrap();
    // A `.env` one folder up is not this folder's.
    std::fs::write(
        parent.path().join(".env"),
        "DATABASE_URL=from-the-parent.db\nRETRY_BASE_DELAY=soon\n",
    )
    .unwrap();
    let output = run_in(&child, &["check"], &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("referral-bridge.db"), "{stdout}");
    assert!(!stdout.contains("from-the-parent"), "{stdout}");
    // BRIDGE_ENV_FILE names one: it is read (its bad value stops the command).
    let named = parent.path().join(".env");
    let output = run_in(
        &child,
        &["check"],
        &[("BRIDGE_ENV_FILE", named.to_str().unwrap())],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("RETRY_BASE_DELAY"),
        "{stderr}"
    );
    let output = run_in(
        &child,
        &["check"],
        &[("BRIDGE_ENV_FILE", "/nonexistent/env")],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("BRIDGE_ENV_FILE"),
        "{stderr}"
    );
    // The working directory's own `.env` is read.
    std::fs::write(child.join(".env"), "DATABASE_URL=from-here.db\n").unwrap();
    let output = run_in(&child, &["check"], &[]);
    assert!(String::from_utf8_lossy(&output.stdout).contains("from-here.db"));
    assert!(
        !child.join("from-here.db").exists(),
        "check created no database"
    );
}

#[test]
fn rust_log_must_parse_and_one_that_silences_the_bridge_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_in(
        dir.path(),
        &["check"],
        &[("RUST_LOG", "info,referral_bridge=loud")],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("RUST_LOG") && stderr.contains("loud"),
        "{stderr}"
    );
    let output = run_in(
        dir.path(),
        &["deliveries", "list"],
        &[("RUST_LOG", "verbose")],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: RUST_LOG=`verbose` names no module of the bridge"),
        "{stderr}"
    );
}

#[test]
fn output_to_a_closed_pipe_ends_quietly() {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pipe.db");
    // Enough output to fill a pipe: the command writes after the reader has gone.
    let (ok, _, _) = run_command(
        &["migrate"],
        &vars(&[("DATABASE_URL", db.to_str().unwrap())]),
    );
    assert!(ok);
    {
        use diesel::connection::SimpleConnection;
        use diesel::Connection;
        let mut conn = diesel::SqliteConnection::establish(db.to_str().unwrap()).unwrap();
        let mut sql = String::from(
            "INSERT INTO subscribers (id, email, status, created_at, updated_at) \
             VALUES (1, 'pipe@example.com', 'subscribed', 0, 0);",
        );
        for id in 1..=500 {
            sql += &format!(
                "INSERT INTO jobs (id, subscriber_id, destination, kind, payload, status, \
                 created_at, retry_from, run_at) VALUES ({id}, 1, 'sparkloop', 'subscribe', \
                 '{{}}', 'dead', 0, 0, 0);"
            );
        }
        conn.batch_execute(&sql).unwrap();
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_referral-bridge"))
        .args(["deliveries", "list", "--limit", "500"])
        .env_clear()
        .env("DATABASE_URL", &db)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read one line, then hang up, as `| head -1` does.
    {
        use std::io::BufRead;
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(!first.is_empty());
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert!(
        output.status.success() || output.status.signal() == Some(libc_sigpipe()),
        "{:?} {stderr}",
        output.status
    );
}

/// SIGPIPE's number on Linux and the BSDs.
fn libc_sigpipe() -> i32 {
    13
}
