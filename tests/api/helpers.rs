use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::Connection;
use referral_bridge::config::Settings;
use referral_bridge::startup::Application;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

/// The secret the test ESP signs its webhooks with.
pub const ESP_SECRET: &str = "esp-test-secret";

/// The token the test SparkLoop sends with its callbacks.
pub const SPARKLOOP_TOKEN: &str = "sparkloop-test-token";

/// Where the stand-in ESP receives field writes (on the same mock server as SparkLoop).
pub const ESP_FIELDS_PATH: &str = "/esp/fields";

/// A real database for one test: a SQLite file in a temporary folder, or a fresh Postgres
/// database (dropped afterwards) when TEST_DATABASE_URL is set.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    postgres: Option<(String, String)>,
}

impl TestDb {
    pub fn new() -> TestDb {
        match std::env::var("TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
        {
            Some(admin_url) => {
                let name = format!("rb_test_{:016x}", rand::random::<u64>());
                let mut admin = diesel::PgConnection::establish(&admin_url).unwrap_or_else(|e| {
                    panic!("TEST_DATABASE_URL is set but Postgres cannot be reached: {e}")
                });
                admin
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .expect("cannot create a test database");
                let base = admin_url.split('?').next().unwrap();
                let base = &base[..base.rfind('/').unwrap()];
                TestDb {
                    url: format!("{base}/{name}"),
                    _dir: None,
                    postgres: Some((admin_url.clone(), name)),
                }
            }
            None => {
                let dir = tempfile::tempdir().unwrap();
                let url = dir.path().join("bridge.db").to_str().unwrap().to_string();
                TestDb {
                    url,
                    _dir: Some(dir),
                    postgres: None,
                }
            }
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.postgres.is_some()
    }

    /// Runs statements straight on the database.
    pub fn execute(&self, sql: &str) {
        if self.is_postgres() {
            let mut c = diesel::PgConnection::establish(&self.url).unwrap();
            c.batch_execute(sql).unwrap();
        } else {
            let mut c = diesel::SqliteConnection::establish(&self.url).unwrap();
            c.batch_execute(sql).unwrap();
        }
    }

    /// Runs one query returning a single integer, straight on the database.
    pub fn count(&self, sql: &str) -> i64 {
        use diesel::sql_types::BigInt;
        use diesel::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        let query = diesel::sql_query(sql);
        if self.is_postgres() {
            let mut c = diesel::PgConnection::establish(&self.url).unwrap();
            query.get_result::<Count>(&mut c).unwrap().n
        } else {
            let mut c = diesel::SqliteConnection::establish(&self.url).unwrap();
            query.get_result::<Count>(&mut c).unwrap().n
        }
    }

    /// Runs one query returning text in a column `s`, straight on the database.
    pub fn strings(&self, sql: &str) -> Vec<String> {
        use diesel::sql_types::Text;
        use diesel::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = Text)]
            s: String,
        }
        let query = diesel::sql_query(sql);
        let rows: Vec<Row> = if self.is_postgres() {
            let mut c = diesel::PgConnection::establish(&self.url).unwrap();
            query.load(&mut c).unwrap()
        } else {
            let mut c = diesel::SqliteConnection::establish(&self.url).unwrap();
            query.load(&mut c).unwrap()
        };
        rows.into_iter().map(|r| r.s).collect()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin_url, name)) = &self.postgres {
            if let Ok(mut admin) = diesel::PgConnection::establish(admin_url) {
                let _ =
                    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        }
    }
}

/// The variables every test bridge runs with: fast retries and polling, a stand-in SparkLoop.
pub fn base_vars(db: &TestDb, sparkloop: &MockServer) -> HashMap<String, String> {
    [
        ("DATABASE_URL", db.url.clone()),
        ("BRIDGE_LISTEN", "127.0.0.1:0".into()),
        ("ESP_WEBHOOK_SECRET", ESP_SECRET.into()),
        (
            "SPARKLOOP_INCOMING_WEBHOOK_URL",
            format!("{}/incoming", sparkloop.uri()),
        ),
        ("SPARKLOOP_WEBHOOK_TOKEN", SPARKLOOP_TOKEN.into()),
        (
            "ESP_API_URL",
            format!("{}{ESP_FIELDS_PATH}", sparkloop.uri()),
        ),
        ("ESP_RATE_LIMIT", "1000/1s".into()),
        ("RETRY_BASE_DELAY", "100ms".into()),
        ("RETRY_MAX_DELAY", "400ms".into()),
        ("BRIDGE_POLL_INTERVAL", "100ms".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// A bridge running in this process.
pub struct TestApp {
    pub address: String,
    pub db: TestDb,
    pub sparkloop: MockServer,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    /// A bridge whose SparkLoop answers 200 to everything.
    pub async fn spawn() -> TestApp {
        Self::spawn_with(&[], None).await
    }

    /// A bridge with extra variables (`{stand-in}` in a value is replaced by the stand-in's
    /// address), and the stand-in answering as `mock` says where it matches, 200 to SparkLoop's
    /// incoming webhook and the custom ESP's field writes elsewhere.
    pub async fn spawn_with(vars: &[(&str, &str)], mock: Option<Mock>) -> TestApp {
        let sparkloop = MockServer::start().await;
        if let Some(mock) = mock {
            sparkloop.register(mock).await;
        }
        // Mocks default to priority 5; these answer only what they leave.
        for fallback in ["/incoming", ESP_FIELDS_PATH] {
            sparkloop
                .register(
                    Mock::given(method("POST"))
                        .and(path(fallback))
                        .respond_with(ResponseTemplate::new(200))
                        .with_priority(10),
                )
                .await;
        }
        let db = TestDb::new();
        let mut all = base_vars(&db, &sparkloop);
        // `{stand-in}` in a value is the stand-in's address, known only now.
        for (k, v) in vars {
            all.insert(k.to_string(), v.replace("{stand-in}", &sparkloop.uri()));
        }
        let settings = Settings::from_vars(all).expect("test settings are valid");
        let app = Application::build(settings).await.expect("the app builds");
        let address = format!("http://127.0.0.1:{}", app.port());
        let shutdown = app.shutdown_handle();
        let task = tokio::spawn(app.run_until_stopped());
        TestApp {
            address,
            db,
            sparkloop,
            client: reqwest::Client::new(),
            shutdown,
            task: Some(task),
        }
    }

    /// `GET` of `path` on the bridge.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .unwrap()
    }

    /// Posts a body to `/webhooks/esp` with the right bearer token.
    pub async fn post_esp(&self, body: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/webhooks/esp", self.address))
            .bearer_auth(ESP_SECRET)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("the bridge answers")
    }

    /// Posts a SparkLoop callback with the right token.
    pub async fn post_sparkloop(&self, body: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/webhooks/sparkloop", self.address))
            .header("SparkLoop-Token", SPARKLOOP_TOKEN)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("the bridge answers")
    }

    /// The bodies SparkLoop has received so far, in order.
    pub async fn received(&self) -> Vec<Value> {
        self.requests_to("/incoming")
            .await
            .iter()
            .map(|r| serde_json::from_slice(&r.body).expect("the bridge sends JSON"))
            .collect()
    }

    /// The requests the stand-in received at `at`, in order.
    pub async fn requests_to(&self, at: &str) -> Vec<Request> {
        self.sparkloop
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.url.path() == at)
            .collect()
    }

    /// The field writes the ESP received so far, in order, as JSON.
    pub async fn esp_writes(&self) -> Vec<Value> {
        self.requests_to(ESP_FIELDS_PATH)
            .await
            .iter()
            .map(|r| serde_json::from_slice(&r.body).expect("the bridge sends JSON"))
            .collect()
    }

    /// Waits until the ESP has received a write for `email` whose fields equal `fields`;
    /// returns that write (panics after 15 s, showing what did arrive).
    pub async fn wait_for_fields(&self, email: &str, fields: &Value) -> Value {
        let start = Instant::now();
        loop {
            let writes = self.esp_writes().await;
            if let Some(write) = writes
                .iter()
                .find(|w| w["email"] == email && &w["fields"] == fields)
            {
                return write.clone();
            }
            if start.elapsed() > Duration::from_secs(15) {
                panic!("no write of {fields} for {email}; the ESP received {writes:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the ESP's first write for `email`, whatever its fields; returns it (panics
    /// after 15 s, showing what did arrive).
    pub async fn wait_for_write(&self, email: &str) -> Value {
        let start = Instant::now();
        loop {
            let writes = self.esp_writes().await;
            if let Some(write) = writes.iter().find(|w| w["email"] == email) {
                return write.clone();
            }
            if start.elapsed() > Duration::from_secs(15) {
                panic!("no write for {email}; the ESP received {writes:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until no ESP field write is queued or running (panics after 30 s).
    pub async fn wait_until_esp_idle(&self) {
        let db = &self.db;
        eventually("the ESP writes to finish", Duration::from_secs(30), || {
            db.count(
                "SELECT COUNT(*) AS n FROM jobs WHERE destination = 'esp' \
                 AND status IN ('waiting', 'pending', 'running')",
            ) == 0
        })
        .await;
    }

    /// Runs the workers until the queue is idle: no job waiting, due or being sent, in any
    /// destination (panics after 30 s). What the stand-ins received by then is all they will
    /// receive for what was posted so far.
    pub async fn drain(&self) {
        drain(&self.db).await;
    }

    /// Waits until at least `n` field writes are due (their `ESP_WRITE_DELAY` passed), so that
    /// a bridge started now finds them ready (panics after 15 s).
    pub async fn wait_until_esp_due(&self, n: i64) {
        let db = &self.db;
        eventually(
            "the field writes to be due",
            Duration::from_secs(15),
            || {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis();
                db.count(&format!(
                    "SELECT COUNT(*) AS n FROM jobs WHERE destination = 'esp' \
                 AND status = 'pending' AND run_at <= {now}"
                )) >= n
            },
        )
        .await;
    }

    /// Waits until SparkLoop has received `n` requests (panics after 15 s).
    pub async fn wait_for_requests(&self, n: usize) -> Vec<Value> {
        wait_for(&self.sparkloop, n, Duration::from_secs(15)).await
    }

    /// Stops the bridge and starts another on the same database and stand-in, with the base
    /// variables and `vars` (as [`TestApp::spawn_with`] takes them).
    pub async fn restart_with(mut self, vars: &[(&str, &str)]) -> TestApp {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
        let mut all = base_vars(&self.db, &self.sparkloop);
        for (k, v) in vars {
            all.insert(
                k.to_string(),
                v.replace("{stand-in}", &self.sparkloop.uri()),
            );
        }
        let settings = Settings::from_vars(all).expect("test settings are valid");
        let app = Application::build(settings).await.expect("the app builds");
        let address = format!("http://127.0.0.1:{}", app.port());
        let shutdown = app.shutdown_handle();
        let task = tokio::spawn(app.run_until_stopped());
        TestApp {
            address,
            db: self.db,
            sparkloop: self.sparkloop,
            client: self.client,
            shutdown,
            task: Some(task),
        }
    }

    /// Stops the bridge as SIGTERM would and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

pub async fn received_bodies(server: &MockServer) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r: &Request| serde_json::from_slice(&r.body).expect("the bridge sends JSON"))
        .collect()
}

/// Waits until `server` has received at least `n` requests.
pub async fn wait_for(server: &MockServer, n: usize, limit: Duration) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let bodies = received_bodies(server).await;
        if bodies.len() >= n {
            return bodies;
        }
        if start.elapsed() > limit {
            panic!(
                "SparkLoop received {} requests, expected {n}: {bodies:?}",
                bodies.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for a condition on the database.
/// Waits until no job of `db` is waiting, due or being sent (panics after 30 s).
pub async fn drain(db: &TestDb) {
    eventually("the queue to drain", Duration::from_secs(30), || {
        db.count("SELECT COUNT(*) AS n FROM jobs WHERE status IN ('waiting', 'pending', 'running')")
            == 0
    })
    .await;
}

pub async fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        if start.elapsed() > limit {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `subscribe` body as in the seed.
pub fn subscribe(email: &str) -> String {
    serde_json::json!({"type": "subscribe", "subscriber": {"email": email}}).to_string()
}

/// The bridge binary run as its own process, for the tests a process must take part in.
pub struct BridgeProcess {
    pub child: Child,
    pub address: String,
    pub log: Arc<Mutex<String>>,
}

impl BridgeProcess {
    /// Starts `referral-bridge serve` with `vars` and waits until it listens.
    pub fn start(vars: &HashMap<String, String>) -> BridgeProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_referral-bridge"))
            .arg("serve")
            .current_dir(std::env::temp_dir())
            .env_clear()
            .envs(vars)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(address) = line.split("listening on ").nth(1) {
                    if let Some(tx) = tx.take() {
                        let address = address.split(',').next().unwrap().to_string();
                        let _ = tx.send(address);
                    }
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let address = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("the bridge did not start: {}", log.lock().unwrap()));
        BridgeProcess {
            child,
            address: format!("http://{address}"),
            log,
        }
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends SIGTERM and waits for the process to exit; returns whether it exited successfully.
    pub fn terminate(mut self) -> bool {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap().success()
    }
}

/// Runs the binary with `args` and `vars`; returns (success, stdout, stderr).
pub fn run_command(args: &[&str], vars: &HashMap<String, String>) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_referral-bridge"))
        .args(args)
        .current_dir(std::env::temp_dir())
        .env_clear()
        .envs(vars)
        .output()
        .expect("the binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Says that a test was skipped, on the real stderr (libtest would swallow `eprintln!` of a
/// passing test), so that a run without Postgres shows what it did not cover.
pub fn skipped(test: &str, reason: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
}
