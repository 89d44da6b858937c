//! `referral-bridge import`: good, bad and repeated rows, quoting, a BOM and CRLF line ends,
//! re-imports, dry runs, files that are not CSV, and the push to SparkLoop.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::helpers::{run_command, TestApp, TestDb};

/// A folder for one test's files.
fn folder() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn write(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

fn vars(db: &TestDb, extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut vars: HashMap<String, String> = [
        ("DATABASE_URL", db.url.as_str()),
        (
            "SPARKLOOP_INCOMING_WEBHOOK_URL",
            "http://127.0.0.1:1/incoming",
        ),
        ("RUST_LOG", "warn"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        vars.insert(k.to_string(), v.to_string());
    }
    vars
}

fn import(file: &Path, flags: &[&str], vars: &HashMap<String, String>) -> (bool, String, String) {
    let mut args = vec!["import", file.to_str().unwrap()];
    args.extend(flags);
    run_command(&args, vars)
}

/// A file with everything: a BOM, CRLF, columns in any case and order with an extra one,
/// quoted fields with commas, quotes and a line break, a repeated row, and three bad rows.
const MIXED: &[u8] = b"\xef\xbb\xbfPlan,EMAIL,Id,First_Name,name,Created_At\r\n\
pro,Ann@Example.com ,17,Ann,\"Lee, Ann\",1564400550\r\n\
free,bob@example.com,abc-1,\"Bob \"\"B\"\"\",,2024-01-31\r\n\
free,not-an-email,3,,,\r\n\
free,cy@example.com,4,Cy,\"Cy\r\nSecond line\",yesterday\r\n\
free,dee@example.com\r\n\
pro,ann@example.com,17,Ann,\"Lee, Ann\",1564400550\r\n\
free,eve@example.com,,,,2024-01-31T10:00:00+02:00\r\n";

#[test]
fn a_mixed_file_is_imported_with_bad_rows_reported_by_line() {
    let (db, dir) = (TestDb::new(), folder());
    let file = write(dir.path(), "subscribers.csv", MIXED);
    let (ok, stdout, stderr) = import(&file, &[], &vars(&db, &[]));
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("read 7, new 3, changed 0, unchanged 1, rejected 3"),
        "{stdout}"
    );
    assert!(stdout.contains("queued 3 subscribe webhooks"), "{stdout}");
    for reported in [
        "line 4: the email is not a valid address: it has no `@`",
        // The row starting on line 5 spans two lines (a quoted line break).
        "line 5: created_at is neither unix seconds nor an ISO 8601 date",
        "line 7: expected 6 columns, found 2",
    ] {
        assert!(stderr.contains(reported), "{reported} in {stderr}");
    }
    let rejects = std::fs::read_to_string(dir.path().join("subscribers.csv.rejects.csv")).unwrap();
    let rejects: Vec<&str> = rejects.lines().collect();
    assert_eq!(
        rejects[0],
        "line,reason,Plan,EMAIL,Id,First_Name,name,Created_At"
    );
    assert_eq!(
        rejects[1],
        "4,the email is not a valid address: it has no `@`,free,not-an-email,3,,,"
    );
    assert!(rejects[2].starts_with("5,created_at is neither"));
    assert_eq!(
        rejects.last().unwrap(),
        &"7,\"expected 6 columns, found 2\",free,dee@example.com"
    );

    // Stored as the ESP would have sent them: ids in their own type, names unquoted.
    let stored = |condition: &str| {
        db.count(&format!(
            "SELECT COUNT(*) AS n FROM subscribers WHERE {condition}"
        ))
    };
    assert_eq!(stored("1 = 1"), 3);
    assert_eq!(
        stored("email = 'ann@example.com' AND esp_id = '17' AND name = 'Lee, Ann'"),
        1
    );
    assert_eq!(
        stored("email = 'bob@example.com' AND esp_id = '\"abc-1\"' AND first_name = 'Bob \"B\"'"),
        1
    );
    // The jobs carry the seed's `subscribe` shape, with created_at in unix seconds.
    let payload = |email: &str| {
        db.count(&format!(
            "SELECT COUNT(*) AS n FROM jobs j JOIN subscribers s ON s.id = j.subscriber_id \
             WHERE s.email = '{email}' AND j.kind = 'subscribe' AND j.status = 'pending' \
             AND j.payload = '{}'",
            match email {
                "ann@example.com" => json!({"type": "subscribe", "subscriber": {
                    "email": "ann@example.com", "id": 17, "first_name": "Ann",
                    "name": "Lee, Ann", "created_at": 1564400550}}),
                _ => json!({"type": "subscribe", "subscriber": {
                    "email": "eve@example.com", "created_at": 1706688000}}),
            }
            .to_string()
            .replace('\'', "''")
        ))
    };
    assert_eq!(payload("ann@example.com"), 1);
    assert_eq!(payload("eve@example.com"), 1);
}

#[test]
fn importing_again_changes_and_queues_nothing_and_unsubscribed_people_stay_so() {
    let (db, dir) = (TestDb::new(), folder());
    let file = write(dir.path(), "subscribers.csv", MIXED);
    assert!(import(&file, &[], &vars(&db, &[])).0);
    db.execute("UPDATE subscribers SET status = 'unsubscribed' WHERE email = 'bob@example.com'");
    let jobs = db.count("SELECT COUNT(*) AS n FROM jobs");
    let (ok, stdout, _) = import(&file, &[], &vars(&db, &[]));
    assert!(ok);
    assert!(
        stdout.contains("read 7, new 0, changed 0, unchanged 4, rejected 3"),
        "{stdout}"
    );
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM jobs"), jobs);
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM subscribers WHERE status = 'unsubscribed'"),
        1
    );

    // A later file that brings a name: changed, recorded, and still nothing queued.
    let later = write(
        dir.path(),
        "later.csv",
        b"email,first_name\ncy@example.com,Cy\neve@example.com,Eve\n",
    );
    let (ok, stdout, _) = import(&later, &[], &vars(&db, &[]));
    assert!(ok);
    assert!(
        stdout.contains("read 2, new 1, changed 1, unchanged 0"),
        "{stdout}"
    );
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM jobs"), jobs + 1);
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM subscribers WHERE email = 'eve@example.com' AND first_name = 'Eve'"),
        1
    );
}

#[test]
fn a_dry_run_writes_nothing_and_no_push_queues_nothing() {
    let (db, dir) = (TestDb::new(), folder());
    // A dry run compares with the database as it is, creating and migrating nothing.
    assert!(run_command(&["migrate"], &vars(&db, &[])).0);
    let file = write(dir.path(), "subscribers.csv", MIXED);
    let (ok, stdout, stderr) = import(&file, &["--dry-run"], &vars(&db, &[]));
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(
            "dry run, nothing written: read 7, new 3, changed 0, unchanged 1, rejected 3"
        ),
        "{stdout}"
    );
    assert!(stderr.contains("line 4: the email is not a valid address"));
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM subscribers"), 0);
    assert!(!dir.path().join("subscribers.csv.rejects.csv").exists());

    let (ok, stdout, _) = import(&file, &["--no-push"], &vars(&db, &[]));
    assert!(ok);
    assert!(
        stdout.contains("nothing queued for SparkLoop (--no-push)"),
        "{stdout}"
    );
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM subscribers"), 3);
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM jobs"), 0);
}

#[test]
fn a_file_that_is_not_csv_or_has_no_email_column_stops_with_nothing_written() {
    let (db, dir) = (TestDb::new(), folder());
    for (name, content, expected) in [
        (
            "no-email.csv",
            &b"name,id\nAnn,1\n"[..],
            "has no `email` column (its header row has: `name`, `id`)",
        ),
        (
            "binary.csv",
            &b"\xff\xfe\x00\x01,\x80\n"[..],
            "is not a CSV file",
        ),
        (
            "empty.csv",
            &b""[..],
            "is not a CSV file with a header row: the file is empty",
        ),
    ] {
        let file = write(dir.path(), name, content);
        let (ok, _, stderr) = import(&file, &[], &vars(&db, &[]));
        assert!(!ok, "{name}");
        assert!(stderr.contains(expected), "{name}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
    let (ok, _, stderr) = import(&dir.path().join("missing.csv"), &[], &vars(&db, &[]));
    assert!(!ok);
    assert!(stderr.contains("cannot open"), "{stderr}");
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM subscribers"), 0);
}

#[tokio::test]
async fn imported_subscribers_reach_sparkloop_once_serve_runs() {
    let app = TestApp::spawn().await;
    let dir = folder();
    let file = write(
        dir.path(),
        "subscribers.csv",
        b"email,id,created_at\nann@example.com,17,1564400550\nbob@example.com,18,\n",
    );
    let sparkloop = format!("{}/incoming", app.sparkloop.uri());
    let vars = vars(&app.db, &[("SPARKLOOP_INCOMING_WEBHOOK_URL", &sparkloop)]);
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || import(&file, &[], &vars))
        .await
        .unwrap();
    assert!(ok, "{stdout}{stderr}");
    let mut received = app.wait_for_requests(2).await;
    received.sort_by_key(|body| body["subscriber"]["email"].as_str().unwrap().to_string());
    assert_eq!(
        received,
        [
            json!({"type": "subscribe", "subscriber": {"email": "ann@example.com", "id": 17,
                "created_at": 1564400550}}),
            json!({"type": "subscribe", "subscriber": {"email": "bob@example.com", "id": 18}}),
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn imported_attribution_reaches_sparkloops_api_and_not_its_webhook() {
    let api = [
        ("SPARKLOOP_INCOMING_WEBHOOK_URL", ""),
        ("SPARKLOOP_API_URL", "{stand-in}"),
        ("SPARKLOOP_API_KEY", "sl-key"),
        ("SPARKLOOP_RATE_LIMIT", "100/1s"),
    ];
    let app = TestApp::spawn_with(&api, None).await;
    app.sparkloop
        .register(
            wiremock::Mock::given(wiremock::matchers::method("POST"))
                .and(wiremock::matchers::path("/v2/subscribers"))
                .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(json!({}))),
        )
        .await;
    let dir = folder();
    let file = write(
        dir.path(),
        "subscribers.csv",
        b"email,UTM_Source,referrer_code,country_code\nann@example.com,newsletter,rc9,\n",
    );
    let uri = app.sparkloop.uri();
    let vars = vars(
        &app.db,
        &[
            ("SPARKLOOP_INCOMING_WEBHOOK_URL", ""),
            ("SPARKLOOP_API_URL", &uri),
            ("SPARKLOOP_API_KEY", "sl-key"),
        ],
    );
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || import(&file, &[], &vars))
        .await
        .unwrap();
    assert!(ok, "{stdout}{stderr}");
    app.drain().await;
    let posted: Vec<serde_json::Value> = app
        .sparkloop
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/v2/subscribers")
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(
        posted,
        [json!({"email": "ann@example.com", "utm_source": "newsletter", "referrer_code": "rc9"})]
    );
    app.stop().await;
}

#[test]
fn the_rejects_file_keeps_unreadable_rows_and_right_line_numbers() {
    let db = TestDb::new();
    let dir = folder();
    // A header ending in `\r\r\n` (a file saved twice through a converter), then a row that is
    // not UTF-8 (Latin-1 `é`), a good row and a bad address.
    let file = write(
        dir.path(),
        "odd.csv",
        b"email,name\r\r\ncaf\xe9@example.com,Caf\xe9\r\r\nok@example.com,Ok\r\r\nnope,No\r\r\n",
    );
    let (ok, stdout, stderr) = import(&file, &[], &vars(&db, &[]));
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("read 3, new 1"), "{stdout}");
    assert!(stderr.contains("line 2: it is not UTF-8 text"), "{stderr}");
    assert!(
        stderr.contains("line 4: the email is not a valid address"),
        "{stderr}"
    );
    let rejects = std::fs::read(dir.path().join("odd.csv.rejects.csv")).unwrap();
    assert!(rejects.ends_with(b"\n"), "the file ends with a line break");
    let rejects = String::from_utf8(rejects).expect("the rejects file is UTF-8");
    let lines: Vec<&str> = rejects.lines().collect();
    assert_eq!(lines[0], "line,reason,email,name");
    assert_eq!(
        lines[1], "2,it is not UTF-8 text,caf\u{fffd}@example.com,Caf\u{fffd}",
        "the row as it was, its bytes that are not UTF-8 replaced"
    );
    assert!(
        lines[2].starts_with("4,the email is not a valid address"),
        "{rejects}"
    );
}

#[tokio::test]
async fn people_imported_with_no_push_are_pushed_later_once() {
    let app = TestApp::spawn().await;
    let dir = folder();
    let file = write(
        dir.path(),
        "later.csv",
        b"email,id\nann@example.com,17\nbob@example.com,18\n",
    );
    let sparkloop = format!("{}/incoming", app.sparkloop.uri());
    let vars = vars(&app.db, &[("SPARKLOOP_INCOMING_WEBHOOK_URL", &sparkloop)]);
    let (cli, path) = (vars.clone(), file.clone());
    let (ok, stdout, stderr) =
        tokio::task::spawn_blocking(move || import(&path, &["--no-push"], &cli))
            .await
            .unwrap();
    assert!(ok, "{stdout}{stderr}");
    app.drain().await;
    assert!(app.received().await.is_empty(), "--no-push sends nothing");
    // Bob left meanwhile: he is never pushed.
    let unsubscribe = json!({"type": "unsubscribe", "subscriber": {"email": "bob@example.com"}});
    assert_eq!(app.post_esp(&unsubscribe.to_string()).await.status(), 200);
    app.drain().await;
    let before = app.received().await.len();
    for expected in ["1 subscribe jobs queued", "0 subscribe jobs queued"] {
        let cli = vars.clone();
        let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || {
            run_command(&["deliveries", "push-unpushed"], &cli)
        })
        .await
        .unwrap();
        assert!(ok && stdout.contains(expected), "{stdout}{stderr}");
        app.drain().await;
    }
    let received = app.received().await;
    assert_eq!(
        received[before..],
        [json!({"type": "subscribe", "subscriber": {"email": "ann@example.com", "id": 17}})]
    );
    app.stop().await;
}
