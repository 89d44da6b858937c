//! Retention soak (issue: data lifecycle): events through the bridge as deployed (an ESP and
//! SparkLoop configured, deliveries running to a stand-in) with a short `BRIDGE_RETENTION`, so
//! that most of what is stored is pruned during the run. It reports, in one run:
//! 1. the database's size every ten seconds while BENCH_EVENTS events about BENCH_PEOPLE people
//!    arrive at BENCH_RATE a second (the size curve: flat once the first retention period has
//!    passed), deliveries running;
//! 2. on the same database, ingest alone (at 1,000 requests/s: p50/p99, then flat out) with
//!    nothing to prune (the baseline), then the same while a pass works through what (1) left,
//!    as a ratio of the baseline; then the baseline's flat-out phase again, after.
//!
//! `cargo bench --bench soak`; knobs: BENCH_EVENTS (1,000,000), BENCH_PEOPLE (50,000: the
//! list's size; the first event of each person a signup, the rest renames), BENCH_RATE (2,500),
//! BENCH_RETENTION_SECONDS (60), BENCH_SECONDS (10, for each phase of 2), BENCH_BACKENDS,
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

/// Event `n`: a list of `people` (subscribers are kept, by design: they are the bridge's memory),
/// each new the first time and then renamed, every body different (no duplicates).
fn event(address: &str, people: u64) -> MakeRequest {
    let url = format!("{address}/webhooks/esp");
    Arc::new(move |client, n| {
        let who = n % people;
        let kind = if n < people { "subscribe" } else { "update" };
        client
            .post(&url)
            .bearer_auth(ESP_SECRET)
            .header("content-type", "application/json")
            .body(format!(
                r#"{{"type":"{kind}","subscriber":{{"email":"soak{who}@example.com","id":{who},"first_name":"S{n}"}}}}"#
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
    let rate: u64 = support::knob("BENCH_RATE", 2_500);
    let retention: u64 = support::knob("BENCH_RETENTION_SECONDS", 60);
    let seconds: u64 = support::knob("BENCH_SECONDS", 10);
    let people: u64 = support::knob("BENCH_PEOPLE", 50_000);
    let url = new_database();
    let load = support::load_runtime();
    let next = Arc::new(AtomicU64::new(0));

    // Part 1: the size curve under a steady load, deliveries running, pruning as it comes.
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
        "\n{backend}: {events} events about {people} people at {rate}/s, deliveries running, \
         BRIDGE_RETENTION={retention}s (a pass every {}s)",
        (retention / 4).max(1)
    );
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (url, sampling) = (url.clone(), sampling.clone());
        std::thread::spawn(move || {
            let mut curve = Vec::new();
            while sampling.load(Ordering::Relaxed) {
                curve.push((started.elapsed().as_secs(), size_of(&url)));
                std::thread::sleep(Duration::from_secs(10));
            }
            curve
        })
    };
    let steady = load.block_on(support::open_loop(
        event(&bridge.address, people),
        rate,
        events.div_ceil(rate).max(1),
        next.clone(),
    ));
    println!("{}", steady.line(&format!("steady {rate}/s")));
    sampling.store(false, Ordering::Relaxed);
    let curve = sampler.join().unwrap();
    println!(
        "  events sent {}, delivered to SparkLoop {}; database size (s: MiB):",
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
        .filter(|(at, _)| *at >= 2 * retention)
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

    // Part 2: what a pass costs ingest. The same database, ingest alone (no platform to send
    // to, the ESP configured), once with nothing to prune, once while a pass works through
    // what part 1 left.
    let ingest_alone = |retention: &str| {
        Bridge::start(
            &url,
            &[
                ("ESP_API_URL", standin.esp_url()),
                ("BRIDGE_RETENTION", retention.to_string()),
                ("DEDUPE_WINDOW", retention.to_string()),
            ],
        )
    };
    let fresh = |address: &str| subscribe_new(address, 10_000_000);
    // Ingest flat out: 32 senders, each request someone new.
    let flat_out = |bridge: &Bridge| {
        load.block_on(support::closed_loop(
            fresh(&bridge.address),
            seconds,
            32,
            next.clone(),
        ))
    };
    // The paced phase first in each: after a flat-out one its latency would be the burst's
    // aftermath (the log it left being checkpointed), not the pass's.
    let bridge = ingest_alone("30d");
    let before_paced = load.block_on(support::open_loop(
        fresh(&bridge.address),
        1_000,
        seconds,
        next.clone(),
    ));
    println!("{}", before_paced.line("1,000/s, no pass"));
    let before = flat_out(&bridge);
    println!("{}", before.line("ingest, no pass"));
    bridge.stop();
    let bridge = ingest_alone("2s");
    // The first pass starts within a second.
    std::thread::sleep(Duration::from_millis(1200));
    let paced = load.block_on(support::open_loop(
        fresh(&bridge.address),
        1_000,
        seconds,
        next.clone(),
    ));
    println!("{}", paced.line("1,000/s during a pass"));
    let during = flat_out(&bridge);
    println!(
        "{}  ({:.0}% of ingest with no pass)",
        during.line("ingest during a pass"),
        100.0 * during.rate / before.rate
    );
    bridge.stop();
    // The baseline again, after: each phase adds to the tables the next one writes into, so the
    // one before alone would flatter it against the pass.
    let bridge = ingest_alone("30d");
    let after = flat_out(&bridge);
    println!(
        "{}  (during a pass: {:.0}% of the two with no pass, before and after)",
        after.line("ingest, no pass, after"),
        200.0 * during.rate / (before.rate + after.rate)
    );
    bridge.stop();
}

/// A `subscribe` of someone new: numbers from `offset` on.
fn subscribe_new(address: &str, offset: u64) -> MakeRequest {
    let url = format!("{address}/webhooks/esp");
    Arc::new(move |client, n| {
        let who = offset + n;
        client
            .post(&url)
            .bearer_auth(ESP_SECRET)
            .header("content-type", "application/json")
            .body(format!(
                r#"{{"type":"subscribe","subscriber":{{"email":"new{who}@example.com","id":{who}}}}}"#
            ))
    })
}
