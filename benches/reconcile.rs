//! Reconciliation benchmark (issue 17): BENCH_SUBSCRIBERS (100,000) subscribers at a stand-in
//! SparkLoop, the same number here (recorded by `referral-bridge import --no-push`, the real
//! binary, their SparkLoop ids and codes then set as callbacks would have), with 1% drift: a
//! quarter of it missing at the platform, a quarter unknown here, half with another code there.
//! `referral-bridge reconcile` (the real binary, API mode, a custom ESP configured) is timed
//! unpaced, without and with `--fix`, against the baseline of reading the same pages with a
//! plain HTTP client and no comparison; its peak memory (VmHWM) is sampled every 10 ms.
//!
//! `cargo bench --bench reconcile`; knobs: BENCH_SUBSCRIBERS, BENCH_BACKENDS,
//! BENCH_POSTGRES_URL.

mod support;

use std::io::{BufWriter, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use diesel::connection::SimpleConnection;
use diesel::Connection;
use serde_json::json;

const CAMPAIGN: &str = "bench";

/// The pages the stand-in serves, made once so that serving costs nothing but the copy.
fn pages(subscribers: u64) -> Vec<web::Bytes> {
    let drift = subscribers / 100;
    let (missing, unknown, differing) = (drift / 4, drift / 4, drift / 2);
    let mut all: Vec<serde_json::Value> = Vec::with_capacity(subscribers as usize);
    // Newest first, as SparkLoop lists them.
    for n in (missing..subscribers).rev() {
        let code = if n < missing + differing {
            format!("x{n}")
        } else {
            format!("c{n}")
        };
        all.push(
            json!({"uuid": format!("sub_{n}"), "email": format!("{n}@bench.test"),
            "name": null, "ref_code": code, "referrer_code": null, "referred": false,
            "referral_status": null, "created_at": "2026-12-01T10:00:00.000Z"}),
        );
    }
    for k in 0..unknown {
        all.push(
            json!({"uuid": format!("sub_u{k}"), "email": format!("u{k}@bench.test"),
            "name": null, "ref_code": format!("u{k}"), "referrer_code": null,
            "referred": true, "referral_status": "verified",
            "created_at": "2026-12-01T10:00:00.000Z"}),
        );
    }
    let total_pages = all.len().div_ceil(200);
    all.chunks(200)
        .enumerate()
        .map(|(i, chunk)| {
            web::Bytes::from(
                json!({"subscribers": chunk, "meta": {"per_page": 200, "page": i + 1,
                    "total_pages": total_pages, "total_subscribers": all.len()}})
                .to_string(),
            )
        })
        .collect()
}

/// Serves `pages` at `/v2/campaigns/bench/subscribers?page=N`, and 200 to anything else.
fn stand_in(pages: Vec<web::Bytes>) -> String {
    let pages = Arc::new(pages);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = HttpServer::new(move || {
                let pages = pages.clone();
                App::new()
                    .route(
                        &format!("/v2/campaigns/{CAMPAIGN}/subscribers"),
                        web::get().to(
                            move |query: web::Query<std::collections::HashMap<String, String>>| {
                                let page: usize = query["page"].parse().unwrap();
                                let body = pages[page - 1].clone();
                                async move {
                                    HttpResponse::Ok()
                                        .content_type("application/json")
                                        .body(body)
                                }
                            },
                        ),
                    )
                    .default_service(web::to(|| async { HttpResponse::Ok().finish() }))
            })
            .workers(2)
            .bind("127.0.0.1:0")
            .unwrap();
            tx.send(server.addrs()[0]).unwrap();
            server.run().await
        })
    });
    format!("http://{}", rx.recv().unwrap())
}

/// Runs the binary with `args`; returns its wall time, its peak resident memory (MiB) and its
/// standard output.
fn measured(args: &[&str], vars: &[(&str, String)]) -> (Duration, f64, String) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_referral-bridge"))
        .args(args)
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status) {
            if let Some(line) = text.lines().find(|l| l.starts_with("VmHWM:")) {
                let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
                peak_kib = peak_kib.max(kib);
            }
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed = started.elapsed();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{args:?} failed");
    (
        elapsed,
        peak_kib as f64 / 1024.0,
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

fn main() {
    let subscribers: u64 = support::knob("BENCH_SUBSCRIBERS", 100_000);
    let pages = pages(subscribers);
    let page_count = pages.len();
    let base = stand_in(pages);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("subscribers.csv");
    let mut out = BufWriter::new(std::fs::File::create(&file).unwrap());
    writeln!(out, "email").unwrap();
    for n in 0..subscribers {
        writeln!(out, "{n}@bench.test").unwrap();
    }
    drop(out);
    println!(
        "referral-bridge reconcile benchmark: {subscribers} subscribers here and at the \
         platform ({page_count} pages), 1% drift, unpaced, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // The baseline: the same pages read one after another, nothing compared.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    let started = Instant::now();
    runtime.block_on(async {
        for page in 1..=page_count {
            let url =
                format!("{base}/v2/campaigns/{CAMPAIGN}/subscribers?per_page=200&page={page}");
            let body = client.get(url).send().await.unwrap().bytes().await.unwrap();
            assert!(!body.is_empty());
        }
    });
    let baseline = started.elapsed();
    println!(
        "baseline, the pages read only: {:.2} s",
        baseline.as_secs_f64()
    );
    support::for_each_backend(|backend, new_database| {
        let database_url = new_database();
        let vars = vec![
            ("DATABASE_URL", database_url.clone()),
            ("SPARKLOOP_API_URL", base.clone()),
            ("SPARKLOOP_API_KEY", "bench-key".to_string()),
            ("SPARKLOOP_CAMPAIGN_ID", CAMPAIGN.to_string()),
            ("SPARKLOOP_RATE_LIMIT", "1000000/1s".to_string()),
            ("ESP_API_URL", format!("{base}/esp")),
        ];
        let imported = Command::new(env!("CARGO_BIN_EXE_referral-bridge"))
            .args(["import", "--no-push"])
            .arg(&file)
            .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
            .env("RUST_LOG", "error")
            .output()
            .unwrap();
        assert!(imported.status.success(), "{imported:?}");
        // Their SparkLoop ids and codes, as callbacks would have brought them.
        let id = "replace(email, '@bench.test', '')";
        let sql = format!(
            "UPDATE subscribers SET platform_id = 'sub_' || {id}, referral_code = 'c' || {id}, \
             referred = false"
        );
        if database_url.starts_with("postgres") {
            diesel::PgConnection::establish(&database_url)
                .unwrap()
                .batch_execute(&sql)
                .unwrap();
        } else {
            diesel::SqliteConnection::establish(&database_url)
                .unwrap()
                .batch_execute(&sql)
                .unwrap();
        }
        println!("\n{backend}:");
        for args in [&["reconcile"][..], &["reconcile", "--fix"][..]] {
            let (elapsed, peak, stdout) = measured(args, &vars);
            let summary = stdout
                .lines()
                .filter(|l| !l.starts_with("reconciled"))
                .collect::<Vec<_>>()
                .join(", ");
            println!(
                "  {:<18} {:>6.2} s = {:.2}x the baseline, peak memory {peak:.1} MiB; {summary}",
                args.join(" "),
                elapsed.as_secs_f64(),
                elapsed.as_secs_f64() / baseline.as_secs_f64(),
            );
        }
    });
}
