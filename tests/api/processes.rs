//! Crashes and several instances: nothing acknowledged is lost, nothing is sent twice at once.

use std::collections::HashMap;
use std::time::Duration;

use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{
    base_vars, drain, received_bodies, run_command, subscribe, wait_for, BridgeProcess, TestDb,
    ESP_SECRET,
};

async fn post_all(client: &reqwest::Client, address: &str, emails: &[String]) {
    let mut pending = Vec::new();
    for chunk in emails.chunks(50) {
        for email in chunk {
            pending.push(
                client
                    .post(format!("{address}/webhooks/esp"))
                    .bearer_auth(ESP_SECRET)
                    .body(subscribe(email))
                    .send(),
            );
        }
        for response in futures_util::future::join_all(pending.drain(..)).await {
            assert_eq!(response.unwrap().status(), 200);
        }
    }
}

fn emails_received(bodies: &[serde_json::Value]) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for body in bodies {
        *seen
            .entry(body["subscriber"]["email"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    seen
}

#[tokio::test]
async fn a_killed_process_loses_nothing_it_acknowledged() {
    let sparkloop = MockServer::start().await;
    sparkloop
        .register(
            Mock::given(method("POST"))
                .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(400))),
        )
        .await;
    let db = TestDb::new();
    let mut vars = base_vars(&db, &sparkloop);
    vars.insert("BRIDGE_WORKERS".into(), "4".into());
    vars.insert("BRIDGE_LEASE".into(), "3s".into());
    vars.insert("BRIDGE_REQUEST_TIMEOUT".into(), "1s".into());
    let emails: Vec<String> = (0..40).map(|i| format!("crash{i}@b.co")).collect();

    let first = BridgeProcess::start(&vars);
    post_all(&reqwest::Client::new(), &first.address, &emails).await;
    // Some jobs are in flight now (4 at a time, 400 ms each), most are pending.
    wait_for(&sparkloop, 4, Duration::from_secs(5)).await;
    first.kill();
    let before = received_bodies(&sparkloop).await.len();
    assert!(
        before < emails.len(),
        "the crash came too late to test anything"
    );
    assert!(db.count("SELECT COUNT(*) AS n FROM jobs WHERE status IN ('pending', 'running')") > 0);

    let second = BridgeProcess::start(&vars);
    let start = std::time::Instant::now();
    loop {
        let seen = emails_received(&received_bodies(&sparkloop).await);
        if emails.iter().all(|e| seen.contains_key(e)) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "only {} of {} subscribers reached SparkLoop after the restart",
            seen.len(),
            emails.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(second.terminate());
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM jobs WHERE status = 'done'"),
        emails.len() as i64
    );
}

#[tokio::test]
async fn two_processes_on_one_postgres_never_send_a_job_twice() {
    let db = TestDb::new();
    if !db.is_postgres() {
        crate::helpers::skipped(
            "two_processes_on_one_postgres_never_send_a_job_twice",
            "needs Postgres (set TEST_DATABASE_URL)",
        );
        return;
    }
    let sparkloop = MockServer::start().await;
    sparkloop
        .register(
            Mock::given(method("POST"))
                .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(5))),
        )
        .await;
    let vars = base_vars(&db, &sparkloop);
    // Queue 1,000 jobs through the first process before either sends: SparkLoop is not known yet.
    let mut holding = vars.clone();
    holding.remove("SPARKLOOP_INCOMING_WEBHOOK_URL");
    let loader = BridgeProcess::start(&holding);
    let emails: Vec<String> = (0..1000).map(|i| format!("pair{i}@b.co")).collect();
    post_all(&reqwest::Client::new(), &loader.address, &emails).await;
    assert!(loader.terminate());
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM jobs WHERE status = 'pending'"),
        1000
    );

    let a = BridgeProcess::start(&vars);
    let b = BridgeProcess::start(&vars);
    wait_for(&sparkloop, emails.len(), Duration::from_secs(120)).await;
    // Every job is finished: anything sent twice has arrived by now.
    drain(&db).await;
    let bodies = received_bodies(&sparkloop).await;
    let seen = emails_received(&bodies);
    assert_eq!(seen.len(), emails.len());
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
    let (log_a, log_b) = (a.log.clone(), b.log.clone());
    assert!(a.terminate() && b.terminate());
    let delivered = |log: &str| log.matches(" delivered").count();
    let (by_a, by_b) = (
        delivered(&log_a.lock().unwrap()),
        delivered(&log_b.lock().unwrap()),
    );
    assert_eq!(by_a + by_b, emails.len());
    assert!(
        by_a > 0 && by_b > 0,
        "both processes worked: {by_a} and {by_b}"
    );
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM jobs WHERE status = 'done'"),
        1000
    );
}

#[test]
fn instances_migrating_one_new_postgres_database_at_once_take_turns() {
    if std::env::var("TEST_DATABASE_URL").is_err() {
        crate::helpers::skipped(
            "instances_migrating_one_new_postgres_database_at_once_take_turns",
            "needs Postgres (set TEST_DATABASE_URL)",
        );
        return;
    }
    let db = TestDb::new();
    let vars: HashMap<String, String> = [
        ("DATABASE_URL", db.url.clone()),
        ("RUST_LOG", "warn".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    // Four at once: without the advisory lock, all would try to create the same tables.
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let vars = vars.clone();
            std::thread::spawn(move || run_command(&["migrate"], &vars))
        })
        .collect();
    for run in runs {
        let (ok, stdout, stderr) = run.join().unwrap();
        assert!(ok, "{stdout}{stderr}");
    }
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .unwrap()
        .count() as i64;
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM __diesel_schema_migrations"),
        migrations,
        "each migration applied once"
    );
}
