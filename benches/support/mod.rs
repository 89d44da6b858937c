//! What the benchmarks share: fresh databases on each backend, the bridge on its own runtime, a
//! stand-in for SparkLoop and the ESP, and a load generator.

#![allow(dead_code)] // each benchmark uses its own part

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use diesel::connection::SimpleConnection;
use diesel::Connection;
use referral_bridge::config::Settings;
use referral_bridge::startup::Application;
use serde_json::Value;

/// The ESP webhook secret of the bridges under test.
pub const ESP_SECRET: &str = "bench-secret";
/// The SparkLoop callback token of the bridges under test.
pub const SPARKLOOP_TOKEN: &str = "bench-token";

/// An environment knob: `BENCH_SECONDS` and the like.
pub fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Runs `run(backend, new_database)` for SQLite and, when reachable, Postgres (`BENCH_BACKENDS`
/// picks one; `BENCH_POSTGRES_URL`, default loopback without TLS, whose cost belongs to the
/// deployment, not to the bridge). `new_database` gives a fresh, empty database URL each call;
/// Postgres databases are dropped afterwards.
pub fn for_each_backend(mut run: impl FnMut(&str, &mut dyn FnMut() -> String)) {
    let backends = std::env::var("BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    let dir = tempfile::tempdir().unwrap();
    let mut files = 0;
    if backends.contains("sqlite") {
        run("sqlite", &mut || {
            files += 1;
            let file = dir.path().join(format!("bench{files}.db"));
            file.to_str().unwrap().to_string()
        });
    }
    if !backends.contains("postgres") {
        return;
    }
    let admin = std::env::var("BENCH_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable".into());
    let mut conn = match diesel::PgConnection::establish(&admin) {
        Ok(conn) => conn,
        Err(e) => {
            println!("\npostgres: skipped, {admin} cannot be reached: {e}");
            return;
        }
    };
    let mut created = Vec::new();
    let (base, query) = admin.split_once('?').unwrap_or((&admin, ""));
    let base = base[..base.rfind('/').unwrap()].to_string();
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    run("postgres", &mut || {
        let name = format!("rb_bench_{:08x}", rand::random::<u32>());
        conn.batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        created.push(name.clone());
        format!("{base}/{name}{query}")
    });
    for name in created {
        let _ = conn.batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"));
    }
}

/// A stand-in for SparkLoop (`/incoming`) and the ESP (`/esp`) answering 200 at once; it counts
/// what it receives and keeps, per email, the fields of the ESP's last write.
pub struct StandIn {
    /// Its base URL.
    pub base: String,
    /// Requests to `/incoming`.
    pub sparkloop_received: Arc<AtomicU64>,
    /// Requests to `/esp`.
    pub esp_received: Arc<AtomicU64>,
    /// The fields of the last write per email.
    pub esp_last: Arc<Mutex<HashMap<String, Value>>>,
    /// When each SparkLoop API call (`/v2/subscribers...`) arrived.
    pub api_arrivals: Arc<Mutex<Vec<Instant>>>,
}

impl StandIn {
    /// Starts it on its own threads.
    pub fn start() -> StandIn {
        let sparkloop_received = Arc::new(AtomicU64::new(0));
        let esp_received = Arc::new(AtomicU64::new(0));
        let esp_last = Arc::new(Mutex::new(HashMap::new()));
        let api_arrivals = Arc::new(Mutex::new(Vec::new()));
        let (sparkloop, esp, last, api) = (
            sparkloop_received.clone(),
            esp_received.clone(),
            esp_last.clone(),
            api_arrivals.clone(),
        );
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    let sparkloop = sparkloop.clone();
                    let (esp, last, api) = (esp.clone(), last.clone(), api.clone());
                    App::new()
                        .route(
                            "/v2/subscribers",
                            web::post().to(move || {
                                api.lock().unwrap().push(Instant::now());
                                async { HttpResponse::Ok().finish() }
                            }),
                        )
                        .route(
                            "/esp",
                            web::post().to(move |body: web::Bytes| {
                                let write: Value = serde_json::from_slice(&body).unwrap();
                                let email = write["email"].as_str().unwrap().to_string();
                                last.lock().unwrap().insert(email, write["fields"].clone());
                                esp.fetch_add(1, Ordering::Relaxed);
                                async { HttpResponse::Ok().finish() }
                            }),
                        )
                        .default_service(web::to(move || {
                            sparkloop.fetch_add(1, Ordering::Relaxed);
                            async { HttpResponse::Ok().finish() }
                        }))
                })
                .workers(2)
                .bind("127.0.0.1:0")
                .unwrap();
                tx.send(server.addrs()[0]).unwrap();
                server.run().await
            })
        });
        let addr = rx.recv().unwrap();
        StandIn {
            base: format!("http://{addr}"),
            sparkloop_received,
            esp_received,
            esp_last,
            api_arrivals,
        }
    }

    /// SparkLoop's incoming-webhook URL.
    pub fn sparkloop_url(&self) -> String {
        format!("{}/incoming", self.base)
    }

    /// The URL the custom ESP receives field writes at.
    pub fn esp_url(&self) -> String {
        format!("{}/esp", self.base)
    }
}

/// A running bridge on its own runtime and threads.
pub struct Bridge {
    /// Its base URL.
    pub address: String,
    stop: tokio_util::sync::CancellationToken,
    thread: std::thread::JoinHandle<()>,
}

impl Bridge {
    /// Starts a bridge on `database_url` with `extra` variables on top of the bench's own.
    pub fn start(database_url: &str, extra: &[(&str, String)]) -> Bridge {
        let mut vars: HashMap<String, String> = [
            ("DATABASE_URL", database_url),
            ("BRIDGE_LISTEN", "127.0.0.1:0"),
            ("ESP_WEBHOOK_SECRET", ESP_SECRET),
            ("SPARKLOOP_WEBHOOK_TOKEN", SPARKLOOP_TOKEN),
            ("BRIDGE_POLL_INTERVAL", "200ms"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in extra {
            vars.insert(k.to_string(), v.clone());
        }
        let settings = Settings::from_vars(vars).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let app = Application::build(settings).await.unwrap();
                tx.send((app.port(), app.shutdown_handle())).unwrap();
                app.run_until_stopped().await.unwrap();
            });
        });
        let (port, stop) = rx.recv().unwrap();
        Bridge {
            address: format!("http://127.0.0.1:{port}"),
            stop,
            thread,
        }
    }

    /// Stops it and waits.
    pub fn stop(self) {
        self.stop.cancel();
        self.thread.join().unwrap();
    }
}

/// The load generator's own runtime: one thread, so that it takes no more than one core.
pub fn load_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// What a load phase measured.
pub struct Measured {
    /// Requests per second.
    pub rate: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Requests not answered 2xx.
    pub errors: u64,
}

impl Measured {
    /// The rate and percentiles of `latencies`, taken over `elapsed`.
    pub fn of(mut latencies: Vec<Duration>, elapsed: Duration, errors: u64) -> Measured {
        latencies.sort();
        Measured {
            rate: latencies.len() as f64 / elapsed.as_secs_f64(),
            p50: percentile(&latencies, 0.5),
            p99: percentile(&latencies, 0.99),
            errors,
        }
    }

    /// One line of the report.
    pub fn line(&self, label: &str) -> String {
        format!(
            "  {label:<22} {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}",
            self.rate,
            ms(self.p50),
            ms(self.p99),
            self.errors
        )
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Milliseconds of a duration.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Builds request number `n`.
pub type MakeRequest = Arc<dyn Fn(&reqwest::Client, u64) -> reqwest::RequestBuilder + Send + Sync>;

/// A load-generator client keeping `connections` connections open.
pub fn client(connections: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .unwrap()
}

/// Sends a request; whether it was answered 2xx.
pub async fn send(request: reqwest::RequestBuilder) -> bool {
    match request.send().await {
        Ok(r) => {
            let ok = r.status().is_success();
            let _ = r.bytes().await;
            ok
        }
        Err(_) => false,
    }
}

/// Closed loop: `connections` clients each sending as fast as answers come, for `seconds`;
/// requests are numbered from `next`.
pub async fn closed_loop(
    make: MakeRequest,
    seconds: u64,
    connections: usize,
    next: Arc<AtomicU64>,
) -> Measured {
    let client = client(connections);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (client, next, errors, make) =
            (client.clone(), next.clone(), errors.clone(), make.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let n = next.fetch_add(1, Ordering::Relaxed);
                let ok = send(make(&client, n)).await;
                latencies.push(t.elapsed());
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    Measured::of(all, started.elapsed(), errors.load(Ordering::Relaxed))
}

/// Open loop: `per_second` requests a second for `seconds`, whatever the answers do; latency
/// counts from when each request was due.
pub async fn open_loop(
    make: MakeRequest,
    per_second: u64,
    seconds: u64,
    next: Arc<AtomicU64>,
) -> Measured {
    let client = client(256);
    let total = per_second * seconds;
    let interval = Duration::from_secs(1) / per_second as u32;
    let started = Instant::now();
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(total as usize);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 0..total {
        ticker.tick().await;
        let due = started + interval * i as u32;
        let (client, next, errors, make) =
            (client.clone(), next.clone(), errors.clone(), make.clone());
        tasks.push(tokio::spawn(async move {
            let n = next.fetch_add(1, Ordering::Relaxed);
            if !send(make(&client, n)).await {
                errors.fetch_add(1, Ordering::Relaxed);
            }
            due.elapsed()
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.push(task.await.unwrap());
    }
    Measured::of(all, started.elapsed(), errors.load(Ordering::Relaxed))
}

/// Sends `requests` with at most `in_flight` at once; how many were answered 2xx.
pub async fn send_all(requests: Vec<reqwest::RequestBuilder>, in_flight: usize) -> u64 {
    use futures_util::StreamExt;
    futures_util::stream::iter(requests)
        .map(send)
        .buffer_unordered(in_flight)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await as u64
}

/// `GET /healthz`, the baseline.
pub fn healthz(address: &str) -> MakeRequest {
    let url = format!("{address}/healthz");
    Arc::new(move |client, _| client.get(&url))
}

/// The most of `times` (sorted) in any window of `window`.
pub fn busiest(times: &[Instant], window: Duration) -> usize {
    let mut most = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end].duration_since(times[start]) >= window {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    most
}
