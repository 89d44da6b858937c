//! CSV import benchmark: `referral-bridge import` (the real binary) on generated files, into
//! SQLite and (when reachable) Postgres, with `--no-push` and with the push queued: rows/s and
//! peak memory (the process's high-water mark, read from /proc while it runs). A smaller file is
//! imported too, to show that memory does not grow with the file.
//!
//! `cargo bench --bench import`; knobs: BENCH_ROWS (default 1,000,000), BENCH_BACKENDS,
//! BENCH_POSTGRES_URL (as in the ingest benchmark).

mod support;

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let rows: u64 = support::knob("BENCH_ROWS", 1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.csv");
    let small = dir.path().join("small.csv");
    generate(&big, rows);
    generate(&small, rows / 10);
    println!(
        "referral-bridge import benchmark: {rows} rows ({:.0} MB), {} cores",
        std::fs::metadata(&big).unwrap().len() as f64 / 1e6,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    support::for_each_backend(|backend, new_database| {
        println!("\n{backend}:");
        for (file, label, flags) in [
            (&small, "no push, 1/10 of the rows", &["--no-push"][..]),
            (&big, "no push", &["--no-push"][..]),
            (&big, "push queued", &[][..]),
        ] {
            let (elapsed, peak, summary) = run(file, flags, &new_database());
            let read: f64 = summary
                .split("read ")
                .nth(1)
                .and_then(|s| s.split(',').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0.0);
            println!(
                "  {label:<26} {:>9.0} rows/s  ({read:.0} rows in {:.1} s)  peak memory {:.1} MiB",
                read / elapsed.as_secs_f64(),
                elapsed.as_secs_f64(),
                peak as f64 / 1024.0
            );
        }
    });
}

/// A CSV of `rows` subscribers with every column the import reads.
fn generate(path: &Path, rows: u64) {
    let mut out = BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(out, "email,id,first_name,name,created_at").unwrap();
    for n in 0..rows {
        writeln!(
            out,
            "reader{n}@example.com,{n},First{n},\"Reader {n}, Esq.\",{}",
            1_564_400_550 + n
        )
        .unwrap();
    }
}

/// Runs one import; its wall time, peak resident memory (KiB) and summary line.
fn run(file: &Path, flags: &[&str], database_url: &str) -> (Duration, u64, String) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_referral-bridge"))
        .arg("import")
        .arg(file)
        .args(flags)
        .env("DATABASE_URL", database_url)
        .env(
            "SPARKLOOP_INCOMING_WEBHOOK_URL",
            "http://127.0.0.1:1/incoming",
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        if let Ok(text) = std::fs::read_to_string(&status) {
            if let Some(hwm) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(hwm);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = started.elapsed();
    let output = child.wait_with_output().unwrap();
    let summary = String::from_utf8_lossy(&output.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    (elapsed, peak, summary)
}
