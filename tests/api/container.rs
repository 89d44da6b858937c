//! The container image (DESIGN 3.12): built from the Dockerfile around the release binary, run
//! with a named volume on the host's network (all traffic stays on loopback), healthy, taking a
//! signup to a stand-in on the host, keeping its SQLite data across a restart, not as root.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{skipped, subscribe, ESP_SECRET};

const TEST: &str = "container::the_image_runs_healthy_keeps_its_data_and_is_not_root";

/// `docker ARGS`; its stdout, or what went wrong.
fn docker(args: &[&str]) -> Result<String, String> {
    let output = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("docker {args:?}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    } else {
        Err(format!(
            "docker {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// Why the test cannot run here, if it cannot.
fn missing() -> Option<String> {
    if docker(&["info"]).is_err() {
        return Some("needs a Docker daemon (docker.io; dockerd --bridge=none)".into());
    }
    let binary = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/referral-bridge");
    if !binary.exists() {
        return Some("needs the release binary (cargo build --release)".into());
    }
    None
}

/// Removes the test's container and volume, however the test ends.
struct Cleanup {
    container: String,
    volume: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.container]);
        let _ = docker(&["volume", "rm", "-f", &self.volume]);
    }
}

/// Waits until the container's health check says `healthy` (panics after 60 s).
fn wait_healthy(container: &str) {
    let start = Instant::now();
    loop {
        let status =
            docker(&["inspect", "-f", "{{.State.Health.Status}}", container]).unwrap_or_default();
        if status == "healthy" {
            return;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let logs = docker(&["logs", container]).unwrap_or_else(|e| e);
            panic!("the container is {status:?}, not healthy: {logs}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[tokio::test]
async fn the_image_runs_healthy_keeps_its_data_and_is_not_root() {
    if let Some(reason) = missing() {
        if std::env::var("REQUIRE_DOCKER").is_ok_and(|v| v == "1") {
            panic!("REQUIRE_DOCKER=1 but the test cannot run: {reason}");
        }
        skipped(TEST, &reason);
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let image = "referral-bridge:test";
    // Host network for the build too: apt reaches Debian's mirror as the host does.
    docker(&["build", "--network", "host", "-t", image, root]).expect("the image builds");
    let size: u64 = docker(&["image", "inspect", "-f", "{{.Size}}", image])
        .unwrap()
        .parse()
        .unwrap();
    eprintln!("image {image}: {} MB", size / 1_000_000);

    let sparkloop = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/incoming"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&sparkloop)
        .await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let name = format!("referral-bridge-test-{}", std::process::id());
    let cleanup = Cleanup {
        container: name.clone(),
        volume: format!("{name}-data"),
    };
    let listen = format!("BRIDGE_LISTEN=127.0.0.1:{port}");
    let secret = format!("ESP_WEBHOOK_SECRET={ESP_SECRET}");
    let incoming = format!(
        "SPARKLOOP_INCOMING_WEBHOOK_URL={}/incoming",
        sparkloop.uri()
    );
    let volume = format!("{}:/data", cleanup.volume);
    docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "host",
        "-v",
        &volume,
        "--health-interval",
        "1s",
        "-e",
        &listen,
        "-e",
        &secret,
        "-e",
        &incoming,
        image,
    ])
    .expect("the container starts");
    wait_healthy(&name);

    // A signup through the container's port reaches the stand-in on the host.
    let bridge = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{bridge}/webhooks/esp"))
        .bearer_auth(ESP_SECRET)
        .body(subscribe("container@example.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let received = crate::helpers::wait_for(&sparkloop, 1, Duration::from_secs(20)).await;
    assert_eq!(received[0]["subscriber"]["email"], "container@example.com");

    // Not root, in /data.
    let uid = docker(&["exec", &name, "id", "-u"]).unwrap();
    assert_ne!(uid, "0", "the process runs as root");
    assert_eq!(docker(&["exec", &name, "pwd"]).unwrap(), "/data");

    // Stopped and started, it still has its SQLite data (the volume).
    docker(&["stop", &name]).unwrap();
    docker(&["start", &name]).unwrap();
    wait_healthy(&name);
    let listed = docker(&["exec", &name, "referral-bridge", "deliveries", "list"]).unwrap();
    assert!(listed.contains("container@example.com"), "{listed}");
    assert!(listed.contains("done"), "{listed}");
    drop(cleanup);
}
