//! The dashboard in a real headless Chromium (Debian's `chromium` and `chromium-driver`): sign
//! in, see a dead delivery with its error, press Retry, see it delivered; and the page fits a
//! phone's width. Skipped, saying so, where Chromium is not installed, unless
//! `REQUIRE_CHROMIUM=1` (as `.ci/run` sets), when its absence fails the test.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{eventually, skipped, subscribe, TestApp};

const TOKEN: &str = "dashboard-test-token-of-32-characters-or-more";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver on a free port, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &Driver) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu",
            "--disable-dev-shm-usage", "--window-size=1280,900"]}),
    );
    // chromedriver is plain HTTP on loopback: no TLS.
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

#[tokio::test]
async fn an_operator_signs_in_and_retries_a_dead_delivery() {
    if !std::path::Path::new(CHROMEDRIVER).exists() {
        if std::env::var("REQUIRE_CHROMIUM").is_ok_and(|v| v == "1") {
            panic!("REQUIRE_CHROMIUM=1 but {CHROMEDRIVER} is missing (apt-get install chromium chromium-driver)");
        }
        skipped(
            "dashboard::an_operator_signs_in_and_retries_a_dead_delivery",
            "needs Chromium (apt-get install chromium chromium-driver)",
        );
        return;
    }
    // SparkLoop refuses the first try (dead at once), then takes it.
    let app = TestApp::spawn_with(
        &[("BRIDGE_ADMIN_TOKEN", TOKEN)],
        Some(
            Mock::given(method("POST"))
                .and(path("/incoming"))
                .and(body_string_contains("refused@"))
                .respond_with(
                    ResponseTemplate::new(400).set_body_json(json!({"error": "Email is invalid"})),
                )
                .up_to_n_times(1),
        ),
    )
    .await;
    app.post_esp(&subscribe("ok@example.com")).await;
    app.post_esp(&subscribe("refused@example.com")).await;
    let db = &app.db;
    eventually("a dead delivery", Duration::from_secs(10), || {
        db.count("SELECT COUNT(*) AS n FROM jobs WHERE status = 'dead'") == 1
    })
    .await;

    let driver = Driver::start();
    let browser = browser(&driver).await;
    let result = async {
        browser.goto(&format!("{}/admin/", app.address)).await?;
        browser
            .find(Locator::Css("#token"))
            .await?
            .send_keys(TOKEN)
            .await?;
        browser
            .find(Locator::Css("input[type=submit]"))
            .await?
            .click()
            .await?;
        let row = browser
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css("#dead tr[data-delivery]"))
            .await?;
        let text = row.text().await?;
        assert!(text.contains("refused@example.com"), "{text}");
        assert!(text.contains("Email is invalid"), "{text}");
        // The last 24 hours, drawn by the server: this hour's bars for two webhooks received,
        // one delivery done and one dead.
        let bars = browser
            .execute(
                "return Array.from(document.querySelectorAll('#last-day rect')).map(r =>                  r.getAttribute('class') + ':' + r.dataset.n + ':' + r.dataset.hour);",
                vec![],
            )
            .await?;
        assert_eq!(bars, json!(["received:2:23", "done:1:23", "dead:1:23"]));
        let storage = browser.find(Locator::Css("#storage")).await?.text().await?;
        assert!(storage.contains("database size"), "{storage}");
        let size = browser.find(Locator::Css("#database-size")).await?.text().await?;
        assert!(size.ends_with("KiB") || size.ends_with("MiB"), "{size}");
        let oldest = browser.find(Locator::Css("#oldest-body")).await?.text().await?;
        assert!(oldest.ends_with('s') || oldest == "0s", "{oldest}");
        let screenshot = browser.screenshot().await?;
        let shots = concat!(env!("CARGO_MANIFEST_DIR"), "/target/screenshots");
        std::fs::create_dir_all(shots).unwrap();
        std::fs::write(format!("{shots}/dashboard.png"), screenshot).unwrap();

        row.find(Locator::Css("button[type=submit]"))
            .await?
            .click()
            .await?;
        let flash = browser
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css("#flash"))
            .await?;
        assert!(flash.text().await?.contains("queued again"));
        // The retried delivery reaches SparkLoop; the page then shows no dead delivery.
        let db = &app.db;
        eventually(
            "the retried delivery to be done",
            Duration::from_secs(10),
            || db.count("SELECT COUNT(*) AS n FROM jobs WHERE status = 'done'") == 2,
        )
        .await;
        browser.refresh().await?;
        browser
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css("#no-dead"))
            .await?;
        let refused = app
            .requests_to("/incoming")
            .await
            .iter()
            .filter(|r| String::from_utf8_lossy(&r.body).contains("refused@"))
            .count();
        assert_eq!(refused, 2, "sent, refused, retried, sent again");

        // Readable on a phone: nothing wider than the screen.
        browser.set_window_size(390, 844).await?;
        browser
            .goto(&format!("{}/admin/?email=refused@example.com", app.address))
            .await?;
        let fits = browser
            .execute(
                "return document.documentElement.scrollWidth <= window.innerWidth;",
                vec![],
            )
            .await?;
        assert_eq!(fits, json!(true), "the page scrolls sideways on a phone");
        let timeline = browser
            .find(Locator::Css("#subscriber table"))
            .await?
            .text()
            .await?;
        assert!(timeline.contains("HTTP 400"), "{timeline}");
        let phone = browser.screenshot().await?;
        std::fs::write(format!("{shots}/dashboard-phone.png"), phone).unwrap();
        Ok::<(), fantoccini::error::CmdError>(())
    }
    .await;
    let _ = browser.close().await;
    result.expect("the browser steps");
    app.stop().await;
}
