//! A Postgres that goes away mid-load: webhooks are answered 503 at once (the sender retries),
//! not after the pool's whole timeout, and the bridge takes webhooks again when it is back.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::helpers::{skipped, subscribe, TestApp};

/// A Postgres server of this test's own, in a temporary folder, on a free port.
struct PrivatePostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivatePostgres {
    /// Starts one; `None` when the machine has no Postgres binaries.
    fn start() -> Option<PrivatePostgres> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(Result::ok)
            .map(|version| version.path().join("bin"))
            .find(|bin| bin.join("initdb").exists())?;
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = PrivatePostgres { bin, dir, port };
        // Postgres refuses to run as root: as root, the `postgres` user runs it.
        if is_root() {
            assert!(Command::new("chown")
                .args(["-R", "postgres", server.dir.path().to_str().unwrap()])
                .status()
                .unwrap()
                .success());
        }
        let data = server.data();
        server.run("initdb", &["-D", &data, "-A", "trust", "-U", "postgres"]);
        server.pg_ctl("start");
        Some(server)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").to_str().unwrap().to_string()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg_ctl(&self, action: &str) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let data = self.data();
        // The server's output goes to a file: a pipe it kept open would never reach its end.
        let log = self.dir.path().join("log").to_str().unwrap().to_string();
        let mut args = vec![
            "-D",
            data.as_str(),
            "-w",
            "-m",
            "fast",
            "-l",
            &log,
            "-o",
            &options,
        ];
        args.push(action);
        self.run("pg_ctl", &args);
    }

    fn run(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let output = command
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{} {args:?}: {}{}",
            program.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = Command::new(self.bin.join("pg_ctl"))
            .args(["-D", &data, "-m", "immediate", "stop"])
            .output();
        if is_root() {
            let _ = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"))
                .args(["-D", &data, "-m", "immediate", "stop"])
                .output();
        }
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

#[tokio::test]
async fn a_database_outage_is_answered_503_at_once_and_recovered_from() {
    if std::env::var("TEST_DATABASE_URL").is_err() {
        skipped(
            "outage::a_database_outage_is_answered_503_at_once_and_recovered_from",
            "needs Postgres (set TEST_DATABASE_URL)",
        );
        return;
    }
    let server =
        Arc::new(PrivatePostgres::start().expect("the Postgres binaries (postgresql package)"));
    let url = server.url();
    let app = Arc::new(TestApp::spawn_with(&[("DATABASE_URL", &url)], None).await);
    assert_eq!(
        app.post_esp(&subscribe("before@example.com"))
            .await
            .status(),
        200
    );

    // Eight senders post without pause; each answer is kept with when it was asked and how
    // long it took.
    let answers: Arc<Mutex<Vec<(Instant, Duration, u16)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let senders: Vec<_> = (0..8)
        .map(|sender| {
            let (app, answers, stop) = (app.clone(), answers.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let asked = Instant::now();
                    let status = app
                        .post_esp(&subscribe(&format!("s{sender}-{n}@example.com")))
                        .await
                        .status()
                        .as_u16();
                    answers
                        .lock()
                        .unwrap()
                        .push((asked, asked.elapsed(), status));
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopping = Instant::now();
    let halted = server.clone();
    tokio::task::spawn_blocking(move || halted.pg_ctl("stop"))
        .await
        .unwrap();
    let stopped = Instant::now();
    // Two seconds of outage.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for sender in senders {
        sender.await.unwrap();
    }
    let answers = answers.lock().unwrap().clone();
    let before: Vec<_> = answers
        .iter()
        .filter(|(asked, ..)| *asked < stopping)
        .collect();
    let during: Vec<_> = answers
        .iter()
        .filter(|(asked, ..)| *asked > stopped)
        .collect();
    assert!(
        before.iter().all(|(_, _, status)| *status == 200),
        "{before:?}"
    );
    assert!(!during.is_empty());
    assert!(
        during.iter().all(|(_, _, status)| *status == 503),
        "{during:?}"
    );
    let slowest = during.iter().map(|(_, took, _)| *took).max().unwrap();
    eprintln!(
        "outage: {} answers, all 503, the slowest in {} ms",
        during.len(),
        slowest.as_millis()
    );
    // Before, each took the pool's 2 s timeout or more (a failed batch retried item by item).
    assert!(slowest < Duration::from_secs(1), "{slowest:?}");

    // The server is back: so are the 200s, without a restart of the bridge.
    let restarted = server.clone();
    tokio::task::spawn_blocking(move || restarted.pg_ctl("start"))
        .await
        .unwrap();
    let back = Instant::now();
    loop {
        let status = app.post_esp(&subscribe("after@example.com")).await.status();
        if status == 200 {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(15), "still {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
