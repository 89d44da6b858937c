//! Durable-ingest and drain benchmark, on SQLite and (when reachable) Postgres.
//!
//! For each backend it starts the bridge on loopback with a stand-in SparkLoop that answers at
//! once, then measures, with the same load generator in the same run:
//! 1. `GET /healthz` at full speed (the baseline),
//! 2. `POST /webhooks/esp` at full speed (each a distinct subscriber, stored durably, while the
//!    worker forwards them), reported as a ratio of the baseline,
//! 3. `POST /webhooks/esp` at a fixed 1,000 requests/s, latency measured from each request's
//!    scheduled start (so a stall is not hidden), p50/p99,
//! 4. a backlog of 10,000 jobs drained to the stand-in: jobs/s.
//!
//! `cargo bench --bench ingest`; knobs: BENCH_SECONDS (default 5), BENCH_CONNECTIONS (32),
//! BENCH_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable; a
//! fresh database is created and dropped under it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use diesel::connection::SimpleConnection;
use diesel::Connection;
use referral_bridge::config::Settings;
use referral_bridge::startup::Application;

const SECRET: &str = "bench-secret";

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let connections: usize = std::env::var("BENCH_CONNECTIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32);
    let standin = StandIn::start();
    println!(
        "referral-bridge ingest benchmark: {seconds}s per phase, {connections} connections, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // BENCH_BACKENDS=sqlite or =postgres runs one of them.
    let backends = std::env::var("BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    let dir = tempfile::tempdir().unwrap();
    let mut files = 0;
    if backends.contains("sqlite") {
        run_backend(
            "sqlite",
            &mut || {
                files += 1;
                dir.path()
                    .join(format!("bench{files}.db"))
                    .to_str()
                    .unwrap()
                    .to_string()
            },
            &standin,
            seconds,
            connections,
        );
    }
    if !backends.contains("postgres") {
        return;
    }
    let admin = std::env::var("BENCH_POSTGRES_URL")
        // Loopback: no TLS, whose cost belongs to the deployment, not to the bridge.
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable".into());
    match diesel::PgConnection::establish(&admin) {
        Ok(mut conn) => {
            let mut created = Vec::new();
            let (base, query) = admin.split_once('?').unwrap_or((&admin, ""));
            let base = base[..base.rfind('/').unwrap()].to_string();
            let query = if query.is_empty() {
                String::new()
            } else {
                format!("?{query}")
            };
            run_backend(
                "postgres",
                &mut || {
                    let name = format!("rb_bench_{:08x}", rand::random::<u32>());
                    conn.batch_execute(&format!("CREATE DATABASE {name}"))
                        .unwrap();
                    created.push(name.clone());
                    format!("{base}/{name}{query}")
                },
                &standin,
                seconds,
                connections,
            );
            for name in created {
                let _ = conn.batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"));
            }
        }
        Err(e) => println!("\npostgres: skipped, {admin} cannot be reached: {e}"),
    }
}

/// A SparkLoop stand-in that answers 200 at once and counts what it received.
struct StandIn {
    url: String,
    received: Arc<AtomicU64>,
}

impl StandIn {
    fn start() -> StandIn {
        let received = Arc::new(AtomicU64::new(0));
        let counter = received.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    let counter = counter.clone();
                    App::new().default_service(web::to(move || {
                        counter.fetch_add(1, Ordering::Relaxed);
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
            url: format!("http://{addr}/incoming"),
            received,
        }
    }
}

/// A running bridge on its own runtime and threads.
struct Bridge {
    address: String,
    stop: tokio_util::sync::CancellationToken,
    thread: std::thread::JoinHandle<()>,
}

impl Bridge {
    fn start(database_url: &str, sparkloop: Option<&str>) -> Bridge {
        let mut vars: std::collections::HashMap<String, String> = [
            ("DATABASE_URL", database_url),
            ("BRIDGE_LISTEN", "127.0.0.1:0"),
            ("ESP_WEBHOOK_SECRET", SECRET),
            ("BRIDGE_POLL_INTERVAL", "200ms"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        if let Some(url) = sparkloop {
            vars.insert("SPARKLOOP_INCOMING_WEBHOOK_URL".into(), url.into());
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

    fn stop(self) {
        self.stop.cancel();
        self.thread.join().unwrap();
    }
}

fn body(n: u64) -> String {
    format!(
        r#"{{"type":"subscribe","subscriber":{{"email":"bench{n}@example.com","id":{n},"first_name":"B"}}}}"#
    )
}

/// What a load phase measured.
struct Measured {
    rate: f64,
    p50: Duration,
    p99: Duration,
    errors: u64,
}

impl Measured {
    /// The rate and percentiles of `latencies`, taken over `elapsed`.
    fn of(mut latencies: Vec<Duration>, elapsed: Duration, errors: u64) -> Measured {
        latencies.sort();
        Measured {
            rate: latencies.len() as f64 / elapsed.as_secs_f64(),
            p50: percentile(&latencies, 0.5),
            p99: percentile(&latencies, 0.99),
            errors,
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Closed loop: `connections` clients each sending as fast as answers come, for `seconds`.
async fn closed_loop(
    address: &str,
    ingest: bool,
    seconds: u64,
    connections: usize,
    next: Arc<AtomicU64>,
) -> Measured {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (client, next, errors) = (client.clone(), next.clone(), errors.clone());
        let address = address.to_string();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let ok = send(&client, &address, ingest, &next).await;
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

/// Open loop: one request every millisecond for `seconds`, whatever the answers do; latency
/// counts from when each request was due.
async fn open_loop(address: &str, per_second: u64, seconds: u64, next: Arc<AtomicU64>) -> Measured {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
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
        let (client, next, errors) = (client.clone(), next.clone(), errors.clone());
        let address = address.to_string();
        tasks.push(tokio::spawn(async move {
            if !send(&client, &address, true, &next).await {
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

async fn send(client: &reqwest::Client, address: &str, ingest: bool, next: &AtomicU64) -> bool {
    let response = if ingest {
        let n = next.fetch_add(1, Ordering::Relaxed);
        client
            .post(format!("{address}/webhooks/esp"))
            .bearer_auth(SECRET)
            .header("content-type", "application/json")
            .body(body(n))
            .send()
            .await
    } else {
        client.get(format!("{address}/healthz")).send().await
    };
    match response {
        Ok(r) => {
            let ok = r.status().is_success();
            let _ = r.bytes().await;
            ok
        }
        Err(_) => false,
    }
}

/// Runs every phase on `backend`; `new_database` gives a fresh, empty database URL (the drain
/// gets one of its own, so that it measures exactly its own backlog).
fn run_backend(
    backend: &str,
    new_database: &mut dyn FnMut() -> String,
    standin: &StandIn,
    seconds: u64,
    connections: usize,
) {
    println!("\n{backend}:");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let next = Arc::new(AtomicU64::new(0));
    // BENCH_WORKER=off measures ingest with the queue filling up and nothing delivered.
    let deliver = std::env::var("BENCH_WORKER").map_or(true, |v| v != "off");
    let bridge = Bridge::start(&new_database(), deliver.then_some(standin.url.as_str()));
    runtime.block_on(async {
        let health = closed_loop(&bridge.address, false, seconds, connections, next.clone()).await;
        println!(
            "  GET /healthz           {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}",
            health.rate,
            ms(health.p50),
            ms(health.p99),
            health.errors
        );
        let ingest = closed_loop(&bridge.address, true, seconds, connections, next.clone()).await;
        println!(
            "  POST /webhooks/esp     {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}  = {:.0}% of /healthz",
            ingest.rate,
            ms(ingest.p50),
            ms(ingest.p99),
            ingest.errors,
            100.0 * ingest.rate / health.rate
        );
        let paced = open_loop(&bridge.address, 1000, seconds, next.clone()).await;
        println!(
            "  POST at 1,000 req/s    {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}",
            paced.rate,
            ms(paced.p50),
            ms(paced.p99),
            paced.errors
        );
    });
    bridge.stop();

    // The drain: 10,000 jobs queued while SparkLoop is not configured, then a bridge that can
    // deliver starts and empties the queue.
    let database_url = new_database();
    let holding = Bridge::start(&database_url, None);
    let queued = runtime.block_on(async {
        let client = reqwest::Client::new();
        let mut queued = 0u64;
        let mut pending = Vec::new();
        for _ in 0..10_000 {
            pending.push(send(&client, &holding.address, true, &next));
            if pending.len() == 64 {
                queued += futures_util::future::join_all(pending.drain(..))
                    .await
                    .into_iter()
                    .filter(|ok| *ok)
                    .count() as u64;
            }
        }
        queued
            + futures_util::future::join_all(pending)
                .await
                .into_iter()
                .filter(|ok| *ok)
                .count() as u64
    });
    holding.stop();
    let received_before = standin.received.load(Ordering::Relaxed);
    let started = Instant::now();
    let draining = Bridge::start(&database_url, Some(&standin.url));
    while standin.received.load(Ordering::Relaxed) - received_before < queued {
        if started.elapsed() > Duration::from_secs(600) {
            println!("  drain: gave up after 600 s");
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = started.elapsed();
    draining.stop();
    println!(
        "  drain of {queued} jobs      {:>8.0} jobs/s ({:.1} s)",
        queued as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
