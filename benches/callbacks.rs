//! SparkLoop callbacks benchmark, on SQLite and (when reachable) Postgres.
//!
//! For each backend, with the same load generator in the same run:
//! 1. `GET /healthz` at full speed (the baseline), then `POST /webhooks/sparkloop` at full speed
//!    (`sync_subscriber` for a new person each time, committed durably before its 200), as a
//!    ratio of the baseline, with the ESP configured (the field writes they queue are sent meanwhile);
//! 2. coalescing: a burst of BENCH_CALLBACKS (100,000) callbacks for BENCH_SUBSCRIBERS (10,000)
//!    people, each person's callbacks in order and their referral count rising to its last
//!    value, interleaved with other people's (shuffled within windows of 100 people, as a
//!    platform's import burst sends them), against a stand-in ESP paced at BENCH_ESP_RATE
//!    (`ESP_RATE_LIMIT`, default 200/1s). Reported: callbacks/s accepted, ESP calls per person,
//!    and whether every person's last write carries their last state.
//!
//! `cargo bench --bench callbacks`; knobs as in the ingest benchmark (BENCH_SECONDS,
//! BENCH_CONNECTIONS, BENCH_BACKENDS, BENCH_POSTGRES_URL) and those above.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use support::{Bridge, MakeRequest, StandIn, SPARKLOOP_TOKEN};

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let seconds: u64 = support::knob("BENCH_SECONDS", 5);
    let connections: usize = support::knob("BENCH_CONNECTIONS", 32);
    let subscribers: u64 = support::knob("BENCH_SUBSCRIBERS", 10_000);
    let callbacks: u64 = support::knob("BENCH_CALLBACKS", 100_000);
    let esp_rate: String = support::knob("BENCH_ESP_RATE", "200/1s".to_string());
    let standin = StandIn::start();
    println!(
        "referral-bridge callbacks benchmark: {seconds}s per phase, {connections} connections, {} cores; \
         burst of {callbacks} callbacks for {subscribers} people, ESP paced at {esp_rate}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    support::for_each_backend(|backend, new_database| {
        println!("\n{backend}:");
        let runtime = support::load_runtime();
        throughput(&runtime, &new_database(), &standin, seconds, connections);
        coalescing(
            &runtime,
            &new_database(),
            &standin,
            &esp_rate,
            subscribers,
            callbacks / subscribers.max(1),
        );
    });
}

/// A `sync_subscriber` callback: person `person`, referral count `count`.
fn sync_subscriber(person: u64, count: u64) -> String {
    format!(
        r#"{{"type":"sync_subscriber","campaign_id":"MF6319db9890","subscriber":{{"id":"sub_{person}","email":"p{person}@example.com","referral_code":"c{person}","referral_link":"https://example.com?rh_ref=c{person}","referred":false,"tot_referrals":{count},"next_reward":2}}}}"#
    )
}

fn callback(address: &str, body: String, client: &reqwest::Client) -> reqwest::RequestBuilder {
    client
        .post(format!("{address}/webhooks/sparkloop"))
        .header("SparkLoop-Token", SPARKLOOP_TOKEN)
        .header("content-type", "application/json")
        .body(body)
}

/// Callbacks accepted per second, against `/healthz` on the same bridge; field writes are queued
/// (no ESP is configured), so that this measures acceptance alone.
fn throughput(
    runtime: &tokio::runtime::Runtime,
    database_url: &str,
    standin: &StandIn,
    seconds: u64,
    connections: usize,
) {
    // As deployed: the ESP configured, so that the field writes the callbacks queue are sent
    // (to the stand-in, at its own pace) while callbacks keep arriving.
    let bridge = Bridge::start(database_url, &[("ESP_API_URL", standin.esp_url())]);
    let next = Arc::new(AtomicU64::new(0));
    runtime.block_on(async {
        let health = support::closed_loop(
            support::healthz(&bridge.address),
            seconds,
            connections,
            next.clone(),
        )
        .await;
        println!("{}", health.line("GET /healthz"));
        let address = bridge.address.clone();
        let make: MakeRequest =
            Arc::new(move |client, n| callback(&address, sync_subscriber(n, 1), client));
        let accepted = support::closed_loop(make, seconds, connections, next.clone()).await;
        println!(
            "{}  = {:.0}% of /healthz",
            accepted.line("POST /webhooks/sparkloop"),
            100.0 * accepted.rate / health.rate
        );
    });
    bridge.stop();
}

/// The burst, then the ESP calls it cost.
fn coalescing(
    runtime: &tokio::runtime::Runtime,
    database_url: &str,
    standin: &StandIn,
    esp_rate: &str,
    people: u64,
    each: u64,
) {
    // The burst's order: windows of 100 people, each window's callbacks shuffled; a person's
    // n-th callback carries referral count n, so their last state is `each`.
    let mut order = Vec::with_capacity((people * each) as usize);
    let mut rng = rand::rng();
    for window in (0..people).collect::<Vec<_>>().chunks(100) {
        let mut slots: Vec<u64> = window
            .iter()
            .flat_map(|&p| std::iter::repeat_n(p, each as usize))
            .collect();
        slots.shuffle(&mut rng);
        order.extend(slots);
    }
    let calls_before = standin.esp_received.load(Ordering::Relaxed);
    standin.esp_last.lock().unwrap().clear();
    let bridge = Bridge::start(
        database_url,
        &[
            ("ESP_API_URL", standin.esp_url()),
            ("ESP_RATE_LIMIT", esp_rate.to_string()),
        ],
    );
    let lanes = 32u64;
    let started = Instant::now();
    let accepted = runtime.block_on(async {
        let client = support::client(lanes as usize);
        // One lane per group of people, so that a person's callbacks are sent in order.
        let tasks = (0..lanes).map(|lane| {
            let mine: Vec<u64> = order
                .iter()
                .copied()
                .filter(|p| p % lanes == lane)
                .collect();
            let (client, address) = (client.clone(), bridge.address.clone());
            tokio::spawn(async move {
                let mut counts = std::collections::HashMap::new();
                let mut accepted = 0u64;
                for person in mine {
                    let count = counts.entry(person).or_insert(0u64);
                    *count += 1;
                    let body = sync_subscriber(person, *count);
                    if support::send(callback(&address, body, &client)).await {
                        accepted += 1;
                    }
                }
                accepted
            })
        });
        let mut accepted = 0;
        for task in futures_util::future::join_all(tasks).await {
            accepted += task.unwrap();
        }
        accepted
    });
    let burst = started.elapsed();
    println!(
        "  burst accepted           {:>8.0} callbacks/s ({accepted} in {:.1} s)",
        accepted as f64 / burst.as_secs_f64(),
        burst.as_secs_f64()
    );
    // Done when every person's last write carries their last state and no write came for 3 s
    // (longer than ESP_WRITE_DELAY, so that nothing was still due).
    let mut last_change = (Instant::now(), standin.esp_received.load(Ordering::Relaxed));
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let calls = standin.esp_received.load(Ordering::Relaxed);
        if calls != last_change.1 {
            last_change = (Instant::now(), calls);
        }
        let settled = standin.esp_last.lock().unwrap().len() as u64 == people
            && last_change.0.elapsed() > Duration::from_secs(3);
        if settled || started.elapsed() > Duration::from_secs(1800) {
            break;
        }
    }
    let drained = last_change.0 - started;
    bridge.stop();
    let calls = standin.esp_received.load(Ordering::Relaxed) - calls_before;
    let last = standin.esp_last.lock().unwrap();
    let correct = (0..people)
        .filter(|p| {
            last.get(&format!("p{p}@example.com"))
                .is_some_and(|fields| {
                    fields["RH_TOTREF"] == each && fields["RH_CODE"] == format!("c{p}")
                })
        })
        .count();
    println!(
        "  ESP calls                {calls} for {people} people = {:.2} per person; final state \
         correct for {correct} of {people}; all written {:.1} s after the burst began",
        calls as f64 / people as f64,
        drained.as_secs_f64()
    );
}
