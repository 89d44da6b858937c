//! Retention soak (issue: data lifecycle): events through the bridge as deployed (an ESP and
//! SparkLoop configured, deliveries running to a stand-in) with a short `BRIDGE_RETENTION`, so
//! that most of what is stored is pruned during the run. It reports, in one run:
//! 1. ingest flat out before anything is old enough to prune (the baseline),
//! 2. the database's size every few seconds while BENCH_EVENTS events arrive at BENCH_RATE a
//!    second (the size curve: flat once the first retention period has passed),
//! 3. ingest flat out again while pruning runs, as a ratio of (1),
//! 4. p50/p99 of the acknowledgement at 1,000 requests/s while pruning runs.
//!
//! `cargo bench --bench soak`; knobs: BENCH_EVENTS (1,000,000), BENCH_RATE (3,000),
//! BENCH_RETENTION_SECONDS (20), BENCH_SECONDS (10, for phases 1, 3 and 4), BENCH_BACKENDS,
//! BENCH_POSTGRES_URL.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::{Connection, QueryableByName, RunQueryDsl};
use support::{Bridge, MakeRequest, StandIn, ESP_SECRET};

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let standin = StandIn::start();
    println!(
        "referral-bridge retention soak: {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    support::for_each_backend(|backend, new_database| run(backend, new_database, &standin));
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
                r#"{{"type":"subscribe","subscriber":{{"email":"soak{n}@example.com","id":{n},"first_name":"S"}}}}"#
            ))
    })
}

/// The database's size in bytes: the SQLite file and its log, or `pg_database_size`.
fn size_of(database_url: &str) -> u64 {
    if database_url.starts_with("postgres") {
        #[derive(QueryableByName)]
        struct Size {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            bytes: i64,
        }
        let mut conn = diesel::PgConnection::establish(database_url).unwrap();
        diesel::sql_query("SELECT pg_database_size(current_database()) AS bytes")
            .get_result::<Size>(&mut conn)
            .unwrap()
            .bytes as u64
    } else {
        ["", "-wal"]
            .iter()
            .map(|suffix| {
                std::fs::metadata(format!("{database_url}{suffix}")).map_or(0, |m| m.len())
            })
            .sum()
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn run(backend: &str, new_database: &mut dyn FnMut() -> String, standin: &StandIn) {
    let events: u64 = support::knob("BENCH_EVENTS", 1_000_000);
    let rate: u64 = support::knob("BENCH_RATE", 3_000);
    let retention: u64 = support::knob("BENCH_RETENTION_SECONDS", 20);
    let seconds: u64 = support::knob("BENCH_SECONDS", 10);
    let url = new_database();
    let bridge = Bridge::start(
        &url,
        &[
            ("SPARKLOOP_INCOMING_WEBHOOK_URL", standin.sparkloop_url()),
            ("ESP_API_URL", standin.esp_url()),
            ("ESP_RATE_LIMIT", "100000/1s".into()),
            ("BRIDGE_RETENTION", format!("{retention}s")),
            ("DEDUPE_WINDOW", format!("{retention}s")),
        ],
    );
    let started = Instant::now();
    println!(
        "\n{backend}: {events} events at {rate}/s, BRIDGE_RETENTION={retention}s (a pass every {}s)",
        (retention / 4).max(1)
    );
    let load = support::load_runtime();
    let next = Arc::new(AtomicU64::new(0));
    let make = subscribe(&bridge.address);

    let before = load.block_on(support::closed_loop(
        make.clone(),
        seconds,
        32,
        next.clone(),
    ));
    println!("{}", before.line("ingest, nothing old"));

    // The steady load, with the size sampled as it goes.
    let sent_before = next.load(Ordering::Relaxed);
    let remaining = events.saturating_sub(sent_before);
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (url, sampling) = (url.clone(), sampling.clone());
        std::thread::spawn(move || {
            let mut curve = Vec::new();
            while sampling.load(Ordering::Relaxed) {
                curve.push((started.elapsed().as_secs(), size_of(&url)));
                std::thread::sleep(Duration::from_secs(5));
            }
            curve
        })
    };
    let steady = load.block_on(support::open_loop(
        make.clone(),
        rate,
        remaining.div_ceil(rate).max(1),
        next.clone(),
    ));
    println!("{}", steady.line(&format!("steady {rate}/s")));
    let during = load.block_on(support::closed_loop(
        make.clone(),
        seconds,
        32,
        next.clone(),
    ));
    println!(
        "{}  ({:.0}% of ingest before pruning)",
        during.line("ingest while pruning"),
        100.0 * during.rate / before.rate
    );
    let paced = load.block_on(support::open_loop(make, 1_000, seconds, next.clone()));
    println!("{}", paced.line("1,000/s while pruning"));
    sampling.store(false, Ordering::Relaxed);
    let curve = sampler.join().unwrap();
    println!(
        "  events sent {}, delivered to SparkLoop {}, database size (s: MiB):",
        next.load(Ordering::Relaxed),
        standin.sparkloop_received.load(Ordering::Relaxed)
    );
    let line: Vec<String> = curve
        .iter()
        .map(|(at, bytes)| format!("{at}: {:.1}", mib(*bytes)))
        .collect();
    for chunk in line.chunks(10) {
        println!("    {}", chunk.join("  "));
    }
    let settled: Vec<u64> = curve
        .iter()
        .filter(|(at, _)| *at >= 2 * retention + seconds)
        .map(|(_, b)| *b)
        .collect();
    if let (Some(min), Some(max)) = (settled.iter().min(), settled.iter().max()) {
        println!(
            "  after two retention periods: {:.1} to {:.1} MiB",
            mib(*min),
            mib(*max)
        );
    }
    bridge.stop();
}
