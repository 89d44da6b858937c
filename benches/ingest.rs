//! Durable-ingest and drain benchmark, on SQLite and (when reachable) Postgres.
//!
//! For each backend it starts the bridge on loopback with a stand-in SparkLoop that answers at
//! once, then measures, with the same load generator in the same run:
//! 1. `GET /healthz` at full speed (the baseline),
//! 2. `POST /webhooks/esp` at full speed (each a distinct subscriber, stored durably, while the
//!    worker forwards them), reported as a ratio of the baseline,
//! 3. `POST /webhooks/esp` at a fixed 1,000 requests/s, latency measured from each request's
//!    scheduled start (so a stall is not hidden), p50/p99,
//! 4. `POST /webhooks/esp` at full speed again, each an `update` renaming one of the subscribers
//!    stored in phase 2 (a changed record written back, a job queued behind any still open),
//! 5. a backlog of 10,000 jobs drained to the stand-in: jobs/s;
//! 6. phases 1 and 2 again with more concurrent senders (BENCH_SWEEP, default 128 and 256): a
//!    batch commits whatever arrived while the previous one ran, so the ratio depends on how
//!    many requests wait together, and each level has its own baseline.
//!
//! `cargo bench --bench ingest`; knobs: BENCH_SECONDS (default 5), BENCH_CONNECTIONS (32),
//! BENCH_SWEEP (a comma-separated list of connection counts, `none` for none),
//! BENCH_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable; a
//! fresh database is created and dropped under it), BENCH_BACKENDS (sqlite, postgres or both),
//! BENCH_WORKER=off (nothing is delivered while ingesting), BENCH_DRAIN=off (no drain phase).

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{Bridge, MakeRequest, StandIn, ESP_SECRET};

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let seconds: u64 = support::knob("BENCH_SECONDS", 5);
    let connections: usize = support::knob("BENCH_CONNECTIONS", 32);
    let standin = StandIn::start();
    println!(
        "referral-bridge ingest benchmark: {seconds}s per phase, {connections} connections, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    support::for_each_backend(|backend, new_database| {
        run_backend(backend, new_database, &standin, seconds, connections)
    });
}

/// The connection counts of the sweep: BENCH_SWEEP, default 128 and 256.
fn sweep() -> Vec<usize> {
    let list = std::env::var("BENCH_SWEEP").unwrap_or_else(|_| "128,256".into());
    list.split(',')
        .filter(|item| !item.trim().is_empty() && item.trim() != "none")
        .map(|item| {
            item.trim()
                .parse()
                .unwrap_or_else(|_| panic!("BENCH_SWEEP: `{item}` is not a number of connections"))
        })
        .collect()
}

/// A `subscribe` webhook for subscriber `n`.
fn subscribe(address: &str) -> MakeRequest {
    let url = format!("{address}/webhooks/esp");
    Arc::new(move |client, n| {
        client
            .post(&url)
            .bearer_auth(ESP_SECRET)
            .header("content-type", "application/json")
            .body(format!(
                r#"{{"type":"subscribe","subscriber":{{"email":"bench{n}@example.com","id":{n},"first_name":"B"}}}}"#
            ))
    })
}

/// An `update` webhook giving one of the subscribers numbered `known` a new first name.
fn rename(address: &str, known: std::ops::Range<u64>) -> MakeRequest {
    let url = format!("{address}/webhooks/esp");
    let count = (known.end - known.start).max(1);
    Arc::new(move |client, n| {
        let who = known.start + n % count;
        client
            .post(&url)
            .bearer_auth(ESP_SECRET)
            .header("content-type", "application/json")
            .body(format!(
                r#"{{"type":"update","subscriber":{{"email":"bench{who}@example.com","first_name":"U{n}"}}}}"#
            ))
    })
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
    let runtime = support::load_runtime();
    let next = Arc::new(AtomicU64::new(0));
    // BENCH_WORKER=off measures ingest with the queue filling up and nothing delivered.
    let deliver = std::env::var("BENCH_WORKER").map_or(true, |v| v != "off");
    // As deployed: an ESP configured for the field writes (a signup queues none).
    let mut vars = vec![("ESP_API_URL", standin.esp_url())];
    if deliver {
        vars.push(("SPARKLOOP_INCOMING_WEBHOOK_URL", standin.sparkloop_url()));
    }
    let bridge = Bridge::start(&new_database(), &vars);
    runtime.block_on(async {
        let health = support::closed_loop(
            support::healthz(&bridge.address),
            seconds,
            connections,
            next.clone(),
        )
        .await;
        println!("{}", health.line("GET /healthz"));
        // Both flat-out POST phases, printed as a share of the baseline.
        let flat_out = |make: MakeRequest, label: &'static str| {
            let next = next.clone();
            async move {
                let measured = support::closed_loop(make, seconds, connections, next).await;
                println!(
                    "{}  = {:.0}% of /healthz",
                    measured.line(label),
                    100.0 * measured.rate / health.rate
                );
            }
        };
        let first = next.load(Ordering::Relaxed);
        flat_out(subscribe(&bridge.address), "POST /webhooks/esp").await;
        let known = first..next.load(Ordering::Relaxed);
        let paced =
            support::open_loop(subscribe(&bridge.address), 1000, seconds, next.clone()).await;
        println!("{}", paced.line("POST at 1,000 req/s"));
        flat_out(rename(&bridge.address, known), "POST, known people").await;
    });
    for senders in sweep() {
        runtime.block_on(async {
            let health = support::closed_loop(
                support::healthz(&bridge.address),
                seconds,
                senders,
                next.clone(),
            )
            .await;
            let ingest =
                support::closed_loop(subscribe(&bridge.address), seconds, senders, next.clone())
                    .await;
            println!(
                "  {senders} connections: /healthz {:.0} req/s, POST /webhooks/esp {:.0} req/s \
                 (p99 {:.1} ms, errors {}) = {:.0}% of /healthz",
                health.rate,
                ingest.rate,
                support::ms(ingest.p99),
                health.errors + ingest.errors,
                100.0 * ingest.rate / health.rate
            );
        });
    }
    bridge.stop();
    if std::env::var("BENCH_DRAIN").is_ok_and(|v| v == "off") {
        return;
    }

    // The drain: 10,000 jobs queued while SparkLoop is not configured, then a bridge that can
    // deliver starts and empties the queue.
    let database_url = new_database();
    let holding = Bridge::start(&database_url, &[]);
    let queued = runtime.block_on(async {
        let client = support::client(64);
        let make = subscribe(&holding.address);
        let requests = (0..10_000)
            .map(|_| make(&client, next.fetch_add(1, Ordering::Relaxed)))
            .collect();
        support::send_all(requests, 64).await
    });
    holding.stop();
    let received_before = standin.sparkloop_received.load(Ordering::Relaxed);
    let started = Instant::now();
    let draining = Bridge::start(
        &database_url,
        &[("SPARKLOOP_INCOMING_WEBHOOK_URL", standin.sparkloop_url())],
    );
    while standin.sparkloop_received.load(Ordering::Relaxed) - received_before < queued {
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
