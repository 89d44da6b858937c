//! Paced drain benchmark: a backlog of BENCH_JOBS (100,000) subscribers queued for SparkLoop's
//! API (by `referral-bridge import`, the real binary), then drained by the bridge with
//! `SPARKLOOP_RATE_LIMIT` = BENCH_RATE per second (default 1000) against a stand-in that notes
//! when each call arrives. Reported: the achieved rate as a share of the limit, and the most
//! calls the stand-in saw in any one-second window (the limit must hold there).
//!
//! `cargo bench --bench drain`; knobs: BENCH_JOBS, BENCH_RATE, BENCH_BACKENDS,
//! BENCH_POSTGRES_URL.

mod support;

use std::io::{BufWriter, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use support::{Bridge, StandIn};

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("error")).init();
    let jobs: u64 = support::knob("BENCH_JOBS", 100_000);
    let rate: u64 = support::knob("BENCH_RATE", 1_000);
    let standin = StandIn::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backlog.csv");
    let mut out = BufWriter::new(std::fs::File::create(&file).unwrap());
    writeln!(out, "email,name").unwrap();
    for n in 0..jobs {
        writeln!(out, "drain{n}@example.com,Reader {n}").unwrap();
    }
    drop(out);
    println!(
        "referral-bridge paced drain benchmark: {jobs} jobs to SparkLoop's API at {rate}/1s, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let limit = format!("{rate}/1s");
    support::for_each_backend(|backend, new_database| {
        let database_url = new_database();
        let api_mode = [
            ("SPARKLOOP_API_URL", standin.base.clone()),
            ("SPARKLOOP_API_KEY", "bench-key".to_string()),
            ("SPARKLOOP_RATE_LIMIT", limit.clone()),
            ("BRIDGE_WORKERS", "64".to_string()),
        ];
        let imported = Command::new(env!("CARGO_BIN_EXE_referral-bridge"))
            .arg("import")
            .arg(&file)
            .env("DATABASE_URL", &database_url)
            .env("RUST_LOG", "error")
            .output()
            .unwrap();
        assert!(imported.status.success(), "{imported:?}");
        standin.api_arrivals.lock().unwrap().clear();
        let started = Instant::now();
        let bridge = Bridge::start(&database_url, &api_mode);
        while (standin.api_arrivals.lock().unwrap().len() as u64) < jobs {
            if started.elapsed() > Duration::from_secs(3600) {
                println!("  gave up after an hour");
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let arrivals = standin.api_arrivals.lock().unwrap().clone();
        bridge.stop();
        let (first, last) = (arrivals[0], *arrivals.last().unwrap());
        let achieved = (arrivals.len() - 1) as f64 / last.duration_since(first).as_secs_f64();
        let busiest = support::busiest(&arrivals, Duration::from_secs(1));
        println!(
            "\n{backend}:\n  drained {} calls at {achieved:.0}/s = {:.1}% of the limit; busiest \
             second at the stand-in: {busiest} calls (limit {rate}): {}",
            arrivals.len(),
            100.0 * achieved / rate as f64,
            if busiest as u64 <= rate {
                "within"
            } else {
                "OVER"
            }
        );
    });
}
