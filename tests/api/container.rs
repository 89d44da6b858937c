//! The container image (DESIGN 3.12): built from the Dockerfile around the release binary, run
//! with a named volume on the host's network (all traffic stays on loopback), healthy, taking a
//! signup to a stand-in on the host, keeping its SQLite data across a restart, not as root; and
//! the README's compose file, the bridge with a Postgres container, run as it is written.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{skipped, subscribe, ESP_SECRET};

const TEST: &str = "container::the_image_runs_healthy_keeps_its_data_and_is_not_root";
const COMPOSE_TEST: &str = "container::the_readme_compose_file_runs_the_bridge_on_postgres";
/// The tag both tests build the Dockerfile as.
const IMAGE: &str = "referral-bridge:test";

/// Runs `command`; its stdout, or what went wrong (named `what`).
fn output_of(command: &mut Command, what: &str) -> Result<String, String> {
    let output = command.output().map_err(|e| format!("{what}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    } else {
        Err(format!(
            "{what}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// `docker ARGS`; its stdout, or what went wrong.
fn docker(args: &[&str]) -> Result<String, String> {
    output_of(
        Command::new("docker").args(args),
        &format!("docker {args:?}"),
    )
}

/// Skips the test with `reason` (a failure under `REQUIRE_DOCKER=1`, as in CI).
fn skip(test: &str, reason: &str) {
    if std::env::var("REQUIRE_DOCKER").is_ok_and(|v| v == "1") {
        panic!("REQUIRE_DOCKER=1 but the test cannot run: {reason}");
    }
    skipped(test, reason);
}

/// Builds the Dockerfile as [`IMAGE`], once for both tests.
fn build_image() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let root = env!("CARGO_MANIFEST_DIR");
    // Host network for the build too: apt reaches Debian's mirror as the host does.
    let built =
        BUILT.get_or_init(|| docker(&["build", "--network", "host", "-t", IMAGE, root]).map(drop));
    if let Err(e) = built {
        panic!("the image does not build: {e}");
    }
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
        skip(TEST, &reason);
        return;
    }
    build_image();
    let image = IMAGE;
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
    let port = free_port();
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

/// The compose command here (`docker compose`, or Debian's `docker-compose`), if any.
fn compose_command() -> Option<Vec<&'static str>> {
    let works = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if works("docker", &["compose", "version"]) {
        Some(vec!["docker", "compose"])
    } else if works("docker-compose", &["version"]) {
        Some(vec!["docker-compose"])
    } else {
        None
    }
}

/// The README's compose file: the yaml block after its `compose.yaml` marker.
fn readme_compose_file() -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let after = readme
        .split_once("<!-- compose.yaml:")
        .expect("README.md has a compose.yaml block")
        .1;
    let block = after.split_once("```yaml\n").expect("a yaml block").1;
    block
        .split_once("```")
        .expect("the block ends")
        .0
        .to_string()
}

/// `COMPOSE ARGS` in `dir` for `project`; its stdout, or what went wrong.
fn compose(command: &[&str], dir: &Path, project: &str, args: &[&str]) -> Result<String, String> {
    output_of(
        Command::new(command[0])
            .args(&command[1..])
            .args(["-p", project])
            .args(args)
            .current_dir(dir),
        &format!("{command:?} {args:?}"),
    )
}

/// Takes the project down with its volumes, however the test ends.
struct ComposeCleanup {
    command: Vec<&'static str>,
    dir: tempfile::TempDir,
    project: String,
}

impl Drop for ComposeCleanup {
    fn drop(&mut self) {
        let _ = compose(
            &self.command,
            self.dir.path(),
            &self.project,
            &["down", "-v", "-t", "5"],
        );
    }
}

#[tokio::test]
async fn the_readme_compose_file_runs_the_bridge_on_postgres() {
    if let Some(reason) = missing() {
        skip(COMPOSE_TEST, &reason);
        return;
    }
    let Some(command) = compose_command() else {
        skip(
            COMPOSE_TEST,
            "needs docker compose (Debian's docker-compose package)",
        );
        return;
    };
    build_image();
    // No registry here: Postgres is Debian's own package in the local base image, with the
    // official image's interface (.ci/postgres), unless a real postgres:15 is already here.
    if docker(&["image", "inspect", "postgres:15"]).is_err() {
        let context = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/postgres");
        docker(&[
            "build",
            "--network",
            "host",
            "-t",
            "postgres:15",
            context.to_str().unwrap(),
        ])
        .expect("the postgres:15 stand-in builds");
    }

    let sparkloop = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/incoming"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&sparkloop)
        .await;

    // The file as the README has it, but for the test's image tag and two free ports.
    let (bridge_port, postgres_port) = (free_port(), free_port());
    let file = readme_compose_file()
        .replace("image: referral-bridge\n", &format!("image: {IMAGE}\n"))
        .replace(":8080", &format!(":{bridge_port}"))
        .replace("5433", &postgres_port.to_string())
        .replace("interval: 10s", "interval: 1s");
    let cleanup = ComposeCleanup {
        command,
        dir: tempfile::tempdir().unwrap(),
        project: format!("rbcompose{}", std::process::id()),
    };
    let dir = cleanup.dir.path();
    std::fs::write(dir.join("compose.yaml"), &file).unwrap();
    std::fs::write(
        dir.join(".env"),
        format!(
            "POSTGRES_PASSWORD=composetest1\nESP_WEBHOOK_SECRET={ESP_SECRET}\n\
             SPARKLOOP_INCOMING_WEBHOOK_URL={}/incoming\n",
            sparkloop.uri()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| compose(&cleanup.command, dir, &cleanup.project, args);
    let up = ["-f", "compose.yaml", "up", "-d"];
    run(&up).expect("docker compose up");
    let container = |service: &str| {
        let id = run(&["-f", "compose.yaml", "ps", "-q", service]).unwrap();
        assert!(!id.is_empty(), "no {service} container");
        id
    };
    let bridge = container("bridge");
    wait_healthy(&container("postgres"));
    wait_healthy(&bridge);

    let client = reqwest::Client::new();
    let response = client
        .post(format!("http://127.0.0.1:{bridge_port}/webhooks/esp"))
        .bearer_auth(ESP_SECRET)
        .body(subscribe("compose@example.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let received = crate::helpers::wait_for(&sparkloop, 1, Duration::from_secs(20)).await;
    assert_eq!(received[0]["subscriber"]["email"], "compose@example.com");

    // The data is in Postgres, not in a SQLite file in /data, and outlives the containers.
    let files = docker(&["exec", &bridge, "ls", "-A", "/data"]).unwrap();
    assert_eq!(files, "", "the bridge wrote files of its own in /data");
    // Containers removed (with their anonymous volumes), the named Postgres volume kept.
    run(&["-f", "compose.yaml", "rm", "-s", "-f", "-v"]).expect("docker compose rm");
    run(&up).expect("docker compose up, again");
    let bridge = container("bridge");
    wait_healthy(&bridge);
    let listed = docker(&["exec", &bridge, "referral-bridge", "deliveries", "list"]).unwrap();
    assert!(listed.contains("compose@example.com"), "{listed}");
    assert!(listed.contains("done"), "{listed}");
    drop(cleanup);
}
